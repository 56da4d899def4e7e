"""Shared by the socket tests: Keeps run in-process (``KeepRuntime`` in a thread) with real
listeners on 127.0.0.1 (port 0), config snippets, and the clients' small helpers.

The fixtures that build on these (``runtime``, ``keep_tls``, ``keeps``) are in this folder's
``conftest.py``.
"""

from __future__ import annotations

import os
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from donjon.keep.config import parse_config
from donjon.keep.executor import CapturedStdio, KeepRuntime, StreamingStdio
from donjon.keep.plan import Invocation
from donjon.keep.sockets import (
    ListenerInfo,
    NetworkOptions,
    SocketLimits,
    StopSignal,
    UnsafeEphemeralTls,
)
from tests.unit.keep.sockets._pki import client_ctx

STDIO = '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
DONJON = Path(sys.executable).with_name("donjon")


def listen(prot: str = "tls", name: str = "listen", extra: str = "") -> str:
    return (
        f'[[files]]\nkind = "listen"\nname = "{name}"\nprot = "{prot}"\n'
        f'addr = "127.0.0.1"\nport = 0\n{extra}'
    )


@dataclass
class Keep:
    """A workload running in a thread of this process."""

    thread: threading.Thread
    stop: StopSignal
    stdio: CapturedStdio | StreamingStdio
    listeners: dict[str, ListenerInfo] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    result: dict[str, object] = field(default_factory=dict)

    def port(self, name: str = "listen") -> int:
        return self.listeners[name].port

    def wait(self, timeout: float = 60.0) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the workload did not end"
        error = self.result.get("error")
        if isinstance(error, BaseException):
            raise error
        code = self.result["code"]
        assert isinstance(code, int)
        return code


class Keeps:
    def __init__(self, runtime: KeepRuntime, examples: Path, tls: UnsafeEphemeralTls) -> None:
        self._runtime = runtime
        self._examples = examples
        self.tls = tls
        self.started: list[Keep] = []

    def start(
        self,
        wasm: str | bytes,
        config: str,
        *,
        args: tuple[str, ...] = (),
        stdio: CapturedStdio | StreamingStdio | None = None,
        limits: SocketLimits | None = None,
        tls: bool = True,
        wait_listening: bool = True,
    ) -> Keep:
        if isinstance(wasm, str):
            name, data = wasm, (self._examples / wasm).read_bytes()
        else:
            name, data = "guest.wasm", wasm
        parsed = parse_config(config)
        module = self._runtime.load(data, name=name, deadline=parsed.limits.timeout_s is not None)
        invocation = Invocation.from_config(parsed, program=name, args=args)
        keep = Keep(threading.Thread(target=lambda: None), StopSignal(), stdio or CapturedStdio())
        listening = threading.Event()
        expected = sum(1 for _, spec in invocation.sockets if spec.kind.value == "listen")

        def on_listen(info: ListenerInfo) -> None:
            keep.listeners[info.name] = info
            if len(keep.listeners) == expected:
                listening.set()

        options = NetworkOptions(
            tls=self.tls if tls else None,
            limits=limits or SocketLimits(),
            stop=keep.stop,
            on_listen=on_listen,
            on_notice=keep.notices.append,
        )

        def target() -> None:
            try:
                keep.result["code"] = self._runtime.run(
                    module, invocation, keep.stdio, network=options
                )
            except BaseException as e:
                keep.result["error"] = e
            finally:
                listening.set()

        keep.thread = threading.Thread(target=target, daemon=True)
        keep.thread.start()
        self.started.append(keep)
        if wait_listening and expected:
            assert listening.wait(30)
            if "error" in keep.result:
                keep.wait()
        return keep


def tls_connect(port: int, tls: UnsafeEphemeralTls, *, timeout: float = 20) -> ssl.SSLSocket:
    ctx = client_ctx(tls.certificate_pem)
    return ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=timeout), server_hostname="localhost"
    )


def recv_until_eof(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def echo_round_trip(sock: socket.socket, data: bytes, chunk: int = 64 * 1024) -> bytes:
    """Send ``data`` in chunks, reading each chunk's echo before the next (lock-step: one
    thread, because an SSL object must not be read and written from two threads at once)."""
    got = bytearray()
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        sock.sendall(part)
        want = start + len(part)
        while len(got) < want:
            piece = sock.recv(65536)
            assert piece, "the echo ended early"
            got += piece
    return bytes(got)


def read_stderr_until(proc: subprocess.Popen[bytes], pattern: bytes, timeout: float) -> bytes:
    assert proc.stderr is not None
    seen = b""
    end = time.monotonic() + timeout
    while not re.search(pattern, seen):
        assert time.monotonic() < end, seen.decode(errors="replace")
        ready, _, _ = select.select([proc.stderr], [], [], 1)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
    return seen
