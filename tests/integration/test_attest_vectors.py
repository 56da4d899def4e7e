"""Every vector of ``shared/vectors/manifest.json`` through ``donjon attest verify --json``
(as a real subprocess) and through the library, to its expected verdict under ``permissive`` and
``production`` at its pinned ``verify_time``; plus the CLI's exit-code contract.

What each manifest ``result`` means (PROVENANCE.md):

- ``accept``: authentic, and acceptable under both built-in policies (unless the manifest says
  ``production_policy: reject``).
- ``accept-with-tcb-status``: authentic with a TCB status; ``permissive`` accepts, ``production``
  accepts only UpToDate and SWHardeningNeeded.
- ``reject-debug``: authentic, ``debug`` true; ``permissive`` accepts, ``production`` rejects
  because of debug.
- ``reject``, ``reject-stale-collateral``: not authentic (verification fails) under any policy.
- ``accept-chain-only``: a VCEK without a report; only its chain can be verified (library only).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from donjon.attestation.dispatch import verify_evidence
from donjon.attestation.inputs import load_endorsements, load_evidence
from donjon.attestation.policy import PRODUCTION_TCB_STATUSES, Policy, evaluate
from donjon.attestation.result import Platform
from donjon.errors import (
    ChainError,
    FreshnessError,
    MeasurementError,
    SignatureError,
    TcbStatusError,
    VerificationError,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO.parent / "shared" / "vectors"

# Manifest file role -> CLI option. None: not passed (an alternative to another file).
ROLE_OPTION: dict[str, str | None] = {
    # evidence
    "report": "--evidence",
    "hcl_report": "--evidence",
    "quote": "--evidence",
    "token": "--evidence",
    "document": "--evidence",
    # certificates, chains and keys
    "vcek": "--cert",
    "vlek": "--cert",
    "vcek_chain": "--cert",
    "ask_ark": "--cert",
    "root_ca": "--cert",
    "root": "--cert",
    "cpak": "--cert",
    "trust_anchor": "--cert",
    "tcb_signing_chain": "--cert",
    "tcb_signing_cert": "--cert",
    "pck_crl_issuer_chain": "--cert",
    # collateral
    "collateral": "--collateral",
    "tcb_info": "--collateral",
    "qe_identity": "--collateral",
    "pck_crl": "--collateral",
    "root_ca_crl": "--collateral",
    # gotdx-v5: a second, equally valid TCB info; the sample is checked with the first one.
    "alt_tcb_info": None,
}

# Where each platform's primary measurement and report data sit in the manifest's fields.
MEASUREMENT_FIELD = {
    "sev-snp": "measurement",
    "sgx": "mrenclave",
    "tdx": "mrtd",
    "cca": "rim",
    "nitro": "pcr0",
}
REPORT_DATA_FIELD = {
    "sev-snp": "report_data",
    "sgx": "report_data",
    "tdx": "report_data",
    "cca": "realm_challenge",
}
# The specific error a verification failure must raise, per vector.
EXPECTED_ERRORS: dict[str, tuple[type[VerificationError], ...]] = {
    "snp-neg-fake-vcek": (ChainError, SignatureError, MeasurementError),
    "sgx-mobilecoin-stale-crl": (FreshnessError,),
    "tdx-dcapqvl-v5-no-tcb-level": (TcbStatusError,),
    "tdx-gotdx-spr-e4-2023": (TcbStatusError,),
}


@dataclass(frozen=True)
class Vector:
    id: str
    platform: Platform
    dir: Path
    files: dict[str, str]
    verify_time: str | None
    expected: dict[str, Any]

    @property
    def result(self) -> str:
        return str(self.expected["result"])

    def paths(self, option: str) -> list[Path]:
        out = []
        for role, name in self.files.items():
            if role not in ROLE_OPTION:
                raise AssertionError(f"{self.id}: manifest role {role!r} has no CLI option mapping")
            if ROLE_OPTION[role] == option:
                out.append((self.dir / name).resolve())
        return out


@cache
def _manifest() -> tuple[Vector, ...]:
    doc = json.loads((VECTORS / "manifest.json").read_text())
    return tuple(
        Vector(
            id=v["id"],
            platform=Platform(v["type"]),
            dir=VECTORS / v["dir"],
            files=dict(v["files"]),
            verify_time=v.get("verify_time"),
            expected=dict(v["expected"]),
        )
        for v in doc["vectors"]
    )


def _with_evidence() -> list[Vector]:
    return [v for v in _manifest() if v.result != "accept-chain-only"]


def expected_verdict(v: Vector, policy: str) -> str:
    """ "accept", "reject" (policy rejection of authentic evidence) or "fail" (not authentic)."""
    if v.result in ("reject", "reject-stale-collateral"):
        return "fail"
    if policy == "permissive":
        return "accept"
    if v.result == "reject-debug" or v.expected.get("production_policy") == "reject":
        return "reject"
    if v.result == "accept-with-tcb-status":
        status = v.expected["platform_tcb_status"]
        return "accept" if status in PRODUCTION_TCB_STATUSES else "reject"
    assert v.result == "accept", v.result
    return "accept"


def command(v: Vector, policy: str) -> list[str]:
    (evidence,) = v.paths("--evidence")
    args = ["attest", "verify", "--platform", str(v.platform), "--evidence", str(evidence)]
    for option in ("--cert", "--collateral"):
        for p in v.paths(option):
            args += [option, str(p)]
    if v.verify_time is not None:
        args += ["--at", v.verify_time]
    return [*args, "--policy", policy, "--json"]


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DONJON_")}
    return subprocess.run(
        [sys.executable, "-bb", "-m", "donjon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _norm(value: Any) -> Any:
    """A manifest value or a claim, in a comparable form (None if not a scalar)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false"):
            return text == "true"
        if text.startswith("0x"):
            try:
                return int(text, 16)
            except ValueError:
                return text
        if text.isdigit() and len(text) < 6:
            return int(text)
        return text
    return None


