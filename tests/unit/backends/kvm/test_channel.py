"""The kvm channel's ready frame and framing: exact bytes, and hostile input refused."""

from __future__ import annotations

import pytest

from donjon.backends.kvm.channel import (
    MAX_READY_BYTES,
    ReadyFrame,
    decode_ready,
    encode_ready,
    split_frame,
)
from donjon.errors import RemoteProtocolError
from donjon.wire.cbor import encode
from donjon.wire.frames import DataFrame, FrameDecoder, encode_frame

# u32be(32) || {"t": "ready", "v": 1, "net": ["lo"], "uptime_s": 4.5} in deterministic CBOR
# (shorter keys first; 4.5 as a half-precision float, f9 4480).
READY_HEX = "00000020a46174657265616479617601636e657481626c6f68757074696d655f73f94480"


def test_ready_frame_exact_bytes_both_ways() -> None:
    frame = ReadyFrame(net=("lo",), uptime_s=4.5)
    blob = encode_ready(frame)
    assert blob.hex() == READY_HEX
    taken = split_frame(bytearray(blob), max_bytes=MAX_READY_BYTES)
    assert taken is not None
    payload, rest = taken
    assert rest == b""
    assert decode_ready(payload) == frame
    assert encode_ready(decode_ready(payload)) == blob


def test_split_frame_waits_for_whole_frames_and_keeps_the_rest() -> None:
    blob = encode_ready(ReadyFrame(net=("lo",), uptime_s=1.0))
    after = encode_frame(DataFrame("stdout", b"hello"))
    buffer = bytearray(blob + after)
    for cut in (0, 3, 4, len(blob) - 1):
        assert split_frame(bytearray(blob[:cut]), max_bytes=MAX_READY_BYTES) is None
    taken = split_frame(buffer, max_bytes=MAX_READY_BYTES)
    assert taken is not None
    decoder = FrameDecoder()
    decoder.feed(bytes(taken[1]))
    assert decoder.next_frame() == DataFrame("stdout", b"hello")


def test_split_frame_refuses_an_oversized_length_before_buffering_it() -> None:
    with pytest.raises(RemoteProtocolError, match="announced a 4097-byte frame; limit 4096"):
        split_frame(bytearray(b"\x00\x00\x10\x01"), max_bytes=MAX_READY_BYTES)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"t": "stdout", "data": b""}, "not a ready frame"),
        (["ready"], "not a ready frame"),
        ({"t": "ready", "v": 2, "net": ["lo"], "uptime_s": 1.0}, "channel version 2"),
        ({"t": "ready", "v": 1, "net": "lo", "uptime_s": 1.0}, "net must be a list"),
        ({"t": "ready", "v": 1, "net": [""], "uptime_s": 1.0}, "net must be a list"),
        ({"t": "ready", "v": 1, "net": ["x" * 16], "uptime_s": 1.0}, "net must be a list"),
        ({"t": "ready", "v": 1, "net": ["lo"] * 65, "uptime_s": 1.0}, "net must be a list"),
        ({"t": "ready", "v": 1, "net": ["lo"], "uptime_s": "1"}, "uptime_s must be a number"),
        ({"t": "ready", "v": 1, "net": ["lo"], "uptime_s": True}, "uptime_s must be a number"),
        ({"t": "ready", "v": 1, "net": ["lo"], "uptime_s": float("nan")}, "must be a number"),
    ],
)
def test_bad_ready_frames_are_refused(body: object, problem: str) -> None:
    with pytest.raises(RemoteProtocolError, match=problem):
        decode_ready(encode(body))


def test_not_cbor_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError, match="not valid CBOR"):
        decode_ready(b"\xff\xff")
    with pytest.raises(RemoteProtocolError, match="limit is 4096"):
        decode_ready(bytes(MAX_READY_BYTES + 1))


def test_an_integer_uptime_is_a_number_too() -> None:
    body = encode({"t": "ready", "v": 1, "net": ["eth0", "lo"], "uptime_s": 3})
    assert decode_ready(body) == ReadyFrame(net=("eth0", "lo"), uptime_s=3.0)
