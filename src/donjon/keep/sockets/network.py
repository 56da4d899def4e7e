"""Setting up a workload's ``[[files]]`` sockets before it starts, and the options for it.

``listen`` entries are bound and listening (TLS ones get a :class:`TlsAcceptor` thread) and
``connect`` entries are connected, with their TLS handshake done and the server verified, all
before ``_start``: WASI preview 1 has no ``sock_connect``, so, as in Enarx, the Keep connects.
A failure here stops the run before the workload starts, with a message that names the entry.

Rule 1: nothing here reads the clock for validity decisions or the environment; the caller
passes everything in :class:`NetworkOptions`.
Rule 2: everything opened is closed by :meth:`OpenNetwork.close`, also when setup fails halfway.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from donjon.keep.config import FileKind, FileSpec, Protocol
from donjon.keep.errors import UnsupportedConfigError
from donjon.keep.sockets.acceptor import AcceptorLimits, TlsAcceptor
from donjon.keep.sockets.errors import PeerVerificationError, SocketSetupError
from donjon.keep.sockets.streams import (
    Endpoint,
    NullEndpoint,
    TcpListener,
    TcpStream,
    TlsStream,
    prepare_socket,
)

if TYPE_CHECKING:
    from donjon.keep.sockets.tls import KeepTls  # loads cryptography: only when TLS is used

__all__ = [
    "CONNECT_TIMEOUT_S",
    "HANDSHAKE_TIMEOUT_S",
    "LISTEN_BACKLOG",
    "MAX_CONNECTIONS_PER_LISTENER",
    "MAX_PENDING_HANDSHAKES",
    "SEND_STALL_TIMEOUT_S",
    "SOCKET_BUFFER_BYTES",
    "ListenerInfo",
    "NetworkOptions",
    "OpenNetwork",
    "SocketLimits",
    "StopSignal",
    "open_network",
]

_logger = logging.getLogger(__name__)

MAX_CONNECTIONS_PER_LISTENER = 256
"""Connections one listener has open at once (in handshake, queued, or held by the workload);
more peers wait in the kernel's backlog. Bounds the Keep's memory and fds per listener."""
MAX_PENDING_HANDSHAKES = 64
"""TLS handshakes in progress per listener; a new connection beyond this evicts the oldest."""
HANDSHAKE_TIMEOUT_S = 10.0
"""Seconds a peer has to complete its TLS handshake (slowloris bound)."""
CONNECT_TIMEOUT_S = 10.0
"""Seconds a ``connect`` entry has to connect and complete its TLS handshake."""
SEND_STALL_TIMEOUT_S = 60.0
"""Seconds a blocking send may make no progress (a peer that never reads) before it fails with
ETIMEDOUT, as with ``SO_SNDTIMEO``; non-blocking sends just see EAGAIN."""
SOCKET_BUFFER_BYTES = 256 * 1024
"""SO_SNDBUF and SO_RCVBUF of each connection (bytes; Linux doubles it for bookkeeping):
bounded, rather than autotuned up to several MiB per connection."""
LISTEN_BACKLOG = 128
"""The kernel's queue of connections not yet accepted, per listener."""


@dataclass(frozen=True, slots=True)
class SocketLimits:
    """The bounds that keep a slow or hostile peer from exhausting a Keep (see the constants).

    Raises:
        ValueError: a limit that is not positive.
    """

    max_connections: int = MAX_CONNECTIONS_PER_LISTENER
    max_pending_handshakes: int = MAX_PENDING_HANDSHAKES
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    send_stall_timeout_s: float = SEND_STALL_TIMEOUT_S
    buffer_bytes: int | None = SOCKET_BUFFER_BYTES

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_pending_handshakes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("handshake_timeout_s", "connect_timeout_s", "send_stall_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds")
        if self.buffer_bytes is not None and self.buffer_bytes < 4096:
            raise ValueError("buffer_bytes must be at least 4096 (or None)")


@dataclass(frozen=True, slots=True)
class ListenerInfo:
    """Where a ``listen`` entry ended up (its port is the system's choice for ``port = 0``).

    Attributes:
        fd: the entry's fd number.
        name: its name in ``FD_NAMES``.
        prot: TLS or plaintext TCP.
        address: the bound IP address.
        port: the bound port.
    """

    fd: int
    name: str
    prot: Protocol
    address: str
    port: int


