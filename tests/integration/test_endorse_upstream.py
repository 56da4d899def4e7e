"""Steward's fetching is no lever against AMD KDS / Intel PCS: against the real HTTP emulator,
forged reports naming chips that do not exist cost KDS one request each (then a remembered
failure), a burst beyond the budget is refused at once while known Keeps are still served, and a
429 pauses its host only. Through ``donjon steward serve`` as a real process, an in-process
Steward (real uvicorn) with its metrics, the fetcher itself, and the CLI's ``DONJON_FETCH_RATE``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509

from donjon.attestation.result import Endorsements, Platform
from donjon.cli.main import cli
from donjon.endorse import (
    EndorsementFetcher,
    EndorsementFetchError,
    FetchConfig,
    FetchProblem,
    Timeouts,
    UpstreamBudget,
)
from donjon.steward.client import StewardClient
from donjon.steward.core import StewardCore
from donjon.steward.messages import AttestRequest, ErrorBody
from tests.integration.endorse_support import VECTORS, Answer, Emulator, kds_routes, pcs_routes
from tests.unit.steward._support import (
    SNP_VERIFY_TIME,
    Keep,
    running,
    shared_ca,
    snp_vector,
    vector_core,
)

pytestmark = pytest.mark.integration

GENOA = "sev-snp/genoa-oak"
CHIP_ID_OFFSET = 0x1A0  # AMD SEV-SNP ABI, ATTESTATION_REPORT: CHIP_ID at 1A0h, 64 bytes
FAST = Timeouts(connect=1.0, total=3.0, silence=2.0, max_retry_after=1.0)


@dataclass
class Stopwatch:
    """The fetcher's monotonic clock, moved by hand: no test here waits for time to pass."""

    t: float = 5000.0

    def __call__(self) -> float:
        return self.t


def forged(n: int) -> bytes:
    """The Genoa report naming a chip that does not exist (its signature no longer holds; only
    the verifier, after the fetch, would notice). Deterministic: chip *n* is always the same."""
    report = bytearray(snp_vector(GENOA).report)
    report[CHIP_ID_OFFSET : CHIP_ID_OFFSET + 64] = hashlib.sha512(b"no such chip %d" % n).digest()
    return bytes(report)


def _vcek_requests(kds: Emulator) -> list[str]:
    return [p for p in kds.paths if not p.endswith(("/cert_chain", "/crl"))]


def _post(url: str, client: StewardClient, keep: Keep, report: bytes) -> httpx.Response:
    body = AttestRequest(
        csr=keep.csr(), platform="sev-snp", evidence=report, nonce=client.nonce()
    ).encode()
    with httpx.Client(base_url=url, timeout=30) as http:
        return http.post("/v1/attest", content=body, headers={"content-type": "application/cbor"})


@pytest.fixture
def kds() -> Iterator[Emulator]:
    with Emulator(kds_routes("genoa-oak", "turin-oak")) as emulator:
        yield emulator


@pytest.fixture
def keep(tmp_path: Path) -> Keep:
    return Keep(tmp_path)


