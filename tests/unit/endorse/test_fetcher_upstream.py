"""The fetcher sparing the services: remembered failures, the budget, and pauses, end to end
through the real fetcher and downloader over an in-memory httpx transport (no socket), with a
stopwatch the tests move by hand."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from donjon.attestation.result import Endorsements, Platform
from donjon.endorse import (
    EndorsementFetcher,
    EndorsementFetchError,
    FetchConfig,
    FetchOutcome,
    FetchProblem,
    Origin,
    UpstreamBudget,
)
from donjon.endorse.cache import CacheEntry, EndorsementCache
from donjon.endorse.plan import plan_endorsements
from tests.unit.endorse._vectors import SNP_TIME, VECTORS, read, snp

KDS = "https://kds.test"
PCS = "https://pcs.test"
CHIP_ID_OFFSET = 0x1A0  # AMD SEV-SNP ABI, ATTESTATION_REPORT: CHIP_ID at 1A0h, 64 bytes
GENOA_CHAIN = (VECTORS / "sev-snp" / "roots" / "genoa-vcek-ask-ark.pem").read_bytes()


@dataclass
class Stopwatch:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


class Service:
    """KDS and PCS in memory: the Genoa vector's VCEK and chain, 404 for anything else, or the
    answer a test sets for a path prefix. Counts what it is asked."""

    def __init__(self) -> None:
        genoa = snp("genoa-oak")
        config = FetchConfig(kds_url=KDS)
        plan = plan_endorsements(
            Platform.SEV_SNP, genoa.report, Endorsements(), config=config, now=SNP_TIME
        )
        self.vcek_url = plan.requests[0].url
        self.answers: dict[str, Callable[[], httpx.Response]] = {}
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._vcek = genoa.vcek

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        with self._lock:
            self.seen.append(url)
        for prefix, answer in self.answers.items():
            if url.startswith(prefix):
                return answer()
        if url == self.vcek_url:
            return httpx.Response(200, content=self._vcek)
        if url == f"{KDS}/vcek/v1/Genoa/cert_chain":
            return httpx.Response(200, content=GENOA_CHAIN)
        return httpx.Response(404, content=b"not found")

    def count(self, prefix: str = "") -> int:
        with self._lock:
            return sum(1 for url in self.seen if url.startswith(prefix))


def _fetcher(
    service: Service,
    stopwatch: Stopwatch,
    *,
    budget: UpstreamBudget | None = None,
    cache: Path | None = None,
) -> EndorsementFetcher:
    config = FetchConfig(
        kds_url=KDS, pcs_url=PCS, cache_dir=cache, budget=budget or UpstreamBudget()
    )
    return EndorsementFetcher(
        config,
        clock=lambda: datetime(2025, 9, 1, 12, tzinfo=UTC),
        transport=httpx.MockTransport(service.handle),
        monotonic=stopwatch,
    )


def forged(n: int) -> bytes:
    """The Genoa report with another, made-up CHIP_ID (its signature no longer holds, which
    planning does not check: only the verifier would, after the fetch)."""
    report = bytearray(snp("genoa-oak").report)
    report[CHIP_ID_OFFSET : CHIP_ID_OFFSET + 64] = hashlib.sha512(b"forged %d" % n).digest()
    return bytes(report)


def _fail(fetcher: EndorsementFetcher, report: bytes) -> EndorsementFetchError:
    with pytest.raises(EndorsementFetchError) as info:
        fetcher.complete(Platform.SEV_SNP, report, Endorsements(), now=SNP_TIME)
    return info.value


def _outcomes(fetcher: EndorsementFetcher) -> dict[str, int]:
    return {str(k): v for k, v in fetcher.outcomes().items() if v}


def test_a_404_is_asked_once_then_remembered_for_ten_minutes() -> None:
    service, stopwatch = Service(), Stopwatch()
    with _fetcher(service, stopwatch) as fetcher:
        first = _fail(fetcher, forged(1))
        assert first.status_code == 404 and first.retry_in is None
        assert "remembered" not in first.message
        stopwatch.t += 48
        for _ in range(5):
            again = _fail(fetcher, forged(1))
            assert again.status_code == 404 and again.problem is FetchProblem.HTTP_STATUS
            assert again.message.startswith("AMD KDS answered HTTP 404 Not Found")
            assert "(remembered for 9 min 12 s more" in again.message
        assert service.count() == 1
        assert _outcomes(fetcher) == {"failed": 1, "remembered": 5}
        stopwatch.t += 552  # ten minutes after the failure: KDS is asked again
        _fail(fetcher, forged(1))
        assert service.count() == 2


def test_a_server_error_is_remembered_for_thirty_seconds() -> None:
    service, stopwatch = Service(), Stopwatch()
    service.answers[service.vcek_url] = lambda: httpx.Response(500)
    genoa = snp("genoa-oak").report
    with _fetcher(service, stopwatch) as fetcher:
        assert _fail(fetcher, genoa).status_code == 500
        stopwatch.t += 29
        assert "(remembered for 1 s more" in _fail(fetcher, genoa).message
        assert service.count() == 1
        del service.answers[service.vcek_url]  # KDS is back
        stopwatch.t += 1
        done = fetcher.complete(Platform.SEV_SNP, genoa, Endorsements(), now=SNP_TIME)
    assert [f.origin for f in done.fetched] == [Origin.NETWORK, Origin.NETWORK]
    assert service.count() == 3


def test_a_document_on_disk_is_used_despite_a_remembered_failure(tmp_path: Path) -> None:
    # Another worker fetched it meanwhile: the disk is read before the failure is recalled.
    service, stopwatch = Service(), Stopwatch()
    service.answers[service.vcek_url] = lambda: httpx.Response(502)
    genoa = snp("genoa-oak")
    with _fetcher(service, stopwatch, cache=tmp_path) as fetcher:
        _fail(fetcher, genoa.report)
        cache = EndorsementCache(tmp_path)
        stamp = datetime(2025, 9, 1, tzinfo=UTC)
        cache.store(CacheEntry(service.vcek_url.removeprefix(KDS), genoa.vcek, None, stamp))
        cache.store(CacheEntry("/vcek/v1/Genoa/cert_chain", GENOA_CHAIN, None, stamp))
        done = fetcher.complete(Platform.SEV_SNP, genoa.report, Endorsements(), now=SNP_TIME)
    assert [f.origin for f in done.fetched] == [Origin.CACHE, Origin.CACHE]
    assert service.count() == 1


def test_threads_asking_for_one_failing_url_cost_one_request() -> None:
    service, stopwatch = Service(), Stopwatch()
    errors: list[EndorsementFetchError] = []
    with _fetcher(service, stopwatch) as fetcher:

        def one() -> None:
            errors.append(_fail(fetcher, forged(7)))

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert len(errors) == 8 and {e.status_code for e in errors} == {404}
    assert service.count() == 1
    assert sum("remembered" in e.message for e in errors) == 7


def test_a_burst_beyond_the_budget_fails_at_once_and_hits_spend_nothing() -> None:
    service, stopwatch = Service(), Stopwatch()
    genoa = snp("genoa-oak").report
    with _fetcher(service, stopwatch, budget=UpstreamBudget(rate=0.5, burst=5)) as fetcher:
        fetcher.complete(Platform.SEV_SNP, genoa, Endorsements(), now=SNP_TIME)  # 2 tokens
        errors = [_fail(fetcher, forged(n)) for n in range(6)]
        assert [e.problem for e in errors] == [FetchProblem.HTTP_STATUS] * 3 + [
            FetchProblem.BUDGET_EXHAUSTED
        ] * 3
        assert service.count() == 5
        spent = errors[-1]
        assert spent.retry_in == pytest.approx(2.0) and spent.status_code is None
        assert "the request budget for kds.test (0.5 a second, bursts of 5) is spent" in (
            spent.message
        )
        # The Keep whose documents are at hand is served all along, and spends no token.
        for _ in range(10):
            done = fetcher.complete(Platform.SEV_SNP, genoa, Endorsements(), now=SNP_TIME)
            assert {f.origin for f in done.fetched} == {Origin.MEMORY}
            assert fetcher.complete_without_io(
                Platform.SEV_SNP, genoa, Endorsements(), now=SNP_TIME
            ) == (done.endorsements)
        # A spent budget is not remembered: the same URL goes out once a token is back.
        stopwatch.t += 2
        assert _fail(fetcher, forged(5)).status_code == 404
        assert service.count() == 6
    assert _outcomes(fetcher) == {
        "fetched": 2,
        "failed": 4,
        "budget-exhausted": 3,
        "memory": 40,
    }


def test_a_429_pauses_every_request_to_that_host_and_no_other() -> None:
    service, stopwatch = Service(), Stopwatch()
    service.answers[service.vcek_url] = lambda: httpx.Response(429, headers={"Retry-After": "120"})
    genoa, turin = snp("genoa-oak").report, snp("turin-oak").report
    tdx = read("tdx/oak-v4/quote.bin")
    with _fetcher(service, stopwatch) as fetcher:
        limited = _fail(fetcher, genoa)
        assert limited.problem is FetchProblem.RATE_LIMITED and limited.retry_after == 120.0
        stopwatch.t += 20
        paused = _fail(fetcher, turin)  # another chip, the same host
        assert paused.problem is FetchProblem.PAUSED
        assert paused.retry_in == pytest.approx(100.0)
        assert "AMD KDS asked us to slow down (HTTP 429, Retry-After 120)" in paused.message
        assert "nothing is sent to kds.test for 1 min 40 s more" in paused.message
        assert service.count(KDS) == 1
        # Intel PCS is another host: asked as usual (it has nothing here, hence the 404).
        assert _fail_tdx(fetcher, tdx).status_code == 404
        assert service.count(PCS) == 1
        stopwatch.t += 100  # the time KDS named has come
        turin_error = _fail(fetcher, turin)
        assert turin_error.status_code == 404  # asked: this fake serves no Turin VCEK
        assert service.count(KDS) == 2
    assert _outcomes(fetcher)["paused"] == 1


def _fail_tdx(fetcher: EndorsementFetcher, quote: bytes) -> EndorsementFetchError:
    with pytest.raises(EndorsementFetchError) as info:
        fetcher.complete(Platform.TDX, quote, Endorsements(), now=datetime(2025, 11, 1, tzinfo=UTC))
    return info.value


def test_outcomes_start_at_zero_for_every_kind() -> None:
    with _fetcher(Service(), Stopwatch()) as fetcher:
        assert fetcher.outcomes() == dict.fromkeys(FetchOutcome, 0)
        assert Counter(str(k) for k in fetcher.outcomes()) == Counter(
            [
                "memory",
                "cache",
                "fetched",
                "failed",
                "remembered",
                "paused",
                "budget-exhausted",
                "busy",
            ]
        )
