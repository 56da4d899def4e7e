"""Nonces: MAC-protected, time-bounded, single use per replica, bounded cache."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.errors import FreshnessError
from donjon.steward.nonce import (
    MAX_CLOCK_SKEW,
    MAX_TRACKED_NONCES,
    NONCE_BYTES,
    NonceBook,
    NonceCapacityError,
    SharedReplayCache,
)

KEY = bytes(range(32))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_nonce_layout_is_exact() -> None:
    book = NonceBook(KEY, random_bytes=lambda n: b"\xaa" * n)
    issued = book.issue(T0)
    assert len(issued.value) == NONCE_BYTES == 57
    assert issued.value[0] == 1
    assert issued.value[1:17] == b"\xaa" * 16
    assert int.from_bytes(issued.value[17:25], "big") == issued.expires_at
    assert issued.expires_at == int(T0.timestamp()) + 60


def test_issued_nonce_is_accepted_once() -> None:
    book = NonceBook(KEY)
    nonce = book.issue(T0).value
    book.consume(nonce, T0 + timedelta(seconds=59))
    assert len(book) == 1
    with pytest.raises(FreshnessError, match="already used"):
        book.consume(nonce, T0 + timedelta(seconds=59))


def test_expired_nonce_is_refused() -> None:
    book = NonceBook(KEY, lifetime=timedelta(seconds=60))
    nonce = book.issue(T0).value
    book.check(nonce, T0 + timedelta(seconds=60))  # the expiry second itself is still valid
    with pytest.raises(FreshnessError, match=r"expired at .* \(1 s ago\)"):
        book.consume(nonce, T0 + timedelta(seconds=61))
    assert len(book) == 0


def test_other_replica_with_the_same_key_accepts_and_tracks_separately() -> None:
    a, b = NonceBook(KEY), NonceBook(KEY)
    nonce = a.issue(T0).value
    b.consume(nonce, T0)
    # Documented limit: without sticky sessions, replica A has not seen it used.
    a.consume(nonce, T0)
    with pytest.raises(FreshnessError, match="already used"):
        b.consume(nonce, T0)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda n: n[:-1], "not one this Steward issued"),
        (lambda n: b"\x02" + n[1:], "not one this Steward issued"),
        (lambda n: n[:5] + bytes([n[5] ^ 1]) + n[6:], "MAC does not verify"),
        (lambda n: n[:-1] + bytes([n[-1] ^ 1]), "MAC does not verify"),
        (lambda n: n[:24] + bytes([n[24] ^ 0x10]) + n[25:], "MAC does not verify"),
    ],
)
def test_forged_or_altered_nonces_are_refused(mutate: object, message: str) -> None:
    book = NonceBook(KEY)
    nonce = book.issue(T0).value
    with pytest.raises(FreshnessError, match=message):
        book.consume(mutate(nonce), T0)  # type: ignore[operator]


def test_nonce_from_a_steward_with_another_key_is_refused() -> None:
    nonce = NonceBook(bytes(32)).issue(T0).value
    with pytest.raises(FreshnessError, match="another CA key"):
        NonceBook(KEY).consume(nonce, T0)


def test_nonce_from_a_replica_whose_clock_runs_ahead_is_refused() -> None:
    ahead = NonceBook(KEY).issue(T0 + MAX_CLOCK_SKEW + timedelta(seconds=1)).value
    with pytest.raises(FreshnessError, match="clock is ahead"):
        NonceBook(KEY).consume(ahead, T0)
    within = NonceBook(KEY).issue(T0 + MAX_CLOCK_SKEW).value
    NonceBook(KEY).consume(within, T0)


def test_full_cache_fails_closed_then_recovers_after_expiry() -> None:
    book = NonceBook(KEY, max_tracked=3)
    for _ in range(3):
        book.consume(book.issue(T0).value, T0)
    late = book.issue(T0 + timedelta(seconds=30)).value
    with pytest.raises(NonceCapacityError, match="retry"):
        book.consume(late, T0 + timedelta(seconds=30))
    # Once the first three expire they are forgotten and there is room again.
    book.consume(late, T0 + timedelta(seconds=61))
    assert len(book) == 1


def test_naive_time_and_short_key_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NonceBook(b"short")
    with pytest.raises(ValueError, match="timezone-aware"):
        NonceBook(KEY).issue(datetime(2026, 1, 1))


# -- replay caches -------------------------------------------------------------------------------


def _books(**kwargs: object) -> list[NonceBook]:
    """One book per cache kind, same key and settings."""
    max_tracked = kwargs.pop("max_tracked", MAX_TRACKED_NONCES)
    assert isinstance(max_tracked, int)
    return [
        NonceBook(KEY, max_tracked=max_tracked, **kwargs),  # type: ignore[arg-type]
        NonceBook(KEY, replay_cache=SharedReplayCache(max_tracked), **kwargs),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize("kind", [0, 1], ids=["local", "shared"])
def test_both_caches_refuse_replays_and_fail_closed_when_full(kind: int) -> None:
    book = _books(max_tracked=3)[kind]
    nonces = [book.issue(T0).value for _ in range(3)]
    for nonce in nonces:
        book.consume(nonce, T0)
    assert len(book) == 3
    with pytest.raises(FreshnessError, match="already used"):
        book.consume(nonces[1], T0 + timedelta(seconds=10))
    late = book.issue(T0 + timedelta(seconds=30)).value
    with pytest.raises(NonceCapacityError, match="retry"):
        book.consume(late, T0 + timedelta(seconds=30))
    # The first three expire (60 s lifetime): forgotten, room again.
    book.consume(late, T0 + timedelta(seconds=61))
    assert len(book) == 1


def test_shared_cache_counts_only_unexpired_entries() -> None:
    cache = SharedReplayCache(100)
    book = NonceBook(KEY, replay_cache=cache)
    for second in range(5):
        book.consume(
            book.issue(T0 + timedelta(seconds=second)).value, T0 + timedelta(seconds=second)
        )
    assert len(cache) == 5
    # Issued at T0+0..4, they expire at T0+60..64 (valid through that second): at T0+62 the
    # first two are gone, three remain, and the new one counts.
    book.consume(book.issue(T0 + timedelta(seconds=62)).value, T0 + timedelta(seconds=62))
    assert len(cache) == 4
    # A jump far ahead forgets everything at once.
    book.consume(book.issue(T0 + timedelta(hours=2)).value, T0 + timedelta(hours=2))
    assert len(cache) == 1
    cache.close()


def test_shared_cache_is_shared_with_forked_workers() -> None:
    cache = SharedReplayCache(1000)
    book = NonceBook(KEY, replay_cache=cache)
    used_by_child, fresh = book.issue(T0).value, book.issue(T0).value
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            NonceBook(KEY, replay_cache=cache).consume(used_by_child, T0)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent (another worker) sees the child's use, and the child's count.
    with pytest.raises(FreshnessError, match="already used"):
        book.consume(used_by_child, T0 + timedelta(seconds=1))
    assert len(cache) == 1
    book.consume(fresh, T0 + timedelta(seconds=1))
    assert len(cache) == 2
    cache.close()


def test_shared_cache_must_cover_the_nonce_lifetime() -> None:
    with pytest.raises(ValueError, match="need 150 s"):
        NonceBook(KEY, lifetime=timedelta(minutes=2), replay_cache=SharedReplayCache(10))
    NonceBook(
        KEY,
        lifetime=timedelta(minutes=2),
        replay_cache=SharedReplayCache(10, horizon=timedelta(minutes=2) + MAX_CLOCK_SKEW),
    )
    with pytest.raises(ValueError, match="at least 1"):
        SharedReplayCache(0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 200), st.booleans()), min_size=1, max_size=40
    )
)
def test_shared_cache_decides_like_the_local_one(ops: list[tuple[int, int, bool]]) -> None:
    """Model check: the same consumes, in time order, get the same answers from both caches."""
    local, shared = _books(max_tracked=6)
    pool = [local.issue(T0 + timedelta(seconds=10 * i)).value for i in range(8)]
    clock = 0
    for index, step, forged in sorted(ops, key=lambda op: op[1]):
        clock = max(clock, step)
        now = T0 + timedelta(seconds=clock)
        nonce = pool[index] if not forged else pool[index][:-1] + bytes([pool[index][-1] ^ 1])
        answers = []
        for book in (local, shared):
            try:
                book.consume(nonce, now)
                answers.append("ok")
            except NonceCapacityError:
                answers.append("full")
            except FreshnessError as e:
                answers.append("replay" if "already used" in e.message else "stale")
        assert answers[0] == answers[1], (index, clock, answers)
        assert len(local) >= len(shared)  # the local count lags: it purges lazily
