"""AMD SEV-SNP: attestation reports, VCEK/VLEK chains to AMD's roots, TCB values, Azure HCL.

Does: parse SNP attestation reports (versions 2, 3, 5) and Azure HCL reports, verify them
against a VCEK or VLEK that chains to an embedded AMD ARK (Milan, Genoa, Turin), check the
certificate's TCB and hwID against the report, honour CRLs when given, and return the claims.
Does not: fetch VCEKs or CRLs from AMD KDS (``donjon.endorse`` does), read the clock, or decide
whether authentic evidence is acceptable (``debug``, minimum TCB, measurements: see
``donjon.attestation.policy``).

Modules: ``report`` (pure parser), ``tcb`` (TCB_VERSION per product family), ``certs`` (AMD
certificate extensions, loading), ``hcl`` (Azure HCL report), ``verifier`` (:class:`SnpVerifier`).
The embedded roots and their provenance are in ``roots/``.
"""

from __future__ import annotations

from donjon.attestation.snp.certs import AmdCertExtensions, SnpKeyType, parse_amd_extensions
from donjon.attestation.snp.hcl import HclReport, is_hcl_report, parse_hcl_report
from donjon.attestation.snp.report import (
    FirmwareVersion,
    GuestPolicy,
    PlatformInfo,
    SigningKey,
    SnpReport,
    parse_report,
)
from donjon.attestation.snp.tcb import ProductFamily, TcbVersion
from donjon.attestation.snp.verifier import (
    SnpEndorsementMismatchError,
    SnpVerifier,
    VerifiedSnpChain,
)

__all__ = [
    "AmdCertExtensions",
    "FirmwareVersion",
    "GuestPolicy",
    "HclReport",
    "PlatformInfo",
    "ProductFamily",
    "SigningKey",
    "SnpEndorsementMismatchError",
    "SnpKeyType",
    "SnpReport",
    "SnpVerifier",
    "TcbVersion",
    "VerifiedSnpChain",
    "is_hcl_report",
    "parse_amd_extensions",
    "parse_hcl_report",
    "parse_report",
]
