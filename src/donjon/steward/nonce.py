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
bounded in-memory cache; a second use is refused. **Across replicas** single use holds only if
requests for one nonce reach one replica (sticky sessions) or the cache is shared; without that,
the MAC and the short lifetime bound the window in which one nonce can be used at most once per
replica. A nonce is consumed when first presented, before the evidence is verified, so a failed
attempt burns it too (and one nonce cannot buy many expensive verifications).
Rule 4: when the cache is full of unexpired nonces, new ones are refused (fail closed) with
:class:`NonceCapacityError`, which the HTTP layer turns into 503 + Retry-After.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


class NonceBook:
    """Issues nonces and checks them: MAC, expiry, and (per replica) single use.

    Args:
        key: the MAC key (at least 32 bytes), shared by every replica.
        lifetime: how long an issued nonce is valid.
        max_tracked: replay-cache capacity (see :data:`MAX_TRACKED_NONCES`).
        random_bytes: source of the random part (tests may pin it).

    Thread-safe: consuming is one atomic check-and-insert.
    """

    def __init__(
        self,
        key: bytes,
        *,
        lifetime: timedelta = DEFAULT_NONCE_LIFETIME,
        max_tracked: int = MAX_TRACKED_NONCES,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if len(key) < 32:
            raise ValueError("nonce MAC key must be at least 32 bytes")
        if lifetime <= timedelta(0):
            raise ValueError("nonce lifetime must be positive")
        self._key = key
        self._lifetime = int(lifetime.total_seconds())
        self._max_tracked = max_tracked
        self._random_bytes = random_bytes
        self._lock = threading.Lock()
        self._used: set[bytes] = set()
        self._expiry_heap: list[tuple[int, bytes]] = []

    @property
    def lifetime(self) -> timedelta:
        return timedelta(seconds=self._lifetime)

    def __len__(self) -> int:
        """How many used nonces are remembered right now."""
        return len(self._used)

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, _MAC_DOMAIN + body, hashlib.sha256).digest()

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
        if expires_at > now_s + self._lifetime + int(MAX_CLOCK_SKEW.total_seconds()):
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
        now_s = _seconds(now)
        with self._lock:
            self._purge(now_s)
            if nonce in self._used:
                raise FreshnessError(
                    "nonce was already used (a replayed request or evidence); get a fresh one "
                    "from GET /v1/nonce for every attestation"
                )
            if len(self._used) >= self._max_tracked:
                raise NonceCapacityError(
                    f"Steward is tracking {self._max_tracked} unexpired nonces and refuses more "
                    "until some expire; retry in a few seconds"
                )
            self._used.add(nonce)
            heapq.heappush(self._expiry_heap, (expires_at, nonce))

    def _purge(self, now_s: int) -> None:
        heap = self._expiry_heap
        while heap and heap[0][0] < now_s:
            _, old = heapq.heappop(heap)
            self._used.discard(old)


__all__ = [
    "DEFAULT_NONCE_LIFETIME",
    "MAX_CLOCK_SKEW",
    "MAX_TRACKED_NONCES",
    "NONCE_BYTES",
    "NONCE_KEY_INFO",
    "IssuedNonce",
    "NonceBook",
    "NonceCapacityError",
]
