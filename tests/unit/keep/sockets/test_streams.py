"""Streams and the TLS acceptor on real sockets and real TLS, without a network: socketpairs
and AF_UNIX listeners (the code is the same for TCP)."""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from donjon.keep.sockets.abi import SDFLAGS_RD, SDFLAGS_WR, Errno
from donjon.keep.sockets.acceptor import AcceptorLimits, TlsAcceptor
from donjon.keep.sockets.streams import (
    TLS_WRITE_CHUNK_BYTES,
    NullEndpoint,
    QueueListener,
    TcpStream,
    TlsStream,
)
from donjon.keep.sockets.tls import IdentityTls
from tests.unit.keep.sockets._pki import Issued, TestCA, client_ctx

AGAIN = -Errno.AGAIN


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def server_cert(ca: TestCA) -> Issued:
    return ca.issue("keep")


def server_context(server_cert: Issued, client_ca: str | None = None) -> ssl.SSLContext:
    return IdentityTls(server_cert.key_pem, server_cert.cert_pem).server_context(
        client_ca=client_ca
    )


def tls_pair(server_ctx: ssl.SSLContext, client: ssl.SSLContext) -> tuple[TlsStream, TlsStream]:
    """A server and a client TlsStream over a socketpair, handshaken in this thread."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    sides = []
    for sock, ctx, server in ((a, server_ctx, True), (b, client, False)):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(
            incoming, outgoing, server_side=server, server_hostname=None if server else "localhost"
        )
        sides.append((sock, obj, incoming, outgoing))
    done = [False, False]
    for _ in range(100):
        for i, (sock, obj, incoming, outgoing) in enumerate(sides):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            if outgoing.pending:
                sock.sendall(outgoing.read())
            try:
                incoming.write(sock.recv(65536))
            except BlockingIOError:
                pass
        if all(done):
            break
    assert all(done)
    return TlsStream(*sides[0]), TlsStream(*sides[1])


def views(data: bytes | bytearray) -> list[memoryview]:
    return [memoryview(bytearray(data))]


def wait(stream: TlsStream | TcpStream, write: bool = False, timeout: float = 5.0) -> None:
    if stream.ready(write):
        return
    target = stream.wait_on(write)
    assert target is not None
    poller = select.poll()
    poller.register(*target)
    poller.poll(timeout * 1000)


def recv_exactly(stream: TlsStream | TcpStream, size: int) -> bytes:
    out = bytearray()
    buf = memoryview(bytearray(65536))
    while len(out) < size:
        n = stream.recv([buf], False)
        if n == AGAIN:
            wait(stream)
            continue
        assert n > 0, n
        out += buf[:n]
    return bytes(out)


def recv_eof(stream: TlsStream | TcpStream) -> bytes:
    out = bytearray()
    buf = memoryview(bytearray(65536))
    while True:
        n = stream.recv([buf], False)
        if n == AGAIN:
            wait(stream)
            continue
        assert n >= 0, n
        if n == 0:
            return bytes(out)
        out += buf[:n]


def send_all(stream: TlsStream | TcpStream, data: bytes, peer: TlsStream | TcpStream) -> bytes:
    """Send ``data`` while draining ``peer``; returns what the peer received."""
    got = bytearray()
    view = memoryview(data)
    buf = memoryview(bytearray(65536))
    while view:
        n = stream.send([view])
        if n > 0:
            view = view[n:]
        else:
            assert n == AGAIN
        while True:
            m = peer.recv([buf], False)
            if m <= 0:
                break
            got += buf[:m]
    return bytes(got)


def test_tls_carries_a_large_stream_exactly(ca: TestCA, server_cert: Issued) -> None:
    server, client = tls_pair(server_context(server_cert), client_ctx(ca.pem))
    data = os.urandom(3 * 1024 * 1024 + 17)
    got = send_all(client, data, server)
    got += recv_exactly(server, len(data) - len(got))
    assert got == data
    reply = b"reply" * 1000
    assert send_all(server, reply, client) + recv_exactly(client, 0) in (reply, b"")
    server.close()
    client.close()


def test_half_close_keeps_what_the_peer_already_sent(ca: TestCA, server_cert: Issued) -> None:
    # SSLSocket.unwrap() would throw these bytes away (APPLICATION_DATA_AFTER_CLOSE_NOTIFY).
    server, client = tls_pair(server_context(server_cert), client_ctx(ca.pem))
    assert client.send(views(b"A" * 100)) == 100
    time.sleep(0.05)
    assert server.send(views(b"bye")) == 3
    assert server.shutdown(SDFLAGS_WR) == 0  # close_notify, with the A's in flight
    assert recv_exactly(server, 100) == b"A" * 100
    assert recv_eof(client) == b"bye"  # the server's close_notify
    assert client.send(views(b"B" * 50)) == 50  # the other direction is still open
    assert recv_exactly(server, 50) == b"B" * 50
    assert server.send(views(b"late")) == -Errno.PIPE
    assert client.shutdown(SDFLAGS_WR) == 0
    assert recv_eof(server) == b""
    server.close()
    client.close()


def test_close_notify_found_by_a_readiness_check_is_end_of_file(
    ca: TestCA, server_cert: Issued
) -> None:
    # Regression: poll() decrypts ahead; CPython's read returns nothing (no exception) for a
    # close_notify, and that must still end the stream for the next recv.
    server, client = tls_pair(server_context(server_cert), client_ctx(ca.pem))
    assert client.send(views(b"data")) == 4
    assert client.shutdown(SDFLAGS_WR) == 0  # data and close_notify in one flight
    time.sleep(0.05)
    assert recv_exactly(server, 4) == b"data"
    assert server.ready(False)  # the readiness check reads the close_notify...
    assert server.recv([memoryview(bytearray(10))], False) == 0  # ...and recv says EOF
    assert server.send(views(b"reply")) == 5  # our direction is still open
    server.shutdown(SDFLAGS_WR)
    assert recv_eof(client) == b"reply"
    server.close()
    client.close()


def test_a_tcp_fin_without_close_notify_is_end_of_file(ca: TestCA, server_cert: Issued) -> None:
    server, client = tls_pair(server_context(server_cert), client_ctx(ca.pem))
    assert client.send(views(b"last words")) == 10
    client.sock.close()  # a peer that vanishes without close_notify
    assert recv_eof(server) == b"last words"
    server.close()


def test_peek_does_not_consume(ca: TestCA, server_cert: Issued) -> None:
    server, client = tls_pair(server_context(server_cert), client_ctx(ca.pem))
    client.send(views(b"peekaboo"))
    buf = memoryview(bytearray(4))
    wait(server)
    assert server.recv([buf], True) == 4 and bytes(buf) == b"peek"
    assert recv_exactly(server, 8) == b"peekaboo"
    a, b = socket.socketpair()
    a.setblocking(False)
    tcp = TcpStream(a)
    b.sendall(b"plain")
    wait(tcp)
    assert tcp.recv([buf], True) == 4 and bytes(buf) == b"plai"
    assert recv_exactly(tcp, 5) == b"plain"
    server.close()
    client.close()
    tcp.close()
    b.close()


def test_a_peer_that_never_reads_costs_a_bounded_backlog(ca: TestCA, server_cert: Issued) -> None:
    server, client = tls_pair(server_context(server_cert), client_ctx(ca.pem))
    server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    chunk = memoryview(os.urandom(TLS_WRITE_CHUNK_BYTES))
    accepted = 0
    for _ in range(1000):
        n = server.send([chunk])
        if n == AGAIN:
            break
        accepted += n
    assert server.send([chunk]) == AGAIN  # stays blocked: nothing more is taken in
    assert server.pending_output()
    backlog = len(server._backlog) + server._out.pending
    assert backlog <= TLS_WRITE_CHUNK_BYTES + 4 * 1024  # one chunk of ciphertext at most
    assert accepted < 16 * 1024 * 1024
    assert not server.ready(True)
    client.close()
    server.close()


def test_tcp_stream_scatters_gathers_and_half_closes() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    left, right = TcpStream(a), TcpStream(b)
    assert left.send([memoryview(b"ab"), memoryview(b"cd")]) == 4
    bufs = [memoryview(bytearray(1)), memoryview(bytearray(10))]
    wait(right)
    assert right.recv(bufs, False) == 4
    assert bytes(bufs[0]) + bytes(bufs[1][:3]) == b"abcd"
    assert right.recv(bufs, False) == AGAIN
    assert left.shutdown(SDFLAGS_WR) == 0
    assert recv_eof(right) == b""
    assert right.send([memoryview(b"still")]) == 5
    assert recv_exactly(left, 5) == b"still"
    assert left.shutdown(SDFLAGS_RD) == 0
    left.close()
    assert right.send([memoryview(b"x" * 100000)]) in (-Errno.PIPE, -Errno.CONNRESET, 100000)
    right.close()


def test_null_endpoint() -> None:
    null = NullEndpoint()
    assert null.recv([memoryview(bytearray(5))], False) == 0
    assert null.send([memoryview(b"abc"), memoryview(b"de")]) == 5
    assert null.ready(True) and null.ready(False) and null.wait_on(False) is None
    assert null.shutdown(SDFLAGS_WR) == -Errno.NOTSOCK


# -- the acceptor --------------------------------------------------------------------------


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "l.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(64)
    yield sock, path
    sock.close()


def start_acceptor(
    listener: socket.socket, context: ssl.SSLContext, **limits: float
) -> TlsAcceptor:
    acceptor = TlsAcceptor(
        listener,
        context,
        AcceptorLimits(
            max_connections=int(limits.get("max_connections", 8)),
            max_pending=int(limits.get("max_pending", 8)),
            handshake_timeout_s=limits.get("handshake_timeout_s", 5.0),
            buffer_bytes=None,
        ),
        'files[3] "test"',
    )
    acceptor.start()
    return acceptor


def tls_client(path: str, ctx: ssl.SSLContext, timeout: float = 5.0) -> ssl.SSLSocket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return ctx.wrap_socket(sock, server_hostname="localhost")


def pop(queue: QueueListener, timeout: float = 5.0) -> TlsStream:
    target = queue.wait_on(False)
    assert target is not None
    poller = select.poll()
    poller.register(*target)
    assert poller.poll(timeout * 1000), "no connection was queued"
    stream = queue.accept()
    assert isinstance(stream, TlsStream)
    return stream


def test_acceptor_handshakes_and_queues_connections(
    unix_listener: tuple[socket.socket, str], ca: TestCA, server_cert: Issued
) -> None:
    listener, path = unix_listener
    acceptor = start_acceptor(listener, server_context(server_cert))
    queue = acceptor.queue
    assert queue.accept() == AGAIN and not queue.ready(False)
    client = tls_client(path, client_ctx(ca.pem))
    client.sendall(b"early data")  # arrives with the handshake's last flight
    stream = pop(queue)
    assert recv_exactly(stream, 10) == b"early data"
    stream.send(views(b"pong"))
    assert client.recv(10) == b"pong"
    stream.close()
    client.close()
    queue.close()
    assert acceptor.stats.accepted == 1


def test_a_silent_peer_is_dropped_at_the_handshake_deadline(
    unix_listener: tuple[socket.socket, str], ca: TestCA, server_cert: Issued
) -> None:
    listener, path = unix_listener
    acceptor = start_acceptor(listener, server_context(server_cert), handshake_timeout_s=0.3)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.settimeout(5)
    silent.connect(path)
    started = time.monotonic()
    assert silent.recv(10) == b""  # dropped, not held
    assert 0.2 < time.monotonic() - started < 3
    assert acceptor.stats.handshakes_timed_out == 1
    client = tls_client(path, client_ctx(ca.pem))  # a real client is still served
    pop(acceptor.queue).close()
    client.close()
    silent.close()
    acceptor.queue.close()


def test_a_flood_of_silent_peers_evicts_the_oldest(
    unix_listener: tuple[socket.socket, str], ca: TestCA, server_cert: Issued
) -> None:
    listener, path = unix_listener
    acceptor = start_acceptor(listener, server_context(server_cert), max_pending=2)
    silent = []
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
        silent.append(s)
    assert silent[0].recv(10) == b""  # the oldest made room
    client = tls_client(path, client_ctx(ca.pem))  # evicts the next oldest, then completes
    pop(acceptor.queue).close()
    assert acceptor.stats.evicted >= 2
    for s in silent:
        s.close()
    client.close()
    acceptor.queue.close()


def test_connections_beyond_the_limit_wait_in_the_backlog(
    unix_listener: tuple[socket.socket, str], ca: TestCA, server_cert: Issued
) -> None:
    listener, path = unix_listener
    acceptor = start_acceptor(listener, server_context(server_cert), max_connections=1)
    first = tls_client(path, client_ctx(ca.pem))
    held = pop(acceptor.queue)
    result: dict[str, object] = {}

    def second_client() -> None:
        try:
            result["client"] = tls_client(path, client_ctx(ca.pem), timeout=10)
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=second_client)
    thread.start()
    time.sleep(0.4)
    assert "client" not in result  # not even handshaken while the first is held
    held.close()  # frees the slot
    second = pop(acceptor.queue)
    thread.join()
    assert "client" in result
    second.close()
    first.close()
    client = result["client"]
    assert isinstance(client, ssl.SSLSocket)
    client.close()
    acceptor.queue.close()


def test_mutual_tls_refuses_clients_without_a_trusted_certificate(
    unix_listener: tuple[socket.socket, str], ca: TestCA, server_cert: Issued
) -> None:
    listener, path = unix_listener
    clients_ca = TestCA("clients")
    context = server_context(server_cert, client_ca=clients_ca.pem)
    acceptor = start_acceptor(listener, context)
    for cert in (None, TestCA("stranger").issue("mallory", client=True)):
        client = tls_client(path, client_ctx(ca.pem, cert=cert))
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            client.sendall(b"hello")
            client.recv(10)  # TLS 1.3: the server's alert arrives after the client's Finished
        client.close()
    good = tls_client(path, client_ctx(ca.pem, cert=clients_ca.issue("alice", client=True)))
    stream = pop(acceptor.queue)
    good.sendall(b"hi")
    assert recv_exactly(stream, 2) == b"hi"
    assert acceptor.stats.handshakes_failed == 2 and acceptor.stats.accepted == 1
    stream.close()
    good.close()
    acceptor.queue.close()
