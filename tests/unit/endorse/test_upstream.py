"""Protecting the services (pure: time is a number the tests set): remembered failures and their
lifetimes, the LRU bound, the token bucket, the per-host budget, and the pause a 429 imposes."""

from __future__ import annotations

import pytest

from donjon.endorse.config import UpstreamBudget
from donjon.endorse.errors import (
    EndorsementConnectError,
    EndorsementFetchError,
    EndorsementTimeoutError,
    FetchProblem,
)
from donjon.endorse.plan import DocumentKind, DocumentRequest, Service
from donjon.endorse.upstream import (
    CLIENT_ERROR_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    NOT_FOUND_SECONDS,
    RATE_LIMITED_PAUSE_SECONDS,
    TRANSIENT_SECONDS,
    FailureMemory,
    TokenBucket,
    UpstreamGuard,
    failure_lifetime,
    format_seconds,
    service_host,
)
from donjon.errors import ConfigError, TransportError

KDS = "https://kdsintf.amd.com"
PCS = "https://api.trustedservices.intel.com"
VCEK_URL = f"{KDS}/vcek/v1/Genoa/{'ab' * 64}?blSPL=10&teeSPL=00&snpSPL=25&ucodeSPL=84"


def _request(url: str = VCEK_URL, service: Service = Service.KDS) -> DocumentRequest:
    return DocumentRequest(
        url=url,
        kind=DocumentKind.VCEK,
        service=service,
        what="the Genoa VCEK of chip abab…",
        hint="pass the VCEK with --cert",
    )


def _http_error(
    status: int, *, retry_after: float | None = None, url: str = VCEK_URL
) -> EndorsementFetchError:
    problem = {429: FetchProblem.RATE_LIMITED, 503: FetchProblem.BUSY}.get(
        status, FetchProblem.HTTP_STATUS
    )
    return EndorsementFetchError(
        f"AMD KDS answered HTTP {status}, for the Genoa VCEK at {url}; pass the VCEK with --cert",
        url=url,
        problem=problem,
        status_code=status,
        retry_after=retry_after,
    )


# -- how long each failure is remembered ---------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "lifetime"),
    [
        (_http_error(404), NOT_FOUND_SECONDS),
        (_http_error(410), CLIENT_ERROR_SECONDS),
        (_http_error(403), CLIENT_ERROR_SECONDS),
        (_http_error(302), CLIENT_ERROR_SECONDS),
        (_http_error(500), TRANSIENT_SECONDS),
        (_http_error(502), TRANSIENT_SECONDS),
        (_http_error(503), TRANSIENT_SECONDS),
        (_http_error(429), TRANSIENT_SECONDS),  # slow down, but no time named
        (_http_error(429, retry_after=120), 120.0),
        (_http_error(503, retry_after=45), 45.0),
        (_http_error(429, retry_after=86_400), MAX_RETRY_AFTER_SECONDS),  # capped
        (_http_error(503, retry_after=0), None),  # "come back now" is honoured as said
        (
            EndorsementTimeoutError("slow", url=VCEK_URL, problem=FetchProblem.TIMEOUT),
            TRANSIENT_SECONDS,
        ),
        (
            EndorsementConnectError("refused", url=VCEK_URL, problem=FetchProblem.UNREACHABLE),
            TRANSIENT_SECONDS,
        ),
        (EndorsementFetchError("html", url=VCEK_URL, problem=FetchProblem.MALFORMED), 30.0),
        (EndorsementFetchError("big", url=VCEK_URL, problem=FetchProblem.TOO_LARGE), 30.0),
        # Our own refusals say nothing about the URL.
        (EndorsementFetchError("in flight", url=VCEK_URL, problem=FetchProblem.BUSY), None),
        (EndorsementFetchError("paused", url=VCEK_URL, problem=FetchProblem.PAUSED), None),
        (
            EndorsementFetchError("spent", url=VCEK_URL, problem=FetchProblem.BUDGET_EXHAUSTED),
            None,
        ),
    ],
)
def test_failure_lifetimes(error: EndorsementFetchError, lifetime: float | None) -> None:
    assert failure_lifetime(error) == lifetime
    memory = FailureMemory()
    assert memory.remember(error, now=1000.0) == lifetime
    assert len(memory) == (0 if lifetime is None else 1)


@pytest.mark.parametrize(
    ("status", "retry_after", "lifetime"),
    [(404, None, 600.0), (400, None, 300.0), (500, None, 30.0), (429, 90.0, 90.0)],
)
def test_a_remembered_failure_answers_until_its_lifetime_ends(
    status: int, retry_after: float | None, lifetime: float
) -> None:
    memory = FailureMemory()
    memory.remember(_http_error(status, retry_after=retry_after), now=1000.0)
    just_before = memory.recall(VCEK_URL, now=1000.0 + lifetime - 0.5)
    assert just_before is not None and just_before.status_code == status
    assert memory.recall(VCEK_URL, now=1000.0 + lifetime) is None
    assert len(memory) == 0  # the expired entry is gone, not just hidden
    assert memory.recall(f"{KDS}/vcek/v1/Genoa/cert_chain", now=1000.0) is None


