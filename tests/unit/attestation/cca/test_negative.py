"""Generated CCA variants: each defect gets its specific error; synthetic tokens pass."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from donjon import errors
from donjon.attestation import Endorsements, Platform
from donjon.attestation.cca import CcaVerifier, CpakError
from tests.vectors_gen import cca_gen

NOW = datetime(2025, 9, 1, tzinfo=UTC)
_CLASSES: dict[str, type[errors.Error]] = {
    "EvidenceFormatError": errors.EvidenceFormatError,
    "SignatureError": errors.SignatureError,
    "MeasurementError": errors.MeasurementError,
    "CpakError": CpakError,
}
_VARIANTS = cca_gen.variants()


def test_variants_are_unique_and_cover_each_error_class() -> None:
    names = [v.name for v in _VARIANTS]
    assert len(names) == len(set(names))
    assert {v.expected for v in _VARIANTS} == {"accept", *_CLASSES}


@pytest.mark.parametrize("variant", _VARIANTS, ids=lambda v: v.name)
def test_variant(variant: cca_gen.Variant) -> None:
    verifier = CcaVerifier()
    endorsements = Endorsements(certs=variant.cpaks)
    if variant.expected == "accept":
        result = verifier.verify(variant.token, endorsements=endorsements, now=NOW)
        assert result.platform is Platform.CCA
        assert result.debug is variant.debug
        assert result.claims["binding_ok"] is True
        return
    error = _CLASSES[variant.expected]
    with pytest.raises(error) as info:
        verifier.verify(variant.token, endorsements=endorsements, now=NOW)
    # The message says what was wrong; it is never empty or a bare library text.
    assert len(info.value.diagnostics()) > 20


def test_generator_is_deterministic() -> None:
    again = cca_gen.variants()
    assert [(v.name, v.token, v.cpaks) for v in again] == [
        (v.name, v.token, v.cpaks) for v in _VARIANTS
    ]


def test_generator_writes_files_and_manifest(tmp_path: Path) -> None:
    import json

    written = cca_gen.write(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest) == len(_VARIANTS)
    assert all(p.exists() for p in written)
    first = manifest[0]
    assert (tmp_path / first["token"]).read_bytes() == _VARIANTS[0].token


def test_sha512_binding_uses_the_declared_algorithm() -> None:
    variant = next(v for v in _VARIANTS if v.name == "synthetic-ffm-sha512-binding")
    result = CcaVerifier().verify(
        variant.token, endorsements=Endorsements(certs=variant.cpaks), now=NOW
    )
    assert result.claims["rak_hash_alg"] == "sha-512"
    assert len(bytes.fromhex(result.claims["platform_challenge"])) == 64
    assert result.claims["realm_profile"] == "tag:arm.com,2023:realm#1.0.0"
