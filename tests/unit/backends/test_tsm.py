"""configfs-tsm provider against a fake kernel that behaves like configfs (see fake_configfs)."""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from donjon.attestation.result import Platform
from donjon.backends.evidence import EvidenceError
from donjon.backends.tsm import (
    MAX_ATTEMPTS,
    MAX_OUTBLOB_BYTES,
    MAX_SNP_CERT_ENTRIES,
    OsConfigfsIo,
    TsmReportProvider,
    parse_snp_cert_table,
)
from donjon.errors import BackendUnavailableError, ConfigError
from tests.unit.backends.fake_configfs import (
    SNP_REPORT_BYTES,
    SNP_REPORT_DATA_OFFSET,
    SNP_VMPL_OFFSET,
    TDX_QUOTE_REPORT_DATA_OFFSET,
    FakeTsmKernel,
    snp_cert_table,
)

VCEK_GUID = "63da758d-e664-4564-adc5-f4b93be8accd"
ASK_GUID = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
ARK_GUID = "c0b406a4-a803-4952-9743-3fb6014cd0ae"
CRL_GUID = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea"

RD = bytes(range(64))


def _entries(kernel: FakeTsmKernel) -> list[str]:
    return sorted(p.name for p in kernel.report_dir.iterdir())


def _milan_chain(vectors_dir: Path) -> tuple[bytes, bytes, bytes]:
    vcek = (vectors_dir / "sev-snp/milan-gsg/vcek.der").read_bytes()
    pem = (vectors_dir / "sev-snp/roots/milan-vcek-ask-ark.pem").read_bytes()
    ask, ark = (c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem))
    return vcek, ask, ark


def test_snp_report_binds_inblob_and_carries_real_certificates(
    tmp_path: Path, vectors_dir: Path
) -> None:
    vcek, ask, ark = _milan_chain(vectors_dir)
    table = snp_cert_table([(VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark)])
    kernel = FakeTsmKernel(tmp_path / "tsm", auxblob=table)
    provider = TsmReportProvider(root=kernel.root, io=kernel)

    report = provider.report(RD)

    assert report.provider == "sev_guest"
    assert report.platform is Platform.SEV_SNP
    assert len(report.outblob) == SNP_REPORT_BYTES
    assert report.outblob[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + 64] == RD
    assert report.generation == 1  # exactly our one write
    assert report.auxblob == table
    kinds = [(c.kind, c.guid) for c in report.snp_certificates()]
    assert kinds == [("vcek", VCEK_GUID), ("ask", ASK_GUID), ("ark", ARK_GUID)]
    certs = report.endorsements().certs
    assert certs == (vcek, ask, ark)
    names = [x509.load_der_x509_certificate(c).subject.rfc4514_string() for c in certs]
    assert "CN=SEV-VCEK" in names[0] and "CN=SEV-Milan" in names[1] and "CN=ARK-Milan" in names[2]
    assert _entries(kernel) == []  # the entry was removed
    assert provider.platform is Platform.SEV_SNP


