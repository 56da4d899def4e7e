"""An appraisal as an EAT Attestation Result (EAR), the format of IETF RATS verifiers.

Relying parties built on Veraison or Trustee read attestation results as EAR
(draft-ietf-rats-ear: an EAT claims-set, profile ``tag:github.com,2023:veraison/ear``) whose
appraisals carry AR4SI trustworthiness vectors (draft-ietf-rats-ar4si). :func:`ear_claims` turns
donjon's verdict on verified evidence into that claims-set, so such a relying party can consume
``donjon attest verify --ear`` as it would a Veraison result; ``donjon.crypto.jws`` signs it as a
JWT.

The trustworthiness vector donjon claims, and only from what it verified (an unset claim is "no
claim", value 0):

================== ===================================================================
claim              value
================== ===================================================================
instance-identity  2 (trustworthy instance): the evidence chains to the vendor's root
hardware           2 genuine; 32 (known vulnerabilities) when the TCB status is not
                   UpToDate or advisories apply; none for ``nil``, which has no TEE
configuration      96 (unsupportable) for a debug TEE, whose memory the host can read;
                   2 (approved) when the policy accepted the rest
executables        2 (approved runtime) when the policy's measurement list matched;
                   33 (unrecognized) when it did not; no claim without a list
runtime-opaque     2 (encrypted memory) for SEV-SNP, TDX, SGX, CCA; 32 (isolated) for
                   Nitro; 96 (visible) for ``nil``
================== ===================================================================

``ear.status`` is the worst tier among the claims (affirming 2-31, warning 32-95,
contraindicated 96-127), and contraindicated when the policy rejected the evidence, with the
reason under ``ear.veraison.policy-claims``. A ``nil`` appraisal is therefore contraindicated
even under the ``dev`` policy that accepts it: EAR says what the evidence proves, not what a
development policy tolerates.
"""

from __future__ import annotations

import base64
from typing import Any

from donjon.attestation.result import Platform
from donjon.attestation.verdict import Verdict

__all__ = [
    "EAR_PROFILE",
    "TIER_AFFIRMING",
    "TIER_CONTRAINDICATED",
    "TIER_NONE",
    "TIER_WARNING",
    "appraisal",
    "ear_claims",
    "failed_appraisal",
    "tier_of",
]

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
TIER_NONE = "none"
TIER_AFFIRMING = "affirming"
TIER_WARNING = "warning"
TIER_CONTRAINDICATED = "contraindicated"

# AR4SI values (draft-ietf-rats-ar4si), by claim.
TRUSTWORTHY_INSTANCE = 2
GENUINE_HARDWARE = 2
UNSAFE_HARDWARE = 32
APPROVED_CONFIG = 2
UNSUPPORTABLE_CONFIG = 96
APPROVED_RUNTIME = 2
UNRECOGNIZED_RUNTIME = 33
ENCRYPTED_MEMORY_RUNTIME = 2
ISOLATED_MEMORY_RUNTIME = 32
VISIBLE_MEMORY_RUNTIME = 96
CRYPTO_VALIDATION_FAILED = 99

_ENCRYPTED = frozenset({Platform.SEV_SNP, Platform.TDX, Platform.SGX, Platform.CCA})
_GOOD_TCB = frozenset({None, "UpToDate"})
_ORDER = (TIER_NONE, TIER_AFFIRMING, TIER_WARNING, TIER_CONTRAINDICATED)


def tier_of(value: int) -> str:
    """The AR4SI tier of a trustworthiness claim's value."""
    if value in (0, 1):
        return TIER_NONE
    if 2 <= value <= 31:
        return TIER_AFFIRMING
    if 32 <= value <= 95:
        return TIER_WARNING
    return TIER_CONTRAINDICATED  # 96-127, and the negative "verifier malfunction" values


def appraisal(verdict: Verdict, *, key_spki: bytes | None = None) -> dict[str, Any]:
    """One EAR appraisal (a ``submods`` entry) for *verdict*.

    Args:
        verdict: the policy decision on verified evidence.
        key_spki: the DER SubjectPublicKeyInfo the evidence binds, if the caller checked that
            binding (``ear.veraison.key-attestation``).
    """
    evidence = verdict.evidence
    checks = {c.name: c for c in verdict.checks}
    vector: dict[str, int] = {}
    if evidence.platform is Platform.NIL:
        vector["runtime-opaque"] = VISIBLE_MEMORY_RUNTIME
    else:
        vector["instance-identity"] = TRUSTWORTHY_INSTANCE
        weak = evidence.tcb_status not in _GOOD_TCB or bool(evidence.advisory_ids)
        vector["hardware"] = UNSAFE_HARDWARE if weak else GENUINE_HARDWARE
        vector["runtime-opaque"] = (
            ENCRYPTED_MEMORY_RUNTIME if evidence.platform in _ENCRYPTED else ISOLATED_MEMORY_RUNTIME
        )
    if evidence.debug:
        vector["configuration"] = UNSUPPORTABLE_CONFIG
    elif verdict.accepted:
        vector["configuration"] = APPROVED_CONFIG
    measured = checks.get("measurement")
    if measured is not None:
        vector["executables"] = APPROVED_RUNTIME if measured.passed else UNRECOGNIZED_RUNTIME
    status = max((tier_of(v) for v in vector.values()), key=_ORDER.index, default=TIER_NONE)
    out: dict[str, Any] = {
        "ear.status": status if verdict.accepted else TIER_CONTRAINDICATED,
        "ear.trustworthiness-vector": vector,
        "ear.appraisal-policy-id": f"policy:{verdict.policy}"
        + (f"#{verdict.policy_digest}" if verdict.policy_digest else ""),
        "ear.veraison.annotated-evidence": evidence.to_json(),
    }
    if not verdict.accepted:
        out["ear.veraison.policy-claims"] = {"reason": verdict.reason}
    if key_spki is not None:
        out["ear.veraison.key-attestation"] = {"akpub": _b64url(key_spki)}
    return out


def failed_appraisal(reason: str) -> dict[str, Any]:
    """The appraisal of evidence that did not verify: cryptographic validation failed (99)."""
    return {
        "ear.status": TIER_CONTRAINDICATED,
        "ear.trustworthiness-vector": {"instance-identity": CRYPTO_VALIDATION_FAILED},
        "ear.veraison.policy-claims": {"reason": reason},
    }


def ear_claims(
    submods: dict[str, dict[str, Any]],
    *,
    iat: int,
    verifier_build: str,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    """The EAR claims-set around *submods* (name -> :func:`appraisal`).

    Args:
        submods: the appraisals, at least one.
        iat: issued-at, POSIX seconds (the verification time: tests pin it).
        verifier_build: what verified (``ear.verifier-id``'s ``build``).
        nonce: the relying party's nonce to echo (``eat_nonce``), if any.
    """
    if not submods:
        raise ValueError("an EAR needs at least one appraisal")
    claims: dict[str, Any] = {
        "eat_profile": EAR_PROFILE,
        "iat": iat,
        "ear.verifier-id": {"developer": "donjon", "build": verifier_build},
        "submods": submods,
    }
    if nonce is not None:
        claims["eat_nonce"] = _b64url(nonce)
    return claims


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
