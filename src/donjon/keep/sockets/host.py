"""The Python side of a run's fd dispatch: raw host callbacks and WASI semantics for sockets.

B (:mod:`donjon.keep.sockets.dispatch`) calls these only for fds the map marks as Python's
(``null``, listeners, connections). Each callback is registered with
``wasmtime_func_new_unchecked`` (about 1 µs per call, against about 20 µs for
``Linker.define_func``: TOOLING.md §9.7) and reads its arguments straight from wasmtime's raw
value array.

Rule 1: a callback never raises into wasmtime. WASI conditions are errnos; a stop (the run's
deadline, or the caller's :class:`StopSignal`) or a bug returns a trap, and the reason is kept
for the executor to raise the right error.
Rule 2: blocking guest calls wait in slices of at most :data:`WAIT_SLICE_S`, together with the
run's wake eventfd, so a stop ends them at once and a deadline at the deadline.
Rule 3: guest memory is only touched through :class:`GuestView` (bounds-checked: ``EFAULT``).
"""

from __future__ import annotations

import ctypes
import math
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import wasmtime
from wasmtime import _bindings as _raw
from wasmtime import _ffi as _ffi

from donjon.keep.sockets.abi import (
    CLOCKID_MONOTONIC,
    CLOCKID_REALTIME,
    EVENT_BYTES,
    EVENTTYPE_CLOCK,
    EVENTTYPE_FD_READ,
    EVENTTYPE_FD_WRITE,
    FDFLAGS_NONBLOCK,
    RIFLAGS_RECV_PEEK,
    RIFLAGS_RECV_WAITALL,
    SUBSCRIPTION_BYTES,
    ClockSubscription,
    Errno,
    Event,
    Fault,
    FdSubscription,
    GuestView,
    pack_events,
    pack_subscription_clock_now,
    pack_subscription_fd,
    parse_subscriptions,
    unpack_events,
)
from donjon.keep.sockets.dispatch import (
    HIGH_WATER_OFFSET,
    MAX_GUEST_FDS,
    PYTHON_IMPORTS,
    PYTHON_MODULE,
)
from donjon.keep.sockets.network import StopSignal, wake_fd
from donjon.keep.sockets.streams import (
    HANGUP_EVENTS,
    Endpoint,
    Listener,
    NullEndpoint,
    QueueListener,
    Stream,
    TcpListener,
)

__all__ = ["WAIT_SLICE_S", "RunControl", "SocketHost"]

WAIT_SLICE_S = 0.5
"""Longest single wait in a blocking guest call before the stop conditions are checked again
(they also wake the wait at once through the run's eventfd)."""
WASMTIME_POLL_SLICE_S = 0.01
"""A poll that mixes sockets with wasmtime's own fds (e.g. stdin) re-probes those this often."""

_M = 0xFFFFFFFF
_HIGH_WATER = HIGH_WATER_OFFSET // 4
_PROBE_USERDATA = 0xFFFF_FFFF_FFFF_FFFF
_VAL_WORDS = ctypes.sizeof(_ffi.wasmtime_val_raw_t) // 8  # a raw value is 16 bytes: 2 words
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)
# A null finalizer; CFUNCTYPE(...)(0) instead crashes wasmtime (TOOLING.md §9.5).
_NO_FINALIZER = ctypes.cast(None, ctypes.CFUNCTYPE(None, ctypes.c_void_p))  # type: ignore[arg-type]
_CALLER_P = ctypes.POINTER(_ffi.wasmtime_caller_t)
_VALTYPES = {"i32": wasmtime.ValType.i32, "i64": wasmtime.ValType.i64}
_LISTENER_TYPES = (TcpListener, QueueListener)
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


class _Stopped(Exception):  # noqa: N818 - control flow, never leaves this module
    pass


