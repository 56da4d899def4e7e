"""The fetcher's no-I/O path (offline: nothing here opens a socket or a file)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from donjon.attestation.result import Endorsements, Platform
from donjon.endorse._http import DEFAULT_RETRY_AFTER_SECONDS, _retry_after
from donjon.endorse.config import FetchConfig
from donjon.endorse.errors import EndorsementUnavailableError
from donjon.endorse.fetcher import EndorsementFetcher
from tests.unit.endorse._vectors import SNP_TIME, read, snp


def _fetcher() -> EndorsementFetcher:
    # No cache_dir: nothing on disk. The clock would only stamp fetches, and none happen.
    return EndorsementFetcher(FetchConfig(kds_url="http://192.0.2.1"), clock=_no_clock)


def _no_clock() -> datetime:
    raise AssertionError("the clock is read only when something is fetched")


def test_nothing_missing_returns_the_same_endorsements() -> None:
    vector = snp("genoa-oak")
    given = Endorsements(certs=(vector.vcek,))
    fetcher = _fetcher()
    assert (
        fetcher.complete_without_io(Platform.SEV_SNP, vector.report, given, now=SNP_TIME) is given
    )
    done = fetcher.complete(Platform.SEV_SNP, vector.report, given, now=SNP_TIME)
    assert done.endorsements is given and done.fetched == ()


def test_something_missing_and_not_in_memory_needs_io() -> None:
    vector = snp("genoa-oak")
    fetcher = _fetcher()
    assert (
        fetcher.complete_without_io(Platform.SEV_SNP, vector.report, Endorsements(), now=SNP_TIME)
        is None
    )


def test_unfetchable_is_raised_without_io() -> None:
    report = read("sev-snp/milan-vlek-aws/report.bin")
    with pytest.raises(EndorsementUnavailableError):
        _fetcher().complete_without_io(Platform.SEV_SNP, report, Endorsements(), now=SNP_TIME)


def test_platforms_without_endorsements_to_fetch() -> None:
    document = read("nitro/blocky-prod-2024/attestation.cbor")
    given = Endorsements()
    now = datetime(2024, 9, 7, tzinfo=UTC)
    assert _fetcher().complete_without_io(Platform.NITRO, document, given, now=now) is given


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, DEFAULT_RETRY_AFTER_SECONDS),
        ("0", 0.0),
        ("3", 3.0),
        (" 120 ", 120.0),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),  # an HTTP date would need the clock
        ("-1", None),
        ("1.5", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert _retry_after(header) == seconds
