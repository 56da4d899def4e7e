"""TCB level matching and status convergence, as Intel's Quote Verification Library does it.

Pure functions over parsed values (no signatures, no clock). The steps follow the Intel DCAP QVL
(``TcbLevelCheck.cpp``, ``TdxModuleCheck.cpp``, ``TDRelaunchCheck.cpp``), numbered as in Intel's
"Quote verification" algorithm (4.1.2.4.17.x):

1. Platform level (4.1.2.4.17.1-3): the first TCB level, in document order, whose 16 SGX
   components and PCESVN are all <= the PCK certificate's; for TDX, the first such level whose
   16 TDX components are also <= TEE_TCB_SVN (from index 2 when TEE_TCB_SVN[1], the TDX module's
   major version, is non-zero, because the module is then judged by its own identity).
2. TDX module (4.1.2.4.17.4.1): for a major version > 0, the identity ``TDX_%02X`` and its first
   level with ISVSVN <= TEE_TCB_SVN[0].
3. Convergence: the platform status is made worse by an OutOfDate/Revoked TDX module, then (TDX
   1.5 only) the relaunch check may advise a TD relaunch, then an OutOfDate/Revoked quoting
   enclave makes it worse again.

Rule 1: "no level matches" is not a status; it is reported as ``None`` with a reason, and the
verifier turns it into ``TcbStatusError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from donjon.attestation.intel.collateral import (
    IdentityTcbLevel,
    QeIdentity,
    TcbInfo,
    TcbLevel,
    TcbStatus,
    TdxModuleIdentity,
)
from donjon.attestation.intel.pck import PckTcb

TCB_NOT_SUPPORTED = "TCB_NOT_SUPPORTED"
"""The status name the vectors and Intel's QVL use when no TCB level matches."""

_CONFIGURATION_NEEDED = frozenset(
    {
        TcbStatus.CONFIGURATION_NEEDED,
        TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
        TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        TcbStatus.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
    }
)
_UP_TO_DATE_OR_HARDENING = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED})
_CONFIGURATION_ONLY = frozenset(
    {TcbStatus.CONFIGURATION_NEEDED, TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED}
)


@dataclass(frozen=True, slots=True)
class TcbEvaluation:
    """The outcome of TCB evaluation.

    Attributes:
        status: the final status (platform, TDX module and QE converged), or None when some
            TCB (platform, TDX module or QE) matches no level.
        reason: why ``status`` is None, else None.
        platform_level: the matched platform level (the TDX level for TDX), or None.
        sgx_level: the matched SGX-only level (equals ``platform_level`` for SGX), or None.
        tdx_module_identity: the TDX module identity id (``TDX_01``...) when one applies.
        tdx_module_level: its matched level, or None.
        qe_level: the matched QE identity level, or None.
        advisory_ids: the advisories of every matched level (platform, TDX module, QE), each
            once, in that order.
    """

    status: TcbStatus | None
    reason: str | None
    platform_level: TcbLevel | None
    sgx_level: TcbLevel | None
    tdx_module_identity: str | None
    tdx_module_level: IdentityTcbLevel | None
    qe_level: IdentityTcbLevel | None
    advisory_ids: tuple[str, ...]

    @property
    def platform_status(self) -> str:
        """The matched platform level's status, or ``TCB_NOT_SUPPORTED``."""
        return str(self.platform_level.status) if self.platform_level else TCB_NOT_SUPPORTED

    @property
    def tcb_date(self) -> datetime | None:
        """The matched platform level's TCB date."""
        return self.platform_level.tcb_date if self.platform_level else None


def _sgx_matches(level: TcbLevel, pck: PckTcb) -> bool:
    return pck.pce_svn >= level.pce_svn and all(
        have >= need for have, need in zip(pck.sgx_components, level.sgx_components, strict=True)
    )


def _tdx_matches(level: TcbLevel, tee_tcb_svn: bytes) -> bool:
    if level.tdx_components is None:
        return False
    start = 2 if tee_tcb_svn[1] > 0 else 0
    return all(tee_tcb_svn[i] >= level.tdx_components[i] for i in range(start, 16))


