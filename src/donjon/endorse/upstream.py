"""Protect AMD KDS and Intel PCS from the process that fetches from them: remembered failures,
a request budget per service host, and the pauses a service asks for.

A Steward fetches on behalf of clients it does not trust, and a nonce costs nothing: without
these limits a client could send forged reports naming chips that do not exist and make Steward
ask KDS for their VCEKs as fast as it can send them, spending Steward's share of KDS's rate
limit so that real Keeps fail. Pure, in-memory state; time is passed in as monotonic seconds, so
nothing here reads a clock or does I/O.

Rule 1: a failed fetch is remembered per URL for a time set by what failed
(:func:`failure_lifetime`); while it is, asking for that URL fails at once with the same error,
marked as remembered. What the service said about the document (404: no such document) is
remembered longest, what may pass (5xx, timeouts, unreachable) shortest, and a ``Retry-After``
is honoured as given (capped).
Rule 2: refusals of our own making (our in-flight limit, a spent budget, a pause) say nothing
about the URL and are not remembered.
Rule 3: each service host has a token bucket; a request takes a token or fails at once with
:attr:`~donjon.endorse.errors.FetchProblem.BUDGET_EXHAUSTED`, it never queues. Documents served
from memory or disk take none.
Rule 4: HTTP 429 (with or without ``Retry-After``), or 503 with ``Retry-After``, pauses the whole
host until the time named: the service is rate-limiting this client, not one URL. Meanwhile every
request to that host fails at once with :attr:`~donjon.endorse.errors.FetchProblem.PAUSED`.
Rule 5: all of it is bounded: remembered failures and hosts are least-recently-used maps.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import urlsplit

from donjon.endorse.config import UpstreamBudget
from donjon.endorse.errors import EndorsementFetchError, FetchProblem
from donjon.endorse.plan import DocumentRequest
from donjon.errors import ConfigError

NOT_FOUND_SECONDS: Final = 600.0
"""How long an HTTP 404 is remembered (seconds): the service says it has no such document (the
VCEK of a chip it does not know), and asking again soon will not change its answer."""

CLIENT_ERROR_SECONDS: Final = 300.0
"""How long another HTTP 4xx (or a 3xx, which is not followed) is remembered (seconds)."""

TRANSIENT_SECONDS: Final = 30.0
"""How long a failure that may pass is remembered (seconds): HTTP 5xx, a 429 without
``Retry-After``, a timeout, an unreachable service, an answer too large or malformed."""

MAX_RETRY_AFTER_SECONDS: Final = 600.0
"""Longest ``Retry-After`` honoured when remembering a failure or pausing a host (seconds); a
longer one is cut to this, so a confused service cannot silence us for days."""

RATE_LIMITED_PAUSE_SECONDS: Final = 1.0
"""How long a host is paused after HTTP 429 without ``Retry-After`` (seconds): as long as the
downloader itself waits before its one retry."""

REMEMBERED_FAILURES: Final = 4096
"""Failed URLs remembered per process (count; about 1 KiB each). Least recently used go first."""

MAX_HOSTS: Final = 64
"""Service hosts with a bucket or a pause (count). A configuration names three at most (KDS,
PCS, Intel's CRL host); the bound only keeps a bug from growing the maps."""


def service_host(url: str) -> str:
    """The host (and port) *url* goes to: what a budget and a pause apply to."""
    return urlsplit(url).netloc.lower()


def failure_lifetime(error: EndorsementFetchError) -> float | None:
    """How long *error* is remembered for its URL (seconds), or None when it is not (rule 2).

    ======================================================  ===========================
    failure                                                 remembered
    ======================================================  ===========================
    HTTP 429 or 503 with ``Retry-After``                    that long (at most 10 min)
    HTTP 404                                                10 min
    another HTTP 4xx, a 3xx                                 5 min
    HTTP 5xx, 429 without ``Retry-After``, a timeout, an    30 s
    unreachable service, an oversized or malformed answer
    our own refusals: too many in flight, a spent budget,   not remembered
    a paused host
    ======================================================  ===========================
    """
    problem, status = error.problem, error.status_code
    if problem in (FetchProblem.PAUSED, FetchProblem.BUDGET_EXHAUSTED):
        return None
    if problem is FetchProblem.BUSY and status is None:
        return None  # our in-flight limit, not the service
    if status in (429, 503) and error.retry_after is not None:
        lifetime = min(error.retry_after, MAX_RETRY_AFTER_SECONDS)
        return lifetime if lifetime > 0 else None
    if status == 404:
        return NOT_FOUND_SECONDS
    if status is not None and status != 429 and 300 <= status < 500:
        return CLIENT_ERROR_SECONDS
    return TRANSIENT_SECONDS


def format_seconds(seconds: float) -> str:
    """*seconds*, rounded up, as ``45 s`` or ``9 min 12 s`` (for messages)."""
    whole = max(1, math.ceil(seconds))
    minutes, rest = divmod(whole, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


@dataclass(frozen=True, slots=True)
class RememberedFailure:
    """A failed fetch, kept to answer the same URL at once (rule 1).

    Attributes:
        error_type: the class of the original error (a timeout stays a timeout).
        message: its message.
        url: the URL.
        problem, status_code, retry_after: as on the original error.
        until: when the URL may be asked for again (monotonic seconds).
    """

    error_type: type[EndorsementFetchError]
    message: str
    url: str
    problem: FetchProblem
    status_code: int | None
    retry_after: float | None
    until: float

    def error(self, *, now: float) -> EndorsementFetchError:
        """A fresh error like the original, saying it is remembered and for how long."""
        left = self.until - now
        return self.error_type(
            f"{self.message} (remembered for {format_seconds(left)} more: the service is not "
            "asked for this URL again until then)",
            url=self.url,
            problem=self.problem,
            status_code=self.status_code,
            retry_after=self.retry_after,
            retry_in=left,
        )


class FailureMemory:
    """The negative cache: failed URLs and their errors, least recently used first out.

    Thread-safe.

    Args:
        capacity: how many URLs are remembered at most.
    """

    def __init__(self, *, capacity: int = REMEMBERED_FAILURES) -> None:
        if capacity < 1:
            raise ConfigError(f"the failure memory needs room for at least 1 URL, not {capacity}")
        self._capacity = capacity
        self._failures: OrderedDict[str, RememberedFailure] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._failures)

    def remember(self, error: EndorsementFetchError, *, now: float) -> float | None:
        """Remember *error* for its URL for :func:`failure_lifetime`; returns that lifetime,
        None when it is not remembered."""
        lifetime = failure_lifetime(error)
        if lifetime is None:
            return None
        failure = RememberedFailure(
            error_type=type(error),
            message=error.message,
            url=error.url,
            problem=error.problem,
            status_code=error.status_code,
            retry_after=error.retry_after,
            until=now + lifetime,
        )
        with self._lock:
            self._failures.pop(error.url, None)
            self._failures[error.url] = failure
            while len(self._failures) > self._capacity:
                self._failures.popitem(last=False)
        return lifetime

    def recall(self, url: str, *, now: float) -> EndorsementFetchError | None:
        """The remembered error for *url* (to raise), or None when none is remembered now."""
        with self._lock:
            failure = self._failures.get(url)
            if failure is None:
                return None
            if now >= failure.until:
                del self._failures[url]
                return None
            self._failures.move_to_end(url)
        return failure.error(now=now)


class TokenBucket:
    """A token bucket: *burst* tokens at first, refilled at *rate* per second up to *burst*.

    Not thread-safe by itself (:class:`UpstreamGuard` holds a lock around it).

    Args:
        budget: the rate and the size.
        now: when it starts, full (monotonic seconds).
    """

    __slots__ = ("_budget", "_stamp", "_tokens")

    def __init__(self, budget: UpstreamBudget, *, now: float) -> None:
        self._budget = budget
        self._tokens = float(budget.burst)
        self._stamp = now

    def take(self, *, now: float) -> float:
        """Take a token: 0.0 when one was taken, else the seconds until one will be there."""
        # A clock that steps back (it should not) refills nothing rather than draining.
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(float(self._budget.burst), self._tokens + elapsed * self._budget.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._budget.rate


_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class _Pause:
    until: float
    status: int
    retry_after: float | None


class UpstreamGuard:
    """Everything a fetcher checks before it sends a request, and learns from the answers.

    Thread-safe; one per process (:class:`~donjon.endorse.fetcher.EndorsementFetcher` holds
    it), shared by all its threads.

    Args:
        budget: each service host's token bucket.
        capacity: remembered failures at most.
    """

    def __init__(self, budget: UpstreamBudget, *, capacity: int = REMEMBERED_FAILURES) -> None:
        self.budget = budget
        self.failures = FailureMemory(capacity=capacity)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._pauses: OrderedDict[str, _Pause] = OrderedDict()
        self._lock = threading.Lock()

    def recall(self, url: str, *, now: float) -> EndorsementFetchError | None:
        """The remembered failure for *url*, if any (rule 1)."""
        return self.failures.recall(url, now=now)

    def remember(self, error: EndorsementFetchError, *, now: float) -> float | None:
        """Remember a failed fetch (rule 1); returns for how long, or None."""
        return self.failures.remember(error, now=now)

    def admit(self, request: DocumentRequest, *, now: float) -> None:
        """Let *request* go to the network: its host is not paused and a token was taken.

        Raises:
            EndorsementFetchError: the host is paused (``PAUSED``) or its budget is spent
                (``BUDGET_EXHAUSTED``); nothing was sent.
        """
        host = service_host(request.url)
        wait = 0.0
        with self._lock:
            pause = self._pauses.get(host)
            if pause is not None and now >= pause.until:
                del self._pauses[host]
                pause = None
            if pause is None:
                bucket = self._buckets.get(host)
                if bucket is None:
                    bucket = self._buckets[host] = TokenBucket(self.budget, now=now)
                    _bound(self._buckets)
                self._buckets.move_to_end(host)
                wait = bucket.take(now=now)
        if pause is not None:
            raise _paused(request, host, pause, now)
        if wait > 0:
            raise EndorsementFetchError(
                f"the request budget for {host} ({self.budget.rate:g} a second, bursts of "
                f"{self.budget.burst}) is spent, so {request.what} was not fetched "
                f"({request.url}), to spare {request.service}'s rate limit; try again in "
                f"{format_seconds(wait)}, or {request.hint}",
                url=request.url,
                problem=FetchProblem.BUDGET_EXHAUSTED,
                retry_in=wait,
            )

    def service_busy(
        self, request: DocumentRequest, *, status: int, retry_after: float | None, now: float
    ) -> float | None:
        """Learn from HTTP 429 or 503 for *request*: pause its host if the service asked
        (rule 4). Returns the pause (seconds), or None.

        Args:
            request: what was asked.
            status: 429 or 503.
            retry_after: the ``Retry-After`` sent (seconds), None when absent or unread.
            now: monotonic seconds.
        """
        if retry_after is not None:
            seconds = min(retry_after, MAX_RETRY_AFTER_SECONDS)
        elif status == 429:
            seconds = RATE_LIMITED_PAUSE_SECONDS
        else:
            return None  # a 503 that names no time is one URL's failure, remembered as such
        if seconds <= 0:
            return None
        host = service_host(request.url)
        with self._lock:
            old = self._pauses.get(host)
            # A pause is only ever extended: a short Retry-After on a retry does not cut it.
            if old is None or old.until < now + seconds:
                self._pauses[host] = _Pause(now + seconds, status, retry_after)
            self._pauses.move_to_end(host)
            _bound(self._pauses)
        return seconds

    def paused_for(self, url: str, *, now: float) -> float:
        """How long *url*'s host stays paused (seconds; 0.0 when it is not)."""
        with self._lock:
            pause = self._pauses.get(service_host(url))
        return max(0.0, pause.until - now) if pause is not None else 0.0


def _bound(entries: OrderedDict[str, _V]) -> None:
    while len(entries) > MAX_HOSTS:
        entries.popitem(last=False)


def _paused(
    request: DocumentRequest, host: str, pause: _Pause, now: float
) -> EndorsementFetchError:
    said = f"HTTP {pause.status}"
    if pause.retry_after is not None:
        said += f", Retry-After {pause.retry_after:g}"
    left = pause.until - now
    return EndorsementFetchError(
        f"{request.service} asked us to slow down ({said}), so nothing is sent to {host} for "
        f"{format_seconds(left)} more: {request.what} was not fetched ({request.url}); try again "
        f"then, or {request.hint}",
        url=request.url,
        problem=FetchProblem.PAUSED,
        retry_in=left,
    )


__all__ = [
    "CLIENT_ERROR_SECONDS",
    "MAX_HOSTS",
    "MAX_RETRY_AFTER_SECONDS",
    "NOT_FOUND_SECONDS",
    "RATE_LIMITED_PAUSE_SECONDS",
    "REMEMBERED_FAILURES",
    "TRANSIENT_SECONDS",
    "FailureMemory",
    "RememberedFailure",
    "TokenBucket",
    "UpstreamGuard",
    "failure_lifetime",
    "format_seconds",
    "service_host",
]
