"""``donjon steward init`` and ``donjon steward policy check`` through CliRunner."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from donjon.cli.main import cli
from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import KeyPair
from tests.unit.steward._support import VECTORS, Keep

NONCE = bytes(range(57))


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["steward", *args])
    return result.exit_code, result.output


@pytest.fixture
def nil_files(tmp_path: Path) -> tuple[Path, Path]:
    """A nil evidence file binding a key and NONCE, and that key's CSR (DER)."""
    keep = Keep(tmp_path)
    evidence = tmp_path / "nil.cbor"
    evidence.write_bytes(keep.evidence(NONCE))
    csr = tmp_path / "keep.csr"
    csr.write_bytes(keep.csr())
    return evidence, csr


def test_init_creates_then_reports_the_existing_ca(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, out = _run("init", "--state-dir", str(state))
    assert code == 0, out
    assert out.startswith(f"created CA in {state}")
    assert stat.S_IMODE((state / "ca.key").stat().st_mode) == 0o600
    assert "BEGIN" not in out  # the key is never printed
    fingerprint = next(line.split()[-1] for line in out.splitlines() if "sha256" in line)
    code, out = _run("init", "--state-dir", str(state))
    assert code == 0 and out.startswith("existing CA")
    assert fingerprint in out


def test_policy_check_accepts_nil_under_dev_step_by_step(nil_files: tuple[Path, Path]) -> None:
    evidence, csr = nil_files
    code, out = _run(
        "policy", "check", "dev", "--platform", "nil", "--evidence", str(evidence),
        "--csr", str(csr), "--nonce", NONCE.hex(),
    )  # fmt: skip
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("  ✔ policy: 'dev' sha256:")
    assert "  ✔ csr: signature verifies; P-384 key" in lines
    assert any(line.startswith("  ✔ evidence: nil evidence is authentic") for line in lines)
    assert any(line.startswith("  ✔ report_data:") for line in lines)
    assert any(line.startswith("  ✔ workload: donjon:measurement:nil:") for line in lines)
    assert lines[-1] == "issue: policy 'dev' accepts this evidence"


def test_policy_check_refuses_nil_under_production(nil_files: tuple[Path, Path]) -> None:
    evidence, _ = nil_files
    code, out = _run(
        "policy", "check", "production", "--platform", "nil", "--evidence", str(evidence)
    )
    assert code == 1
    assert "  ✗ platform: rejected: insecure evidence without a TEE" in out
    assert out.splitlines()[-1].startswith("refuse: rejected: insecure evidence")


def test_policy_check_binding_with_another_nonce_or_key(
    nil_files: tuple[Path, Path], tmp_path: Path
) -> None:
    evidence, csr = nil_files
    code, out = _run(
        "policy", "check", "dev", "--platform", "nil", "--evidence", str(evidence),
        "--csr", str(csr), "--nonce", "00" * 57, "--json",
    )  # fmt: skip
    assert code == 1
    doc = json.loads(out)
    assert doc["decision"] == "refuse"
    failed = [s for s in doc["steps"] if not s["passed"]]
    assert [s["name"] for s in failed] == ["report_data"]
    other = tmp_path / "other.csr"
    other.write_bytes(KeyPair.generate().csr())
    code, out = _run(
        "policy", "check", "dev", "--platform", "nil", "--evidence", str(evidence),
        "--csr", str(other), "--nonce", NONCE.hex(),
    )  # fmt: skip
    assert code == 1 and "✗ report_data" in out


def test_policy_check_with_a_client_nonce(tmp_path: Path) -> None:
    keep = Keep(tmp_path)
    client = b"\x42" * 16
    evidence = tmp_path / "nil.cbor"
    evidence.write_bytes(keep.provider.evidence(report_data_for(keep.key.spki_der, NONCE + client)))
    csr = tmp_path / "keep.csr"
    csr.write_bytes(keep.csr())
    base = ["policy", "check", "dev", "--platform", "nil", "--evidence", str(evidence)]
    base += ["--csr", str(csr), "--nonce", NONCE.hex()]
    code, out = _run(*base, "--client-nonce", client.hex())
    assert code == 0, out
    code, out = _run(*base)
    assert code == 1 and "✗ report_data" in out
    code, out = _run("policy", "check", "dev", "--platform", "nil", "--evidence", str(evidence),
                     "--client-nonce", client.hex())  # fmt: skip
    assert code == 2 and "--client-nonce needs --csr and --nonce" in out


def test_policy_check_real_snp_vector_at_its_verify_time() -> None:
    d = VECTORS / "sev-snp" / "milan-trustee"
    args = [
        "--platform",
        "sev-snp",
        "--evidence",
        str(d / "report.bin"),
        "--cert",
        str(d / "vcek.der"),
    ]
    code, out = _run("policy", "check", "production", *args, "--at", "2025-09-01T00:00:00Z")
    assert code == 0, out
    assert "✔ evidence: sev-snp evidence is authentic at 2025-09-01T00:00:00+00:00" in out
    code, out = _run("policy", "check", "production", *args, "--at", "2031-01-01T00:00:00Z")
    assert code == 1
    assert "✗ evidence: sev-snp evidence does not verify at 2031-01-01" in out
    d = VECTORS / "sev-snp" / "milan-gsg"
    debug = [
        "--platform",
        "sev-snp",
        "--evidence",
        str(d / "report.bin"),
        "--cert",
        str(d / "vcek.der"),
    ]
    code, out = _run("policy", "check", "production", *debug, "--at", "2025-09-01T00:00:00Z")
    assert code == 1 and "✗ debug: rejected: debug enabled (SEV-SNP guest policy bit 19)" in out


def test_policy_check_steward_rules(nil_files: tuple[Path, Path], tmp_path: Path) -> None:
    evidence, _ = nil_files
    policy = tmp_path / "team.toml"
    policy.write_text(
        "allow_insecure = true\n[nil]\nreject_debug = false\n"
        '[steward]\nworkloads = ["donjon:workload:sha256:' + "00" * 32 + '"]\n'
    )
    code, out = _run(
        "policy", "check", str(policy), "--platform", "nil", "--evidence", str(evidence)
    )
    assert code == 1
    assert "✗ workload: rejected: workload identity donjon:measurement:nil:" in out
    assert "policy 'team'" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--evidence", "/nonexistent"], "cannot read evidence file"),
        (["--at", "yesterday"], "not an ISO-8601 time"),
        (["--nonce", "xyz"], "not hex"),
    ],
)
def test_policy_check_unusable_input_exits_2(
    nil_files: tuple[Path, Path], args: list[str], message: str
) -> None:
    evidence, _ = nil_files
    base = ["policy", "check", "dev", "--platform", "nil", "--evidence", str(evidence)]
    result = CliRunner().invoke(cli, ["steward", *base, *args])
    assert result.exit_code == 2
    assert message in result.output


