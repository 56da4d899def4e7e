"""Secrets released by Steward to an attested Keep, end to end.

A real Steward with a secret store and a release rule, a real keep manager, loaders and keep
runtimes: the workload named by the rule receives its secret in its environment; the same
module with other arguments (another identity) is refused before it starts, with a message
that says which rule is missing; the secret never crosses the host's relay in the clear and
never reaches a log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from donjon.client.deploy import (
    DeployOptions,
    Workload,
    deploy,
    resolve_registry_workload,
)
from donjon.crypto.ca import certificate_der, load_certificate
from donjon.crypto.publisher import PublisherKey, generate_publisher_key_pem
from donjon.errors import KeepLaunchError, UsageError
from donjon.registry import RegistryClient, build_package, push_package, sign_package
from donjon.registry.reference import Reference
from donjon.steward.config import DEV_POLICY_TOML, StewardPolicy
from donjon.steward.secrets import SecretStore
from tests.integration.deploy_support import (
    EXAMPLES,
    ManagerHandle,
    RelayRecorder,
    child_env,
    deploy_captured,
    deploy_options,
    run_donjon,
    running_steward,
    start_service,
)
from tests.integration.registry_support import (
    RegistryServer,
    RegistryUnavailableError,
    start_registry,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("dev_key")]

CONFIG = '[env]\nLANGUAGE = "en"\n\n[[secrets]]\nname = "db-password"\nenv = "DB_PASSWORD"\n'


@pytest.fixture
def value() -> bytes:
    # Random, so that finding it anywhere (relay, logs) can only mean it leaked.
    return b"pw-" + secrets.token_hex(16).encode()


@pytest.fixture
def store(tmp_path: Path, value: bytes) -> SecretStore:
    store = SecretStore(tmp_path / "steward")
    store.set("db-password", value)
    return store


@pytest.fixture
def workload(tmp_path: Path) -> Workload:
    d = tmp_path / "workload"
    d.mkdir()
    (d / "argsenv.wasm").write_bytes((EXAMPLES / "argsenv.wasm").read_bytes())
    (d / "Enarx.toml").write_text(CONFIG)
    return Workload.load(d)


def _policy(*readers: str) -> StewardPolicy:
    rule = ", ".join(f'"{r}"' for r in readers)
    return StewardPolicy.parse(
        DEV_POLICY_TOML + f"\n[steward.secrets]\ndb-password = [{rule}]\n", source="policy.toml"
    )


def _left_behind(value: bytes) -> list[Path]:
    """Files holding *value* in any secret directory a keep process left (by its content: other
    tests' directories may come and go meanwhile)."""
    bases = {Path("/dev/shm"), Path(tempfile.gettempdir())}
    found = []
    for base in bases:
        for path in base.glob("donjon-secrets-*/*"):
            with contextlib.suppress(OSError):
                if path.read_bytes() == value:
                    found.append(path)
    return found


def _everything_logged(host: ManagerHandle, caplog: pytest.LogCaptureFixture) -> bytes:
    """The host's files (keep logs, statuses, launch parameters) and this process's log."""
    files = b"".join(p.read_bytes() for p in host.state_dir.rglob("*") if p.is_file())
    return files + caplog.text.encode()


def test_the_named_workload_receives_its_secret_and_nothing_leaks(
    host: ManagerHandle,
    recorder: RelayRecorder,
    store: SecretStore,
    workload: Workload,
    value: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="donjon")  # CLI tests in this worker may have raised it
    with running_steward(_policy(workload.identity), secrets=store) as steward:
        result, out, err = deploy_captured(workload, deploy_options(host, steward, insecure=True))
    assert (result.exit_code, err, result.error) == (0, b"", None)
    assert out.decode().splitlines()[-3:] == [
        "env FD_NAMES=stdin:stdout:stderr",
        "env LANGUAGE=en",
        f"env DB_PASSWORD={value.decode()}",  # after [env], in the config's order
    ]
    assert recorder.carried(), "the relay carried the session"
    assert value not in recorder.carried()
    assert value not in _everything_logged(host, caplog)
    assert f"released 1 secret(s) db-password to workload {workload.identity}" in caplog.text


def test_another_identity_is_refused_before_the_workload_starts(
    host: ManagerHandle, store: SecretStore, workload: Workload, value: bytes
) -> None:
    other = Workload(
        module=workload.module, config=workload.config, name=workload.name, args=("--dump",)
    )
    assert other.identity != workload.identity  # the arguments are part of the identity
    with running_steward(_policy(workload.identity), secrets=store) as steward:
        result, out, err = deploy_captured(other, deploy_options(host, steward, insecure=True))
    assert result.exit_code == 125
    assert out == b""  # the workload never ran
    assert result.message is not None
    assert "secret 'db-password' is not released to workload " + other.identity in result.message
    assert '[steward.secrets] db-password = ["' + other.identity + '"]' in result.message
    assert value.decode() not in result.message + err.decode()


def test_an_unstored_secret_is_refused_like_an_unnamed_one(
    host: ManagerHandle, tmp_path: Path, workload: Workload
) -> None:
    empty = SecretStore(tmp_path / "empty")
    with running_steward(_policy(workload.identity), secrets=empty) as steward:
        result, out, _ = deploy_captured(workload, deploy_options(host, steward, insecure=True))
    assert (result.exit_code, out) == (125, b"")
    assert result.message is not None and "is not released to workload" in result.message


def test_secrets_need_a_steward(host: ManagerHandle, workload: Workload) -> None:
    options = DeployOptions(host=host.url, token=host.token, insecure=True)
    with pytest.raises(UsageError, match=r"asks Steward for secrets \(db-password\)"):
        deploy(workload, options, stdout=io.BytesIO(), stderr=io.BytesIO())


def test_donjon_run_explains_where_secrets_come_from(workload: Workload, tmp_path: Path) -> None:
    config = tmp_path / "workload" / "Enarx.toml"
    result = run_donjon(
        ["run", "--backend", "nil", "--wasmcfgfile", str(config), str(EXAMPLES / "argsenv.wasm")]
    )
    assert result.returncode == 3
    assert "releases only to an attested Keep" in result.stderr
    assert "donjon deploy --steward URL --ca FILE" in result.stderr
    assert "donjon run --secret NAME=FILE" in result.stderr


def test_donjon_run_takes_local_values_and_leaves_no_secret_files(
    workload: Workload, tmp_path: Path
) -> None:
    value = tmp_path / "pw"
    value.write_bytes(b"local-" + secrets.token_hex(8).encode())
    config = tmp_path / "workload" / "Enarx.toml"
    config.write_text(CONFIG + '[[secrets]]\nname = "tls-key"\nfile = "tls.key"\n[limits]\n'
                      "timeout_s = 5.0\n")  # fmt: skip
    key = tmp_path / "key"
    key.write_bytes(bytes(range(256)) + secrets.token_bytes(16))
    run = ["run", "--backend", "nil", "--wasmcfgfile", str(config)]
    given = ["--secret", f"db-password={value}", "--secret", f"tls-key={key}"]
    result = run_donjon([*run, *given, str(EXAMPLES / "argsenv.wasm")])
    assert result.returncode == 0, result.stderr
    assert f"env DB_PASSWORD={value.read_text()}" in result.stdout.splitlines()
    assert "donjon: secret db-password from" in result.stderr
    assert "no Steward released it" in result.stderr
    # The file secret, through a workload that reads files (exit code 0, exact bytes).
    reader = subprocess.run(
        [sys.executable, "-m", "donjon", *run, *given, str(EXAMPLES / "readfile.wasm"),
         "/run/secrets/tls.key"],
        capture_output=True, timeout=120, check=False, env=child_env(),
    )  # fmt: skip
    assert (reader.returncode, reader.stdout) == (0, key.read_bytes()), reader.stderr
    assert _left_behind(key.read_bytes()) == []
    wrong = run_donjon([*run, "--secret", f"api-token={value}", str(EXAMPLES / "argsenv.wasm")])
    assert (
        wrong.returncode == 2 and "the config has no [[secrets]] entry 'api-token'" in wrong.stderr
    )
    kvm = run_donjon(["run", "--backend", "kvm", *given, str(EXAMPLES / "argsenv.wasm")])
    assert kvm.returncode == 2 and "--secret is for the nil backend" in kvm.stderr


def test_cli_workload_id_matches_what_the_keep_names(workload: Workload, tmp_path: Path) -> None:
    workload_dir = tmp_path / "workload"
    result = run_donjon(["workload", "id", str(workload_dir)])
    assert (result.returncode, result.stdout.strip()) == (0, workload.identity)
    moved = run_donjon(["workload", "id", str(workload_dir), "--", "--dump"])
    assert moved.stdout.strip() != workload.identity


def test_cli_deploy_with_a_secret(
    host: ManagerHandle, store: SecretStore, workload: Workload, value: bytes, tmp_path: Path
) -> None:
    with running_steward(_policy(workload.identity), secrets=store) as steward:
        ca = steward.write_ca(tmp_path / "ca.crt")
        token = tmp_path / "token"
        token.write_text(host.token)
        result = run_donjon(
            [
                "deploy",
                str(tmp_path / "workload"),
                *("--host", host.url, "--token-file", str(token)),
                *("--steward", steward.url, "--ca", str(ca), "--insecure"),
            ]
        )
    assert result.returncode == 0, result.stderr
    assert f"env DB_PASSWORD={value.decode()}" in result.stdout.splitlines()
    assert f"asks Steward for db-password as workload {workload.identity}" in result.stderr
    assert value.decode() not in result.stderr


def test_a_file_secret_is_a_read_only_file_gone_when_the_workload_ends(
    host: ManagerHandle, recorder: RelayRecorder, tmp_path: Path
) -> None:
    key = bytes(range(256)) + secrets.token_bytes(32)  # binary: no environment variable could
    store = SecretStore(tmp_path / "steward")
    store.set("tls-key", key)
    d = tmp_path / "reader"
    d.mkdir()
    (d / "readfile.wasm").write_bytes((EXAMPLES / "readfile.wasm").read_bytes())
    (d / "Enarx.toml").write_text('[[secrets]]\nname = "tls-key"\nfile = "tls.key"\n')
    reader = Workload.load(d, args=["/run/secrets/tls.key"])
    writer = Workload.load(d, args=["-w", "/run/secrets/tls.key", "overwritten"])
    policy = StewardPolicy.parse(
        DEV_POLICY_TOML
        + f'\n[steward.secrets]\ntls-key = ["{reader.identity}", "{writer.identity}"]\n',
        source="policy.toml",
    )
    with running_steward(policy, secrets=store) as steward:
        result, out, err = deploy_captured(reader, deploy_options(host, steward, insecure=True))
        assert (result.exit_code, out, err) == (0, key, b"")
        result, out, err = deploy_captured(writer, deploy_options(host, steward, insecure=True))
    assert result.exit_code == 1  # read-only: the workload cannot change its secret
    assert b"readfile: /run/secrets/tls.key:" in err
    assert key not in recorder.carried()
    # The directory the Keep wrote the files to is gone with the workload.
    assert _left_behind(key) == []


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    try:
        server = start_registry(tmp_path_factory.mktemp("registry"))
    except RegistryUnavailableError as e:
        pytest.fail(str(e))  # never skip: scripts/ensure-registry installs it
    yield server
    server.stop()


def test_a_registry_package_names_the_same_identity_here_and_in_the_keep(
    registry: RegistryServer, host: ManagerHandle, store: SecretStore, value: bytes
) -> None:
    ref = Reference.parse(f"{registry.address}/apps/argsenv:1.0")
    built = build_package((EXAMPLES / "argsenv.wasm").read_bytes(), CONFIG.encode())
    with RegistryClient.for_reference(ref) as client:
        push_package(client, ref, built)
    printed = run_donjon(["workload", "id", str(ref)])
    assert printed.returncode == 0, printed.stderr
    identity = printed.stdout.strip()
    assert f"resolved to {ref}@{built.digest}" in printed.stderr
    workload = resolve_registry_workload(str(ref))
    with running_steward(_policy(identity), secrets=store) as steward:
        options = DeployOptions(
            host=host.url,
            token=host.token,
            steward=steward.url,
            steward_ca=steward.ca,
            insecure=True,
        )
        out, err = io.BytesIO(), io.BytesIO()
        result = deploy(workload, options, stdout=out, stderr=err)
    assert (result.exit_code, err.getvalue(), result.error) == (0, b"", None)
    lines = out.getvalue().decode().splitlines()
    assert "argv[0]=main.wasm" in lines  # a package's module layer
    assert f"env DB_PASSWORD={value.decode()}" in lines


def test_a_workload_stopped_at_its_deadline_leaves_no_secret_files(tmp_path: Path) -> None:
    config = tmp_path / "Enarx.toml"
    config.write_text('[[secrets]]\nname = "k"\nfile = "k"\n[limits]\ntimeout_s = 0.5\n')
    key = tmp_path / "k"
    key.write_bytes(b"k-" + secrets.token_hex(8).encode())
    result = run_donjon(
        ["run", "--backend", "nil", "--wasmcfgfile", str(config), "--secret", f"k={key}",
         str(EXAMPLES / "spin.wasm")]
    )  # fmt: skip
    assert result.returncode == 137 and "deadline of 0.5 s reached" in result.stderr
    assert _left_behind(key.read_bytes()) == []


def test_tenants_are_stewards_of_their_own(host: ManagerHandle, tmp_path: Path) -> None:
    # Two tenants in one `donjon steward serve`: acme accepts nil and releases its secret to one
    # workload; beta is production-only and has the same secret name with another value.
    tenants = tmp_path / "tenants"
    d = tmp_path / "workload"
    d.mkdir()
    (d / "argsenv.wasm").write_bytes((EXAMPLES / "argsenv.wasm").read_bytes())
    (d / "Enarx.toml").write_text(CONFIG)
    workload = Workload.load(d)
    for name, policy in (("acme", _policy(workload.identity)), ("beta", None)):
        (tenants / name).mkdir(parents=True)
        text = (
            DEV_POLICY_TOML.replace('name = "dev"', f'name = "{name}"')
            + f'\n[steward.secrets]\ndb-password = ["{workload.identity}"]\n'
            if policy is not None
            else f'name = "{name}"\n[steward.secrets]\ndb-password = ["{workload.identity}"]\n'
        )
        (tenants / name / "policy.toml").write_text(text)
        SecretStore(tenants / name).set("db-password", f"{name}-pw".encode())
    steward = start_service(
        ["steward", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "own"),
         "--policy", "production", "--tenants", str(tenants), "--workers", "2"],
        tmp_path / "steward.log",
    )  # fmt: skip
    try:
        cas = {
            name: load_certificate(httpx.get(f"{steward.url}/t/{name}/v1/ca").content)
            for name in ("acme", "beta")
        }
        own = load_certificate(httpx.get(f"{steward.url}/v1/ca").content)
        assert len({certificate_der(c) for c in (*cas.values(), own)}) == 3  # a CA each
        acme = DeployOptions(
            host=host.url,
            token=host.token,
            steward=f"{steward.url}/t/acme",
            steward_ca=cas["acme"],
            insecure=True,
        )
        out = io.BytesIO()
        result = deploy(workload, acme, stdout=out, stderr=io.BytesIO())
        assert result.exit_code == 0
        assert "env DB_PASSWORD=acme-pw" in out.getvalue().decode().splitlines()  # acme's own
        beta = dataclasses.replace(acme, steward=f"{steward.url}/t/beta", steward_ca=cas["beta"])
        with pytest.raises(KeepLaunchError, match="not allowed by policy 'beta'"):
            deploy(workload, beta, stdout=io.BytesIO(), stderr=io.BytesIO())  # beta: no nil
        missing = httpx.get(f"{steward.url}/t/gamma/v1/ca")
        assert missing.status_code == 404 and b"no tenant gamma" in missing.content
    finally:
        assert steward.terminate() == 0, steward.stderr()


