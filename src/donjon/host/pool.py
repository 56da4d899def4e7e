"""The warm spare pool's policy: which spare a new Keep takes, and when to start another.

Pure: no processes, no threads, no clock. :class:`donjon.host.launcher.ProcessLauncher` owns the
processes and tells the pool what happened (a spare started, warmed up, ended, was taken) with
the time on a monotonic clock; the pool answers what to do next.

Rule 1: at most ``target`` spares exist, and at most ``max_warming`` of them are warming up at
once: a burst that takes every spare does not start a dozen interpreters together on a 2-core
host (they would slow down each other and the Keeps just started), it refills them two by two.
Rule 2: a Keep takes a ready spare if there is one (the one that has waited longest), else the
spare that has been warming up longest (it is ahead of a cold start), else none (cold start).
Rule 3: a spare that ends before it is taken is forgotten, and another one is due. A spare that
ends while warming up counts as a failure; failures in a row delay the next start (0.5 s, 1 s,
2 s, ... up to 30 s) and allow one start at a time, so a broken environment does not become a
fork loop. A spare that warms up, or one started after the last failure that outlives the
warm-up timeout, ends the series.
Rule 4: a spare that reports no warm-up within ``warmup_timeout_s`` stops counting as warming
(Rule 1), so a spare that cannot say it is ready never stalls the pool.
Rule 5: after :meth:`SparePool.close` nothing is due and no spare can be taken; the spares it
returns are the caller's to discard.

Example::

    pool = SparePool(target=3)
    pool.spawns_due(now=0.0)        # 2: Rule 1
    pool.spawned(101, now=0.0)
    pool.ready(101, now=0.6)
    pool.take()                     # 101
"""

from __future__ import annotations

from dataclasses import dataclass

from donjon.errors import ConfigError

__all__ = [
    "DEFAULT_SPARES",
    "MAX_SPARES",
    "MAX_WARMING",
    "PoolStatus",
    "SparePool",
]

DEFAULT_SPARES = 1
"""Warm spares a keep manager keeps unless told otherwise (``donjon host serve --spares``)."""
MAX_SPARES = 16
"""Most warm spares a keep manager may keep: each idle spare is ~75 MiB RSS (a loader and a keep
runtime; docs/commands/host.md), so 16 is already ~1.2 GiB of a host's memory doing nothing."""
MAX_WARMING = 2
"""Spares warming up at once (Rule 1): one per core of the small hosts this runs on; each
warm-up is ~0.5 s of one core (imports, the wasmtime engine, the development key)."""
WARMUP_TIMEOUT_S = 10.0
"""After this many seconds a spare that has not reported its warm-up stops counting as warming
(Rule 4); a warm-up takes ~0.5-1 s on an idle host, a few seconds on a loaded one."""
BACKOFF_FIRST_S = 0.5
"""Delay before the next start after one spare ended while warming up (seconds); it doubles
with each further failure in a row (Rule 3)."""
BACKOFF_MAX_S = 30.0
"""Longest delay between starts while spares keep failing (seconds)."""


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """A snapshot of the pool.

    Attributes:
        target: how many spares the pool keeps.
        ready: spares whose keep runtime has warmed up.
        warming: spares still warming up (counting those past the warm-up timeout).
        failures: spares in a row that ended while warming up (Rule 3).
        closed: whether the pool was closed (Rule 5).
    """

    target: int
    ready: int
    warming: int
    failures: int
    closed: bool

    @property
    def spares(self) -> int:
        """All live spares, ready or not."""
        return self.ready + self.warming


@dataclass(slots=True)
class _Spare:
    key: int
    started_at: float
    ready_at: float | None = None


