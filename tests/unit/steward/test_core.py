"""StewardCore: every decision, with real keys, real nil evidence and a real SEV-SNP vector."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import KeyPair, verify_issued, verify_signed_result
from donjon.crypto.enarx import encode_enarx_snp
from donjon.crypto.oids import DONJON_ATTESTATION_RESULT, DONJON_EVIDENCE, ENARX_KVM, ENARX_SNP
from donjon.errors import (
    DecodeError,
    Error,
    EvidenceFormatError,
    FreshnessError,
    MeasurementError,
    PolicyError,
    SignatureError,
)
from donjon.steward.config import StewardPolicy
from donjon.steward.core import KEEP_DOMAIN, StewardCore, keep_name, status_for
from donjon.steward.messages import AttestRequest, CsrEvidence, ResultClaims
from donjon.steward.nonce import NonceCapacityError
from tests.unit.steward._support import (
    SNP_VERIFY_TIME,
    Keep,
    PinnedClock,
    VectorBinding,
    shared_ca,
    snp_vector,
)

WORKLOAD = "donjon:workload:sha256:" + "cd" * 32
DEV_BASE = "allow_insecure = true\n[nil]\nreject_debug = false\n"


@pytest.fixture
def clock() -> PinnedClock:
    return PinnedClock()


@pytest.fixture
def keep(tmp_path: Path) -> Keep:
    return Keep(tmp_path)


def core_with(policy: StewardPolicy, clock: PinnedClock, **kwargs: object) -> StewardCore:
    return StewardCore(shared_ca(), policy, clock=clock, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def dev(clock: PinnedClock) -> StewardCore:
    return core_with(StewardPolicy.dev(), clock)


def test_nil_happy_path_issues_a_checked_certificate(
    dev: StewardCore, keep: Keep, clock: PinnedClock
) -> None:
    nonce = dev.nonce().nonce
    issued = dev.attest(keep.request(nonce, csr=keep.csr(uris=[WORKLOAD])))
    leaf = issued.certificate
    ca = shared_ca()
    verify_issued(leaf, ca.certificate)
    assert leaf.issuer == ca.certificate.subject
    assert leaf.not_valid_after_utc == clock.t + timedelta(hours=24)
    assert leaf.not_valid_before_utc < clock.t
    assert 0 < leaf.serial_number < 2**159
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    name = keep_name(keep.key.spki_der)
    assert name.endswith("." + KEEP_DOMAIN)
    assert san.get_values_for_type(x509.DNSName) == [name]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WORKLOAD]
    # The signed result and the certificate extension carry the same claims.
    payload = verify_signed_result(issued.result, ca.certificate)
    ext = leaf.extensions.get_extension_for_oid(DONJON_ATTESTATION_RESULT)
    assert ext.critical is False
    assert ext.value.value == payload  # type: ignore[attr-defined]
    claims = ResultClaims.decode(payload)
    assert claims == issued.claims
    assert claims.platform == "nil"
    assert claims.insecure is True and claims.debug is True
    assert claims.workload == WORKLOAD
    assert claims.policy == "dev"
    assert claims.policy_digest == StewardPolicy.dev().digest
    assert claims.nonce == nonce
    assert claims.key_sha256 == hashlib.sha256(keep.key.spki_der).digest()
    assert claims.issued_at == int(clock.t.timestamp())
    assert claims.expires_at == int(leaf.not_valid_after_utc.timestamp())
    assert issued.chain[1] == ca.certificate_der
    assert [c.name for c in issued.verdict.checks if not c.passed] == []


def test_client_nonce_is_bound_after_ours_and_certified(dev: StewardCore, keep: Keep) -> None:
    nonce, client = dev.nonce().nonce, b"relying-party-nonce-0123456789ab"
    request = AttestRequest(
        csr=keep.csr(),
        platform="nil",
        evidence=keep.provider.evidence(report_data_for(keep.key.spki_der, nonce + client)),
        nonce=nonce,
        client_nonce=client,
    )
    issued = dev.attest(request)
    assert issued.claims.client_nonce == client
    assert issued.claims.nonce == nonce
    # Evidence bound to our nonce alone does not pass with a client nonce, nor the reverse.
    other = dev.nonce().nonce
    with pytest.raises(MeasurementError, match="client nonce"):
        dev.attest(
            AttestRequest(keep.csr(), "nil", keep.evidence(other), other, client_nonce=client)
        )
    third = dev.nonce().nonce
    with pytest.raises(MeasurementError):
        dev.attest(
            AttestRequest(
                keep.csr(),
                "nil",
                keep.provider.evidence(report_data_for(keep.key.spki_der, third + client)),
                third,
            )
        )


def test_workload_identity_defaults_to_the_measurement(dev: StewardCore, keep: Keep) -> None:
    issued = dev.attest(keep.request(dev.nonce().nonce))
    m = keep.provider.measurement.hex()
    assert issued.claims.workload == f"donjon:measurement:nil:{m}"


def test_production_policy_rejects_nil(clock: PinnedClock, keep: Keep) -> None:
    core = core_with(StewardPolicy.production(), clock)
    with pytest.raises(
        PolicyError, match=r"insecure evidence without a TEE .* policy 'production'"
    ):
        core.attest(keep.request(core.nonce().nonce))


def test_replayed_request_is_refused(dev: StewardCore, keep: Keep) -> None:
    request = keep.request(dev.nonce().nonce)
    dev.attest(request)
    with pytest.raises(FreshnessError, match="already used"):
        dev.attest(request)


def test_expired_nonce_is_refused(dev: StewardCore, keep: Keep, clock: PinnedClock) -> None:
    request = keep.request(dev.nonce().nonce)
    clock.advance(seconds=61)
    with pytest.raises(FreshnessError, match="expired"):
        dev.attest(request)


def test_nonce_from_another_steward_is_refused(
    dev: StewardCore, keep: Keep, clock: PinnedClock
) -> None:
    from donjon.crypto.ca import CertificateAuthority

    other = StewardCore(CertificateAuthority.create(now=clock.t), StewardPolicy.dev(), clock=clock)
    with pytest.raises(FreshnessError, match="MAC does not verify"):
        dev.attest(keep.request(other.nonce().nonce))


def test_evidence_for_another_key_is_refused(dev: StewardCore, keep: Keep) -> None:
    nonce = dev.nonce().nonce
    other = KeyPair.generate()
    request = AttestRequest(
        csr=keep.csr(),
        platform="nil",
        evidence=keep.evidence(nonce, spki=other.spki_der),
        nonce=nonce,
    )
    with pytest.raises(MeasurementError, match="does not bind the CSR's public key and the nonce"):
        dev.attest(request)


def test_evidence_for_another_nonce_is_refused(dev: StewardCore, keep: Keep) -> None:
    used, fresh = dev.nonce().nonce, dev.nonce().nonce
    request = AttestRequest(
        csr=keep.csr(), platform="nil", evidence=keep.evidence(used), nonce=fresh
    )
    with pytest.raises(MeasurementError, match="does not bind"):
        dev.attest(request)


def test_csr_with_a_bad_signature_is_refused(dev: StewardCore, keep: Keep) -> None:
    csr = bytearray(keep.csr())
    csr[-5] ^= 0x01  # inside the signature
    with pytest.raises((SignatureError, DecodeError)):
        dev.attest(keep.request(dev.nonce().nonce, csr=bytes(csr)))


def test_garbage_csr_unknown_platform_and_bad_evidence(dev: StewardCore, keep: Keep) -> None:
    with pytest.raises(DecodeError, match="not a DER PKCS#10"):
        dev.attest(keep.request(dev.nonce().nonce, csr=b"\x30\x03\x02\x01\x00"))
    request = keep.request(dev.nonce().nonce)
    with pytest.raises(DecodeError, match="unknown platform 'kvm'"):
        dev.attest(AttestRequest(request.csr, "kvm", request.evidence, request.nonce))
    with pytest.raises(EvidenceFormatError):
        dev.attest(AttestRequest(request.csr, "nil", b"\xa0", dev.nonce().nonce))
    with pytest.raises(EvidenceFormatError):
        dev.attest(AttestRequest(request.csr, "sev-snp", request.evidence, dev.nonce().nonce))


def test_evidence_signature_tampering_is_refused(dev: StewardCore, keep: Keep) -> None:
    nonce = dev.nonce().nonce
    evidence = bytearray(keep.evidence(nonce))
    evidence[-3] ^= 0xFF
    with pytest.raises(SignatureError):
        dev.attest(AttestRequest(keep.csr(), "nil", bytes(evidence), nonce))


def test_workload_policy(clock: PinnedClock, keep: Keep) -> None:
    text = f'{DEV_BASE}[steward]\nworkloads = ["{WORKLOAD}"]\n'
    core = core_with(StewardPolicy.parse(text, source="w.toml"), clock)
    ok = core.attest(keep.request(core.nonce().nonce, csr=keep.csr(uris=[WORKLOAD])))
    assert ok.claims.workload == WORKLOAD
    other = "donjon:workload:sha256:" + "00" * 32
    with pytest.raises(PolicyError, match=r"workload identity .*0000 not among the 1 accepted"):
        core.attest(keep.request(core.nonce().nonce, csr=keep.csr(uris=[other])))
    with pytest.raises(PolicyError, match="donjon:measurement:nil:"):
        core.attest(keep.request(core.nonce().nonce))


PUBLISHER = "donjon:publisher:sha256:" + "ab" * 32


def test_a_publisher_beside_the_workload_is_certified_too(dev: StewardCore, keep: Keep) -> None:
    for uris in ([WORKLOAD, PUBLISHER], [PUBLISHER, WORKLOAD]):
        issued = dev.attest(keep.request(dev.nonce().nonce, csr=keep.csr(uris=uris)))
        assert issued.claims.workload == WORKLOAD
        names = issued.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        assert names.get_values_for_type(x509.UniformResourceIdentifier) == [WORKLOAD, PUBLISHER]


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        (["https://example.com/"], "not a workload identity"),
        (["donjon:workload:sha256:AB"], "not a workload identity"),
        ([WORKLOAD, WORKLOAD.replace("cd", "ef")], "more than one workload identity"),
        ([PUBLISHER], "names a publisher but no workload"),
        ([WORKLOAD, PUBLISHER, PUBLISHER.replace("ab", "12")], "or publisher; request one of"),
    ],
)
def test_csr_uris_must_be_one_workload_identity(
    dev: StewardCore, keep: Keep, uris: list[str], message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        dev.attest(keep.request(dev.nonce().nonce, csr=keep.csr(uris=uris)))


def test_dns_names_only_as_the_policy_allows(clock: PinnedClock, keep: Keep) -> None:
    with pytest.raises(
        PolicyError, match=r"DNS name www\.bank\.example not allowed .*allowed: none"
    ):
        core = core_with(StewardPolicy.dev(), clock)
        core.attest(keep.request(core.nonce().nonce, csr=keep.csr(dns_names=["www.bank.example"])))
    text = f'{DEV_BASE}[steward]\ndns_names = ["*.keeps.example"]\n'
    core = core_with(StewardPolicy.parse(text, source="d"), clock)
    issued = core.attest(
        keep.request(core.nonce().nonce, csr=keep.csr(dns_names=["k1.keeps.example"]))
    )
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [
        keep_name(keep.key.spki_der),
        "k1.keeps.example",
    ]


def test_certificate_lifetime_is_configurable_and_capped_by_the_ca(
    clock: PinnedClock, keep: Keep
) -> None:
    core = core_with(StewardPolicy.dev(), clock, cert_lifetime=timedelta(minutes=30))
    leaf = core.attest(keep.request(core.nonce().nonce)).certificate
    assert leaf.not_valid_after_utc - clock.t == timedelta(minutes=30)
    ca_end = shared_ca().certificate.not_valid_after_utc
    clock.t = ca_end - timedelta(hours=1)
    core = core_with(StewardPolicy.dev(), clock)
    leaf = core.attest(keep.request(core.nonce().nonce)).certificate
    assert leaf.not_valid_after_utc == ca_end


def test_v1_csr_with_extensions_is_refused(dev: StewardCore, keep: Keep) -> None:
    csr = keep.csr(extensions=[(ENARX_KVM, b"")])
    with pytest.raises(
        DecodeError, match=r"extension 1\.3\.6\.1\.4\.1\.58270\.1\.1 is not supported"
    ):
        dev.attest(keep.request(dev.nonce().nonce, csr=csr))


def test_full_replay_cache_fails_closed(clock: PinnedClock, keep: Keep) -> None:
    core = core_with(StewardPolicy.dev(), clock, max_tracked_nonces=1)
    core.attest(keep.request(core.nonce().nonce))
    with pytest.raises(NonceCapacityError):
        core.attest(keep.request(core.nonce().nonce))


# -- Enarx-compatible POST / -------------------------------------------------------------------


def test_enarx_kvm_only_under_an_insecure_policy(clock: PinnedClock, keep: Keep) -> None:
    csr = keep.csr(extensions=[(ENARX_KVM, b"")])
    issued = core_with(StewardPolicy.dev(), clock).attest_pkcs10(csr)
    assert issued.claims.insecure is True
    assert issued.claims.nonce is None
    with pytest.raises(PolicyError, match="insecure"):
        core_with(StewardPolicy.production(), clock).attest_pkcs10(csr)
    with pytest.raises(DecodeError, match="must be empty"):
        core_with(StewardPolicy.dev(), clock).attest_pkcs10(
            keep.csr(extensions=[(ENARX_KVM, b"\x05\x00")])
        )


def test_pkix_path_is_ca_then_leaf(clock: PinnedClock, keep: Keep) -> None:
    core = core_with(StewardPolicy.dev(), clock)
    issued = core.attest_pkcs10(keep.csr(extensions=[(ENARX_KVM, b"")]))
    body = core.pkix_path(issued)
    assert body[0] == 0x30
    ca_der, leaf_der = issued.chain[1], issued.chain[0]
    inner = ca_der + leaf_der
    assert body.endswith(inner)
    assert int.from_bytes(body[2 : 2 + (body[1] & 0x7F)], "big") == len(inner)


def test_enarx_snp_real_vector_binding_is_checked(keep: Keep) -> None:
    vector = snp_vector()
    clock = PinnedClock(SNP_VERIFY_TIME)
    csr = keep.csr(extensions=[(ENARX_SNP, encode_enarx_snp(vector.report, vector.vcek))])
    # The real report binds someone else's key: the strict binding refuses it ...
    with pytest.raises(MeasurementError, match="SHA384 of the CSR's public key"):
        core_with(StewardPolicy.production(), clock).attest_pkcs10(csr)
    # ... and with a test-only binding to the recorded report data, everything else passes.
    core = core_with(StewardPolicy.production(), clock, binding=VectorBinding(vector.report_data))
    issued = core.attest_pkcs10(csr)
    assert issued.claims.platform == "sev-snp"
    assert issued.claims.measurement == vector.measurement
    assert issued.claims.insecure is False and issued.claims.debug is False
    assert issued.claims.nonce is None
    assert issued.claims.workload == f"donjon:measurement:sev-snp:{vector.measurement.hex()}"


def test_enarx_snp_after_the_vcek_expired_is_refused(keep: Keep) -> None:
    vector = snp_vector()
    clock = PinnedClock(datetime(2031, 1, 1, tzinfo=UTC))
    core = core_with(StewardPolicy.production(), clock, binding=VectorBinding(vector.report_data))
    csr = keep.csr(extensions=[(ENARX_SNP, encode_enarx_snp(vector.report, vector.vcek))])
    with pytest.raises(Error) as info:
        core.attest_pkcs10(csr)
    assert status_for(info.value) == 403


def test_enarx_snp_needs_a_p384_key(tmp_path: Path, clock: PinnedClock) -> None:
    vector = snp_vector()
    keep256 = Keep(tmp_path, curve="P-256")
    csr = keep256.csr(extensions=[(ENARX_SNP, encode_enarx_snp(vector.report, vector.vcek))])
    with pytest.raises(DecodeError, match="must be P-384"):
        core_with(StewardPolicy.production(), clock).attest_pkcs10(csr)


def test_enarx_disabled_by_policy(clock: PinnedClock, keep: Keep) -> None:
    text = "allow_insecure = true\n[steward]\nenarx = false\n"
    core = core_with(StewardPolicy.parse(text, source="e"), clock)
    with pytest.raises(PolicyError, match="enarx = false"):
        core.attest_pkcs10(keep.csr(extensions=[(ENARX_KVM, b"")]))


def test_donjon_evidence_in_a_csr(clock: PinnedClock, keep: Keep) -> None:
    core = core_with(StewardPolicy.dev(), clock)
    nonce = core.nonce().nonce
    carried = CsrEvidence(platform="nil", evidence=keep.evidence(nonce), nonce=nonce)
    issued = core.attest_pkcs10(keep.csr(extensions=[(DONJON_EVIDENCE, carried.encode())]))
    assert issued.claims.nonce == nonce
    with pytest.raises(FreshnessError, match="already used"):
        core.attest_pkcs10(keep.csr(extensions=[(DONJON_EVIDENCE, carried.encode())]))


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        ([], "no evidence extension"),
        ([(ENARX_KVM, b""), (ENARX_SNP, b"")], "more than one evidence extension"),
        ([(x509.ObjectIdentifier("1.2.3.4"), b"")], r"extension 1\.2\.3\.4 is not supported"),
        ([(ENARX_SNP, b"\x30\x00")], "Enarx SNP evidence"),
    ],
)
def test_enarx_csr_shape_errors(
    dev: StewardCore,
    keep: Keep,
    extensions: list[tuple[x509.ObjectIdentifier, bytes]],
    message: str,
) -> None:
    with pytest.raises(DecodeError, match=message):
        dev.attest_pkcs10(keep.csr(extensions=extensions))


def test_snp_vector_through_v1_attest_with_the_test_binding(keep: Keep) -> None:
    vector = snp_vector()
    clock = PinnedClock(SNP_VERIFY_TIME)
    core = core_with(StewardPolicy.production(), clock, binding=VectorBinding(vector.report_data))
    request = AttestRequest(
        csr=keep.csr(),
        platform="sev-snp",
        evidence=vector.report,
        nonce=core.nonce().nonce,
        certs=(vector.vcek,),
    )
    issued = core.attest(request)
    assert issued.claims.platform == "sev-snp"
    assert issued.claims.policy == "production"
    debug = snp_vector("sev-snp/milan-gsg")
    core = core_with(StewardPolicy.production(), clock, binding=VectorBinding(debug.report_data))
    with pytest.raises(PolicyError, match="debug enabled"):
        core.attest(
            AttestRequest(
                keep.csr(), "sev-snp", debug.report, core.nonce().nonce, certs=(debug.vcek,)
            )
        )


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DecodeError("x"), 400),
        (EvidenceFormatError("x"), 422),
        (SignatureError("x"), 403),
        (FreshnessError("x"), 403),
        (MeasurementError("x"), 403),
        (PolicyError("x"), 403),
        (NonceCapacityError("x"), 503),
    ],
)
def test_status_mapping(error: Error, status: int) -> None:
    assert status_for(error) == status


def test_report_data_binding_is_the_shared_scheme(keep: Keep) -> None:
    nonce = b"n" * 57
    assert report_data_for(keep.key.spki_der, nonce) != report_data_for(
        KeyPair.generate().spki_der, nonce
    )
