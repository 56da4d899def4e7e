"""SparePool: the warm spare pool's policy, without processes (times are plain numbers)."""

from __future__ import annotations

import re

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from donjon.errors import ConfigError
from donjon.host.pool import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    MAX_SPARES,
    MAX_WARMING,
    WARMUP_TIMEOUT_S,
    PoolStatus,
    SparePool,
)


def _fill(pool: SparePool, now: float, first_key: int = 100) -> list[int]:
    """Start every spare that is due now; their keys."""
    keys = list(range(first_key, first_key + pool.spawns_due(now)))
    for key in keys:
        pool.spawned(key, now)
    return keys


def test_a_pool_of_three_warms_two_at_a_time_then_the_third() -> None:
    pool = SparePool(3)
    assert pool.spawns_due(0.0) == MAX_WARMING == 2  # Rule 1
    assert _fill(pool, 0.0) == [100, 101]
    assert pool.spawns_due(0.1) == 0
    pool.ready(100, 0.6)
    assert pool.spawns_due(0.6) == 1
    pool.spawned(102, 0.6)
    assert pool.spawns_due(0.7) == 0  # three exist: nothing more, ever
    pool.ready(101, 0.7)
    pool.ready(102, 1.2)
    assert pool.spawns_due(5.0) == 0
    assert pool.status(5.0) == PoolStatus(target=3, ready=3, warming=0, failures=0, closed=False)


def test_a_keep_takes_the_longest_ready_spare_then_the_longest_warming_then_none() -> None:
    pool = SparePool(3, max_warming=3)
    _fill(pool, 0.0)  # 100, 101, 102
    pool.ready(101, 0.5)
    pool.ready(100, 0.8)
    assert pool.peek() == 101  # Rule 2: ready first, the one that has waited longest
    assert pool.take() == 101
    assert pool.take() == 100
    assert pool.take() == 102  # still warming, but ahead of a cold start
    assert pool.take() is None
    assert pool.peek() is None


def test_taken_spares_are_replaced_and_at_most_two_warm_up_at_once() -> None:
    pool = SparePool(4)
    _fill(pool, 0.0)
    pool.ready(100, 0.5)
    pool.ready(101, 0.5)
    _fill(pool, 0.5, first_key=102)
    pool.ready(102, 1.0)
    pool.ready(103, 1.0)
    # A burst takes every spare: four are missing, two start.
    assert [pool.take() for _ in range(4)] == [100, 101, 102, 103]
    assert pool.spawns_due(1.1) == 2
    _fill(pool, 1.1, first_key=200)
    assert pool.spawns_due(1.2) == 0
    pool.ready(200, 1.6)
    assert pool.spawns_due(1.6) == 1
    assert pool.status(1.6).spares == 2


def test_a_spare_that_ends_is_replaced_and_unknown_keys_are_ignored() -> None:
    pool = SparePool(1)
    _fill(pool, 0.0)
    pool.ready(100, 0.5)
    pool.ended(100, 3.0)  # killed while ready: not a warm-up failure
    assert pool.status(3.0).failures == 0
    assert pool.spawns_due(3.0) == 1
    pool.ended(999, 3.0)
    pool.ready(999, 3.0)
    assert pool.keys == ()


def test_spares_dying_while_warming_up_back_off_one_at_a_time() -> None:
    pool = SparePool(3)
    now = 0.0
    delays = []
    for attempt in range(12):
        due = pool.spawns_due(now)
        assert due == (2 if attempt == 0 else 1)  # Rule 3: one probe at a time once failing
        pool.spawned(attempt, now)
        now += 0.1
        pool.ended(attempt, now)  # died young
        wait = pool.next_check(now)
        assert wait is not None
        delays.append(round(wait, 3))
        assert pool.spawns_due(now + wait - 0.01) == 0
        now += wait
    expected = [min(BACKOFF_FIRST_S * 2**i, BACKOFF_MAX_S) for i in range(12)]
    assert delays == expected
    assert pool.status(now).failures == 12


def test_a_spare_that_warms_up_ends_the_back_off() -> None:
    pool = SparePool(2)
    _fill(pool, 0.0)
    pool.ended(100, 0.2)
    assert pool.status(0.2).failures == 1
    assert pool.spawns_due(0.3) == 0  # backing off
    pool.ready(101, 0.4)
    assert pool.status(0.4).failures == 0
    assert pool.spawns_due(0.4) == 1  # no more delay


