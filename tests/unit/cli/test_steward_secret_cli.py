"""``donjon steward secret set|list|rm``: CliRunner, main(), and subprocesses (a pipe and a tty)."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from donjon.cli.main import cli, main
from donjon.errors import UsageError
from donjon.steward.secrets import MAX_SECRET_BYTES, SecretNameError, SecretValueError

VALUE = b"S3CRET-tr0ub4dor&3"
DONJON = Path(sys.executable).parent / "donjon"


def _invoke(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["steward", "secret", *args], input=input)


def _set(state: Path, name: str, value: bytes) -> Result:
    return _invoke("set", name, "--state-dir", str(state), input=value)


# -- set -----------------------------------------------------------------------------------------


def test_set_from_stdin_then_replace_from_a_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = _set(state, "db-password", VALUE)
    assert result.exit_code == 0, result.output
    assert result.output == f"stored secret db-password ({len(VALUE)} bytes) in {state}/secrets\n"
    assert (state / "secrets" / "db-password").read_bytes() == VALUE

    source = tmp_path / "value.bin"
    source.write_bytes(b"\x00\xffnew\n")
    result = _invoke("set", "db-password", "--state-dir", str(state), "--from-file", str(source))
    assert result.exit_code == 0, result.output
    assert result.output == f"replaced secret db-password (6 bytes) in {state}/secrets\n"
    assert (state / "secrets" / "db-password").read_bytes() == b"\x00\xffnew\n"  # raw, unstripped


def test_from_file_wins_over_stdin(tmp_path: Path) -> None:
    source = tmp_path / "value.bin"
    source.write_bytes(VALUE)
    result = _invoke(
        "set", "k", "--state-dir", str(tmp_path), "--from-file", str(source), input=b"ignored"
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "secrets" / "k").read_bytes() == VALUE


def test_the_value_is_never_echoed(tmp_path: Path) -> None:
    result = _set(tmp_path, "k", VALUE)
    assert VALUE.decode() not in result.output


def test_there_is_no_value_option(tmp_path: Path) -> None:
    result = _invoke("set", "k", "--state-dir", str(tmp_path), "--value", "x")
    assert result.exit_code == 2
    assert "No such option '--value'" in result.output
    help_text = " ".join(_invoke("set", "--help").output.split())  # unwrapped
    assert "no option to give the value on the command line" in help_text
    assert "arguments land in shell history and are visible to every user in `ps`" in help_text


def test_an_empty_value_is_refused(tmp_path: Path) -> None:
    result = _set(tmp_path, "k", b"")
    assert isinstance(result.exception, SecretValueError)
    assert result.exception.exit_code == 2
    assert "the value read from stdin is empty" in result.exception.diagnostics()
    assert not (tmp_path / "secrets").exists()


def test_an_oversized_value_is_refused_after_a_bounded_read(tmp_path: Path) -> None:
    result = _invoke("set", "k", "--state-dir", str(tmp_path), "--from-file", "/dev/zero")
    assert isinstance(result.exception, SecretValueError)
    assert "/dev/zero is larger than the 65536-byte limit" in result.exception.diagnostics()
    result = _set(tmp_path, "k", b"x" * (MAX_SECRET_BYTES + 1))
    assert isinstance(result.exception, SecretValueError)
    result = _set(tmp_path, "k", b"x" * MAX_SECRET_BYTES)
    assert result.exit_code == 0, result.output


def test_a_bad_name_is_refused_before_the_value_is_read(tmp_path: Path) -> None:
    for name in ("../x", ".hidden", "DB", "a" * 65):
        result = _set(tmp_path, name, VALUE)
        assert isinstance(result.exception, SecretNameError), name
        assert result.exception.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_a_missing_value_file(tmp_path: Path) -> None:
    result = _invoke("set", "k", "--state-dir", str(tmp_path), "--from-file", str(tmp_path / "no"))
    assert isinstance(result.exception, UsageError)
    assert f"cannot read the secret value from {tmp_path / 'no'}" in str(result.exception)


# -- list ----------------------------------------------------------------------------------------


def test_list_shows_names_sizes_and_times_never_values(tmp_path: Path) -> None:
    _set(tmp_path, "zeta", VALUE)
    _set(tmp_path, "alpha", b"1234")
    result = _invoke("list", "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "BYTES", "MODIFIED", "(UTC)"]
    assert lines[1].split()[:2] == ["alpha", "4"]
    assert lines[2].split()[:2] == ["zeta", str(len(VALUE))]
    assert lines[1].split()[2].endswith("+00:00")
    _assert_no_value(result.output)


def test_list_json(tmp_path: Path) -> None:
    _set(tmp_path, "zeta", VALUE)
    _set(tmp_path, "alpha", b"1234")
    result = _invoke("list", "--state-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["directory"] == str(tmp_path / "secrets")
    assert [(s["name"], s["bytes"]) for s in document["secrets"]] == [
        ("alpha", 4),
        ("zeta", len(VALUE)),
    ]
    assert all(set(s) == {"name", "bytes", "modified"} for s in document["secrets"])
    for s in document["secrets"]:
        assert s["modified"].endswith("+00:00")
    _assert_no_value(result.output)


def test_list_of_an_empty_store(tmp_path: Path) -> None:
    result = _invoke("list", "--state-dir", str(tmp_path))
    assert result.exit_code == 0
    assert result.output == f"no secrets in {tmp_path}/secrets\n"
    document = json.loads(_invoke("list", "--state-dir", str(tmp_path), "--json").output)
    assert document["secrets"] == []


def test_list_needs_an_existing_state_dir(tmp_path: Path) -> None:
    result = _invoke("list", "--state-dir", str(tmp_path / "typo"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


def _assert_no_value(output: str) -> None:
    assert VALUE.decode() not in output
    for digest in (hashlib.sha256(VALUE), hashlib.sha1(VALUE), hashlib.md5(VALUE)):  # noqa: S324
        assert digest.hexdigest()[:16] not in output
    assert VALUE.hex() not in output


# -- rm ------------------------------------------------------------------------------------------


def test_rm_then_rm_again(tmp_path: Path) -> None:
    _set(tmp_path, "k", VALUE)
    result = _invoke("rm", "k", "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.output == f"removed secret k from {tmp_path}/secrets\n"
    assert not (tmp_path / "secrets" / "k").exists()
    result = _invoke("rm", "k", "--state-dir", str(tmp_path))
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    message = result.exception.diagnostics()
    assert "no secret named 'k'" in message
    assert f"donjon steward secret list --state-dir {tmp_path}" in message


def test_rm_refuses_a_bad_name(tmp_path: Path) -> None:
    result = _invoke("rm", "../state", "--state-dir", str(tmp_path))
    assert isinstance(result.exception, SecretNameError)


# -- through main(): exit codes and one-line errors ----------------------------------------------


def test_exit_codes_through_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "v"
    source.write_bytes(VALUE)
    state = str(tmp_path / "state")
    with pytest.raises(SystemExit) as info:
        main(["steward", "secret", "set", "k", "--state-dir", state, "--from-file", str(source)])
    assert info.value.code == 0
    with pytest.raises(SystemExit) as info:
        main(["steward", "secret", "rm", "nope", "--state-dir", state])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("donjon: error: no secret named 'nope'")

    os.chmod(tmp_path / "state" / "secrets", 0o750)  # noqa: S103 - the unsafe mode under test
    with pytest.raises(SystemExit) as info:
        main(["steward", "secret", "list", "--state-dir", state])
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert f"run `chmod 700 {state}/secrets`" in err and "Traceback" not in err


# -- subprocesses: a pipe, and a terminal that must not be waited on -----------------------------


def test_subprocess_set_from_a_pipe_and_list(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    done = subprocess.run(
        [str(DONJON), "steward", "secret", "set", "api-token", "--state-dir", state],
        input=VALUE,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.decode() == f"stored secret api-token ({len(VALUE)} bytes) in {state}/secrets\n"
    )
    listed = subprocess.run(
        [str(DONJON), "steward", "secret", "list", "--state-dir", state],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "api-token" in listed.stdout
    _assert_no_value(listed.stdout)


def test_subprocess_refuses_a_terminal_stdin_instead_of_waiting(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [str(DONJON), "steward", "secret", "set", "k", "--state-dir", str(tmp_path)],
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,  # a hang would fail here, not block the suite
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 2, done.stderr
    assert "stdin, which is a terminal" in done.stderr
    assert f"secret set k --state-dir {tmp_path} < FILE" in done.stderr
    assert "--from-file FILE" in done.stderr
    assert not (tmp_path / "secrets").exists()


def test_generate_stores_random_base64_and_never_prints_it(tmp_path: Path) -> None:
    import base64

    state = tmp_path / "state"
    first = _invoke("generate", "data-key", "--state-dir", str(state))
    assert first.exit_code == 0, first.output
    value = (state / "secrets" / "data-key").read_bytes()
    assert len(base64.b64decode(value, validate=True)) == 32
    assert value.decode() not in first.output
    again = _invoke("generate", "data-key", "--state-dir", str(state))
    assert isinstance(again.exception, UsageError) and "--force" in str(again.exception)
    assert (state / "secrets" / "data-key").read_bytes() == value  # kept
    forced = _invoke("generate", "data-key", "--state-dir", str(state), "--bytes", "64", "--force")
    assert forced.exit_code == 0
    replaced = (state / "secrets" / "data-key").read_bytes()
    assert replaced != value and len(base64.b64decode(replaced)) == 64
    assert _invoke("generate", "x", "--state-dir", str(state), "--bytes", "8").exit_code == 2
