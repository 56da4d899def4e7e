"""What a Python-served guest fd is: ``null``, a TCP or TLS stream, or a listener.

Every host socket here is non-blocking; the guest-visible ``O_NONBLOCK`` is only a flag
(:attr:`Endpoint.nonblocking`) that :mod:`donjon.keep.sockets.host` consults to decide whether
to wait. Operations never block and never raise for I/O conditions: they return a byte count
(``>= 0``) or a negative WASI errno (``-Errno.AGAIN`` when they would block).

TLS runs on :class:`ssl.SSLObject` with memory BIOs rather than :class:`ssl.SSLSocket`, so that
every byte in flight is accounted for: a half-close (``shutdown(SHUT_WR)``) sends close_notify
without OpenSSL discarding data the peer has already sent (``SSLSocket.unwrap`` does, with
``APPLICATION_DATA_AFTER_CLOSE_NOTIFY``), and a write is never retried with other bytes.

Rule 1: bounded buffers. A TLS stream holds at most one record of decrypted lookahead
(:data:`TLS_RECORD_BYTES`) and the ciphertext of one accepted write
(:data:`TLS_WRITE_CHUNK_BYTES` plus record overhead); a plain TCP stream holds nothing.
Rule 2: a listener never has more than ``max_connections`` connections open at once (queued
for the guest or accepted by it); further peers wait in the kernel's backlog.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from donjon.keep.sockets.abi import (
    FDFLAGS_NONBLOCK,
    FILETYPE_CHARACTER_DEVICE,
    FILETYPE_SOCKET_STREAM,
    NULL_RIGHTS,
    SDFLAGS_RD,
    SDFLAGS_WR,
    SOCKET_RIGHTS,
    Errno,
    errno_for,
)

__all__ = [
    "TLS_READ_CHUNK_BYTES",
    "TLS_RECORD_BYTES",
    "TLS_WRITE_CHUNK_BYTES",
    "Endpoint",
    "Listener",
    "NullEndpoint",
    "QueueListener",
    "Stream",
    "TcpListener",
    "TcpStream",
    "TlsStream",
]

_logger = logging.getLogger(__name__)

TLS_RECORD_BYTES = 16 * 1024  # largest TLS plaintext record (RFC 8446 §5.1)
TLS_WRITE_CHUNK_BYTES = 64 * 1024  # plaintext one send() hands to TLS; bounds the backlog
TLS_READ_CHUNK_BYTES = 64 * 1024  # ciphertext read from the socket per step
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)
HANGUP_EVENTS = select.POLLHUP | _POLLRDHUP | select.POLLERR
"""poll() events that a WASI read event reports as ``HANGUP``."""


class Endpoint(Protocol):
    """A Python-served guest fd."""

    filetype: int
    rights: int
    nonblocking: bool

    def fdflags(self) -> int:
        """WASI fdflags for ``fd_fdstat_get``."""
        ...

    def ready(self, write: bool) -> bool:
        """Ready now, without waiting (buffered data, a queued connection, ``null``)."""
        ...

    def wait_on(self, write: bool) -> tuple[int, int] | None:
        """The host fd and poll() events to wait for, or ``None`` if nothing can help."""
        ...

    def close(self) -> None:
        """Release the fd (idempotent)."""
        ...


class Stream(Endpoint, Protocol):
    """An endpoint that carries bytes."""

    def recv(self, bufs: Sequence[memoryview], peek: bool) -> int: ...

    def send(self, bufs: Sequence[memoryview]) -> int: ...

    def shutdown(self, how: int) -> int: ...


class Listener(Endpoint, Protocol):
    """An endpoint that hands out connections."""

    def accept(self) -> Stream | int: ...

    def exhausted(self) -> bool:
        """At ``max_connections`` with nothing queued: only a close by the guest frees a slot
        (a blocking accept then fails with EMFILE instead of waiting for ever)."""
        ...


class _Flags:
    """The guest-visible O_NONBLOCK flag."""

    nonblocking: bool = False

    def fdflags(self) -> int:
        return FDFLAGS_NONBLOCK if self.nonblocking else 0


class NullEndpoint(_Flags):
    """``kind = "null"``: reads see end of file, writes are discarded, always ready."""

    filetype = FILETYPE_CHARACTER_DEVICE
    rights = NULL_RIGHTS

    def recv(self, bufs: Sequence[memoryview], peek: bool) -> int:
        return 0

    def send(self, bufs: Sequence[memoryview]) -> int:
        return sum(len(b) for b in bufs)

    def shutdown(self, how: int) -> int:
        return -Errno.NOTSOCK

    def ready(self, write: bool) -> bool:
        return True

    def wait_on(self, write: bool) -> tuple[int, int] | None:
        return None

    def close(self) -> None:
        pass


def _sum(bufs: Sequence[memoryview]) -> int:
    return sum(len(b) for b in bufs)


class TcpStream(_Flags):
    """A plaintext TCP connection (``prot = "tcp"``)."""

    filetype = FILETYPE_SOCKET_STREAM
    rights = SOCKET_RIGHTS

    def __init__(self, sock: socket.socket, release: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self._fd = sock.fileno()
        self._release = release

    def recv(self, bufs: Sequence[memoryview], peek: bool) -> int:
        if not bufs:
            return 0
        flags = socket.MSG_PEEK if peek else 0
        try:
            if len(bufs) == 1:
                return self.sock.recv_into(bufs[0], 0, flags)
            return self.sock.recvmsg_into(bufs, 0, flags)[0]
        except BlockingIOError:
            return -Errno.AGAIN
        except OSError as e:
            return -errno_for(e)

    def send(self, bufs: Sequence[memoryview]) -> int:
        if not bufs:
            return 0
        try:
            if len(bufs) == 1:
                return self.sock.send(bufs[0])
            return self.sock.sendmsg(bufs)
        except BlockingIOError:
            return -Errno.AGAIN
        except OSError as e:
            return -errno_for(e)

    def shutdown(self, how: int) -> int:
        try:
            self.sock.shutdown(_SHUT[how])
        except OSError as e:
            return -errno_for(e)
        return 0

    def ready(self, write: bool) -> bool:
        return False

    def wait_on(self, write: bool) -> tuple[int, int] | None:
        return (self._fd, _POLLOUT) if write else (self._fd, _POLLIN | _POLLRDHUP)

    def close(self) -> None:
        if self._fd < 0:
            return
        self._fd = -1
        self.sock.close()
        if self._release is not None:
            self._release()


_SHUT = {SDFLAGS_RD: socket.SHUT_RD, SDFLAGS_WR: socket.SHUT_WR, 3: socket.SHUT_RDWR}


class TlsStream(_Flags):
    """A TLS 1.3 connection terminated here: the guest reads and writes plaintext.

    Args:
        sock: the connected, non-blocking TCP socket.
        tls: the TLS state, with its handshake complete.
        incoming: the memory BIO ``tls`` reads ciphertext from (may hold early data).
        outgoing: the memory BIO ``tls`` writes ciphertext to.
        backlog: ciphertext the handshake produced but the socket has not taken yet.
        release: called once when the stream is closed (frees the listener's slot).
    """

    filetype = FILETYPE_SOCKET_STREAM
    rights = SOCKET_RIGHTS

    def __init__(
        self,
        sock: socket.socket,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        *,
        backlog: bytes = b"",
        release: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self._fd = sock.fileno()
        self._tls = tls
        self._in = incoming
        self._out = outgoing
        self._backlog = bytearray(backlog)
        self._plain = b""  # decrypted lookahead: at most one record
        self._eof = False  # the peer's close_notify (or its TCP FIN) was read
        self._error = 0  # a fatal errno: the connection is unusable
        self._sent_close = False
        self._release = release

    # -- reading ---------------------------------------------------------------------------

    def _pull(self) -> int:
        """Move ciphertext from the socket into the BIO: 1 got some, 0 EOF, <0 -errno."""
        try:
            data = self.sock.recv(TLS_READ_CHUNK_BYTES)
        except BlockingIOError:
            return -Errno.AGAIN
        except OSError as e:
            return -errno_for(e)
        if not data:
            self._in.write_eof()
            return 0
        self._in.write(data)
        return 1

    def _decrypt(self, buf: memoryview | None, size: int) -> int:
        """Decrypt into ``buf`` (or return bytes via ``self._plain``); >0, 0 EOF, <0 -errno."""
        try:
            if buf is None:
                self._plain = self._tls.read(size)
                n = len(self._plain)
            else:
                # read(len, buffer) fills the buffer and returns a count (typeshed: bytes).
                n = cast(int, self._tls.read(size, buf))
            if n == 0 and size > 0:
                # CPython returns nothing (rather than raising SSLZeroReturnError) once the
                # peer's close_notify is read: that is the end of the stream.
                self._eof = True
            return n
        except ssl.SSLWantReadError:
            return -Errno.AGAIN
        except ssl.SSLWantWriteError:  # post-handshake messages to send first
            self._flush()
            return -Errno.AGAIN
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            # close_notify, or a TCP FIN without one: end of file for the guest. Peers that
            # must detect truncation carry their own lengths, as HTTP does.
            self._eof = True
            return 0
        except ssl.SSLError as e:
            _logger.debug("TLS connection aborted: %s", e)
            self._error = Errno.CONNABORTED
            return -Errno.CONNABORTED

    def recv(self, bufs: Sequence[memoryview], peek: bool) -> int:
        if self._error:
            return -self._error
        if not bufs:
            return 0
        buf = bufs[0]  # an SSLObject reads into one buffer: a short read is allowed
        if self._plain:
            n = min(len(buf), len(self._plain))
            buf[:n] = self._plain[:n]
            if not peek:
                self._plain = self._plain[n:]
            return n
        if self._eof:
            return 0
        if peek:
            got = self._read_lookahead()
            if got <= 0:
                return got
            return self.recv(bufs, peek)
        total = 0
        incoming = self._in
        if not incoming.pending and not incoming.eof and not self._tls.pending():
            # Nothing buffered: read the socket first rather than fail a decrypt (an
            # exception per call) to learn that.
            try:
                data = self.sock.recv(TLS_READ_CHUNK_BYTES)
            except BlockingIOError:
                return -Errno.AGAIN
            except OSError as e:
                return -errno_for(e)
            if data:
                incoming.write(data)
            else:
                incoming.write_eof()
        while total < len(buf):
            n = self._decrypt(buf[total:], len(buf) - total)
            if n > 0:
                total += n
                # A read returns at most one record; keep filling only while whole records
                # may be waiting, so a bulk transfer costs one guest call per 64 KiB.
                if n < TLS_RECORD_BYTES and not self._tls.pending():
                    break
                continue
            if n == -Errno.AGAIN and not self._in.eof:
                pulled = self._pull()
                if pulled == 1:
                    continue
                if pulled == 0:
                    continue  # let the next _decrypt report the EOF (or a truncation)
                if total:
                    break
                return pulled
            if total:
                break
            return n
        if self._out.pending:  # a read can produce protocol messages to send (key updates)
            self._flush()
        return total

    def _read_lookahead(self) -> int:
        """Decrypt up to one record into ``_plain``: >0 bytes, 0 EOF, <0 -errno."""
        while True:
            n = self._decrypt(None, TLS_RECORD_BYTES)
            if n != -Errno.AGAIN or self._in.eof:
                return n
            pulled = self._pull()
            if pulled < 0:
                return pulled

    # -- writing ---------------------------------------------------------------------------

    def _flush(self) -> int:
        """Send what is waiting: 0 all sent, -AGAIN some left, other <0 a fatal error."""
        if self._out.pending:
            self._backlog += self._out.read()
        while self._backlog:
            try:
                sent = self.sock.send(self._backlog)
            except BlockingIOError:
                return -Errno.AGAIN
            except OSError as e:
                self._error = errno_for(e)
                return -self._error
            del self._backlog[:sent]
        return 0

    def send(self, bufs: Sequence[memoryview]) -> int:
        if self._error:
            return -self._error
        if self._sent_close:
            return -Errno.PIPE
        if not bufs:
            return 0
        if self._backlog or self._out.pending:
            flushed = self._flush()
            if flushed:
                return flushed  # -AGAIN: the last write's ciphertext is still waiting
        chunk: bytes | memoryview
        if len(bufs) == 1:
            chunk = bufs[0][:TLS_WRITE_CHUNK_BYTES]
        else:
            chunk = b"".join(bytes(b) for b in _take(bufs, TLS_WRITE_CHUNK_BYTES))
        try:
            written = self._tls.write(chunk)
        except ssl.SSLError as e:
            _logger.debug("TLS write failed: %s", e)
            self._error = Errno.CONNABORTED
            return -self._error
        # The ciphertext is ours now (like bytes in a kernel send buffer): what the socket does
        # not take waits in the backlog, and a failure shows up on the next call.
        data = self._out.read()
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._error = errno_for(e)
            return int(written)
        if sent < len(data):
            self._backlog += data[sent:]
        return int(written)

    def shutdown(self, how: int) -> int:
        if self._error:
            return -self._error
        if how & SDFLAGS_WR and not self._sent_close:
            self._close_notify()
            self._flush()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        if how & SDFLAGS_RD:
            self._eof = True
            self._plain = b""
        return 0

    def _close_notify(self) -> None:
        self._sent_close = True
        # OpenSSL's second SSL_shutdown (inside unwrap) reads the incoming BIO and throws away
        # application data it finds there; keep that data out of its reach.
        saved = self._in.read()
        try:
            self._tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify is written; the peer's comes (or not) with its data
        except ssl.SSLError as e:
            _logger.debug("TLS close_notify failed: %s", e)
        if saved:
            self._in.write(saved)

    # -- readiness -------------------------------------------------------------------------

    def ready(self, write: bool) -> bool:
        if self._error:
            return True
        if write:
            if self._backlog or self._out.pending:
                return self._flush() != -Errno.AGAIN
            return True
        if self._plain or self._eof or self._tls.pending():
            return True
        if self._in.pending or self._in.eof:
            # Whole records may already be here (read with an earlier chunk): decrypt one.
            return self._decrypt(None, TLS_RECORD_BYTES) != -Errno.AGAIN or self._in.eof
        return False

    def wait_on(self, write: bool) -> tuple[int, int] | None:
        return (self._fd, _POLLOUT) if write else (self._fd, _POLLIN | _POLLRDHUP)

    def pending_output(self) -> bool:
        return bool(self._backlog or self._out.pending)

    def close(self) -> None:
        if self._fd < 0:
            return
        if not self._sent_close and not self._error:
            self._close_notify()
        self._fd = -1
        try:
            if self._flush() == -Errno.AGAIN:
                _linger(self)
        finally:
            self.sock.close()
            if self._release is not None:
                self._release()


CLOSE_LINGER_S = 1.0
"""Seconds a close waits for the socket to take a TLS stream's last ciphertext."""


def _linger(stream: TlsStream) -> None:
    poller = select.poll()
    poller.register(stream.sock.fileno(), _POLLOUT)
    for _ in range(20):
        if not poller.poll(CLOSE_LINGER_S * 1000 / 20):
            continue
        if stream._flush() != -Errno.AGAIN:
            return


def _take(bufs: Sequence[memoryview], limit: int) -> list[memoryview]:
    out: list[memoryview] = []
    for buf in bufs:
        if limit <= 0:
            break
        out.append(buf[:limit])
        limit -= len(out[-1])
    return out


# -- listeners ---------------------------------------------------------------------------------


class TcpListener(_Flags):
    """A plaintext listener: the guest's accept() accepts from the kernel directly.

    Args:
        sock: the bound, listening, non-blocking socket.
        max_connections: connections open at once; more wait in the kernel's backlog.
        buffer_bytes: SO_SNDBUF/SO_RCVBUF of accepted sockets, or ``None`` for the kernel's.
    """

    filetype = FILETYPE_SOCKET_STREAM
    rights = SOCKET_RIGHTS

    def __init__(
        self, sock: socket.socket, *, max_connections: int, buffer_bytes: int | None
    ) -> None:
        self.sock = sock
        self._fd = sock.fileno()
        self._max = max_connections
        self._buffer = buffer_bytes
        self.active = 0

    def _released(self) -> None:
        self.active -= 1

    def accept(self) -> Stream | int:
        if self.active >= self._max:
            return -Errno.AGAIN
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return -Errno.AGAIN
        except OSError as e:
            return -errno_for(e)
        prepare_socket(conn, self._buffer)
        self.active += 1
        return TcpStream(conn, self._released)

    def exhausted(self) -> bool:
        return self.active >= self._max

    def ready(self, write: bool) -> bool:
        return False

    def wait_on(self, write: bool) -> tuple[int, int] | None:
        if write or self.active >= self._max:
            return None  # only a close by the guest (on this thread) frees a slot
        return (self._fd, _POLLIN)

    def close(self) -> None:
        if self._fd >= 0:
            self._fd = -1
            self.sock.close()


class QueueListener(_Flags):
    """A listener whose connections are made elsewhere (the TLS acceptor) and queued here.

    Readiness is "the queue is not empty", signalled through a semaphore eventfd that the guest
    can wait on with its other fds.
    """

    filetype = FILETYPE_SOCKET_STREAM
    rights = SOCKET_RIGHTS

    def __init__(self, on_close: Callable[[], None], held: Callable[[int], bool]) -> None:
        self._queue: deque[Stream] = deque()
        self._lock = threading.Lock()
        self._event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC | os.EFD_SEMAPHORE)
        self._on_close = on_close
        self._held = held  # (queued) -> whether the guest holds every connection slot
        self._closed = False

    def put(self, stream: Stream) -> bool:
        """Queue a finished connection (acceptor thread); False if the listener is closed."""
        with self._lock:  # held while writing: close() cannot close the eventfd meanwhile
            if self._closed:
                return False
            self._queue.append(stream)
            os.eventfd_write(self._event, 1)
        return True

    def accept(self) -> Stream | int:
        with self._lock:
            if not self._queue:
                return -Errno.AGAIN
            stream = self._queue.popleft()
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._event)
        return stream

    def exhausted(self) -> bool:
        with self._lock:
            return not self._queue and self._held(len(self._queue))

    def ready(self, write: bool) -> bool:
        return not write and bool(self._queue)

    def wait_on(self, write: bool) -> tuple[int, int] | None:
        return None if write else (self._event, _POLLIN)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
        self._on_close()
        for stream in queued:
            stream.close()
        with self._lock:
            os.close(self._event)


def prepare_socket(sock: socket.socket, buffer_bytes: int | None) -> None:
    """Non-blocking, no Nagle delay (the guest's writes are already whole), bounded buffers."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if buffer_bytes is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
