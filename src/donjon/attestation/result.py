"""The platform-neutral result of verifying evidence, and the verifier interface.

Rule 1: a verifier returns :class:`VerifiedEvidence` only when the evidence is *authentic*
(signatures, chains and collateral all check out at ``now``). Whether it is *acceptable* is a
policy decision (``donjon.attestation.policy``) made on the returned claims.
Rule 2: a verifier raises only ``donjon.errors.VerificationError`` subclasses, never a bare library
exception, whatever bytes it is given.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class Platform(enum.StrEnum):
    """Evidence formats donjon verifies."""

    SEV_SNP = "sev-snp"
    TDX = "tdx"
    SGX = "sgx"
    CCA = "cca"
    NITRO = "nitro"
    NIL = "nil"


@dataclass(frozen=True, slots=True)
class Endorsements:
    """Everything that accompanies evidence, as the raw bytes of each file or message.

    Attributes:
        certs: certificates (DER or PEM, several per item allowed) or keys (PEM, JWK JSON, e.g.
            an Arm CPAK); the verifier picks what it needs.
        collateral: collateral documents (Intel TCB info / QE identity JSON, dcap-qvl collateral
            JSON, CRLs in DER or PEM, ...).
    """

    certs: tuple[bytes, ...] = ()
    collateral: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class VerifiedEvidence:
    """Authentic evidence and its claims.

    Attributes:
        platform: which evidence format this was.
        measurement: the primary launch measurement (SNP MEASUREMENT, SGX MRENCLAVE, TDX MRTD,
            CCA realm initial measurement, Nitro PCR0, nil keep-runtime digest).
        report_data: the data the attester bound into the evidence (nonce, key hash).
        debug: whether the TEE allows the host to inspect the guest.
        tcb_status: Intel-style TCB status ("UpToDate", "OutOfDate", ...), or None where the
            platform has no such notion.
        advisory_ids: security advisories that apply to the platform's TCB level.
        claims: every claim, platform-specific ones under their usual names, JSON-compatible
            values (lowercase hex strings for bytes).
    """

    platform: Platform
    measurement: bytes
    report_data: bytes
    debug: bool
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Claims as a JSON-compatible dict, with the common claims first."""
        common: dict[str, Any] = {
            "platform": str(self.platform),
            "measurement": self.measurement.hex(),
            "report_data": self.report_data.hex(),
            "debug": self.debug,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
        }
        return {**common, **{k: v for k, v in self.claims.items() if k not in common}}


class EvidenceVerifier(Protocol):
    """What every platform verifier offers."""

    platform: Platform

    def verify(
        self, evidence: bytes, *, endorsements: Endorsements, now: datetime
    ) -> VerifiedEvidence:
        """Verify *evidence* at time *now* (UTC); raise a ``VerificationError`` if not authentic."""
        ...
