"""SEV-SNP evidence through ``/dev/sev-guest`` (the ``SNP_GET_REPORT`` ioctl), for guest kernels
older than configfs-tsm (< 6.7).

.. warning::
   Untested on SEV-SNP hardware: this machine has none. The struct layouts and the ioctl number
   come from ``include/uapi/linux/sev-guest.h`` and are pinned by unit tests; the response layout
   (``MSG_REPORT_RSP``) from the AMD SEV-SNP ABI specification (56860), table "MSG_REPORT_RSP".
   Prefer configfs-tsm (``donjon.backends.tsm``) wherever it exists.

``/dev/tdx_guest`` is deliberately not offered: its ``TDX_CMD_GET_REPORT0`` returns a TDREPORT,
which is MAC-ed for the local quoting enclave and is not remotely verifiable evidence. A TDX quote
needs the host's quote generation service, which configfs-tsm reaches (``tdx_guest`` provider).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from pathlib import Path

from donjon.attestation.result import Platform
from donjon.backends._common import EvidenceError
from donjon.errors import BackendUnavailableError, ConfigError

SEV_GUEST_DEVICE = "/dev/sev-guest"
"""The sev-guest driver's misc device."""

REPORT_DATA_BYTES = 64

SNP_REPORT_BYTES = 0x4A0
"""An SNP ATTESTATION_REPORT is 1184 bytes (SNP ABI spec, table "ATTESTATION_REPORT")."""

# struct snp_guest_request_ioctl { __u8 msg_version; __u64 req_data; __u64 resp_data;
#                                  __u64 exitinfo2; }  -- the u8 is padded to 8 bytes.
_IOCTL_ARG = struct.Struct("=B7xQQQ")
# struct snp_report_req { __u8 user_data[64]; __u32 vmpl; __u8 rsvd[28]; }
_REPORT_REQ = struct.Struct("=64sI28x")
_REPORT_RESP_BYTES = 4000  # struct snp_report_resp { __u8 data[4000]; }
# MSG_REPORT_RSP: u32 status, u32 report_size, 24 reserved bytes, then the report.
_MSG_REPORT_RSP = struct.Struct("<II24x")

_MSG_VERSION = 1  # "message version number (must be non-zero)"; version 1 is the only one
_EXITINFO2_UNSET = 0xFF  # the driver's SEV_RET_NO_FW_CALL: no firmware call was made


def _iowr(kind: str, nr: int, size: int) -> int:
    """Linux ``_IOWR(type, nr, size)`` (include/uapi/asm-generic/ioctl.h)."""
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | nr


SNP_GET_REPORT = _iowr("S", 0x0, _IOCTL_ARG.size)
"""``_IOWR('S', 0x0, struct snp_guest_request_ioctl)`` = 0xC0205300."""

_FW_ERRORS = {
    0x16: "INVALID_PARAM (is the requested VMPL below the guest's own?)",
    0x07: "INVALID_GUEST",
}


def encode_report_request(report_data: bytes, vmpl: int) -> bytes:
    """The ``struct snp_report_req`` bytes for *report_data* at *vmpl*."""
    return _REPORT_REQ.pack(report_data, vmpl)


def parse_report_response(data: bytes) -> bytes:
    """The attestation report inside a ``MSG_REPORT_RSP``.

    Raises:
        EvidenceError: the firmware reported an error, or the sizes do not fit.
    """
    if len(data) < _MSG_REPORT_RSP.size:
        raise EvidenceError(f"SNP report response is {len(data)} bytes; too short")
    status, size = _MSG_REPORT_RSP.unpack_from(data)
    if status != 0:
        raise EvidenceError(
            f"the SEV-SNP firmware refused the report: status {status:#x} "
            f"{_FW_ERRORS.get(status, '')}".rstrip()
        )
    if size != SNP_REPORT_BYTES or _MSG_REPORT_RSP.size + size > len(data):
        raise EvidenceError(
            f"SNP report response claims a {size}-byte report; expected {SNP_REPORT_BYTES}"
        )
    return bytes(data[_MSG_REPORT_RSP.size : _MSG_REPORT_RSP.size + size])


class SevGuestDeviceProvider:
    """SEV-SNP reports through the ``/dev/sev-guest`` ioctl (untested on hardware; see above).

    Args:
        device: the device node.
        vmpl: the VM privilege level to put in the report (0-3); it must not be below the
            guest's own level (a guest kernel without an SVSM runs at VMPL 0).
    """

    def __init__(self, *, device: Path = Path(SEV_GUEST_DEVICE), vmpl: int = 0) -> None:
        if not 0 <= vmpl <= 3:
            raise ConfigError(f"vmpl must be 0-3, got {vmpl}")
        self._device = device
        self._vmpl = vmpl

    @property
    def platform(self) -> Platform:
        return Platform.SEV_SNP

    def evidence(self, report_data: bytes) -> bytes:
        """An SNP attestation report (1184 bytes) whose REPORT_DATA is *report_data*.

        Raises:
            BackendUnavailableError: the device does not exist.
            EvidenceError: it cannot be opened, the ioctl failed, or the firmware refused.
        """
        if len(report_data) != REPORT_DATA_BYTES:
            raise EvidenceError(
                f"report data must be exactly {REPORT_DATA_BYTES} bytes, got {len(report_data)}"
            )
        try:
            fd = os.open(self._device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BackendUnavailableError(
                f"{self._device} does not exist: this is not an SEV-SNP guest, or its kernel "
                "lacks the sev-guest driver (`modprobe sev-guest`)"
            ) from None
        except OSError as e:
            raise EvidenceError(
                f"cannot open {self._device}: {e.strerror or e} (it needs root or a udev rule)",
                errno=e.errno,
            ) from e
        try:
            return self._get_report(fd, report_data)
        finally:
            os.close(fd)

    def _get_report(self, fd: int, report_data: bytes) -> bytes:
        request = ctypes.create_string_buffer(encode_report_request(report_data, self._vmpl))
        response = ctypes.create_string_buffer(_REPORT_RESP_BYTES)
        arg = bytearray(
            _IOCTL_ARG.pack(_MSG_VERSION, ctypes.addressof(request), ctypes.addressof(response), 0)
        )
        try:
            fcntl.ioctl(fd, SNP_GET_REPORT, arg, True)
        except OSError as e:
            exitinfo2 = _IOCTL_ARG.unpack(bytes(arg))[3]
            detail = (
                ""
                if exitinfo2 in {0, _EXITINFO2_UNSET}
                else f"; firmware error {exitinfo2 & 0xFFFFFFFF:#x}, VMM error {exitinfo2 >> 32}"
            )
            hint = " (is this really an SEV-SNP guest?)" if e.errno == errno.ENOTTY else ""
            raise EvidenceError(
                f"SNP_GET_REPORT on {self._device} failed: {e.strerror or e}{detail}{hint}",
                errno=e.errno,
            ) from e
        return parse_report_response(response.raw)


__all__ = [
    "SEV_GUEST_DEVICE",
    "SNP_GET_REPORT",
    "SNP_REPORT_BYTES",
    "SevGuestDeviceProvider",
    "encode_report_request",
    "parse_report_response",
]
