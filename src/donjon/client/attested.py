"""What the client checks about a Keep before it sends anything: its certificate and claims.

Two ways a Keep proves itself, both ending in a :class:`KeepIdentity` or an error:

- **Steward-issued** certificate: the chain ends in the Steward CA the client trusts, the
  certificate is valid now, its attestation-result extension names this certificate's key, the
  client's nonce, and a platform/measurement/TCB that the client's own policy accepts too.
- **RA-TLS** (no Steward): a self-signed certificate carrying evidence. The client verifies the
  evidence itself (vendor chains, collateral) and checks that its report data binds this
  certificate's key and the client's nonce, then applies its policy.

Either way the TLS 1.3 handshake has already proven the Keep holds the certificate's key.

Rule 1: a Keep on a platform without confidentiality (``nil``) is refused unless the user said
``--insecure``, whatever the policy says.
Rule 2: on ``nil``, the keep-runtime measurement must equal this client's own keep runtime's
(same donjon version and sources) unless the policy pins measurements itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509

from donjon.attestation.dispatch import parse_platform, verify_evidence
from donjon.attestation.policy import Policy, evaluate
from donjon.attestation.result import Endorsements, Platform, VerifiedEvidence
from donjon.backends.nil_evidence import runtime_measurement
from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import certificate_spki, verify_issued
from donjon.crypto.oids import DONJON_EVIDENCE
from donjon.crypto.ratls import (
    check_validity,
    extension_bytes,
    load_peer_certificate,
    verify_self_signed,
)
from donjon.errors import (
    DecodeError,
    EvidenceFormatError,
    FreshnessError,
    MeasurementError,
    PolicyError,
    VerificationError,
)
from donjon.steward.messages import CsrEvidence, claims_of

DEVELOPMENT_POLICY_TOML = """\
name = "development"
description = "nil Keeps only: no confidentiality or integrity against the host"
allow_insecure = true
platforms = ["nil"]

