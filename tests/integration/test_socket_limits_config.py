"""Socket limits set in the workload config are enforced, for real, on 127.0.0.1 (port 0 only).

Each test starts a Keep whose limits come from its ``Enarx.toml`` (``[network]``, or a listen
entry's ``max_connections``) and shows the limit at work against real clients: the C
``echo_server`` example and WAT guests that make raw WASI calls, Python ``ssl`` and plain
sockets as peers. Keeps run in-process (``KeepRuntime`` in a thread, with the API's own limits
left at their defaults or set looser, so only the config can explain what is seen) and once
through ``donjon run`` as a subprocess.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from donjon.keep.executor import StreamingStdio
from donjon.keep.sockets import (
    SocketLimits,
    SocketSetupError,
)
from tests.integration.socket_support import (
    DONJON,
    STDIO,
    Keep,
    Keeps,
    listen,
    read_stderr_until,
    tls_connect,
)
from tests.unit.keep.sockets._pki import client_ctx
from tests.unit.keep.sockets.guest import SCRATCH, iovec, load_u32, results, script

pytestmark = pytest.mark.integration

ETIMEDOUT = 73  # WASI errno
# A config limit is seen working when the run ends well before the runtime's default would
# have let it: these are the defaults' 10 s and 60 s, with room for a loaded machine.
WELL_BEFORE_DEFAULT_S = 5.0


def echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        piece = sock.recv(65536)
        assert piece, "the echo ended early"
        got += piece
    return got


def closed_after(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the Keep closes ``sock`` (which sends nothing), at most ``limit_s``."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass
    return time.monotonic() - started


# -- max_connections -------------------------------------------------------------------------

MAX_CONNECTIONS_2 = {
    # where the limit of 2 comes from: the listener, or [network] for every listener; the
    # listener's own limit wins over [network]'s; the API's looser 100 loses to both.
    "listener": listen(extra="max_connections = 2\n"),
    "network-section": "[network]\nmax_connections = 2\n" + listen(),
    "listener-over-network": "[network]\nmax_connections = 100\n"
    + listen(extra="max_connections = 2\n"),
}


@pytest.mark.parametrize("config", MAX_CONNECTIONS_2.values(), ids=MAX_CONNECTIONS_2.keys())
def test_a_third_tls_client_waits_until_one_of_two_leaves(keeps: Keeps, config: str) -> None:
    keep = keeps.start(
        "echo_server.wasm",
        STDIO + config,
        args=("-c", "3"),
        limits=SocketLimits(max_connections=100),
    )
    first = tls_connect(keep.port(), keeps.tls)
    second = tls_connect(keep.port(), keeps.tls)
    assert echo(first, b"1") == b"1" and echo(second, b"2") == b"2"
    waiting = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    waiting.settimeout(1.0)
    with pytest.raises(TimeoutError):  # at the limit: not even a handshake
        client_ctx(keeps.tls.certificate_pem).wrap_socket(waiting, server_hostname="localhost")
    waiting.close()
    first.unwrap()
    first.close()
    with tls_connect(keep.port(), keeps.tls) as third:  # a slot is free again
        assert echo(third, b"3") == b"3"
        third.unwrap()
    second.unwrap()
    second.close()
    assert keep.wait() == 0
    assert keep.stdio.stdout == b"echo_server: served 3 connections, 3 bytes\n"  # type: ignore[union-attr]


def test_a_tcp_listeners_own_limit_holds_a_third_client_back(keeps: Keeps) -> None:
    keep = keeps.start(
        "echo_server.wasm",
        STDIO + listen("tcp", extra="max_connections = 2\n"),
        args=("-c", "3"),
    )
    first = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    second = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    assert echo(first, b"1") == b"1" and echo(second, b"2") == b"2"
    third = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    third.sendall(b"3")
    third.settimeout(1.0)
    with pytest.raises(TimeoutError):  # in the kernel's backlog: nobody reads it yet
        third.recv(1)
    first.close()
    third.settimeout(20)
    assert third.recv(1) == b"3"  # accepted once the first left, its early bytes intact
    third.close()
    second.close()
    assert keep.wait() == 0


# -- TLS handshakes --------------------------------------------------------------------------


def test_handshake_timeout_from_the_config_drops_a_silent_peer(keeps: Keeps) -> None:
    keep = keeps.start(
        "echo_server.wasm",
        STDIO + "[network]\nhandshake_timeout_s = 0.5\n" + listen(),
        args=("-c", "1"),
    )
    silent = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    elapsed = closed_after(silent, 20)
    silent.close()
    assert 0.4 <= elapsed < WELL_BEFORE_DEFAULT_S  # the default would have waited 10 s
    with tls_connect(keep.port(), keeps.tls) as client:  # a real client still gets in
        assert echo(client, b"hello") == b"hello"
        client.unwrap()
    assert keep.wait() == 0


def test_max_pending_handshakes_from_the_config_evicts_the_oldest(keeps: Keeps) -> None:
    keep = keeps.start(
        "echo_server.wasm",
        STDIO + "[network]\nmax_pending_handshakes = 1\n" + listen(),
        args=("-c", "1"),
    )
    oldest = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    time.sleep(0.3)  # the acceptor takes it into its (one) handshake slot
    newer = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    # Evicted at once for the newer one, not after the 10 s handshake timeout.
    assert closed_after(oldest, 20) < WELL_BEFORE_DEFAULT_S
    oldest.close()
    with tls_connect(keep.port(), keeps.tls) as client:  # evicts the silent newer one in turn
        assert echo(client, b"hi") == b"hi"
        client.unwrap()
    assert closed_after(newer, 20) < WELL_BEFORE_DEFAULT_S
    newer.close()
    assert keep.wait() == 0


# -- connect_timeout_s ------------------------------------------------------------------------


def test_connect_timeout_from_the_config_ends_a_silent_tls_server(keeps: Keeps) -> None:
    # A server that accepts TCP (in the kernel) and never answers the TLS ClientHello.
    with socket.create_server(("127.0.0.1", 0)) as mute:
        port = mute.getsockname()[1]
        config = (
            STDIO
            + "[network]\nconnect_timeout_s = 0.5\n"
            + f'[[files]]\nkind = "connect"\nname = "mute"\nhost = "127.0.0.1"\nport = {port}\n'
        )
        started = time.monotonic()
        keep = keeps.start("net_client.wasm", config)
        with pytest.raises(SocketSetupError, match="did not finish in time") as info:
            keep.wait()
        elapsed = time.monotonic() - started
    assert 'files[3] "mute"' in str(info.value)
    assert 0.4 <= elapsed < WELL_BEFORE_DEFAULT_S  # the default would have waited 10 s


# -- send_stall_timeout_s and buffer_kib -------------------------------------------------------

NOUT, BUF_IOV, BUF = SCRATCH, 1024, 4096
SEND_BYTES = 120_000  # fits the guest's 128 KiB of memory; far more than 2 x 4 KiB of buffers


class Reports:
    """The 4-byte results a script guest writes, as they come."""

    def __init__(self) -> None:
        self.data = b""
        self._cond = threading.Condition()

    def feed(self, data: bytes) -> None:
        with self._cond:
            self.data += data
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> list[int]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.data) >= 4 * count, timeout)
            return results(self.data[: 4 * count])


SEND_TO_A_PEER_THAT_NEVER_READS = [
    f"(call $sock_accept (i32.const 3) (i32.const 0) (i32.const {NOUT}))",
    load_u32(NOUT),  # the connection's fd: 4
    f"(call $sock_send (i32.const 4) (i32.const {BUF_IOV}) (i32.const 1) (i32.const 0)"
    f" (i32.const {NOUT}))",
    load_u32(NOUT),  # bytes sent
    "(call $fd_close (i32.const 4))",
]


def _start_sender(keeps: Keeps, network: str, limits: SocketLimits | None) -> Keep:
    reports = Reports()
    stdio = StreamingStdio(on_stdout=reports.feed, on_stderr=lambda b: None)
    guest = script(SEND_TO_A_PEER_THAT_NEVER_READS, {BUF_IOV: iovec(BUF, SEND_BYTES)})
    keep = keeps.start(guest, STDIO + network + listen("tcp"), stdio=stdio, limits=limits)
    keep.result["reports"] = reports
    return keep


def _small_window_client(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    return sock


def test_buffer_and_send_stall_from_the_config_bound_a_peer_that_never_reads(
    keeps: Keeps,
) -> None:
    keep = _start_sender(
        keeps, "[network]\nbuffer_kib = 4\nsend_stall_timeout_s = 0.5\n", limits=None
    )
    reports = keep.result["reports"]
    assert isinstance(reports, Reports)
    started = time.monotonic()
    with _small_window_client(keep.port()):  # connects, never reads
        errno, fd, send_errno, sent = reports.wait_for(4, timeout=30)
        elapsed = time.monotonic() - started
        assert (errno, fd) == (0, 4)
        # 4 KiB buffers fill long before 120,000 bytes: the blocking send stalls, and after
        # 0.5 s of no progress returns what it sent (or ETIMEDOUT had it sent nothing).
        assert (send_errno == 0 and 0 < sent < 64 * 1024) or send_errno == ETIMEDOUT
        assert 0.4 <= elapsed < WELL_BEFORE_DEFAULT_S  # the default stall is 60 s
    assert keep.wait() == 0


def test_without_the_config_the_same_send_fits_the_default_buffers(keeps: Keeps) -> None:
    # The control for the test above: same guest and client, the runtime's 256 KiB buffers.
    keep = _start_sender(keeps, "", limits=SocketLimits(send_stall_timeout_s=0.5))
    reports = keep.result["reports"]
    assert isinstance(reports, Reports)
    with _small_window_client(keep.port()):
        assert reports.wait_for(4, timeout=30) == [0, 4, 0, SEND_BYTES]
    assert keep.wait() == 0


# -- donjon run --------------------------------------------------------------------------------


def test_donjon_run_enforces_a_listeners_max_connections_from_the_config(
    examples_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "Enarx.toml"
    config.write_text(STDIO + listen(extra="max_connections = 1\n"))
    env = {"PATH": os.environ.get("PATH", ""), "DONJON_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [DONJON, "run", "--backend", "nil", "--wasmcfgfile", config,
         examples_dir / "echo_server.wasm", "--", "-c", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the certificate is not what this test is about
    try:
        seen = read_stderr_until(proc, rb"listening on 127\.0\.0\.1:(\d+) \(TLS 1\.3\)", 60)
        match = re.search(rb"listening on 127\.0\.0\.1:(\d+)", seen)
        assert match is not None
        port = int(match.group(1))
        first = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20))
        assert echo(first, b"one") == b"one"
        waiting = socket.create_connection(("127.0.0.1", port), timeout=20)
        waiting.settimeout(1.0)
        with pytest.raises(TimeoutError):  # the one slot is taken
            ctx.wrap_socket(waiting)
        waiting.close()
        first.unwrap()
        first.close()
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20)) as second:
            assert echo(second, b"two") == b"two"
            second.unwrap()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (seen + err).decode()
    assert out == b"echo_server: served 2 connections, 6 bytes\n"
