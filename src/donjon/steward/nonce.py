"""Stateless, MAC-protected, single-use challenges that work across Steward replicas.

A nonce is 57 bytes::

    version (1 byte, 0x01) || random (16 bytes) || expires_at (u64 big-endian POSIX seconds)
        || HMAC-SHA256(key, "donjon/steward/nonce/v1" || version || random || expires_at)

Rule 1 (authentic): a nonce is accepted only if its MAC verifies under the nonce key. Replicas
that share the key (derived from the shared CA key: ``CertificateAuthority.derive_secret``)
accept each other's nonces without talking to each other.
Rule 2 (fresh): a nonce is accepted only until ``expires_at``, and never if ``expires_at`` lies
further ahead than one lifetime plus :data:`MAX_CLOCK_SKEW` (a replica with a runaway clock).
Rule 3 (single use): a replica remembers every nonce it accepted until that nonce expires, in a
bounded in-memory cache; a second use is refused. The worker processes of one ``donjon steward
serve --workers N`` are one replica: they share a :class:`SharedReplayCache` in shared memory.
**Across replicas** (hosts, or separate processes) single use holds only if
requests for one nonce reach one replica (sticky sessions) or the cache is shared; without that,
the MAC and the short lifetime bound the window in which one nonce can be used at most once per
replica. A nonce is consumed when first presented, before the evidence is verified, so a failed
attempt burns it too (and one nonce cannot buy many expensive verifications).
Rule 4: when the cache is full of unexpired nonces, new ones are refused (fail closed) with
:class:`NonceCapacityError`, which the HTTP layer turns into 503 + Retry-After.
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import hmac
import mmap
import os
import secrets
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from donjon.errors import FreshnessError, TransportError

NONCE_VERSION = 1
NONCE_RANDOM_BYTES = 16
"""Random part (bytes): 128 bits, so two nonces never collide in practice."""
NONCE_MAC_BYTES = 32
NONCE_BYTES = 1 + NONCE_RANDOM_BYTES + 8 + NONCE_MAC_BYTES
"""Total nonce size (bytes)."""

DEFAULT_NONCE_LIFETIME = timedelta(seconds=60)
"""How long a nonce stays usable: long enough to produce evidence (TDX quoting takes ~1 s),
short enough that an unused one is soon worthless."""

MAX_CLOCK_SKEW = timedelta(seconds=30)
"""Clock difference tolerated between the replica that issued a nonce and the one checking it."""

MAX_TRACKED_NONCES = 100_000
"""Most used-but-unexpired nonces one replica remembers (~15 MB). At the 60 s default lifetime
this allows ~1,600 attestations/s per replica before Steward fails closed."""

NONCE_KEY_INFO = b"donjon/steward/nonce-mac/v1"
"""HKDF ``info`` for deriving the nonce MAC key from the CA key."""

_MAC_DOMAIN = b"donjon/steward/nonce/v1"


class NonceCapacityError(TransportError):
    """The replay cache is full of unexpired nonces; retry after a few seconds (HTTP 503)."""


@dataclass(frozen=True, slots=True)
class IssuedNonce:
    """A nonce and the second it expires."""

    value: bytes
    expires_at: int


def _seconds(now: datetime) -> int:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return int(now.astimezone(UTC).timestamp())


class ReplayCache(Protocol):
    """Where used nonces are remembered until they expire (rule 3)."""

    def add(self, nonce: bytes, expires_at: int, now_s: int) -> None:
        """Record *nonce* (already MAC-checked) as used until *expires_at* (POSIX seconds).

        Raises:
            FreshnessError: it was already used and has not expired.
            NonceCapacityError: no room for it (rule 4).
        """
        ...

    def __len__(self) -> int:
        """How many used, unexpired nonces are remembered (as of the latest ``add``)."""
        ...


def _replayed() -> FreshnessError:
    return FreshnessError(
        "nonce was already used (a replayed request or evidence); get a fresh one "
        "from GET /v1/nonce for every attestation"
    )


def _full(max_tracked: int) -> NonceCapacityError:
    return NonceCapacityError(
        f"Steward is tracking {max_tracked} unexpired nonces and refuses more "
        "until some expire; retry in a few seconds"
    )


class LocalReplayCache:
    """A :class:`ReplayCache` in this process's memory: a set, and a heap of expiries to purge.

    Thread-safe. Each process (each ``--workers`` worker, each replica) has its own unless it
    uses a :class:`SharedReplayCache`.
    """

    def __init__(self, max_tracked: int = MAX_TRACKED_NONCES) -> None:
        self._max_tracked = max_tracked
        self._lock = threading.Lock()
        self._used: set[bytes] = set()
        self._expiry_heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._used)

    def add(self, nonce: bytes, expires_at: int, now_s: int) -> None:
        with self._lock:
            heap = self._expiry_heap
            while heap and heap[0][0] < now_s:
                _, old = heapq.heappop(heap)
                self._used.discard(old)
            if nonce in self._used:
                raise _replayed()
            if len(self._used) >= self._max_tracked:
                raise _full(self._max_tracked)
            self._used.add(nonce)
            heapq.heappush(heap, (expires_at, nonce))


_SLOTS_PER_BUCKET = 16
_KEY_BYTES = 16
_SLOT = struct.Struct(f"<{_KEY_BYTES}sQ")
_BUCKET = struct.Struct("<" + f"{_KEY_BYTES}sQ" * _SLOTS_PER_BUCKET)
_CELL = struct.Struct("<QQ")
_HEADER = struct.Struct("<QQ")  # live count, seconds already expired (floor)


class SharedReplayCache:
    """A :class:`ReplayCache` in shared memory, for worker processes forked from one parent.

    Create it before forking; every worker then refuses a nonce that any of them accepted, so
    single use holds per host, not per worker (``donjon steward serve --workers N``).

    Layout (one anonymous ``MAP_SHARED`` mapping, ~12 MB for the default capacity): a hash table
    of buckets of 16 slots, each slot ``key (16 bytes) || expires_at (u64)``, where the key is
    the first 16 bytes of the nonce's MAC (a PRF output under Steward's key, so clients cannot
    aim at one bucket); a slot whose ``expires_at`` has passed is free again, so nothing needs
    purging. A ring of per-second counters of expiries keeps the number of live entries exact,
    for rule 4 and the metrics gauge. A process-shared lock (``lockf`` on a memfd: the kernel
    drops it if its holder dies) plus a thread lock serialize access; each operation touches one
    bucket (~5 µs).

    Args:
        max_tracked: most live entries before new nonces are refused (rule 4).
        horizon: the latest expiry, relative to now, that will be added: a nonce lifetime plus
            :data:`MAX_CLOCK_SKEW` (:class:`NonceBook` checks it).

    Raises:
        ValueError: a non-positive capacity or horizon.
    """

    def __init__(
        self,
        max_tracked: int = MAX_TRACKED_NONCES,
        *,
        horizon: timedelta = DEFAULT_NONCE_LIFETIME + MAX_CLOCK_SKEW,
    ) -> None:
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        horizon_s = int(horizon.total_seconds())
        if horizon_s < 1:
            raise ValueError("horizon must be at least one second")
        self._max_tracked = max_tracked
        self.horizon_s = horizon_s
        # A mean of at most 4 live entries per 16-slot bucket at full capacity: a bucket
        # overflows (and refuses a nonce early) with probability ~1e-6.
        buckets = 1
        while buckets * 4 < max_tracked:
            buckets *= 2
        self._mask = buckets - 1
        self._cells = horizon_s + 2
        self._ring_offset = _HEADER.size
        self._table_offset = self._ring_offset + self._cells * _CELL.size
        size = self._table_offset + buckets * _BUCKET.size
        self._memory = mmap.mmap(-1, size)  # anonymous and MAP_SHARED: inherited by fork()
        self._lock_fd = os.memfd_create("donjon-steward-replay-lock", os.MFD_CLOEXEC)
        self._thread_lock = threading.Lock()

    def __len__(self) -> int:
        live, _ = _HEADER.unpack_from(self._memory, 0)
        return int(live)

    def close(self) -> None:
        """Release the mapping and the lock file descriptor."""
        self._memory.close()
        os.close(self._lock_fd)

    def add(self, nonce: bytes, expires_at: int, now_s: int) -> None:
        key = nonce[-NONCE_MAC_BYTES:][:_KEY_BYTES]
        with self._thread_lock:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._add_locked(key, expires_at, now_s)
            finally:
                fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)

    def _add_locked(self, key: bytes, expires_at: int, now_s: int) -> None:
        memory = self._memory
        live, floor = _HEADER.unpack_from(memory, 0)
        live, floor = self._expire(live, floor, now_s)
        offset = self._table_offset + (int.from_bytes(key[:8], "little") & self._mask) * (
            _BUCKET.size
        )
        fields = _BUCKET.unpack_from(memory, offset)
        free = -1
        for i in range(_SLOTS_PER_BUCKET):
            slot_expiry = fields[2 * i + 1]
            if slot_expiry < now_s:  # empty (0) or expired: reusable
                if free < 0:
                    free = i
            elif fields[2 * i] == key:
                _HEADER.pack_into(memory, 0, live, floor)
                raise _replayed()
        if free < 0 or live >= self._max_tracked:
            _HEADER.pack_into(memory, 0, live, floor)
            raise _full(self._max_tracked)
        _SLOT.pack_into(memory, offset + free * _SLOT.size, key, expires_at)
        if expires_at >= floor:
            cell = self._ring_offset + (expires_at % self._cells) * _CELL.size
            second, count = _CELL.unpack_from(memory, cell)
            _CELL.pack_into(memory, cell, expires_at, count + 1 if second == expires_at else 1)
            live += 1
        _HEADER.pack_into(memory, 0, live, floor)

    def _expire(self, live: int, floor: int, now_s: int) -> tuple[int, int]:
        """Drop the ring's counts for seconds before *now_s* from *live*; returns (live, floor)."""
        if now_s <= floor:
            return live, floor
        memory = self._memory
        if floor == 0 or now_s - floor >= self._cells:
            # First use, or every cell is in the past: all counted entries have expired.
            for i in range(self._cells):
                _CELL.pack_into(memory, self._ring_offset + i * _CELL.size, 0, 0)
            return 0, now_s
        for second in range(floor, now_s):
            cell = self._ring_offset + (second % self._cells) * _CELL.size
            stamp, count = _CELL.unpack_from(memory, cell)
            if stamp == second and count:
                live -= count
                _CELL.pack_into(memory, cell, stamp, 0)
        return max(live, 0), now_s


