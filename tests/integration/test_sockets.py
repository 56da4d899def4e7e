"""Network workloads end to end: real clients against Keeps on 127.0.0.1 (port 0 only).

The workloads are the unmodified C examples (echo_server, http_server, net_client) and WAT
guests that make raw WASI calls; the clients are Python's ``ssl``, ``curl`` and
``openssl s_client``. Keeps run in-process (``KeepRuntime`` in a thread) and through
``donjon run`` as a subprocess.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from donjon.keep.config import parse_config
from donjon.keep.errors import DeadlineError
from donjon.keep.executor import CapturedStdio, StreamingStdio
from donjon.keep.plan import Invocation
from donjon.keep.sockets import (
    PeerVerificationError,
    RunStoppedError,
    SocketLimits,
    SocketSetupError,
)
from tests.integration.socket_support import (
    DONJON,
    STDIO,
    Keeps,
    echo_round_trip,
    listen,
    read_stderr_until,
    recv_until_eof,
    tls_connect,
)
from tests.unit.keep.sockets._pki import TestCA, client_ctx, server_ctx
from tests.unit.keep.sockets.guest import SCRATCH, fd_sub, iovec, load_u32, results, script

pytestmark = pytest.mark.integration


# -- TLS echo, HTTP ---------------------------------------------------------------------------


def test_tls_echo_with_a_pinned_certificate(keeps: Keeps) -> None:
    keep = keeps.start("echo_server.wasm", STDIO + listen(), args=("-c", "1"))
    with tls_connect(keep.port(), keeps.tls) as conn:
        presented = conn.getpeercert(binary_form=True)
        assert presented is not None
        digest = hashlib.sha256(presented).hexdigest().upper()
        assert keeps.tls.fingerprint_sha256.replace(":", "") == digest
        assert conn.version() == "TLSv1.3"
        data = os.urandom(2 * 1024 * 1024)
        assert echo_round_trip(conn, data) == data
        conn.unwrap()  # close_notify: the server sees end of input and closes
    assert keep.wait() == 0
    assert keep.stdio.stdout == b"echo_server: served 1 connections, 2097152 bytes\n"  # type: ignore[union-attr]
    assert any("listening on 127.0.0.1:" in n and "(TLS 1.3)" in n for n in keep.notices)


class Http:
    """HTTP/1.1 over one connection, buffered, so pipelined responses are read one by one."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self._buffer = b""

    def get(self, path: str = "/", extra: str = "") -> bytes:
        self.conn.sendall(f"GET {path} HTTP/1.1\r\nHost: keep\r\n{extra}\r\n".encode())
        return self.response()

    def _fill(self) -> None:
        chunk = self.conn.recv(4096)
        assert chunk, "the server closed the connection"
        self._buffer += chunk

    def response(self, *, head_only: bool = False) -> bytes:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        match = re.search(rb"Content-Length: (\d+)", head)
        assert match is not None
        length = 0 if head_only else int(match.group(1))
        while len(rest) < length:
            self._fill()
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
        self._buffer = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]


OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\nHello from a Keep!\n"
)


