"""Azure HCL reports: layout, binding of the runtime data, malformed containers."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from donjon.attestation.snp import is_hcl_report, parse_hcl_report, parse_report
from donjon.attestation.snp.hcl import MAX_HCL_REPORT_BYTES
from donjon.errors import EvidenceFormatError, MeasurementError


@pytest.fixture
def hcl_bytes(vectors_dir: Path) -> bytes:
    return (vectors_dir / "sev-snp" / "azure-milan-hcl" / "hcl-report.bin").read_bytes()


def test_layout(hcl_bytes: bytes) -> None:
    assert is_hcl_report(hcl_bytes)
    hcl = parse_hcl_report(hcl_bytes)
    assert (hcl.version, hcl.request_type, hcl.status) == (1, 2, 0)
    assert hcl.snp_report == hcl_bytes[0x20:0x4C0]  # manifest: bytes [0x20:0x4C0]
    assert hcl.hash_name == "sha256"
    assert len(hcl.runtime_data) == 1110
    assert hcl.runtime_data.startswith(b'{"keys":[{"kid":"HCLAkPub"')
    report = parse_report(hcl.snp_report)
    expected = hashlib.sha256(hcl.runtime_data).digest() + bytes(32)
    assert hcl.expected_report_data() == expected == report.report_data
    hcl.check_binding(report.report_data)
    assert hcl.runtime_claims()["user-data"] == "00" * 64


def test_binding_mismatch(hcl_bytes: bytes) -> None:
    hcl = parse_hcl_report(hcl_bytes)
    with pytest.raises(MeasurementError, match="not the SHA-256 of the runtime data"):
        hcl.check_binding(bytes(64))


def test_raw_report_is_not_hcl(vectors_dir: Path) -> None:
    raw = (vectors_dir / "sev-snp" / "milan-trustee" / "report.bin").read_bytes()
    assert not is_hcl_report(raw)
    with pytest.raises(EvidenceFormatError, match="does not start with 'HCLA'"):
        parse_hcl_report(raw + bytes(100))


def _with_runtime(hcl_bytes: bytes, runtime: bytes, hash_type: int = 1) -> bytes:
    head = bytearray(hcl_bytes[:0x4C0])
    struct.pack_into("<I", head, 8, 0x4C0 + 20 + len(runtime))
    return (
        bytes(head)
        + struct.pack("<IIIII", 20 + len(runtime), 1, 2, hash_type, len(runtime))
        + runtime
    )


@pytest.mark.parametrize(("hash_type", "name"), [(1, "sha256"), (2, "sha384"), (3, "sha512")])
def test_hash_types(hcl_bytes: bytes, hash_type: int, name: str) -> None:
    hcl = parse_hcl_report(_with_runtime(hcl_bytes, b"{}", hash_type))
    digest = hashlib.new(name, b"{}").digest()
    assert hcl.expected_report_data() == digest.ljust(64, b"\0")


@pytest.mark.parametrize(
    ("runtime", "message"),
    [(b"\xff", "not JSON"), (b"[1]", "not a JSON object"), (b"{", "not JSON")],
)
def test_runtime_data_not_json(hcl_bytes: bytes, runtime: bytes, message: str) -> None:
    with pytest.raises(EvidenceFormatError, match=message):
        parse_hcl_report(_with_runtime(hcl_bytes, runtime)).runtime_claims()


def test_size_limit(hcl_bytes: bytes) -> None:
    with pytest.raises(EvidenceFormatError, match="limit"):
        parse_hcl_report(hcl_bytes + bytes(MAX_HCL_REPORT_BYTES))


def test_unknown_report_type(hcl_bytes: bytes) -> None:
    data = bytearray(hcl_bytes)
    struct.pack_into("<I", data, 0x4C0 + 8, 3)
    with pytest.raises(EvidenceFormatError, match="type 3 is not SNP"):
        parse_hcl_report(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes(data: bytes) -> None:
    try:
        parse_hcl_report(b"HCLA" + data)
    except EvidenceFormatError:
        pass


# The fixture is immutable bytes, so sharing it between examples is safe.
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(0, 2599), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutations(hcl_bytes: bytes, writes: list[tuple[int, int]]) -> None:
    data = bytearray(hcl_bytes)
    for offset, value in writes:
        data[offset] = value
    try:
        hcl = parse_hcl_report(bytes(data))
        hcl.runtime_claims()
    except EvidenceFormatError:
        pass
