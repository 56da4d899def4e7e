"""TCB status convergence and level matching, against Intel's QVL rules written out as tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from donjon.attestation.intel.collateral import (
    IdentityTcbLevel,
    SignedDocument,
    TcbInfo,
    TcbLevel,
    TcbStatus,
    TdxModule,
    TdxModuleIdentity,
)
from donjon.attestation.intel.pck import PckTcb
from donjon.attestation.intel.tcb import (
    converge_with_qe,
    converge_with_tdx_module,
    match_identity_level,
    match_platform_levels,
    tdx_module_identity_id,
)

S = TcbStatus
T = datetime(2025, 1, 1, tzinfo=UTC)

# Intel QVL convergeTcbStatusWithQeTcbStatus (and the TDX module twin): rows are the platform
# status, columns the QE (module) status UpToDate / OutOfDate / Revoked.
CONVERGENCE = {
    S.UP_TO_DATE: (S.UP_TO_DATE, S.OUT_OF_DATE, S.REVOKED),
    S.SW_HARDENING_NEEDED: (S.SW_HARDENING_NEEDED, S.OUT_OF_DATE, S.REVOKED),
    S.CONFIGURATION_NEEDED: (S.CONFIGURATION_NEEDED, S.OUT_OF_DATE_CONFIGURATION_NEEDED, S.REVOKED),
    S.CONFIGURATION_AND_SW_HARDENING_NEEDED: (
        S.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        S.OUT_OF_DATE_CONFIGURATION_NEEDED,
        S.REVOKED,
    ),
    S.OUT_OF_DATE: (S.OUT_OF_DATE, S.OUT_OF_DATE, S.REVOKED),
    S.OUT_OF_DATE_CONFIGURATION_NEEDED: (
        S.OUT_OF_DATE_CONFIGURATION_NEEDED,
        S.OUT_OF_DATE_CONFIGURATION_NEEDED,
        S.REVOKED,
    ),
    S.REVOKED: (S.REVOKED, S.REVOKED, S.REVOKED),
}


@pytest.mark.parametrize("platform", list(CONVERGENCE))
def test_convergence_tables(platform: TcbStatus) -> None:
    for other, want in zip(
        (S.UP_TO_DATE, S.OUT_OF_DATE, S.REVOKED), CONVERGENCE[platform], strict=True
    ):
        assert converge_with_qe(platform, other) is want
        assert converge_with_tdx_module(platform, other) is want


def _level(sgx: list[int], pce: int, status: TcbStatus, tdx: list[int] | None = None) -> TcbLevel:
    return TcbLevel(
        sgx_components=tuple(sgx),
        pce_svn=pce,
        tdx_components=tuple(tdx) if tdx is not None else None,
        tcb_date=T,
        status=status,
        advisory_ids=(),
    )


def _info(levels: list[TcbLevel], identities: tuple[TdxModuleIdentity, ...] = ()) -> TcbInfo:
    return TcbInfo(
        id="TDX" if identities or any(lv.tdx_components for lv in levels) else "SGX",
        version=3,
        issue_date=T,
        next_update=T,
        fmspc=bytes(6),
        pce_id=bytes(2),
        tcb_type=0,
        tcb_evaluation_data_number=1,
        tcb_levels=tuple(levels),
        tdx_module=TdxModule(bytes(48), bytes(8), b"\xff" * 8),
        tdx_module_identities=identities,
        signed=SignedDocument(b"{}", bytes(64)),
    )


def test_every_component_must_be_at_least_the_levels() -> None:
    base = [5] * 16
    info = _info([_level(base, 10, S.UP_TO_DATE), _level([1] * 16, 1, S.OUT_OF_DATE)])
    assert (
        match_platform_levels(info, PckTcb(tuple(base), 10, bytes(base)), None)[0]
        is info.tcb_levels[0]
    )
    for i in range(16):
        lower = list(base)
        lower[i] = 4  # one component below: the first level no longer matches
        got, _ = match_platform_levels(info, PckTcb(tuple(lower), 10, bytes(lower)), None)
        assert got is info.tcb_levels[1]
    got, _ = match_platform_levels(info, PckTcb(tuple(base), 9, bytes(base)), None)
    assert got is info.tcb_levels[1]  # PCESVN below the first level's
    got, _ = match_platform_levels(info, PckTcb((0,) * 16, 0, bytes(16)), None)
    assert got is None


def test_tdx_components_from_index_2_when_the_module_has_a_version() -> None:
    sgx = [1] * 16
    tdx_need = [9, 9, 3] + [0] * 13
    info = _info([_level(sgx, 1, S.UP_TO_DATE, tdx_need), _level(sgx, 1, S.OUT_OF_DATE, [0] * 16)])
    pck = PckTcb(tuple(sgx), 1, bytes(sgx))
    with_version = bytes([2, 1, 3] + [0] * 13)  # SVN 2 < 9 is ignored: module version 1 > 0
    assert match_platform_levels(info, pck, with_version) == (
        info.tcb_levels[0],
        info.tcb_levels[0],
    )
    no_version = bytes([2, 0, 3] + [0] * 13)  # module version 0: all 16 are compared
    assert match_platform_levels(info, pck, no_version) == (info.tcb_levels[0], info.tcb_levels[1])
    too_low = bytes([2, 1, 2] + [0] * 13)
    assert match_platform_levels(info, pck, too_low)[1] is info.tcb_levels[1]


def test_identity_levels_and_module_ids() -> None:
    levels = (
        IdentityTcbLevel(8, T, S.UP_TO_DATE, ()),
        IdentityTcbLevel(6, T, S.OUT_OF_DATE, ("INTEL-SA-1",)),
    )
    assert match_identity_level(levels, 9) is levels[0]
    assert match_identity_level(levels, 7) is levels[1]
    assert match_identity_level(levels, 5) is None
    assert tdx_module_identity_id(1) == "TDX_01"
    assert tdx_module_identity_id(0x1A) == "TDX_1A"