def test_http_get_keep_alive_pipelining_and_errors(keeps: Keeps) -> None:
    keep = keeps.start("http_server.wasm", STDIO + listen(), args=("-c", "2"))
    with tls_connect(keep.port(), keeps.tls) as conn:
        http = Http(conn)
        for _ in range(50):
            assert http.get() == OK  # one connection: keep-alive
        conn.sendall(b"GET / HTTP/1.1\r\nHost: k\r\n\r\n" * 10)  # pipelined
        for _ in range(10):
            assert http.response() == OK
        assert http.get("/nope").startswith(b"HTTP/1.1 404 Not Found\r\n")
        conn.sendall(b"HEAD / HTTP/1.1\r\nHost: k\r\n\r\n")
        assert http.response(head_only=True) == OK[: -len(b"Hello from a Keep!\n")]
        conn.sendall(b"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: 3\r\n\r\nabc")
        assert recv_until_eof(conn).startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    with tls_connect(keep.port(), keeps.tls) as conn:
        response = Http(conn).get(extra="Connection: close\r\n")
        assert b"Connection: close\r\n" in response and recv_until_eof(conn) == b""
    assert keep.wait() == 0
    assert keep.stdio.stdout == b"http_server: served 2 connections, 64 requests\n"  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_gets_twice_over_one_connection(keeps: Keeps, tmp_path: Path) -> None:
    keep = keeps.start("http_server.wasm", STDIO + listen(), args=("-c", "1"))
    cert = tmp_path / "keep.pem"
    cert.write_bytes(keeps.tls.certificate_pem)
    url = f"https://localhost:{keep.port()}/"
    result = subprocess.run(
        ["curl", "-sS", "-v", "--cacert", cert, "--resolve", f"localhost:{keep.port()}:127.0.0.1",
         "--tlsv1.3", url, url],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"Hello from a Keep!\n" * 2
    assert b"Re-using existing connection" in result.stderr
    assert b"SSL certificate verify ok" in result.stderr
    assert keep.wait() == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_s_client_speaks_tls13_to_the_keep(keeps: Keeps, tmp_path: Path) -> None:
    keep = keeps.start("http_server.wasm", STDIO + listen(), args=("-c", "1"))
    cert = tmp_path / "keep.pem"
    cert.write_bytes(keeps.tls.certificate_pem)
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{keep.port()}", "-servername",
         "localhost", "-CAfile", cert, "-verify_return_error", "-verify_hostname", "localhost",
         "-ign_eof", "-brief"],
        input=b"GET / HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n",
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert b"Protocol version: TLSv1.3" in result.stderr
    assert b"Verification: OK" in result.stderr
    assert result.stdout.endswith(b"\r\n\r\nHello from a Keep!\n")
    assert keep.wait() == 0


# -- many clients, half-close, hostile peers ---------------------------------------------------


def test_many_concurrent_connections(keeps: Keeps) -> None:
    clients = 40
    keep = keeps.start("echo_server.wasm", STDIO + listen(), args=("-c", str(clients)))
    failures: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with tls_connect(keep.port(), keeps.tls, timeout=60) as conn:
                data = bytes([i]) * 100_000
                assert echo_round_trip(conn, data) == data
                conn.unwrap()
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert keep.wait() == 0
    assert keep.stdio.stdout.startswith(b"echo_server: served 40 connections, 4000000 bytes")  # type: ignore[union-attr]


def test_tcp_half_close(keeps: Keeps) -> None:
    keep = keeps.start("echo_server.wasm", STDIO + listen("tcp"), args=("-c", "1"), tls=False)
    with socket.create_connection(("127.0.0.1", keep.port()), timeout=20) as conn:
        conn.sendall(b"half" * 10000)
        conn.shutdown(socket.SHUT_WR)  # no more input; the echo still comes back
        assert recv_until_eof(conn) == b"half" * 10000
    assert keep.wait() == 0
    assert any("plaintext TCP on files[3]" in n for n in keep.notices)


def test_tls_half_close_with_close_notify(keeps: Keeps) -> None:
    keep = keeps.start("echo_server.wasm", STDIO + listen(), args=("-c", "1"))
    sock = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_ctx(keeps.tls.certificate_pem).wrap_bio(
        incoming, outgoing, server_hostname="localhost"
    )

    def pump(read: bool) -> None:
        if outgoing.pending:
            sock.sendall(outgoing.read())
        if read:
            data = sock.recv(65536)
            incoming.write(data) if data else incoming.write_eof()

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump(True)
    pump(False)
    tls.write(b"tls half-close " * 1000)
    try:
        tls.unwrap()  # our close_notify; we keep reading
    except ssl.SSLWantReadError:
        pass
    pump(False)
    echoed = b""
    while True:
        try:
            echoed += tls.read(65536)
        except ssl.SSLWantReadError:
            pump(True)
        except ssl.SSLZeroReturnError:
            break  # the Keep's close_notify, after all of the echo
    assert echoed == b"tls half-close " * 1000
    sock.close()
    assert keep.wait() == 0