def test_a_rule_may_name_a_publisher_instead_of_each_version(
    registry: RegistryServer, host: ManagerHandle, store: SecretStore, value: bytes
) -> None:
    # The owner trusts whatever a publisher signs (as SGX's MRSIGNER): no rule edit per version.
    key = PublisherKey.from_pem(generate_publisher_key_pem(), source="publisher key")
    publisher = f"donjon:publisher:{key.public.fingerprint}"
    ref = Reference.parse(f"{registry.address}/apps/signed:2.0")
    built = build_package((EXAMPLES / "argsenv.wasm").read_bytes(), CONFIG.encode())
    with RegistryClient.for_reference(ref) as client:
        push_package(client, ref, built)
        sign_package(client, ref, key)
    signed = resolve_registry_workload(str(ref), publisher_keys=[key.public.pem().encode()])
    unchecked = resolve_registry_workload(str(ref))  # the Keep checks no signature
    with running_steward(_policy(publisher), secrets=store) as steward:
        options = DeployOptions(
            host=host.url, token=host.token, steward=steward.url, steward_ca=steward.ca,
            insecure=True,
        )  # fmt: skip
        out = io.BytesIO()
        result = deploy(signed, options, stdout=out, stderr=io.BytesIO())
        assert result.exit_code == 0, result.message
        assert f"env DB_PASSWORD={value.decode()}" in out.getvalue().decode().splitlines()
        refused = deploy(unchecked, options, stdout=io.BytesIO(), stderr=io.BytesIO())
    assert refused.exit_code == 125
    assert refused.message is not None and "is not released to workload" in refused.message
