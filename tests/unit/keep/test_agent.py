"""The keep runtime agent's pure parts and its session pump, as an in-memory pair.

The pump is run against a real TLS client over a socketpair and real pipes standing in for the
workload's fds 0-2 (the agent process puts those pipes on 0-2; a test must not touch its own).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from donjon.crypto.ca import KeyPair
from donjon.crypto.ratls import certificate_pem, self_signed_certificate
from donjon.errors import DecodeError, RemoteProtocolError
from donjon.keep.agent import (
    DEFAULT_PROGRAM,
    MAX_LAUNCH_MESSAGE_BYTES,
    LaunchMessage,
    _Pump,
    _workload_parts,
)
from donjon.keep.config import WorkloadConfig
from donjon.keep.tls import server_context
from donjon.wire.cbor import encode
from donjon.wire.frames import (
    DataFrame,
    ExitFrame,
    FrameDecoder,
    PackageFrame,
    StdinEofFrame,
    WorkloadFrame,
    encode_frame,
)

HELLO = b"\0asm\x01\0\0\0"
CONFIG = WorkloadConfig().to_dict()


# -- the launch message ------------------------------------------------------------------------


def test_launch_message_round_trip() -> None:
    raw = encode({"socket": "/s/keep.sock", "params": b"\xa0", "log": "/s/loader.log"})
    msg = LaunchMessage.decode(raw)
    assert msg == LaunchMessage(Path("/s/keep.sock"), b"\xa0", Path("/s/loader.log"))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([1], "not a map"),
        ({"socket": "/s", "params": b""}, "needs socket, params and log"),
        ({"socket": "/s", "params": "text", "log": "/l"}, "needs socket, params and log"),
        ({"socket": "rel/keep.sock", "params": b"", "log": "/l"}, "must be absolute"),
        ({"socket": "/s", "params": b"", "log": "l"}, "must be absolute"),
    ],
)
def test_bad_launch_messages(body: object, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        LaunchMessage.decode(encode(body))


def test_oversized_launch_message() -> None:
    raw = encode({"socket": "/s", "params": bytes(MAX_LAUNCH_MESSAGE_BYTES), "log": "/l"})
    with pytest.raises(DecodeError):
        LaunchMessage.decode(raw)


# -- the workload frame ------------------------------------------------------------------------


def test_workload_parts_check_the_digest_and_name_the_program() -> None:
    frame = WorkloadFrame(
        config=CONFIG, module=HELLO, module_sha256=hashlib.sha256(HELLO).digest(), args=("a",)
    )
    module, _, program, args, publisher = _workload_parts(frame)
    assert (module, program, args, publisher) == (HELLO, DEFAULT_PROGRAM, ("a",), None)
    named = WorkloadFrame(
        config=CONFIG, module=HELLO, module_sha256=hashlib.sha256(HELLO).digest(), program="x.wasm"
    )
    assert _workload_parts(named)[2] == "x.wasm"
    forged = WorkloadFrame(config=CONFIG, module=HELLO, module_sha256=hashlib.sha256(b"x").digest())
    with pytest.raises(RemoteProtocolError, match="does not match its SHA-256"):
        _workload_parts(forged)


def test_a_package_needs_a_digest_before_anything_is_fetched() -> None:
    from donjon.registry import ReferenceSyntaxError

    with pytest.raises(ReferenceSyntaxError, match="by digest only"):
        _workload_parts(PackageFrame(reference="127.0.0.1:9/apps/x:latest"))


# -- the session pump --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = KeyPair.generate("P-384")
    cert = self_signed_certificate(
        key.private_key_pem(),
        common_name="test keep",
        dns_names=["k.keep.donjon.invalid"],
        extensions=[],
        now=datetime.now(UTC),
        lifetime=timedelta(hours=1),
    )
    server = server_context(key.private_key_pem(), certificate_pem(cert))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


@pytest.fixture
def session(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    a, b = socket.socketpair()
    server_ctx, client_ctx = contexts
    result: dict[str, ssl.SSLSocket] = {}
    t = threading.Thread(target=lambda: result.setdefault("c", client_ctx.wrap_socket(b)))
    t.start()
    keep_side = server_ctx.wrap_socket(a, server_side=True)
    t.join()
    yield keep_side, result["c"]
    keep_side.close()
    result["c"].close()


def _read_all(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 65536):
        into += chunk
    os.close(fd)


def test_pump_streams_stdin_in_and_output_out(
    session: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    keep_side, client = session
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # What arrived with the workload frame is already in the decoder: the first stdin chunk.
    decoder = FrameDecoder()
    decoder.feed(encode_frame(DataFrame(stream="stdin", data=b"first ")))
    pump = _Pump(
        keep_side,
        decoder,
        stdin_w=stdin_w,
        out_r=out_r,
        err_r=err_r,
        wants_stdin=True,
        stop_at=None,
        program="p.wasm",
        timeout_s=None,
    )
    workload_stdin = bytearray()
    reader = threading.Thread(target=_read_all, args=(stdin_r, workload_stdin))
    reader.start()
    pump.start()
    # 3 MiB of stdin: three times what the Keep holds at once, so it must flow as read.
    big = os.urandom(3 * 1024 * 1024)
    for i in range(0, len(big), 1024 * 1024):
        client.sendall(encode_frame(DataFrame(stream="stdin", data=big[i : i + 1024 * 1024])))
    client.sendall(encode_frame(StdinEofFrame()))
    reader.join(timeout=30)
    assert not reader.is_alive()  # the pump closed the workload's stdin after stdin-eof
    assert bytes(workload_stdin) == b"first " + big
    # The workload writes, then ends (its fds 1 and 2 close): the pump sends and ends.
    os.write(out_w, b"to stdout")
    os.write(err_w, b"to stderr")
    os.close(out_w)
    os.close(err_w)
    pump.done.set()
    pump.join()
    keep_side.sendall(pump.leftover() + encode_frame(ExitFrame(code=0)))
    frames: list[object] = []
    received = FrameDecoder()
    while not (frames and isinstance(frames[-1], ExitFrame)):
        received.feed(client.recv(65536))
        while (frame := received.next_frame()) is not None:
            frames.append(frame)
    data = {
        stream: b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream == stream)
        for stream in ("stdout", "stderr")
    }
    assert data == {"stdout": b"to stdout", "stderr": b"to stderr"}


def test_pump_discards_stdin_for_a_workload_without_one(
    session: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    keep_side, client = session
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pump = _Pump(
        keep_side,
        FrameDecoder(),
        stdin_w=stdin_w,
        out_r=out_r,
        err_r=err_r,
        wants_stdin=False,
        stop_at=None,
        program="p.wasm",
        timeout_s=None,
    )
    pump.start()
    client.sendall(encode_frame(DataFrame(stream="stdin", data=b"ignored")))
    client.sendall(encode_frame(StdinEofFrame()))
    assert os.read(stdin_r, 100) == b""  # end of file, and nothing before it
    os.close(stdin_r)
    os.close(out_w)
    os.close(err_w)
    pump.join()
    assert pump.leftover() == b""


def test_pump_stops_reading_a_client_that_breaks_the_protocol(
    session: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    keep_side, client = session
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pump = _Pump(
        keep_side,
        FrameDecoder(),
        stdin_w=stdin_w,
        out_r=out_r,
        err_r=err_r,
        wants_stdin=True,
        stop_at=None,
        program="p.wasm",
        timeout_s=None,
    )
    pump.start()
    # A second workload frame mid-run: no more stdin is taken, the workload sees end of file.
    frame = WorkloadFrame(config={}, module=HELLO, module_sha256=hashlib.sha256(HELLO).digest())
    client.sendall(encode_frame(DataFrame(stream="stdin", data=b"ok")) + encode_frame(frame))
    client.sendall(encode_frame(DataFrame(stream="stdin", data=b"never")))
    got = bytearray()
    _read_all(stdin_r, got)
    assert bytes(got) == b"ok"
    os.close(out_w)
    os.close(err_w)
    pump.join()