class RunControl:
    """The stop conditions of one run: the caller's signal and the deadline.

    Args:
        stop: the caller's signal, or ``None``.
    """

    def __init__(self, stop: StopSignal | None) -> None:
        self._fd = wake_fd()
        self._lock = threading.Lock()  # a wake from another thread never meets a closed fd
        self._stop = stop
        self.deadline: float | None = None  # time.monotonic() at which the run must end
        self.reason: str | None = None  # "deadline" or "stopped", once a wait was ended
        if stop is not None:
            stop._subscribe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.eventfd_write(self._fd, 1)

    def fileno(self) -> int:
        return self._fd

    def check(self) -> None:
        """Raise :class:`_Stopped` when the run must end now."""
        if self._stop is not None and self._stop.is_set():
            self.reason = "stopped"
            raise _Stopped
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.reason = "deadline"
            raise _Stopped

    def close(self) -> None:
        if self._stop is not None:
            self._stop._unsubscribe(self._wake)
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class SocketHost:
    """One run's Python-served fds and the callbacks that serve them.

    Args:
        endpoints: the open endpoints by guest fd (``null``, listeners, connections).
        control: the run's stop conditions.
        send_stall_timeout_s: how long a blocking send may make no progress.

    Attributes:
        error: an exception raised inside a callback (a bug), or ``None``.
    """

    def __init__(
        self, endpoints: dict[int, Endpoint], control: RunControl, *, send_stall_timeout_s: float
    ) -> None:
        self._endpoints = endpoints
        self._control = control
        self._stall_s = send_stall_timeout_s
        self.error: BaseException | None = None
        self._keep: list[Any] = []  # CFUNCTYPE objects and FuncTypes: alive as long as the Store
        self._memory: wasmtime.Memory | None = None
        self._pages = -1
        self._mem = GuestView(memoryview(b""))
        self._fdmap: Any = None
        self._orig_poll: wasmtime.Func | None = None
        self._call_buf = (_ffi.wasmtime_val_raw_t * 4)()
        self._call_words = (ctypes.c_int64 * (4 * _VAL_WORDS)).from_buffer(self._call_buf)

    # -- wiring ----------------------------------------------------------------------------

    def define(self, linker: wasmtime.Linker, store: wasmtime.Store) -> None:
        """Define the ``donjon_sock`` imports (raw callbacks) in B's linker, for ``store``."""
        handlers: dict[str, Callable[[int, list[int]], int]] = {
            "fd_read": self._fd_read,
            "fd_write": self._fd_write,
            "fd_fdstat_get": self._fd_fdstat_get,
            "fd_fdstat_set_flags": self._fd_fdstat_set_flags,
            "fd_filestat_get": self._fd_filestat_get,
            "sock_accept": self._sock_accept,
            "sock_recv": self._sock_recv,
            "sock_send": self._sock_send,
            "sock_shutdown": self._sock_shutdown,
            "close": self._close,
            "move": self._move,
            "poll": self._poll,
        }
        for name, types in PYTHON_IMPORTS.items():
            # FuncTypes are per engine (sharing one across engines aborts the process), and
            # both they and the callback must outlive the Store: kept in self._keep.
            functype = wasmtime.FuncType([_VALTYPES[t]() for t in types], [_VALTYPES["i32"]()])
            callback = _CALLBACK(self._wrap(handlers[name], len(types)))
            func = _ffi.wasmtime_func_t()
            _raw.wasmtime_func_new_unchecked(
                store._context(),
                functype.ptr(),
                ctypes.cast(callback, _raw.wasmtime_func_unchecked_callback_t),
                None,
                _NO_FINALIZER,
                ctypes.byref(func),
            )
            self._keep += [functype, callback]
            linker.define(store, PYTHON_MODULE, name, wasmtime.Func._from_raw(func))

    def attach(
        self,
        store: wasmtime.Store,
        dispatcher: wasmtime.Instance,
        memory: wasmtime.Memory,
        fd_values: dict[int, int],
    ) -> None:
        """Bind to B's fd map and the guest's memory, and fill the map.

        Args:
            fd_values: the initial map: guest fd → wasmtime fd + 1, or -1 for Python's.
        """
        exports = dispatcher.exports(store)
        fdmap = exports["fdmap"]
        orig_poll = exports["orig_poll_oneoff"]
        if not isinstance(fdmap, wasmtime.Memory) or not isinstance(orig_poll, wasmtime.Func):
            raise TypeError("the dispatcher module does not have its exports")  # a wiring bug
        base = ctypes.cast(fdmap.data_ptr(store), ctypes.c_void_p).value
        self._fdmap = (ctypes.c_int32 * (_HIGH_WATER + 1)).from_address(base or 0)
        for fd, value in fd_values.items():
            self._fdmap[fd] = value
        self._fdmap[_HIGH_WATER] = max(fd_values, default=-1) + 1
        self._memory = memory
        self._orig_poll = orig_poll

    def close(self) -> None:
        """Forget the Store's objects (after the Store is closed)."""
        self._fdmap = None
        self._memory = None
        self._orig_poll = None
        self._mem = GuestView(memoryview(b""))

    # -- callback plumbing -----------------------------------------------------------------

    def _wrap(
        self, handler: Callable[[int, list[int]], int], nparams: int
    ) -> Callable[[int, int, int, int], int]:
        words = nparams * _VAL_WORDS
        stride = _VAL_WORDS
        values = ctypes.c_int64 * words  # made once: this runs on every call
        check = self._control.check

        def callback(env: int, caller: int, args: int, nargs: int) -> int:
            try:
                check()  # a stop takes effect at the next socket call, even a non-blocking one
                raw = values.from_address(args)
                raw[0] = handler(caller, raw[0:words:stride])
                return 0
            except _Stopped:
                return _trap(f"donjon: the run was ended ({self._control.reason})")
            except BaseException as e:  # a bug: keep it for the executor, stop the guest
                self.error = e
                return _trap("donjon: internal error in the socket layer")

        return callback

    def _guest(self, caller: int, pages: int) -> GuestView:
        if pages != self._pages:
            memory = self._memory
            if memory is None:
                raise RuntimeError("socket callback after the run ended")
            context = _raw._wasmtime_caller_context(ctypes.cast(caller, _CALLER_P))
            data = _raw._wasmtime_memory_data(context, ctypes.byref(memory._memory))
            size = _raw._wasmtime_memory_data_size(context, ctypes.byref(memory._memory))
            address = ctypes.cast(data, ctypes.c_void_p).value or 0
            array = (ctypes.c_ubyte * size).from_address(address)
            self._mem = GuestView(memoryview(array).cast("B"))
            self._pages = pages
        return self._mem

    def _alloc(self) -> int:
        """The lowest free guest fd (POSIX), or -1 when the map is full."""
        fdmap = self._fdmap
        high = int(fdmap[_HIGH_WATER])
        try:
            fd = int(fdmap[0:high].index(0))
        except ValueError:
            fd = high
        if fd >= MAX_GUEST_FDS:
            return -1
        if fd >= high:
            fdmap[_HIGH_WATER] = fd + 1
        return fd

    def _wait(self, endpoint: Endpoint, write: bool, timeout_s: float | None = None) -> bool:
        """Wait until ``endpoint`` may be ready; False when ``timeout_s`` passed first."""
        control = self._control
        target = endpoint.wait_on(write)
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            control.check()
            if endpoint.ready(write):
                return True
            now = time.monotonic()
            limit = WAIT_SLICE_S
            if control.deadline is not None:
                limit = min(limit, control.deadline - now)
            if end is not None:
                if now >= end:
                    return False
                limit = min(limit, end - now)
            poller = select.poll()
            poller.register(control.fileno(), _POLLIN)
            if target is not None:
                poller.register(target[0], target[1])
            for fd, _events in poller.poll(max(0, math.ceil(limit * 1000))):
                if target is not None and fd == target[0]:
                    return True

    # -- fd_* and sock_* -------------------------------------------------------------------

    def _stream(self, fd: int) -> Stream | int:
        endpoint = self._endpoints.get(fd)
        if endpoint is None:
            return Errno.BADF
        if isinstance(endpoint, _LISTENER_TYPES):
            return Errno.NOTCONN  # read/write on a listening socket (Linux: ENOTCONN)
        return cast(Stream, endpoint)  # streams and null

    def _fd_read(self, caller: int, a: list[int]) -> int:
        return self._recv(caller, a[0] & _M, a[1] & _M, a[2] & _M, 0, a[3] & _M, -1, a[4] & _M)

    def _sock_recv(self, caller: int, a: list[int]) -> int:
        return self._recv(
            caller, a[0] & _M, a[1] & _M, a[2] & _M, a[3] & _M, a[4] & _M, a[5] & _M, a[6] & _M
        )

    def _recv(
        self,
        caller: int,
        fd: int,
        iovs: int,
        count: int,
        flags: int,
        len_ptr: int,
        flags_ptr: int,
        pages: int,
    ) -> int:
        stream = self._stream(fd)
        if isinstance(stream, int):
            return stream
        if flags & ~(RIFLAGS_RECV_PEEK | RIFLAGS_RECV_WAITALL):
            return Errno.NOTSUP
        mem = self._guest(caller, pages)
        try:
            bufs = mem.iovecs(iovs, count)
            mem.check(len_ptr, 4)
            if flags_ptr >= 0:
                mem.check(flags_ptr, 2)
        except Fault:
            return Errno.FAULT
        except ValueError:
            return Errno.INVAL
        peek = bool(flags & RIFLAGS_RECV_PEEK)
        waitall = bool(flags & RIFLAGS_RECV_WAITALL) and not peek
        got = 0
        while bufs:
            n = stream.recv(bufs, peek)
            if n > 0:
                got += n
                if not waitall:
                    break
                bufs = _advance(bufs, n)
                continue
            if n == 0:
                break
            if n == -Errno.AGAIN:
                if got and not waitall:
                    break
                if stream.nonblocking:
                    if got:
                        break
                    return Errno.AGAIN
                self._wait(stream, False)
                continue
            if got:
                break
            return -n
        mem.put_u32(len_ptr, got)
        if flags_ptr >= 0:
            mem.put_u16(flags_ptr, 0)
        return Errno.SUCCESS

    def _fd_write(self, caller: int, a: list[int]) -> int:
        return self._send(caller, a[0] & _M, a[1] & _M, a[2] & _M, a[3] & _M, a[4] & _M)

    def _sock_send(self, caller: int, a: list[int]) -> int:
        if a[3] & _M:
            return Errno.NOTSUP  # WASI defines no siflags
        return self._send(caller, a[0] & _M, a[1] & _M, a[2] & _M, a[4] & _M, a[5] & _M)

    def _send(self, caller: int, fd: int, iovs: int, count: int, len_ptr: int, pages: int) -> int:
        stream = self._stream(fd)
        if isinstance(stream, int):
            return stream
        mem = self._guest(caller, pages)
        try:
            bufs = mem.iovecs(iovs, count)
            mem.check(len_ptr, 4)
        except Fault:
            return Errno.FAULT
        except ValueError:
            return Errno.INVAL
        sent = 0
        while bufs:
            n = stream.send(bufs)
            if n > 0:
                sent += n
                if stream.nonblocking:
                    break
                bufs = _advance(bufs, n)
                continue
            if n == -Errno.AGAIN:
                if stream.nonblocking:
                    if sent:
                        break
                    return Errno.AGAIN
                if self._wait(stream, True, self._stall_s):
                    continue
                if sent:
                    break
                return Errno.TIMEDOUT  # a peer that does not read, as with SO_SNDTIMEO
            if sent:
                break
            return -n
        mem.put_u32(len_ptr, sent)
        return Errno.SUCCESS

    def _sock_accept(self, caller: int, a: list[int]) -> int:
        fd, flags, ret_ptr, pages = a[0] & _M, a[1] & _M, a[2] & _M, a[3] & _M
        endpoint = self._endpoints.get(fd)
        if endpoint is None:
            return Errno.BADF
        if isinstance(endpoint, NullEndpoint):
            return Errno.NOTSOCK
        if not isinstance(endpoint, _LISTENER_TYPES):
            return Errno.INVAL  # accept on a connected socket (Linux: EINVAL)
        listener: Listener = endpoint
        if flags & ~FDFLAGS_NONBLOCK:
            return Errno.INVAL
        mem = self._guest(caller, pages)
        try:
            mem.check(ret_ptr, 4)  # before a connection is taken off the queue
        except Fault:
            return Errno.FAULT
        while True:
            result = listener.accept()
            if not isinstance(result, int):
                break
            if result != -Errno.AGAIN:
                return -result
            if listener.nonblocking:
                return Errno.AGAIN
            if listener.exhausted():
                return Errno.MFILE  # at max_connections: only a close by this guest frees one
            self._wait(listener, False)
        new_fd = self._alloc()
        if new_fd < 0:
            result.close()
            return Errno.NFILE
        result.nonblocking = bool(flags & FDFLAGS_NONBLOCK)
        self._endpoints[new_fd] = result
        self._fdmap[new_fd] = -1
        mem.put_u32(ret_ptr, new_fd)
        return Errno.SUCCESS

    def _sock_shutdown(self, caller: int, a: list[int]) -> int:
        fd, how = a[0] & _M, a[1] & _M
        endpoint = self._endpoints.get(fd)
        if endpoint is None:
            return Errno.BADF
        if isinstance(endpoint, NullEndpoint):
            return Errno.NOTSOCK
        if isinstance(endpoint, _LISTENER_TYPES):
            return Errno.NOTCONN
        if how not in (1, 2, 3):
            return Errno.INVAL
        stream = cast(Stream, endpoint)
        result = stream.shutdown(how)
        return -result if result < 0 else Errno.SUCCESS

    def _fd_fdstat_get(self, caller: int, a: list[int]) -> int:
        endpoint = self._endpoints.get(a[0] & _M)
        if endpoint is None:
            return Errno.BADF
        mem = self._guest(caller, a[2] & _M)
        try:
            mem.put_fdstat(a[1] & _M, endpoint.filetype, endpoint.fdflags(), endpoint.rights)
        except Fault:
            return Errno.FAULT
        return Errno.SUCCESS

    def _fd_fdstat_set_flags(self, caller: int, a: list[int]) -> int:
        endpoint = self._endpoints.get(a[0] & _M)
        if endpoint is None:
            return Errno.BADF
        # Only O_NONBLOCK means anything on a socket; Linux ignores the others here too.
        endpoint.nonblocking = bool(a[1] & FDFLAGS_NONBLOCK)
        return Errno.SUCCESS

    def _fd_filestat_get(self, caller: int, a: list[int]) -> int:
        endpoint = self._endpoints.get(a[0] & _M)
        if endpoint is None:
            return Errno.BADF
        mem = self._guest(caller, a[2] & _M)
        try:
            mem.put_filestat(a[1] & _M, endpoint.filetype)
        except Fault:
            return Errno.FAULT
        return Errno.SUCCESS

    def _close(self, caller: int, a: list[int]) -> int:
        endpoint = self._endpoints.pop(a[0] & _M, None)
        if endpoint is None:
            return Errno.BADF
        try:
            endpoint.close()
        except OSError:
            pass  # the fd is gone either way, as with close(2)
        return Errno.SUCCESS

    def _move(self, caller: int, a: list[int]) -> int:
        endpoint = self._endpoints.pop(a[0] & _M, None)
        if endpoint is None:
            return Errno.BADF
        self._endpoints[a[1] & _M] = endpoint
        return Errno.SUCCESS

    # -- poll_oneoff -----------------------------------------------------------------------

    def _poll(self, caller: int, a: list[int]) -> int:
        in_ptr, out_ptr, nsubs, nevents_ptr = a[0] & _M, a[1] & _M, a[2] & _M, a[3] & _M
        wasm_now_ns, pages = a[4], a[5] & _M
        mem = self._guest(caller, pages)
        try:
            subs = parse_subscriptions(mem, in_ptr, nsubs)
            mem.check(out_ptr, nsubs * EVENT_BYTES)
            mem.check(nevents_ptr, 4)
        except Fault:
            return Errno.FAULT
        except ValueError:
            return Errno.INVAL
        host_now = time.monotonic_ns()
        deadline_ns: int | None = None
        clocks: list[tuple[ClockSubscription, int]] = []
        mine: list[tuple[FdSubscription, Endpoint]] = []
        theirs: list[tuple[FdSubscription, int]] = []
        fdmap = self._fdmap
        for sub in subs:
            if isinstance(sub, ClockSubscription):
                expiry = _expiry(sub, host_now, wasm_now_ns)
                if expiry is None:
                    return Errno.INVAL
                clocks.append((sub, expiry))
                deadline_ns = expiry if deadline_ns is None else min(deadline_ns, expiry)
                continue
            value = fdmap[sub.fd] if sub.fd < MAX_GUEST_FDS else 0
            if value == 0:
                return Errno.BADF
            if value < 0:
                mine.append((sub, self._endpoints[sub.fd]))
            else:
                theirs.append((sub, value - 1))
        events = self._poll_loop(caller, mem, in_ptr, out_ptr, nevents_ptr, mine, theirs, clocks)
        events.sort(key=lambda pair: pair[0])
        pack_events(mem, out_ptr, [event for _, event in events])
        mem.put_u32(nevents_ptr, len(events))
        return Errno.SUCCESS

    def _poll_loop(
        self,
        caller: int,
        mem: GuestView,
        in_ptr: int,
        out_ptr: int,
        nevents_ptr: int,
        mine: list[tuple[FdSubscription, Endpoint]],
        theirs: list[tuple[FdSubscription, int]],
        clocks: list[tuple[ClockSubscription, int]],
    ) -> list[tuple[int, Event]]:
        control = self._control
        deadline_ns = min((expiry for _, expiry in clocks), default=None)
        while True:
            control.check()
            events: list[tuple[int, Event]] = []
            waiting: dict[int, list[tuple[FdSubscription, Endpoint, int]]] = {}
            for sub, endpoint in mine:
                if endpoint.ready(sub.write):
                    events.append((sub.position, _fd_event(sub, 0)))
                    continue
                target = endpoint.wait_on(sub.write)
                if target is not None:
                    waiting.setdefault(target[0], []).append((sub, endpoint, target[1]))
            if theirs:
                events += self._probe(caller, mem, in_ptr, out_ptr, nevents_ptr, theirs)
            now = time.monotonic_ns()
            if events:
                timeout_ms = 0
            else:
                limit_ns = int(WAIT_SLICE_S * 1e9)
                if theirs:
                    limit_ns = int(WASMTIME_POLL_SLICE_S * 1e9)
                if deadline_ns is not None:
                    limit_ns = min(limit_ns, deadline_ns - now)
                if control.deadline is not None:
                    limit_ns = min(limit_ns, int((control.deadline - time.monotonic()) * 1e9))
                timeout_ms = max(0, math.ceil(limit_ns / 1e6))
            if waiting or timeout_ms:
                poller = select.poll()
                poller.register(control.fileno(), _POLLIN)
                for fd, entries in waiting.items():
                    mask = 0
                    for _sub, _endpoint, wanted in entries:
                        mask |= wanted
                    poller.register(fd, mask)
                for fd, revents in poller.poll(timeout_ms):
                    for sub, endpoint, wanted in waiting.get(fd, ()):
                        if not revents & (wanted | HANGUP_EVENTS):
                            continue
                        if sub.write and not endpoint.ready(True):
                            continue  # TLS ciphertext still waiting for the socket
                        hangup = bool(revents & HANGUP_EVENTS)
                        events.append((sub.position, _fd_event(sub, 0, hangup=hangup)))
            if events:
                return events
            now = time.monotonic_ns()
            if deadline_ns is not None and now >= deadline_ns:
                return [
                    (sub.position, Event(sub.userdata, 0, EVENTTYPE_CLOCK))
                    for sub, expiry in clocks
                    if expiry <= now
                ]

    def _probe(
        self,
        caller: int,
        mem: GuestView,
        in_ptr: int,
        out_ptr: int,
        nevents_ptr: int,
        theirs: list[tuple[FdSubscription, int]],
    ) -> list[tuple[int, Event]]:
        """Ask wasmtime, without waiting, which of its own fds are ready.

        The guest's subscription array is borrowed: it holds at least one more subscription
        (a Python fd's) than wasmtime's fds, so they fit with a zero-timeout clock.
        """
        count = len(theirs) + 1
        size = count * SUBSCRIPTION_BYTES
        saved = bytes(mem.view[in_ptr : in_ptr + size])
        try:
            for j, (sub, inner) in enumerate(theirs):
                pack_subscription_fd(mem, in_ptr + j * SUBSCRIPTION_BYTES, j, sub.write, inner)
            pack_subscription_clock_now(
                mem, in_ptr + len(theirs) * SUBSCRIPTION_BYTES, _PROBE_USERDATA
            )
            errno = self._call_orig_poll(caller, in_ptr, out_ptr, count, nevents_ptr)
            found = [] if errno else unpack_events(mem, out_ptr, mem.get_u32(nevents_ptr))
        finally:
            mem.view[in_ptr : in_ptr + size] = saved
        if errno:
            return [(sub.position, _fd_event(sub, errno)) for sub, _ in theirs]
        out = []
        for event in found:
            if event.type == EVENTTYPE_CLOCK or event.userdata >= len(theirs):
                continue
            sub, _ = theirs[event.userdata]
            out.append(
                (
                    sub.position,
                    Event(sub.userdata, event.error, event.type, event.nbytes, event.hangup),
                )
            )
        return out

    def _call_orig_poll(self, caller: int, *args: int) -> int:
        func = self._orig_poll
        if func is None:
            raise RuntimeError("socket callback after the run ended")
        words = self._call_words
        for i, value in enumerate(args):
            words[i * _VAL_WORDS] = value
        context = _raw._wasmtime_caller_context(ctypes.cast(caller, _CALLER_P))
        trap = ctypes.POINTER(_ffi.wasm_trap_t)()
        error = _raw._wasmtime_func_call_unchecked(
            context, ctypes.byref(func._func), self._call_buf, len(args), ctypes.byref(trap)
        )
        trapped = ctypes.cast(trap, ctypes.c_void_p).value is not None
        if error or trapped:
            if error:
                _raw.wasmtime_error_delete(error)
            if trapped:
                _raw.wasm_trap_delete(trap)
            raise RuntimeError("wasmtime's poll_oneoff trapped when called from the socket layer")
        return int(words[0]) & _M


