"""``donjon attest verify --fetch`` and ``donjon steward policy check --fetch`` against the real
HTTP KDS/PCS emulator (CliRunner, plus one real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from donjon.cli.main import cli
from tests.integration.endorse_support import VECTORS, Answer, Emulator, kds_routes, pcs_routes

pytestmark = pytest.mark.integration

GENOA_REPORT = VECTORS / "sev-snp" / "genoa-oak" / "report.bin"
TRUSTEE_REPORT = VECTORS / "sev-snp" / "milan-trustee" / "report.bin"
TDX_QUOTE = VECTORS / "tdx" / "oak-v4" / "quote.bin"


@pytest.fixture
def service() -> Iterator[Emulator]:
    routes = kds_routes("genoa-oak", "milan-trustee")
    routes |= pcs_routes("tdx/collateral-00806f050000-2025-10", tee="tdx", fmspc="00806F050000")
    with Emulator(routes) as emulator:
        yield emulator


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _verify(
    service: Emulator, cache: Path, *extra: str, evidence: Path = GENOA_REPORT
) -> tuple[int, str, str]:
    return _run(
        "attest", "verify", "--platform", "sev-snp", "--evidence", str(evidence),
        "--at", "2025-09-01T00:00:00Z", "--fetch", "--kds-url", service.url,
        "--cache-dir", str(cache), *extra,
    )  # fmt: skip


def test_report_only_verifies_with_fetch_and_not_without(service: Emulator, tmp_path: Path) -> None:
    code, out, err = _run(
        "attest", "verify", "--platform", "sev-snp", "--evidence", str(GENOA_REPORT),
        "--at", "2025-09-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert code == 1, err
    without = json.loads(out)
    assert without["error"] == "ChainError"
    assert "no VCEK/VLEK certificate was given: fetch the VCEK from" in without["reason"]
    assert service.requests == []

    code, out, err = _verify(service, tmp_path, "--json")
    assert code == 0, out + err
    verdict = json.loads(out)
    assert verdict["verdict"] == "accept" and verdict["claims"]["family"] == "Genoa"
    assert len(service.requests) == 2
    # Again: from the cache, the emulator sees nothing new.
    code, out, _ = _verify(service, tmp_path, "--json")
    assert code == 0 and json.loads(out)["verdict"] == "accept"
    assert len(service.requests) == 2


def test_verbose_says_where_each_document_came_from(service: Emulator, tmp_path: Path) -> None:
    _verify(service, tmp_path)
    result = CliRunner().invoke(
        cli,
        ["-v", "attest", "verify", "--platform", "sev-snp", "--evidence", str(GENOA_REPORT),
         "--at", "2025-09-01T00:00:00Z", "--fetch", "--kds-url", service.url,
         "--cache-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"donjon: VCEK from cache: {service.url}/vcek/v1/Genoa/d2421d97" in result.stderr
    assert "donjon: ASK/ARK chain from cache:" in result.stderr


def test_version_2_report_with_product_hint(service: Emulator, tmp_path: Path) -> None:
    code, out, err = _verify(service, tmp_path, "--kds-product", "Milan", evidence=TRUSTEE_REPORT)
    assert code == 0, out + err
    assert service.paths[0].startswith("/vcek/v1/Milan/c38427a3")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer(b"", status=404), "AMD KDS answered HTTP 404 Not Found: it has no such document"),
        (Answer(b"", status=500), "AMD KDS answered HTTP 500 Internal Server Error"),
        (Answer(b"garbage"), "with something that is not a VCEK"),
        (Answer(bytes(100_000)), "over the 65536-byte limit"),
    ],
)
def test_fetch_failures_are_one_line_and_exit_2(
    service: Emulator, tmp_path: Path, answer: Answer, expected: str
) -> None:
    service.misbehave("/vcek/v1/Genoa/d2", answer)
    code, out, err = _verify(service, tmp_path, "--json")
    assert code == 2 and out == ""
    assert err.startswith("donjon: error: ") and err.count("\n") == 1, err
    assert expected in err and service.url in err
    assert err.rstrip().endswith("point --kds-url at a reachable AMD KDS or cache")


def test_vlek_report_is_rejected_with_the_reason(service: Emulator, tmp_path: Path) -> None:
    vlek = VECTORS / "sev-snp" / "milan-vlek-aws" / "report.bin"
    code, out, _ = _verify(service, tmp_path, "--json", evidence=vlek)
    assert code == 1
    failure = json.loads(out)
    assert failure["error"] == "EndorsementUnavailableError"
    assert "VLEK" in failure["reason"] and "--cert" in failure["reason"]


def test_fetch_options_need_fetch(tmp_path: Path) -> None:
    code, _, err = _run(
        "attest", "verify", "--platform", "sev-snp", "--evidence", str(GENOA_REPORT),
        "--kds-url", "http://127.0.0.1:1",
    )  # fmt: skip
    assert code == 2 and "--kds-url only applies with --fetch" in err
    code, _, err = _run(
        "attest", "verify", "--platform", "sev-snp", "--evidence", str(GENOA_REPORT),
        "--fetch", "--kds-url", "ftp://kds.example",
    )  # fmt: skip
    assert code == 2 and "--kds-url 'ftp://kds.example' must be an http:// or https:// URL" in err


def test_steward_policy_check_fetches_intel_collateral(service: Emulator, tmp_path: Path) -> None:
    code, out, err = _run(
        "steward", "policy", "check", "production", "--platform", "tdx",
        "--evidence", str(TDX_QUOTE), "--at", "2025-11-01T00:00:00Z", "--fetch",
        "--pcs-url", service.url, "--cache-dir", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0, out + err
    decision = json.loads(out)
    assert decision["decision"] == "issue"
    assert decision["claims"]["tcb_status"] == "UpToDate"
    assert [p.split("?")[0] for p in service.paths] == [
        "/tdx/certification/v4/tcb",
        "/tdx/certification/v4/qe/identity",
        "/sgx/certification/v4/pckcrl",
        "/sgx/certification/v4/rootcacrl",
    ]


def test_cache_dir_from_the_environment(service: Emulator, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["attest", "verify", "--platform", "sev-snp", "--evidence", str(GENOA_REPORT),
         "--at", "2025-09-01T00:00:00Z", "--fetch"],
        env={"DONJON_KDS_URL": service.url, "DONJON_ENDORSEMENT_CACHE": str(tmp_path / "env")},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "env").iterdir())) == 2


def test_a_real_process(service: Emulator, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DONJON_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    done = subprocess.run(
        [sys.executable, "-m", "donjon", "attest", "verify", "--platform", "sev-snp",
         "--evidence", str(GENOA_REPORT), "--at", "2025-09-01T00:00:00Z", "--fetch",
         "--kds-url", service.url],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("accepted by policy 'production' (sev-snp)")
    # The default cache: $XDG_CACHE_HOME/donjon/endorsements.
    assert len(list((tmp_path / "xdg" / "donjon" / "endorsements").iterdir())) == 2