def test_the_remembered_error_is_a_fresh_copy_that_says_it_is_remembered() -> None:
    memory = FailureMemory()
    original = EndorsementTimeoutError(
        f"AMD KDS did not deliver the Genoa VCEK within 15 s ({VCEK_URL}); pass it",
        url=VCEK_URL,
        problem=FetchProblem.TIMEOUT,
    )
    memory.remember(original, now=0.0)
    first = memory.recall(VCEK_URL, now=12.0)
    second = memory.recall(VCEK_URL, now=12.0)
    assert first is not None and second is not None and first is not second
    assert first is not original
    # Same class (a timeout stays a TransportTimeoutError), same data, and when it ends.
    assert type(first) is EndorsementTimeoutError and isinstance(first, TransportError)
    assert (first.url, first.problem, first.status_code) == (VCEK_URL, FetchProblem.TIMEOUT, None)
    assert first.retry_in == pytest.approx(18.0)
    assert first.message.startswith(original.message)
    assert "(remembered for 18 s more: the service is not asked for this URL again" in (
        first.message
    )
    assert "\n" not in first.diagnostics()
    assert original.retry_in is None


def test_a_404_says_minutes() -> None:
    memory = FailureMemory()
    memory.remember(_http_error(404), now=0.0)
    error = memory.recall(VCEK_URL, now=48.0)
    assert error is not None and "AMD KDS answered HTTP 404" in error.message
    assert "(remembered for 9 min 12 s more" in error.message


def test_a_new_failure_replaces_the_old_one() -> None:
    memory = FailureMemory()
    memory.remember(_http_error(500), now=0.0)
    memory.remember(_http_error(404), now=20.0)
    error = memory.recall(VCEK_URL, now=100.0)
    assert error is not None and error.status_code == 404
    assert len(memory) == 1


def test_the_failure_memory_is_a_bounded_lru() -> None:
    memory = FailureMemory(capacity=3)
    urls = [f"{KDS}/vcek/v1/Genoa/{i:0128x}" for i in range(5)]
    for url in urls[:3]:
        memory.remember(_http_error(404, url=url), now=0.0)
    assert memory.recall(urls[0], now=1.0) is not None  # used: now the most recent
    memory.remember(_http_error(404, url=urls[3]), now=2.0)  # evicts urls[1], the oldest
    memory.remember(_http_error(404, url=urls[4]), now=3.0)  # evicts urls[2]
    assert len(memory) == 3
    assert [memory.recall(u, now=4.0) is not None for u in urls] == [
        True,
        False,
        False,
        True,
        True,
    ]
    with pytest.raises(ConfigError):
        FailureMemory(capacity=0)


# -- the token bucket ----------------------------------------------------------------------------