def test_a_forged_chip_sent_again_and_again_costs_kds_one_request(
    kds: Emulator, keep: Keep, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DONJON_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "donjon", "steward", "serve", "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path / "state"), "--fetch-endorsements",
         "--kds-url", kds.url, "--cache-dir", str(tmp_path / "cache"), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = ""
        for line in process.stdout:
            if line.startswith("listening on "):
                url = line.split()[-1]
                break
        with httpx.Client(base_url=url) as http:
            ca = x509.load_pem_x509_certificate(http.get("/v1/ca").content)
        report = forged(1)
        with StewardClient(url, ca=ca) as client:
            answers = [_post(url, client, keep, report) for _ in range(6)]
        assert [a.status_code for a in answers] == [502] * 6
        errors = [ErrorBody.decode(a.content) for a in answers]
        assert {e.error for e in errors} == {"EndorsementFetchError"}
        assert "AMD KDS answered HTTP 404 Not Found: it has no such document" in errors[0].reason
        assert "remembered" not in errors[0].reason
        for error in errors[1:]:
            assert error.reason.startswith("AMD KDS answered HTTP 404 Not Found")
            assert "(remembered for 10 min more" in error.reason or (
                "(remembered for 9 min " in error.reason
            )
        assert len(kds.requests) == 1  # not six
    finally:
        process.terminate()
        process.communicate(timeout=20)


def _core(kds: Emulator, cache: Path, stopwatch: Stopwatch, budget: UpstreamBudget) -> StewardCore:
    config = FetchConfig(kds_url=kds.url, cache_dir=cache, timeouts=FAST, budget=budget)
    fetcher = EndorsementFetcher(config, clock=lambda: datetime.now(UTC), monotonic=stopwatch)
    return vector_core(snp_vector(GENOA), endorsements=fetcher)


def test_a_burst_beyond_the_budget_fails_fast_while_known_keeps_are_served(
    kds: Emulator, keep: Keep, tmp_path: Path
) -> None:
    vector = snp_vector(GENOA)
    stopwatch = Stopwatch()  # never moves: no token comes back during the test
    core = _core(kds, tmp_path, stopwatch, UpstreamBudget(rate=1.0, burst=6))
    with (
        running(core) as url,  # the app wires the fetch counts into its metrics itself
        StewardClient(url, ca=shared_ca().certificate) as client,
    ):
        # A real Keep of a real host: its VCEK and the chain are fetched (two tokens).
        issued = client.attest(keep.csr(), vector.report, "sev-snp", Endorsements(), client.nonce())
        assert issued.claims.measurement == vector.measurement
        # Eight forged reports at once, each naming another chip: four tokens are left.
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def one(n: int) -> None:
            answer = _post(url, client, keep, forged(n))
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [a.status_code for a in answers] == [502] * 8
        reasons = [ErrorBody.decode(a.content).reason for a in answers]
        spent = [r for r in reasons if "the request budget for 127.0.0.1" in r]
        not_found = [r for r in reasons if "AMD KDS answered HTTP 404" in r]
        assert (len(spent), len(not_found)) == (4, 4)
        assert all("(1 a second, bursts of 6) is spent" in r for r in spent)
        assert len(_vcek_requests(kds)) == 1 + 4
        # The Keep whose VCEK is already known is still served (from memory: no token).
        again = client.attest(keep.csr(), vector.report, "sev-snp", Endorsements(), client.nonce())
        assert again.claims.measurement == vector.measurement
        assert len(kds.requests) == 2 + 4
        with httpx.Client(base_url=url) as http:
            exposed = http.get("/metrics").text.splitlines()
    for outcome, n in (("fetched", 2), ("failed", 4), ("budget-exhausted", 4), ("memory", 2)):
        assert f'donjon_steward_endorsement_fetches_total{{outcome="{outcome}"}} {n}' in exposed
    assert 'donjon_steward_endorsement_fetches_total{outcome="paused"} 0' in exposed


def test_a_429_with_retry_after_pauses_that_host_only(tmp_path: Path) -> None:
    genoa = (VECTORS / GENOA / "report.bin").read_bytes()
    turin = (VECTORS / "sev-snp" / "turin-oak" / "report.bin").read_bytes()
    tdx = (VECTORS / "tdx" / "oak-v4" / "quote.bin").read_bytes()
    tdx_time = datetime(2025, 11, 1, tzinfo=UTC)
    intel = pcs_routes("tdx/collateral-00806f050000-2025-10", tee="tdx", fmspc="00806F050000")
    stopwatch = Stopwatch()
    with Emulator(kds_routes("genoa-oak", "turin-oak")) as kds, Emulator(intel) as pcs:
        kds.misbehave(
            "/vcek/v1/Genoa/d2", Answer(b"slow down", status=429, headers={"Retry-After": "90"})
        )
        config = FetchConfig(kds_url=kds.url, pcs_url=pcs.url, cache_dir=tmp_path, timeouts=FAST)
        with EndorsementFetcher(
            config, clock=lambda: datetime.now(UTC), monotonic=stopwatch
        ) as fetcher:
            with pytest.raises(EndorsementFetchError) as limited:
                fetcher.complete(Platform.SEV_SNP, genoa, Endorsements(), now=SNP_VERIFY_TIME)
            assert limited.value.problem is FetchProblem.RATE_LIMITED
            assert limited.value.retry_after == 90.0
            # Another chip's VCEK from the same KDS: not asked, the host is paused.
            stopwatch.t += 30
            with pytest.raises(EndorsementFetchError) as paused:
                fetcher.complete(Platform.SEV_SNP, turin, Endorsements(), now=SNP_VERIFY_TIME)
            assert paused.value.problem is FetchProblem.PAUSED
            assert f"nothing is sent to {kds.url.removeprefix('http://')} for 1 min more" in (
                paused.value.message
            )
            assert len(kds.requests) == 1
            # Intel PCS is another host: a TDX quote is completed as usual meanwhile.
            done = fetcher.complete(Platform.TDX, tdx, Endorsements(), now=tdx_time)
            assert len(done.fetched) == 4 and len(pcs.requests) == 4
            # Once the time KDS named has passed, KDS is asked again.
            stopwatch.t += 60
            turin_done = fetcher.complete(
                Platform.SEV_SNP, turin, Endorsements(), now=SNP_VERIFY_TIME
            )
            assert [f.kind for f in turin_done.fetched] == ["VCEK", "ASK/ARK chain"]
            assert len(kds.requests) == 3
            counted = fetcher.outcomes()
    assert {str(k): v for k, v in counted.items() if v} == {
        "failed": 1,
        "paused": 1,
        "fetched": 6,
    }


def test_the_cli_takes_the_budget_from_the_environment(kds: Emulator, tmp_path: Path) -> None:
    report = str(VECTORS / GENOA / "report.bin")
    args = ["attest", "verify", "--platform", "sev-snp", "--evidence", report,
            "--at", "2025-09-01T00:00:00Z", "--fetch", "--kds-url", kds.url,
            "--cache-dir", str(tmp_path)]  # fmt: skip
    # Half a request a second: a burst of one, so the chain after the VCEK is refused.
    result = CliRunner().invoke(cli, args, env={"DONJON_FETCH_RATE": "0.5"})
    assert result.exit_code == 2, result.output
    assert "the request budget for 127.0.0.1" in result.stderr
    assert "(0.5 a second, bursts of 1) is spent" in result.stderr
    assert len(kds.requests) == 1
    result = CliRunner().invoke(cli, args, env={"DONJON_FETCH_RATE": "fast"})
    assert result.exit_code == 2  # unusable input, as a bad --kds-url
    assert "DONJON_FETCH_RATE='fast' is not a positive number of requests per second" in (
        result.stderr
    )
    assert len(kds.requests) == 1
