"""Generated Nitro variants: each defect is rejected with its specific error; synthetic documents
from a test PKI shaped like AWS's are accepted under that PKI's root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from donjon import errors
from donjon.attestation import Endorsements, Platform
from donjon.attestation.nitro import NitroVerifier
from tests.vectors_gen import nitro_gen

_CLASSES: dict[str, type[errors.Error]] = {
    "EvidenceFormatError": errors.EvidenceFormatError,
    "SignatureError": errors.SignatureError,
    "ChainError": errors.ChainError,
    "FreshnessError": errors.FreshnessError,
}
_VARIANTS = nitro_gen.variants()


@pytest.fixture(scope="module")
def verifiers() -> dict[str, NitroVerifier]:
    return {
        "aws": NitroVerifier.from_embedded_roots(),
        "generator": NitroVerifier(root=nitro_gen.generator_pki().root),
    }


def test_variants_are_unique_and_cover_each_error_class() -> None:
    names = [v.name for v in _VARIANTS]
    assert len(names) == len(set(names))
    assert {v.expected for v in _VARIANTS} == {"accept", *_CLASSES}


@pytest.mark.parametrize("variant", _VARIANTS, ids=lambda v: v.name)
def test_variant(variant: nitro_gen.Variant, verifiers: dict[str, NitroVerifier]) -> None:
    verifier = verifiers[variant.root]
    if variant.expected == "accept":
        result = verifier.verify(variant.document, endorsements=Endorsements(), now=variant.now)
        assert result.platform is Platform.NITRO
        assert result.debug is variant.debug
        for name, value in variant.claims.items():
            assert result.claims[name] == value, name
        return
    with pytest.raises(_CLASSES[variant.expected]) as info:
        verifier.verify(variant.document, endorsements=Endorsements(), now=variant.now)
    assert len(info.value.diagnostics()) > 20


def test_error_classes_do_not_overlap_for_the_key_cases(
    verifiers: dict[str, NitroVerifier],
) -> None:
    # A look-alike root is a chain problem, never a freshness or signature one.
    variant = next(v for v in _VARIANTS if v.name == "lookalike-root")
    with pytest.raises(errors.ChainError, match="look-alike") as info:
        verifiers["aws"].verify(variant.document, endorsements=Endorsements(), now=variant.now)
    assert not isinstance(info.value, errors.FreshnessError | errors.SignatureError)


def test_report_data_is_user_data(verifiers: dict[str, NitroVerifier]) -> None:
    variant = next(v for v in _VARIANTS if v.name == "synthetic-prod")
    result = verifiers["generator"].verify(
        variant.document, endorsements=Endorsements(), now=variant.now
    )
    assert result.report_data == bytes(range(64))
    assert result.claims["cabundle_len"] == 4


def test_generator_is_deterministic() -> None:
    again = nitro_gen.variants()
    assert [(v.name, v.document, v.now) for v in again] == [
        (v.name, v.document, v.now) for v in _VARIANTS
    ]


def test_generator_writes_files_and_manifest(tmp_path: Path) -> None:
    nitro_gen.write(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [m["name"] for m in manifest] == [v.name for v in _VARIANTS]
    assert (tmp_path / "generator-root.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
