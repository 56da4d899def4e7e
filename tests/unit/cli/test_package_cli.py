"""``donjon package`` offline: build, inspect a layout, keygen, and usage errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from donjon.cli.main import cli, main
from donjon.cli.package import registry_credentials
from donjon.keep.config import ConfigFileError
from donjon.registry.credentials import Credentials
from donjon.registry.errors import CredentialsError, ReferenceSyntaxError
from donjon.registry.layout import read_layout

MODULE = b"\0asm\x01\0\0\0"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    d = tmp_path / "app"
    d.mkdir()
    (d / "main.wasm").write_bytes(MODULE)
    (d / "Enarx.toml").write_text('args = ["--port", "8080"]\n')
    return d


def test_build_dir_prints_digest_and_writes_layout(app: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["package", "build", str(app)])
    assert result.exit_code == 0, result.output
    digest = result.output.strip()
    assert digest.startswith("sha256:") and len(digest) == 71
    out = tmp_path / "layout"
    result = CliRunner().invoke(
        cli, ["package", "build", str(app / "main.wasm"), "-o", str(out), "--tag", "v1", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["digest"] == digest  # Enarx.toml beside the module is picked up
    assert read_layout(out, tag="v1").config_toml == b'args = ["--port", "8080"]\n'
    result = CliRunner().invoke(cli, ["package", "inspect", str(out)])
    assert result.exit_code == 0 and digest in result.output


def test_build_without_config_uses_a_commented_default(tmp_path: Path) -> None:
    (tmp_path / "m.wasm").write_bytes(MODULE)
    out = tmp_path / "layout"
    result = CliRunner().invoke(cli, ["package", "build", str(tmp_path / "m.wasm"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert read_layout(out).config_toml.startswith(b"# No Enarx.toml was given")


def test_build_validates_the_config(app: Path) -> None:
    (app / "Enarx.toml").write_text('[[files]]\nkind = "connect"\nprot = "udp"\n')
    result = CliRunner().invoke(cli, ["package", "build", str(app)])
    assert isinstance(result.exception, ConfigFileError)
    with pytest.raises(SystemExit) as info:
        main(["package", "build", str(app)])
    assert info.value.code == 3


def test_build_refuses_a_non_wasm_module_and_bad_annotations(app: Path) -> None:
    (app / "main.wasm").write_bytes(b"#!/bin/sh\n")
    with pytest.raises(SystemExit) as info:
        main(["package", "build", str(app)])
    assert info.value.code == 1
    (app / "main.wasm").write_bytes(MODULE)
    with pytest.raises(SystemExit) as info:
        main(["package", "build", str(app), "--annotation", "novalue"])
    assert info.value.code == 2


def test_bad_reference_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["package", "pull", "hello:1"])
    assert isinstance(result.exception, ReferenceSyntaxError)
    assert result.exception.exit_code == 2


def test_keygen_writes_a_private_and_a_public_key(tmp_path: Path) -> None:
    key = tmp_path / "publisher.key"
    result = CliRunner().invoke(cli, ["package", "keygen", "--out", str(key), "--curve", "P-384"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("sha256:")
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "publisher.key.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = CliRunner().invoke(cli, ["package", "keygen", "--out", str(key)])
    assert again.exit_code != 0  # never overwrites a key


def test_keygen_encrypted_from_the_environment(tmp_path: Path) -> None:
    key = tmp_path / "k"
    result = CliRunner().invoke(
        cli,
        ["package", "keygen", "--out", str(key), "--encrypt"],
        env={"DONJON_PUBLISHER_KEY_PASSWORD": "correct horse"},
    )
    assert result.exit_code == 0, result.output
    assert b"ENCRYPTED" in key.read_bytes()


def test_credentials_sources(tmp_path: Path) -> None:
    home = tmp_path
    env = {"HOME": str(home), "DOCKER_CONFIG": str(home / "docker")}
    assert registry_credentials("r:1", env) is None
    (home / "docker").mkdir()
    (home / "docker" / "config.json").write_text(
        json.dumps({"auths": {"r:1": {"username": "d", "password": "dp"}}})
    )
    assert registry_credentials("r:1", env) == Credentials("d", "dp")
    toml = home / ".config" / "donjon" / "registries.toml"
    toml.parent.mkdir(parents=True)
    toml.write_text('[registries."r:1"]\nusername = "t"\npassword = "tp"\n')
    os.chmod(toml, 0o600)
    assert registry_credentials("r:1", env) == Credentials("t", "tp")  # donjon's file first
    assert registry_credentials(
        "r:1", {**env, "DONJON_REGISTRY_USER": "e", "DONJON_REGISTRY_PASSWORD": "ep"}
    ) == Credentials("e", "ep")
    explicit = tmp_path / "auth.json"
    explicit.write_text(json.dumps({"auths": {"r:1": {"username": "x", "password": "xp"}}}))
    assert registry_credentials("r:1", {**env, "DONJON_REGISTRY_AUTH_FILE": str(explicit)}) == (
        Credentials("x", "xp")
    )
    with pytest.raises(CredentialsError, match="no such file"):
        registry_credentials("r:1", {**env, "DONJON_REGISTRY_AUTH_FILE": str(tmp_path / "nope")})
