"""OCI building blocks: digests, descriptors, media types and canonical JSON (pure).

Follows the OCI image spec v1.1 (``descriptor.md``, ``manifest.md``, ``image-index.md``,
``image-layout.md``) and the distribution spec v1.1. Everything here is pure: no I/O, no clock.

Rule 1: a digest is compared only against bytes that were hashed here; a digest *string* from the
network is parsed, never trusted.
Rule 2: JSON from the network is parsed strictly: bounded size, UTF-8, no duplicate keys, no
floats or constants (``NaN``), and every field is type-checked before use.
Rule 3: JSON we produce is canonical (sorted keys, no whitespace, UTF-8), so the same content
always has the same digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from donjon.registry.errors import PackageFormatError

__all__ = [
    "ANNOTATION_REF_NAME",
    "ANNOTATION_TITLE",
    "EMPTY_CONFIG",
    "EMPTY_JSON",
    "MAX_ANNOTATIONS",
    "MAX_ANNOTATION_BYTES",
    "MEDIA_TYPE_EMPTY",
    "MEDIA_TYPE_IMAGE_INDEX",
    "MEDIA_TYPE_IMAGE_MANIFEST",
    "Descriptor",
    "Digest",
    "annotations_field",
    "build_image_index",
    "canonical_json",
    "load_json_object",
    "media_type_field",
    "parse_image_index",
]

MEDIA_TYPE_IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_IMAGE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_EMPTY = "application/vnd.oci.empty.v1+json"
"""The empty descriptor's media type (image spec v1.1 ``manifest.md`` "Guidance for an Empty
Descriptor"): an artifact with no configuration uses it as ``config``."""

ANNOTATION_TITLE = "org.opencontainers.image.title"
"""Layer file name; ``oras pull`` writes each layer under this name."""
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
"""Tag of a manifest in an image layout's ``index.json``."""

EMPTY_JSON = b"{}"
"""The content of the empty descriptor: the two bytes ``{}``."""

MAX_ANNOTATIONS = 64  # entries per annotation map; bounds what a hostile manifest makes us hold
MAX_ANNOTATION_BYTES = 4096  # bytes, UTF-8, of one annotation key or value
_MAX_MEDIA_TYPE_BYTES = 255  # RFC 6838 §4.2: type and subtype are at most 127 chars each
_MAX_JSON_DEPTH = 16  # nesting levels; an OCI manifest needs 4