class SparePool:
    """The policy of a pool of warm spares, each known by a key (the launcher uses the pid).

    Args:
        target: spares to keep, 0 to :data:`MAX_SPARES` (0: every Keep starts cold).
        max_warming: spares warming up at once (Rule 1), at least 1.
        warmup_timeout_s: see Rule 4 (seconds).
        backoff_first_s: delay after the first failure (Rule 3, seconds).
        backoff_max_s: longest delay between starts while failing (seconds).

    Raises:
        ConfigError: a setting out of its range.
    """

    def __init__(
        self,
        target: int,
        *,
        max_warming: int = MAX_WARMING,
        warmup_timeout_s: float = WARMUP_TIMEOUT_S,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        if isinstance(target, bool) or not 0 <= target <= MAX_SPARES:
            raise ConfigError(f"spares must be 0..{MAX_SPARES}, not {target!r}")
        if max_warming < 1:
            raise ConfigError(f"max_warming must be at least 1, not {max_warming}")
        if warmup_timeout_s <= 0 or backoff_first_s < 0 or backoff_max_s < backoff_first_s:
            raise ConfigError("the warm-up timeout must be positive and the back-off ordered")
        self._target = target
        self._max_warming = max_warming
        self._warmup_timeout_s = warmup_timeout_s
        self._backoff_first_s = backoff_first_s
        self._backoff_max_s = backoff_max_s
        self._spares: dict[int, _Spare] = {}
        self._failures = 0
        self._last_failure_at = float("-inf")
        self._not_before = float("-inf")
        self._closed = False

    @property
    def target(self) -> int:
        return self._target

    @property
    def keys(self) -> tuple[int, ...]:
        """Every live spare, oldest first."""
        return tuple(self._spares)

    def status(self, now: float) -> PoolStatus:
        self._settle(now)
        ready = sum(1 for s in self._spares.values() if s.ready_at is not None)
        return PoolStatus(
            target=self._target,
            ready=ready,
            warming=len(self._spares) - ready,
            failures=self._failures,
            closed=self._closed,
        )

    # -- what to do --------------------------------------------------------------------------

    def spawns_due(self, now: float) -> int:
        """How many spares to start now (Rules 1, 3, 5)."""
        self._settle(now)
        if self._closed or now < self._not_before:
            return 0
        missing = self._target - len(self._spares)
        free = self._max_warming - self._warming_now(now)
        due = max(0, min(missing, free))
        return min(due, 1) if self._failures else due

    def next_check(self, now: float) -> float | None:
        """Seconds until the answer of :meth:`spawns_due` may change with no event reported
        (a back-off ends, a warm-up times out); None if only an event can change it."""
        if self._closed:
            return None
        times: list[float] = []
        if len(self._spares) < self._target and now < self._not_before:
            times.append(self._not_before)
        times += [
            s.started_at + self._warmup_timeout_s
            for s in self._spares.values()
            if s.ready_at is None and s.started_at + self._warmup_timeout_s > now
        ]
        return max(0.0, min(times) - now) if times else None

    def peek(self) -> int | None:
        """The spare :meth:`take` would return now (Rule 2), left in the pool."""
        if self._closed or not self._spares:
            return None
        ready = [s for s in self._spares.values() if s.ready_at is not None]
        if ready:
            return min(ready, key=lambda s: (s.ready_at or 0.0, s.started_at)).key
        return min(self._spares.values(), key=lambda s: s.started_at).key

    def take(self) -> int | None:
        """The spare a new Keep gets (Rule 2), now no longer in the pool; None: start cold."""
        key = self.peek()
        if key is not None:
            del self._spares[key]
        return key

    def close(self) -> tuple[int, ...]:
        """Stop the pool (Rule 5); returns the spares to discard."""
        self._closed = True
        keys = tuple(self._spares)
        self._spares.clear()
        return keys

    # -- what happened -----------------------------------------------------------------------

    def spawned(self, key: int, now: float) -> None:
        """A spare was started; it warms up."""
        if self._closed:
            raise ConfigError("the spare pool is closed; discard the new spare")
        self._spares[key] = _Spare(key, started_at=now)

    def spawn_failed(self, now: float) -> None:
        """Starting a spare failed (e.g. fork failed): a failure (Rule 3)."""
        self._fail(now)

    def ready(self, key: int, now: float) -> None:
        """The spare *key* has warmed up (unknown keys are ignored: it was taken or ended)."""
        spare = self._spares.get(key)
        if spare is not None and spare.ready_at is None:
            spare.ready_at = now
            self._failures = 0  # Rule 3: spares can start here; no more delay
            self._not_before = float("-inf")

    def ended(self, key: int, now: float) -> None:
        """The spare *key* ended before it was taken (Rule 3); unknown keys are ignored."""
        spare = self._spares.pop(key, None)
        if spare is None:
            return
        if spare.ready_at is None and now < spare.started_at + self._warmup_timeout_s:
            self._fail(now)

    # -- internals ---------------------------------------------------------------------------

    def _fail(self, now: float) -> None:
        self._failures += 1
        self._last_failure_at = now
        delay = min(self._backoff_first_s * 2 ** (self._failures - 1), self._backoff_max_s)
        self._not_before = now + delay

    def _warming_now(self, now: float) -> int:
        return sum(
            1
            for s in self._spares.values()
            if s.ready_at is None and now < s.started_at + self._warmup_timeout_s
        )

    def _settle(self, now: float) -> None:
        # Rule 3: a spare started since the last failure and alive past the warm-up timeout
        # shows spares can start here (where a spare cannot report its warm-up). Older spares
        # prove nothing: they may be fine while every new one dies.
        if self._failures and any(
            s.started_at >= self._last_failure_at and now >= s.started_at + self._warmup_timeout_s
            for s in self._spares.values()
        ):
            self._failures = 0
            self._not_before = float("-inf")