def check_claims(v: Vector, claims: dict[str, Any]) -> None:
    """The claims agree with the manifest's key fields."""
    p = str(v.platform)
    e = v.expected
    assert claims["platform"] == p
    assert claims["measurement"] == e[MEASUREMENT_FIELD[p]], "measurement"
    if p in REPORT_DATA_FIELD:
        assert claims["report_data"] == e[REPORT_DATA_FIELD[p]], "report_data"
    assert claims["debug"] is (v.result == "reject-debug" or _norm(e.get("debug", False)) is True)
    if p in ("sgx", "tdx"):
        assert claims["tcb_status"] == e["platform_tcb_status"]
        assert sorted(claims["advisory_ids"]) == sorted(e["advisories"] or [])
    # Every other field the manifest and the claims both name must agree.
    mismatched = {
        k: (e[k], claims[k])
        for k in e
        if k in claims
        and k not in ("result", "reason", "debug")
        and _norm(e[k]) is not None
        and _norm(claims[k]) is not None
        and _norm(e[k]) != _norm(claims[k])
    }
    assert not mismatched, f"claims differ from the manifest: {mismatched}"


def library_verdict(v: Vector, policy: str) -> dict[str, Any]:
    """The same verification through the library, as the CLI's JSON object."""
    (evidence,) = v.paths("--evidence")
    endorsements = load_endorsements(v.paths("--cert"), v.paths("--collateral"))
    now = datetime.fromisoformat(v.verify_time or "2026-01-01T00:00:00Z")
    p = Policy.named(policy)
    try:
        verified = verify_evidence(
            v.platform, load_evidence(evidence).data, endorsements=endorsements, now=now
        )
    except VerificationError as err:
        return {"verdict": "fail", "error": type(err).__name__, "exception": err}
    return evaluate(p, verified).to_json()


@pytest.mark.parametrize("policy", ["permissive", "production"])
@pytest.mark.parametrize("v", _with_evidence(), ids=lambda v: v.id)
def test_vector_through_cli_and_library(v: Vector, policy: str) -> None:
    want = expected_verdict(v, policy)
    proc = run_cli(command(v, policy))
    assert proc.stdout, f"no JSON on stdout; stderr: {proc.stderr}"
    out = json.loads(proc.stdout)
    lib = library_verdict(v, policy)

    assert set(out) >= {"verdict", "platform", "reason", "policy", "claims"}
    assert out["platform"] == str(v.platform)
    assert out["policy"] == policy
    if want == "fail":
        assert proc.returncode == 1, proc.stderr
        assert out["verdict"] == "reject"
        assert out["claims"] == {}
        assert out["reason"].startswith("verification failed: ")
        assert lib["verdict"] == "fail"
        assert out["error"] == lib["error"]
        allowed = EXPECTED_ERRORS.get(v.id, (VerificationError,))
        assert isinstance(lib["exception"], allowed), lib["exception"]
        return
    assert lib["verdict"] != "fail", f"library failed: {lib.get('exception')}"
    verified_at = out.pop("verified_at")
    if v.verify_time is not None:
        assert verified_at == v.verify_time
    assert out == json.loads(json.dumps(lib)), "CLI and library disagree"
    check_claims(v, out["claims"])
    if want == "accept":
        assert (proc.returncode, out["verdict"], out["reason"]) == (0, "accept", None), out[
            "reason"
        ]
    else:
        assert (proc.returncode, out["verdict"]) == (1, "reject"), out["reason"]
        assert out["reason"].startswith("rejected: ")
        assert (
            out["reason"].endswith("not allowed by policy 'production'")
            or "required by policy 'production'" in out["reason"]
        )
        if v.result == "reject-debug":
            assert out["reason"].startswith("rejected: debug enabled (")