_HASH_LENGTHS = {"sha256": 64, "sha512": 128}  # hex characters, image spec descriptor.md
_HEX = re.compile(r"[a-f0-9]+")
# RFC 6838 restricted-name, as the image spec's media-type grammar uses it.
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest ``algorithm:hex`` (sha256 or sha512, lowercase hex).

    Attributes:
        algorithm: ``"sha256"`` or ``"sha512"``.
        hex: the lowercase hex encoding of the hash.
    """

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str, *, what: str = "digest") -> Digest:
        """Parse ``sha256:<64 hex>`` or ``sha512:<128 hex>``.

        Raises:
            PackageFormatError: not a digest donjon can check.
        """
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise PackageFormatError(f"{what} {text[:80]!r} is not of the form sha256:<hex>")
        length = _HASH_LENGTHS.get(algorithm)
        if length is None:
            raise PackageFormatError(
                f"{what} uses algorithm {algorithm[:20]!r}; donjon checks sha256 and sha512 only"
            )
        if len(encoded) != length or not _HEX.fullmatch(encoded):
            raise PackageFormatError(
                f"{what} {text[:80]!r}: expected {length} lowercase hex digits after {algorithm}:"
            )
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of *data*."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Any:
        """A fresh ``hashlib`` object of this digest's algorithm (for streaming checks)."""
        return hashlib.new(self.algorithm)

    def matches(self, data: bytes) -> bool:
        """Whether *data* hashes to this digest."""
        return hashlib.new(self.algorithm, data).hexdigest() == self.hex

    def tag_form(self) -> str:
        """The referrers tag schema name of this digest: ``sha256-<hex>`` (distribution v1.1)."""
        return f"{self.algorithm}-{self.hex}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor (image spec ``descriptor.md``).

    Attributes:
        media_type: the media type of the referenced content.
        digest: its digest.
        size: its size in bytes.
        annotations: sorted ``(key, value)`` pairs.
        artifact_type: the ``artifactType`` of the referenced manifest, if any.
        data: the embedded content, if the descriptor carries it (``data`` field, base64).
    """

    media_type: str
    digest: Digest
    size: int
    annotations: tuple[tuple[str, str], ...] = ()
    artifact_type: str | None = None
    data: bytes | None = None

    @classmethod
    def for_content(
        cls,
        media_type: str,
        content: bytes,
        *,
        annotations: Mapping[str, str] | None = None,
        artifact_type: str | None = None,
        embed: bool = False,
    ) -> Descriptor:
        """The descriptor of *content* (sha256)."""
        return cls(
            media_type=media_type,
            digest=Digest.of(content),
            size=len(content),
            annotations=tuple(sorted((annotations or {}).items())),
            artifact_type=artifact_type,
            data=content if embed else None,
        )

    def annotation(self, key: str) -> str | None:
        """The value of annotation *key*, if present."""
        for k, v in self.annotations:
            if k == key:
                return v
        return None

    def to_json(self) -> dict[str, Any]:
        """The descriptor as a JSON object (for :func:`canonical_json`)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        return out

    @classmethod
    def from_json(cls, value: Any, *, what: str) -> Descriptor:
        """Parse and check a descriptor from decoded JSON.

        Raises:
            PackageFormatError: a missing or ill-typed field, or ``data`` that does not match.
        """
        obj = _require_object(value, what)
        media_type = media_type_field(obj, "mediaType", what)
        digest_text = obj.get("digest")
        if not isinstance(digest_text, str):
            raise PackageFormatError(f"{what}: 'digest' must be a string")
        digest = Digest.parse(digest_text, what=f"{what} digest")
        size = obj.get("size")
        # bool is an int subclass in Python; JSON true must not pass as size 1.
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise PackageFormatError(f"{what}: 'size' must be a non-negative integer")
        artifact_type = None
        if "artifactType" in obj:
            artifact_type = media_type_field(obj, "artifactType", what)
        data = None
        if "data" in obj:
            raw = obj["data"]
            if not isinstance(raw, str):
                raise PackageFormatError(f"{what}: 'data' must be a base64 string")
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError) as e:
                raise PackageFormatError(f"{what}: 'data' is not valid base64") from e
            # descriptor.md: "data" MUST match the digest and size when present.
            if len(data) != size or not digest.matches(data):
                raise PackageFormatError(f"{what}: embedded 'data' does not match digest and size")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=annotations_field(obj, what),
            artifact_type=artifact_type,
            data=data,
        )