def match_platform_levels(
    tcb_info: TcbInfo, pck: PckTcb, tee_tcb_svn: bytes | None
) -> tuple[TcbLevel | None, TcbLevel | None]:
    """Match the platform TCB (step 1).

    Args:
        tcb_info: the TCB info for the platform's FMSPC.
        pck: the TCB certified by the PCK certificate.
        tee_tcb_svn: TEE_TCB_SVN for a TDX quote with TDX TCB info, else None.

    Returns:
        (the first level matching the SGX components and PCESVN, the first level also matching
        the TDX components, or None for SGX).
    """
    sgx_level: TcbLevel | None = None
    for level in tcb_info.tcb_levels:
        if not _sgx_matches(level, pck):
            continue
        if tee_tcb_svn is None:
            return level, None
        if sgx_level is None:
            sgx_level = level
        if _tdx_matches(level, tee_tcb_svn):
            return sgx_level, level
    return sgx_level, None


def match_identity_level(
    levels: tuple[IdentityTcbLevel, ...], isv_svn: int
) -> IdentityTcbLevel | None:
    """The first level (document order) whose ISVSVN is <= *isv_svn*, or None."""
    return next((level for level in levels if isv_svn >= level.isv_svn), None)


def tdx_module_identity_id(major_version: int) -> str:
    """The identity id for a TDX module major version (TEE_TCB_SVN[1]): ``TDX_%02X``."""
    return f"TDX_{major_version:02X}"


def find_tdx_module_identity(tcb_info: TcbInfo, major_version: int) -> TdxModuleIdentity | None:
    """The TDX module identity for *major_version*, matched case-insensitively, or None."""
    wanted = tdx_module_identity_id(major_version)
    return next((m for m in tcb_info.tdx_module_identities if m.id.upper() == wanted), None)


def converge_with_tdx_module(status: TcbStatus, module: TcbStatus) -> TcbStatus:
    """Make a platform status worse by the TDX module's status (Intel QVL semantics)."""
    if module is TcbStatus.OUT_OF_DATE:
        if status in _UP_TO_DATE_OR_HARDENING:
            return TcbStatus.OUT_OF_DATE
        if status in _CONFIGURATION_ONLY:
            return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    if module is TcbStatus.REVOKED:
        return TcbStatus.REVOKED
    return status


def converge_with_qe(status: TcbStatus, qe: TcbStatus) -> TcbStatus:
    """Make a platform status worse by the quoting enclave's status (Intel QVL semantics)."""
    if qe is TcbStatus.OUT_OF_DATE:
        if status in _UP_TO_DATE_OR_HARDENING:
            return TcbStatus.OUT_OF_DATE
        if status in _CONFIGURATION_ONLY:
            return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    if qe is TcbStatus.REVOKED:
        return TcbStatus.REVOKED
    return status


def _relaunch(
    tee_tcb_svn2: bytes,
    tcb_info: TcbInfo,
    sgx: TcbStatus,
    tdx: TcbStatus,
    module: TcbStatus | None,
) -> TcbStatus:
    """TDX 1.5: advise a relaunch when only the running TD, not the platform, is behind.

    The QE condition of Intel's check is handled by the caller (only an UpToDate QE gets here).
    """
    if (
        sgx not in _UP_TO_DATE_OR_HARDENING | _CONFIGURATION_ONLY
        or tdx not in (TcbStatus.OUT_OF_DATE, TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED)
        or module is not TcbStatus.OUT_OF_DATE
        or not tcb_info.tcb_levels
    ):
        return tdx
    latest = tcb_info.tcb_levels[0]
    if latest.tdx_components is None:
        return tdx
    if tee_tcb_svn2[1] == 0:
        module_ok = tee_tcb_svn2[0] >= latest.tdx_components[0]
    else:
        identity = find_tdx_module_identity(tcb_info, tee_tcb_svn2[1])
        if identity is None or not identity.tcb_levels:
            return tdx
        module_ok = tee_tcb_svn2[0] >= identity.tcb_levels[0].isv_svn
    if module_ok and tee_tcb_svn2[2] >= latest.tdx_components[2]:
        if sgx in _CONFIGURATION_NEEDED or tdx in _CONFIGURATION_NEEDED:
            return TcbStatus.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED
        return TcbStatus.TD_RELAUNCH_ADVISED
    return tdx


def _unique(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a for g in groups for a in g))


