"""OCI building blocks: digests, descriptors, strict JSON, image indexes."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.registry.errors import PackageFormatError
from donjon.registry.oci import (
    EMPTY_CONFIG,
    MEDIA_TYPE_IMAGE_MANIFEST,
    Descriptor,
    Digest,
    build_image_index,
    canonical_json,
    load_json_object,
    parse_image_index,
)


def test_empty_config_is_the_spec_constant() -> None:
    # image-spec manifest.md "Guidance for an Empty Descriptor".
    assert EMPTY_CONFIG.to_json() == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
        "data": "e30=",
    }


def test_digest_parse_and_tag_form() -> None:
    d = Digest.of(b"abc")
    assert str(d) == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert Digest.parse(str(d)) == d
    assert d.tag_form() == "sha256-" + d.hex
    assert d.matches(b"abc") and not d.matches(b"abd")
    d512 = Digest.of(b"abc", "sha512")
    assert Digest.parse(str(d512)) == d512


@pytest.mark.parametrize(
    "text",
    [
        "sha256",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha1:" + "a" * 40,
        "sha512:" + "a" * 64,
    ],
)
def test_digest_invalid(text: str) -> None:
    with pytest.raises(PackageFormatError):
        Digest.parse(text)


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": ["é", {"d": 2, "c": 3}]}) == (
        '{"a":["é",{"c":3,"d":2}],"b":1}'.encode()
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a":1,"a":2}', "duplicate key"),
        (b'{"size":1.5}', "non-integer"),
        (b'{"x":NaN}', "NaN"),
        (b"[1]", "JSON object"),
        (b"\xff{}", "UTF-8"),
        (b"{", "not valid JSON"),
        (b'{"a":' * 20 + b"1" + b"}" * 20, "nests deeper"),
        (b"{}" + b" " * 300, "limit"),
    ],
)
def test_strict_json(data: bytes, reason: str) -> None:
    with pytest.raises(PackageFormatError, match=reason):
        load_json_object(data, what="doc", max_bytes=256)


def test_descriptor_roundtrip_and_checks() -> None:
    d = Descriptor.for_content(
        "application/wasm", b"\0asm", annotations={"k": "v"}, artifact_type="a/b", embed=True
    )
    assert Descriptor.from_json(json.loads(canonical_json(d.to_json())), what="d") == d
    bad = d.to_json() | {"data": "AAAA"}
    with pytest.raises(PackageFormatError, match="does not match"):
        Descriptor.from_json(bad, what="d")
    for field, value in [("size", True), ("size", -1), ("mediaType", "no slash"), ("digest", 5)]:
        with pytest.raises(PackageFormatError):
            Descriptor.from_json(d.to_json() | {field: value}, what="d")
    with pytest.raises(PackageFormatError, match="annotation"):
        Descriptor.from_json(d.to_json() | {"annotations": {"k": 1}}, what="d")
    with pytest.raises(PackageFormatError, match="more than"):
        Descriptor.from_json(
            d.to_json() | {"annotations": {str(i): "" for i in range(100)}}, what="d"
        )


def test_image_index_roundtrip_and_bounds() -> None:
    entries = tuple(
        Descriptor.for_content(MEDIA_TYPE_IMAGE_MANIFEST, bytes([i]), artifact_type="a/b")
        for i in range(3)
    )
    raw = build_image_index(entries)
    assert parse_image_index(raw, what="i", max_bytes=4096, max_entries=3) == entries
    with pytest.raises(PackageFormatError, match="more than 2"):
        parse_image_index(raw, what="i", max_bytes=4096, max_entries=2)
    with pytest.raises(PackageFormatError, match="mediaType"):
        parse_image_index(
            canonical_json({"schemaVersion": 2, "mediaType": MEDIA_TYPE_IMAGE_MANIFEST}),
            what="i",
            max_bytes=4096,
            max_entries=3,
        )


@given(st.binary(max_size=512))
def test_load_json_object_only_raises_its_error(data: bytes) -> None:
    try:
        load_json_object(data, what="doc", max_bytes=256)
    except PackageFormatError:
        pass