def test_evidence_is_the_outblob_and_each_request_uses_a_fresh_entry(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    made: list[str] = []
    real_mkdir = kernel.mkdir

    def mkdir(path: Path) -> None:
        made.append(path.name)
        real_mkdir(path)

    kernel.mkdir = mkdir  # type: ignore[method-assign]
    provider = TsmReportProvider(root=kernel.root, io=kernel)
    first = provider.evidence(RD)
    second = provider.evidence(bytes(64))
    assert first[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + 64] == RD
    assert second[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + 64] == bytes(64)
    assert len(set(made)) == 2 and all(n.startswith(f"donjon-{os.getpid()}-") for n in made)
    assert _entries(kernel) == []


@pytest.mark.parametrize(
    ("provider_name", "platform"),
    [("tdx_guest", Platform.TDX), ("arm_cca_guest", Platform.CCA)],
)
def test_other_providers_map_to_their_platform(
    tmp_path: Path, provider_name: str, platform: Platform
) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm", provider=provider_name)
    provider = TsmReportProvider(root=kernel.root, io=kernel)
    assert provider.platform is platform
    report = provider.report(RD)
    assert report.platform is platform
    assert report.auxblob == b""
    assert report.snp_certificates() == ()
    assert report.endorsements().certs == ()
    if provider_name == "tdx_guest":
        off = TDX_QUOTE_REPORT_DATA_OFFSET
        assert struct.unpack_from("<H", report.outblob)[0] == 4
        assert report.outblob[off : off + 64] == RD
    else:
        assert report.outblob == b"token:" + RD


def test_privlevel_is_written_and_counted(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm", privlevel_floor=1)
    report = TsmReportProvider(root=kernel.root, io=kernel, privlevel=2).report(RD)
    assert struct.unpack_from("<I", report.outblob, SNP_VMPL_OFFSET)[0] == 2
    assert report.generation == 2  # privlevel + inblob


def test_privlevel_below_floor_is_refused_with_the_floor(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm", privlevel_floor=2)
    with pytest.raises(EvidenceError, match="below this guest's floor 2"):
        TsmReportProvider(root=kernel.root, io=kernel, privlevel=0).report(RD)
    assert _entries(kernel) == []


def test_privlevel_on_a_provider_without_levels_is_refused(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm", provider="tdx_guest")
    with pytest.raises(EvidenceError, match="no privilege levels"):
        TsmReportProvider(root=kernel.root, io=kernel, privlevel=0).report(RD)


@pytest.mark.parametrize("bad", [-1, 4])
def test_privlevel_out_of_range_is_a_config_error(tmp_path: Path, bad: int) -> None:
    with pytest.raises(ConfigError, match="0-3"):
        TsmReportProvider(root=tmp_path, privlevel=bad)


def test_a_concurrent_writer_is_detected_and_the_report_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    intruder = b"\xee" * 64
    raced: list[Path] = []

    def other_process_writes_once(entry: Path) -> None:
        if not raced:
            raced.append(entry)
            kernel.write(entry / "inblob", intruder)

    kernel.on_outblob_read = other_process_writes_once
    with caplog.at_level(logging.WARNING, logger="donjon.backends.tsm"):
        report = TsmReportProvider(root=kernel.root, io=kernel).report(RD)
    # The first report held the intruder's data and was thrown away; the second is ours.
    assert report.outblob[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + 64] == RD
    assert kernel.reports_generated == 2
    assert report.generation == 3  # ours, theirs, ours again
    assert "changed under us" in caplog.text
    assert _entries(kernel) == []


def test_a_real_concurrent_thread_is_detected(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    go, done = threading.Event(), threading.Event()
    target: list[Path] = []

    def other_writer() -> None:
        go.wait(timeout=10)
        kernel.write(target[0] / "inblob", b"\x11" * 64)
        done.set()

    def between_write_and_read(entry: Path) -> None:
        if not target:
            target.append(entry)
            go.set()
            assert done.wait(timeout=10)

    kernel.on_outblob_read = between_write_and_read
    thread = threading.Thread(target=other_writer)
    thread.start()
    try:
        report = TsmReportProvider(root=kernel.root, io=kernel).report(RD)
    finally:
        go.set()
        thread.join(timeout=10)
    assert report.outblob[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + 64] == RD
    assert kernel.reports_generated == 2


def test_a_writer_that_never_stops_gives_a_clear_error_after_bounded_attempts(
    tmp_path: Path,
) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    kernel.on_outblob_read = lambda entry: kernel.write(entry / "inblob", b"\x22" * 64)
    with pytest.raises(EvidenceError, match=f"discarded after {MAX_ATTEMPTS} attempts") as info:
        TsmReportProvider(root=kernel.root, io=kernel).report(RD)
    assert "1/2, 3/4, 5/6" in info.value.message  # (expected, found) per attempt
    assert kernel.reports_generated == MAX_ATTEMPTS
    assert _entries(kernel) == []


def test_absent_configfs_tsm_is_backend_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="CONFIG_TSM_REPORTS"):
        TsmReportProvider(root=tmp_path / "nowhere").evidence(RD)
    with pytest.raises(BackendUnavailableError):
        _ = TsmReportProvider(root=tmp_path / "nowhere").platform


def test_a_plain_directory_is_not_mistaken_for_configfs(tmp_path: Path) -> None:
    # Real OS calls on an ordinary directory: mkdir works, but no kernel populates the entry.
    (tmp_path / "tsm" / "report").mkdir(parents=True)
    with pytest.raises(EvidenceError, match="not a configfs-tsm report directory") as info:
        TsmReportProvider(root=tmp_path / "tsm", io=OsConfigfsIo()).report(RD)
    assert info.value.errno == errno.ENOENT
    assert list((tmp_path / "tsm" / "report").iterdir()) == []


def test_unknown_provider_is_refused(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm", provider="sbi_cove_guest")
    with pytest.raises(EvidenceError, match="'sbi_cove_guest' is not one donjon can verify"):
        TsmReportProvider(root=kernel.root, io=kernel).report(RD)
    assert _entries(kernel) == []


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_report_data_must_be_64_bytes(tmp_path: Path, size: int) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    with pytest.raises(EvidenceError, match="exactly 64 bytes"):
        TsmReportProvider(root=kernel.root, io=kernel).report(bytes(size))
    assert kernel.reports_generated == 0


def test_oversized_outblob_is_refused(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    kernel.outblob_override = bytes(MAX_OUTBLOB_BYTES + 1)
    with pytest.raises(EvidenceError, match=f"larger than {MAX_OUTBLOB_BYTES} bytes"):
        TsmReportProvider(root=kernel.root, io=kernel).report(RD)
    assert _entries(kernel) == []


def test_empty_outblob_is_refused(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    kernel.outblob_override = b""
    with pytest.raises(EvidenceError, match="empty report"):
        TsmReportProvider(root=kernel.root, io=kernel).report(RD)


def test_a_tee_that_refuses_gives_the_errno(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    kernel.outblob_error = OSError(errno.EIO, "Input/output error")
    with pytest.raises(EvidenceError, match="Input/output error") as info:
        TsmReportProvider(root=kernel.root, io=kernel).report(RD)
    assert info.value.errno == errno.EIO
    assert _entries(kernel) == []


def test_mkdir_without_privilege_says_root_is_needed(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")

    def denied(path: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    kernel.mkdir = denied  # type: ignore[method-assign]
    with pytest.raises(EvidenceError, match="need root") as info:
        TsmReportProvider(root=kernel.root, io=kernel).report(RD)
    assert info.value.errno == errno.EACCES


def test_rmdir_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    kernel.rmdir_error = OSError(errno.EBUSY, "Device or resource busy")
    with caplog.at_level(logging.WARNING, logger="donjon.backends.tsm"):
        report = TsmReportProvider(root=kernel.root, io=kernel).report(RD)
    assert report.outblob[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + 64] == RD
    assert "could not remove" in caplog.text


def test_garbage_generation_is_a_clear_error(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "tsm")
    real_mkdir = kernel.mkdir

    def mkdir(path: Path) -> None:
        real_mkdir(path)
        (path / "generation").write_bytes(b"banana\n")

    kernel.mkdir = mkdir  # type: ignore[method-assign]
    with pytest.raises(EvidenceError, match="expected a number"):
        TsmReportProvider(root=kernel.root, io=kernel).report(RD)


# --- the SNP certificate table (host-supplied: untrusted) ---


def test_cert_table_with_unknown_guid_and_crl(tmp_path: Path) -> None:
    other = "11111111-2222-3333-4444-555555555555"
    table = snp_cert_table([(VCEK_GUID, b"v" * 10), (other, b"o"), (CRL_GUID, b"crl")])
    certs = parse_snp_cert_table(table)
    assert [(c.kind, c.data) for c in certs] == [("vcek", b"v" * 10), (None, b"o"), ("crl", b"crl")]


def test_empty_cert_table_is_just_a_terminator() -> None:
    assert parse_snp_cert_table(bytes(24)) == ()


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "no all-zero terminator"),
        (bytes(23), "no all-zero terminator"),
        (bytes(16) + struct.pack("<II", 1, 0), "terminator is not all zero"),
        (
            bytes.fromhex(VCEK_GUID.replace("-", "")) + struct.pack("<II", 48, 100) + bytes(24),
            "outside",
        ),
        (
            bytes.fromhex(VCEK_GUID.replace("-", "")) + struct.pack("<II", 48, 0) + bytes(24),
            "outside",
        ),
        (
            (bytes.fromhex(VCEK_GUID.replace("-", "")) + struct.pack("<II", 0, 1))
            * (MAX_SNP_CERT_ENTRIES + 1)
            + bytes(24),
            f"more than {MAX_SNP_CERT_ENTRIES} entries",
        ),
    ],
)
def test_malformed_cert_tables_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        parse_snp_cert_table(blob)


@given(st.binary(max_size=400))
def test_cert_table_parser_never_crashes(blob: bytes) -> None:
    try:
        certs = parse_snp_cert_table(blob)
    except EvidenceError:
        return
    assert all(c.data and len(c.data) <= len(blob) for c in certs)