def evaluate_tcb(
    *,
    tcb_info: TcbInfo,
    pck: PckTcb,
    qe_identity: QeIdentity,
    qe_isv_svn: int,
    tee_tcb_svn: bytes | None = None,
    tee_tcb_svn2: bytes | None = None,
) -> TcbEvaluation:
    """Evaluate platform, TDX module and QE TCB levels and converge them to one status.

    Args:
        tcb_info: TCB info for the platform's FMSPC (SGX or TDX).
        pck: the TCB certified by the PCK certificate.
        qe_identity: the QE identity (already matched to the QE report's identity fields).
        qe_isv_svn: the QE report's ISVSVN.
        tee_tcb_svn: TEE_TCB_SVN of a TD report (TDX), else None.
        tee_tcb_svn2: TEE_TCB_SVN2 of a TD 1.5 report, else None.

    Returns:
        The evaluation; ``status`` is None when some TCB matches no level.
    """
    tdx = tee_tcb_svn is not None
    sgx_level, tdx_level = match_platform_levels(tcb_info, pck, tee_tcb_svn)
    platform_level = tdx_level if tdx else sgx_level
    qe_level = match_identity_level(qe_identity.tcb_levels, qe_isv_svn)

    module_id: str | None = None
    module_level: IdentityTcbLevel | None = None
    module_reason: str | None = None
    if tee_tcb_svn is not None and tee_tcb_svn[1] > 0:
        module_id = tdx_module_identity_id(tee_tcb_svn[1])
        identity = find_tdx_module_identity(tcb_info, tee_tcb_svn[1])
        if identity is None:
            module_reason = f"the TCB info has no TDX module identity {module_id}"
        else:
            module_level = match_identity_level(identity.tcb_levels, tee_tcb_svn[0])
            if module_level is None:
                module_reason = (
                    f"TDX module {module_id} SVN {tee_tcb_svn[0]} is below every level "
                    "Intel publishes for it"
                )

    advisories = _unique(
        platform_level.advisory_ids if platform_level else (),
        module_level.advisory_ids if module_level else (),
        qe_level.advisory_ids if qe_level else (),
    )
    reason: str | None = None
    if sgx_level is None:
        reason = (
            f"no TCB level of FMSPC {tcb_info.fmspc.hex()} matches the platform's SGX TCB "
            f"(components {list(pck.sgx_components)}, PCESVN {pck.pce_svn})"
        )
    elif platform_level is None and tee_tcb_svn is not None:
        reason = (
            f"no TCB level of FMSPC {tcb_info.fmspc.hex()} matches the platform's TDX TCB "
            f"(TEE_TCB_SVN {tee_tcb_svn.hex()})"
        )
    elif module_reason is not None:
        reason = module_reason
    elif qe_level is None:
        reason = f"QE ISVSVN {qe_isv_svn} is below every level of the {qe_identity.id} identity"
    if reason is not None or platform_level is None or qe_level is None or sgx_level is None:
        return TcbEvaluation(
            status=None,
            reason=reason,
            platform_level=platform_level,
            sgx_level=sgx_level,
            tdx_module_identity=module_id,
            tdx_module_level=module_level,
            qe_level=qe_level,
            advisory_ids=advisories,
        )

    status = platform_level.status
    if module_level is not None:
        status = converge_with_tdx_module(status, module_level.status)
    if (
        tee_tcb_svn2 is not None
        and status is not TcbStatus.REVOKED
        and qe_level.status is TcbStatus.UP_TO_DATE
    ):
        status = _relaunch(
            tee_tcb_svn2,
            tcb_info,
            sgx_level.status,
            status,
            module_level.status if module_level else None,
        )
    status = converge_with_qe(status, qe_level.status)
    return TcbEvaluation(
        status=status,
        reason=None,
        platform_level=platform_level,
        sgx_level=sgx_level,
        tdx_module_identity=module_id,
        tdx_module_level=module_level,
        qe_level=qe_level,
        advisory_ids=advisories,
    )


__all__ = [
    "TCB_NOT_SUPPORTED",
    "TcbEvaluation",
    "converge_with_qe",
    "converge_with_tdx_module",
    "evaluate_tcb",
    "find_tdx_module_identity",
    "match_identity_level",
    "match_platform_levels",
    "tdx_module_identity_id",
]
