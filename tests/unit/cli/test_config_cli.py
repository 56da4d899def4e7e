"""``donjon config init`` and ``donjon config check``: CliRunner, main(), and one subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from donjon.cli.main import cli, main
from donjon.errors import UsageError
from donjon.keep.config import ConfigFileError, config_template, load_config

VALID = """\
args = ["--port", "8080"]
[env]
API_TOKEN = "s3cr3t-value"
MODE = "prod"
[limits]
memory_mib = 64
timeout_s = 2.5
[[dirs]]
host = "data"
guest = "/data"
[[files]]
kind = "stdin"
[[files]]
kind = "stdout"
[[files]]
kind = "listen"
name = "api"
port = 8443
[[files]]
kind = "connect"
name = "db"
prot = "tcp"
host = "127.0.0.1"
port = 5432
"""

INVALID = '[[files]]\nkind = "null"\n[[files]]\nkind = "listen"\nname = "x"\nprot = "udp"\n'


@pytest.fixture
def valid_config(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    path = tmp_path / "Enarx.toml"
    path.write_text(VALID, encoding="utf-8")
    return path


@pytest.fixture
def invalid_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(INVALID, encoding="utf-8")
    return path


# -- init --------------------------------------------------------------------------------------


def test_init_writes_template_to_default_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["config", "init"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "Enarx.toml"
    assert written.read_text(encoding="utf-8") == config_template()
    assert "wrote Enarx.toml" in result.output
    # What init writes is itself a valid config.
    assert load_config(written).fd_environment() == (
        ("FD_COUNT", "3"),
        ("FD_NAMES", "stdin:stdout:stderr"),
    )


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "Enarx.toml"
    target.write_text("# mine\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["config", "init", str(target)])
    assert isinstance(result.exception, UsageError)
    assert "already exists; pass --force" in str(result.exception)
    assert target.read_text(encoding="utf-8") == "# mine\n"

    result = CliRunner().invoke(cli, ["config", "init", "--force", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == config_template()
    assert [p.name for p in tmp_path.iterdir()] == ["Enarx.toml"]  # no temporary file left


def test_init_into_a_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "Enarx.toml").read_text(encoding="utf-8") == config_template()


def test_init_through_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "Enarx.toml"
    with pytest.raises(SystemExit) as info:
        main(["config", "init", str(target)])
    assert info.value.code == 0
    with pytest.raises(SystemExit) as info:
        main(["config", "init", str(target)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("donjon: error: ") and "already exists; pass --force" in err

    with pytest.raises(SystemExit) as info:
        main(["config", "init", str(tmp_path / "no" / "such" / "dir.toml")])
    assert info.value.code == 3
    assert "cannot write" in capsys.readouterr().err


# -- check -------------------------------------------------------------------------------------


def test_check_prints_summary_without_env_values(valid_config: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "check", str(valid_config)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith(f"{valid_config}: valid\n")
    assert "args:    main.wasm --port 8080" in out
    assert "env:     API_TOKEN, MODE  (values not shown)" in out
    assert "s3cr3t" not in out and "prod" not in out
    assert "fd 2   listen   api  tls listen on [::]:8443" in out
    assert "fd 3   connect  db  tcp connect to 127.0.0.1:5432 (PLAINTEXT" in out
    assert "FD_COUNT=4 FD_NAMES=stdin:stdout:api:db" in out
    assert f"/data <- {valid_config.parent / 'data'}  (read-only" in out
    assert "limits:  memory 64 MiB, deadline 2.5 s" in out


def test_check_default_files(tmp_path: Path) -> None:
    path = tmp_path / "Enarx.toml"
    path.write_text("", encoding="utf-8")
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "(no [[files]]: ordinary stdio)" in result.output
    assert "FD_COUNT=3 FD_NAMES=stdin:stdout:stderr" in result.output
    assert "limits:  memory no cap, deadline none" in result.output
    assert "network: (runtime defaults)" in result.output


def test_check_shows_socket_limits(tmp_path: Path) -> None:
    path = tmp_path / "Enarx.toml"
    path.write_text(
        '[[files]]\nkind = "listen"\nname = "api"\nprot = "tls"\nport = 8443\n'
        "max_connections = 16\n[network]\nhandshake_timeout_s = 2.5\nbuffer_kib = 64\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "tls listen on [::]:8443, at most 16 connections at once" in result.output
    assert "network: handshake_timeout_s 2.5, buffer_kib 64" in result.output
    result = CliRunner().invoke(cli, ["config", "check", "--json", str(path)])
    doc = json.loads(result.output)
    assert doc["network"]["handshake_timeout_s"] == 2.5 and doc["network"]["buffer_kib"] == 64
    assert doc["network"]["max_connections"] is None
    assert doc["files"][0]["max_connections"] == 16


def test_check_json(valid_config: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "check", "--json", str(valid_config)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["valid"] is True
    assert doc["argv"] == ["main.wasm", "--port", "8080"]
    assert doc["env_names"] == ["API_TOKEN", "MODE"]
    assert "s3cr3t" not in result.output
    assert doc["fd_environment"] == {"FD_COUNT": "4", "FD_NAMES": "stdin:stdout:api:db"}
    assert doc["files"][2] == {
        "fd": 2,
        "kind": "listen",
        "name": "api",
        "prot": "tls",
        "addr": "::",
        "port": 8443,
    }
    assert doc["files_default"] is False
    assert doc["limits"] == {"memory_mib": 64, "timeout_s": 2.5}
    assert doc["dirs"] == [
        {"guest": "/data", "host": str(valid_config.parent / "data"), "writable": False}
    ]


def test_check_invalid_raises_located_error(invalid_config: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "check", str(invalid_config)])
    error = result.exception
    assert isinstance(error, ConfigFileError)
    assert (error.line, error.field) == (6, "files[1].prot")


def test_check_invalid_through_main(
    invalid_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "check", str(invalid_config)])
    assert info.value.code == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f'donjon: error: {invalid_config}:6: files[1].prot: "udp" is not allowed; '
        'use "tls" or "tcp"\n'
    )


def test_check_invalid_json_through_main(
    invalid_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "check", "--json", str(invalid_config)])
    assert info.value.code == 3
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["valid"] is False
    assert (doc["file"], doc["line"], doc["field"]) == (str(invalid_config), 6, "files[1].prot")
    assert doc["error"] == '"udp" is not allowed; use "tls" or "tcp"'
    assert captured.err.startswith("donjon: error: ")


def test_check_missing_file_through_main(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "check", str(tmp_path / "nope.toml")])
    assert info.value.code == 3
    assert "does not exist; write one with `donjon config init`" in capsys.readouterr().err


def test_check_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "check"])
    assert info.value.code == 2
    assert "Missing argument" in capsys.readouterr().err


def test_subprocess_smoke(valid_config: Path, invalid_config: Path) -> None:
    donjon = Path(sys.executable).parent / "donjon"
    ok = subprocess.run(
        [str(donjon), "config", "check", str(valid_config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "FD_NAMES=stdin:stdout:api:db" in ok.stdout
    bad = subprocess.run(
        [str(donjon), "config", "check", str(invalid_config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 3
    assert bad.stderr.strip().endswith('files[1].prot: "udp" is not allowed; use "tls" or "tcp"')
    assert "Traceback" not in bad.stderr