EMPTY_CONFIG = Descriptor.for_content(MEDIA_TYPE_EMPTY, EMPTY_JSON, embed=True)
"""The empty config descriptor, with its content embedded as the image spec recommends."""


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8.

    For the values an OCI manifest holds (objects, arrays, strings, integers) this is the
    RFC 8785 (JCS) serialization, so the bytes, and therefore the digest, depend only on content.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def load_json_object(data: bytes, *, what: str, max_bytes: int) -> dict[str, Any]:
    """Parse untrusted JSON bytes that must hold one object.

    Args:
        data: the bytes received.
        what: names the input in messages ("package manifest", "referrers index").
        max_bytes: refuse larger inputs.

    Raises:
        PackageFormatError: too large, not UTF-8, not JSON, duplicate keys, floats or
            constants, too deeply nested, or not an object.
    """
    if len(data) > max_bytes:
        raise PackageFormatError(f"{what} is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PackageFormatError(f"{what} is not UTF-8 JSON (byte {e.start})") from e
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except _JsonRefusalError as e:
        raise PackageFormatError(f"{what}: {e}") from e
    except (json.JSONDecodeError, RecursionError) as e:
        raise PackageFormatError(f"{what} is not valid JSON: {e}") from e
    if _depth(value) > _MAX_JSON_DEPTH:
        raise PackageFormatError(f"{what} nests deeper than {_MAX_JSON_DEPTH} levels")
    if not isinstance(value, dict):
        raise PackageFormatError(f"{what} must be a JSON object")
    return value


def media_type_field(obj: Mapping[str, Any], key: str, what: str) -> str:
    """A required media-type string field (RFC 6838 grammar, bounded)."""
    value = obj.get(key)
    if not isinstance(value, str):
        raise PackageFormatError(f"{what}: {key!r} must be a media type string")
    if len(value) > _MAX_MEDIA_TYPE_BYTES or not _MEDIA_TYPE.fullmatch(value):
        raise PackageFormatError(f"{what}: {key!r} {value[:80]!r} is not a valid media type")
    return value


def annotations_field(obj: Mapping[str, Any], what: str) -> tuple[tuple[str, str], ...]:
    """The optional ``annotations`` map as sorted pairs, bounded in count and size."""
    raw = obj.get("annotations")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise PackageFormatError(f"{what}: 'annotations' must be an object of strings")
    if len(raw) > MAX_ANNOTATIONS:
        raise PackageFormatError(f"{what}: more than {MAX_ANNOTATIONS} annotations")
    pairs = []
    for key, value in raw.items():
        if not isinstance(value, str):
            raise PackageFormatError(f"{what}: annotation {key[:80]!r} must be a string")
        if len(key.encode()) > MAX_ANNOTATION_BYTES or len(value.encode()) > MAX_ANNOTATION_BYTES:
            raise PackageFormatError(
                f"{what}: annotation {key[:80]!r} is longer than {MAX_ANNOTATION_BYTES} bytes"
            )
        pairs.append((key, value))
    return tuple(sorted(pairs))


def parse_image_index(
    data: bytes, *, what: str, max_bytes: int, max_entries: int
) -> tuple[Descriptor, ...]:
    """Parse an OCI image index (a referrers list, or the referrers tag schema's index).

    Only ``manifests`` is read; entries that are not valid descriptors make the whole index
    invalid, because an index is one document a registry or a publisher wrote.

    Raises:
        PackageFormatError: not an image index, too large, or more than *max_entries* entries.
    """
    doc = load_json_object(data, what=what, max_bytes=max_bytes)
    if doc.get("schemaVersion") != 2 or isinstance(doc.get("schemaVersion"), bool):
        raise PackageFormatError(f"{what}: 'schemaVersion' must be 2")
    if "mediaType" in doc and doc["mediaType"] != MEDIA_TYPE_IMAGE_INDEX:
        raise PackageFormatError(f"{what}: 'mediaType' must be {MEDIA_TYPE_IMAGE_INDEX!r}")
    manifests = doc.get("manifests", [])
    if not isinstance(manifests, list):
        raise PackageFormatError(f"{what}: 'manifests' must be an array")
    if len(manifests) > max_entries:
        raise PackageFormatError(f"{what}: more than {max_entries} entries")
    return tuple(
        Descriptor.from_json(entry, what=f"{what} entry {i}") for i, entry in enumerate(manifests)
    )


def build_image_index(
    descriptors: tuple[Descriptor, ...], *, annotations: Mapping[str, str] | None = None
) -> bytes:
    """Canonical bytes of an OCI image index listing *descriptors* in the given order."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_INDEX,
        "manifests": [d.to_json() for d in descriptors],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return canonical_json(doc)


def _require_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PackageFormatError(f"{what} must be a JSON object")
    return value


class _JsonRefusalError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two parsers could pick different values for the same key: refuse the ambiguity.
            raise _JsonRefusalError(f"duplicate key {key[:80]!r}")
        out[key] = value
    return out


def _no_float(text: str) -> Any:
    raise _JsonRefusalError(f"non-integer number {text[:40]!r} (OCI fields are integers)")


def _no_constant(text: str) -> Any:
    raise _JsonRefusalError(f"{text} is not JSON")


def _depth(value: Any) -> int:
    # Iterative, so a hostile document cannot make us recurse.
    depth = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        depth = max(depth, level)
        if depth > _MAX_JSON_DEPTH:
            return depth
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return depth
