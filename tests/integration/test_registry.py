"""Workload packages against a real OCI registry (CNCF distribution 2.8, Debian's docker-registry).

A hostile proxy (a real HTTP server in front of the registry) serves what an attacker on the
registry or the relay could: other bytes, too many bytes, missing signatures. Each must be
refused with a donjon error and leave nothing in any cache or output directory.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from donjon.cli.main import cli
from donjon.crypto.publisher import PublisherKey, generate_publisher_key_pem
from donjon.errors import Error, NotFoundError, SignatureError
from donjon.registry.cache import BlobCache
from donjon.registry.client import RegistryClient
from donjon.registry.credentials import Credentials
from donjon.registry.errors import (
    DigestMismatchError,
    PackageFormatError,
    ReferenceSyntaxError,
    RegistryAuthError,
    RegistryResponseError,
    SizeLimitError,
    UnsignedPackageError,
)
from donjon.registry.fetch import FetchLimits, fetch_package
from donjon.registry.oci import MEDIA_TYPE_IMAGE_INDEX, Digest
from donjon.registry.package import BuiltPackage, build_package
from donjon.registry.reference import Reference
from donjon.registry.signing import (
    attach_signature,
    build_signature_artifact,
    create_signature,
    find_signatures,
    sign_package,
    verify_package_signature,
)
from donjon.registry.transfer import push_package, resolve_package
from tests.integration.registry_support import (
    Exchange,
    HostileProxy,
    RegistryServer,
    RegistryUnavailableError,
    TokenServer,
    env_without_donjon,
    htpasswd_auth,
    start_registry,
)

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "correct horse battery staple"


def _module(tag: bytes, size: int = 0) -> bytes:
    """A minimal Wasm module: header plus one custom section that makes it unique."""
    payload = b"\x04test" + tag + os.urandom(size)
    return b"\0asm\x01\0\0\0" + b"\x00" + _leb(len(payload)) + payload


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _start(tmp: Path, auth: str = "") -> RegistryServer:
    try:
        return start_registry(tmp, auth=auth)
    except RegistryUnavailableError as e:
        # Fail, never skip: CI is root on Debian and scripts/ensure-registry installs it.
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = _start(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    root = tmp_path_factory.mktemp("private-registry")
    server = _start(root, htpasswd_auth(root, {USER: PASSWORD}))
    yield server
    server.stop()


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[HostileProxy]:
    p = HostileProxy(upstream_port=registry.port).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def key() -> PublisherKey:
    return PublisherKey.from_pem(generate_publisher_key_pem(), source="test key")


@pytest.fixture(scope="module")
def other_key() -> PublisherKey:
    return PublisherKey.from_pem(generate_publisher_key_pem("P-384"), source="other key")


def _push(
    address: str, repo: str, tag: str, module: bytes, config: bytes = b""
) -> tuple[Reference, BuiltPackage]:
    ref = Reference.parse(f"{address}/{repo}:{tag}")
    built = build_package(module, config or b'args = ["x"]\n')
    with RegistryClient.for_reference(ref) as client:
        digest = push_package(client, ref, built)
    assert digest == built.digest
    return ref, built


def _via(proxy: HostileProxy, ref: Reference) -> Reference:
    return Reference(proxy.address, ref.repository, ref.tag, ref.digest)


def _assert_cache_clean(cache: BlobCache, *digests: Digest) -> None:
    for d in digests:
        assert not cache.contains(d), f"{d} was cached although the fetch failed"
    assert cache.temporary_files() == []


# -- the happy path ----------------------------------------------------------------------------


def test_push_resolve_fetch_by_digest_and_cache(
    registry: RegistryServer, proxy: HostileProxy, tmp_path: Path
) -> None:
    module = _module(b"roundtrip", 3000)
    ref, built = _push(registry.address, "apps/roundtrip", "1.0", module)
    with RegistryClient.for_reference(ref) as client:
        manifest = resolve_package(client, ref)
    assert manifest.digest == built.digest
    cache = BlobCache(tmp_path / "cache")
    package = fetch_package(_via(proxy, ref.with_digest(manifest.digest)), cache=cache)
    assert package.module == module
    assert package.config_toml == b'args = ["x"]\n'
    assert package.manifest_digest == built.digest
    assert package.publisher is None
    assert cache.get(built.manifest.module.digest, max_bytes=10**6) == module
    # A second fetch takes the blobs from the cache: only the manifest goes over the wire.
    proxy.seen.clear()
    again = fetch_package(_via(proxy, ref.with_digest(built.digest)), cache=cache)
    assert again.module == module
    assert [p for _, p in proxy.seen if "/blobs/" in p] == []


def test_push_again_sends_no_blobs(registry: RegistryServer, proxy: HostileProxy) -> None:
    module = _module(b"again")
    ref, built = _push(registry.address, "apps/again", "1", module)
    proxy.seen.clear()
    via = _via(proxy, ref)
    with RegistryClient.for_reference(via) as client:
        push_package(client, via.with_tag("2"), built)
    methods = [m for m, _ in proxy.seen]
    assert "POST" not in methods and "PATCH" not in methods
    assert methods.count("PUT") == 1  # only the manifest, under the new tag


def test_chunked_upload(registry: RegistryServer, proxy: HostileProxy) -> None:
    module = _module(b"chunked", 300_000)
    ref = Reference.parse(f"{proxy.address}/apps/chunked:1")
    built = build_package(module, b"")
    with RegistryClient.for_reference(ref, monolithic_max_bytes=0, chunk_bytes=64 * 1024) as c:
        push_package(c, ref, built)
    assert sum(1 for m, _ in proxy.seen if m == "PATCH") >= 5
    assert fetch_package(ref.with_digest(built.digest)).module == module


# -- signatures --------------------------------------------------------------------------------


def test_sign_verify_through_the_referrers_tag_schema(
    registry: RegistryServer, key: PublisherKey, other_key: PublisherKey
) -> None:
    ref, built = _push(registry.address, "apps/signed", "1", _module(b"signed"))
    with RegistryClient.for_reference(ref) as client:
        # distribution 2.8 has no referrers API: the fallback tag must carry the signature.
        assert client.referrers(ref.repository, built.digest) is None
        first = sign_package(client, ref, key)
        second = sign_package(client, ref, other_key)
        index = client.get_manifest(ref.repository, built.digest.tag_form())
        assert index.media_type == MEDIA_TYPE_IMAGE_INDEX
        found = find_signatures(client, ref.repository, built.digest)
        assert {d.digest for d in found} == {first.digest, second.digest}
        for k in (key, other_key):
            verified = verify_package_signature(
                client, ref.repository, built.manifest.descriptor, [k.public]
            )
            assert verified.key == k.public
            assert verified.name == ref.name
        # ECDSA signatures are randomized: signing again adds an entry, and the index keeps all.
        third = sign_package(client, ref, key)
        assert {d.digest for d in find_signatures(client, ref.repository, built.digest)} == {
            first.digest,
            second.digest,
            third.digest,
        }
    package = fetch_package(ref.with_digest(built.digest), publisher_keys=[key.public])
    assert package.publisher == key.public.fingerprint


def test_missing_signature_is_refused_before_blobs_are_fetched(
    registry: RegistryServer, proxy: HostileProxy, key: PublisherKey, tmp_path: Path
) -> None:
    ref, built = _push(registry.address, "apps/unsigned", "1", _module(b"unsigned"))
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(UnsignedPackageError, match="has no signature"):
        fetch_package(
            _via(proxy, ref.with_digest(built.digest)), publisher_keys=[key.public], cache=cache
        )
    assert not any(str(built.manifest.module.digest) in p for _, p in proxy.seen)
    _assert_cache_clean(cache, built.manifest.module.digest, built.manifest.config.digest)


def test_signature_hidden_by_the_registry_is_a_missing_signature(
    registry: RegistryServer, proxy: HostileProxy, key: PublisherKey
) -> None:
    ref, built = _push(registry.address, "apps/hidden", "1", _module(b"hidden"))
    with RegistryClient.for_reference(ref) as client:
        sign_package(client, ref, key)

    def hide(ex: Exchange) -> None:
        if ex.path.endswith(built.digest.tag_form()):
            ex.status, ex.body = 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'

    proxy.rules.append(hide)
    with pytest.raises(UnsignedPackageError):
        fetch_package(_via(proxy, ref.with_digest(built.digest)), publisher_keys=[key.public])


def test_signature_by_another_key_is_refused(
    registry: RegistryServer, key: PublisherKey, other_key: PublisherKey
) -> None:
    ref, built = _push(registry.address, "apps/otherkey", "1", _module(b"otherkey"))
    with RegistryClient.for_reference(ref) as client:
        sign_package(client, ref, other_key)
    with pytest.raises(UnsignedPackageError, match="signed only by other keys") as info:
        fetch_package(ref.with_digest(built.digest), publisher_keys=[key.public])
    assert info.value.signers == (other_key.public.fingerprint,)
    assert key.public.fingerprint in info.value.message


def test_forged_signature_with_the_right_key_id_is_refused(
    registry: RegistryServer, key: PublisherKey
) -> None:
    ref, built = _push(registry.address, "apps/forged", "1", _module(b"forged"))
    subject = built.manifest.descriptor
    cose = bytearray(create_signature(key, subject, name=ref.name))
    cose[-1] ^= 0x01  # the last byte of the ECDSA signature
    artifact = build_signature_artifact(bytes(cose), subject, key=key.public)
    with RegistryClient.for_reference(ref) as client:
        attach_signature(client, ref.repository, artifact)
    with pytest.raises(SignatureError, match="does not verify") as info:
        fetch_package(ref.with_digest(built.digest), publisher_keys=[key.public])
    assert not isinstance(info.value, UnsignedPackageError)


def test_signature_replayed_onto_another_package_is_refused(
    registry: RegistryServer, key: PublisherKey
) -> None:
    ref_a, built_a = _push(registry.address, "apps/replay", "a", _module(b"replay-a"))
    ref_b, built_b = _push(registry.address, "apps/replay", "b", _module(b"replay-b"))
    # A genuine signature of A, attached by an attacker with B as its subject.
    cose = create_signature(key, built_a.manifest.descriptor, name=ref_a.name)
    artifact = build_signature_artifact(cose, built_b.manifest.descriptor, key=key.public)
    with RegistryClient.for_reference(ref_b) as client:
        attach_signature(client, ref_b.repository, artifact)
    with pytest.raises(SignatureError, match="signs another package"):
        fetch_package(ref_b.with_digest(built_b.digest), publisher_keys=[key.public])


# -- hostile registry answers ------------------------------------------------------------------


def test_blob_with_other_bytes_is_refused_and_nothing_is_cached(
    registry: RegistryServer, proxy: HostileProxy, tmp_path: Path
) -> None:
    module = _module(b"swap", 50_000)
    ref, built = _push(registry.address, "apps/swap", "1", module)
    wanted = str(built.manifest.module.digest)

    def swap(ex: Exchange) -> None:
        if ex.method == "GET" and ex.path.endswith(wanted):
            ex.body = bytes(b ^ 0xFF for b in ex.body)  # same length, other bytes

    proxy.rules.append(swap)
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(DigestMismatchError) as info:
        fetch_package(_via(proxy, ref.with_digest(built.digest)), cache=cache)
    assert info.value.expected == wanted
    _assert_cache_clean(cache, built.manifest.module.digest)


def test_endless_blob_is_cut_off_at_its_declared_size(
    registry: RegistryServer, proxy: HostileProxy, tmp_path: Path
) -> None:
    ref, built = _push(registry.address, "apps/endless", "1", _module(b"endless", 10_000))
    wanted = str(built.manifest.module.digest)

    def endless(ex: Exchange) -> None:
        if ex.method == "GET" and ex.path.endswith(wanted):
            # No Content-Length: the only bound is the size the manifest declared.
            ex.headers = [(k, v) for k, v in ex.headers if k.lower() != "content-length"]
            ex.stream = iter(lambda: b"A" * 65536, b"")

    proxy.rules.append(endless)
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(SizeLimitError, match="sent more than"):
        fetch_package(_via(proxy, ref.with_digest(built.digest)), cache=cache)
    _assert_cache_clean(cache, built.manifest.module.digest)


def test_blob_announced_larger_than_declared_is_refused(
    registry: RegistryServer, proxy: HostileProxy
) -> None:
    ref, built = _push(registry.address, "apps/bigger", "1", _module(b"bigger"))
    wanted = str(built.manifest.module.digest)

    def bigger(ex: Exchange) -> None:
        if ex.method == "GET" and ex.path.endswith(wanted):
            ex.body += b"\0" * 4096

    proxy.rules.append(bigger)
    with pytest.raises(SizeLimitError, match="announces"):
        fetch_package(_via(proxy, ref.with_digest(built.digest)))


def test_truncated_blob_is_refused(registry: RegistryServer, proxy: HostileProxy) -> None:
    ref, built = _push(registry.address, "apps/short", "1", _module(b"short", 5000))
    wanted = str(built.manifest.module.digest)

    def short(ex: Exchange) -> None:
        if ex.method == "GET" and ex.path.endswith(wanted):
            ex.body = ex.body[:100]

    proxy.rules.append(short)
    with pytest.raises(RegistryResponseError, match="sent 100 of"):
        fetch_package(_via(proxy, ref.with_digest(built.digest)))


def test_oversized_module_is_refused_before_download(
    registry: RegistryServer, proxy: HostileProxy
) -> None:
    ref, built = _push(registry.address, "apps/large", "1", _module(b"large", 200_000))
    with pytest.raises(SizeLimitError, match="accepts at most 1000"):
        fetch_package(
            _via(proxy, ref.with_digest(built.digest)), limits=FetchLimits(max_module_bytes=1000)
        )
    assert not any("/blobs/" in p for _, p in proxy.seen)


@pytest.mark.parametrize("announce", [True, False])
def test_oversized_manifest_is_refused(
    registry: RegistryServer, proxy: HostileProxy, announce: bool
) -> None:
    ref, built = _push(registry.address, "apps/hugemanifest", "1", _module(b"hugemanifest"))

    def huge(ex: Exchange) -> None:
        if ex.method == "GET" and "/manifests/" in ex.path:
            ex.body = b"{" + b" " * (8 * 1024 * 1024) + b"}"
            if not announce:
                ex.stream, ex.body = iter([ex.body]), b""

    proxy.rules.append(huge)
    with pytest.raises(SizeLimitError):
        fetch_package(_via(proxy, ref.with_digest(built.digest)))


def test_tag_moved_after_resolve_cannot_change_what_is_fetched(
    registry: RegistryServer, proxy: HostileProxy
) -> None:
    module_1 = _module(b"moved-1")
    ref, built_1 = _push(registry.address, "apps/moved", "stable", module_1)
    with RegistryClient.for_reference(ref) as client:
        pinned = ref.with_digest(resolve_package(client, ref).digest)
    # The tag moves to another package between the client's resolve and the Keep's fetch.
    _, built_2 = _push(registry.address, "apps/moved", "stable", _module(b"moved-2"))
    assert built_2.digest != built_1.digest
    assert fetch_package(pinned).module == module_1
    # A Keep never fetches by tag.
    with pytest.raises(ReferenceSyntaxError, match="by digest only"):
        fetch_package(ref)
    # A registry that answers the pinned digest with the moved tag's manifest is caught.
    raw_2 = built_2.manifest_bytes

    def moved(ex: Exchange) -> None:
        if ex.method == "GET" and ex.path.endswith(str(built_1.digest)):
            ex.body = raw_2

    proxy.rules.append(moved)
    with pytest.raises(DigestMismatchError):
        fetch_package(_via(proxy, pinned))


def test_an_artifact_that_is_not_a_package_is_refused(
    registry: RegistryServer, key: PublisherKey
) -> None:
    ref, _ = _push(registry.address, "apps/notpkg", "1", _module(b"notpkg"))
    with RegistryClient.for_reference(ref) as client:
        signature = sign_package(client, ref, key)
    with pytest.raises(PackageFormatError, match="artifactType"):
        fetch_package(ref.with_digest(signature.digest))
    with pytest.raises(NotFoundError):
        fetch_package(ref.with_digest(Digest.of(b"nothing here")))


# -- private repositories ----------------------------------------------------------------------


def test_private_registry_needs_the_right_credentials(
    private_registry: RegistryServer, key: PublisherKey
) -> None:
    ref = Reference.parse(f"{private_registry.address}/team/app:1")
    built = build_package(_module(b"private"), b"")
    with RegistryClient.for_reference(ref) as anonymous:
        with pytest.raises(RegistryAuthError, match="needs credentials") as info:
            push_package(anonymous, ref, built)
    assert info.value.status_code == 401
    wrong = Credentials(USER, "not the password")
    with RegistryClient.for_reference(ref, credentials=wrong) as client:
        with pytest.raises(RegistryAuthError, match="refused the credentials") as info:
            push_package(client, ref, built)
    assert "not the password" not in info.value.message
    good = Credentials(USER, PASSWORD)
    with RegistryClient.for_reference(ref, credentials=good) as client:
        push_package(client, ref, built)
        sign_package(client, ref, key)
    package = fetch_package(
        ref.with_digest(built.digest), credentials=good, publisher_keys=[key.public]
    )
    assert package.manifest_digest == built.digest
    with pytest.raises(RegistryAuthError):
        fetch_package(ref.with_digest(built.digest))


def test_token_auth_with_a_real_token_server(tmp_path: Path, key: PublisherKey) -> None:
    tokens = TokenServer(users={USER: PASSWORD}).start()
    server = _start(tmp_path / "registry", tokens.auth_yaml(tmp_path))
    try:
        public = Reference.parse(f"{server.address}/public/hello:1")
        private = Reference.parse(f"{server.address}/team/hello:1")
        built = build_package(_module(b"token"), b"")
        good = Credentials(USER, PASSWORD)
        with RegistryClient.for_reference(public, credentials=good) as client:
            push_package(client, public, built)
            push_package(client, private, built)
            sign_package(client, public, key)
        # Anonymous pull of a public repository: a token with pull rights, no credentials sent.
        package = fetch_package(public.with_digest(built.digest), publisher_keys=[key.public])
        assert package.manifest_digest == built.digest
        anonymous = [r for r in tokens.requests if not r["sent_credentials"]]
        assert anonymous and all(r["service"] == tokens.service for r in anonymous)
        assert any(r["scope"] == "repository:public/hello:pull" for r in anonymous)
        with pytest.raises(RegistryAuthError):
            fetch_package(private.with_digest(built.digest))
        assert fetch_package(private.with_digest(built.digest), credentials=good).module
        with pytest.raises(RegistryAuthError, match="refused the credentials") as info:
            fetch_package(private.with_digest(built.digest), credentials=Credentials(USER, "wrong"))
        assert info.value.status_code == 401
        pushes = [r for r in tokens.requests if str(r["scope"]).endswith("pull,push")]
        assert pushes and all(r["user"] == USER for r in pushes)
    finally:
        server.stop()
        tokens.stop()


# -- the command line --------------------------------------------------------------------------


def _donjon(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI in-process; a donjon error becomes its exit code and one-line message."""
    result = CliRunner().invoke(cli, args, env=env)
    if isinstance(result.exception, Error):
        return result.exception.exit_code, result.output + result.exception.diagnostics()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _write_module_dir(directory: Path, tag: bytes) -> None:
    directory.mkdir()
    (directory / "main.wasm").write_bytes(_module(tag, 2000))
    (directory / "Enarx.toml").write_text('args = ["--cli"]\n')


