"""The donjon workload package: a Wasm module and its config as an OCI artifact (pure).

A package is an OCI image manifest (image spec v1.1) of this exact shape::

    {
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "artifactType": "application/vnd.donjon.workload.v1+json",
      "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                 "digest": "sha256:44136fa3...", "size": 2, "data": "e30="},
      "layers": [
        {"mediaType": "application/wasm", "digest": "sha256:...", "size": N,
         "annotations": {"org.opencontainers.image.title": "main.wasm"}},
        {"mediaType": "application/vnd.donjon.config.v1+toml", "digest": "sha256:...", "size": M,
         "annotations": {"org.opencontainers.image.title": "Enarx.toml"}}
      ],
      "annotations": {...}              (optional, only what the publisher asked for)
    }

serialized as canonical JSON, so the same module and config always give the same digest: there
is no timestamp unless the publisher adds one as an annotation.

Rule 1: this module does not interpret the config. It is bytes with a media type; the CLI
validates it with ``donjon.keep.config`` when building, and the Keep when running.
Rule 2: parsing is strict. A manifest with other layers, another config, a float, a duplicate
key or a size over the limits is not a donjon package, whatever else it may be.
Rule 3: bytes become a :class:`Package` only once each blob's size and digest were checked
against the manifest, itself checked against its digest: by :func:`assemble_package` for bytes
at hand, or by ``RegistryClient.fetch_blob`` while streaming (``fetch`` relies on that).

Example::

    >>> built = build_package(b"\\0asm\\x01\\0\\0\\0", b'args = ["-v"]\\n')
    >>> parse_package_manifest(built.manifest_bytes, digest=built.digest).module.size
    8
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from donjon.registry.errors import DigestMismatchError, PackageFormatError, SizeLimitError
from donjon.registry.oci import (
    ANNOTATION_TITLE,
    EMPTY_CONFIG,
    EMPTY_JSON,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_IMAGE_MANIFEST,
    Descriptor,
    Digest,
    annotations_field,
    canonical_json,
    load_json_object,
    media_type_field,
)

__all__ = [
    "ARTIFACT_TYPE_WORKLOAD",
    "CONFIG_TITLE",
    "MAX_CONFIG_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_MODULE_BYTES",
    "MEDIA_TYPE_CONFIG_TOML",
    "MEDIA_TYPE_WASM",
    "MODULE_TITLE",
    "BuiltPackage",
    "Package",
    "PackageManifest",
    "assemble_package",
    "build_package",
    "parse_package_manifest",
]

ARTIFACT_TYPE_WORKLOAD = "application/vnd.donjon.workload.v1+json"
"""``artifactType`` of a package manifest: what tells a donjon package from any other artifact."""
MEDIA_TYPE_WASM = "application/wasm"
"""The module layer: a WebAssembly binary (the IANA-registered type, also used by wasm-to-oci)."""
MEDIA_TYPE_CONFIG_TOML = "application/vnd.donjon.config.v1+toml"
"""The config layer: an ``Enarx.toml`` workload config, UTF-8 TOML."""

MODULE_TITLE = "main.wasm"  # layer file name, as Drawbridge named the module
CONFIG_TITLE = "Enarx.toml"  # layer file name, as Enarx names the config

MAX_MANIFEST_BYTES = 256 * 1024
"""Largest package manifest accepted (bytes). Ours are under 2 KiB; the bound leaves room for
publisher annotations and stops a hostile registry from making a Keep buffer a huge document."""
MAX_MODULE_BYTES = 256 * 1024 * 1024
"""Default largest module (bytes). The biggest real workloads measured were about 104 MB
(TOOLING.md P3); a Keep may set a lower limit."""
MAX_CONFIG_BYTES = 1024 * 1024
"""Largest config layer (bytes): Enarx's own limit on ``Enarx.toml`` (``keep.config``'s too)."""

_WASM_MAGIC = b"\0asm"  # WebAssembly core spec §5.5.16; components share the magic


@dataclass(frozen=True, slots=True)
class PackageManifest:
    """A package manifest that parsed and, if a digest was given, matched it.

    Attributes:
        digest: the manifest digest (of :attr:`raw` exactly).
        raw: the manifest bytes, exactly as received or built.
        module: the module layer's descriptor.
        config: the config layer's descriptor.
        annotations: the manifest's own annotations, sorted.
    """

    digest: Digest
    raw: bytes
    module: Descriptor
    config: Descriptor
    annotations: tuple[tuple[str, str], ...]

    @property
    def descriptor(self) -> Descriptor:
        """The descriptor of this manifest (what a signature's ``subject`` points at)."""
        return Descriptor(
            media_type=MEDIA_TYPE_IMAGE_MANIFEST,
            digest=self.digest,
            size=len(self.raw),
            artifact_type=ARTIFACT_TYPE_WORKLOAD,
        )


@dataclass(frozen=True, slots=True)
class BuiltPackage:
    """A package built locally: the manifest and the blobs it names.

    Attributes:
        manifest: the parsed manifest (its ``raw`` is what gets pushed).
        module: the module bytes.
        config_toml: the config bytes.
    """

    manifest: PackageManifest
    module: bytes
    config_toml: bytes

    @property
    def digest(self) -> Digest:
        """The package's identity: the digest of its manifest."""
        return self.manifest.digest

    @property
    def manifest_bytes(self) -> bytes:
        """The canonical manifest bytes."""
        return self.manifest.raw

    def blobs(self) -> tuple[tuple[Descriptor, bytes], ...]:
        """Every blob the manifest references, config first, each with its bytes."""
        return (
            (EMPTY_CONFIG, EMPTY_JSON),
            (self.manifest.module, self.module),
            (self.manifest.config, self.config_toml),
        )


@dataclass(frozen=True, slots=True, repr=False)
class Package:
    """A fetched package whose every byte was checked against ``manifest_digest``.

    Attributes:
        module: the Wasm module bytes.
        config_toml: the ``Enarx.toml`` bytes (not interpreted here).
        manifest_digest: the digest the package was fetched by.
        manifest: the checked manifest.
        publisher: the fingerprint (``sha256:...``) of the publisher key whose signature over
            ``manifest_digest`` verified, or ``None`` when no signature was required.
    """

    module: bytes
    config_toml: bytes
    manifest_digest: Digest
    manifest: PackageManifest
    publisher: str | None = None

    def __repr__(self) -> str:
        # The module may be a private workload: show its identity, not its bytes.
        return (
            f"Package(manifest_digest={self.manifest_digest}, module={self.manifest.module.size} "
            f"bytes, config_toml={self.manifest.config.size} bytes, publisher={self.publisher})"
        )


def build_package(
    module: bytes,
    config_toml: bytes,
    *,
    annotations: Mapping[str, str] | None = None,
) -> BuiltPackage:
    """Build the package of *module* and *config_toml*.

    Args:
        module: the Wasm module (checked for the ``\\0asm`` magic only; the Keep compiles it).
        config_toml: the workload config, UTF-8 (validate it with ``donjon.keep.config`` first).
        annotations: manifest annotations, e.g. ``org.opencontainers.image.source``.

    Returns:
        The manifest and blobs, ready to push or to write as an OCI image layout.

    Raises:
        PackageFormatError: not Wasm, a config that is not UTF-8, or bad annotations.
        SizeLimitError: a module or config over :data:`MAX_MODULE_BYTES` /
            :data:`MAX_CONFIG_BYTES`.
    """
    if not module.startswith(_WASM_MAGIC):
        raise PackageFormatError(
            "the module is not WebAssembly (no \\0asm magic); build it for wasm32-wasip1"
        )
    if len(module) > MAX_MODULE_BYTES:
        raise SizeLimitError(
            f"the module is {len(module)} bytes; the limit is {MAX_MODULE_BYTES}",
            limit=MAX_MODULE_BYTES,
        )
    if len(config_toml) > MAX_CONFIG_BYTES:
        raise SizeLimitError(
            f"the config is {len(config_toml)} bytes; the limit is {MAX_CONFIG_BYTES}",
            limit=MAX_CONFIG_BYTES,
        )
    try:
        config_toml.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PackageFormatError(f"the config is not UTF-8 (byte {e.start})") from e
    module_desc = Descriptor.for_content(
        MEDIA_TYPE_WASM, module, annotations={ANNOTATION_TITLE: MODULE_TITLE}
    )
    config_desc = Descriptor.for_content(
        MEDIA_TYPE_CONFIG_TOML, config_toml, annotations={ANNOTATION_TITLE: CONFIG_TITLE}
    )
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_MANIFEST,
        "artifactType": ARTIFACT_TYPE_WORKLOAD,
        "config": EMPTY_CONFIG.to_json(),
        "layers": [module_desc.to_json(), config_desc.to_json()],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    raw = canonical_json(doc)
    # Parse what we built: one code path decides what a package is, for us and for the Keep.
    manifest = parse_package_manifest(raw, digest=Digest.of(raw))
    return BuiltPackage(manifest=manifest, module=module, config_toml=config_toml)


def parse_package_manifest(
    data: bytes, *, digest: Digest | None = None, max_bytes: int = MAX_MANIFEST_BYTES
) -> PackageManifest:
    """Parse and check a package manifest received from anywhere.

    Args:
        data: the manifest bytes exactly as received.
        digest: the digest they were requested by; checked first, before parsing.
        max_bytes: refuse larger manifests.

    Returns:
        The checked manifest.

    Raises:
        SizeLimitError: larger than *max_bytes*.
        DigestMismatchError: the bytes do not hash to *digest*.
        PackageFormatError: not a donjon package manifest (the message says what is wrong).
    """
    what = "package manifest"
    if len(data) > max_bytes:
        raise SizeLimitError(
            f"{what} is {len(data)} bytes; the limit is {max_bytes}", limit=max_bytes
        )
    actual = Digest.of(data, digest.algorithm if digest is not None else "sha256")
    if digest is not None and actual != digest:
        raise DigestMismatchError(
            f"{what} bytes hash to {actual}, not to the requested {digest}: the registry or "
            "something between it and us served other content",
            expected=str(digest),
            actual=str(actual),
        )
    doc = load_json_object(data, what=what, max_bytes=max_bytes)
    if doc.get("schemaVersion") != 2 or isinstance(doc.get("schemaVersion"), bool):
        raise PackageFormatError(f"{what}: 'schemaVersion' must be 2")
    if doc.get("mediaType") != MEDIA_TYPE_IMAGE_MANIFEST:
        raise PackageFormatError(
            f"{what}: 'mediaType' must be {MEDIA_TYPE_IMAGE_MANIFEST!r} "
            "(an index or a Docker manifest is not a donjon package)"
        )
    artifact_type = media_type_field(doc, "artifactType", what) if "artifactType" in doc else None
    if artifact_type != ARTIFACT_TYPE_WORKLOAD:
        raise PackageFormatError(
            f"{what}: 'artifactType' is {artifact_type!r}, not {ARTIFACT_TYPE_WORKLOAD!r}; "
            "this is not a donjon workload package (build one with `donjon package build`)"
        )
    config = Descriptor.from_json(doc.get("config"), what=f"{what} config")
    if config.media_type != MEDIA_TYPE_EMPTY or config.digest != EMPTY_CONFIG.digest:
        raise PackageFormatError(
            f"{what}: 'config' must be the empty descriptor ({MEDIA_TYPE_EMPTY}, {{}})"
        )
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 2:
        raise PackageFormatError(f"{what}: 'layers' must hold exactly the module and the config")
    module = Descriptor.from_json(layers[0], what=f"{what} layer 0")
    config_layer = Descriptor.from_json(layers[1], what=f"{what} layer 1")
    if module.media_type != MEDIA_TYPE_WASM:
        raise PackageFormatError(f"{what}: layer 0 must be {MEDIA_TYPE_WASM!r}")
    if config_layer.media_type != MEDIA_TYPE_CONFIG_TOML:
        raise PackageFormatError(f"{what}: layer 1 must be {MEDIA_TYPE_CONFIG_TOML!r}")
    if "subject" in doc:
        raise PackageFormatError(f"{what}: a package has no 'subject' (that is a signature)")
    return PackageManifest(
        digest=actual,
        raw=bytes(data),
        module=module,
        config=config_layer,
        annotations=annotations_field(doc, what),
    )


def assemble_package(manifest: PackageManifest, module: bytes, config_toml: bytes) -> Package:
    """Join a checked manifest and its blobs into a :class:`Package`, checking every blob.

    Raises:
        SizeLimitError: a blob larger than its descriptor says.
        DigestMismatchError: a blob whose bytes are not the ones the manifest names.
    """
    for name, desc, blob in (
        ("module", manifest.module, module),
        ("config", manifest.config, config_toml),
    ):
        if len(blob) != desc.size:
            raise SizeLimitError(
                f"{name} blob is {len(blob)} bytes; the manifest says {desc.size}",
                limit=desc.size,
            )
        actual = Digest.of(blob, desc.digest.algorithm)
        if actual != desc.digest:
            raise DigestMismatchError(
                f"{name} blob hashes to {actual}, not to {desc.digest} named by the manifest",
                expected=str(desc.digest),
                actual=str(actual),
            )
    return Package(
        module=module,
        config_toml=config_toml,
        manifest_digest=manifest.digest,
        manifest=manifest,
    )
