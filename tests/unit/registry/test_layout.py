"""OCI image layouts: written atomically, read as untrusted input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from donjon.errors import ConflictError, NotFoundError
from donjon.registry.errors import DigestMismatchError, PackageFormatError, SizeLimitError
from donjon.registry.layout import read_layout, write_layout
from donjon.registry.package import build_package

BUILT = build_package(b"\0asm\x01\0\0\0" + b"\0" * 100, b'args = ["a"]\n')


def test_write_read_roundtrip(tmp_path: Path) -> None:
    out = write_layout(tmp_path / "pkg", BUILT, tag="v1")
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((out / "index.json").read_text())
    entry = index["manifests"][0]
    assert entry["digest"] == str(BUILT.digest)
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "v1"}
    assert sorted(p.name for p in (out / "blobs" / "sha256").iterdir()) == sorted(
        {str(BUILT.digest)[7:]} | {str(d.digest)[7:] for d, _ in BUILT.blobs()}
    )
    again = read_layout(out)
    assert again.digest == BUILT.digest and again.module == BUILT.module
    assert read_layout(out, tag="v1").digest == BUILT.digest
    with pytest.raises(NotFoundError, match="tagged"):
        read_layout(out, tag="v2")
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_existing_output_is_not_touched(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    with pytest.raises(ConflictError, match="already exists"):
        write_layout(tmp_path / "pkg", BUILT)
    assert list((tmp_path / "pkg").iterdir()) == []


def test_tampered_layouts_are_refused(tmp_path: Path) -> None:
    out = write_layout(tmp_path / "pkg", BUILT)
    module = out / "blobs" / "sha256" / BUILT.manifest.module.digest.hex
    module.write_bytes(module.read_bytes()[:-1] + b"\1")
    with pytest.raises(DigestMismatchError):
        read_layout(out)
    module.write_bytes(module.read_bytes() + b"\0")
    with pytest.raises(SizeLimitError):
        read_layout(out)
    module.unlink()
    with pytest.raises(NotFoundError, match="missing"):
        read_layout(out)
    with pytest.raises(SizeLimitError):
        write_layout(tmp_path / "p2", BUILT)
        read_layout(tmp_path / "p2", max_module_bytes=10)
    (out / "oci-layout").write_text('{"imageLayoutVersion":"2.0.0"}')
    with pytest.raises(PackageFormatError, match="imageLayoutVersion"):
        read_layout(out)
    with pytest.raises(NotFoundError, match="not an OCI image layout"):
        read_layout(tmp_path)
