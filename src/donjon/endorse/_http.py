"""GET one endorsement document over HTTP(S), within bounds of time and size.

Rule 1: only the URL is sent (plus ``Accept-Encoding: identity`` and a ``User-Agent``), and the
Intel PCS API key only to Intel PCS when one is configured. No cookies, no redirects, no
credentials from the environment (httpx 0.28 reads no ``.netrc`` unless asked).
Rule 2: every answer is bounded while it streams: a ``Content-Length`` over the limit is refused
before the body is read, and reading stops one chunk past the limit.
Rule 3: time is bounded: connecting, each wait for bytes, and the whole document (retries and
``Retry-After`` waits included), per :class:`~donjon.endorse.config.Timeouts`.
Rule 4: one retry at most for each of: a connection that could not be made; HTTP 429 or 503 with
a ``Retry-After`` of at most the configured cap (1 s when absent).
Rule 5: every failure is one :class:`~donjon.endorse.errors.EndorsementFetchError` that names
the URL, what went wrong, and what to do.
Rule 6: every HTTP 429 or 503 is reported to *on_busy* as it arrives (before the retry wait), so
the fetcher can pause the whole service host at once (:mod:`donjon.endorse.upstream`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes

import httpx

from donjon import __version__
from donjon.endorse.cache import MAX_ISSUER_CHAIN_BYTES
from donjon.endorse.config import Timeouts
from donjon.endorse.errors import (
    EndorsementConnectError,
    EndorsementFetchError,
    EndorsementTimeoutError,
    FetchProblem,
)
from donjon.endorse.plan import DocumentRequest

_logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_SECONDS: Final = 1.0
"""How long to wait before the one retry after HTTP 429/503 without ``Retry-After`` (seconds)."""

MAX_CONNECTIONS: Final = 8
"""Connections kept open at once (to KDS, PCS, and the root CRL host)."""

API_KEY_HEADER: Final = "Ocp-Apim-Subscription-Key"

_RETRYABLE_STATUSES = frozenset({429, 503})
_PCCS_V3_CHAIN_HEADERS = {"TCB-Info-Issuer-Chain": "SGX-TCB-Info-Issuer-Chain"}


@dataclass(frozen=True, slots=True)
class Answer:
    """A document's bytes as received.

    Attributes:
        body: the body.
        issuer_chain: the issuer chain header, URL-decoded (Intel), or None.
    """

    body: bytes
    issuer_chain: bytes | None


class _RetryLaterError(Exception):
    """Internal: the service asked us to come back after *wait* seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