def _fd_event(sub: FdSubscription, error: int, *, hangup: bool = False) -> Event:
    kind = EVENTTYPE_FD_WRITE if sub.write else EVENTTYPE_FD_READ
    return Event(sub.userdata, error, kind, 0, hangup)


def _expiry(sub: ClockSubscription, host_now_ns: int, wasm_now_ns: int) -> int | None:
    """When a clock subscription fires, on ``time.monotonic_ns()``'s clock."""
    if not sub.absolute:
        return host_now_ns + sub.timeout_ns
    if sub.clock_id == CLOCKID_REALTIME:
        return host_now_ns + (sub.timeout_ns - time.time_ns())
    if sub.clock_id == CLOCKID_MONOTONIC:
        return host_now_ns + (sub.timeout_ns - wasm_now_ns)
    return None  # the CPU-time clocks cannot be waited on (wasmtime refuses them too)


def _advance(bufs: Sequence[memoryview], n: int) -> list[memoryview]:
    out = []
    for buf in bufs:
        if n >= len(buf):
            n -= len(buf)
            continue
        out.append(buf[n:])
        n = 0
    return out


def _trap(message: str) -> int:
    text = message.encode()
    trap = _raw._wasmtime_trap_new(ctypes.create_string_buffer(text), len(text))
    return ctypes.cast(trap, ctypes.c_void_p).value or 0
