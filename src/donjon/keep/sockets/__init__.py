"""Sockets in the Keep: ``[[files]]`` ``listen`` and ``connect`` entries as ordinary POSIX fds,
with TLS 1.3 terminated inside the Keep.

A workload opens no sockets itself (WASI preview 1 cannot); its config hands it listening and
connected sockets by fd number, as in Enarx, and with ``prot = "tls"`` every byte the host
relays is ciphertext: the workload reads and writes plaintext through its fd. An unmodified C
program uses ``accept``, ``recv``/``send``, ``read``/``write``, ``poll``, ``shutdown``,
``close`` and ``fcntl(O_NONBLOCK)``.

How (``docs/sockets.md``): a generated Wasm dispatcher owns the workload's fd numbering and keeps
files and stdio inside wasmtime; only socket and ``null`` fds reach Python, through raw wasmtime
callbacks (:mod:`~donjon.keep.sockets.host`). TLS handshakes run on an acceptor thread per
listener (:mod:`~donjon.keep.sockets.acceptor`), never inside the workload's calls.

What it does not do: UDP, sockets the workload creates or connects itself (WASI p1 has no
``socket``/``connect``), name lookups by the workload, ``MSG_PEEK`` beyond one TLS record.

Example::

    >>> from donjon.keep.sockets import NetworkOptions, StopSignal, UnsafeEphemeralTls
    >>> tls = UnsafeEphemeralTls.generate(now=datetime.now(UTC))  # doctest: +SKIP
    >>> stop = StopSignal()
    >>> options = NetworkOptions(tls=tls, stop=stop, on_listen=print)  # doctest: +SKIP
    >>> runtime.run(module, invocation, CapturedStdio(), network=options)  # doctest: +SKIP
    ListenerInfo(fd=3, name='api', prot=<Protocol.TLS: 'tls'>, address='127.0.0.1', port=8443)

The TLS classes (:class:`KeepTls`, :class:`IdentityTls`, :class:`UnsafeEphemeralTls`) load
``cryptography`` and are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from donjon.keep.sockets.errors import (
    PeerVerificationError,
    RunStoppedError,
    SocketLayerError,
    SocketSetupError,
)
from donjon.keep.sockets.network import (
    CONNECT_TIMEOUT_S,
    HANDSHAKE_TIMEOUT_S,
    MAX_CONNECTIONS_PER_LISTENER,
    MAX_PENDING_HANDSHAKES,
    SEND_STALL_TIMEOUT_S,
    SOCKET_BUFFER_BYTES,
    ListenerInfo,
    NetworkOptions,
    SocketLimits,
    StopSignal,
)

if TYPE_CHECKING:
    from donjon.keep.sockets.tls import IdentityTls, KeepTls, UnsafeEphemeralTls

__all__ = [
    "CONNECT_TIMEOUT_S",
    "HANDSHAKE_TIMEOUT_S",
    "MAX_CONNECTIONS_PER_LISTENER",
    "MAX_PENDING_HANDSHAKES",
    "SEND_STALL_TIMEOUT_S",
    "SOCKET_BUFFER_BYTES",
    "IdentityTls",
    "KeepTls",
    "ListenerInfo",
    "NetworkOptions",
    "PeerVerificationError",
    "RunStoppedError",
    "SocketLayerError",
    "SocketLimits",
    "SocketSetupError",
    "StopSignal",
    "UnsafeEphemeralTls",
]

_LAZY = frozenset({"IdentityTls", "KeepTls", "UnsafeEphemeralTls"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from donjon.keep.sockets import tls

        return getattr(tls, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
