"""detect_provider: configfs-tsm first, then /dev/sev-guest, never nil."""

from __future__ import annotations

from pathlib import Path

import pytest

from donjon.backends import evidence as evidence_module
from donjon.backends.devices import SevGuestDeviceProvider
from donjon.backends.evidence import EvidenceProvider, detect_provider
from donjon.backends.host_view import HostView
from donjon.backends.nil_evidence import NilEvidenceProvider
from donjon.backends.tsm import TsmReportProvider
from donjon.errors import BackendUnavailableError


def test_configfs_tsm_is_preferred(tmp_path: Path) -> None:
    (tmp_path / "sys/kernel/config/tsm/report").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/sev-guest").write_bytes(b"")
    provider = detect_provider(HostView(root=tmp_path))
    assert isinstance(provider, TsmReportProvider)
    assert provider._root == tmp_path / "sys/kernel/config/tsm"


def test_sev_guest_device_when_no_configfs_tsm(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/sev-guest").write_bytes(b"")
    provider = detect_provider(HostView(root=tmp_path))
    assert isinstance(provider, SevGuestDeviceProvider)


def test_nothing_here_is_unavailable_and_never_falls_back_to_nil(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="choose the nil backend explicitly"):
        detect_provider(HostView(root=tmp_path))


def test_every_provider_satisfies_the_protocol(tmp_path: Path) -> None:
    providers: list[EvidenceProvider] = [
        TsmReportProvider(root=tmp_path),
        SevGuestDeviceProvider(device=tmp_path / "x"),
        NilEvidenceProvider(key_path=tmp_path / "k.pem", measurement=bytes(48)),
    ]
    assert [type(p).__name__ for p in providers] == [
        "TsmReportProvider",
        "SevGuestDeviceProvider",
        "NilEvidenceProvider",
    ]
    assert set(evidence_module.__all__) == {"EvidenceError", "EvidenceProvider", "detect_provider"}