def test_policy_check_bad_policy_file_exits_2(nil_files: tuple[Path, Path], tmp_path: Path) -> None:
    evidence, _ = nil_files
    bad = tmp_path / "bad.toml"
    bad.write_text("[steward]\nbogus = 1\n")
    code, out = _run("policy", "check", str(bad), "--platform", "nil", "--evidence", str(evidence))
    assert code == 2
    assert "bad.toml:2: steward.bogus: unknown key" in out


def test_serve_usage_errors_before_binding(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["steward", "serve", "--listen", "nope", "--state-dir", str(tmp_path / "s")]
    )
    assert result.exit_code != 0
    assert not (tmp_path / "s").exists()


def test_serve_defaults_to_one_worker_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from donjon.cli.steward import MAX_DEFAULT_WORKERS, default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert default_workers() == MAX_DEFAULT_WORKERS
    result = CliRunner().invoke(cli, ["steward", "serve", "--workers", "0", "--state-dir", "x"])
    assert result.exit_code == 2 and "--workers" in result.output


def test_policy_check_explains_which_secrets_a_workload_would_receive(tmp_path: Path) -> None:
    keep = Keep(tmp_path)
    named = "donjon:workload:sha256:" + "ab" * 32
    evidence = tmp_path / "nil.cbor"
    evidence.write_bytes(keep.evidence(NONCE))
    csr = tmp_path / "keep.csr"
    csr.write_bytes(keep.key.csr(uris=[named]))
    anonymous = tmp_path / "anonymous.csr"
    anonymous.write_bytes(keep.csr())
    policy = tmp_path / "team.toml"
    policy.write_text(
        "allow_insecure = true\n[nil]\nreject_debug = false\n"
        f'[steward.secrets]\ndb-password = ["{named}"]\napi-token = ["donjon:workload:sha256:'
        + "cd" * 32
        + '"]\n'
    )
    base = ["policy", "check", str(policy), "--platform", "nil", "--evidence", str(evidence)]
    base += ["--nonce", NONCE.hex()]
    code, out = _run(*base, "--csr", str(csr), "--secret", "db-password")
    assert code == 0, out
    assert f"  ✔ secret db-password: released to {named} by [steward.secrets]" in out
    code, out = _run(*base, "--csr", str(csr), "--secret", "db-password", "--secret", "api-token")
    assert code == 1
    assert f"  ✗ secret api-token: not released to {named}" in out
    code, out = _run(*base, "--csr", str(anonymous), "--secret", "db-password")
    assert code == 1 and "this one names none" in out
    code, out = _run(*base, "--secret", "db-password")
    assert code == 2 and "--secret needs --csr" in out
    publisher = "donjon:publisher:sha256:" + "ef" * 32
    signed = tmp_path / "signed.csr"
    signed.write_bytes(keep.key.csr(uris=["donjon:workload:sha256:" + "01" * 32, publisher]))
    policy.write_text(policy.read_text().replace(f'"{named}"', f'"{publisher}"'))
    code, out = _run(*base, "--csr", str(signed), "--secret", "db-password")
    assert code == 0, out
    assert f"  ✔ secret db-password: released to {publisher}'s workloads" in out