[nil]
reject_debug = false
"""


def development_policy() -> Policy:
    """The policy ``--insecure`` uses when none is given: accepts only ``nil`` Keeps."""
    return Policy.parse(DEVELOPMENT_POLICY_TOML, source="<development policy>")


class InsecureKeepError(PolicyError):
    """A Keep without confidentiality, and no ``--insecure``."""


@dataclass(frozen=True, slots=True)
class KeepIdentity:
    """What was verified about a Keep.

    Attributes:
        via: "steward" or "ra-tls".
        platform: the evidence platform.
        measurement: the keep runtime's launch measurement.
        insecure: True for platforms without confidentiality (nil).
        policy: the client policy that accepted it (and Steward's, for "steward").
        certificate_der: the Keep's TLS certificate.
        claims: every verified claim (JSON-compatible).
    """

    via: str
    platform: str
    measurement: bytes
    insecure: bool
    policy: str
    certificate_der: bytes
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def certificate_sha256(self) -> str:
        return hashlib.sha256(self.certificate_der).hexdigest()


def verify_keep_certificate(
    certificate_der: bytes,
    *,
    nonce: bytes,
    policy: Policy,
    insecure_ok: bool,
    now: datetime,
    steward_ca: x509.Certificate | None,
) -> KeepIdentity:
    """Verify the Keep's TLS certificate; Steward-issued when *steward_ca* is given, else RA-TLS.

    Raises:
        VerificationError: any check failed (the subclass says which kind).
    """
    try:
        cert = load_peer_certificate(certificate_der)
    except DecodeError as e:  # documented: VerificationError only
        raise EvidenceFormatError(f"the Keep's certificate is malformed: {e.message}") from e
    if steward_ca is not None:
        return _verify_steward_issued(
            cert, certificate_der, nonce, policy, insecure_ok, now, steward_ca
        )
    return _verify_ratls(cert, certificate_der, nonce, policy, insecure_ok, now)


def _verify_steward_issued(
    cert: x509.Certificate,
    der: bytes,
    nonce: bytes,
    policy: Policy,
    insecure_ok: bool,
    now: datetime,
    ca: x509.Certificate,
) -> KeepIdentity:
    # (1) issued by the Steward CA we trust, and valid now
    verify_issued(cert, ca)
    check_validity(cert, now)
    check_validity(ca, now)
    # (2) the attestation result inside names this certificate's key and our nonce
    try:
        claims = claims_of(cert)
    except DecodeError as e:
        raise PolicyError(
            f"the Keep's certificate carries no usable attestation result: {e}"
        ) from e
    spki = certificate_spki(cert)
    if not hmac.compare_digest(claims.key_sha256, hashlib.sha256(spki).digest()):
        raise MeasurementError("the attestation result certifies another key than the Keep's")
    if claims.client_nonce is None or not hmac.compare_digest(claims.client_nonce, nonce):
        raise FreshnessError(
            "the Keep's certificate was not issued for this session (client nonce mismatch): "
            "it may be replayed from an earlier Keep"
        )
    platform = parse_platform(claims.platform)
    evidence = VerifiedEvidence(
        platform=platform,
        measurement=claims.measurement,
        report_data=b"",
        debug=claims.debug,
        tcb_status=claims.tcb_status,
        advisory_ids=claims.advisory_ids,
        claims={"insecure": claims.insecure, "workload": claims.workload},
    )
    _check_insecure(platform, claims.insecure, insecure_ok)
    _check_runtime_measurement(policy, evidence)
    # (3) our own policy, on what Steward verified
    verdict = evaluate(policy, evidence)
    if not verdict.accepted:
        raise PolicyError(verdict.reason or "rejected by policy")
    return KeepIdentity(
        via="steward",
        platform=str(platform),
        measurement=claims.measurement,
        insecure=claims.insecure,
        policy=f"{policy.name} (client), {claims.policy} (Steward)",
        certificate_der=der,
        claims=claims.to_json(),
    )


def _verify_ratls(
    cert: x509.Certificate,
    der: bytes,
    nonce: bytes,
    policy: Policy,
    insecure_ok: bool,
    now: datetime,
) -> KeepIdentity:
    # (1) self-signed by the key the handshake proved, and valid now
    verify_self_signed(cert, now)
    try:
        raw = extension_bytes(cert, DONJON_EVIDENCE)
    except DecodeError as e:
        raise EvidenceFormatError(f"the Keep's certificate is malformed: {e.message}") from e
    if raw is None:
        raise PolicyError(
            "the Keep's self-signed certificate carries no evidence; pass --steward or --ca if "
            "the Keep uses a Steward"
        )
    try:
        bundle = CsrEvidence.decode(raw)
    except DecodeError as e:
        raise PolicyError(f"the evidence in the Keep's certificate is malformed: {e}") from e
    if not hmac.compare_digest(bundle.nonce, nonce):
        raise FreshnessError(
            "the Keep's evidence was made for another nonce: "
            "it may be replayed from an earlier Keep"
        )
    platform = parse_platform(bundle.platform)
    # (2) the evidence is authentic
    verified = verify_evidence(
        platform,
        bundle.evidence,
        endorsements=Endorsements(certs=bundle.certs, collateral=bundle.collateral),
        now=now,
    )
    insecure = bool(verified.claims.get("insecure", False)) or platform is Platform.NIL
    _check_insecure(platform, insecure, insecure_ok)
    _check_runtime_measurement(policy, verified)
    # (3) its report data binds this certificate's key and our nonce, and the policy accepts it
    expected = report_data_for(certificate_spki(cert), nonce)
    verdict = evaluate(policy, verified, expected_report_data=expected)
    if not verdict.accepted:
        raise PolicyError(verdict.reason or "rejected by policy")
    return KeepIdentity(
        via="ra-tls",
        platform=str(platform),
        measurement=verified.measurement,
        insecure=insecure,
        policy=policy.name,
        certificate_der=der,
        claims=verified.to_json(),
    )


def _check_insecure(platform: Platform, insecure: bool, insecure_ok: bool) -> None:
    if (insecure or platform is Platform.NIL) and not insecure_ok:
        raise InsecureKeepError(
            f"the Keep runs on '{platform}', which gives no confidentiality or integrity against "
            "the host; refusing to send the workload. Pass --insecure to deploy anyway "
            "(development only)"
        )


def _check_runtime_measurement(policy: Policy, evidence: VerifiedEvidence) -> None:
    if evidence.platform is not Platform.NIL:
        return  # hardware measurements are pinned by policy (measurements = [...])
    if policy.rules_for(Platform.NIL).measurements is not None:
        return
    expected = runtime_measurement()
    if not hmac.compare_digest(evidence.measurement, expected):
        raise MeasurementError(
            "the Keep's runtime measurement "
            f"{evidence.measurement.hex()[:16]}… differs from this donjon's "
            f"{expected.hex()[:16]}…: the host runs another keep runtime (or another donjon "
            "version); pin the expected measurement in a policy to accept it"
        )


__all__ = [
    "DEVELOPMENT_POLICY_TOML",
    "InsecureKeepError",
    "KeepIdentity",
    "VerificationError",
    "development_policy",
    "verify_keep_certificate",
]
