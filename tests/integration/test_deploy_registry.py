"""``donjon deploy REGISTRY/REPO:TAG``: a real OCI registry, a real keep manager, real Keeps.

The registry is the CNCF distribution registry (Debian's ``docker-registry``) on 127.0.0.1, with
htpasswd auth for the private repository and a hostile proxy (a real HTTP server) in front of it
for the attacks. The client resolves the tag to a digest; the verified Keep fetches the package
by that digest itself, with the client's credentials sent only over the attested channel, and
checks every digest and the required publisher signature before it runs anything.

Every test runs the package in a real nil Keep (RA-TLS) and checks what came out, or the exact
refusal; the private-repository tests also search everything the host could see (the relay's
bytes, the keep manager's log records, every file of its state directory, the launch
parameters) for the credentials.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from donjon.client.deploy import (
    RegistryWorkload,
    resolve_registry_workload,
)
from donjon.crypto.publisher import PublisherKey, generate_publisher_key_pem
from donjon.host.auth import Principal
from donjon.registry import (
    BuiltPackage,
    Credentials,
    Reference,
    RegistryAuthError,
    RegistryClient,
    build_package,
    push_package,
    sign_package,
)
from donjon.wire.cbor import decode
from tests.integration.deploy_support import (
    EXAMPLES,
    ManagerHandle,
    RelayRecorder,
    assert_one_error_line,
    deploy_captured,
    deploy_options,
    run_donjon,
)
from tests.integration.registry_support import (
    Exchange,
    HostileProxy,
    RegistryServer,
    RegistryUnavailableError,
    htpasswd_auth,
    start_registry,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("dev_key")]

USER = "deployer"
HELLO = b"Hello, world!\n"


# -- fixtures ----------------------------------------------------------------------------------


def _start(root: Path, auth: str = "") -> RegistryServer:
    try:
        return start_registry(root, auth=auth)
    except RegistryUnavailableError as e:
        pytest.fail(str(e))  # never skip: scripts/ensure-registry installs it


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = _start(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def password() -> str:
    # Unique, so a search for it in what the host saw cannot match anything else.
    return "pw-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def private_registry(
    tmp_path_factory: pytest.TempPathFactory, password: str
) -> Iterator[RegistryServer]:
    root = tmp_path_factory.mktemp("private-registry")
    server = _start(root, htpasswd_auth(root, {USER: password}))
    yield server
    server.stop()


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[HostileProxy]:
    p = HostileProxy(upstream_port=registry.port).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def key() -> PublisherKey:
    return PublisherKey.from_pem(generate_publisher_key_pem(), source="publisher key")


@pytest.fixture(scope="module")
def other_key() -> PublisherKey:
    return PublisherKey.from_pem(generate_publisher_key_pem(), source="another key")


# -- helpers -----------------------------------------------------------------------------------


def _push(
    address: str,
    repo: str,
    tag: str,
    module: str = "hello.wasm",
    config: bytes = b"",
    credentials: Credentials | None = None,
) -> tuple[Reference, BuiltPackage]:
    ref = Reference.parse(f"{address}/{repo}:{tag}")
    built = build_package((EXAMPLES / module).read_bytes(), config)
    with RegistryClient.for_reference(ref, credentials=credentials) as client:
        assert push_package(client, ref, built) == built.digest
    return ref, built


def _cli(host: ManagerHandle, reference: str, *extra: str) -> list[str]:
    return [
        *("deploy", reference, "--host", host.url, "--token-file", str(host.token_file)),
        "--insecure",
        *extra,
    ]


def _module_fetched(proxy: HostileProxy, built: BuiltPackage) -> bool:
    return any(str(built.manifest.module.digest) in path for _, path in proxy.seen)


# -- public packages ---------------------------------------------------------------------------


def test_public_package_by_tag_is_resolved_to_its_digest_and_runs(
    registry: RegistryServer, host: ManagerHandle
) -> None:
    ref, built = _push(
        registry.address, "apps/argsenv", "1.0", "argsenv.wasm", b'args = ["from-package"]\n'
    )
    workload = resolve_registry_workload(str(ref), args=["from-client"])
    assert workload.reference == f"{ref}@{built.digest}"  # the tag stays, as a label only
    assert (workload.username, workload.password) == (None, None)
    result, out, err = deploy_captured(workload, deploy_options(host, insecure=True))
    assert (result.exit_code, err, result.error) == (0, b"", None)
    assert out.decode().splitlines()[:4] == [
        "argc=3",
        "argv[0]=main.wasm",  # the package's module layer is main.wasm
        "argv[1]=from-package",
        "argv[2]=from-client",
    ]


def test_cli_deploys_a_public_package_by_tag(registry: RegistryServer, host: ManagerHandle) -> None:
    ref, built = _push(registry.address, "apps/hello", "latest")
    result = run_donjon(_cli(host, str(ref)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO.decode()
    pinned = f"{ref}@{built.digest}"
    assert f"donjon: {ref} resolved to {pinned}" in result.stderr
    assert f"it fetches {pinned}" in result.stderr


# -- private packages --------------------------------------------------------------------------


def test_private_package_runs_and_the_host_never_sees_the_credentials(
    private_registry: RegistryServer,
    host: ManagerHandle,
    recorder: RelayRecorder,
    password: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = Credentials(USER, password)
    ref, built = _push(private_registry.address, "team/hello", "1", credentials=good)
    with pytest.raises(RegistryAuthError):  # it really is private
        resolve_registry_workload(str(ref))
    env = {"DONJON_REGISTRY_USER": USER, "DONJON_REGISTRY_PASSWORD": password}
    result = run_donjon(_cli(host, str(ref)), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO.decode()
    # What the host saw: the relay's bytes, its log records, every file it keeps, the launch
    # parameters. Neither the password nor the Basic header made of it is in any of them.
    secrets_ = [password.encode(), base64.b64encode(f"{USER}:{password}".encode())]
    carried = recorder.carried()
    assert len(carried) > 2000  # a whole session went through the relay
    host_files = [p for p in host.state_dir.rglob("*") if p.is_file()]
    [keep_dir] = [p for p in (host.state_dir / "keeps").iterdir() if p.is_dir()]
    assert {p.name for p in keep_dir.iterdir()} >= {"launch.cbor", "loader.log", "record.cbor"}
    for secret in secrets_:
        assert secret not in carried
        assert secret.decode() not in caplog.text
        for path in host_files:
            assert secret not in path.read_bytes(), path
    launch = decode((keep_dir / "launch.cbor").read_bytes())
    assert set(launch) == {"keep_id", "backend", "nonce", "steward", "steward_ca_pem", "limits"}
    # The Keep did fetch it, with the credentials it got over the attested channel; its log
    # (which the host reads) does not say which package it was.
    keep_log = (keep_dir / "loader.log").read_text()
    assert "fetched the package (publisher: none required)" in keep_log
    assert str(built.digest) not in keep_log and "team/hello" not in keep_log


def test_wrong_credentials_are_a_clear_error(
    private_registry: RegistryServer, host: ManagerHandle, password: str
) -> None:
    good = Credentials(USER, password)
    ref, built = _push(private_registry.address, "team/wrong", "1", credentials=good)
    # On the command line: the client's own resolve fails; no Keep is asked for.
    wrong_env = {"DONJON_REGISTRY_USER": USER, "DONJON_REGISTRY_PASSWORD": "not-it"}
    cli = run_donjon(_cli(host, str(ref)), env=wrong_env)
    assert (cli.returncode, cli.stdout) == (1, "")
    line = assert_one_error_line(cli, "refused the credentials")
    assert "not-it" not in cli.stderr and password not in line
    assert host.manager.list_keeps(_admin()) == []
    # Pinned by digest with wrong credentials: the Keep's own fetch is refused, nothing runs.
    workload = RegistryWorkload(
        reference=f"{private_registry.address}/team/wrong@{built.digest}",
        username=USER,
        password="not-it",
    )
    result, out, _ = deploy_captured(workload, deploy_options(host, insecure=True))
    assert (result.exit_code, out, result.error) == (125, b"", "RegistryAuthError")
    assert result.message is not None and "refused the credentials" in result.message
    assert "not-it" not in result.message


# -- publisher signatures ----------------------------------------------------------------------


def test_required_publisher_key(
    registry: RegistryServer,
    proxy: HostileProxy,
    host: ManagerHandle,
    key: PublisherKey,
    other_key: PublisherKey,
) -> None:
    ref, built = _push(proxy.address, "apps/signed", "1")
    with RegistryClient.for_reference(ref) as client:
        sign_package(client, ref, key)
    right = resolve_registry_workload(str(ref), publisher_keys=[key.public.pem().encode()])
    result, out, _ = deploy_captured(right, deploy_options(host, insecure=True))
    assert (result.exit_code, out) == (0, HELLO)
    # Another key: refused before the module is even downloaded, so nothing runs.
    proxy.seen.clear()
    wrong = resolve_registry_workload(str(ref), publisher_keys=[other_key.public.pem().encode()])
    result, out, _ = deploy_captured(wrong, deploy_options(host, insecure=True))
    assert (result.exit_code, out, result.error) == (125, b"", "UnsignedPackageError")
    assert result.message is not None and "signed only by other keys" in result.message
    assert other_key.public.fingerprint in result.message
    assert not _module_fetched(proxy, built)


def test_unsigned_package_with_a_required_key_is_refused(
    registry: RegistryServer, proxy: HostileProxy, host: ManagerHandle, key: PublisherKey
) -> None:
    ref, built = _push(proxy.address, "apps/unsigned", "1")
    proxy.seen.clear()
    workload = resolve_registry_workload(str(ref), publisher_keys=[key.public.pem().encode()])
    result, out, _ = deploy_captured(workload, deploy_options(host, insecure=True))
    assert (result.exit_code, out, result.error) == (125, b"", "UnsignedPackageError")
    assert result.message is not None and "has no signature" in result.message
    assert not _module_fetched(proxy, built)


def test_cli_publisher_key(
    registry: RegistryServer,
    host: ManagerHandle,
    key: PublisherKey,
    other_key: PublisherKey,
    tmp_path: Path,
) -> None:
    ref, _ = _push(registry.address, "apps/cli-signed", "1")
    with RegistryClient.for_reference(ref) as client:
        sign_package(client, ref, key)
    right, wrong = tmp_path / "right.pem", tmp_path / "wrong.pem"
    right.write_text(key.public.pem())
    wrong.write_text(other_key.public.pem())
    ok = run_donjon(_cli(host, str(ref), "--publisher-key", str(right)))
    assert (ok.returncode, ok.stdout) == (0, HELLO.decode()), ok.stderr
    refused = run_donjon(_cli(host, str(ref), "--publisher-key", str(wrong)))
    assert (refused.returncode, refused.stdout) == (125, "")
    assert_one_error_line(refused, "signed only by other keys")


# -- a moving tag, a lying registry ------------------------------------------------------------


def test_tag_moved_between_resolve_and_fetch_runs_the_resolved_digest(
    registry: RegistryServer, proxy: HostileProxy, host: ManagerHandle
) -> None:
    ref, first = _push(proxy.address, "apps/moving", "stable", "argsenv.wasm", b'args = ["v1"]\n')
    workload = resolve_registry_workload(str(ref))
    # The tag moves to another package after the client resolved it, before the Keep fetches.
    _, second = _push(proxy.address, "apps/moving", "stable", "argsenv.wasm", b'args = ["v2"]\n')
    assert second.digest != first.digest
    result, out, _ = deploy_captured(workload, deploy_options(host, insecure=True))
    assert result.exit_code == 0
    assert "argv[1]=v1" in out.decode().splitlines()
    # A registry that answers the pinned digest with the moved tag's manifest is caught.
    raw_second = second.manifest_bytes

    def answer_with_the_new_tag(ex: Exchange) -> None:
        if ex.method == "GET" and ex.path.endswith(f"/manifests/{first.digest}"):
            ex.body = raw_second

    proxy.rules.append(answer_with_the_new_tag)
    result, out, _ = deploy_captured(workload, deploy_options(host, insecure=True))
    assert (result.exit_code, out, result.error) == (125, b"", "DigestMismatchError")


def test_registry_serving_a_different_blob_is_refused(
    registry: RegistryServer, proxy: HostileProxy, host: ManagerHandle
) -> None:
    ref, built = _push(proxy.address, "apps/swapped", "1")
    workload = resolve_registry_workload(str(ref))
    module_digest = str(built.manifest.module.digest)
    trap = (EXAMPLES / "trap.wasm").read_bytes()

    def swap(ex: Exchange) -> None:
        if ex.method == "GET" and ex.path.endswith(module_digest):
            # Another valid module, padded or cut to the declared size: only the digest differs.
            ex.body = (trap + b"\0" * len(ex.body))[: len(ex.body)]

    proxy.rules.append(swap)
    result, out, _ = deploy_captured(workload, deploy_options(host, insecure=True))
    assert (result.exit_code, out, result.error) == (125, b"", "DigestMismatchError")
    assert result.message is not None and module_digest.removeprefix("sha256:") in result.message
    assert _module_fetched(proxy, built)


def _admin() -> Principal:
    return Principal("admin")
