"""/dev/sev-guest provider: pinned ABI layouts, response parsing, and the errors testable here.

No SEV-SNP hardware here, so the ioctl itself is exercised only as far as a regular file lets it
go (the kernel answers ENOTTY), and the response parser with a real SNP report from the vectors.
"""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

from donjon.attestation.result import Platform
from donjon.backends import devices
from donjon.backends.devices import (
    SNP_GET_REPORT,
    SNP_REPORT_BYTES,
    SevGuestDeviceProvider,
    encode_report_request,
    parse_report_response,
)
from donjon.backends.evidence import EvidenceError
from donjon.errors import BackendUnavailableError, ConfigError


def test_ioctl_number_and_struct_sizes_match_the_kernel_uapi() -> None:
    # include/uapi/linux/sev-guest.h: _IOWR('S', 0x0, struct snp_guest_request_ioctl), 32 bytes.
    assert SNP_GET_REPORT == 0xC0205300
    assert devices._IOCTL_ARG.size == 32
    packed = devices._IOCTL_ARG.pack(1, 0x1111, 0x2222, 0)
    assert packed[0] == 1 and packed[1:8] == bytes(7)
    assert struct.unpack_from("=QQQ", packed, 8) == (0x1111, 0x2222, 0)


def test_report_request_layout() -> None:
    req = encode_report_request(bytes(range(64)), 2)
    assert len(req) == 96  # user_data[64], u32 vmpl, rsvd[28]
    assert req[:64] == bytes(range(64))
    assert struct.unpack_from("=I", req, 64)[0] == 2
    assert req[68:] == bytes(28)


def _response(report: bytes, *, status: int = 0, size: int | None = None) -> bytes:
    body = struct.pack("<II", status, len(report) if size is None else size) + bytes(24) + report
    return body.ljust(4000, b"\0")


def test_parse_response_returns_the_real_report(vectors_dir: Path) -> None:
    report = (vectors_dir / "sev-snp/milan-gsg/report.bin").read_bytes()[:SNP_REPORT_BYTES]
    assert parse_report_response(_response(report)) == report


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"\0" * 8, "too short"),
        (_response(bytes(SNP_REPORT_BYTES), status=0x16), "status 0x16 INVALID_PARAM"),
        (_response(bytes(SNP_REPORT_BYTES), status=0x99), "status 0x99"),
        (_response(bytes(100)), "claims a 100-byte report"),
        (_response(b"", size=5000), "claims a 5000-byte report"),
    ],
)
def test_parse_response_errors(response: bytes, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        parse_report_response(response)


def test_absent_device_is_backend_unavailable(tmp_path: Path) -> None:
    provider = SevGuestDeviceProvider(device=tmp_path / "sev-guest")
    assert provider.platform is Platform.SEV_SNP
    with pytest.raises(BackendUnavailableError, match="modprobe sev-guest"):
        provider.evidence(bytes(64))


def test_a_file_that_is_not_the_device_fails_the_ioctl_cleanly(tmp_path: Path) -> None:
    fake = tmp_path / "sev-guest"
    fake.write_bytes(b"")
    with pytest.raises(EvidenceError, match="is this really an SEV-SNP guest") as info:
        SevGuestDeviceProvider(device=fake).evidence(bytes(64))
    assert info.value.errno == errno.ENOTTY


def test_report_data_size_and_vmpl_are_checked(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="exactly 64 bytes"):
        SevGuestDeviceProvider(device=tmp_path / "x").evidence(bytes(32))
    with pytest.raises(ConfigError, match="vmpl must be 0-3"):
        SevGuestDeviceProvider(vmpl=4)