def test_a_peer_that_disconnects_mid_stream_does_not_hurt_others(keeps: Keeps) -> None:
    keep = keeps.start("echo_server.wasm", STDIO + listen(), args=("-c", "2"))
    rude = tls_connect(keep.port(), keeps.tls)
    rude.sendall(os.urandom(1024 * 1024))  # never reads the echo
    rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rude.close()  # RST while the echo is in flight
    with tls_connect(keep.port(), keeps.tls) as polite:
        assert echo_round_trip(polite, b"still here") == b"still here"
        polite.unwrap()
    assert keep.wait() == 0


def test_a_peer_that_never_reads_stalls_only_its_own_connection(keeps: Keeps) -> None:
    keep = keeps.start("echo_server.wasm", STDIO + listen(), args=("-c", "2"))
    stuck = tls_connect(keep.port(), keeps.tls)
    stuck.settimeout(5)
    sent = 0
    try:
        while sent < 64 * 1024 * 1024:
            sent += stuck.send(b"x" * 65536)  # the echo fills up; this peer never reads
    except TimeoutError:
        pass
    assert sent < 64 * 1024 * 1024  # bounded: the Keep stopped taking more in
    with tls_connect(keep.port(), keeps.tls) as other:
        assert echo_round_trip(other, b"fine" * 1000) == b"fine" * 1000
        other.unwrap()
    stuck.close()
    assert keep.wait() == 0


def test_mutual_tls_refuses_a_client_with_the_wrong_certificate(keeps: Keeps) -> None:
    clients = TestCA("clients")
    pem = clients.pem.replace("\n", "\n")
    config = STDIO + listen(extra=f"client_ca = '''\n{pem}'''\n")
    keep = keeps.start("echo_server.wasm", config, args=("-c", "1"))
    impostor = TestCA("impostor").issue("mallory", client=True)
    for cert in (impostor, None):
        ctx = client_ctx(keeps.tls.certificate_pem, cert=cert)
        with ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", keep.port()), timeout=20),
            server_hostname="localhost",
        ) as conn:
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                conn.sendall(b"let me in")
                if not conn.recv(100):
                    raise ConnectionResetError("closed")
    good = client_ctx(keeps.tls.certificate_pem, cert=clients.issue("alice", client=True))
    with good.wrap_socket(
        socket.create_connection(("127.0.0.1", keep.port()), timeout=20),
        server_hostname="localhost",
    ) as conn:
        assert echo_round_trip(conn, b"alice") == b"alice"
        conn.unwrap()
    assert keep.wait() == 0
    assert keep.stdio.stdout == b"echo_server: served 1 connections, 5 bytes\n"  # type: ignore[union-attr]
    assert any("client certificates required" in n for n in keep.notices)


def test_connections_beyond_the_limit_wait_and_slowloris_does_not_lock_out(
    keeps: Keeps,
) -> None:
    limits = SocketLimits(max_connections=2, max_pending_handshakes=4, handshake_timeout_s=2)
    keep = keeps.start("echo_server.wasm", STDIO + listen(), args=("-c", "3"), limits=limits)
    silent = [socket.create_connection(("127.0.0.1", keep.port())) for _ in range(10)]
    started = time.monotonic()
    first = tls_connect(keep.port(), keeps.tls)
    second = tls_connect(keep.port(), keeps.tls)
    assert time.monotonic() - started < 5  # the silent flood did not lock real clients out
    assert echo_round_trip(first, b"1") == b"1" and echo_round_trip(second, b"2") == b"2"
    third_sock = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    ctx = client_ctx(keeps.tls.certificate_pem)
    third_sock.settimeout(1.0)
    with pytest.raises(TimeoutError):  # the Keep is at its limit: not even a handshake
        ctx.wrap_socket(third_sock, server_hostname="localhost")
    third_sock.close()
    first.unwrap()
    first.close()
    with tls_connect(keep.port(), keeps.tls) as third:  # a slot is free again
        assert echo_round_trip(third, b"3") == b"3"
        third.unwrap()
    second.unwrap()
    second.close()
    for s in silent:
        s.close()
    assert keep.wait() == 0


