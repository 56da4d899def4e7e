"""Publishing and resolving packages: the client side of the registry flow.

``push_package`` uploads a built package; ``resolve_package`` turns a tag into the digest a
deploy pins (on the client, before any Keep is involved, so the Keep fetches by digest and a
tag moved afterwards cannot change what it runs).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from donjon.errors import ConflictError
from donjon.registry.client import RegistryClient
from donjon.registry.oci import MEDIA_TYPE_IMAGE_MANIFEST, Digest
from donjon.registry.package import MAX_MANIFEST_BYTES, BuiltPackage, PackageManifest
from donjon.registry.package import parse_package_manifest as _parse
from donjon.registry.reference import Reference

__all__ = ["push_package", "resolve_package"]

_PARALLEL_UPLOADS = 3  # threads; a package has three blobs


def push_package(client: RegistryClient, ref: Reference, package: BuiltPackage) -> Digest:
    """Upload *package*'s blobs and manifest to *ref* (its tag, else by digest).

    Blobs the registry already has are not sent again.

    Returns:
        The manifest digest (the package's identity).

    Raises:
        ConflictError: *ref* names a digest that is not this package's.
        RegistryError: the registry refused an upload.
    """
    if ref.digest is not None and ref.digest != package.digest:
        raise ConflictError(
            f"{ref} names digest {ref.digest}, but the package is {package.digest}; "
            "push to a tag, or to the package's own digest"
        )
    # The blobs are independent: upload them side by side, so the small ones cost nothing next
    # to the module. The manifest goes last: a registry refuses one whose blobs are missing.
    with ThreadPoolExecutor(_PARALLEL_UPLOADS, "donjon-push") as pool:
        uploads = [
            pool.submit(client.push_blob, ref.repository, descriptor, data)
            for descriptor, data in package.blobs()
        ]
        for upload in uploads:
            upload.result()
    target: str | Digest = ref.tag if ref.tag is not None else package.digest
    result = client.put_manifest(
        ref.repository, target, package.manifest_bytes, MEDIA_TYPE_IMAGE_MANIFEST
    )
    return result.digest


def resolve_package(client: RegistryClient, ref: Reference) -> PackageManifest:
    """Fetch and check the package manifest *ref* names; its ``digest`` is what to pin.

    The digest is computed over the bytes received, never taken from a header, and the
    manifest must be a donjon package.

    Raises:
        NotFoundError: no such tag or digest.
        PackageFormatError: it is not a donjon package.
        DigestMismatchError: by digest, the registry served other bytes.
    """
    fetched = client.get_manifest(
        ref.repository,
        ref.digest if ref.digest is not None else ref.manifest_reference,
        max_bytes=MAX_MANIFEST_BYTES,
    )
    return _parse(fetched.raw, digest=fetched.digest)
