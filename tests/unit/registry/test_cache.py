"""The blob cache: atomic writes, re-checked reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from donjon.registry.cache import BlobCache
from donjon.registry.errors import DigestMismatchError
from donjon.registry.oci import Digest


def test_put_get_roundtrip(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    data = b"module bytes"
    digest = Digest.of(data)
    assert cache.get(digest, max_bytes=100) is None
    path = cache.put(digest, data)
    assert path == tmp_path / "c" / "blobs" / "sha256" / digest.hex
    assert cache.get(digest, max_bytes=100) == data
    assert cache.temporary_files() == []
    assert (tmp_path / "c" / "blobs").stat().st_mode & 0o077 == 0


def test_mismatching_put_stores_nothing(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    digest = Digest.of(b"a")
    with pytest.raises(DigestMismatchError):
        cache.put(digest, b"b")
    assert not cache.contains(digest)
    assert cache.temporary_files() == []


def test_corrupt_or_oversized_entries_are_dropped(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = b"x" * 100
    digest = Digest.of(data)
    cache.put(digest, data)
    cache.path(digest).write_bytes(b"y" * 100)  # the untrusted disk changed it
    assert cache.get(digest, max_bytes=1000) is None
    assert not cache.contains(digest)
    cache.put(digest, data)
    assert cache.get(digest, max_bytes=10) is None  # larger than the caller allows
    assert not cache.contains(digest)


def test_put_checked_stores_atomically_and_a_wrong_claim_is_caught_on_read(
    tmp_path: Path,
) -> None:
    cache = BlobCache(tmp_path / "c")
    data = b"checked by the caller"
    digest = Digest.of(data)
    assert cache.put_checked(digest, data) == cache.path(digest)
    assert cache.get(digest, max_bytes=100) == data
    # A caller that lied: the entry is stored (no hashing here) but never served (Rule 2).
    wrong = Digest.of(b"something else")
    cache.put_checked(wrong, data)
    assert cache.get(wrong, max_bytes=100) is None
    assert not cache.contains(wrong)
    assert cache.temporary_files() == []
