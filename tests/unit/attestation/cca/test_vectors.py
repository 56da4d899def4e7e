"""Every Arm CCA sample in the shared manifest verifies to its expected result and fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from donjon.attestation import Endorsements, Platform
from donjon.attestation.cca import CcaVerifier, CpakError
from donjon.errors import ChainError

# CCA tokens carry no certificates: the manifest gives verify_time null. Any instant will do;
# a fixed one keeps the test independent of the clock.
NOW = datetime(2025, 9, 1, tzinfo=UTC)
_NOT_CLAIMS = {"result", "reason"}


def _cca_vectors() -> list[dict[str, Any]]:
    from tests.conftest import VECTORS

    manifest = json.loads((VECTORS / "manifest.json").read_text())
    return [v for v in manifest["vectors"] if v["type"] == "cca"]


def _files(vectors_dir: Path, vector: dict[str, Any]) -> tuple[bytes, bytes]:
    base = vectors_dir / vector["dir"]
    files = vector["files"]
    key = files.get("cpak") or files["trust_anchor"]
    return (base / files["token"]).read_bytes(), (base / key).read_bytes()


@pytest.mark.parametrize("vector", _cca_vectors(), ids=lambda v: v["id"])
def test_manifest_vector(vectors_dir: Path, vector: dict[str, Any]) -> None:
    token, cpak = _files(vectors_dir, vector)
    expected = vector["expected"]
    assert expected["result"] == "accept"
    result = CcaVerifier().verify(token, endorsements=Endorsements(certs=(cpak,)), now=NOW)

    assert result.platform is Platform.CCA
    for name, value in expected.items():
        if name not in _NOT_CLAIMS:
            assert result.claims[name] == value, name
    assert result.measurement.hex() == expected["rim"]
    assert result.report_data.hex() == expected["realm_challenge"]
    assert len(result.report_data) == 64
    # Lifecycle 0x3003 is "secured": no debug access to the CCA platform.
    assert result.claims["lifecycle_state"] == "secured"
    assert result.debug is False
    assert result.tcb_status is None
    json.dumps(result.to_json())  # every claim is JSON-compatible


@pytest.mark.parametrize("vector", _cca_vectors(), ids=lambda v: v["id"])
def test_manifest_vector_with_pinned_cpak(vectors_dir: Path, vector: dict[str, Any]) -> None:
    token, cpak = _files(vectors_dir, vector)
    verifier = CcaVerifier(trusted_cpaks=[cpak])
    first = verifier.verify(token, endorsements=Endorsements(), now=NOW)
    # Second call takes the cached platform verification; the answer is the same.
    again = verifier.verify(token, endorsements=Endorsements(certs=(cpak,)), now=NOW)
    assert first == again


def test_every_cpak_format_in_the_vectors_is_the_same_tf_a_key(vectors_dir: Path) -> None:
    from donjon.attestation.cca import load_cpaks

    keys = {cpak.spki_der for v in _cca_vectors() for cpak in load_cpaks(_files(vectors_dir, v)[1])}
    assert len(keys) == 1


def test_no_cpak_is_a_chain_error_naming_the_platform(vectors_dir: Path) -> None:
    token, _ = _files(vectors_dir, _cca_vectors()[0])
    with pytest.raises(CpakError, match="no CPAK given") as info:
        CcaVerifier().verify(token, endorsements=Endorsements(), now=NOW)
    assert isinstance(info.value, ChainError)
    assert "instance ID 0107060504030201" in info.value.message
    assert "--cert" in info.value.message


def test_endorsed_cpak_outside_the_pinned_set_is_refused(vectors_dir: Path) -> None:
    from tests.vectors_gen.cca_gen import OTHER_KEY, pem_public

    token, cpak = _files(vectors_dir, _cca_vectors()[0])
    verifier = CcaVerifier(trusted_cpaks=[cpak])
    with pytest.raises(CpakError, match="not among the 1 pinned"):
        verifier.verify(token, endorsements=Endorsements(certs=(pem_public(OTHER_KEY),)), now=NOW)


def test_a_pinned_set_only_trusts_its_own_keys(vectors_dir: Path) -> None:
    from donjon.errors import SignatureError
    from tests.vectors_gen.cca_gen import OTHER_KEY, pem_public

    token, _ = _files(vectors_dir, _cca_vectors()[0])
    verifier = CcaVerifier(trusted_cpaks=[pem_public(OTHER_KEY)])
    with pytest.raises(SignatureError, match="any of the 1 applicable CPAKs"):
        verifier.verify(token, endorsements=Endorsements(), now=NOW)


def test_the_verifier_matches_the_protocol() -> None:
    from donjon.attestation import EvidenceVerifier

    verifier: EvidenceVerifier = CcaVerifier()
    assert verifier.platform is Platform.CCA
