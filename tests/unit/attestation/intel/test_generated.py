"""The deterministic generator's variants (tests/vectors_gen/intel_gen.py): each must come out as
it says, with the specific error class, and the generator must be deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from donjon import errors
from donjon.attestation import Endorsements, Platform
from donjon.attestation.intel import DcapVerifier, TcbLevelError
from tests.vectors_gen import intel_gen

from .conftest import VECTORS

VARIANTS = intel_gen.variants(VECTORS)
_CLASSES: dict[str, type[errors.Error]] = {
    "TcbLevelError": TcbLevelError,
    **{name: getattr(errors, name) for name in errors.__all__},
}


@pytest.fixture(scope="module")
def generator_verifiers() -> dict[tuple[str, str], DcapVerifier]:
    root = intel_gen.generator_root()
    out = {}
    for platform in (Platform.SGX, Platform.TDX):
        out[(str(platform), "intel")] = DcapVerifier.from_embedded_roots(platform=platform)
        out[(str(platform), "generator")] = DcapVerifier(platform=platform, root=root)
    return out


def test_names_are_unique_and_cover_the_brief() -> None:
    names = [v.name for v in VARIANTS]
    assert len(names) == len(set(names))
    for needed in (
        "sgx-flip-quote-signature",
        "sgx-flip-report-data",
        "sgx-flip-mrenclave",
        "tdx-flip-mrtd",
        "tdx-swap-pck-chain",
        "sgx-swap-collateral",
        "sgx-collateral-expired",
        "sgx-collateral-not-yet-valid",
        "sgx-stale-pck-crl",
        "gen-sgx-stale-crl",
        "tdx-reserialized-tcb-info",
        "sgx-reserialized-pcs-tcb-info",
        "tdx-lookalike-root-in-chain",
        "gen-sgx-under-intel-root",
        "sgx-truncated-47",
        "sgx-oversized",
        "sgx-version-2",
    ):
        assert needed in names
    expects = {v.expect for v in VARIANTS}
    assert expects >= {
        "accept",
        "SignatureError",
        "EvidenceFormatError",
        "ChainError",
        "FreshnessError",
        "MeasurementError",
        "TcbLevelError",
    }


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_variant(
    variant: intel_gen.Variant, generator_verifiers: dict[tuple[str, str], DcapVerifier]
) -> None:
    verifier = generator_verifiers[(variant.platform, variant.root)]
    endorsements = Endorsements(collateral=variant.collateral, certs=variant.certs)
    if variant.expect == "accept":
        result = verifier.verify(variant.quote, endorsements=endorsements, now=variant.now)
        assert result.tcb_status == variant.status, variant.note
        for key, value in variant.extra.items():
            assert result.to_json()[key] == value
        return
    cls = _CLASSES[variant.expect]
    with pytest.raises(cls) as info:
        verifier.verify(variant.quote, endorsements=endorsements, now=variant.now)
    # The exact class, not merely a parent: a FreshnessError must not pass as a ChainError.
    assert type(info.value) is cls, f"{variant.note}: {type(info.value).__name__}: {info.value}"
    assert info.value.diagnostics()
    if isinstance(info.value, TcbLevelError):
        assert info.value.status == variant.status
        assert info.value.claims["quote_version"] in (3, 4, 5)
        for key, value in variant.extra.items():
            assert info.value.claims[key] == value


def test_generator_is_deterministic(tmp_path: Path) -> None:
    again = intel_gen.variants(VECTORS)
    digest = hashlib.sha256()
    for a, b in zip(VARIANTS, again, strict=True):
        assert a == b
        digest.update(a.quote + b"".join(a.collateral))
    intel_gen.write(tmp_path / "one", VECTORS)
    intel_gen.write(tmp_path / "two", VECTORS)
    one = sorted(
        (p.relative_to(tmp_path / "one"), p.read_bytes())
        for p in (tmp_path / "one").rglob("*")
        if p.is_file()
    )
    two = sorted(
        (p.relative_to(tmp_path / "two"), p.read_bytes())
        for p in (tmp_path / "two").rglob("*")
        if p.is_file()
    )
    assert one == two
    assert (tmp_path / "one" / "manifest.json").is_file()
