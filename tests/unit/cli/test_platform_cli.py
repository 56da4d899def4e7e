"""``donjon platform info`` and ``donjon platform dev-key``: CliRunner, main(), one subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from donjon.backends.host_view import HostView, ModuleInfo
from donjon.backends.probe import BACKENDS, host_summary, probe_all
from donjon.cli.main import cli, main
from donjon.cli.platform import info_json, render_info


def test_info_table_on_this_machine() -> None:
    result = CliRunner().invoke(cli, ["platform", "info"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("donjon ")
    for name in BACKENDS:
        assert f"\n  {name} " in out  # a row in the overview table
    assert "✔ wasmtime importable" in out
    assert "Best available backend: " in out
    assert "\x1b[" not in out  # no colour codes when not a terminal


def test_info_json_schema_on_this_machine() -> None:
    result = CliRunner().invoke(cli, ["platform", "info", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc) == {"schema", "donjon_version", "host", "best_available", "backends"}
    assert doc["schema"] == 1
    assert set(doc["host"]) == {"machine", "kernel", "cpu", "vm"}
    assert [b["name"] for b in doc["backends"]] == list(BACKENDS)
    usable = {b["name"] for b in doc["backends"] if b["usable"]}
    assert "nil" in usable and doc["best_available"] in usable
    for backend in doc["backends"]:
        assert isinstance(backend["usable"], bool) and isinstance(backend["confidential"], bool)
        for check in backend["checks"]:
            assert isinstance(check["ok"], bool)
            assert isinstance(check["detail"], str) and isinstance(check["fix"], str)


def _fake_reports(tmp_path: Path, *, wasmtime_ok: bool = True) -> HostView:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kvm").write_text("")
    info = ModuleInfo("wasmtime", "50.0.1", None if wasmtime_ok else "ImportError: gone")
    return HostView(
        root=tmp_path, machine="x86_64", search_path="/bin", module_probe=lambda n: info
    )


def test_render_shows_fixes_only_for_failing_checks(tmp_path: Path) -> None:
    view = _fake_reports(tmp_path)
    text = click.unstyle(render_info(host_summary(view), probe_all(view), "nil"))
    assert "✗ qemu-system-x86_64 installed: not found on PATH" in text
    assert "fix: install QEMU" in text
    wasmtime_line = text.index("✔ wasmtime importable: wasmtime 50.0.1")
    assert "fix:" not in text[wasmtime_line:].splitlines()[1]
    assert text.rstrip().endswith(
        "Best available backend: nil (no confidentiality: deploying to it needs --insecure)"
    )


def test_render_and_json_when_nothing_is_usable(tmp_path: Path) -> None:
    view = _fake_reports(tmp_path, wasmtime_ok=False)
    reports = probe_all(view)
    text = click.unstyle(render_info(host_summary(view), reports, None))
    assert "No backend can run here" in text
    assert info_json(host_summary(view), reports, None)["best_available"] is None


def test_dev_key_shows_the_public_half_only(tmp_path: Path) -> None:
    key = tmp_path / "donjon" / "nil-dev-key.pem"
    first = CliRunner().invoke(cli, ["platform", "dev-key", "--key", str(key), "--json"])
    assert first.exit_code == 0, first.output
    doc = json.loads(first.output)
    assert doc["created"] is True and doc["path"] == str(key)
    assert doc["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert len(doc["sha256"]) == 64
    second = CliRunner().invoke(cli, ["platform", "dev-key", "--key", str(key)])
    assert second.exit_code == 0
    assert f"sha256:  {doc['sha256']}" in second.output
    assert "PRIVATE" not in first.output + second.output
    assert "created" not in second.output


def test_dev_key_default_path_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["platform", "dev-key"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "donjon" / "nil-dev-key.pem"
    assert f"path:    {path}" in result.output
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_dev_key_with_unsafe_permissions_is_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k.pem"
    assert CliRunner().invoke(cli, ["platform", "dev-key", "--key", str(key)]).exit_code == 0
    key.chmod(0o640)
    with pytest.raises(SystemExit) as exit_info:
        main(["platform", "dev-key", "--key", str(key)])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith("donjon: error: nil development key") and "chmod 600" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_subprocess_smoke() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DONJON_")}
    proc = subprocess.run(
        [sys.executable, "-m", "donjon", "platform", "info", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["best_available"] is not None
