"""Large blobs read straight into memory (``DirectGet``), against a real registry and proxy.

A loopback registry over plain HTTP gets its large blobs (a MiB and more) read with one GET on a
connection of its own, the body going from the socket into its final buffer. These tests hold
that path to every rule of the httpx path: the declared size bounds the read, the digest is
checked, an answer other than 200 is handled by httpx (authentication, redirects), and nothing
reaches a cache from a failed fetch.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from donjon.errors import ConnectError, NotFoundError
from donjon.registry.cache import BlobCache
from donjon.registry.client import RegistryClient
from donjon.registry.credentials import Credentials
from donjon.registry.errors import DigestMismatchError, RegistryResponseError, SizeLimitError
from donjon.registry.fetch import FetchLimits, fetch_package
from donjon.registry.oci import Descriptor, Digest
from donjon.registry.package import MEDIA_TYPE_WASM, BuiltPackage, build_package
from donjon.registry.reference import Reference
from donjon.registry.transfer import push_package
from tests.integration.registry_support import (
    Exchange,
    HostileProxy,
    RegistryServer,
    RegistryUnavailableError,
    Rule,
    free_port,
    htpasswd_auth,
    start_registry,
)

pytestmark = pytest.mark.integration

SIZE = 3 * 1024 * 1024 + 17  # bytes: over the direct-read threshold, not a multiple of a piece
LIMITS = FetchLimits(max_module_bytes=8 * 1024 * 1024)
USER, PASSWORD = "bob", "tr0ub4dor&3"


def _start(root: Path, auth: str = "") -> RegistryServer:
    try:
        return start_registry(root, auth=auth)
    except RegistryUnavailableError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = _start(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pushed(registry: RegistryServer) -> tuple[Reference, BuiltPackage, bytes]:
    module = b"\0asm\x01\0\0\0" + os.urandom(SIZE - 8)
    built = build_package(module, b'args = ["direct"]\n')
    ref = Reference.parse(f"{registry.address}/apps/direct:1")
    with RegistryClient.for_reference(ref) as client:
        push_package(client, ref, built)
    return ref.with_digest(built.digest), built, module


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[HostileProxy]:
    p = HostileProxy(upstream_port=registry.port).start()
    yield p
    p.stop()


def _via(proxy: HostileProxy, ref: Reference) -> Reference:
    return Reference(proxy.address, ref.repository, ref.tag, ref.digest)


def _module_rule(built: BuiltPackage, change: Callable[[Exchange], None]) -> Rule:
    wanted = str(built.manifest.module.digest)

    def rule(ex: Exchange) -> None:
        if ex.method == "GET" and ex.path.endswith(wanted):
            change(ex)

    return rule


class _Sink:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def write(self, piece: bytes, /) -> int:
        assert type(piece) is bytes  # the sink may keep what it gets
        self.pieces.append(piece)
        return len(piece)


def test_only_a_plain_http_loopback_client_without_transport_reads_direct(
    registry: RegistryServer,
) -> None:
    with RegistryClient(registry.address, plain_http=True) as client:
        assert client.reads_direct
    with RegistryClient(
        registry.address, plain_http=True, transport=httpx.HTTPTransport()
    ) as client:
        assert not client.reads_direct
    with RegistryClient(registry.address) as client:  # HTTPS
        assert not client.reads_direct
    with RegistryClient("registry.example:5000", plain_http=True) as client:
        assert not client.reads_direct


def test_read_blob_and_fetch_blob_return_the_exact_bytes(
    registry: RegistryServer, pushed: tuple[Reference, BuiltPackage, bytes]
) -> None:
    ref, built, module = pushed
    desc = built.manifest.module
    with RegistryClient(registry.address, plain_http=True) as client:
        data = client.read_blob(ref.repository, desc, max_bytes=SIZE)
        assert type(data) is bytes
        assert data == module
        sink = _Sink()
        client.fetch_blob(ref.repository, desc, sink, max_bytes=SIZE)
        assert b"".join(sink.pieces) == module
        assert max(len(p) for p in sink.pieces) <= 4 * 1024 * 1024
        with pytest.raises(SizeLimitError, match="the limit is"):
            client.read_blob(ref.repository, desc, max_bytes=SIZE - 1)


def test_fetch_package_reads_the_module_direct_and_caches_it(
    pushed: tuple[Reference, BuiltPackage, bytes], tmp_path: Path
) -> None:
    ref, built, module = pushed
    cache = BlobCache(tmp_path / "cache")
    package = fetch_package(ref, limits=LIMITS, cache=cache)
    assert package.module == module
    assert cache.path(built.manifest.module.digest).read_bytes() == module
    assert fetch_package(ref, limits=LIMITS, cache=cache).module == module  # from the cache


@pytest.mark.parametrize("read", ["read_blob", "fetch_blob"])
def test_other_bytes_are_refused(
    proxy: HostileProxy, pushed: tuple[Reference, BuiltPackage, bytes], read: str
) -> None:
    ref, built, _ = pushed
    proxy.rules.append(_module_rule(built, lambda ex: setattr(ex, "body", ex.body[::-1])))
    with (
        RegistryClient(proxy.address, plain_http=True) as client,
        pytest.raises(DigestMismatchError) as info,
    ):
        if read == "read_blob":
            client.read_blob(ref.repository, built.manifest.module, max_bytes=SIZE)
        else:
            client.fetch_blob(ref.repository, built.manifest.module, _Sink(), max_bytes=SIZE)
    assert info.value.expected == str(built.manifest.module.digest)


def test_other_bytes_leave_nothing_in_the_cache(
    proxy: HostileProxy, pushed: tuple[Reference, BuiltPackage, bytes], tmp_path: Path
) -> None:
    ref, built, _ = pushed

    def flip(ex: Exchange) -> None:
        ex.body = ex.body[:-1] + bytes([ex.body[-1] ^ 1])

    proxy.rules.append(_module_rule(built, flip))
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(DigestMismatchError):
        fetch_package(_via(proxy, ref), limits=LIMITS, cache=cache)
    assert not cache.contains(built.manifest.module.digest)
    assert cache.temporary_files() == []


@pytest.mark.parametrize("read", ["read_blob", "fetch_blob"])
def test_an_endless_body_is_cut_off_at_the_declared_size(
    proxy: HostileProxy, pushed: tuple[Reference, BuiltPackage, bytes], read: str
) -> None:
    ref, built, module = pushed

    def endless(ex: Exchange) -> None:
        # No Content-Length: the genuine bytes, then more for ever.
        ex.stream = itertools.chain([module], iter(lambda: b"A" * 65536, b""))

    proxy.rules.append(_module_rule(built, endless))
    with (
        RegistryClient(proxy.address, plain_http=True) as client,
        pytest.raises(SizeLimitError, match="sent more than"),
    ):
        if read == "read_blob":
            client.read_blob(ref.repository, built.manifest.module, max_bytes=SIZE)
        else:
            client.fetch_blob(ref.repository, built.manifest.module, _Sink(), max_bytes=SIZE)


def test_a_body_announced_larger_is_refused_before_it_is_read(
    proxy: HostileProxy, pushed: tuple[Reference, BuiltPackage, bytes]
) -> None:
    ref, built, _ = pushed
    proxy.rules.append(_module_rule(built, lambda ex: setattr(ex, "body", ex.body + b"\0")))
    with pytest.raises(SizeLimitError, match="announces"):
        fetch_package(_via(proxy, ref), limits=LIMITS)


def test_a_short_body_is_refused(
    proxy: HostileProxy, pushed: tuple[Reference, BuiltPackage, bytes]
) -> None:
    ref, built, _ = pushed
    proxy.rules.append(_module_rule(built, lambda ex: setattr(ex, "body", ex.body[:1_500_000])))
    with pytest.raises(RegistryResponseError, match=f"sent 1500000 of the {SIZE} bytes"):
        fetch_package(_via(proxy, ref), limits=LIMITS)


def test_a_short_unannounced_body_is_refused(
    proxy: HostileProxy, pushed: tuple[Reference, BuiltPackage, bytes]
) -> None:
    ref, built, module = pushed

    def short(ex: Exchange) -> None:
        ex.stream = iter([module[:2_000_000]])  # no Content-Length, then the connection closes

    proxy.rules.append(_module_rule(built, short))
    with pytest.raises(RegistryResponseError, match=f"sent 2000000 of the {SIZE} bytes"):
        fetch_package(_via(proxy, ref), limits=LIMITS)


def test_a_redirect_is_followed_through_httpx(
    registry: RegistryServer,
    proxy: HostileProxy,
    pushed: tuple[Reference, BuiltPackage, bytes],
) -> None:
    ref, built, module = pushed
    wanted = str(built.manifest.module.digest)

    def redirect(ex: Exchange) -> None:
        if ex.method == "GET" and ex.path.endswith(wanted):
            ex.status = 307
            ex.body = b""
            ex.set_header("Location", f"http://{registry.address}{urllib.parse.quote(ex.path)}")

    proxy.rules.append(redirect)
    package = fetch_package(_via(proxy, ref), limits=LIMITS)
    assert package.module == module
    # The direct GET saw the 307, then httpx asked again and followed it.
    assert [p for m, p in proxy.seen if m == "GET" and p.endswith(wanted)] == [
        f"/v2/{ref.repository}/blobs/{wanted}"
    ] * 2


def test_a_missing_blob_is_not_found(registry: RegistryServer) -> None:
    missing = Descriptor(MEDIA_TYPE_WASM, Digest.of(b"nothing here"), 2 * 1024 * 1024)
    with RegistryClient(registry.address, plain_http=True) as client, pytest.raises(NotFoundError):
        client.read_blob("apps/direct", missing, max_bytes=missing.size)


def test_no_registry_is_a_connect_error() -> None:
    desc = Descriptor(MEDIA_TYPE_WASM, Digest.of(b"x"), 2 * 1024 * 1024)
    with (
        RegistryClient(f"127.0.0.1:{free_port()}", plain_http=True) as client,
        pytest.raises(ConnectError),
    ):
        client.read_blob("apps/direct", desc, max_bytes=desc.size)


def test_a_private_registry_gets_its_credentials_on_the_direct_read(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("private")
    server = _start(root, htpasswd_auth(root, {USER: PASSWORD}))
    proxy = HostileProxy(upstream_port=server.port).start()
    try:
        module = b"\0asm\x01\0\0\0" + os.urandom(SIZE - 8)
        built = build_package(module, b'args = ["private"]\n')
        ref = Reference.parse(f"{server.address}/private/direct:1")
        credentials = Credentials(USER, PASSWORD)
        with RegistryClient.for_reference(ref, credentials=credentials) as client:
            push_package(client, ref, built)
        pinned = _via(proxy, ref.with_digest(built.digest))
        fetched = fetch_package(pinned, credentials=credentials, limits=LIMITS)
        assert hashlib.sha256(fetched.module).digest() == hashlib.sha256(module).digest()
        # The manifest's 401 taught the client to send Basic credentials, so the direct read
        # of the module succeeded at once: one GET, no challenge, no second try through httpx.
        wanted = str(built.manifest.module.digest)
        assert [m for m, p in proxy.seen if p.endswith(wanted)] == ["GET"]
    finally:
        proxy.stop()
        server.stop()
