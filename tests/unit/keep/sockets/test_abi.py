"""WASI preview 1 layouts: exact bytes both ways, bounds, and hostile input (Hypothesis)."""

from __future__ import annotations

import errno
import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.keep.sockets.abi import (
    EVENT_BYTES,
    MAX_IOVECS,
    SUBSCRIPTION_BYTES,
    ClockSubscription,
    Errno,
    Event,
    Fault,
    FdSubscription,
    GuestView,
    errno_for,
    pack_events,
    pack_subscription_clock_now,
    pack_subscription_fd,
    parse_subscriptions,
    unpack_events,
)


def view(size: int = 4096) -> GuestView:
    return GuestView(memoryview(bytearray(size)))


# (subscription, exact 48 bytes): wasi-libc's __wasi_subscription_t layout
SUBSCRIPTIONS = [
    (
        FdSubscription(0, 0x1122334455667788, 7, write=False),
        struct.pack("<QB7xI28x", 0x1122334455667788, 1, 7),
    ),
    (FdSubscription(0, 1, 0xFFFFFFFF, write=True), struct.pack("<QB7xI28x", 1, 2, 0xFFFFFFFF)),
    (
        ClockSubscription(0, 9, 0, 1_000_000, absolute=False),
        struct.pack("<QB7xI4xQQH6x", 9, 0, 0, 1_000_000, 0, 0),
    ),
    (
        ClockSubscription(0, 9, 1, 5, absolute=True),
        struct.pack("<QB7xI4xQQH6x", 9, 0, 1, 5, 1000, 1),
    ),
]


@pytest.mark.parametrize(("expected", "raw"), SUBSCRIPTIONS)
def test_subscriptions_decode_exactly(expected: object, raw: bytes) -> None:
    assert len(raw) == SUBSCRIPTION_BYTES
    mem = view()
    mem.view[64 : 64 + len(raw)] = raw
    assert parse_subscriptions(mem, 64, 1) == [expected]


def test_probe_subscriptions_encode_exactly() -> None:
    mem = view()
    mem.view[0:96] = b"\xff" * 96
    pack_subscription_fd(mem, 0, 3, True, 42)
    pack_subscription_clock_now(mem, 48, 0xFFFF_FFFF_FFFF_FFFF)
    assert bytes(mem.view[0:48]) == struct.pack("<QB7xI28x", 3, 2, 42)
    assert bytes(mem.view[48:96]) == struct.pack("<QB7xI4xQQH6x", 2**64 - 1, 0, 1, 0, 0, 0)


EVENTS = [
    (Event(5, 0, 1, 0, False), struct.pack("<QHB5xQH6x", 5, 0, 1, 0, 0)),
    (Event(2**64 - 1, 8, 2, 17, True), struct.pack("<QHB5xQH6x", 2**64 - 1, 8, 2, 17, 1)),
    (Event(0, 0, 0), struct.pack("<QHB5xQH6x", 0, 0, 0, 0, 0)),
]


@pytest.mark.parametrize(("event", "raw"), EVENTS)
def test_events_encode_and_decode_exactly(event: Event, raw: bytes) -> None:
    assert len(raw) == EVENT_BYTES
    mem = view()
    pack_events(mem, 32, [event])
    assert bytes(mem.view[32:64]) == raw
    assert unpack_events(mem, 32, 1) == [event]


def test_bounds_are_checked_everywhere() -> None:
    mem = view(100)
    with pytest.raises(Fault):
        mem.span(90, 11)
    with pytest.raises(Fault):
        mem.put_u32(97, 1)
    with pytest.raises(Fault):
        mem.check(-1, 1)
    with pytest.raises(Fault):
        parse_subscriptions(mem, 60, 1)
    with pytest.raises(Fault):
        pack_events(mem, 80, [Event(0, 0, 0)])
    with pytest.raises(Fault):
        mem.put_fdstat(80, 6, 0, 0)
    assert bytes(mem.span(90, 10)) == bytes(10)


def test_iovecs_are_bounded_and_skip_empty_buffers() -> None:
    mem = view(256)
    struct.pack_into("<6I", mem.view, 0, 100, 5, 200, 0, 150, 3)
    bufs = mem.iovecs(0, 3)
    assert [len(b) for b in bufs] == [5, 3]
    bufs[0][:] = b"hello"
    assert bytes(mem.view[100:105]) == b"hello"
    struct.pack_into("<2I", mem.view, 0, 250, 10)  # buffer past the end
    with pytest.raises(Fault):
        mem.iovecs(0, 1)
    with pytest.raises(Fault):
        mem.iovecs(250, 1)  # the array itself past the end
    with pytest.raises(ValueError, match=str(MAX_IOVECS + 1)):
        mem.iovecs(0, MAX_IOVECS + 1)


def test_unknown_subscription_tag_is_invalid() -> None:
    mem = view()
    struct.pack_into("<QB", mem.view, 0, 1, 3)
    with pytest.raises(ValueError, match="3"):
        parse_subscriptions(mem, 0, 1)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BlockingIOError(errno.EAGAIN, "again"), Errno.AGAIN),
        (ConnectionResetError(errno.ECONNRESET, "reset"), Errno.CONNRESET),
        (BrokenPipeError(errno.EPIPE, "pipe"), Errno.PIPE),
        (OSError(errno.ENOTCONN, "not connected"), Errno.NOTCONN),
        (OSError(errno.EMFILE, "files"), Errno.MFILE),
        (OSError(errno.EOVERFLOW, "other"), Errno.IO),
        (OSError("no errno"), Errno.IO),
        (ssl.SSLError(1, "bad record mac"), Errno.CONNABORTED),
    ],
)
def test_host_errors_map_to_wasi_errnos(error: OSError, expected: int) -> None:
    assert errno_for(error) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=600), ptr=st.integers(0, 700), count=st.integers(0, 20))
def test_hostile_subscription_arrays_parse_or_fail_cleanly(
    data: bytes, ptr: int, count: int
) -> None:
    mem = GuestView(memoryview(bytearray(data)))
    try:
        subs = parse_subscriptions(mem, ptr, count)
    except (Fault, ValueError):
        return
    assert len(subs) == count
    assert [s.position for s in subs] == list(range(count))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=300), ptr=st.integers(0, 400), count=st.integers(0, 40))
def test_hostile_iovec_arrays_parse_or_fail_cleanly(data: bytes, ptr: int, count: int) -> None:
    mem = GuestView(memoryview(bytearray(data)))
    try:
        bufs = mem.iovecs(ptr, count)
    except (Fault, ValueError):
        return
    assert all(0 < len(b) <= len(data) for b in bufs)
