"""What the client checks before it sends a workload: Steward-issued and RA-TLS certificates.

Every certificate is built here for real: a Steward core (pure, with a pinned clock) issues them
for nil evidence signed by a development key in ``tmp_path``; the RA-TLS ones are self-signed
the way the keep runtime makes them. Each bad case changes one thing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from donjon.attestation.policy import Policy
from donjon.backends.nil_evidence import NilEvidenceProvider, runtime_measurement
from donjon.client.attested import (
    InsecureKeepError,
    KeepIdentity,
    development_policy,
    verify_keep_certificate,
)
from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import CertificateAuthority, KeyPair, LeafProfile, certificate_der
from donjon.crypto.oids import DONJON_ATTESTATION_RESULT, DONJON_EVIDENCE
from donjon.crypto.ratls import extension_bytes, self_signed_certificate
from donjon.errors import (
    EvidenceFormatError,
    FreshnessError,
    MeasurementError,
    PolicyError,
    SignatureError,
    VerificationError,
)
from donjon.steward.config import StewardPolicy
from donjon.steward.core import StewardCore
from donjon.steward.messages import AttestRequest, CsrEvidence

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CLIENT_NONCE = bytes(range(32))
OTHER_MEASUREMENT = hashlib.sha384(b"another keep runtime").digest()


@dataclass(frozen=True)
class _Clock:
    t: datetime

    def now(self) -> datetime:
        return self.t


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(now=NOW - timedelta(days=1), lifetime=timedelta(days=30))


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "dev" / "nil-dev-key.pem"


def _provider(key_path: Path, measurement: bytes | None = None) -> NilEvidenceProvider:
    return NilEvidenceProvider(
        key_path=key_path,
        hostname="test",
        measurement=measurement or runtime_measurement(),
    )


def _steward_cert(
    ca: CertificateAuthority,
    key_path: Path,
    *,
    client_nonce: bytes | None = CLIENT_NONCE,
    measurement: bytes | None = None,
    key: KeyPair | None = None,
) -> bytes:
    """A certificate a real Steward core (dev policy) issues to a nil Keep."""
    core = StewardCore(ca, StewardPolicy.dev(), clock=_Clock(NOW))
    key = key or KeyPair.generate("P-384")
    steward_nonce = core.nonce().nonce
    bound = steward_nonce + (client_nonce or b"")
    evidence = _provider(key_path, measurement).evidence(report_data_for(key.spki_der, bound))
    issued = core.attest(
        AttestRequest(
            csr=key.csr(),
            platform="nil",
            evidence=evidence,
            nonce=steward_nonce,
            client_nonce=client_nonce,
        )
    )
    return issued.chain[0]


def _ratls_cert(
    key_path: Path,
    *,
    nonce: bytes = CLIENT_NONCE,
    measurement: bytes | None = None,
    bind_key: KeyPair | None = None,
    extension: bytes | None = None,
    signer: CertificateAuthority | None = None,
    now: datetime = NOW,
) -> bytes:
    """A self-signed certificate carrying evidence, as the keep runtime makes it."""
    key = KeyPair.generate("P-384")
    if extension is None:
        evidence = _provider(key_path, measurement).evidence(
            report_data_for((bind_key or key).spki_der, nonce)
        )
        extension = CsrEvidence(platform="nil", evidence=evidence, nonce=nonce).encode()
    extensions = [(DONJON_EVIDENCE, extension)] if extension else []
    if signer is not None:
        cert = signer.issue(
            LeafProfile(
                spki_der=key.spki_der,
                common_name="keep",
                dns_names=(),
                uris=(),
                not_before=now - timedelta(minutes=5),
                not_after=now + timedelta(hours=1),
                extensions=tuple(extensions),
            )
        )
        return certificate_der(cert)
    cert = self_signed_certificate(
        key.private_key_pem(),
        common_name="donjon keep test",
        dns_names=["k.keep.donjon.invalid"],
        extensions=extensions,
        now=now,
        lifetime=timedelta(hours=24),
    )
    return certificate_der(cert)


def _verify(
    der: bytes,
    *,
    steward_ca: x509.Certificate | None = None,
    nonce: bytes = CLIENT_NONCE,
    policy: Policy | None = None,
    insecure_ok: bool = True,
    now: datetime = NOW,
) -> KeepIdentity:
    return verify_keep_certificate(
        der,
        nonce=nonce,
        policy=policy or development_policy(),
        insecure_ok=insecure_ok,
        now=now,
        steward_ca=steward_ca,
    )


def _pinned_policy(measurement: bytes) -> Policy:
    return Policy.parse(
        f"""name = "pinned"
allow_insecure = true
platforms = ["nil"]