class Downloader:
    """GETs documents (thread-safe; one connection pool, created on first use).

    Args:
        timeouts: the time bounds.
        pcs_api_key: sent to requests that allow it; never logged.
        transport: an httpx transport (tests); the default one otherwise.
        sleep, monotonic: the waiting and the stopwatch (tests may pass their own).
        on_busy: called with the request, the status and the ``Retry-After`` it came with
            (seconds, None when absent or an HTTP date) on every HTTP 429 or 503 (rule 6).
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts,
        pcs_api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        on_busy: Callable[[DocumentRequest, int, float | None], None] | None = None,
    ) -> None:
        self._timeouts = timeouts
        self._api_key = pcs_api_key
        self._transport = transport
        self._sleep = sleep
        self._monotonic = monotonic
        self._on_busy = on_busy
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection pool."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    transport=self._transport,
                    follow_redirects=False,
                    headers={"User-Agent": f"donjon/{__version__}", "Accept-Encoding": "identity"},
                    limits=httpx.Limits(max_connections=MAX_CONNECTIONS),
                )
            return self._client

    def get(self, request: DocumentRequest) -> Answer:
        """GET *request*'s URL within the bounds (rules 1-5).

        Raises:
            EndorsementFetchError: any failure (subclasses for timeouts and connections).
        """
        deadline = self._monotonic() + self._timeouts.total
        connect_retried = busy_retried = False
        while True:
            try:
                return self._attempt(request, deadline, may_retry_busy=not busy_retried)
            except _RetryLaterError as retry:
                busy_retried = True
                _logger.info(
                    "%s is busy; retrying %s in %.1f s", request.service, request.url, retry.wait
                )
                self._sleep(retry.wait)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if connect_retried or self._monotonic() >= deadline:
                    raise self._connect_error(request, e) from e
                connect_retried = True
                _logger.info("cannot reach %s (%s); retrying once", request.url, type(e).__name__)

    def _attempt(
        self, request: DocumentRequest, deadline: float, *, may_retry_busy: bool
    ) -> Answer:
        t = self._timeouts
        left = deadline - self._monotonic()
        if left <= 0:
            raise self._timeout(request)
        timeout = httpx.Timeout(
            connect=min(t.connect, left),
            read=min(t.silence, left),
            write=min(t.silence, left),
            pool=min(t.connect, left),
        )
        headers = {}
        if request.send_api_key and self._api_key is not None:
            headers[API_KEY_HEADER] = self._api_key
        _logger.debug("GET %s", request.url)
        try:
            with self._http().stream("GET", request.url, headers=headers, timeout=timeout) as r:
                if r.status_code != 200:
                    self._refuse(request, r, deadline, may_retry_busy=may_retry_busy)
                chain = self._issuer_chain(request, r) if request.issuer_chain_header else None
                body = self._read_body(request, r, deadline)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise
        except httpx.TimeoutException as e:
            raise self._timeout(request) from e
        except httpx.HTTPError as e:
            raise EndorsementConnectError(
                f"the connection to {request.service} failed while fetching {request.what} "
                f"({request.url}: {type(e).__name__}: {e}); {request.hint}",
                url=request.url,
                problem=FetchProblem.UNREACHABLE,
            ) from e
        _logger.info("fetched %s (%d bytes) from %s", request.kind, len(body), request.url)
        return Answer(body, chain)

    def _read_body(self, request: DocumentRequest, r: httpx.Response, deadline: float) -> bytes:
        limit = request.max_bytes
        declared = r.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(request, f"a {declared}-byte body", limit)
        body = bytearray()
        for chunk in r.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise self._too_large(request, "a larger body", limit)
            if self._monotonic() > deadline:
                raise self._timeout(request)
        return bytes(body)

    def _issuer_chain(self, request: DocumentRequest, r: httpx.Response) -> bytes | None:
        name = request.issuer_chain_header or ""
        value = r.headers.get(name)
        if value is None and name in _PCCS_V3_CHAIN_HEADERS:
            value = r.headers.get(_PCCS_V3_CHAIN_HEADERS[name])
        if value is None:
            return None
        # URL-encoding at most triples the size; bound the text before decoding it.
        if len(value) > 3 * MAX_ISSUER_CHAIN_BYTES:
            raise self._too_large(request, f"a {name} header", MAX_ISSUER_CHAIN_BYTES)
        chain = unquote_to_bytes(value)
        if len(chain) > MAX_ISSUER_CHAIN_BYTES:
            raise self._too_large(request, f"a {name} header", MAX_ISSUER_CHAIN_BYTES)
        return chain

    def _refuse(
        self, request: DocumentRequest, r: httpx.Response, deadline: float, *, may_retry_busy: bool
    ) -> None:
        status = r.status_code
        service, url, hint = request.service, request.url, request.hint
        if status in _RETRYABLE_STATUSES:
            header = r.headers.get("retry-after")
            wait = _retry_after(header)
            asked = wait if header is not None else None  # what the service itself said
            if self._on_busy is not None:
                self._on_busy(request, status, asked)
            if (
                may_retry_busy
                and wait is not None
                and wait <= self._timeouts.max_retry_after
                and self._monotonic() + wait < deadline
            ):
                raise _RetryLaterError(wait)
            after = (
                f", Retry-After {r.headers['retry-after']!r}" if "retry-after" in r.headers else ""
            )
            problem = FetchProblem.RATE_LIMITED if status == 429 else FetchProblem.BUSY
            raise EndorsementFetchError(
                f"{service} is {'rate-limiting us' if status == 429 else 'unavailable'} (HTTP "
                f"{status}{after}) for {request.what} at {url}; try again later, or {hint}",
                url=url,
                problem=problem,
                status_code=status,
                retry_after=asked,
            )
        if 300 <= status < 400:
            where = r.headers.get("location", "?")[:200]
            detail = f"a redirect to {where} (not followed: point the URL option at it)"
        elif status == 404:
            detail = "HTTP 404 Not Found: it has no such document"
        else:
            detail = f"HTTP {status} {r.reason_phrase}".rstrip()
        raise EndorsementFetchError(
            f"{service} answered {detail}, for {request.what} at {url}; {hint}",
            url=url,
            problem=FetchProblem.HTTP_STATUS,
            status_code=status,
        )

    def _timeout(self, request: DocumentRequest) -> EndorsementTimeoutError:
        return EndorsementTimeoutError(
            f"{request.service} did not deliver {request.what} within "
            f"{self._timeouts.total:g} s ({request.url}); {request.hint}",
            url=request.url,
            problem=FetchProblem.TIMEOUT,
        )

    def _too_large(self, request: DocumentRequest, sent: str, limit: int) -> EndorsementFetchError:
        return EndorsementFetchError(
            f"{request.service} sent {sent} over the {limit}-byte limit for {request.what} "
            f"({request.url}): that is no {request.kind}; {request.hint}",
            url=request.url,
            problem=FetchProblem.TOO_LARGE,
        )

    def _connect_error(self, request: DocumentRequest, e: httpx.HTTPError) -> EndorsementFetchError:
        if isinstance(e, httpx.ConnectTimeout):
            return EndorsementTimeoutError(
                f"cannot reach {request.service} at {request.url}: no connection within "
                f"{self._timeouts.connect:g} s (tried twice); {request.hint}",
                url=request.url,
                problem=FetchProblem.TIMEOUT,
            )
        return EndorsementConnectError(
            f"cannot reach {request.service} at {request.url} ({str(e) or type(e).__name__}; tried "
            f"twice); {request.hint}",
            url=request.url,
            problem=FetchProblem.UNREACHABLE,
        )


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds only (an HTTP date would need the clock)."""
    if value is None:
        return DEFAULT_RETRY_AFTER_SECONDS
    text = value.strip()
    return float(text) if text.isdigit() else None


__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_RETRY_AFTER_SECONDS",
    "MAX_CONNECTIONS",
    "Answer",
    "Downloader",
]
