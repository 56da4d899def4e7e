"""Packages as OCI image layout directories (image spec v1.1 ``image-layout.md``).

``donjon package build -o DIR`` and ``donjon package pull -o DIR`` write one; ``push --from
DIR`` and ``inspect DIR`` read one. Any OCI tool can read it too (``oras cp --from-oci-layout``)::

    DIR/oci-layout                 {"imageLayoutVersion":"1.0.0"}
    DIR/index.json                 an image index with the package manifest
    DIR/blobs/sha256/<hex>         the manifest, the empty config, the module and the config

Rule 1: a layout is written beside its destination and renamed into place when complete, so a
crash or a failed check never leaves half a package behind.
Rule 2: reading a layout checks it as if it came from a registry: bounded sizes, every digest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from donjon.errors import ConflictError, NotFoundError
from donjon.registry.errors import DigestMismatchError, PackageFormatError, SizeLimitError
from donjon.registry.oci import (
    ANNOTATION_REF_NAME,
    EMPTY_CONFIG,
    EMPTY_JSON,
    MEDIA_TYPE_IMAGE_MANIFEST,
    Descriptor,
    Digest,
    build_image_index,
    canonical_json,
    load_json_object,
    parse_image_index,
)
from donjon.registry.package import (
    ARTIFACT_TYPE_WORKLOAD,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_MODULE_BYTES,
    BuiltPackage,
    assemble_package,
    parse_package_manifest,
)

__all__ = ["LAYOUT_VERSION", "read_layout", "write_layout"]

LAYOUT_VERSION = "1.0.0"
_MAX_INDEX_BYTES = 1024 * 1024  # bytes of index.json; ours is under 1 KiB
_MAX_INDEX_ENTRIES = 1000  # manifests listed in one layout


def write_layout(out: Path, package: BuiltPackage, *, tag: str | None = None) -> Path:
    """Write *package* as an OCI image layout at *out*, which must not exist yet.

    Args:
        out: the directory to create.
        package: the package (built, or fetched and checked).
        tag: recorded as ``org.opencontainers.image.ref.name`` in ``index.json``.

    Returns:
        *out*.

    Raises:
        ConflictError: *out* already exists.
        OSError: the parent directory cannot be written.
    """
    if out.exists() or out.is_symlink():
        raise ConflictError(f"{out} already exists; remove it or choose another directory")
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.partial-"))
    try:
        blobs = [
            (package.manifest.digest, package.manifest_bytes),
            *((desc.digest, data) for desc, data in package.blobs()),
        ]
        for digest, data in blobs:
            path = tmp / "blobs" / digest.algorithm / digest.hex
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        annotations = {ANNOTATION_REF_NAME: tag} if tag else None
        entry = Descriptor(
            media_type=MEDIA_TYPE_IMAGE_MANIFEST,
            digest=package.digest,
            size=len(package.manifest_bytes),
            annotations=tuple(sorted((annotations or {}).items())),
            artifact_type=ARTIFACT_TYPE_WORKLOAD,
        )
        (tmp / "index.json").write_bytes(build_image_index((entry,)))
        (tmp / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
        # mkdtemp made it 0700 and it stays so: a package may be a private workload.
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_layout(
    directory: Path,
    *,
    tag: str | None = None,
    max_module_bytes: int = MAX_MODULE_BYTES,
) -> BuiltPackage:
    """Read and check the package in an OCI image layout.

    Args:
        directory: the layout directory.
        tag: pick the manifest with this ``ref.name``; without it, the layout must hold exactly
            one donjon package.
        max_module_bytes: refuse larger modules.

    Raises:
        NotFoundError: not a layout, or no (matching) package in it.
        PackageFormatError: a malformed layout or package.
        DigestMismatchError: a blob that does not match its digest.
        SizeLimitError: a blob over its limit.
    """
    marker = directory / "oci-layout"
    if not marker.is_file():
        raise NotFoundError(f"{directory} is not an OCI image layout (no oci-layout file)")
    version = load_json_object(
        _read(marker, 4096, "oci-layout"), what=f"{marker}", max_bytes=4096
    ).get("imageLayoutVersion")
    if version != LAYOUT_VERSION:
        raise PackageFormatError(f"{marker}: imageLayoutVersion {version!r} is not 1.0.0")
    entries = parse_image_index(
        _read(directory / "index.json", _MAX_INDEX_BYTES, "index.json"),
        what=f"{directory}/index.json",
        max_bytes=_MAX_INDEX_BYTES,
        max_entries=_MAX_INDEX_ENTRIES,
    )
    packages = [
        e
        for e in entries
        if e.media_type == MEDIA_TYPE_IMAGE_MANIFEST
        and e.artifact_type in (None, ARTIFACT_TYPE_WORKLOAD)
        and (tag is None or e.annotation(ANNOTATION_REF_NAME) == tag)
    ]
    if not packages:
        which = f" tagged {tag!r}" if tag else ""
        raise NotFoundError(f"{directory} holds no donjon package{which}")
    if len(packages) > 1:
        raise PackageFormatError(
            f"{directory} holds {len(packages)} manifests; name one with its tag"
        )
    entry = packages[0]
    raw = _blob(directory, entry.digest, MAX_MANIFEST_BYTES, "package manifest")
    manifest = parse_package_manifest(raw, digest=entry.digest)
    if manifest.module.size > max_module_bytes:
        raise SizeLimitError(
            f"the module is {manifest.module.size} bytes; the limit is {max_module_bytes}",
            limit=max_module_bytes,
        )
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise SizeLimitError(
            f"the config is {manifest.config.size} bytes; the limit is {MAX_CONFIG_BYTES}",
            limit=MAX_CONFIG_BYTES,
        )
    module = _blob(directory, manifest.module.digest, manifest.module.size, "module")
    config = _blob(directory, manifest.config.digest, manifest.config.size, "config")
    empty = _blob(directory, EMPTY_CONFIG.digest, EMPTY_CONFIG.size, "empty config")
    if empty != EMPTY_JSON:  # pragma: no cover - _blob checked the digest
        raise PackageFormatError(f"{directory}: the empty config blob is not {{}}")
    checked = assemble_package(manifest, module, config)
    return BuiltPackage(manifest=manifest, module=checked.module, config_toml=checked.config_toml)


def _blob(directory: Path, digest: Digest, max_bytes: int, what: str) -> bytes:
    data = _read(directory / "blobs" / digest.algorithm / digest.hex, max_bytes, what)
    if not digest.matches(data):
        raise DigestMismatchError(
            f"{directory}: the {what} blob does not match its digest {digest}",
            expected=str(digest),
            actual=str(Digest.of(data, digest.algorithm)),
        )
    return data


def _read(path: Path, max_bytes: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise NotFoundError(f"{path}: the {what} is missing from the layout") from e
    except OSError as e:
        raise PackageFormatError(f"{path}: cannot read the {what}: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise SizeLimitError(f"{path}: the {what} is over {max_bytes} bytes", limit=max_bytes)
    return data