# -- connect entries ------------------------------------------------------------------------


class TlsServer:
    """A one-connection TLS server in a thread: greets, then answers what it reads."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got = b""
        self.error: BaseException | None = None
        self._context = context
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with self._context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"greetings from the server\n")
                self.got = recv_until_eof(tls)
                tls.sendall(b"you said: " + self.got)
                tls.unwrap()
        except BaseException as e:
            self.error = e
        finally:
            self.sock.close()


def connect_config(port: int, anchors: str, host: str = "localhost") -> str:
    return (
        STDIO + f'[[files]]\nkind = "connect"\nname = "server"\nhost = "{host}"\nport = {port}\n'
        f"server_ca = '''\n{anchors}'''\n"
    )


def test_net_client_connects_out_and_polls_stdin_and_the_socket(keeps: Keeps) -> None:
    ca = TestCA()
    server = TlsServer(server_ctx(ca.issue("server")))
    stdio = CapturedStdio(stdin=b"line one\nline two\n")
    keep = keeps.start("net_client.wasm", connect_config(server.port, ca.pem), stdio=stdio)
    assert keep.wait() == 0
    server.thread.join(10)
    assert server.got == b"line one\nline two\n"
    assert stdio.stdout == b"greetings from the server\nyou said: line one\nline two\n"


@pytest.mark.parametrize(
    ("issuer", "names", "reason"),
    [
        ("other", ("localhost",), "unable to get local issuer certificate"),
        ("same", ("other.example",), "Hostname mismatch"),
    ],
)
def test_a_connect_to_a_server_with_the_wrong_certificate_fails_clearly(
    keeps: Keeps, issuer: str, names: tuple[str, ...], reason: str
) -> None:
    ca = TestCA()
    signer = ca if issuer == "same" else TestCA("impostor CA")
    server = TlsServer(server_ctx(signer.issue("server", dns=names, ips=())))
    keep = keeps.start("net_client.wasm", connect_config(server.port, ca.pem))
    with pytest.raises(PeerVerificationError) as info:
        keep.wait()
    message = str(info.value)
    assert message.startswith(f'files[3] "server": localhost:{server.port}: the server')
    assert reason in message and "the workload was not started" in message
    assert info.value.fd == 3 and info.value.exit_code == 125
    assert keep.stdio.stdout == b""  # type: ignore[union-attr]


def test_a_refused_connect_fails_clearly(keeps: Keeps) -> None:
    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    keep = keeps.start("net_client.wasm", connect_config(port, TestCA().pem))
    with pytest.raises(SocketSetupError, match=r"cannot connect: .*is the server running\?"):
        keep.wait()


# -- POSIX semantics through raw WASI calls --------------------------------------------------


class Reports:
    """The 4-byte results a script guest writes, as they come."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self._buffer = b""
        self._cond = threading.Condition()

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._buffer += data
            while len(self._buffer) >= 4:
                self.values.append(struct.unpack("<I", self._buffer[:4])[0])
                self._buffer = self._buffer[4:]
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 20) -> list[int]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.values) >= count, timeout)
            return self.values[:count]


def streaming(reports: Reports) -> StreamingStdio:
    return StreamingStdio(on_stdout=reports.feed, on_stderr=lambda b: None)


def call(name: str, *args: int) -> str:
    return f"(call ${name} " + " ".join(f"(i32.const {a})" for a in args) + ")"


NOUT, STAT, BUF_IOV, BUF, SUBS, EVENTS = SCRATCH, SCRATCH + 64, 1024, 1100, 2048, 3072


