"""The package format: exact bytes, determinism, and strict parsing of hostile manifests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.registry.errors import DigestMismatchError, PackageFormatError, SizeLimitError
from donjon.registry.oci import Digest, canonical_json
from donjon.registry.package import (
    ARTIFACT_TYPE_WORKLOAD,
    MAX_CONFIG_BYTES,
    MEDIA_TYPE_CONFIG_TOML,
    MEDIA_TYPE_WASM,
    assemble_package,
    build_package,
    parse_package_manifest,
)

MODULE = b"\0asm\x01\0\0\0"
CONFIG = b'args = ["-v"]\n'

# The exact manifest of MODULE + CONFIG: a format change must be deliberate (and versioned).
EXPECTED_MANIFEST = (
    b'{"artifactType":"application/vnd.donjon.workload.v1+json",'
    b'"config":{"data":"e30=","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",'
    b'"mediaType":"application/vnd.oci.empty.v1+json","size":2},'
    b'"layers":[{"annotations":{"org.opencontainers.image.title":"main.wasm"},'
    b'"digest":"sha256:93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476",'
    b'"mediaType":"application/wasm","size":8},'
    b'{"annotations":{"org.opencontainers.image.title":"Enarx.toml"},'
    b'"digest":"sha256:' + Digest.of(CONFIG).hex.encode() + b'",'
    b'"mediaType":"application/vnd.donjon.config.v1+toml","size":14}],'
    b'"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}'
)


def test_exact_manifest_bytes_and_digest() -> None:
    built = build_package(MODULE, CONFIG)
    assert built.manifest_bytes == EXPECTED_MANIFEST
    assert built.digest == Digest.of(EXPECTED_MANIFEST)
    assert built.manifest.module.media_type == MEDIA_TYPE_WASM
    assert built.manifest.config.media_type == MEDIA_TYPE_CONFIG_TOML
    assert built.manifest.descriptor.artifact_type == ARTIFACT_TYPE_WORKLOAD
    assert [d.digest for d, _ in built.blobs()][1:] == [
        Digest.of(MODULE),
        Digest.of(CONFIG),
    ]


def test_build_is_deterministic_and_content_addressed() -> None:
    assert build_package(MODULE, CONFIG).digest == build_package(MODULE, CONFIG).digest
    assert build_package(MODULE, CONFIG).digest != build_package(MODULE, CONFIG + b"\n").digest
    annotated = build_package(MODULE, CONFIG, annotations={"org.opencontainers.image.source": "x"})
    assert annotated.manifest.annotations == (("org.opencontainers.image.source", "x"),)
    assert annotated.digest != build_package(MODULE, CONFIG).digest


def test_build_refuses_what_is_not_a_package() -> None:
    with pytest.raises(PackageFormatError, match="not WebAssembly"):
        build_package(b"\x7fELF", CONFIG)
    with pytest.raises(PackageFormatError, match="not UTF-8"):
        build_package(MODULE, b"\xff")
    with pytest.raises(SizeLimitError):
        build_package(MODULE, b"#" * (MAX_CONFIG_BYTES + 1))


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(EXPECTED_MANIFEST)
    return doc


def _mutations() -> list[tuple[str, Any]]:
    def with_(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
        doc = _doc()
        target = doc
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return doc

    return [
        ("schemaVersion", with_(("schemaVersion",), 1)),
        ("schemaVersion", with_(("schemaVersion",), True)),
        ("mediaType", with_(("mediaType",), "application/vnd.oci.image.index.v1+json")),
        ("artifactType", with_(("artifactType",), "application/vnd.other+json")),
        ("artifactType", with_(("artifactType",), _DELETE)),
        ("empty descriptor", with_(("config", "mediaType"), "application/json")),
        ("exactly the module", with_(("layers",), [])),
        ("layer 0", with_(("layers", 0, "mediaType"), "application/octet-stream")),
        ("layer 1", with_(("layers", 1, "mediaType"), "text/plain")),
        ("size", with_(("layers", 0, "size"), -1)),
        ("digest", with_(("layers", 0, "digest"), "sha256:zz")),
        ("subject", with_(("subject",), _doc()["layers"][0])),
    ]


_DELETE = object()


@pytest.mark.parametrize(("reason", "doc"), _mutations())
def test_hostile_manifests_are_refused(reason: str, doc: dict[str, Any]) -> None:
    raw = canonical_json(doc)
    with pytest.raises(PackageFormatError, match=reason):
        parse_package_manifest(raw, digest=Digest.of(raw))


def test_manifest_digest_and_size_checked_first() -> None:
    with pytest.raises(DigestMismatchError) as info:
        parse_package_manifest(EXPECTED_MANIFEST, digest=Digest.of(b"other"))
    assert info.value.actual == str(Digest.of(EXPECTED_MANIFEST))
    with pytest.raises(SizeLimitError):
        parse_package_manifest(EXPECTED_MANIFEST, max_bytes=100)


def test_assemble_checks_every_blob() -> None:
    manifest = build_package(MODULE, CONFIG).manifest
    package = assemble_package(manifest, MODULE, CONFIG)
    assert package.module == MODULE and package.manifest_digest == manifest.digest
    assert "bytes" in repr(package) and "asm" not in repr(package)
    with pytest.raises(DigestMismatchError):
        assemble_package(manifest, b"\0asm\x01\0\0\x01", CONFIG)
    with pytest.raises(SizeLimitError):
        assemble_package(manifest, MODULE, CONFIG + b"x")


@given(st.binary(max_size=2048))
def test_parse_only_raises_documented_errors(data: bytes) -> None:
    try:
        parse_package_manifest(data)
    except (PackageFormatError, SizeLimitError):
        pass


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=8),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "schemaVersion",
                        "mediaType",
                        "artifactType",
                        "config",
                        "layers",
                        "digest",
                        "size",
                        "annotations",
                        "data",
                    ]
                ),
                c,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_parse_structured_junk(value: Any) -> None:
    doc = _doc()
    doc["layers"][0] = value
    try:
        parse_package_manifest(canonical_json(doc))
    except (PackageFormatError, SizeLimitError):
        pass