class StopSignal:
    """Stops runs blocked in socket calls: :meth:`set` makes each run that holds this signal end
    at its next socket call (or at once, if it is waiting) with ``RunStoppedError``.

    Thread-safe; one signal may serve many runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._wakers: list[Callable[[], None]] = []

    def set(self) -> None:
        with self._lock:
            self._set = True
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def is_set(self) -> bool:
        return self._set

    def _subscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakers.append(wake)
            already = self._set
        if already:
            wake()

    def _unsubscribe(self, wake: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._wakers.remove(wake)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkOptions:
    """How a run's sockets are provided.

    Attributes:
        tls: the Keep's TLS identity; required when the config has a ``prot = "tls"`` socket.
        limits: bounds per listener and per connection.
        stop: ends the run when set (for servers that never exit on their own).
        on_listen: told where each ``listen`` entry is bound, before the workload starts.
        on_notice: gets one-line notices meant for the person running the Keep (where each
            listener is, plaintext warnings); default: this module's logger, at WARNING.
    """

    tls: KeepTls | None = None
    limits: SocketLimits = field(default_factory=SocketLimits)
    stop: StopSignal | None = None
    on_listen: Callable[[ListenerInfo], object] | None = None
    on_notice: Callable[[str], object] | None = None


class OpenNetwork:
    """The endpoints of one run's Python-served fds, open and ready for the workload."""

    def __init__(self) -> None:
        self.endpoints: dict[int, Endpoint] = {}
        self.acceptors: list[TlsAcceptor] = []
        self.listeners: list[ListenerInfo] = []

    def close(self) -> None:
        """Close every endpoint still open and stop the acceptor threads. Idempotent."""
        endpoints = list(self.endpoints.values())
        self.endpoints.clear()
        for endpoint in endpoints:
            with contextlib.suppress(OSError):
                endpoint.close()
        for acceptor in self.acceptors:
            acceptor.stop()
        self.acceptors.clear()


def label(fd: int, spec: FileSpec) -> str:
    """How messages name a ``[[files]]`` entry: ``files[3] "api"``."""
    return f'files[{fd}] "{spec.name}"'


def open_network(
    files: Sequence[tuple[int, FileSpec]], options: NetworkOptions, *, source: str
) -> OpenNetwork:
    """Open the Python-served fds (``null``, ``listen``, ``connect``) of a run.

    Args:
        files: the ``(fd, spec)`` pairs to open.
        options: TLS identity, limits and notice sinks.
        source: the config's name, for messages.

    Returns:
        The open endpoints, by guest fd.

    Raises:
        UnsupportedConfigError: a TLS socket but no ``options.tls``.
        SocketSetupError: a listener could not be bound or a connection made.
        PeerVerificationError: a TLS server's certificate was refused.
    """
    notice = options.on_notice or _logger.warning
    tls_needed = [(fd, s) for fd, s in files if s.is_socket and s.prot is Protocol.TLS]
    if tls_needed and options.tls is None:
        fd, spec = tls_needed[0]
        raise UnsupportedConfigError(
            f"{source}: {label(fd, spec)} uses TLS, but this Keep was given no TLS identity to "
            "present; pass NetworkOptions(tls=...) (donjon run makes an ephemeral one)"
        )
    plaintext = [label(fd, s) for fd, s in files if s.is_socket and s.prot is Protocol.TCP]
    if plaintext:
        notice(
            f"plaintext TCP on {', '.join(plaintext)}: the host can read and change every byte "
            'of these connections; use prot = "tls" for anything that matters'
        )
    network = OpenNetwork()
    try:
        for fd, spec in files:
            if spec.kind is FileKind.NULL:
                network.endpoints[fd] = NullEndpoint()
            elif spec.kind is FileKind.LISTEN:
                _listen(network, fd, spec, options, notice)
            elif spec.kind is FileKind.CONNECT:
                network.endpoints[fd] = _connect(fd, spec, options)
        for acceptor in network.acceptors:
            acceptor.start()
    except BaseException:
        network.close()
        raise
    if options.on_listen is not None:
        for info in network.listeners:
            options.on_listen(info)
    return network


