"""Hostile bytes into SnpVerifier: only documented errors come out, and no mutation verifies."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.attestation.result import Endorsements
from donjon.attestation.snp import SnpVerifier
from donjon.errors import VerificationError

NOW = datetime(2025, 9, 1, tzinfo=UTC)
_SNP = Path(__file__).resolve().parents[5] / "shared" / "vectors" / "sev-snp"
_SAMPLES = {
    "milan-trustee": ("milan-trustee/vcek.der", "roots/milan-vcek-ask-ark.pem"),
    "milan-vlek-aws": ("milan-vlek-aws/vlek.der", "roots/milan-vlek-ask-ark.pem"),
    "genoa-oak": ("genoa-oak/vcek.der", "roots/genoa-vcek-ask-ark.pem"),
    "turin-oak": ("turin-oak/vcek.der", "roots/turin-vcek-ask-ark.pem"),
}


@cache
def _verifier() -> SnpVerifier:
    return SnpVerifier.from_embedded_roots()


@cache
def _sample(name: str) -> tuple[bytes, Endorsements]:
    leaf, chain = _SAMPLES[name]
    certs = ((_SNP / leaf).read_bytes(), (_SNP / chain).read_bytes())
    return (_SNP / name / "report.bin").read_bytes(), Endorsements(certs=certs)


@cache
def _hcl() -> tuple[bytes, Endorsements]:
    folder = _SNP / "azure-milan-hcl"
    certs = ((folder / "vcek-chain.pem").read_bytes(),)
    return (folder / "hcl-report.bin").read_bytes(), Endorsements(certs=certs)


def test_the_samples_verify(vectors_dir: Path) -> None:
    assert _SNP == vectors_dir / "sev-snp"
    for name in _SAMPLES:
        report, endorsements = _sample(name)
        _verifier().verify(report, endorsements=endorsements, now=NOW)
    _verifier().verify(_hcl()[0], endorsements=_hcl()[1], now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_evidence(data: bytes) -> None:
    _, endorsements = _sample("milan-trustee")
    try:
        _verifier().verify(data, endorsements=endorsements, now=NOW)
    except VerificationError:
        pass


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(_SAMPLES)),
    st.lists(st.tuples(st.integers(0, 1183), st.integers(1, 255)), min_size=1, max_size=6),
)
def test_no_mutated_report_verifies(name: str, writes: list[tuple[int, int]]) -> None:
    report, endorsements = _sample(name)
    data = bytearray(report)
    for offset, xor in writes:
        data[offset] ^= xor
    try:
        _verifier().verify(bytes(data), endorsements=endorsements, now=NOW)
    except VerificationError:
        return
    # Only a mutation that cancelled itself out (the same byte twice) may verify.
    assert bytes(data) == report


@cache
def _hcl_claims() -> dict[str, object]:
    evidence, endorsements = _hcl()
    return _verifier().verify(evidence, endorsements=endorsements, now=NOW).to_json()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2599), st.integers(1, 255)), min_size=1, max_size=4))
def test_no_mutated_hcl_report_changes_a_claim(writes: list[tuple[int, int]]) -> None:
    """The HCL headers are not authenticated (Azure's design): a change there may verify, but
    then it must not change a single claim."""
    evidence, endorsements = _hcl()
    data = bytearray(evidence)
    for offset, xor in writes:
        data[offset] ^= xor
    try:
        verified = _verifier().verify(bytes(data), endorsements=endorsements, now=NOW)
    except VerificationError:
        return
    assert verified.to_json() == _hcl_claims()
    unauthenticated = set(range(4, 8)) | set(range(12, 16)) | set(range(0x4C4, 0x4C8))
    assert all(
        offset in unauthenticated for offset, _ in writes if data[offset] != evidence[offset]
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=2000), max_size=3), st.lists(st.binary(max_size=500), max_size=3)
)
def test_arbitrary_endorsements(certs: list[bytes], collateral: list[bytes]) -> None:
    report, _ = _sample("genoa-oak")
    endorsements = Endorsements(certs=tuple(certs), collateral=tuple(collateral))
    try:
        _verifier().verify(report, endorsements=endorsements, now=NOW)
    except VerificationError:
        return
    raise AssertionError("verified without a VCEK")


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(_SAMPLES)), st.integers(0, 1500), st.integers(1, 255))
def test_mutated_vcek(name: str, offset: int, xor: int) -> None:
    report, endorsements = _sample(name)
    leaf = bytearray(endorsements.certs[0])
    if offset >= len(leaf):
        return
    leaf[offset] ^= xor
    mutated = Endorsements(certs=(bytes(leaf), endorsements.certs[1]))
    try:
        _verifier().verify(report, endorsements=mutated, now=NOW)
    except VerificationError:
        return
    # A DER change outside the signed parts (the outer SEQUENCE's unused encodings) cannot
    # exist: every byte of a certificate is signed or is the signature.
    raise AssertionError(f"a VCEK with byte {offset} changed was accepted")
