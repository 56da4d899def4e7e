"""Nonces: MAC-protected, time-bounded, single use per replica, bounded cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from donjon.errors import FreshnessError
from donjon.steward.nonce import (
    MAX_CLOCK_SKEW,
    NONCE_BYTES,
    NonceBook,
    NonceCapacityError,
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
