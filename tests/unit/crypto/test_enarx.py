"""Enarx evidence extensions: strict DER decoding, encoding as Enarx does, the key binding."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.crypto.enarx import (
    decode_enarx_sgx,
    decode_enarx_snp,
    enarx_report_data,
    encode_enarx_sgx,
    encode_enarx_snp,
)
from donjon.errors import DecodeError

CERT = bytes.fromhex("3003020101")  # a DER SEQUENCE standing in for a certificate
CRL = bytes.fromhex("3003020102")


def test_snp_round_trip_and_exact_bytes() -> None:
    value = encode_enarx_snp(b"\xaa" * 3, CERT, (("u", CRL),))
    # SEQUENCE { SEQUENCE { vcek, SEQUENCE { SEQUENCE OF SEQUENCE { UTF8 "u", crl } } },
    #            OCTET STRING report }
    assert value.hex() == ("301a30133003020101300c300a30080c017530030201020403aaaaaa")
    decoded = decode_enarx_snp(value)
    assert (decoded.report, decoded.vcek, decoded.crls) == (b"\xaa" * 3, CERT, (CRL,))


def test_snp_long_lengths() -> None:
    report = bytes(1184)
    decoded = decode_enarx_snp(encode_enarx_snp(report, CERT))
    assert decoded.report == report and decoded.crls == ()


def test_sgx_round_trip() -> None:
    value = encode_enarx_sgx(b"q" * 300, crls=(("a", CRL),), tcb_certs=(CERT, CERT), tcb_info=b"{}")
    decoded = decode_enarx_sgx(value)
    assert decoded.quote == b"q" * 300
    assert decoded.crls == (CRL,)
    assert decoded.tcb_certs == (CERT, CERT)
    assert decoded.tcb_info == b"{}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "truncated"),
        (b"\x04\x00", "tag 0x04, expected 0x30"),
        (b"\x30\x80\x00\x00", "indefinite"),
        (b"\x30\x81\x05" + bytes(5), "not minimally encoded"),
        (b"\x30\x05\x30", "runs past the end"),
        (encode_enarx_snp(b"r", CERT) + b"\x00", "trailing"),
        (b"\x30\x02\x04\x00", "tag 0x04, expected 0x30"),
        (b"\x1f\x01", "multi-byte"),
    ],
)
def test_snp_malformed(value: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_enarx_snp(value)


def test_too_many_crls() -> None:
    value = encode_enarx_snp(b"r", CERT, tuple(("u", CRL) for _ in range(17)))
    with pytest.raises(DecodeError, match="more than 16"):
        decode_enarx_snp(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoders_raise_only_decode_error(data: bytes) -> None:
    for decoder in (decode_enarx_snp, decode_enarx_sgx):
        try:
            decoder(data)
        except DecodeError:
            pass


def test_report_data_is_hash_then_zeros() -> None:
    spki = b"spki"
    snp = enarx_report_data(spki, hash_name="sha384")
    sgx = enarx_report_data(spki, hash_name="sha256")
    assert snp == hashlib.sha384(spki).digest() + bytes(16)
    assert sgx == hashlib.sha256(spki).digest() + bytes(32)
