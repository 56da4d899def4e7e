"""PCK certificate SGX extensions: real certificates, and a strict DER walker on hostile input."""

from __future__ import annotations

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.attestation.intel.pck import (
    SGX_EXTENSIONS_OID,
    SgxType,
    parse_sgx_extensions,
    pck_extensions,
)
from donjon.attestation.intel.quote import parse_quote
from donjon.errors import EvidenceFormatError

from .conftest import CASES, Case, case


def _leaf(c: Case) -> x509.Certificate:
    data = parse_quote(c.quote).certification_data.data.rstrip(b"\0")
    return x509.load_pem_x509_certificates(data)[0]


def _raw_extension(c: Case) -> bytes:
    value = _leaf(c).extensions.get_extension_for_oid(SGX_EXTENSIONS_OID).value
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_real_pck_certificates(c: Case) -> None:
    ext = pck_extensions(_leaf(c))
    assert ext.fmspc.hex() == c.expected["fmspc"]
    assert ext.tcb.cpu_svn.hex() == c.expected["pck_cpusvn"]
    assert ext.tcb.pce_svn == c.expected["pck_pcesvn"]
    # For these platforms the 16 TCB components are the CPUSVN bytes.
    assert bytes(ext.tcb.sgx_components) == ext.tcb.cpu_svn
    assert ext.pce_id == b"\x00\x00"
    assert len(ext.ppid) == 16
    platform_ca = c.expected["pck_issuer"].endswith("Platform CA")
    assert (ext.platform_instance_id is not None) is platform_ca
    assert (ext.smt_enabled is not None) is platform_ca
    assert ext.sgx_type in (SgxType.STANDARD, SgxType.SCALABLE)


def test_occlum_platform_configuration_flags() -> None:
    ext = pck_extensions(_leaf(case("sgx-occlum")))
    assert (ext.dynamic_platform, ext.cached_keys, ext.smt_enabled) == (True, True, True)
    assert ext.sgx_type is SgxType.SCALABLE


def test_certificate_without_extension() -> None:
    root = x509.load_pem_x509_certificates(
        parse_quote(case("sgx-dcapqvl").quote).certification_data.data.rstrip(b"\0")
    )[-1]
    with pytest.raises(EvidenceFormatError, match="no Intel SGX extension"):
        pck_extensions(root)


def test_every_truncation_of_a_real_extension_fails_cleanly() -> None:
    raw = _raw_extension(case("tdx-oak-v4"))
    assert parse_sgx_extensions(raw).fmspc.hex() == "00806f050000"
    for cut in range(len(raw)):
        with pytest.raises(EvidenceFormatError):
            parse_sgx_extensions(raw[:cut])


@pytest.mark.parametrize(
    ("der", "match"),
    [
        (b"", "not exactly one"),
        (b"\x31\x00", "not a SEQUENCE"),
        (b"\x30\x80\x00\x00", "length"),  # indefinite length (BER)
        (b"\x30\x81\x01\x00", "non-minimal"),
        (b"\x30\x05\x30\x03\x06\x01", "longer than"),
        (b"\x30\x00", "missing"),
        (b"\x30\x02\x04\x00", "not a SEQUENCE"),
        (b"\x30\x03\x30\x01\x00", "truncated"),
        (b"\x30\x04\x30\x02\x06\x00", "not an"),
    ],
)
def test_malformed_der(der: bytes, match: str) -> None:
    with pytest.raises(EvidenceFormatError, match=match):
        parse_sgx_extensions(der)


def test_duplicate_entry_is_refused() -> None:
    raw = _raw_extension(case("sgx-dcapqvl"))
    # Outer SEQUENCE with long-form length: duplicate the first entry (the PPID).
    assert raw[0] == 0x30 and raw[1] == 0x82
    body = raw[4:]
    first_len = body[1] + 2
    doubled = body[:first_len] + body
    with pytest.raises(EvidenceFormatError, match="twice"):
        parse_sgx_extensions(b"\x30\x82" + len(doubled).to_bytes(2, "big") + doubled)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_der_only_format_errors(data: bytes) -> None:
    try:
        parse_sgx_extensions(data)
    except EvidenceFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(at=st.integers(0, 600), value=st.integers(0, 255))
def test_mutated_extension_only_format_errors(at: int, value: int) -> None:
    raw = bytearray(_raw_extension(case("sgx-occlum")))
    raw[at % len(raw)] = value
    try:
        parse_sgx_extensions(bytes(raw))
    except EvidenceFormatError:
        pass
