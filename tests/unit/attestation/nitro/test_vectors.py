"""Every AWS Nitro sample in the shared manifest verifies, at its verify_time, to its expected
result and fields; and the same documents are rejected as expired today."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from donjon.attestation import Endorsements, EvidenceVerifier, Platform
from donjon.attestation.nitro import NitroVerifier
from donjon.errors import FreshnessError

_NOT_CLAIMS = {"result", "reason", "public_key_prefix"}


def _nitro_vectors() -> list[dict[str, Any]]:
    from tests.conftest import VECTORS

    manifest = json.loads((VECTORS / "manifest.json").read_text())
    return [v for v in manifest["vectors"] if v["type"] == "nitro"]


@pytest.fixture(scope="module")
def verifier() -> NitroVerifier:
    return NitroVerifier.from_embedded_roots()


def _document(vectors_dir: Path, vector: dict[str, Any]) -> bytes:
    path: Path = vectors_dir / vector["dir"] / vector["files"]["document"]
    return path.read_bytes()


@pytest.mark.parametrize("vector", _nitro_vectors(), ids=lambda v: v["id"])
def test_manifest_vector(
    vectors_dir: Path, vector: dict[str, Any], verifier: NitroVerifier
) -> None:
    expected = vector["expected"]
    now = datetime.fromisoformat(vector["verify_time"])
    result = verifier.verify(_document(vectors_dir, vector), endorsements=Endorsements(), now=now)

    assert result.platform is Platform.NITRO
    for name, value in expected.items():
        if name not in _NOT_CLAIMS:
            assert result.claims[name] == value, name
    prefix = expected["public_key_prefix"]
    if prefix is None:
        assert result.claims["public_key"] is None
    else:
        assert result.claims["public_key"].startswith(prefix.rstrip("."))
    assert result.measurement.hex() == expected["pcr0"]
    # report_data is user_data verbatim (empty when the document has none).
    assert result.report_data.hex() == (expected["user_data"] or "")
    assert len(result.claims["pcrs"]) == 16
    # reject-debug = authentic, debug true (a production policy then rejects it).
    assert result.debug is (expected["result"] == "reject-debug")
    assert expected["result"] in {"accept", "reject-debug"}
    json.dumps(result.to_json())


@pytest.mark.parametrize("vector", _nitro_vectors(), ids=lambda v: v["id"])
def test_manifest_vector_leaf_lifetime(
    vectors_dir: Path, vector: dict[str, Any], verifier: NitroVerifier
) -> None:
    document = _document(vectors_dir, vector)
    start, end = (datetime.fromisoformat(t) for t in vector["leaf_validity"])
    assert end - start <= timedelta(hours=3, seconds=30)  # "Nitro leaf certs live ~3 hours"
    verifier.verify(document, endorsements=Endorsements(), now=start)
    verifier.verify(document, endorsements=Endorsements(), now=end)
    for late in (end + timedelta(seconds=1), datetime(2026, 11, 27, tzinfo=UTC)):
        with pytest.raises(FreshnessError, match="expired") as info:
            verifier.verify(document, endorsements=Endorsements(), now=late)
        assert "live about 3 hours" in info.value.message
    with pytest.raises(FreshnessError, match="not yet valid"):
        verifier.verify(document, endorsements=Endorsements(), now=start - timedelta(seconds=1))


def test_the_verifier_matches_the_protocol(verifier: NitroVerifier) -> None:
    checked: EvidenceVerifier = verifier
    assert checked.platform is Platform.NITRO


def test_naive_now_is_a_programming_error(vectors_dir: Path, verifier: NitroVerifier) -> None:
    vector = _nitro_vectors()[0]
    with pytest.raises(TypeError, match="aware"):
        verifier.verify(
            _document(vectors_dir, vector), endorsements=Endorsements(), now=datetime(2024, 9, 7)
        )
