"""The TLS acceptor: one thread per TLS listener, handshakes outside the guest's calls.

The guest's ``accept()`` only pops finished connections from a :class:`QueueListener`, so a slow
or hostile peer never holds the guest up (TOOLING.md §9 8.6). The thread multiplexes every
handshake in progress over one ``epoll`` with non-blocking TLS on memory BIOs.

Rule 1: a handshake has :attr:`AcceptorLimits.handshake_timeout_s` to finish, then the
connection is dropped (slowloris on the handshake costs an attacker a connection slot for that
long, no more).
Rule 2: at most :attr:`AcceptorLimits.max_pending` handshakes at once; a new connection beyond
that evicts the oldest one, so a flood of silent connections cannot lock real clients out.
Rule 3: established connections (queued for the guest or held by it) never exceed
:attr:`AcceptorLimits.max_connections`. At that limit the listener is not accepted from (peers
wait in the kernel's backlog), and a handshake that finishes meanwhile is parked, still under
its deadline, until the guest closes a connection. Handshakes have their own budget (Rule 2),
so silent peers cannot hold the established slots.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from donjon.keep.sockets.streams import QueueListener, TlsStream, prepare_socket

__all__ = ["AcceptorLimits", "AcceptorStats", "TlsAcceptor"]

_logger = logging.getLogger(__name__)

_ACCEPTS_PER_WAKE = 32  # connections taken from the kernel per readiness, to stay fair
_READ_BYTES = 64 * 1024  # ciphertext read per step of a handshake (a ClientHello is < 2 KiB)
_LISTENER = object()
_WAKE = object()


@dataclass(frozen=True, slots=True)
class AcceptorLimits:
    """Bounds on one TLS listener.

    Attributes:
        max_connections: connections open at once (in handshake, queued, or held by the guest).
        max_pending: handshakes in progress at once; the oldest is dropped beyond this.
        handshake_timeout_s: seconds a peer has to complete its handshake.
        buffer_bytes: SO_SNDBUF/SO_RCVBUF of accepted sockets, or ``None`` for the kernel's.
    """

    max_connections: int
    max_pending: int
    handshake_timeout_s: float
    buffer_bytes: int | None


@dataclass(slots=True)
class AcceptorStats:
    """Counters, for logs and tests (updated by the acceptor thread)."""

    accepted: int = 0
    handshakes_failed: int = 0
    handshakes_timed_out: int = 0
    evicted: int = 0


class _Handshake:
    __slots__ = ("backlog", "deadline", "done", "incoming", "outgoing", "sock", "tls")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, deadline: float) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.deadline = deadline
        self.backlog = bytearray()
        self.done = False  # handshake finished, waiting for an established slot


class TlsAcceptor:
    """Accepts and handshakes on ``sock`` in a thread; finished streams go to :attr:`queue`.

    Args:
        sock: the bound, listening socket (it becomes non-blocking; closed by :meth:`stop`).
        context: the server ``SSLContext`` (TLS 1.3, the Keep's certificate, mTLS anchors).
        limits: the listener's bounds.
        label: how the listener is named in logs, e.g. ``files[3] "api"``.
    """

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        limits: AcceptorLimits,
        label: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._context = context
        self._limits = limits
        self._label = label
        self._clock = clock
        self._lock = threading.Lock()
        self._active = 0  # queued for or held by the guest
        self._pending: OrderedDict[int, _Handshake] = OrderedDict()  # oldest first
        self._stop = False
        self._started = False
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.stats = AcceptorStats()
        self.queue = QueueListener(self.stop, self._all_held)
        self._thread = threading.Thread(target=self._run, name=f"donjon-tls {label}", daemon=True)

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def stop(self) -> None:
        """End the thread, drop handshakes in progress and close the listening socket.

        Idempotent; the wake fd is closed here, under the lock, so a late :meth:`_release`
        can never write to a reused fd number.
        """
        with self._lock:
            if self._stop:
                return
            self._stop = True
        self._poke()
        if self._started and threading.current_thread() is not self._thread:
            self._thread.join()
        if not self._started:
            self._sock.close()
        with self._lock:
            os.close(self._wake)
            self._wake = -1

    def _poke(self) -> None:
        with self._lock:
            if self._wake >= 0:
                os.eventfd_write(self._wake, 1)

    def _all_held(self, queued: int) -> bool:
        with self._lock:
            return self._active - queued >= self._limits.max_connections

    def _release(self) -> None:
        """A stream from this listener was closed (guest thread): its slot is free."""
        with self._lock:
            self._active -= 1
        self._poke()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.EpollSelector()
        selector.register(self._wake, selectors.EVENT_READ, _WAKE)
        listening = False
        try:
            while True:
                self._promote()
                with self._lock:
                    if self._stop:
                        return
                    room = self._active < self._limits.max_connections
                if room != listening:
                    if room:
                        selector.register(self._sock, selectors.EVENT_READ, _LISTENER)
                    else:
                        selector.unregister(self._sock)
                    listening = room
                for key, events in selector.select(self._timeout()):
                    if key.data is _WAKE:
                        with contextlib.suppress(BlockingIOError):
                            os.eventfd_read(self._wake)
                    elif key.data is _LISTENER:
                        self._accept(selector)
                    elif isinstance(key.data, _Handshake):
                        self._on_io(selector, key.data, events)
                self._expire(selector)
        except Exception:  # a bug: say so; the listener stops accepting, the guest goes on
            _logger.exception("%s: the TLS acceptor failed", self._label)
        finally:
            for hs in list(self._pending.values()):
                hs.sock.close()
            self._pending.clear()
            selector.close()
            self._sock.close()

    def _promote(self) -> None:
        """Queue parked connections, oldest first, while established slots are free."""
        for hs in [hs for hs in self._pending.values() if hs.done]:
            with self._lock:
                if self._active >= self._limits.max_connections:
                    return
            del self._pending[hs.sock.fileno()]
            self._hand_over(hs)

    def _timeout(self) -> float | None:
        if not self._pending:
            return None
        oldest = min(hs.deadline for hs in self._pending.values())
        return max(0.0, oldest - self._clock())

    def _accept(self, selector: selectors.BaseSelector) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            with self._lock:
                if self._active >= self._limits.max_connections:
                    return
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as e:  # EMFILE and friends: try again on the next readiness
                _logger.warning("%s: accept failed: %s", self._label, e.strerror)
                return
            prepare_socket(conn, self._limits.buffer_bytes)
            if len(self._pending) >= self._limits.max_pending:
                _, oldest = self._pending.popitem(last=False)
                self.stats.evicted += 1  # counted first: the peer sees the close at once
                self._drop(selector, oldest, registered=not oldest.done)
            hs = _Handshake(conn, self._context, self._clock() + self._limits.handshake_timeout_s)
            self._pending[conn.fileno()] = hs
            selector.register(conn, selectors.EVENT_READ, hs)
            self._step(selector, hs)

    def _on_io(self, selector: selectors.BaseSelector, hs: _Handshake, events: int) -> None:
        if events & selectors.EVENT_WRITE and not self._send(hs):
            self._fail(selector, hs)
            return
        if events & selectors.EVENT_READ:
            try:
                data = hs.sock.recv(_READ_BYTES)
            except BlockingIOError:
                data = None
            except OSError:
                self._fail(selector, hs)
                return
            if data == b"":
                self._fail(selector, hs)  # the peer left before finishing
                return
            if data:
                hs.incoming.write(data)
        self._step(selector, hs)

    def _step(self, selector: selectors.BaseSelector, hs: _Handshake) -> None:
        try:
            hs.tls.do_handshake()
        except ssl.SSLWantReadError:
            done = False
        except (ssl.SSLError, OSError) as e:
            _logger.debug("%s: TLS handshake failed: %s", self._label, e)
            self._send(hs)  # the alert, so the peer learns why
            self._fail(selector, hs)
            return
        else:
            done = True
        if not self._send(hs):
            self._fail(selector, hs)
            return
        if not done:
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if hs.backlog else 0)
            selector.modify(hs.sock, want, hs)
            return
        selector.unregister(hs.sock)
        with self._lock:
            full = self._active >= self._limits.max_connections
        if full:
            hs.done = True  # parked: _promote queues it when the guest frees a slot
            return
        del self._pending[hs.sock.fileno()]
        self._hand_over(hs)

    def _hand_over(self, hs: _Handshake) -> None:
        stream = TlsStream(
            hs.sock,
            hs.tls,
            hs.incoming,
            hs.outgoing,
            backlog=bytes(hs.backlog),
            release=self._release,
        )
        with self._lock:
            self._active += 1
        self.stats.accepted += 1
        if not self.queue.put(stream):
            stream.close()

    def _send(self, hs: _Handshake) -> bool:
        if hs.outgoing.pending:
            hs.backlog += hs.outgoing.read()
        while hs.backlog:
            try:
                sent = hs.sock.send(hs.backlog)
            except BlockingIOError:
                return True
            except OSError:
                return False
            del hs.backlog[:sent]
        return True

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = self._clock()
        for fd, hs in list(self._pending.items()):
            if hs.deadline <= now:
                del self._pending[fd]
                self.stats.handshakes_timed_out += 1
                self._drop(selector, hs, registered=not hs.done)
                _logger.debug("%s: TLS handshake deadline reached; dropped", self._label)

    def _fail(self, selector: selectors.BaseSelector, hs: _Handshake) -> None:
        self._pending.pop(hs.sock.fileno(), None)
        self.stats.handshakes_failed += 1
        self._drop(selector, hs, registered=True)

    @staticmethod
    def _drop(selector: selectors.BaseSelector, hs: _Handshake, *, registered: bool) -> None:
        if registered:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(hs.sock)
        hs.sock.close()