def test_chain_only_vector_through_the_library() -> None:
    from donjon.attestation.snp import SnpVerifier

    (v,) = [v for v in _manifest() if v.result == "accept-chain-only"]
    vcek = (v.dir / v.files["vcek"]).read_bytes()
    ask_ark = x509.load_pem_x509_certificates((v.dir / v.files["ask_ark"]).read_bytes())
    assert v.verify_time is not None
    chain = SnpVerifier.from_embedded_roots().verify_vcek_chain(
        vcek, now=datetime.fromisoformat(v.verify_time), intermediates=ask_ark
    )
    assert chain.issuer_name == "CN=SEV-Turin"
    assert chain.hw_id is not None and chain.hw_id.hex() == "1e550a8ee5cf9f4d"


def test_every_manifest_vector_is_covered() -> None:
    ids = {v.id for v in _manifest()}
    assert len(ids) == len(_manifest()) >= 24
    assert {v.result for v in _manifest()} <= {
        "accept",
        "accept-with-tcb-status",
        "reject-debug",
        "reject",
        "reject-stale-collateral",
        "accept-chain-only",
    }


# --- the CLI contract beyond the manifest -----------------------------------------------------


def _snp_args(*extra: str) -> list[str]:
    d = VECTORS / "sev-snp"
    return [
        "attest",
        "verify",
        "--platform",
        "sev-snp",
        "--evidence",
        str(d / "milan-trustee/report.bin"),
        "--cert",
        str(d / "milan-trustee/vcek.der"),
        "--cert",
        str(d / "roots/milan-vcek-ask-ark.pem"),
        "--at",
        "2025-09-01T00:00:00Z",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "stderr"),
    [
        (["--at", "yesterday"], "is not an ISO-8601 time"),
        (["--nonce", "xyz"], "--nonce 'xyz' is not hex"),
        (["--nonce", "abc"], "is not hex"),
        (["--report-data", ""], "--report-data is empty"),
        (["--policy", "strict"], "no built-in policy named 'strict'"),
        (["--cert", "/nonexistent/vcek.der"], "cannot read certificate file /nonexistent/vcek.der"),
        (["--collateral", "/etc/hostname"], "collateral file /etc/hostname is neither DER, PEM"),
        (["--platform", "sev"], "Invalid value for '--platform'"),
    ],
)
def test_unusable_input_exits_2_with_one_line_and_no_json(extra: list[str], stderr: str) -> None:
    proc = run_cli([*_snp_args(*extra), "--json"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert stderr in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_evidence_file_exits_2(tmp_path: Path) -> None:
    proc = run_cli(["attest", "verify", "--platform", "tdx", "--evidence", str(tmp_path / "q.bin")])
    assert proc.returncode == 2
    assert f"cannot read evidence file {tmp_path / 'q.bin'}" in proc.stderr


def test_bad_policy_file_exits_2_with_file_line_field(tmp_path: Path) -> None:
    f = tmp_path / "fleet.toml"
    f.write_text('name = "fleet"\n[sev-snp]\nmin_tcb = { bl = 3, blx = 1 }\n')
    proc = run_cli(_snp_args("--policy", str(f)))
    assert proc.returncode == 2
    assert f"{f}:3: sev-snp.min_tcb.blx: unknown TCB component" in proc.stderr


def test_hex_and_base64_evidence_files_verify_the_same(tmp_path: Path) -> None:
    report = (VECTORS / "sev-snp/milan-trustee/report.bin").read_bytes()
    outputs = []
    for name, text in (
        ("r.hex", report.hex()),
        ("r.b64", base64.b64encode(report).decode()),
    ):
        f = tmp_path / name
        f.write_text(text + "\n")
        args = _snp_args("--json")
        args[args.index("--evidence") + 1] = str(f)
        proc = run_cli(args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0]["claims"]["report_data"].startswith("ec6c52d7533cc2c4")


def test_nonce_and_report_data_through_the_cli() -> None:
    ok = run_cli(_snp_args("--nonce", "EC6C52D7", "--json"))
    assert ok.returncode == 0, ok.stdout
    stale = run_cli(_snp_args("--nonce", "00112233", "--json"))
    assert stale.returncode == 1
    out = json.loads(stale.stdout)
    assert out["verdict"] == "reject"
    assert "does not begin with the nonce 00112233" in out["reason"]
    assert out["claims"]["measurement"].startswith("a1f3930413247bb3")  # authentic: claims kept
    exact = json.loads(ok.stdout)["claims"]["report_data"]
    assert run_cli(_snp_args("--report-data", exact)).returncode == 0
    assert run_cli(_snp_args("--report-data", "ff" + exact[2:])).returncode == 1


def test_nitro_nonce_field_counts_as_the_nonce() -> None:
    d = VECTORS / "nitro/evervault-prod-2022"
    args = ["attest", "verify", "--platform", "nitro", "--evidence", str(d / "attestation.cbor")]
    args += ["--at", "2022-10-13T08:58:02Z", "--nonce", "cb3dc2eb76c0c134"]
    assert run_cli(args).returncode == 0


def test_policy_file_pins_a_measurement(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        f'[sev-snp]\nmeasurements = ["{"a1f3930413247bb38cfc171579ea3c12d5fe4901"}{"0" * 56}"]\n'
    )
    proc = run_cli(_snp_args("--policy", str(good), "--json"))
    out = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert out["policy"] == "good"
    assert out["reason"].startswith("rejected: measurement a1f3930413247bb3")
    assert out["reason"].endswith("not among the 1 accepted by policy 'good'")
    real = out["claims"]["measurement"]
    good.write_text(f'[sev-snp]\nmeasurements = ["{real}"]\nmin_tcb = {{ bl = 3, snp = 8 }}\n')
    assert run_cli(_snp_args("--policy", str(good))).returncode == 0
    good.write_text(f'[sev-snp]\nmeasurements = ["{real}"]\nmin_tcb = {{ snp = 9 }}\n')
    low = run_cli(_snp_args("--policy", str(good), "--json"))
    assert low.returncode == 1
    assert json.loads(low.stdout)["reason"] == (
        "rejected: SEV-SNP reported TCB snp=8 below the minimum 9 required by policy 'good'"
    )


def test_human_output_is_short_and_complete() -> None:
    proc = run_cli(_snp_args())
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0] == "accepted by policy 'production' (sev-snp)"
    labels = [line.split()[0] for line in lines[1:]]
    assert labels == ["measurement", "report", "TCB", "advisories", "debug", "policy", "verified"]
    assert lines[-1].split()[-1] == "2025-09-01T00:00:00Z"
    failed = run_cli(_snp_args("--nonce", "00"))
    assert failed.stdout.startswith("rejected: report data ec6c52d7533cc2c4")


def test_nil_evidence_needs_an_insecure_policy(tmp_path: Path) -> None:
    import socket

    from donjon.attestation.nil import NilClaims, nil_protected_header
    from donjon.crypto.devkey import DevSigningKey, generate_dev_key_pem

    key = DevSigningKey.from_pem(generate_dev_key_pem(), source="test key")
    claims = NilClaims(
        report_data=b"\x07" * 64,
        measurement=b"\x42" * 48,
        hostname=socket.gethostname()[:255] or "h",
        version="0",
    )
    f = tmp_path / "nil.cbor"
    f.write_bytes(key.sign1(claims.encode(), protected=nil_protected_header(key.spki)))
    args = ["attest", "verify", "--platform", "nil", "--evidence", str(f), "--json"]
    for policy in ("production", "permissive"):
        proc = run_cli([*args, "--policy", policy])
        assert proc.returncode == 1
        assert json.loads(proc.stdout)["reason"] == (
            "rejected: insecure evidence without a TEE (platform nil) not allowed by "
            f"policy '{policy}'"
        )
    dev = tmp_path / "dev.toml"
    dev.write_text('name = "dev"\nallow_insecure = true\nreject_debug = false\n')
    proc = run_cli([*args, "--policy", str(dev)])
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["claims"]["insecure"] is True
    assert "warning: this evidence comes from no TEE" in proc.stderr
