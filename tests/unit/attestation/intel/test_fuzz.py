"""Hostile bytes into the whole verifier: only documented ``VerificationError`` subclasses out.

Rule 2 of ``donjon.attestation.result``: whatever the bytes, a verifier raises only its
documented errors, never a library exception and never a crash.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from donjon.attestation import Endorsements, Platform
from donjon.attestation.intel import DcapVerifier
from donjon.attestation.intel.quote import parse_quote
from donjon.errors import (
    ChainError,
    EvidenceFormatError,
    FreshnessError,
    MeasurementError,
    SignatureError,
    TcbStatusError,
)

from .conftest import CASES, case

DOCUMENTED = (
    EvidenceFormatError,
    ChainError,
    SignatureError,
    MeasurementError,
    FreshnessError,
    TcbStatusError,
)
_VERIFIERS = {p: DcapVerifier.from_embedded_roots(platform=p) for p in (Platform.SGX, Platform.TDX)}
_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _verify(platform: Platform, quote: bytes, collateral: tuple[bytes, ...], now: datetime) -> None:
    try:
        _VERIFIERS[platform].verify(
            quote, endorsements=Endorsements(collateral=collateral), now=now
        )
    except DOCUMENTED:
        pass


@_SETTINGS
@given(data=st.binary(max_size=6000), platform=st.sampled_from([Platform.SGX, Platform.TDX]))
def test_arbitrary_quote_bytes(data: bytes, platform: Platform) -> None:
    c = case("sgx-dcapqvl" if platform is Platform.SGX else "tdx-dcapqvl-v4")
    _verify(platform, data, c.collateral, c.now)


@_SETTINGS
@given(
    which=st.sampled_from([c.id for c in CASES]),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6),
    region=st.sampled_from(["anywhere", "certification data", "signature data"]),
)
def test_mutated_quotes(which: str, edits: list[tuple[int, int]], region: str) -> None:
    c = case(which)
    data = bytearray(c.quote)
    q = parse_quote(c.quote)
    start, end = {
        "anywhere": (0, len(data)),
        # The PEM chain sits at the end of the signed structure.
        "certification data": (q.bytes_used - len(q.certification_data.data), q.bytes_used),
        "signature data": (len(q.signed_bytes), q.bytes_used),
    }[region]
    for at, value in edits:
        data[start + at % (end - start)] = value
    _verify(c.platform, bytes(data), c.collateral, c.now)


@_SETTINGS
@given(
    which=st.sampled_from([c.id for c in CASES]),
    item=st.integers(0, 10),
    at=st.integers(0, 1 << 16),
    value=st.integers(0, 255),
    cut=st.none() | st.integers(0, 1 << 16),
)
def test_mutated_collateral(which: str, item: int, at: int, value: int, cut: int | None) -> None:
    c = case(which)
    items = list(c.collateral)
    i = item % len(items)
    data = bytearray(items[i])
    data[at % len(data)] = value
    if cut is not None:
        del data[cut % (len(data) + 1) :]
    items[i] = bytes(data)
    _verify(c.platform, c.quote, tuple(items), c.now)


@_SETTINGS
@given(
    which=st.sampled_from([c.id for c in CASES]),
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    drop=st.sets(st.integers(0, 10), max_size=3),
)
def test_any_time_and_missing_items(which: str, now: datetime, drop: set[int]) -> None:
    c = case(which)
    items = tuple(x for i, x in enumerate(c.collateral) if i not in drop)
    _verify(c.platform, c.quote, items, now)


@pytest.mark.parametrize("junk", [b"", b"\x00" * 48, b"{}", b"-----BEGIN CERTIFICATE-----\n"])
def test_junk_certificates_and_collateral(junk: bytes) -> None:
    c = case("tdx-oak-v4")
    verifier = _VERIFIERS[Platform.TDX]
    with pytest.raises(EvidenceFormatError):
        verifier.verify(c.quote, endorsements=Endorsements(collateral=(junk,)), now=c.now)
    with pytest.raises(EvidenceFormatError):
        verifier.verify(
            c.quote, endorsements=Endorsements(collateral=c.collateral, certs=(junk,)), now=c.now
        )