def test_cli_against_a_private_registry_with_each_credential_source(
    private_registry: RegistryServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    base_env = {"HOME": str(home), "DOCKER_CONFIG": str(home / ".docker")}
    _write_module_dir(tmp_path / "app", b"cli-private")
    ref = f"{private_registry.address}/team/cli:1"
    code, output = _donjon(["package", "push", ref, "--from", str(tmp_path / "app")], base_env)
    assert code == 1 and "needs credentials" in output
    env_creds = {**base_env, "DONJON_REGISTRY_USER": USER, "DONJON_REGISTRY_PASSWORD": PASSWORD}
    code, output = _donjon(["package", "push", ref, "--from", str(tmp_path / "app")], env_creds)
    assert code == 0, output
    pushed = output.strip().splitlines()[-1]
    assert pushed.startswith(ref + "@sha256:")
    # The donjon credentials file.
    (home / ".config" / "donjon").mkdir(parents=True)
    toml = home / ".config" / "donjon" / "registries.toml"
    toml.write_text(
        f'[registries."{private_registry.address}"]\nusername = "{USER}"\npassword = "{PASSWORD}"\n'
    )
    toml.chmod(0o600)
    code, output = _donjon(["package", "inspect", ref, "--json"], base_env)
    assert code == 0, output
    assert json.loads(output)["reference"] == pushed
    toml.unlink()
    # Docker's config.json.
    (home / ".docker").mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {private_registry.address: {"auth": auth}}})
    )
    out = tmp_path / "pulled"
    code, output = _donjon(["package", "pull", ref, "-o", str(out)], base_env)
    assert code == 0, output
    assert (out / "oci-layout").is_file()
    assert PASSWORD not in output


