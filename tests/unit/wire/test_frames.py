from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.errors import EncodeError, RemoteProtocolError
from donjon.wire.frames import (
    MAX_DATA_FRAME_BYTES,
    DataFrame,
    ExitFrame,
    FrameDecoder,
    StdinEofFrame,
    WorkloadFrame,
    encode_frame,
)

FRAMES = [
    WorkloadFrame(
        config={"args": ["a"]}, module=b"\0asm", module_sha256=hashlib.sha256(b"\0asm").digest()
    ),
    DataFrame(stream="stdout", data=b"hello\n"),
    DataFrame(stream="stderr", data=b""),
    DataFrame(stream="stdin", data=b"x" * 100),
    StdinEofFrame(),
    ExitFrame(code=3),
    ExitFrame(code=134, error="TrapError", message="wasm trap: unreachable"),
]


@pytest.mark.parametrize("frame", FRAMES)
def test_roundtrip(frame: object) -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(frame))  # type: ignore[arg-type]
    assert dec.next_frame() == frame
    assert dec.next_frame() is None
    assert dec.buffered == 0


def test_byte_by_byte_feeding() -> None:
    wire = b"".join(encode_frame(f) for f in FRAMES)  # type: ignore[arg-type]
    dec = FrameDecoder()
    out = []
    for b in wire:
        dec.feed(bytes([b]))
        while (f := dec.next_frame()) is not None:
            out.append(f)
    assert out == FRAMES


def test_oversized_announcement_refused_before_buffering() -> None:
    dec = FrameDecoder(max_frame_bytes=1000)
    dec.feed(struct.pack(">I", 1001))
    with pytest.raises(RemoteProtocolError, match="1001-byte frame"):
        dec.next_frame()


def test_bad_frames_are_protocol_errors() -> None:
    from donjon.wire.cbor import encode

    bad = [
        [1, 2],
        {"t": "nope"},
        {"t": "exit", "code": 300},
        {"t": "exit", "code": True},
        {"t": "stdout", "data": "text"},
        {"t": "workload", "v": 2, "config": {}, "module": b"", "module_sha256": b"0" * 32},
        {"t": "workload", "v": 1, "config": {}, "module": b"", "module_sha256": b"short"},
    ]
    for body in bad:
        payload = encode(body)
        dec = FrameDecoder()
        dec.feed(struct.pack(">I", len(payload)) + payload)
        with pytest.raises(RemoteProtocolError):
            dec.next_frame()


def test_encoder_refuses_oversized_data() -> None:
    with pytest.raises(EncodeError):
        encode_frame(DataFrame(stream="stdout", data=b"x" * (MAX_DATA_FRAME_BYTES + 1)))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_protocol_errors(data: bytes) -> None:
    dec = FrameDecoder(max_frame_bytes=4096)
    dec.feed(data)
    try:
        while dec.next_frame() is not None:
            pass
    except RemoteProtocolError:
        pass


def test_exact_bytes_of_an_exit_frame() -> None:
    wire = encode_frame(ExitFrame(code=0))
    body = bytes.fromhex("a4") + (
        bytes.fromhex("6174") + bytes.fromhex("6465786974")  # "t": "exit"
    )
    # Deterministic CBOR sorts keys by encoded length then bytes: "t", "code", "error", "message".
    assert wire[4:].startswith(body)
    assert struct.unpack(">I", wire[:4])[0] == len(wire) - 4
