from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.errors import EncodeError, RemoteProtocolError
from donjon.wire.frames import (
    MAX_ARGS,
    MAX_ARGS_BYTES,
    MAX_DATA_FRAME_BYTES,
    MAX_PROGRAM_CHARS,
    DataFrame,
    ExitFrame,
    FrameDecoder,
    PackageFrame,
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
    WorkloadFrame(
        config={},
        module=b"\0asm",
        module_sha256=hashlib.sha256(b"\0asm").digest(),
        program="hello.wasm",
        args=("--flag", "two words", ""),
    ),
    PackageFrame(reference="127.0.0.1:5000/a/b@sha256:" + "0" * 64, args=("x",)),
    PackageFrame(
        reference="r.example/a@sha256:" + "1" * 64,
        username="alice",
        password="s3cret",
        publisher_keys=(b"-----BEGIN PUBLIC KEY-----",),
    ),
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


def _decode_body(body: dict[str, object]) -> object:
    from donjon.wire.cbor import encode

    payload = encode(body)
    dec = FrameDecoder()
    dec.feed(struct.pack(">I", len(payload)) + payload)
    return dec.next_frame()


def test_optional_keys_are_absent_unless_set() -> None:
    # A frame without program/args has the bytes of the first release: old Keeps read it.
    digest = hashlib.sha256(b"\0asm").digest()
    plain = encode_frame(WorkloadFrame(config={}, module=b"\0asm", module_sha256=digest))
    assert b"program" not in plain and b"args" not in plain
    named = encode_frame(
        WorkloadFrame(config={}, module=b"\0asm", module_sha256=digest, program="a.wasm")
    )
    assert b"program" in named and b"args" not in named
    assert b"args" not in encode_frame(PackageFrame(reference="r/a@sha256:" + "0" * 64))


def test_unknown_keys_in_a_known_frame_are_ignored() -> None:
    digest = hashlib.sha256(b"\0asm").digest()
    frame = _decode_body(
        {
            "t": "workload",
            "v": 1,
            "config": {},
            "module": b"\0asm",
            "module_sha256": digest,
            "later": [1, 2],
        }
    )
    assert frame == WorkloadFrame(config={}, module=b"\0asm", module_sha256=digest)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"program": ""}, "program must be a file name"),
        ({"program": "a/b.wasm"}, "program must be a file name"),
        ({"program": "x" * (MAX_PROGRAM_CHARS + 1)}, "program must be a file name"),
        ({"program": "a\0b"}, "program must be a file name"),
        ({"program": b"a.wasm"}, "program must be a file name"),
        ({"args": "not a list"}, "args must be a list"),
        ({"args": ["ok", 3]}, "each argument must be text"),
        ({"args": ["a\0b"]}, "each argument must be text without NUL"),
        ({"args": ["x"] * (MAX_ARGS + 1)}, f"at most {MAX_ARGS}"),
        ({"args": ["x" * 1024] * 1025}, f"exceed {MAX_ARGS_BYTES} bytes"),
    ],
)
def test_bad_program_and_args_are_protocol_errors(extra: dict[str, object], fragment: str) -> None:
    body = {
        "t": "workload",
        "v": 1,
        "config": {},
        "module": b"\0asm",
        "module_sha256": hashlib.sha256(b"\0asm").digest(),
    }
    with pytest.raises(RemoteProtocolError, match=fragment):
        _decode_body(body | extra)


def test_package_args_are_checked_too() -> None:
    body = {
        "t": "package",
        "v": 1,
        "reference": "r/a@sha256:" + "0" * 64,
        "credentials": None,
        "publisher_keys": [],
        "args": [1],
    }
    with pytest.raises(RemoteProtocolError, match="each argument must be text"):
        _decode_body(body)


def test_encoder_refuses_bad_program_and_args() -> None:
    digest = hashlib.sha256(b"\0asm").digest()
    with pytest.raises(EncodeError, match="program must be a file name"):
        encode_frame(
            WorkloadFrame(config={}, module=b"\0asm", module_sha256=digest, program="../x")
        )
    with pytest.raises(EncodeError, match="without NUL"):
        encode_frame(PackageFrame(reference="r/a@sha256:" + "0" * 64, args=("a\0",)))


def test_package_frame_repr_hides_the_password() -> None:
    frame = PackageFrame(reference="r/a@sha256:" + "0" * 64, username="u", password="s3cret")
    assert "s3cret" not in repr(frame)