def test_token_bucket_burst_then_refill() -> None:
    bucket = TokenBucket(UpstreamBudget(rate=2.0, burst=3), now=100.0)
    assert [bucket.take(now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(now=100.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert bucket.take(now=100.25) == pytest.approx(0.25)
    assert bucket.take(now=100.5) == 0.0
    assert bucket.take(now=100.5) > 0


def test_token_bucket_never_holds_more_than_its_burst() -> None:
    bucket = TokenBucket(UpstreamBudget(rate=10.0, burst=2), now=0.0)
    assert bucket.take(now=3600.0) == 0.0  # an hour idle refills to 2, not 36000
    assert bucket.take(now=3600.0) == 0.0
    assert bucket.take(now=3600.0) == pytest.approx(0.1)


def test_token_bucket_tolerates_a_clock_that_steps_back() -> None:
    bucket = TokenBucket(UpstreamBudget(rate=1.0, burst=1), now=50.0)
    assert bucket.take(now=50.0) == 0.0
    assert bucket.take(now=10.0) > 0  # nothing refilled by going back in time
    assert bucket.take(now=50.5) == pytest.approx(0.5)
    assert bucket.take(now=51.0) == 0.0


def test_upstream_budget_settings() -> None:
    assert UpstreamBudget() == UpstreamBudget(rate=10.0, burst=20)
    assert UpstreamBudget.per_second(3) == UpstreamBudget(rate=3.0, burst=6)
    assert UpstreamBudget.per_second(0.2) == UpstreamBudget(rate=0.2, burst=1)
    for rate in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="positive number of requests per second"):
            UpstreamBudget(rate=rate)
        with pytest.raises(ConfigError, match="positive number of requests per second"):
            UpstreamBudget.per_second(rate)
    for burst in (0, -3, True):
        with pytest.raises(ConfigError, match="burst"):
            UpstreamBudget(burst=burst)


# -- the guard: budget per host, pauses ----------------------------------------------------------


def test_the_budget_is_per_service_host() -> None:
    guard = UpstreamGuard(UpstreamBudget(rate=1.0, burst=2))
    kds, pcs = _request(), _request(f"{PCS}/sgx/certification/v4/qe/identity", Service.PCS)
    guard.admit(kds, now=0.0)
    guard.admit(_request(f"{KDS}/vcek/v1/Genoa/cert_chain"), now=0.0)
    with pytest.raises(EndorsementFetchError) as info:
        guard.admit(kds, now=0.0)
    error = info.value
    assert error.problem is FetchProblem.BUDGET_EXHAUSTED and error.status_code is None
    assert error.retry_in == pytest.approx(1.0)
    assert error.url == VCEK_URL
    assert (
        "the request budget for kdsintf.amd.com (1 a second, bursts of 2) is spent, so the "
        "Genoa VCEK of chip abab… was not fetched" in error.message
    )
    assert "to spare AMD KDS's rate limit; try again in 1 s, or pass the VCEK" in error.message
    # Intel's host has its own bucket, untouched by KDS's.
    guard.admit(pcs, now=0.0)
    guard.admit(pcs, now=0.0)
    guard.admit(kds, now=1.0)  # refilled
    # A spent budget is not a failure of the URL: nothing is remembered.
    assert len(guard.failures) == 0


def test_hosts_differ_by_port_and_not_by_case() -> None:
    assert service_host("https://KDSintf.AMD.com/vcek/v1/x") == "kdsintf.amd.com"
    assert service_host("http://127.0.0.1:8080/a") != service_host("http://127.0.0.1:8081/a")
    guard = UpstreamGuard(UpstreamBudget(rate=1.0, burst=1))
    guard.admit(_request("http://127.0.0.1:8080/vcek/v1/Genoa/cert_chain"), now=0.0)
    guard.admit(_request("http://127.0.0.1:8081/vcek/v1/Genoa/cert_chain"), now=0.0)
    with pytest.raises(EndorsementFetchError, match=r"budget for 127\.0\.0\.1:8080"):
        guard.admit(_request("http://127.0.0.1:8080/vcek/v1/Milan/cert_chain"), now=0.0)


def test_a_429_with_retry_after_pauses_the_whole_host_only() -> None:
    guard = UpstreamGuard(UpstreamBudget(rate=100.0, burst=100))
    other_url = f"{KDS}/vcek/v1/Turin/{'cd' * 8}?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=5"
    assert guard.service_busy(_request(), status=429, retry_after=120.0, now=10.0) == 120.0
    with pytest.raises(EndorsementFetchError) as info:
        guard.admit(_request(other_url), now=70.0)  # another URL on the same host
    error = info.value
    assert error.problem is FetchProblem.PAUSED and error.retry_in == pytest.approx(60.0)
    assert error.message.startswith(
        "AMD KDS asked us to slow down (HTTP 429, Retry-After 120), so nothing is sent to "
        "kdsintf.amd.com for 1 min more: the Genoa VCEK"
    )
    assert guard.paused_for(other_url, now=70.0) == pytest.approx(60.0)
    # Intel PCS is another host: not paused.
    guard.admit(_request(f"{PCS}/tdx/certification/v4/qe/identity", Service.PCS), now=70.0)
    assert guard.paused_for(PCS + "/x", now=70.0) == 0.0
    # When the time named has passed, the host is asked again.
    guard.admit(_request(other_url), now=130.0)
    assert guard.paused_for(other_url, now=130.0) == 0.0


def test_pauses_for_each_kind_of_busy() -> None:
    guard = UpstreamGuard(UpstreamBudget())
    busy = _request()
    assert guard.service_busy(busy, status=429, retry_after=None, now=0.0) == (
        RATE_LIMITED_PAUSE_SECONDS
    )
    assert guard.service_busy(busy, status=503, retry_after=None, now=0.0) is None
    assert guard.service_busy(busy, status=503, retry_after=0.0, now=0.0) is None
    assert guard.service_busy(busy, status=503, retry_after=30.0, now=0.0) == 30.0
    assert guard.service_busy(busy, status=429, retry_after=1e9, now=0.0) == (
        MAX_RETRY_AFTER_SECONDS
    )
    # A pause is only ever extended: a later, shorter Retry-After does not cut it short.
    assert guard.service_busy(busy, status=429, retry_after=5.0, now=1.0) == 5.0
    assert guard.paused_for(VCEK_URL, now=1.0) == pytest.approx(MAX_RETRY_AFTER_SECONDS - 1.0)


def test_a_paused_host_spends_no_tokens() -> None:
    guard = UpstreamGuard(UpstreamBudget(rate=1.0, burst=1))
    guard.service_busy(_request(), status=429, retry_after=10.0, now=0.0)
    for _ in range(5):
        with pytest.raises(EndorsementFetchError, match="slow down"):
            guard.admit(_request(), now=5.0)
    guard.admit(_request(), now=10.0)  # the one token is still there


def test_the_guard_remembers_and_recalls() -> None:
    guard = UpstreamGuard(UpstreamBudget(), capacity=2)
    assert guard.remember(_http_error(404), now=0.0) == NOT_FOUND_SECONDS
    recalled = guard.recall(VCEK_URL, now=1.0)
    assert recalled is not None and recalled.status_code == 404
    assert guard.recall(VCEK_URL, now=NOT_FOUND_SECONDS) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.01, "1 s"), (1.0, "1 s"), (29.2, "30 s"), (60.0, "1 min"), (552.0, "9 min 12 s")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