def _listen(
    network: OpenNetwork,
    fd: int,
    spec: FileSpec,
    options: NetworkOptions,
    notice: Callable[[str], object],
) -> None:
    addr = spec.addr or "::"
    port = spec.port if spec.port is not None else 443
    family = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
    try:
        sock = socket.create_server(
            (addr, port),
            family=family,
            backlog=LISTEN_BACKLOG,
            dualstack_ipv6=addr == "::" and socket.has_dualstack_ipv6(),
        )
    except OSError as e:
        raise SocketSetupError(
            f"{label(fd, spec)}: cannot listen on {_endpoint(addr, port)}: {_bind_hint(e)}",
            fd=fd,
            name=spec.name,
        ) from e
    bound_addr, bound_port = sock.getsockname()[:2]
    limits = options.limits
    # The entry's own limit (its config's max_connections) wins over the run's.
    max_connections = (
        spec.max_connections if spec.max_connections is not None else limits.max_connections
    )
    try:
        if spec.prot is Protocol.TLS and options.tls is not None:
            context = options.tls.server_context(client_ca=spec.client_ca)
            acceptor = TlsAcceptor(
                sock,
                context,
                AcceptorLimits(
                    max_connections=max_connections,
                    max_pending=limits.max_pending_handshakes,
                    handshake_timeout_s=limits.handshake_timeout_s,
                    buffer_bytes=limits.buffer_bytes,
                ),
                label(fd, spec),
            )
            network.acceptors.append(acceptor)
            network.endpoints[fd] = acceptor.queue
            how = "TLS 1.3" + (", client certificates required" if spec.client_ca else "")
        else:
            sock.setblocking(False)
            network.endpoints[fd] = TcpListener(
                sock, max_connections=max_connections, buffer_bytes=limits.buffer_bytes
            )
            how = "plaintext TCP"
    except BaseException:
        sock.close()
        raise
    prot = spec.prot or Protocol.TLS
    network.listeners.append(ListenerInfo(fd, spec.name, prot, bound_addr, bound_port))
    notice(f"{label(fd, spec)}: listening on {_endpoint(bound_addr, bound_port)} ({how})")


def _bind_hint(error: OSError) -> str:
    import errno

    if error.errno == errno.EADDRINUSE:
        return "the address is already in use; stop what uses it or choose another port"
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges); choose a port >= 1024"
    if error.errno == errno.EADDRNOTAVAIL:
        return 'this host has no such address; use e.g. addr = "::" or "127.0.0.1"'
    return error.strerror or str(error)


def _connect(fd: int, spec: FileSpec, options: NetworkOptions) -> Endpoint:
    host = spec.host or ""
    port = spec.port if spec.port is not None else 443
    # Enarx maps localhost to 127.0.0.1; other names are resolved by the host's resolver,
    # which is untrusted like the network: TLS verification is what makes that safe.
    target = "127.0.0.1" if host == "localhost" else host
    timeout = options.limits.connect_timeout_s
    where = f"{label(fd, spec)}: {_endpoint(host, port)}"
    try:
        sock = socket.create_connection((target, port), timeout=timeout)
    except TimeoutError as e:
        raise SocketSetupError(
            f"{where}: no connection within {timeout:g} s; is the server reachable?",
            fd=fd,
            name=spec.name,
        ) from e
    except socket.gaierror as e:
        raise SocketSetupError(
            f"{where}: the name does not resolve ({e.strerror})", fd=fd, name=spec.name
        ) from e
    except OSError as e:
        raise SocketSetupError(
            f"{where}: cannot connect: {e.strerror or e}; is the server running?",
            fd=fd,
            name=spec.name,
        ) from e
    try:
        prepare_socket(sock, options.limits.buffer_bytes)
        if spec.prot is Protocol.TCP:
            _logger.info("%s: connected (plaintext TCP)", where)
            return TcpStream(sock)
        if options.tls is None:  # checked by open_network; a wiring bug otherwise
            raise UnsupportedConfigError(f"{where}: TLS needs NetworkOptions(tls=...)")
        context = options.tls.client_context(server_ca=spec.server_ca)
        stream = _client_handshake(sock, context, host, time.monotonic() + timeout)
    except ssl.SSLCertVerificationError as e:
        sock.close()
        anchors = "its server_ca" if spec.server_ca else "the default trust anchors"
        raise PeerVerificationError(
            f"{where}: the server's certificate was refused ({e.verify_message}): it must chain "
            f"to {anchors} and name {host!r}; the workload was not started",
            fd=fd,
            name=spec.name,
        ) from e
    except (ssl.SSLError, OSError) as e:
        sock.close()
        raise SocketSetupError(
            f"{where}: the TLS handshake failed: {e}", fd=fd, name=spec.name
        ) from e
    except BaseException:
        sock.close()
        raise
    _logger.info("%s: connected (TLS 1.3, server verified)", where)
    return stream


def _client_handshake(
    sock: socket.socket, context: ssl.SSLContext, host: str, deadline: float
) -> TlsStream:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=host)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        if outgoing.pending:
            data = outgoing.read()
            sock.setblocking(True)
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                sock.sendall(data)
            finally:
                sock.setblocking(False)
        if done:
            return TlsStream(sock, tls, incoming, outgoing)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise TimeoutError("the TLS handshake did not finish in time")
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("the server closed the connection during the handshake")
        incoming.write(data)


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wake_fd() -> int:
    """A non-blocking eventfd (for waking a run's waits)."""
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
