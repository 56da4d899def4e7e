"""``donjon.endorse`` against a real HTTP KDS/PCS emulator on 127.0.0.1 serving the real vectors'
files: completion, the cache, and every way a service can fail."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from donjon.attestation.dispatch import verify_evidence
from donjon.attestation.policy import Policy, evaluate
from donjon.attestation.result import Endorsements, Platform
from donjon.attestation.snp import SnpEndorsementMismatchError
from donjon.endorse import (
    EndorsementConnectError,
    EndorsementFetcher,
    EndorsementFetchError,
    EndorsementTimeoutError,
    EndorsementUnavailableError,
    FetchConfig,
    FetchProblem,
    Origin,
    Timeouts,
)
from donjon.endorse.cache import EndorsementCache
from donjon.errors import ChainError, EvidenceFormatError
from tests.integration.endorse_support import (
    VECTORS,
    Answer,
    Emulator,
    kds_routes,
    pcs_routes,
    vcek_path,
)

pytestmark = pytest.mark.integration

SNP_TIME = datetime(2025, 9, 1, tzinfo=UTC)
TDX_TIME = datetime(2025, 11, 1, tzinfo=UTC)
SGX_TIME = datetime(2025, 9, 1, tzinfo=UTC)
GENOA = VECTORS / "sev-snp" / "genoa-oak"
TDX_QUOTE = (VECTORS / "tdx" / "oak-v4" / "quote.bin").read_bytes()
FAST = Timeouts(connect=1.0, total=1.5, silence=0.5, max_retry_after=1.0)


def _clock() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def service() -> Iterator[Emulator]:
    routes = kds_routes("genoa-oak", "turin-oak", "milan-trustee", "milan-gsg")
    routes |= pcs_routes("tdx/collateral-00806f050000-2025-10", tee="tdx", fmspc="00806F050000")
    with Emulator(routes) as emulator:
        yield emulator


def _fetcher(
    service: Emulator,
    cache: Path | None,
    *,
    timeouts: Timeouts = FAST,
    amd_crl: bool = False,
    pcs_api_key: str | None = None,
) -> EndorsementFetcher:
    config = FetchConfig(
        kds_url=service.url,
        pcs_url=service.url,
        cache_dir=cache,
        timeouts=timeouts,
        amd_crl=amd_crl,
        pcs_api_key=pcs_api_key,
    )
    return EndorsementFetcher(config, clock=_clock)


def _genoa() -> bytes:
    return (GENOA / "report.bin").read_bytes()


# -- completion ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["genoa-oak", "turin-oak", "milan-trustee"])
def test_a_report_alone_verifies_once_completed(
    service: Emulator, tmp_path: Path, name: str
) -> None:
    report = (VECTORS / "sev-snp" / name / "report.bin").read_bytes()
    with pytest.raises(ChainError, match="no VCEK/VLEK certificate was given"):
        verify_evidence("sev-snp", report, endorsements=Endorsements(), now=SNP_TIME)
    with _fetcher(service, tmp_path) as fetcher:
        done = fetcher.complete(Platform.SEV_SNP, report, Endorsements(), now=SNP_TIME)
    verified = verify_evidence("sev-snp", report, endorsements=done.endorsements, now=SNP_TIME)
    assert verified.claims["chip_id"].startswith(service.paths[0].split("/")[4].split("?")[0])
    assert [(f.kind, f.origin, f.kept) for f in done.fetched] == [
        ("VCEK", Origin.NETWORK, True),
        ("ASK/ARK chain", Origin.NETWORK, True),
    ]
    vcek = (VECTORS / "sev-snp" / name / "vcek.der").read_bytes()
    assert done.endorsements.certs[0] == vcek
    assert len(service.requests) == 2


def test_second_verification_hits_the_cache(service: Emulator, tmp_path: Path) -> None:
    with _fetcher(service, tmp_path) as fetcher:
        fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
        again = fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
        assert {f.origin for f in again.fetched} == {Origin.MEMORY}
        no_io = fetcher.complete_without_io(
            Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME
        )
        assert no_io == again.endorsements
    assert len(service.requests) == 2
    # Another process (a new fetcher) reads the disk cache: still no request.
    with _fetcher(service, tmp_path) as fetcher:
        later = fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
    assert {f.origin for f in later.fetched} == {Origin.CACHE}
    assert len(service.requests) == 2
    verify_evidence("sev-snp", _genoa(), endorsements=later.endorsements, now=SNP_TIME)
    # fetched_at is when it was fetched, kept in the entry.
    first_fetch = later.fetched[0].fetched_at
    assert datetime.now(UTC) - first_fetch < timedelta(minutes=1)


def test_expired_entries_are_fetched_again_at_a_pinned_now(
    service: Emulator, tmp_path: Path
) -> None:
    with _fetcher(service, tmp_path) as fetcher:
        first = fetcher.complete(Platform.TDX, TDX_QUOTE, Endorsements(), now=TDX_TIME)
    verify_evidence("tdx", TDX_QUOTE, endorsements=first.endorsements, now=TDX_TIME)
    assert len(service.requests) == 4
    with _fetcher(service, tmp_path) as fetcher:
        same = fetcher.complete(Platform.TDX, TDX_QUOTE, Endorsements(), now=TDX_TIME)
        # After the TCB info's nextUpdate (2025-11-18): it, the QE identity and the PCK CRL
        # (2025-11-12) are stale; the root CA CRL (valid to 2026-04-03) is still good.
        stale = fetcher.complete(
            Platform.TDX, TDX_QUOTE, Endorsements(), now=datetime(2025, 11, 20, tzinfo=UTC)
        )
    assert {f.origin for f in same.fetched} == {Origin.CACHE}
    assert [(f.kind, f.origin) for f in stale.fetched] == [
        ("TCB info", Origin.NETWORK),
        ("QE identity", Origin.NETWORK),
        ("PCK CA CRL", Origin.NETWORK),
        ("Intel SGX Root CA CRL", Origin.MEMORY),
    ]
    assert len(service.requests) == 7
    # A pinned time before a VCEK's notBefore: the entry is not valid yet, so it is refetched.
    with _fetcher(service, tmp_path) as fetcher:
        fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
        early = fetcher.complete(
            Platform.SEV_SNP, _genoa(), Endorsements(), now=datetime(2025, 8, 1, tzinfo=UTC)
        )
    assert early.fetched[0].origin is Origin.NETWORK


def test_a_corrupt_cache_entry_is_ignored_and_replaced(service: Emulator, tmp_path: Path) -> None:
    with _fetcher(service, tmp_path) as fetcher:
        done = fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
    entry = EndorsementCache(tmp_path).path_for("/vcek/v1/Genoa/cert_chain")
    data = entry.read_bytes()
    entry.write_bytes(data[:-40] + b"X" * 40)  # the ASK/ARK chain, damaged
    vcek_entry = next(p for p in tmp_path.iterdir() if p != entry)
    vcek_entry.write_bytes(b"garbage")
    with _fetcher(service, tmp_path) as fetcher:
        again = fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
    assert [f.origin for f in again.fetched] == [Origin.NETWORK, Origin.NETWORK]
    assert again.endorsements == done.endorsements
    # Replaced by a good entry (same body, a new fetch time).
    replaced = EndorsementCache(tmp_path).load("/vcek/v1/Genoa/cert_chain", max_body_bytes=65536)
    assert replaced is not None and data.endswith(replaced.body)
    assert len(service.requests) == 4


def test_the_vcek_of_another_chip_is_rejected_by_the_verifier_and_not_cached(
    service: Emulator, tmp_path: Path
) -> None:
    trustee = (VECTORS / "sev-snp" / "milan-trustee" / "report.bin").read_bytes()
    gsg_vcek = (VECTORS / "sev-snp" / "milan-gsg" / "vcek.der").read_bytes()
    trustee_vcek = (VECTORS / "sev-snp" / "milan-trustee" / "vcek.der").read_bytes()
    service.misbehave(vcek_path(trustee_vcek).split("?")[0], Answer(gsg_vcek))
    with _fetcher(service, tmp_path) as fetcher:
        done = fetcher.complete(Platform.SEV_SNP, trustee, Endorsements(), now=SNP_TIME)
    assert [f.kept for f in done.fetched] == [False, True]
    with pytest.raises(SnpEndorsementMismatchError, match="belongs to another chip") as info:
        verify_evidence("sev-snp", trustee, endorsements=done.endorsements, now=SNP_TIME)
    assert info.value.field == "chip_id"
    # Not remembered: the next completion asks KDS again.
    with _fetcher(service, tmp_path) as fetcher:
        again = fetcher.complete(Platform.SEV_SNP, trustee, Endorsements(), now=SNP_TIME)
    assert again.fetched[0].origin is Origin.NETWORK


def test_sgx_collateral_stripped_is_fetched(tmp_path: Path) -> None:
    quote = (VECTORS / "sgx" / "occlum-trustee" / "quote.bin").read_bytes()
    routes = pcs_routes("sgx/collateral-00606a000000-2025-08", tee="sgx", fmspc="00606A000000")
    with Emulator(routes) as service, _fetcher(service, tmp_path) as fetcher:
        done = fetcher.complete(Platform.SGX, quote, Endorsements(), now=SGX_TIME)
    assert len(done.endorsements.collateral) == 4
    verified = verify_evidence("sgx", quote, endorsements=done.endorsements, now=SGX_TIME)
    # The manifest: a debug enclave, authentic (permissive accepts it), TCB OutOfDate.
    assert verified.debug and verified.tcb_status == "OutOfDate"
    assert evaluate(Policy.named("permissive"), verified).accepted


def test_tdx_collateral_stripped_is_fetched(service: Emulator, tmp_path: Path) -> None:
    with pytest.raises(EvidenceFormatError, match="Root CA CRL is missing from the collateral"):
        verify_evidence("tdx", TDX_QUOTE, endorsements=Endorsements(), now=TDX_TIME)
    with _fetcher(service, tmp_path) as fetcher:
        done = fetcher.complete(Platform.TDX, TDX_QUOTE, Endorsements(), now=TDX_TIME)
    verified = verify_evidence("tdx", TDX_QUOTE, endorsements=done.endorsements, now=TDX_TIME)
    assert verified.tcb_status == "UpToDate"
    assert evaluate(Policy.named("production"), verified).accepted


def test_the_api_key_goes_to_intel_pcs_only(service: Emulator, tmp_path: Path) -> None:
    with _fetcher(service, None, pcs_api_key="k3y") as fetcher:
        fetcher.complete(Platform.TDX, TDX_QUOTE, Endorsements(), now=TDX_TIME)
        fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
    for seen in service.requests:
        key = {k.lower(): v for k, v in seen.headers.items()}.get("ocp-apim-subscription-key")
        assert key == ("k3y" if seen.path.startswith(("/tdx/", "/sgx/")) else None), seen.path
        assert "authorization" not in {k.lower() for k in seen.headers}
        assert "cookie" not in {k.lower() for k in seen.headers}


def test_concurrent_completions_share_one_fetch(service: Emulator, tmp_path: Path) -> None:
    service.misbehave("/vcek/v1/Genoa/d2", Answer((GENOA / "vcek.der").read_bytes(), delay=0.3))
    results: list[Endorsements] = []
    with _fetcher(service, tmp_path) as fetcher:

        def one() -> None:
            done = fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
            results.append(done.endorsements)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert len(results) == 4 and len(set(results)) == 1
    assert len(service.requests) == 2  # one VCEK, one chain


def test_amd_crl_is_fetched_on_request_and_judged_by_the_verifier(
    service: Emulator, tmp_path: Path
) -> None:
    # No AMD CRL is among the vectors; a CRL in ARK-Genoa's name but signed by another key
    # shows that what is fetched reaches the verifier, which refuses it.
    chain = (VECTORS / "sev-snp" / "roots" / "genoa-vcek-ask-ark.pem").read_bytes()
    ark = x509.load_pem_x509_certificates(chain)[1]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ark.subject)
        .last_update(datetime(2025, 8, 1, tzinfo=UTC))
        .next_update(datetime(2025, 10, 1, tzinfo=UTC))
        .sign(key, hashes.SHA384())
    )
    service.misbehave("/vcek/v1/Genoa/crl", Answer(forged.public_bytes(Encoding.DER)))
    with _fetcher(service, tmp_path, amd_crl=True) as fetcher:
        done = fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
    assert [f.kind for f in done.fetched] == ["VCEK", "ASK/ARK chain", "AMD CRL"]
    with pytest.raises(ChainError, match="forged or corrupted CRL"):
        verify_evidence("sev-snp", _genoa(), endorsements=done.endorsements, now=SNP_TIME)


def test_a_vlek_report_is_not_fetchable(service: Emulator, tmp_path: Path) -> None:
    report = (VECTORS / "sev-snp" / "milan-vlek-aws" / "report.bin").read_bytes()
    with _fetcher(service, tmp_path) as fetcher, pytest.raises(EndorsementUnavailableError):
        fetcher.complete(Platform.SEV_SNP, report, Endorsements(), now=SNP_TIME)
    assert service.requests == []


# -- failures: each one line, naming the URL and what to do -----------------------------------

VCEK_PREFIX = "/vcek/v1/Genoa/d2"


def _fail(service: Emulator, tmp_path: Path, *answers: Answer) -> EndorsementFetchError:
    service.misbehave(VCEK_PREFIX, *answers)
    with _fetcher(service, tmp_path) as fetcher, pytest.raises(EndorsementFetchError) as info:
        fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
    message = info.value.diagnostics()
    assert "\n" not in message
    assert f"{service.url}/vcek/v1/Genoa/d2421d97" in message
    assert message.endswith(
        "pass the VCEK with --cert, or point --kds-url at a reachable AMD KDS or cache"
    )
    assert list(tmp_path.iterdir()) == []  # nothing cached
    return info.value


def test_404(service: Emulator, tmp_path: Path) -> None:
    error = _fail(service, tmp_path, Answer(b"no", status=404))
    assert (error.problem, error.status_code) == (FetchProblem.HTTP_STATUS, 404)
    assert "AMD KDS answered HTTP 404 Not Found: it has no such document, for the Genoa VCEK" in (
        error.message
    )


def test_500(service: Emulator, tmp_path: Path) -> None:
    error = _fail(service, tmp_path, Answer(b"oops", status=500))
    assert error.status_code == 500 and "HTTP 500 Internal Server Error" in error.message
    assert len(service.requests) == 1  # a server error is not retried


def test_garbage(service: Emulator, tmp_path: Path) -> None:
    error = _fail(service, tmp_path, Answer(b"<html>maintenance</html>"))
    assert error.problem is FetchProblem.MALFORMED
    assert "answered" in error.message and "with something that is not a VCEK" in error.message


def test_oversized_body_announced(service: Emulator, tmp_path: Path) -> None:
    error = _fail(service, tmp_path, Answer(bytes(200_000)))
    assert error.problem is FetchProblem.TOO_LARGE
    assert "a 200000-byte body over the 65536-byte limit" in error.message


def test_oversized_body_streamed_without_length(service: Emulator, tmp_path: Path) -> None:
    error = _fail(service, tmp_path, Answer(bytes(200_000), chunked=True))
    assert error.problem is FetchProblem.TOO_LARGE and "a larger body" in error.message


def test_slow_answer(service: Emulator, tmp_path: Path) -> None:
    started = time.monotonic()
    error = _fail(service, tmp_path, Answer(b"late", delay=3.0))
    assert isinstance(error, EndorsementTimeoutError) and error.problem is FetchProblem.TIMEOUT
    assert "did not deliver the Genoa VCEK" in error.message
    assert time.monotonic() - started < 2.5


def test_trickled_answer_hits_the_total_deadline(service: Emulator, tmp_path: Path) -> None:
    started = time.monotonic()
    vcek = (GENOA / "vcek.der").read_bytes()
    error = _fail(service, tmp_path, Answer(vcek, trickle=0.05))  # 1347 bytes at 20/s
    assert isinstance(error, EndorsementTimeoutError)
    assert time.monotonic() - started < FAST.total + FAST.silence + 0.5


def test_busy_then_fine_is_retried_once(service: Emulator, tmp_path: Path) -> None:
    vcek = (GENOA / "vcek.der").read_bytes()
    busy = Answer(b"busy", status=503, headers={"Retry-After": "0"})
    service.misbehave(VCEK_PREFIX, busy, Answer(vcek))
    with _fetcher(service, tmp_path) as fetcher:
        done = fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
    assert done.endorsements.certs[0] == vcek
    assert [p.startswith(VCEK_PREFIX) for p in service.paths] == [True, True, False]


def test_busy_twice_fails(service: Emulator, tmp_path: Path) -> None:
    busy = Answer(b"busy", status=503, headers={"Retry-After": "0"})
    error = _fail(service, tmp_path, busy)
    assert (error.problem, error.status_code) == (FetchProblem.BUSY, 503)
    assert "unavailable (HTTP 503, Retry-After '0')" in error.message
    assert len(service.requests) == 2


def test_rate_limited_too_long_is_not_waited_for(service: Emulator, tmp_path: Path) -> None:
    started = time.monotonic()
    error = _fail(
        service, tmp_path, Answer(b"slow down", status=429, headers={"Retry-After": "60"})
    )
    assert error.problem is FetchProblem.RATE_LIMITED and "rate-limiting us" in error.message
    assert len(service.requests) == 1 and time.monotonic() - started < 1.0


def test_redirects_are_not_followed(service: Emulator, tmp_path: Path) -> None:
    error = _fail(
        service, tmp_path, Answer(b"", status=302, headers={"Location": "http://evil.example/x"})
    )
    assert "a redirect to http://evil.example/x (not followed" in error.message


def test_unreachable_is_tried_twice(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = FetchConfig(kds_url=f"http://127.0.0.1:{port}", cache_dir=tmp_path, timeouts=FAST)
    with EndorsementFetcher(config, clock=_clock) as fetcher:
        with pytest.raises(EndorsementConnectError) as info:
            fetcher.complete(Platform.SEV_SNP, _genoa(), Endorsements(), now=SNP_TIME)
    message = info.value.diagnostics()
    assert f"cannot reach AMD KDS at http://127.0.0.1:{port}/vcek/v1/Genoa/" in message
    assert "tried twice" in message and "--kds-url" in message and "\n" not in message


def test_intel_failure_names_the_pcs_options(service: Emulator, tmp_path: Path) -> None:
    service.misbehave("/tdx/certification/v4/qe/identity", Answer(b"gone", status=410))
    with _fetcher(service, tmp_path) as fetcher, pytest.raises(EndorsementFetchError) as info:
        fetcher.complete(Platform.TDX, TDX_QUOTE, Endorsements(), now=TDX_TIME)
    message = info.value.diagnostics()
    assert "Intel PCS answered HTTP 410 Gone, for the TD_QE identity" in message
    assert "--pcs-url at a reachable Intel PCS or PCCS" in message


def test_intel_answer_without_issuer_chain_is_malformed(service: Emulator, tmp_path: Path) -> None:
    body = (VECTORS / "tdx" / "collateral-00806f050000-2025-10" / "tcbinfo.json").read_bytes()
    service.misbehave("/tdx/certification/v4/tcb", Answer(body))
    with _fetcher(service, tmp_path) as fetcher, pytest.raises(EndorsementFetchError) as info:
        fetcher.complete(Platform.TDX, TDX_QUOTE, Endorsements(), now=TDX_TIME)
    assert "no TCB-Info-Issuer-Chain header" in info.value.message


def test_tcb_info_for_another_platform_is_rejected_by_the_verifier_and_not_cached(
    service: Emulator, tmp_path: Path
) -> None:
    sgx = VECTORS / "sgx" / "collateral-00606a000000-2025-08" / "tcbinfo.json"
    chain = (VECTORS / "tdx" / "roots" / "intel-tcb-signing-chain-2025.pem").read_text()
    wrong = Answer(sgx.read_bytes(), headers={"TCB-Info-Issuer-Chain": quote(chain, safe="")})
    service.misbehave("/tdx/certification/v4/tcb", wrong)
    with _fetcher(service, tmp_path) as fetcher:
        done = fetcher.complete(Platform.TDX, TDX_QUOTE, Endorsements(), now=TDX_TIME)
    assert [f.kept for f in done.fetched] == [False, True, True, True]
    with pytest.raises(EvidenceFormatError, match=r"no TDX TCB info .* for FMSPC 00806f050000"):
        verify_evidence("tdx", TDX_QUOTE, endorsements=done.endorsements, now=TDX_TIME)
    assert len(list(tmp_path.iterdir())) == 3
