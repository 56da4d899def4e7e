"""EAR (EAT Attestation Results) from real evidence: the AR4SI vector each platform and policy
outcome gets, the claims-set, and ``donjon attest verify --ear`` with and without a signature."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from donjon.attestation.dispatch import verify_evidence
from donjon.attestation.ear import (
    EAR_PROFILE,
    appraisal,
    ear_claims,
    failed_appraisal,
    tier_of,
)
from donjon.attestation.inputs import load_endorsements, load_evidence
from donjon.attestation.policy import Policy, evaluate
from donjon.attestation.result import Endorsements, Platform
from donjon.attestation.verdict import Verdict
from donjon.backends.nil_evidence import NilEvidenceProvider
from donjon.cli.main import cli
from donjon.crypto.ca import KeyPair
from donjon.crypto.jws import verify_jwt
from donjon.errors import SignatureError
from tests.unit.steward._support import PinnedClock

SNP_TIME = "2025-09-01T00:00:00Z"
TRUSTEE_MEASUREMENT = (
    "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
    "23500644e0e692e6be917f9050d3d38c"
)


def _snp(vectors_dir: Path, name: str) -> list[str]:
    d = vectors_dir / "sev-snp" / name
    return [
        "--platform", "sev-snp", "--evidence", str(d / "report.bin"),
        "--cert", str(d / "vcek.der"), "--at", SNP_TIME,
    ]  # fmt: skip


def _ear(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["attest", "verify", *args, "--ear"])
    return result.exit_code, json.loads(result.output)


@pytest.mark.parametrize(
    ("value", "tier"),
    [(0, "none"), (1, "none"), (2, "affirming"), (31, "affirming"), (32, "warning"),
     (95, "warning"), (96, "contraindicated"), (99, "contraindicated"), (-1, "contraindicated")],
)  # fmt: skip
def test_tiers_are_the_ar4si_ranges(value: int, tier: str) -> None:
    assert tier_of(value) == tier


def test_a_genuine_snp_guest_is_affirming(vectors_dir: Path) -> None:
    code, ear = _ear(*_snp(vectors_dir, "milan-trustee"), "--policy", "permissive")
    assert code == 0
    assert ear["eat_profile"] == EAR_PROFILE
    assert ear["iat"] == 1756684800  # the verification time, --at
    assert ear["ear.verifier-id"]["build"].startswith("donjon ")
    submod = ear["submods"]["sev-snp"]
    assert submod["ear.status"] == "affirming"
    assert submod["ear.trustworthiness-vector"] == {
        "instance-identity": 2,
        "hardware": 2,
        "runtime-opaque": 2,
        "configuration": 2,
    }
    assert submod["ear.appraisal-policy-id"].startswith("policy:permissive#sha256:")
    assert submod["ear.veraison.annotated-evidence"]["measurement"] == TRUSTEE_MEASUREMENT


def test_a_debug_guest_is_contraindicated_even_when_a_policy_accepts_it(vectors_dir: Path) -> None:
    code, ear = _ear(*_snp(vectors_dir, "milan-gsg"), "--policy", "permissive")
    assert code == 0  # permissive accepts authentic evidence...
    submod = ear["submods"]["sev-snp"]
    assert (
        submod["ear.trustworthiness-vector"]["configuration"] == 96
    )  # ...but the host can read it
    assert submod["ear.status"] == "contraindicated"


def test_a_measurement_list_decides_the_executables_claim(
    vectors_dir: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "fleet.toml"
    policy.write_text(f'[sev-snp]\nmeasurements = ["{TRUSTEE_MEASUREMENT}"]\n')
    code, ear = _ear(*_snp(vectors_dir, "milan-trustee"), "--policy", str(policy))
    assert code == 0
    assert ear["submods"]["sev-snp"]["ear.trustworthiness-vector"]["executables"] == 2
    policy.write_text(f'[sev-snp]\nmeasurements = ["{"00" * 48}"]\n')
    code, ear = _ear(*_snp(vectors_dir, "milan-trustee"), "--policy", str(policy))
    assert code == 1
    submod = ear["submods"]["sev-snp"]
    assert submod["ear.trustworthiness-vector"]["executables"] == 33
    assert submod["ear.status"] == "contraindicated"
    assert "not among the 1 accepted" in submod["ear.veraison.policy-claims"]["reason"]


def test_evidence_that_does_not_verify_is_a_crypto_failure(vectors_dir: Path) -> None:
    d = vectors_dir / "sev-snp"
    args = [
        "--platform", "sev-snp", "--evidence", str(d / "milan-trustee" / "report.bin"),
        "--cert", str(d / "neg-fake-vcek" / "vcek-invalid.der"), "--at", SNP_TIME,
    ]  # fmt: skip
    code, ear = _ear(*args, "--policy", "permissive")
    assert code == 1
    submod = ear["submods"]["sev-snp"]
    assert submod["ear.status"] == "contraindicated"
    assert submod["ear.trustworthiness-vector"] == {"instance-identity": 99}


def test_nitro_memory_is_isolated_not_encrypted(vectors_dir: Path) -> None:
    d = vectors_dir / "nitro" / "evervault-prod-2022"
    code, ear = _ear(
        "--platform", "nitro", "--evidence", str(d / "attestation.cbor"),
        "--at", "2022-10-13T08:58:02Z", "--policy", "permissive",
    )  # fmt: skip
    assert code == 0
    submod = ear["submods"]["nitro"]
    assert submod["ear.trustworthiness-vector"]["runtime-opaque"] == 32
    assert submod["ear.status"] == "warning"


def test_nil_evidence_is_visible_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DONJON_NIL_DEV_KEY", str(tmp_path / "dev.pem"))
    provider = NilEvidenceProvider.default()
    key = KeyPair.generate("P-384")
    evidence = provider.evidence(bytes(64))
    now = PinnedClock().now()
    verified = verify_evidence(Platform.NIL, evidence, endorsements=Endorsements(), now=now)
    verdict = evaluate(Policy.named("permissive"), verified)
    submod = appraisal(verdict, key_spki=key.spki_der)
    assert submod["ear.trustworthiness-vector"] == {
        "runtime-opaque": 96,
        "configuration": 96,  # nil is a debug platform: the host sees everything
    }
    assert submod["ear.status"] == "contraindicated"
    akpub = submod["ear.veraison.key-attestation"]["akpub"]
    assert base64.urlsafe_b64decode(akpub + "=" * (-len(akpub) % 4)) == key.spki_der


def test_claims_echo_the_nonce_and_need_an_appraisal() -> None:
    failed = failed_appraisal("SignatureError: no")
    claims = ear_claims({"tdx": failed}, iat=5, verifier_build="donjon 0", nonce=b"\xff\x00")
    assert claims["eat_nonce"] == "_wA"
    with pytest.raises(ValueError, match="at least one appraisal"):
        ear_claims({}, iat=5, verifier_build="donjon 0")


def test_a_signed_ear_is_a_jwt_the_key_verifies(vectors_dir: Path, tmp_path: Path) -> None:
    key = KeyPair.generate("P-384")
    key_file = tmp_path / "ear.pem"
    key_file.write_bytes(key.private_key_pem())
    result = CliRunner().invoke(
        cli,
        ["attest", "verify", *_snp(vectors_dir, "milan-trustee"), "--policy", "permissive",
         "--ear", "--ear-key", str(key_file), "--nonce", "ec6c"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "ES384", "typ": "JWT"}
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    claims = verify_jwt(token, load_der_public_key(key.spki_der))  # type: ignore[arg-type]
    assert claims["submods"]["sev-snp"]["ear.status"] == "affirming"
    assert claims["eat_nonce"] == "7Gw"  # the nonce the report data begins with
    other = KeyPair.generate("P-384")
    with pytest.raises(SignatureError):
        verify_jwt(token, load_der_public_key(other.spki_der))  # type: ignore[arg-type]


def test_ear_usage_errors_exit_2(vectors_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["attest", "verify", *_snp(vectors_dir, "milan-trustee")]
    both = runner.invoke(cli, [*base, "--ear", "--json"])
    assert both.exit_code == 2 and "choose one" in both.output
    key_only = runner.invoke(cli, [*base, "--ear-key", str(tmp_path / "k.pem")])
    assert key_only.exit_code == 2 and "add --ear" in key_only.output
    (tmp_path / "rsa.pem").write_text("not a key")
    bad = runner.invoke(cli, [*base, "--ear", "--ear-key", str(tmp_path / "rsa.pem")])
    assert bad.exit_code == 2 and "not an unencrypted PEM private key" in bad.output


def _verdict_of(vectors_dir: Path) -> Verdict:
    d = vectors_dir / "sev-snp" / "milan-trustee"
    from datetime import UTC, datetime

    decoded = load_evidence(d / "report.bin")
    verified = verify_evidence(
        Platform.SEV_SNP,
        decoded.data,
        endorsements=load_endorsements((d / "vcek.der",), ()),
        now=datetime(2025, 9, 1, tzinfo=UTC),
    )
    return evaluate(Policy.named("permissive"), verified)


def test_library_and_cli_agree(vectors_dir: Path) -> None:
    _, ear = _ear(*_snp(vectors_dir, "milan-trustee"), "--policy", "permissive")
    assert appraisal(_verdict_of(vectors_dir)) == ear["submods"]["sev-snp"]