[nil]
reject_debug = false
measurements = ["{measurement.hex()}"]
""",
        source="<test>",
    )


# -- Steward-issued --------------------------------------------------------------------------


def test_steward_issued_certificate_is_accepted(ca: CertificateAuthority, key_path: Path) -> None:
    der = _steward_cert(ca, key_path)
    ident = _verify(der, steward_ca=ca.certificate)
    assert (ident.via, ident.platform, ident.insecure) == ("steward", "nil", True)
    assert ident.measurement == runtime_measurement()
    assert ident.policy == "development (client), dev (Steward)"
    assert ident.certificate_der == der
    assert ident.certificate_sha256 == hashlib.sha256(der).hexdigest()
    assert ident.claims["client_nonce"] == CLIENT_NONCE.hex()


def test_certificate_from_another_ca(ca: CertificateAuthority, key_path: Path) -> None:
    rogue = CertificateAuthority.create(now=NOW - timedelta(days=1))
    with pytest.raises(SignatureError, match="does not verify with the CA key"):
        _verify(_steward_cert(rogue, key_path), steward_ca=ca.certificate)


def test_expired_steward_certificate(ca: CertificateAuthority, key_path: Path) -> None:
    der = _steward_cert(ca, key_path)
    with pytest.raises(FreshnessError, match="certificate expired"):
        _verify(der, steward_ca=ca.certificate, now=NOW + timedelta(days=2))
    with pytest.raises(FreshnessError, match="not valid before"):
        _verify(der, steward_ca=ca.certificate, now=NOW - timedelta(hours=1))


def test_result_for_another_key(ca: CertificateAuthority, key_path: Path) -> None:
    # A genuine attestation result, copied into a certificate (from the same CA) for another key.
    genuine = x509.load_der_x509_certificate(_steward_cert(ca, key_path))
    result = extension_bytes(genuine, DONJON_ATTESTATION_RESULT)
    assert result is not None
    other = KeyPair.generate("P-384")
    forged = ca.issue(
        LeafProfile(
            spki_der=other.spki_der,
            common_name="keep",
            dns_names=(),
            uris=(),
            not_before=NOW - timedelta(minutes=5),
            not_after=NOW + timedelta(hours=1),
            extensions=((DONJON_ATTESTATION_RESULT, result),),
        )
    )
    with pytest.raises(MeasurementError, match="certifies another key"):
        _verify(certificate_der(forged), steward_ca=ca.certificate)


def test_ca_certificate_without_a_result(ca: CertificateAuthority) -> None:
    plain = ca.issue(
        LeafProfile(
            spki_der=KeyPair.generate("P-384").spki_der,
            common_name="keep",
            dns_names=(),
            uris=(),
            not_before=NOW - timedelta(minutes=5),
            not_after=NOW + timedelta(hours=1),
        )
    )
    with pytest.raises(PolicyError, match="carries no usable attestation result"):
        _verify(certificate_der(plain), steward_ca=ca.certificate)


def test_steward_certificate_for_another_nonce(ca: CertificateAuthority, key_path: Path) -> None:
    der = _steward_cert(ca, key_path, client_nonce=bytes(32))
    with pytest.raises(FreshnessError, match="client nonce mismatch"):
        _verify(der, steward_ca=ca.certificate)


def test_steward_certificate_without_a_client_nonce(
    ca: CertificateAuthority, key_path: Path
) -> None:
    der = _steward_cert(ca, key_path, client_nonce=None)
    with pytest.raises(FreshnessError, match="not issued for this session"):
        _verify(der, steward_ca=ca.certificate)


def test_steward_nil_needs_insecure(ca: CertificateAuthority, key_path: Path) -> None:
    with pytest.raises(InsecureKeepError, match="Pass --insecure"):
        _verify(_steward_cert(ca, key_path), steward_ca=ca.certificate, insecure_ok=False)


def test_steward_measurement_mismatch(ca: CertificateAuthority, key_path: Path) -> None:
    der = _steward_cert(ca, key_path, measurement=OTHER_MEASUREMENT)
    with pytest.raises(MeasurementError, match="the host runs another keep runtime"):
        _verify(der, steward_ca=ca.certificate)
    # A policy that pins measurements decides instead (Rule 2).
    ident = _verify(der, steward_ca=ca.certificate, policy=_pinned_policy(OTHER_MEASUREMENT))
    assert ident.measurement == OTHER_MEASUREMENT


def test_steward_client_policy_still_applies(ca: CertificateAuthority, key_path: Path) -> None:
    der = _steward_cert(ca, key_path)
    with pytest.raises(PolicyError):
        _verify(der, steward_ca=ca.certificate, policy=Policy.production())
    with pytest.raises(PolicyError, match="measurement"):
        _verify(der, steward_ca=ca.certificate, policy=_pinned_policy(OTHER_MEASUREMENT))


# -- RA-TLS ----------------------------------------------------------------------------------


def test_ratls_certificate_is_accepted(key_path: Path) -> None:
    der = _ratls_cert(key_path)
    ident = _verify(der)
    assert (ident.via, ident.platform, ident.insecure, ident.policy) == (
        "ra-tls",
        "nil",
        True,
        "development",
    )
    assert ident.measurement == runtime_measurement()


def test_ratls_without_evidence(key_path: Path) -> None:
    with pytest.raises(PolicyError, match="carries no evidence; pass --steward or --ca"):
        _verify(_ratls_cert(key_path, extension=b""))


def test_ratls_with_malformed_evidence(key_path: Path) -> None:
    with pytest.raises(PolicyError, match="evidence in the Keep's certificate is malformed"):
        _verify(_ratls_cert(key_path, extension=b"\xa1\x61v\x02"))


def test_ratls_evidence_for_another_nonce(key_path: Path) -> None:
    with pytest.raises(FreshnessError, match="made for another nonce"):
        _verify(_ratls_cert(key_path, nonce=bytes(32)))


def test_ratls_evidence_claiming_our_nonce_but_binding_another(key_path: Path) -> None:
    # The bundle says our nonce, but the signed report data binds another one: the binding
    # check (report data = H(key, nonce)) catches what the bundle's own field does not.
    key = KeyPair.generate("P-384")
    evidence = _provider(key_path).evidence(report_data_for(key.spki_der, bytes(32)))
    bundle = CsrEvidence(platform="nil", evidence=evidence, nonce=CLIENT_NONCE).encode()
    with pytest.raises(PolicyError, match="evidence made for another key or nonce"):
        _verify(_ratls_cert(key_path, extension=bundle))


def test_ratls_evidence_binding_another_key(key_path: Path) -> None:
    der = _ratls_cert(key_path, bind_key=KeyPair.generate("P-384"))
    with pytest.raises(PolicyError, match="evidence made for another key or nonce"):
        _verify(der)


def test_ratls_expired(key_path: Path) -> None:
    der = _ratls_cert(key_path, now=NOW - timedelta(days=2))
    with pytest.raises(FreshnessError, match="certificate expired"):
        _verify(der)


def test_ratls_not_self_signed(key_path: Path, ca: CertificateAuthority) -> None:
    # Signed by some CA but presented without a trusted Steward CA: not RA-TLS, refused.
    with pytest.raises(SignatureError, match="certificate is not self-signed"):
        _verify(_ratls_cert(key_path, signer=ca))


def test_ratls_tampered_evidence(key_path: Path) -> None:
    key = KeyPair.generate("P-384")
    evidence = bytearray(_provider(key_path).evidence(report_data_for(key.spki_der, CLIENT_NONCE)))
    evidence[-5] ^= 0x01  # inside the signature
    bundle = CsrEvidence(platform="nil", evidence=bytes(evidence), nonce=CLIENT_NONCE).encode()
    with pytest.raises(SignatureError):
        _verify(_ratls_cert(key_path, extension=bundle))


def test_ratls_nil_needs_insecure(key_path: Path) -> None:
    with pytest.raises(InsecureKeepError) as e:
        _verify(_ratls_cert(key_path), insecure_ok=False)
    assert "gives no confidentiality or integrity against the host" in e.value.diagnostics()


def test_ratls_nil_needs_insecure_whatever_the_policy(key_path: Path) -> None:
    with pytest.raises(InsecureKeepError):
        _verify(_ratls_cert(key_path), insecure_ok=False, policy=Policy.permissive())


def test_ratls_measurement_mismatch(key_path: Path) -> None:
    der = _ratls_cert(key_path, measurement=OTHER_MEASUREMENT)
    with pytest.raises(MeasurementError, match="differs from this donjon's"):
        _verify(der)
    assert _verify(der, policy=_pinned_policy(OTHER_MEASUREMENT)).measurement == OTHER_MEASUREMENT


def test_ratls_policy_rejection(key_path: Path) -> None:
    with pytest.raises(PolicyError):
        _verify(_ratls_cert(key_path), policy=Policy.production())


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x00", b"garbage" * 10])
def test_not_a_certificate(der: bytes, ca: CertificateAuthority) -> None:
    for steward_ca in (None, ca.certificate):
        with pytest.raises(EvidenceFormatError, match="certificate is malformed"):
            _verify(der, steward_ca=steward_ca)


def test_every_refusal_is_a_verification_error() -> None:
    for cls in (InsecureKeepError, EvidenceFormatError, FreshnessError, MeasurementError):
        assert issubclass(cls, VerificationError)
