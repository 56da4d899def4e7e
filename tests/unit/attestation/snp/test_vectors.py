"""Every sev-snp sample of shared/vectors/manifest.json, at its verify_time, to its expected
result, reason class and every listed field."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from donjon.attestation.result import Endorsements, Platform
from donjon.attestation.snp import ProductFamily, SnpVerifier, TcbVersion
from donjon.errors import ChainError, FreshnessError

SNP_VECTOR_IDS = (
    "snp-milan-gsg",
    "snp-milan-trustee",
    "snp-milan-vlek-aws",
    "snp-genoa-oak",
    "snp-turin-oak",
    "snp-azure-milan-hcl",
    "snp-neg-fake-vcek",
    "snp-turin-vcek-chain",
)
_NOT_CLAIMS = {"result", "reason"}


def _manifest(vectors_dir: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((vectors_dir / "manifest.json").read_text())
    return {v["id"]: v for v in data["vectors"] if v["type"] == "sev-snp"}


def _when(vector: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(vector["verify_time"].replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def verifier() -> SnpVerifier:
    return SnpVerifier.from_embedded_roots()


def _inputs(vectors_dir: Path, vector: dict[str, Any]) -> tuple[bytes, Endorsements]:
    folder = vectors_dir / vector["dir"]
    files = vector["files"]
    if "hcl_report" in files:
        certs: tuple[bytes, ...] = ((folder / files["vcek_chain"]).read_bytes(),)
        return (folder / files["hcl_report"]).read_bytes(), Endorsements(certs=certs)
    leaf = (folder / (files.get("vcek") or files["vlek"])).read_bytes()
    certs = (leaf, (folder / files["ask_ark"]).read_bytes())
    return (folder / files["report"]).read_bytes(), Endorsements(certs=certs)


def test_the_list_covers_the_manifest(vectors_dir: Path) -> None:
    assert set(_manifest(vectors_dir)) == set(SNP_VECTOR_IDS)


@pytest.mark.parametrize("vector_id", SNP_VECTOR_IDS)
def test_manifest_vector(vector_id: str, vectors_dir: Path, verifier: SnpVerifier) -> None:
    vector = _manifest(vectors_dir)[vector_id]
    expected = vector["expected"]
    result = expected["result"]
    now = _when(vector)
    folder = vectors_dir / vector["dir"]

    if result == "accept-chain-only":
        chain = verifier.verify_vcek_chain(
            (folder / vector["files"]["vcek"]).read_bytes(),
            now=now,
            intermediates=((folder / vector["files"]["ask_ark"]).read_bytes(),),
        )
        # "8-byte hwID 1e550a8ee5cf9f4d; TCB ext fmc=0 bl=0 tee=0 snp=0 ucode=9"
        assert chain.hw_id is not None
        assert chain.hw_id.hex() == "1e550a8ee5cf9f4d"
        assert chain.tcb.fields() == {"fmc": 0, "bl": 0, "tee": 0, "snp": 0, "ucode": 9}
        assert str(chain.family) == "Turin"
        assert chain.issuer_name == "CN=SEV-Turin"
        return

    evidence, endorsements = _inputs(vectors_dir, vector)
    if result == "reject":
        with pytest.raises(ChainError, match="does not verify under AMD's"):
            verifier.verify(evidence, endorsements=endorsements, now=now)
        return

    verified = verifier.verify(evidence, endorsements=endorsements, now=now)
    claims = verified.to_json()
    assert verified.platform is Platform.SEV_SNP
    assert claims["platform"] == "sev-snp"
    for name, value in expected.items():
        if name in _NOT_CLAIMS:
            continue
        assert claims[name] == value, name
    # reject-debug: authentic, and debug is what a production policy rejects.
    assert verified.debug is (result == "reject-debug")
    assert verified.measurement.hex() == expected["measurement"]
    assert verified.report_data.hex() == expected["report_data"]
    assert verified.tcb_status is None


def test_fake_vcek_alone_fails_its_chain(vectors_dir: Path, verifier: SnpVerifier) -> None:
    vector = _manifest(vectors_dir)["snp-neg-fake-vcek"]
    folder = vectors_dir / vector["dir"]
    with pytest.raises(ChainError, match="does not verify"):
        verifier.verify_vcek_chain((folder / "vcek-invalid.der").read_bytes(), now=_when(vector))


def test_aws_vlek_expires(vectors_dir: Path, verifier: SnpVerifier) -> None:
    """PROVENANCE: after 2025-12-10T22:14:21Z the VLEK sample must be rejected as expired."""
    vector = _manifest(vectors_dir)["snp-milan-vlek-aws"]
    evidence, endorsements = _inputs(vectors_dir, vector)
    verifier.verify(
        evidence, endorsements=endorsements, now=datetime.fromisoformat("2025-12-10T22:14:21+00:00")
    )
    with pytest.raises(FreshnessError, match="VLEK certificate CN=SEV-VLEK expired"):
        verifier.verify(
            evidence,
            endorsements=endorsements,
            now=datetime.fromisoformat("2025-12-10T22:14:22+00:00"),
        )


def test_trustee_current_tcb_is_above_reported(vectors_dir: Path, verifier: SnpVerifier) -> None:
    """The VCEK is matched to REPORTED_TCB, not CURRENT_TCB (manifest note)."""
    vector = _manifest(vectors_dir)["snp-milan-trustee"]
    evidence, endorsements = _inputs(vectors_dir, vector)
    claims = verifier.verify(evidence, endorsements=endorsements, now=_when(vector)).claims
    assert claims["current_tcb_fields"]["ucode"] == 0xCE
    assert claims["reported_tcb_fields"]["ucode"] == 0x73


def test_turin_fields_use_the_turin_layout(vectors_dir: Path, verifier: SnpVerifier) -> None:
    vector = _manifest(vectors_dir)["snp-turin-oak"]
    evidence, endorsements = _inputs(vectors_dir, vector)
    verified = verifier.verify(evidence, endorsements=endorsements, now=_when(vector))
    claims = verified.claims
    assert claims["family"] == "Turin"
    assert list(claims["reported_tcb_fields"]) == ["fmc", "bl", "tee", "snp", "ucode"]
    tcb = TcbVersion.from_fields(ProductFamily.TURIN, {"bl": 1, "snp": 2, "ucode": 71})
    assert tcb.hex() == claims["reported_tcb"] == "0x4700000002000100"
    # The VCEK's 8-byte hwID is CHIP_ID[0:8]; the rest of CHIP_ID is zero.
    assert claims["chip_id"][16:] == "0" * 112


def test_hcl_claims(vectors_dir: Path, verifier: SnpVerifier) -> None:
    vector = _manifest(vectors_dir)["snp-azure-milan-hcl"]
    evidence, endorsements = _inputs(vectors_dir, vector)
    claims = verifier.verify(evidence, endorsements=endorsements, now=_when(vector)).claims
    runtime = claims["hcl_runtime_data"]
    assert [k["kid"] for k in runtime["keys"]] == ["HCLAkPub", "HCLEkPub"]
    assert runtime["vm-configuration"]["secure-boot"] is True
    assert claims["hcl_user_data"] == "00" * 64


def test_claims_are_json(vectors_dir: Path, verifier: SnpVerifier) -> None:
    manifest = _manifest(vectors_dir)
    for vector_id in ("snp-milan-vlek-aws", "snp-genoa-oak", "snp-azure-milan-hcl"):
        evidence, endorsements = _inputs(vectors_dir, manifest[vector_id])
        verified = verifier.verify(
            evidence, endorsements=endorsements, now=_when(manifest[vector_id])
        )
        text = json.dumps(verified.to_json())
        assert json.loads(text)["measurement"] == verified.measurement.hex()