def test_nonblocking_accept_and_recv_say_eagain_then_poll_wakes(keeps: Keeps) -> None:
    steps = [
        call("fd_fdstat_set_flags", 3, 4),  # fcntl(3, F_SETFL, O_NONBLOCK)
        call("sock_accept", 3, 0, NOUT),  # nobody yet: EAGAIN (6)
        call("poll_oneoff", SUBS, EVENTS, 1, NOUT),  # wait for a client
        call("sock_accept", 3, 4, NOUT),  # accept4(SOCK_NONBLOCK)
        load_u32(NOUT),  # its fd: 4
        call("sock_recv", 4, BUF_IOV, 1, 0, NOUT, NOUT + 4),  # no data yet: EAGAIN
        call("poll_oneoff", SUBS + 48, EVENTS, 1, NOUT),  # wait for data
        call("sock_recv", 4, BUF_IOV, 1, 0, NOUT, NOUT + 4),
        load_u32(NOUT),  # 5 bytes
        call("fd_fdstat_get", 4, STAT),
        f"(i32.load16_u (i32.const {STAT + 2}))",  # fdflags: NONBLOCK
        f"(i32.load8_u (i32.const {STAT}))",  # filetype: SOCKET_STREAM (6)
        call("sock_send", 4, BUF_IOV, 1, 0, NOUT),
        call("sock_shutdown", 4, 2),
        call("fd_close", 4),
    ]
    data = {BUF_IOV: iovec(BUF, 5), SUBS: fd_sub(1, 3) + fd_sub(2, 4)}
    reports = Reports()
    keep = keeps.start(script(steps, data), STDIO + listen("tcp"), stdio=streaming(reports),
                       tls=False)  # fmt: skip
    assert reports.wait_for(2) == [0, 6]
    with socket.create_connection(("127.0.0.1", keep.port()), timeout=20) as conn:
        assert reports.wait_for(6)[2:] == [0, 0, 4, 6]
        conn.sendall(b"hello")
        assert recv_until_eof(conn) == b"hello"
    assert keep.wait() == 0
    assert reports.values == [0, 6, 0, 0, 4, 6, 0, 0, 5, 0, 4, 6, 0, 0, 0]


@pytest.mark.parametrize("prot", ["tcp", "tls"])
def test_a_blocking_accept_at_the_connection_limit_fails_with_emfile(
    keeps: Keeps, prot: str
) -> None:
    # Only the guest's own close can free the slot, so waiting would hang a one-thread server.
    steps = [
        call("sock_accept", 3, 0, NOUT),
        load_u32(NOUT),  # 4
        call("sock_accept", 3, 0, NOUT),  # EMFILE (33)
        call("fd_close", 4),
    ]
    keep = keeps.start(
        script(steps),
        STDIO + listen(prot),
        limits=SocketLimits(max_connections=1),
        tls=prot == "tls",
    )
    conn = socket.create_connection(("127.0.0.1", keep.port()), timeout=20)
    if prot == "tls":
        conn = client_ctx(keeps.tls.certificate_pem).wrap_socket(conn, server_hostname="localhost")
    with conn:
        assert keep.wait() == 0
    assert results(keep.stdio.stdout) == [0, 4, 33, 0]  # type: ignore[union-attr]


def test_fd_reuse_after_close_and_badf_for_unknown_fds(keeps: Keeps, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"file")
    rights = "(i64.const 0x200026)"
    open_f = f"(call $path_open (i32.const 4) (i32.const 0) (i32.const {BUF}) (i32.const 5) (i32.const 0) {rights} (i64.const 0) (i32.const 0) (i32.const {NOUT}))"  # noqa: E501
    steps = [
        call("sock_accept", 3, 0, NOUT),
        load_u32(NOUT),  # 5: after the listener (3) and the directory (4)
        call("fd_close", 5),
        call("sock_recv", 5, BUF_IOV, 1, 0, NOUT, NOUT + 4),  # closed: BADF
        call("sock_send", 42, BUF_IOV, 1, 0, NOUT),
        call("sock_accept", 42, 0, NOUT),
        call("sock_shutdown", 42, 2),
        call("poll_oneoff", SUBS, EVENTS, 2, NOUT),  # listener + unknown fd: BADF
        open_f,
        load_u32(NOUT),  # 5 again: the lowest free fd
        call("fd_read", 5, BUF_IOV, 1, NOUT),
        load_u32(NOUT),  # 4 bytes from the file, not from a socket
        call("sock_recv", 5, BUF_IOV, 1, 0, NOUT, NOUT + 4),  # a file: not a socket (NOTSOCK)
    ]
    data = {BUF: b"f.txt", BUF_IOV: iovec(BUF + 64, 16), SUBS: fd_sub(1, 3) + fd_sub(2, 42)}
    config = STDIO + listen("tcp") + f'[[dirs]]\nhost = "{tmp_path}"\nguest = "/d"\n'
    keep = keeps.start(script(steps, data), config, tls=False)
    with socket.create_connection(("127.0.0.1", keep.port()), timeout=20):
        assert keep.wait() == 0
    assert results(keep.stdio.stdout) == [0, 5, 0, 8, 8, 8, 8, 8, 0, 5, 0, 4, 57]  # type: ignore[union-attr]


