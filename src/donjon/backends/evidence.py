"""Evidence providers: how code inside a Keep asks its TEE for evidence, and which one to use.

A provider turns 64 bytes of report data (``donjon.crypto.binding.report_data_for``: the Keep's
key and the verifier's nonce) into evidence bytes that the matching verifier in
``donjon.attestation`` checks.

Rule 1: :func:`detect_provider` never picks ``nil``. Hardware evidence or an error; the insecure
development provider (``donjon.backends.nil_evidence.NilEvidenceProvider``) is only ever chosen
explicitly by the caller.

Example:
    >>> from pathlib import Path
    >>> from donjon.backends.evidence import detect_provider
    >>> from donjon.backends.host_view import HostView
    >>> detect_provider(HostView(root=Path("/nonexistent")))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    donjon.errors.BackendUnavailableError: no TEE evidence interface here: ...
"""

from __future__ import annotations

from typing import Protocol

from donjon.attestation.result import Platform
from donjon.backends._common import EvidenceError
from donjon.backends.devices import SEV_GUEST_DEVICE, SevGuestDeviceProvider
from donjon.backends.host_view import HostView
from donjon.backends.tsm import TSM_ROOT, TsmReportProvider
from donjon.errors import BackendUnavailableError


class EvidenceProvider(Protocol):
    """What every evidence source offers (configfs-tsm, /dev/sev-guest, nil)."""

    @property
    def platform(self) -> Platform:
        """The evidence format produced, which names the verifier to use."""
        ...

    def evidence(self, report_data: bytes) -> bytes:
        """Evidence that binds exactly these 64 bytes of *report_data*.

        Raises:
            BackendUnavailableError: the TEE interface is not there.
            EvidenceError: it is there but produced no evidence.
        """
        ...


def detect_provider(view: HostView) -> EvidenceProvider:
    """The hardware evidence provider of the machine seen through *view*.

    Order: configfs-tsm (the kernel's vendor-neutral interface, which also fetches TDX quotes and
    SNP certificates), then ``/dev/sev-guest``.

    Raises:
        BackendUnavailableError: this machine is not a confidential VM with an evidence interface.
    """
    tsm_root = view.path(TSM_ROOT)
    if (tsm_root / "report").is_dir():
        return TsmReportProvider(root=tsm_root)
    if view.exists(SEV_GUEST_DEVICE):
        return SevGuestDeviceProvider(device=view.path(SEV_GUEST_DEVICE))
    raise BackendUnavailableError(
        f"no TEE evidence interface here: neither configfs-tsm ({TSM_ROOT}/report) nor "
        f"{SEV_GUEST_DEVICE} exists, so this machine is not a confidential VM (or its guest "
        "kernel lacks CONFIG_TSM_REPORTS / configfs is not mounted). For development without "
        "TEE hardware choose the nil backend explicitly; `donjon platform info` explains more"
    )


__all__ = ["EvidenceError", "EvidenceProvider", "detect_provider"]
