"""Attestation: evidence verifiers per platform, policies, and one platform-neutral result.

Does: check that evidence is authentic (signatures, chains to embedded vendor roots, collateral,
freshness at a given ``now``) and extract its claims; apply a policy to those claims.
Does not: fetch collateral, read the clock, or do I/O; callers pass bytes and ``now``.
"""

from __future__ import annotations

from donjon.attestation.result import Endorsements, EvidenceVerifier, Platform, VerifiedEvidence

__all__ = ["Endorsements", "EvidenceVerifier", "Platform", "VerifiedEvidence"]
