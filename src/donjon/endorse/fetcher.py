"""Complete a caller's endorsements: plan what is missing, take it from memory, the disk cache
or the service, and hand back an ``Endorsements`` value the verifiers take unchanged.

Rule 1: documents come from, in order: this process's memory, the disk cache, the network. A
document is reused while its own dates say it is valid at the ``now`` of the verification.
Rule 2: nothing is trusted here. A wrong, forged or stale document reaches the verifier, which
rejects it with its usual precise error; a document that does not answer its request (the VCEK
of another chip, TCB info for another FMSPC) is passed on but never remembered.
Rule 3: one fetch per document at a time: threads wanting the same document wait for the first
one's answer instead of asking the service again, and at most :data:`MAX_PARALLEL_FETCHES` go to
the network at once (AMD KDS rate-limits).
Rule 4: the wall clock is read only through the injected *clock*, to stamp fetch times; the
protections of rule 5 run on the injected *monotonic* stopwatch.
Rule 5: the services are protected from us (:mod:`donjon.endorse.upstream`): after memory and
disk, a URL whose fetch failed lately fails at once with its remembered error; a host the
service asked us to leave alone (HTTP 429) is not contacted until the time it named; and each
host's request budget (a token bucket) must have a token, or the fetch fails at once.
Rule 6: every document asked for is counted by its :class:`FetchOutcome` (Steward's metrics).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

from donjon._closing import Closing
from donjon.attestation.result import Endorsements, Platform
from donjon.endorse.cache import CacheEntry, EndorsementCache
from donjon.endorse.config import FetchConfig
from donjon.endorse.documents import Document, DocumentError, read_document
from donjon.endorse.errors import EndorsementFetchError, FetchProblem
from donjon.endorse.plan import DocumentRequest, Plan, plan_endorsements
from donjon.endorse.upstream import UpstreamGuard

if TYPE_CHECKING:
    import httpx

    from donjon.endorse._http import Downloader

_logger = logging.getLogger(__name__)

MAX_PARALLEL_FETCHES: Final = 4
"""Requests in flight to the services at once, over all threads (rule 3)."""

MEMORY_ENTRIES: Final = 256
"""Documents remembered in memory (count)."""

MEMORY_BYTES: Final = 8 * 1024 * 1024
"""Documents remembered in memory (bytes in all): a VCEK is 1.4 KiB, TCB info up to 30 KiB."""

_MAX_KEY_LOCKS = 1024


class Origin(enum.StrEnum):
    """Where a document came from."""

    MEMORY = "memory"
    CACHE = "cache"
    NETWORK = "network"


class FetchOutcome(enum.StrEnum):
    """What became of one document asked for (rule 6)."""

    MEMORY = "memory"
    """Found in this process's memory."""
    CACHE = "cache"
    """Read from the disk cache."""
    FETCHED = "fetched"
    """Fetched from the service."""
    FAILED = "failed"
    """Asked of the service, which failed (the failure is then remembered)."""
    REMEMBERED = "remembered"
    """Refused at once: the same URL failed lately (a remembered failure)."""
    PAUSED = "paused"
    """Refused at once: the service asked us to slow down (HTTP 429)."""
    BUDGET_EXHAUSTED = "budget-exhausted"
    """Refused at once: the host's request budget is spent."""
    BUSY = "busy"
    """Refused: too many fetches in flight in this process for too long."""


_OUTCOME_OF_REFUSAL: Final[Mapping[FetchProblem, FetchOutcome]] = {
    FetchProblem.PAUSED: FetchOutcome.PAUSED,
    FetchProblem.BUDGET_EXHAUSTED: FetchOutcome.BUDGET_EXHAUSTED,
}


@dataclass(frozen=True, slots=True)
class FetchedDocument:
    """A record of one document added to the endorsements.

    Attributes:
        kind: what it is (``VCEK``, ``TCB info``, ...).
        url: where it is served.
        origin: memory, the disk cache, or the network.
        fetched_at: when it was fetched from the network.
        kept: whether it is remembered for reuse (False: it does not answer its request).
    """

    kind: str
    url: str
    origin: Origin
    fetched_at: datetime
    kept: bool


@dataclass(frozen=True, slots=True)
class Completion:
    """The caller's endorsements with what was missing added (given items first).

    Attributes:
        endorsements: for the verifier.
        fetched: what was added, in plan order.
    """

    endorsements: Endorsements
    fetched: tuple[FetchedDocument, ...]


@dataclass(frozen=True, slots=True)
class _Remembered:
    document: Document
    fetched_at: datetime
    size: int


class _Memory:
    """A bounded LRU of documents by cache key (thread-safe)."""

    def __init__(self) -> None:
        self._data: OrderedDict[str, _Remembered] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> _Remembered | None:
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
            return found

    def put(self, key: str, value: _Remembered) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._data[key] = value
            self._bytes += value.size
            while len(self._data) > MEMORY_ENTRIES or self._bytes > MEMORY_BYTES:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted.size