def test_a_spare_that_cannot_report_stops_counting_as_warming_after_the_timeout() -> None:
    pool = SparePool(3)
    _fill(pool, 0.0)
    assert pool.spawns_due(WARMUP_TIMEOUT_S - 0.01) == 0
    assert pool.next_check(1.0) == pytest.approx(WARMUP_TIMEOUT_S - 1.0)
    assert pool.spawns_due(WARMUP_TIMEOUT_S) == 1  # Rule 4
    # Such a spare is still taken (oldest first) and ending late is not a failure.
    pool.ended(100, WARMUP_TIMEOUT_S + 1)
    assert pool.status(WARMUP_TIMEOUT_S + 1).failures == 0


def test_only_a_spare_started_after_the_failures_ends_them_by_living_long() -> None:
    pool = SparePool(3)
    _fill(pool, 0.0)  # 100 lives on, unable to report
    pool.ended(101, 0.2)  # fails
    later = WARMUP_TIMEOUT_S + 1
    assert pool.status(later).failures == 1  # 100 is older than the failure: proves nothing
    pool.spawned(102, later)
    assert pool.status(later + WARMUP_TIMEOUT_S).failures == 0


def test_a_closed_pool_starts_nothing_gives_nothing_and_returns_its_spares() -> None:
    pool = SparePool(2)
    _fill(pool, 0.0)
    assert pool.close() == (100, 101)  # Rule 5
    assert pool.spawns_due(1.0) == 0
    assert pool.take() is None
    assert pool.next_check(1.0) is None
    assert pool.status(1.0).closed
    with pytest.raises(ConfigError, match="closed"):
        pool.spawned(102, 1.0)


def test_zero_spares_is_a_pool_that_never_starts_one() -> None:
    pool = SparePool(0)
    assert pool.spawns_due(0.0) == 0
    assert pool.take() is None
    assert pool.next_check(0.0) is None


@pytest.mark.parametrize("target", [-1, MAX_SPARES + 1, True])
def test_out_of_range_targets_are_refused(target: int) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"0..{MAX_SPARES}")):
        SparePool(target)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_warming"):
        SparePool(1, max_warming=0)
    with pytest.raises(ConfigError, match="timeout"):
        SparePool(1, warmup_timeout_s=0)


class PoolMachine(RuleBasedStateMachine):
    """Any sequence of events keeps Rules 1, 2 and 5."""

    @initialize(spares=st.integers(0, MAX_SPARES), max_warming=st.integers(1, 4))
    def start(self, spares: int, max_warming: int) -> None:
        self.pool = SparePool(spares, max_warming=max_warming)
        self.max_warming = max_warming
        self.now = 0.0
        self.next_key = 1
        self.ready: set[int] = set()

    @rule(dt=st.floats(0, 15))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule()
    def spawn_what_is_due(self) -> None:
        for _ in range(self.pool.spawns_due(self.now)):
            self.pool.spawned(self.next_key, self.now)
            self.next_key += 1

    @rule()
    def spawn_fails(self) -> None:
        if self.pool.spawns_due(self.now):
            self.pool.spawn_failed(self.now)

    @precondition(lambda self: self.pool.keys)
    @rule(data=st.data())
    def one_warms_up(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.pool.keys))
        self.pool.ready(key, self.now)
        self.ready.add(key)

    @precondition(lambda self: self.pool.keys)
    @rule(data=st.data())
    def one_ends(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.pool.keys))
        self.pool.ended(key, self.now)

    @rule()
    def a_keep_takes_one(self) -> None:
        had_ready = bool(set(self.pool.keys) & self.ready)
        key = self.pool.take()
        if had_ready:
            assert key in self.ready  # Rule 2
        assert key is None or key not in self.pool.keys

    @rule()
    def close(self) -> None:
        self.pool.close()
        assert self.pool.keys == ()
        assert self.pool.spawns_due(self.now + 100) == 0

    @invariant()
    def bounded(self) -> None:
        status = self.pool.status(self.now)
        assert status.spares <= status.target  # Rule 1
        assert len(set(self.pool.keys)) == len(self.pool.keys)
        due = self.pool.spawns_due(self.now)
        assert 0 <= due <= self.max_warming
        assert status.spares + due <= status.target


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
