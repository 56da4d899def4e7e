"""The quote parser: layouts of v3/v4/v5 SGX and TDX quotes, bounds, and hostile bytes."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from donjon.attestation.intel.quote import (
    HEADER_BYTES,
    INTEL_QE_VENDOR_ID,
    MAX_QUOTE_BYTES,
    BodyType,
    EnclaveReport,
    TdReport,
    TeeType,
    parse_enclave_report,
    parse_header,
    parse_quote,
    parse_td_report,
)
from donjon.errors import EvidenceFormatError

from .conftest import CASES, Case, case


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_layout_of_every_vector(c: Case) -> None:
    q = parse_quote(c.quote)
    e = c.expected
    assert q.header.version == e["quote_version"]
    assert f"0x{int(q.tee_type):x}" == e["tee_type"]
    assert q.bytes_used == e["quote_bytes_used"]
    assert len(c.quote) == e["file_bytes"]
    assert q.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert q.qe_report.isv_svn == e["qe_isvsvn"]
    assert q.body.report_data.hex() == e["report_data"]
    # The QE report binds the attestation key (checked by the verifier; true of all vectors).
    digest = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest()
    assert q.qe_report.report_data == digest + bytes(32)
    assert q.certification_data.type == 5
    assert q.certification_data.data.startswith(b"-----BEGIN CERTIFICATE-----")
    body = q.body
    if isinstance(body, TdReport):
        assert body.mr_td.hex() == e["mrtd"]
        assert [r.hex() for r in body.rtmrs] == [e[f"rtmr{i}"] for i in range(4)]
        assert body.mr_seam.hex() == e["mrseam"]
        assert body.tee_tcb_svn.hex() == e["tee_tcb_svn"]
        assert body.td_attributes.hex() == e["td_attributes"]
        assert body.xfam.hex() == e["xfam"]
        assert body.mr_config_id.hex() == e["mrconfigid"]
        assert (body.tee_tcb_svn2.hex() if body.tee_tcb_svn2 else None) == e.get("tee_tcb_svn2")
        assert q.body_type is (
            BodyType.TD_REPORT_15 if e["quote_version"] == 5 else BodyType.TD_REPORT_10
        )
        # The v5 body descriptor is part of what the attestation key signs.
        assert len(q.signed_bytes) == HEADER_BYTES + (6 if q.header.version == 5 else 0) + len(
            body.raw
        )
    else:
        assert isinstance(body, EnclaveReport)
        assert body.mr_enclave.hex() == e["mrenclave"]
        assert body.mr_signer.hex() == e["mrsigner"]
        assert body.isv_prod_id == e["isvprodid"]
        assert body.isv_svn == e["isvsvn"]
        assert body.attributes.hex() == e["attributes"]
        assert body.debug is e.get("debug", False)
        assert q.signed_bytes == c.quote[: HEADER_BYTES + 384]


def test_trailing_bytes_are_ignored_by_declared_length() -> None:
    c = case("tdx-gotdx-spr-e4-2023")  # trailing ASCII text, not zeros
    q = parse_quote(c.quote)
    assert c.quote[q.bytes_used :].strip(b"\0")  # really something there
    assert parse_quote(c.quote[: q.bytes_used]) == q
    assert parse_quote(c.quote + b"\xff" * 100) == q


def test_truncation_anywhere_is_a_format_error() -> None:
    quote = case("tdx-dcapqvl-v4").quote
    used = parse_quote(quote).bytes_used
    for cut in range(0, used, 37):
        with pytest.raises(EvidenceFormatError):
            parse_quote(quote[:cut])
    with pytest.raises(EvidenceFormatError, match="truncated"):
        parse_quote(quote[: used - 1])


def test_limits_and_header_checks() -> None:
    quote = case("sgx-dcapqvl").quote
    with pytest.raises(EvidenceFormatError, match="limit"):
        parse_quote(quote + bytes(MAX_QUOTE_BYTES))
    with pytest.raises(EvidenceFormatError, match="version 7"):
        parse_quote(struct.pack("<H", 7) + quote[2:])
    with pytest.raises(EvidenceFormatError, match="key type 3"):
        parse_quote(quote[:2] + struct.pack("<H", 3) + quote[4:])
    with pytest.raises(EvidenceFormatError, match="TEE type 0x7"):
        parse_quote(quote[:4] + struct.pack("<I", 7) + quote[8:])
    with pytest.raises(EvidenceFormatError, match="vendor"):
        parse_quote(quote[:12] + bytes(16) + quote[28:])
    with pytest.raises(EvidenceFormatError, match="is bytes"):
        parse_quote("not bytes")  # type: ignore[arg-type]
    assert parse_header(quote).tee_type is TeeType.SGX


def test_report_parsers_check_sizes() -> None:
    with pytest.raises(EvidenceFormatError):
        parse_enclave_report(bytes(383))
    with pytest.raises(EvidenceFormatError):
        parse_td_report(bytes(600))
    report = parse_td_report(bytes(648))
    assert report.tee_tcb_svn2 == bytes(16)
    assert report.mr_service_td == bytes(48)
    assert not report.debug
    assert parse_td_report(b"\x01" + bytes(583)).tee_tcb_svn2 is None


def test_nested_sizes_must_add_up() -> None:
    """A v4 certification data size that disagrees with the signature data length is refused."""
    quote = bytearray(case("tdx-oak-v4").quote)
    q = parse_quote(bytes(quote))
    outer_size_at = len(q.signed_bytes) + 4 + 64 + 64 + 2
    struct.pack_into("<I", quote, outer_size_at, 10)
    with pytest.raises(EvidenceFormatError, match="declares"):
        parse_quote(bytes(quote))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=6000))
def test_arbitrary_bytes_only_format_errors(data: bytes) -> None:
    try:
        parse_quote(data)
    except EvidenceFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    which=st.sampled_from([c.id for c in CASES]),
    edits=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.none() | st.integers(0, 6000),
)
def test_mutated_quotes_only_format_errors(
    which: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(case(which).quote)
    for at, value in edits:
        if at < len(data):
            data[at] = value
    if cut is not None:
        del data[cut:]
    try:
        parse_quote(bytes(data))
    except EvidenceFormatError:
        pass
