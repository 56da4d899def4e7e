"""What a Keep calls after attestation: fetch a package by digest and check every byte.

The client resolved the tag to a digest and sent that digest (and, for a private repository,
the registry credentials) to the Keep over the attested TLS channel. The Keep then calls
:func:`fetch_package`, directly or through the host relay (pass its ``transport``): the relay
and the registry are untrusted, so

1. only a reference with a digest is accepted;
2. the manifest must hash to that digest and be a donjon package within the limits;
3. if publisher keys are required, a signature by one of them over that digest must verify,
   before any large blob is downloaded;
4. each blob is read with its size bounded by the manifest and its digest checked while it
   arrives (``RegistryClient.read_blob``);
5. only then are the bytes returned, or stored in the cache (atomically).

Any failure raises a :mod:`donjon.errors` error and leaves nothing behind.

Example::

    package = fetch_package(
        Reference.parse("registry.example:5000/apps/hello@sha256:..."),
        credentials=credentials_from_client,
        publisher_keys=[PublisherPublicKey.from_pem(pem, source="policy")],
    )
    run(package.module, package.config_toml)
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from donjon.crypto.publisher import PublisherPublicKey
from donjon.registry.cache import BlobCache
from donjon.registry.client import RegistryClient
from donjon.registry.credentials import Credentials
from donjon.registry.errors import ReferenceSyntaxError, SizeLimitError
from donjon.registry.oci import Descriptor
from donjon.registry.package import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_MODULE_BYTES,
    Package,
    parse_package_manifest,
)
from donjon.registry.reference import Reference
from donjon.registry.signing import verify_package_signature

__all__ = ["FetchLimits", "fetch_package"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Size limits for a fetch (bytes). A Keep sets them from its memory budget.

    Attributes:
        max_manifest_bytes: the package manifest.
        max_module_bytes: the Wasm module layer.
        max_config_bytes: the ``Enarx.toml`` layer.
    """

    max_manifest_bytes: int = MAX_MANIFEST_BYTES
    max_module_bytes: int = MAX_MODULE_BYTES
    max_config_bytes: int = MAX_CONFIG_BYTES


def fetch_package(
    ref: Reference,
    *,
    credentials: Credentials | None = None,
    limits: FetchLimits = FetchLimits(),  # frozen, so a shared default is safe
    publisher_keys: Sequence[PublisherPublicKey] = (),
    cache: BlobCache | None = None,
    client: RegistryClient | None = None,
    plain_http: bool | None = None,
    transport: httpx.BaseTransport | None = None,
    verify: ssl.SSLContext | str | bool = True,
) -> Package:
    """Fetch the package *ref* pins, checking every digest, size and the required signature.

    Args:
        ref: a reference with a digest (``REGISTRY/REPO@sha256:...``; a tag is only a label).
        credentials: for a private repository (sent by the client over attested TLS).
        limits: size limits.
        publisher_keys: if not empty, a signature by one of these keys must verify.
        cache: a blob cache to read from and fill (never for private workloads on host disk).
        client: an existing client for the registry (then the next three are ignored).
        plain_http: see :meth:`RegistryClient.for_reference`.
        transport: an httpx transport, e.g. through the host relay.
        verify: TLS verification for the registry.

    Returns:
        The checked package; its ``publisher`` names the key whose signature verified.

    Raises:
        ReferenceSyntaxError: *ref* has no digest.
        NotFoundError: no such package or blob.
        DigestMismatchError: the manifest or a blob is not what the digest names.
        SizeLimitError: the manifest or a blob is over its limit or its declared size.
        PackageFormatError: the manifest is not a donjon package.
        UnsignedPackageError: keys are required and no signature by one of them exists.
        SignatureError: a signature by a required key does not verify.
        RegistryAuthError: the registry refused the credentials.
        TransportError: the registry could not be reached.
    """
    if ref.digest is None:
        raise ReferenceSyntaxError(
            f"{ref}: a Keep fetches packages by digest only; resolve the tag on the client "
            "(`donjon package inspect REF` prints the digest) and send REF@sha256:..."
        )
    own_client = client is None
    registry = client or RegistryClient.for_reference(
        ref, credentials=credentials, plain_http=plain_http, transport=transport, verify=verify
    )
    try:
        return _fetch(registry, ref, limits, publisher_keys, cache)
    finally:
        if own_client:
            registry.close()


def _fetch(
    client: RegistryClient,
    ref: Reference,
    limits: FetchLimits,
    keys: Sequence[PublisherPublicKey],
    cache: BlobCache | None,
) -> Package:
    if ref.digest is None:  # pragma: no cover - checked by the caller
        raise ReferenceSyntaxError(f"{ref} has no digest")
    # (2) the manifest: bytes bounded, digest checked, shape checked.
    fetched = client.get_manifest(ref.repository, ref.digest, max_bytes=limits.max_manifest_bytes)
    manifest = parse_package_manifest(
        fetched.raw, digest=ref.digest, max_bytes=limits.max_manifest_bytes
    )
    for name, desc, limit in (
        ("module", manifest.module, limits.max_module_bytes),
        ("config", manifest.config, limits.max_config_bytes),
    ):
        if desc.size > limit:
            raise SizeLimitError(
                f"{ref}: the {name} is {desc.size} bytes; this Keep accepts at most {limit}",
                limit=limit,
            )
    # (3) the signature, before the large downloads.
    publisher = None
    if keys:
        signature = verify_package_signature(client, ref.repository, manifest.descriptor, keys)
        publisher = signature.key.fingerprint
        _logger.info("package %s is signed by %s", ref.digest, publisher)
    # (4) the blobs, each bounded by its descriptor and checked.
    # The small config comes on a second connection while the module streams: one round trip
    # less on the Keep's critical path.
    with ThreadPoolExecutor(1, "donjon-fetch") as pool:
        config_future = pool.submit(_blob, client, ref, manifest.config, cache)
        module = _blob(client, ref, manifest.module, cache)
        config = config_future.result()
    # read_blob and BlobCache.get checked each blob's size and digest against this manifest
    # (while reading, resp. on read); hashing 20 MB again would cost a third of the fetch.
    return Package(
        module=module,
        config_toml=config,
        manifest_digest=manifest.digest,
        manifest=manifest,
        publisher=publisher,
    )


def _blob(
    client: RegistryClient, ref: Reference, desc: Descriptor, cache: BlobCache | None
) -> bytes:
    if cache is not None:
        cached = cache.get(desc.digest, max_bytes=desc.size)
        if cached is not None:
            return cached
    data = client.read_blob(ref.repository, desc, max_bytes=desc.size)
    if cache is not None:
        # (5) only verified bytes reach the cache, and only whole (temp file + rename);
        # read_blob has just hashed them, so the cache does not hash them again.
        cache.put_checked(desc.digest, data)
    return data
