from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.errors import DecodeError
from donjon.wire import cbor, cose
from tests.flags import under_bb

# (value, exact deterministic bytes), checked both ways.
CASES = [
    ({"b": 1, "a": 2}, bytes.fromhex("a2616102616201")),
    ([1, b"\x00"], bytes.fromhex("82014100")),
    ({10: "x", 1: "y"}, bytes.fromhex("a20161790a6178")),
]


@pytest.mark.parametrize(("value", "wire"), CASES)
def test_deterministic_encoding_both_ways(value: object, wire: bytes) -> None:
    assert cbor.encode(value) == wire
    assert cbor.decode(wire) == value


def test_decode_rejects_trailing_bytes_and_oversize() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        cbor.decode(b"\x01\x02")
    with pytest.raises(DecodeError, match="limit"):
        cbor.decode(b"\x01" * 11, max_bytes=10)
    with pytest.raises(DecodeError, match="empty"):
        cbor.decode(b"")


@given(st.binary(max_size=256))
def test_decode_arbitrary_bytes_only_documented_errors(data: bytes) -> None:
    try:
        cbor.decode(data)
    except DecodeError:
        pass


@given(st.binary(max_size=256))
def test_decode_sign1_arbitrary_bytes_only_documented_errors(data: bytes) -> None:
    try:
        cose.decode_sign1(data)
    except DecodeError:
        pass


def test_sign1_roundtrip_structure() -> None:
    wire = cose.encode_sign1({1: -35}, {4: b"kid"}, b"payload", b"\x01" * 96)
    msg = cose.decode_sign1(wire)
    assert msg.alg == -35
    assert msg.payload == b"payload"
    assert msg.unprotected == {4: b"kid"}
    assert msg.to_be_signed() == cose.sig_structure(msg.protected_bytes, b"payload")


def test_a_lone_break_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="break"):
        cbor.decode(b"\xff")


@under_bb
def test_mixed_text_and_byte_keys_are_a_decode_error() -> None:
    # {"k": 1, b"k": 2}: under -bb, cbor2 compares the keys and warns; that is the input's fault.
    with pytest.raises(DecodeError, match="mixes text and byte-string keys"):
        cbor.decode(bytes.fromhex("a2616b01416b02"))
