"""Intel SGX and TDX DCAP quote verification, on ``cryptography``, offline.

Does: parse DCAP quotes (v3, v4, v5; SGX, TDX 1.0 and 1.5) and every collateral format in use
(Intel PCS TCB info / QE identity JSON, dcap-qvl collateral JSON, CRLs in DER/PEM/hex, issuer
chains), check the PCK chain to the embedded Intel SGX Root CA, the CRLs, the QE report and its
binding to the attestation key, the quote signature, the TCB info and QE identity signatures over
their exact bytes and the freshness of all of it at a given time, then match TCB levels to Intel's
status (UpToDate, SWHardeningNeeded, ConfigurationNeeded, OutOfDate, ...) with advisory IDs.
Does not: fetch collateral from Intel PCS or a PCCS (``donjon.endorse`` does), read the clock,
or apply a policy; a TCB status like OutOfDate is reported, not rejected.

Example::

    from datetime import UTC, datetime
    from pathlib import Path
    from donjon.attestation import Endorsements, Platform
    from donjon.attestation.intel import DcapVerifier

    v = Path("shared/vectors/tdx/dcapqvl-v4")
    verifier = DcapVerifier.from_embedded_roots(platform=Platform.TDX)
    result = verifier.verify(
        (v / "quote.bin").read_bytes(),
        endorsements=Endorsements(collateral=((v / "collateral.json").read_bytes(),)),
        now=datetime(2025, 7, 4, tzinfo=UTC),
    )
    assert result.tcb_status == "UpToDate" and result.claims["tdx_module_identity"] == "TDX_01"
"""

from __future__ import annotations

from donjon.attestation.intel.collateral import (
    Collateral,
    QeIdentity,
    TcbInfo,
    TcbStatus,
    parse_collateral,
)
from donjon.attestation.intel.pck import PckExtensions, pck_extensions
from donjon.attestation.intel.quote import (
    MAX_QUOTE_BYTES,
    EnclaveReport,
    Quote,
    TdReport,
    TeeType,
    parse_quote,
)
from donjon.attestation.intel.tcb import TCB_NOT_SUPPORTED, TcbEvaluation, evaluate_tcb
from donjon.attestation.intel.verifier import (
    INTEL_SGX_ROOT_CA_SHA256,
    DcapVerifier,
    TcbLevelError,
    embedded_root,
)

__all__ = [
    "INTEL_SGX_ROOT_CA_SHA256",
    "MAX_QUOTE_BYTES",
    "TCB_NOT_SUPPORTED",
    "Collateral",
    "DcapVerifier",
    "EnclaveReport",
    "PckExtensions",
    "QeIdentity",
    "Quote",
    "TcbEvaluation",
    "TcbInfo",
    "TcbLevelError",
    "TcbStatus",
    "TdReport",
    "TeeType",
    "embedded_root",
    "evaluate_tcb",
    "parse_collateral",
    "parse_quote",
    "pck_extensions",
]
