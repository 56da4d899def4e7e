"""Workload packages (Wasm module + config) as OCI artifacts: format, signing, OCI client.

Does: build a package from a module and an ``Enarx.toml`` into an OCI artifact manifest
(:mod:`~donjon.registry.package`), read and write OCI image layouts
(:mod:`~donjon.registry.layout`), talk to any registry that speaks the OCI distribution spec
with Basic or bearer-token auth (:mod:`~donjon.registry.client`), sign packages with a
publisher key and verify those signatures (:mod:`~donjon.registry.signing`), and fetch a package
by digest for a Keep, checking every byte (:mod:`~donjon.registry.fetch`).

Does not: interpret the workload config (``donjon.keep.config`` does; here it is opaque bytes
with a media type), decide which publisher keys a deployment requires (the deploy policy), or
read credentials from files or the environment (the CLI does, with
:mod:`~donjon.registry.credentials` parsing what it read).

Example::

    from donjon.registry import (
        Reference, RegistryClient, build_package, fetch_package, push_package,
    )

    ref = Reference.parse("localhost:5000/apps/hello:1.0")
    built = build_package(module_bytes, config_bytes)
    with RegistryClient.for_reference(ref) as client:
        digest = push_package(client, ref, built)
    package = fetch_package(ref.with_digest(digest))   # in the Keep, after attestation

``docs/packages.md`` describes the format, the media types, signing and authentication.
"""

from __future__ import annotations

from donjon.registry.cache import BlobCache
from donjon.registry.client import RegistryClient
from donjon.registry.credentials import Credentials
from donjon.registry.errors import (
    CredentialsError,
    DigestMismatchError,
    PackageFormatError,
    ReferenceSyntaxError,
    RegistryAuthError,
    RegistryResponseError,
    SizeLimitError,
    UnsignedPackageError,
)
from donjon.registry.fetch import FetchLimits, fetch_package
from donjon.registry.layout import read_layout, write_layout
from donjon.registry.oci import Descriptor, Digest
from donjon.registry.package import (
    ARTIFACT_TYPE_WORKLOAD,
    MEDIA_TYPE_CONFIG_TOML,
    MEDIA_TYPE_WASM,
    BuiltPackage,
    Package,
    PackageManifest,
    build_package,
    parse_package_manifest,
)
from donjon.registry.reference import Reference
from donjon.registry.signing import (
    ARTIFACT_TYPE_SIGNATURE,
    VerifiedSignature,
    sign_package,
    verify_package_signature,
)
from donjon.registry.transfer import push_package, resolve_package

__all__ = [
    "ARTIFACT_TYPE_SIGNATURE",
    "ARTIFACT_TYPE_WORKLOAD",
    "MEDIA_TYPE_CONFIG_TOML",
    "MEDIA_TYPE_WASM",
    "BlobCache",
    "BuiltPackage",
    "Credentials",
    "CredentialsError",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "FetchLimits",
    "Package",
    "PackageFormatError",
    "PackageManifest",
    "Reference",
    "ReferenceSyntaxError",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryResponseError",
    "SizeLimitError",
    "UnsignedPackageError",
    "VerifiedSignature",
    "build_package",
    "fetch_package",
    "parse_package_manifest",
    "push_package",
    "read_layout",
    "resolve_package",
    "sign_package",
    "verify_package_signature",
    "write_layout",
]