def _merge(given: Endorsements, documents: Iterable[Document]) -> Endorsements:
    certs = list(given.certs)
    collateral = list(given.collateral)
    for document in documents:
        certs.extend(c for c in document.certs if c not in certs)
        collateral.extend(c for c in document.collateral if c not in collateral)
    return Endorsements(certs=tuple(certs), collateral=tuple(collateral))


class EndorsementFetcher(Closing):
    """Completes endorsements from AMD KDS and Intel PCS (or stand-ins), with caching.

    Thread-safe: Steward shares one per worker process between its request threads.

    Args:
        config: where to fetch from, the cache directory, time limits, the request budget.
        clock: the wall clock, only to stamp fetch times (rule 4).
        transport: an httpx transport (tests); the default one otherwise.
        monotonic: the stopwatch of remembered failures, budgets and pauses (rule 5); tests
            pass one they advance by hand.

    Example::

        fetcher = EndorsementFetcher(FetchConfig(cache_dir=Path("cache")), clock=clock)
        done = fetcher.complete(Platform.SEV_SNP, report, Endorsements(), now=now)
        verify_evidence("sev-snp", report, endorsements=done.endorsements, now=now)
    """

    def __init__(
        self,
        config: FetchConfig,
        *,
        clock: Callable[[], datetime],
        transport: httpx.BaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._monotonic = monotonic
        self._transport = transport
        self._downloader: Downloader | None = None
        self._disk = EndorsementCache(config.cache_dir) if config.cache_dir is not None else None
        self._memory = _Memory()
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._network = threading.BoundedSemaphore(MAX_PARALLEL_FETCHES)
        self._guard = UpstreamGuard(config.budget)
        self._outcomes = dict.fromkeys(FetchOutcome, 0)

    def close(self) -> None:
        """Close the connection pool (the caches stay)."""
        with self._lock:
            downloader, self._downloader = self._downloader, None
        if downloader is not None:
            downloader.close()

    # -- the API -----------------------------------------------------------------------------

    def outcomes(self) -> Mapping[FetchOutcome, int]:
        """How many documents asked for ended each way so far (a snapshot; rule 6)."""
        with self._lock:
            return dict(self._outcomes)

    def plan(
        self, platform: Platform, evidence: bytes, endorsements: Endorsements, *, now: datetime
    ) -> Plan:
        """What is missing (no I/O); see :func:`donjon.endorse.plan.plan_endorsements`."""
        return plan_endorsements(platform, evidence, endorsements, config=self.config, now=now)

    def complete_without_io(
        self, platform: Platform, evidence: bytes, endorsements: Endorsements, *, now: datetime
    ) -> Endorsements | None:
        """The completed endorsements if that needs no I/O, else None.

        Returns *endorsements* itself when nothing is missing, a completed value when every
        missing document is in memory and valid at *now*, and None when something must be read
        from disk or the network (call :meth:`complete`, off the event loop).

        Raises:
            EndorsementUnavailableError: something is missing that no service serves.
        """
        plan = self.plan(platform, evidence, endorsements, now=now)
        if not plan.requests:
            return endorsements
        documents: list[Document] = []
        for request in plan.requests:
            remembered = self._remembered(request, now)
            if remembered is None:
                return None
            documents.append(remembered.document)
        self._count(FetchOutcome.MEMORY, len(documents))
        return _merge(endorsements, documents)

    def complete(
        self, platform: Platform, evidence: bytes, endorsements: Endorsements, *, now: datetime
    ) -> Completion:
        """Add what *evidence* is missing to *endorsements* (may block on disk and network).

        Args:
            platform: the evidence format.
            evidence: the evidence bytes.
            endorsements: what the caller has; never replaced, only added to.
            now: the verification time: what is missing, and whether a cached document may be
                reused, is judged at it.

        Raises:
            EndorsementFetchError: a missing document could not be obtained (the message names
                the URL, what went wrong, and what to do).
            EndorsementUnavailableError: something is missing that no service serves.
        """
        plan = self.plan(platform, evidence, endorsements, now=now)
        if not plan.requests:
            return Completion(endorsements, ())
        documents: list[Document] = []
        records: list[FetchedDocument] = []
        for request in plan.requests:
            document, record = self._obtain(request, now)
            documents.append(document)
            records.append(record)
        return Completion(_merge(endorsements, documents), tuple(records))

    # -- memory, disk, network ---------------------------------------------------------------

    def _remembered(self, request: DocumentRequest, now: datetime) -> _Remembered | None:
        found = self._memory.get(request.cache_key)
        if found is None or not found.document.fresh_at(now):
            return None
        return found

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            lock = self._key_locks.get(key)
            if lock is None:
                if len(self._key_locks) >= _MAX_KEY_LOCKS:
                    # Forget idle locks; a lock in use stays referenced by its holder.
                    self._key_locks = {k: v for k, v in self._key_locks.items() if v.locked()}
                lock = self._key_locks[key] = threading.Lock()
            return lock

    def _count(self, outcome: FetchOutcome, n: int = 1) -> None:
        with self._lock:
            self._outcomes[outcome] += n

    def _obtain(self, request: DocumentRequest, now: datetime) -> tuple[Document, FetchedDocument]:
        key = request.cache_key
        with self._key_lock(key):
            remembered = self._remembered(request, now)
            if remembered is not None:
                self._count(FetchOutcome.MEMORY)
                return remembered.document, self._record(request, Origin.MEMORY, remembered)
            if self._disk is not None:
                cached = self._from_disk(request, now)
                if cached is not None:
                    self._count(FetchOutcome.CACHE)
                    return cached.document, self._record(request, Origin.CACHE, cached)
            # Rule 5, after memory and disk: a document at hand is never refused. Threads that
            # waited on the key lock for a fetch that failed find its failure remembered here.
            failure = self._guard.recall(request.url, now=self._monotonic())
            if failure is not None:
                self._count(FetchOutcome.REMEMBERED)
                raise failure
            try:
                self._guard.admit(request, now=self._monotonic())
            except EndorsementFetchError as e:
                self._count(_OUTCOME_OF_REFUSAL[e.problem])
                raise
            try:
                fetched = self._from_network(request)
            except EndorsementFetchError as e:
                self._guard.remember(e, now=self._monotonic())
                ours = e.problem is FetchProblem.BUSY and e.status_code is None
                self._count(FetchOutcome.BUSY if ours else FetchOutcome.FAILED)
                raise
            self._count(FetchOutcome.FETCHED)
            return fetched

    def _record(
        self, request: DocumentRequest, origin: Origin, remembered: _Remembered
    ) -> FetchedDocument:
        return FetchedDocument(
            kind=str(request.kind),
            url=request.url,
            origin=origin,
            fetched_at=remembered.fetched_at,
            kept=True,
        )

    def _from_disk(self, request: DocumentRequest, now: datetime) -> _Remembered | None:
        if self._disk is None:  # pragma: no cover - checked by the caller
            return None
        entry = self._disk.load(request.cache_key, max_body_bytes=request.max_bytes)
        if entry is None:
            return None
        try:
            document = read_document(request, entry.body, entry.issuer_chain)
        except DocumentError as e:
            _logger.warning("ignoring cache entry for %s: %s", request.url, e)
            return None
        if document.mismatch is not None or not document.fresh_at(now):
            return None
        remembered = _Remembered(document, entry.fetched_at, _size(entry.body, entry.issuer_chain))
        self._memory.put(request.cache_key, remembered)
        return remembered

    def _from_network(self, request: DocumentRequest) -> tuple[Document, FetchedDocument]:
        if not self._network.acquire(timeout=self.config.timeouts.total):
            raise EndorsementFetchError(
                f"too many endorsement fetches in progress; {request.what} was not fetched "
                f"({request.url}); try again shortly",
                url=request.url,
                problem=FetchProblem.BUSY,
            )
        try:
            answer = self._http().get(request)
        finally:
            self._network.release()
        fetched_at = self._clock()
        try:
            document = read_document(request, answer.body, answer.issuer_chain)
        except DocumentError as e:
            raise EndorsementFetchError(
                f"{request.service} answered {request.url} with something that is not "
                f"{_article(str(request.kind))}: {e}; {request.hint}",
                url=request.url,
                problem=FetchProblem.MALFORMED,
            ) from None
        kept = document.mismatch is None
        if kept:
            remembered = _Remembered(document, fetched_at, _size(answer.body, answer.issuer_chain))
            self._memory.put(request.cache_key, remembered)
            if self._disk is not None:
                self._disk.store(
                    CacheEntry(request.cache_key, answer.body, answer.issuer_chain, fetched_at)
                )
        else:
            _logger.warning(
                "%s answered %s with a document that does not fit (%s); it goes to the "
                "verifier but is not cached",
                request.service,
                request.url,
                document.mismatch,
            )
        record = FetchedDocument(
            kind=str(request.kind),
            url=request.url,
            origin=Origin.NETWORK,
            fetched_at=fetched_at,
            kept=kept,
        )
        return document, record

    def _http(self) -> Downloader:
        with self._lock:
            if self._downloader is None:
                # httpx is imported on the first fetch only: planning and cache hits never pay.
                from donjon.endorse._http import Downloader

                self._downloader = Downloader(
                    timeouts=self.config.timeouts,
                    pcs_api_key=self.config.pcs_api_key,
                    transport=self._transport,
                    on_busy=self._service_busy,
                )
            return self._downloader

    def _service_busy(
        self, request: DocumentRequest, status: int, retry_after: float | None
    ) -> None:
        paused = self._guard.service_busy(
            request, status=status, retry_after=retry_after, now=self._monotonic()
        )
        if paused is not None:
            _logger.warning(
                "%s answered HTTP %d for %s; no request goes to it for %.0f s",
                request.service,
                status,
                request.url,
                paused,
            )


def _size(body: bytes, chain: bytes | None) -> int:
    return len(body) + len(chain or b"")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "AEIOU" else f"a {kind}"


__all__ = [
    "MAX_PARALLEL_FETCHES",
    "MEMORY_BYTES",
    "MEMORY_ENTRIES",
    "Completion",
    "EndorsementFetcher",
    "FetchOutcome",
    "FetchedDocument",
    "Origin",
]