class NonceBook:
    """Issues nonces and checks them: MAC, expiry, and single use.

    Args:
        key: the MAC key (at least 32 bytes), shared by every replica.
        lifetime: how long an issued nonce is valid.
        max_tracked: replay-cache capacity (see :data:`MAX_TRACKED_NONCES`) when no
            *replay_cache* is given.
        random_bytes: source of the random part (tests may pin it).
        replay_cache: where used nonces are remembered; a :class:`LocalReplayCache` (this
            process only) unless given. A :class:`SharedReplayCache` makes single use hold
            across forked workers.

    Raises:
        ValueError: a short key, a non-positive lifetime, or a shared cache whose horizon is
            shorter than ``lifetime + MAX_CLOCK_SKEW``.

    Thread-safe: consuming is one atomic check-and-insert.
    """

    def __init__(
        self,
        key: bytes,
        *,
        lifetime: timedelta = DEFAULT_NONCE_LIFETIME,
        max_tracked: int = MAX_TRACKED_NONCES,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        if len(key) < 32:
            raise ValueError("nonce MAC key must be at least 32 bytes")
        if lifetime <= timedelta(0):
            raise ValueError("nonce lifetime must be positive")
        self._key = key
        self._lifetime = int(lifetime.total_seconds())
        self._skew = int(MAX_CLOCK_SKEW.total_seconds())
        if isinstance(replay_cache, SharedReplayCache) and (
            replay_cache.horizon_s < self._lifetime + self._skew
        ):
            raise ValueError(
                f"the shared replay cache covers {replay_cache.horizon_s} s ahead; nonces "
                f"living {self._lifetime} s need {self._lifetime + self._skew} s"
            )
        self._random_bytes = random_bytes
        # `is None`, not `or`: an empty cache has len() 0 and is falsy.
        self._used: ReplayCache = (
            replay_cache if replay_cache is not None else LocalReplayCache(max_tracked)
        )
        # The MAC key schedule is computed once; each nonce copies it (hmac.HMAC.copy).
        self._mac_template = hmac.new(key, _MAC_DOMAIN, hashlib.sha256)

    @property
    def lifetime(self) -> timedelta:
        return timedelta(seconds=self._lifetime)

    def __len__(self) -> int:
        """How many used nonces are remembered right now."""
        return len(self._used)

    def _mac(self, body: bytes) -> bytes:
        mac = self._mac_template.copy()
        mac.update(body)
        return mac.digest()

    def issue(self, now: datetime) -> IssuedNonce:
        """A fresh nonce valid until ``now + lifetime``."""
        expires_at = _seconds(now) + self._lifetime
        body = (
            bytes([NONCE_VERSION])
            + self._random_bytes(NONCE_RANDOM_BYTES)
            + expires_at.to_bytes(8, "big")
        )
        return IssuedNonce(body + self._mac(body), expires_at)

    def check(self, nonce: bytes, now: datetime) -> int:
        """Check the MAC and the expiry (rules 1 and 2), without consuming the nonce.

        Returns:
            The nonce's expiry (POSIX seconds).

        Raises:
            FreshnessError: not issued by a Steward holding this key, expired, or expiring
                implausibly far ahead.
        """
        if len(nonce) != NONCE_BYTES or nonce[0] != NONCE_VERSION:
            raise FreshnessError(
                f"nonce is not one this Steward issued ({len(nonce)} bytes, expected "
                f"{NONCE_BYTES}); get one from GET /v1/nonce and bind it into the evidence"
            )
        body, mac = nonce[:-NONCE_MAC_BYTES], nonce[-NONCE_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise FreshnessError(
                "nonce was not issued by this Steward (its MAC does not verify: a forged nonce, "
                "or one from a Steward with another CA key); get one from GET /v1/nonce"
            )
        expires_at = int.from_bytes(body[1 + NONCE_RANDOM_BYTES :], "big")
        now_s = _seconds(now)
        if expires_at < now_s:
            when = datetime.fromtimestamp(expires_at, UTC).isoformat()
            raise FreshnessError(
                f"nonce expired at {when} ({now_s - expires_at} s ago); get a fresh one from "
                "GET /v1/nonce and produce new evidence"
            )
        if expires_at > now_s + self._lifetime + self._skew:
            raise FreshnessError(
                "nonce expires further ahead than a nonce lifetime: the issuing Steward's clock "
                "is ahead of this one's; check NTP on the Steward replicas"
            )
        return expires_at

    def consume(self, nonce: bytes, now: datetime) -> None:
        """Check the nonce (rules 1-2) and mark it used (rule 3), atomically.

        Raises:
            FreshnessError: bad MAC, expired, or already used.
            NonceCapacityError: the replay cache is full (rule 4).
        """
        expires_at = self.check(nonce, now)
        self._used.add(nonce, expires_at, _seconds(now))


__all__ = [
    "DEFAULT_NONCE_LIFETIME",
    "MAX_CLOCK_SKEW",
    "MAX_TRACKED_NONCES",
    "NONCE_BYTES",
    "NONCE_KEY_INFO",
    "IssuedNonce",
    "LocalReplayCache",
    "NonceBook",
    "NonceCapacityError",
    "ReplayCache",
    "SharedReplayCache",
]