def test_preopen_scan_continues_past_a_socket_at_fd3(keeps: Keeps, tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_bytes(b"found past the socket\n")
    config = STDIO + listen("tcp") + f'[[dirs]]\nhost = "{tmp_path}"\nguest = "/data"\n'
    keep = keeps.start("readfile.wasm", config, args=("/data/note.txt",), tls=False)
    assert keep.wait() == 0
    assert keep.stdio.stdout == b"found past the socket\n"  # type: ignore[union-attr]


def test_files_stdio_and_sockets_together(keeps: Keeps, tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_bytes(b"file")
    config = (
        STDIO + listen() + '[[files]]\nkind = "null"\nname = "blackhole"\n'
        f'[[dirs]]\nhost = "{tmp_path}"\nguest = "/data"\n'
    )
    invocation = Invocation.from_config(parse_config(config), program="x")
    assert invocation.preopen_base == 5
    keep = keeps.start("echo_server.wasm", config, args=("-c", "1"))
    with tls_connect(keep.port(), keeps.tls) as conn:
        assert echo_round_trip(conn, b"together") == b"together"
        conn.unwrap()
    assert keep.wait() == 0
    keep = keeps.start("readfile.wasm", config, args=("/data/note.txt",))
    assert keep.wait() == 0 and keep.stdio.stdout == b"file"  # type: ignore[union-attr]


# -- stopping ----------------------------------------------------------------------------------


def test_the_deadline_stops_a_workload_blocked_in_accept(keeps: Keeps) -> None:
    config = STDIO + listen() + "[limits]\ntimeout_s = 0.5\n"
    started = time.monotonic()
    keep = keeps.start("echo_server.wasm", config)
    with pytest.raises(DeadlineError, match="during a socket call") as info:
        keep.wait()
    assert 0.45 < time.monotonic() - started < 5
    assert info.value.exit_code == 137


def test_a_stop_signal_ends_a_server(keeps: Keeps) -> None:
    keep = keeps.start("http_server.wasm", STDIO + listen())
    with tls_connect(keep.port(), keeps.tls) as conn:
        assert Http(conn).get() == OK
        started = time.monotonic()
        keep.stop.set()
        with pytest.raises(RunStoppedError, match="stopped by its caller"):
            keep.wait()
        assert time.monotonic() - started < 2
        assert recv_until_eof(conn) == b""  # the Keep closed its connections


def test_a_stop_signal_ends_a_workload_spinning_on_non_blocking_calls(keeps: Keeps) -> None:
    spin = (
        "(block (result i32) (drop (call $fd_fdstat_set_flags (i32.const 3) (i32.const 4)))"
        f" (loop $again (br_if $again (i32.eq {call('sock_accept', 3, 0, NOUT)}"
        " (i32.const 6)))) (i32.const 0))"
    )
    keep = keeps.start(script([spin]), STDIO + listen("tcp"), tls=False)
    time.sleep(0.2)
    keep.stop.set()
    with pytest.raises(RunStoppedError):
        keep.wait(10)


def test_tls_without_an_identity_is_refused_before_anything_listens(keeps: Keeps) -> None:
    from donjon.keep.errors import UnsupportedConfigError

    keep = keeps.start("echo_server.wasm", STDIO + listen(), tls=False, wait_listening=False)
    with pytest.raises(UnsupportedConfigError, match="no TLS identity"):
        keep.wait()


# -- what the host sees ------------------------------------------------------------------------


class RecordingProxy:
    """A TCP relay on 127.0.0.1 that keeps every byte it forwards (the untrusted host)."""

    def __init__(self, target_port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream = bytearray()  # client → Keep
        self.downstream = bytearray()  # Keep → client
        self._target = target_port
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self._target))
        pairs = {client: (server, self.upstream), server: (client, self.downstream)}
        open_ = {client, server}
        while open_:
            readable, _, _ = select.select(list(open_), [], [], 20)
            if not readable:
                break
            for sock in readable:
                other, record = pairs[sock]
                data = sock.recv(65536)
                if not data:
                    open_.discard(sock)
                    try:
                        other.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                record += data
                other.sendall(data)
        client.close()
        server.close()
        self.listener.close()


def test_the_host_relays_only_ciphertext(keeps: Keeps) -> None:
    keep = keeps.start("echo_server.wasm", STDIO + listen(), args=("-c", "1"))
    proxy = RecordingProxy(keep.port())
    secret = b"TOP-SECRET: the launch code is 0000 "
    with tls_connect(proxy.port, keeps.tls) as conn:
        assert echo_round_trip(conn, secret * 500) == secret * 500
        conn.unwrap()
    assert keep.wait() == 0
    proxy.thread.join(10)
    assert len(proxy.upstream) > len(secret) * 500 and len(proxy.downstream) > len(secret) * 500
    for recorded in (bytes(proxy.upstream), bytes(proxy.downstream)):
        assert b"TOP-SECRET" not in recorded and b"launch code" not in recorded
        assert b"\x17\x03\x03" in recorded  # TLS 1.3 application-data records


# -- donjon run ------------------------------------------------------------------------------


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "DONJON_CACHE_DIR": str(tmp_path / "cache")}