def test_cli_sign_verify_and_failed_pull_leaves_nothing(
    registry: RegistryServer, proxy: HostileProxy, tmp_path: Path
) -> None:
    env = {"HOME": str(tmp_path)}
    _write_module_dir(tmp_path / "app", b"cli-sign")
    ref = f"{registry.address}/apps/cli-sign:1"
    assert _donjon(["package", "keygen", "--out", str(tmp_path / "k")], env)[0] == 0
    assert _donjon(["package", "keygen", "--out", str(tmp_path / "o")], env)[0] == 0
    code, output = _donjon(["package", "push", ref, "--from", str(tmp_path / "app")], env)
    assert code == 0, output
    code, output = _donjon(["package", "sign", ref, "--key", str(tmp_path / "k")], env)
    assert code == 0, output
    code, output = _donjon(
        ["package", "verify", ref, "--key", str(tmp_path / "k.pub"), "--json"], env
    )
    assert code == 0, output
    assert json.loads(output)["signed_name"] == f"{registry.address}/apps/cli-sign"
    code, output = _donjon(["package", "verify", ref, "--key", str(tmp_path / "o.pub")], env)
    assert code == 1
    assert "signed only by other keys" in output
    # A pull through a registry that swaps the module: exit 1, no output directory, no debris.
    proxy.rules.append(
        lambda ex: (
            setattr(ex, "body", ex.body[::-1])
            if ex.method == "GET" and "/blobs/" in ex.path and len(ex.body) > 100
            else None
        )
    )
    out = tmp_path / "out"
    via = f"{proxy.address}/apps/cli-sign:1"
    code, output = _donjon(["package", "pull", via, "-o", str(out)], env)
    assert code == 1
    assert "hash to" in output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_cli_subprocess_push_and_pull(registry: RegistryServer, tmp_path: Path) -> None:
    _write_module_dir(tmp_path / "app", b"subprocess")
    ref = f"{registry.address}/apps/subprocess:1"
    env = env_without_donjon()
    pushed = subprocess.run(
        [sys.executable, "-m", "donjon", "package", "push", ref, "--from", str(tmp_path / "app")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert pushed.returncode == 0, pushed.stderr
    pulled = subprocess.run(
        [
            sys.executable,
            "-m",
            "donjon",
            "package",
            "pull",
            pushed.stdout.strip(),
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == pushed.stdout.strip()
    assert (tmp_path / "out" / "index.json").is_file()
