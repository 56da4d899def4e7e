"""Steward's HTTP server plumbing: listening sockets, the HTTP parser and the event loop.

Does: bind one listening socket per worker process (``SO_REUSEPORT``, so the kernel spreads
connections over the workers), and pick the fastest HTTP/1.1 stack installed: ``httptools``
(llhttp, C) over ``h11`` (pure Python), ``uvloop`` (libuv) over the stdlib ``asyncio`` loop.
Does not: handle requests (``app``), or decide anything (``core``).

Rule 1: whatever stack is picked, a request head (request line + headers) is bounded: h11 by
its own 16 KiB limit, httptools by :data:`MAX_HEAD_BYTES` here (llhttp accumulates headers
without a limit), so a client cannot make a worker buffer an endless header.
Rule 2: both accelerators are optional. Without them Steward runs on h11 and asyncio, with the
same behaviour and about 5 % more CPU per certificate (``docs/performance.md``).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import socket
from typing import Any

from donjon.errors import ConfigError

MAX_HEAD_BYTES = 16 * 1024
"""Longest request head (request line and headers, bytes) accepted with httptools: h11's default
limit, which uvicorn keeps when it runs on h11. A Steward request head is about 150 bytes."""

LISTEN_BACKLOG = 1024
"""Pending connections the kernel queues per listening socket before refusing more."""


@functools.cache
def have_module(name: str) -> bool:
    """Whether *name* imports (a broken install counts as absent)."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def loop_name() -> str:
    """The uvicorn event loop to use: ``"uvloop"`` when installed, else ``"asyncio"``."""
    return "uvloop" if have_module("uvloop") else "asyncio"


def http_protocol() -> str | type[asyncio.Protocol]:
    """The uvicorn HTTP protocol to use: a head-bounded httptools protocol when httptools is
    installed, else ``"h11"``."""
    if not have_module("httptools"):
        return "h11"
    return _bounded_httptools_protocol()


def stack_description(http: str | type[asyncio.Protocol], loop: str) -> str:
    """A short name for the stack, e.g. ``"httptools+uvloop"`` (for logs and benchmarks)."""
    name = http if isinstance(http, str) else "httptools"
    return f"{name}+{loop}"


@functools.cache
def _bounded_httptools_protocol() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a bound on the request head (Rule 1).

        Two lower bounds of the head's size are kept, and either over the limit ends it:
        the URL and header bytes the parser has handed over (exact for complete headers,
        whatever the reads were), and the raw bytes of the reads after the one in which the
        request began (bounds one endless header that the parser is still buffering). So a
        head is refused by at most one read (256 KiB in asyncio and uvloop) past the limit:
        bounded, where llhttp alone is not.
        """

        _in_head = False
        _began_in_read = False
        _parsed_bytes = 0
        _read_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._began_in_read = True
            self._parsed_bytes = 0
            self._read_bytes = 0

        def on_url(self, url: bytes) -> None:
            self._parsed_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._parsed_bytes += len(name) + len(value) + 4  # ": " and CRLF
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            self._began_in_read = False
            super().data_received(data)
            if not self._in_head or self.transport.is_closing():
                return
            if not self._began_in_read:
                self._read_bytes += len(data)
            if max(self._parsed_bytes, self._read_bytes) > MAX_HEAD_BYTES:
                self._in_head = False
                self.send_400_response(
                    f"Request head is over {MAX_HEAD_BYTES} bytes (request line and headers)."
                )

    return BoundedHttpToolsProtocol


def _bind_one(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then,
    # and without it Nagle + delayed ACKs add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.set_inheritable(True)
    return sock


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """*count* listening sockets on (host, port), one per worker; port 0 picks a free port.

    With more than one, every socket has ``SO_REUSEPORT`` and the kernel hashes each new
    connection to one of them. A single shared socket would let whichever worker is idle accept
    every pending connection at once (asyncio accepts in a loop), which with keep-alive clients
    leaves one worker with nearly all of them: measured 31 of 32 connections on one of two
    workers. ``SO_REUSEPORT`` lets another process of the same user join the group; Linux
    refuses it to other users.

    Raises:
        ConfigError: the address cannot be bound.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    if count == 1:
        return [_bind_one(host, port, reuse_port=False)]
    first = _bind_one(host, port, reuse_port=True)
    sockets = [first]
    try:
        bound_port = int(first.getsockname()[1])
        for _ in range(count - 1):
            sockets.append(_bind_one(host, bound_port, reuse_port=True))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def uvicorn_config_options() -> dict[str, Any]:
    """The uvicorn ``Config`` keywords for the HTTP parser and the loop (see Rule 2)."""
    return {"http": http_protocol(), "loop": loop_name()}


__all__ = [
    "LISTEN_BACKLOG",
    "MAX_HEAD_BYTES",
    "bind_sockets",
    "have_module",
    "http_protocol",
    "loop_name",
    "stack_description",
    "uvicorn_config_options",
]
