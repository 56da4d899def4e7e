"""Steward completing the endorsements a Keep did not send, against the real HTTP KDS/PCS
emulator: in-process (uvicorn, pinned clock, the vector's binding) and ``donjon steward serve
--fetch-endorsements`` as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from donjon.attestation.result import Endorsements
from donjon.endorse import EndorsementFetcher, FetchConfig, Timeouts
from donjon.errors import ChainError, FreshnessError, MeasurementError, TransportError
from donjon.steward.client import StewardClient, StewardRejectedError
from donjon.steward.core import StewardCore
from donjon.steward.messages import AttestRequest, ErrorBody
from tests.integration.endorse_support import VECTORS, Answer, Emulator, kds_routes
from tests.unit.steward._support import (
    Keep,
    running,
    shared_ca,
    snp_vector,
    vector_core,
)

pytestmark = pytest.mark.integration

GENOA = "sev-snp/genoa-oak"


@pytest.fixture
def kds() -> Iterator[Emulator]:
    with Emulator(kds_routes("genoa-oak")) as emulator:
        yield emulator


@pytest.fixture
def keep(tmp_path: Path) -> Keep:
    return Keep(tmp_path)


_FETCHERS: list[EndorsementFetcher] = []


@pytest.fixture(autouse=True)
def _close_fetchers() -> Iterator[None]:
    yield
    while _FETCHERS:
        _FETCHERS.pop().close()


def _core(kds: Emulator, cache: Path, *, fetch: bool = True) -> StewardCore:
    fetcher = None
    if fetch:
        config = FetchConfig(
            kds_url=kds.url, cache_dir=cache, timeouts=Timeouts(total=3.0, silence=2.0)
        )
        fetcher = EndorsementFetcher(config, clock=lambda: datetime.now(UTC))
        _FETCHERS.append(fetcher)
    return vector_core(snp_vector(GENOA), endorsements=fetcher)


def test_steward_issues_for_a_report_sent_without_its_vcek(
    kds: Emulator, keep: Keep, tmp_path: Path
) -> None:
    vector = snp_vector(GENOA)
    core = _core(kds, tmp_path)
    request = AttestRequest(
        csr=keep.csr(), platform="sev-snp", evidence=vector.report, nonce=core.nonce().nonce
    )
    assert core.endorse_without_io(request) is None  # I/O needed: the app goes to a thread
    with running(core) as url, StewardClient(url, ca=shared_ca().certificate) as c:
        issued = c.attest(keep.csr(), vector.report, "sev-snp", Endorsements(), c.nonce())
        assert issued.claims.platform == "sev-snp"
        assert issued.claims.measurement == vector.measurement
        assert len(kds.requests) == 2
        # The next Keep of that host: from memory, in the event loop, nothing fetched.
        again = c.attest(keep.csr(), vector.report, "sev-snp", Endorsements(), c.nonce())
        assert again.claims.measurement == vector.measurement
        assert len(kds.requests) == 2
    ready = core.endorse_without_io(request)
    assert ready is not None and ready.certs[0] == (VECTORS / GENOA / "vcek.der").read_bytes()
    # A Keep that sends its VCEK needs nothing: the request itself comes back.
    sent = AttestRequest(
        csr=request.csr, platform="sev-snp", evidence=vector.report, nonce=request.nonce,
        certs=(vector.vcek,),
    )  # fmt: skip
    assert core.endorse_without_io(sent) is sent


def test_without_fetching_the_report_alone_is_refused(
    kds: Emulator, keep: Keep, tmp_path: Path
) -> None:
    vector = snp_vector(GENOA)
    core = _core(kds, tmp_path, fetch=False)
    assert not core.fetches_endorsements
    with running(core) as url, StewardClient(url, ca=shared_ca().certificate) as c:
        with pytest.raises(ChainError, match="no VCEK/VLEK certificate was given"):
            c.attest(keep.csr(), vector.report, "sev-snp", Endorsements(), c.nonce())
    assert kds.requests == []


def test_a_bad_nonce_costs_no_fetch(kds: Emulator, keep: Keep, tmp_path: Path) -> None:
    vector = snp_vector(GENOA)
    with running(_core(kds, tmp_path)) as url, StewardClient(url, ca=shared_ca().certificate) as c:
        with pytest.raises(FreshnessError, match="nonce"):
            c.attest(keep.csr(), vector.report, "sev-snp", Endorsements(), b"\x01" * 57)
    assert kds.requests == []


def test_a_failed_fetch_is_a_502_with_the_reason(kds: Emulator, keep: Keep, tmp_path: Path) -> None:
    kds.misbehave("/vcek/v1/Genoa/d2", Answer(b"", status=404))
    vector = snp_vector(GENOA)
    with running(_core(kds, tmp_path)) as url, httpx.Client(base_url=url) as http:
        with StewardClient(url, ca=shared_ca().certificate) as client:
            nonce = client.nonce()
        body = AttestRequest(
            csr=keep.csr(), platform="sev-snp", evidence=vector.report, nonce=nonce
        ).encode()
        response = http.post(
            "/v1/attest", content=body, headers={"content-type": "application/cbor"}
        )
        # The Steward client reports it as a transport failure, not as a rejection.
        with StewardClient(url, ca=shared_ca().certificate) as client:
            nonce = client.nonce()
            with pytest.raises(TransportError, match="could not fetch") as caught:
                client.attest(keep.csr(), vector.report, "sev-snp", Endorsements(), nonce)
        assert not isinstance(caught.value, StewardRejectedError)
    assert response.status_code == 502
    error = ErrorBody.decode(response.content)
    assert error.error == "EndorsementFetchError"
    assert "AMD KDS answered HTTP 404" in error.reason and kds.url in error.reason


def test_the_event_loop_keeps_serving_while_a_fetch_waits(
    kds: Emulator, keep: Keep, tmp_path: Path
) -> None:
    vcek = (VECTORS / GENOA / "vcek.der").read_bytes()
    kds.misbehave("/vcek/v1/Genoa/d2", Answer(vcek, delay=1.5))
    vector = snp_vector(GENOA)
    outcome: list[object] = []
    with running(_core(kds, tmp_path)) as url, StewardClient(url, ca=shared_ca().certificate) as c:
        nonce = c.nonce()

        def attest() -> None:
            outcome.append(c.attest(keep.csr(), vector.report, "sev-snp", Endorsements(), nonce))

        worker = threading.Thread(target=attest)
        worker.start()
        time.sleep(0.3)  # the fetch is under way
        started = time.monotonic()
        with httpx.Client() as http:
            health = http.get(f"{url}/healthz")
        waited = time.monotonic() - started
        worker.join(10)
    assert health.status_code == 200 and waited < 0.5
    assert len(outcome) == 1 and not isinstance(outcome[0], Exception)


def test_steward_serve_with_fetch_endorsements(kds: Emulator, keep: Keep, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DONJON_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "donjon", "steward", "serve", "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path / "state"), "--fetch-endorsements",
         "--kds-url", kds.url, "--cache-dir", str(tmp_path / "cache"), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line.strip())
            if line.startswith("listening on "):
                break
        url = lines[-1].split()[-1]
        assert f"fetching missing endorsements from {kds.url}" in "\n".join(lines)
        vector = snp_vector(GENOA)
        with httpx.Client(base_url=url) as http:
            ca = http.get("/v1/ca").content
            assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
        with StewardClient(url, ca=x509.load_pem_x509_certificate(ca)) as client:
            # The real clock and the strict binding: the report (valid VCEK chain until 2032)
            # verifies with the fetched VCEK, then fails only because it binds another key.
            with pytest.raises(MeasurementError, match="does not bind"):
                client.attest(keep.csr(), vector.report, "sev-snp", Endorsements(), client.nonce())
        assert [p.split("?")[0].rsplit("/", 1)[-1][:8] for p in kds.paths] == [
            "d2421d97",
            "cert_cha",
        ]
        assert len(list((tmp_path / "cache").iterdir())) == 2
    finally:
        process.terminate()
        process.communicate(timeout=20)
