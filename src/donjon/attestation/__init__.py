"""Attestation: evidence verifiers per platform, policies, and one platform-neutral result.

Does: check that evidence is authentic (signatures, chains to embedded vendor roots, collateral,
freshness at a given ``now``) and extract its claims; apply a policy to those claims.
Does not: fetch collateral, read the clock, or do I/O; callers pass bytes and ``now``.

Example:
    >>> from datetime import datetime, UTC
    >>> from donjon.attestation import Endorsements, Platform, Policy, evaluate, verify_evidence
    >>> verified = verify_evidence(Platform.SEV_SNP, report,  # doctest: +SKIP
    ...     endorsements=Endorsements(certs=(vcek_der,)), now=datetime(2025, 9, 1, tzinfo=UTC))
    >>> evaluate(Policy.production(), verified).reason  # doctest: +SKIP
    "rejected: debug enabled (SEV-SNP guest policy bit 19) not allowed by policy 'production'"
"""

from __future__ import annotations

from donjon._lazy import lazy_exports
from donjon.attestation.result import Endorsements, EvidenceVerifier, Platform, VerifiedEvidence

_EXPORTS = {
    "Policy": "policy",
    "Verdict": "verdict",
    "evaluate": "policy",
    "enforce": "policy",
    "verify_evidence": "dispatch",
    "verifier_for": "dispatch",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = [
    "Endorsements",
    "EvidenceVerifier",
    "Platform",
    "Policy",
    "Verdict",
    "VerifiedEvidence",
    "enforce",
    "evaluate",
    "verifier_for",
    "verify_evidence",
]