def test_donjon_run_serves_tls_and_prints_the_fingerprint_to_pin(
    examples_dir: Path, tmp_path: Path, run_env: dict[str, str]
) -> None:
    config = tmp_path / "Enarx.toml"
    config.write_text(STDIO + listen())
    proc = subprocess.Popen(
        [DONJON, "run", "--backend", "nil", "--wasmcfgfile", config,
         examples_dir / "echo_server.wasm", "--", "-c", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env,
    )  # fmt: skip
    try:
        seen = read_stderr_until(proc, rb"listening on 127\.0\.0\.1:(\d+) \(TLS 1\.3\)", 60)
        port = int(re.search(rb"listening on 127\.0\.0\.1:(\d+)", seen).group(1))  # type: ignore[union-attr]
        pinned = re.search(rb"SHA-256 ([0-9A-F:]{95})", seen)
        assert pinned is not None, seen
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # pinned below instead
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20)) as conn:
            der = conn.getpeercert(binary_form=True)
            assert der is not None
            assert hashlib.sha256(der).hexdigest().upper() == pinned.group(1).decode().replace(
                ":", ""
            )
            assert echo_round_trip(conn, b"pinned") == b"pinned"
            conn.unwrap()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (seen + err).decode()
    assert out == b"echo_server: served 1 connections, 6 bytes\n"


def test_donjon_run_net_client_wakes_on_a_stdin_pipe(
    examples_dir: Path, tmp_path: Path, run_env: dict[str, str]
) -> None:
    ca = TestCA()
    server = TlsServer(server_ctx(ca.issue("server")))
    config = tmp_path / "Enarx.toml"
    config.write_text(connect_config(server.port, ca.pem))
    proc = subprocess.Popen(
        [DONJON, "run", "--backend", "nil", "--wasmcfgfile", config,
         examples_dir / "net_client.wasm"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdin is not None
        greeting = b""
        while not greeting.endswith(b"server\n"):  # the client now waits in poll(stdin, socket)
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk
            greeting += chunk
        time.sleep(0.2)
        # then its input, and end of input: the client half-closes
        out, err = proc.communicate(input=b"ping\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert greeting + out == b"greetings from the server\nyou said: ping\n"
    server.thread.join(10)
    assert server.got == b"ping\n"
