"""The compiled-module cache: authenticated entries, atomic writes, refusal of anything else.

These tests need no wasmtime: the cache stores opaque bytes. The executor tests check that a
refused entry is recompiled and never loaded.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from donjon.keep.cache import (
    KEY_BYTES,
    CacheKey,
    CacheStatus,
    ModuleCache,
    default_cache_dir,
)

KEY = CacheKey(engine="wasmtime=50.0.1;lib=1;arch=x86_64;epochs=0", module_sha256="ab" * 32)
OTHER = CacheKey(engine=KEY.engine, module_sha256="cd" * 32)
PAYLOAD = b"\x7fELF pretend native code" * 100


@pytest.fixture
def cache(tmp_path: Path) -> ModuleCache:
    return ModuleCache(tmp_path / "donjon")


def test_put_then_lookup_returns_the_exact_payload(cache: ModuleCache) -> None:
    assert cache.lookup(KEY).status is CacheStatus.MISS
    cache.put(KEY, PAYLOAD)
    found = cache.lookup(KEY)
    assert found.status is CacheStatus.HIT
    assert found.payload == PAYLOAD
    assert cache.lookup(OTHER).status is CacheStatus.MISS


def test_key_file_and_directories_are_private(cache: ModuleCache) -> None:
    cache.put(KEY, PAYLOAD)
    key_file = cache.directory / "cache.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.stat().st_size == KEY_BYTES
    assert stat.S_IMODE(cache.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache.directory / "modules").stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.path_for(KEY).stat().st_mode) == 0o600


def test_writes_leave_no_temporary_files(cache: ModuleCache) -> None:
    cache.put(KEY, PAYLOAD)
    cache.put(KEY, PAYLOAD)  # overwriting is atomic too
    names = sorted(p.name for p in (cache.directory / "modules").iterdir())
    assert names == [cache.path_for(KEY).name]
    assert sorted(p.name for p in cache.directory.iterdir()) == ["cache.key", "modules"]


@pytest.mark.parametrize("offset", [0, 7, 8, 39, 40, -1])
def test_a_changed_byte_anywhere_is_refused_and_the_entry_deleted(
    cache: ModuleCache, offset: int
) -> None:
    cache.put(KEY, PAYLOAD)
    path = cache.path_for(KEY)
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x01
    path.write_bytes(bytes(blob))
    found = cache.lookup(KEY)
    assert found.status is CacheStatus.REJECTED
    assert found.payload is None
    assert not path.exists()
    assert cache.lookup(KEY).status is CacheStatus.MISS


def test_a_valid_entry_moved_under_another_modules_name_is_refused(cache: ModuleCache) -> None:
    cache.put(OTHER, b"code of another module")
    os.replace(cache.path_for(OTHER), cache.path_for(KEY))
    found = cache.lookup(KEY)
    assert found.status is CacheStatus.REJECTED
    assert "integrity" in found.reason


def test_an_entry_made_with_another_users_key_is_refused(tmp_path: Path) -> None:
    mine = ModuleCache(tmp_path / "mine")
    theirs = ModuleCache(tmp_path / "theirs")
    mine.put(OTHER, b"x")  # creates my key
    theirs.put(KEY, PAYLOAD)
    os.replace(theirs.path_for(KEY), mine.path_for(KEY))
    assert mine.lookup(KEY).status is CacheStatus.REJECTED


def test_a_planted_file_without_our_header_is_refused(cache: ModuleCache) -> None:
    cache.put(OTHER, b"x")
    cache.path_for(KEY).write_bytes(b"\0asm native code from somewhere else")
    assert cache.lookup(KEY).status is CacheStatus.REJECTED
    assert not cache.path_for(KEY).exists()


def test_a_short_file_is_refused(cache: ModuleCache) -> None:
    cache.put(OTHER, b"x")
    cache.path_for(KEY).write_bytes(b"DJCWASM1")
    assert cache.lookup(KEY).status is CacheStatus.REJECTED


def test_a_symlink_in_place_of_an_entry_is_not_followed(cache: ModuleCache, tmp_path: Path) -> None:
    cache.put(OTHER, b"x")
    target = tmp_path / "elsewhere.cwasm"
    target.write_bytes(cache.path_for(OTHER).read_bytes())
    cache.path_for(KEY).symlink_to(target)
    assert cache.lookup(KEY).status is CacheStatus.REJECTED
    assert target.exists()  # only the link is removed


def test_entries_are_not_trusted_without_the_key_file(cache: ModuleCache) -> None:
    cache.put(KEY, PAYLOAD)
    (cache.directory / "cache.key").unlink()
    fresh = ModuleCache(cache.directory)
    assert fresh.lookup(KEY).status is CacheStatus.MISS
    fresh.put(KEY, PAYLOAD)  # a new key; the old entry is replaced
    assert fresh.lookup(KEY).payload == PAYLOAD


def test_a_key_file_readable_by_others_disables_the_cache(cache: ModuleCache) -> None:
    cache.put(KEY, PAYLOAD)
    (cache.directory / "cache.key").chmod(0o644)
    fresh = ModuleCache(cache.directory)
    assert fresh.lookup(KEY).status is CacheStatus.MISS
    fresh.put(OTHER, b"y")  # does nothing
    assert not fresh.path_for(OTHER).exists()


def test_a_key_file_of_the_wrong_size_disables_the_cache(cache: ModuleCache) -> None:
    cache.put(KEY, PAYLOAD)
    key_file = cache.directory / "cache.key"
    key_file.write_bytes(b"short")
    assert ModuleCache(cache.directory).lookup(KEY).status is CacheStatus.MISS


def test_a_directory_writable_by_others_disables_the_cache(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    cache = ModuleCache(directory)
    cache.put(KEY, PAYLOAD)
    assert not (directory / "cache.key").exists()
    assert cache.lookup(KEY).status is CacheStatus.MISS


def test_an_unwritable_location_never_fails_a_run(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    cache = ModuleCache(blocker / "donjon")  # cannot be created under a file
    cache.put(KEY, PAYLOAD)
    assert cache.lookup(KEY).status is CacheStatus.MISS


def test_two_caches_racing_to_create_the_key_agree(tmp_path: Path) -> None:
    first = ModuleCache(tmp_path / "d")
    second = ModuleCache(tmp_path / "d")
    first.put(KEY, PAYLOAD)
    second.put(OTHER, b"other")
    assert first.lookup(OTHER).payload == b"other"
    assert second.lookup(KEY).payload == PAYLOAD


def test_pruning_removes_the_least_recently_used_entries(tmp_path: Path) -> None:
    roomy = ModuleCache(tmp_path / "d")
    keys = [CacheKey(engine="e", module_sha256=f"{i:064x}") for i in range(3)]
    for age, key in enumerate(keys):
        roomy.put(key, bytes(1000))
        os.utime(roomy.path_for(key), (1_000_000 + age, 1_000_000 + age))
    entry_bytes = roomy.path_for(keys[0]).stat().st_size
    # Room for three entries: the fourth write must evict exactly one.
    tight = ModuleCache(tmp_path / "d", max_total_bytes=3 * entry_bytes)
    assert tight.lookup(keys[0]).status is CacheStatus.HIT  # now the most recently used
    tight.put(CacheKey(engine="e", module_sha256="f" * 64), bytes(1000))
    present = [tight.path_for(k).exists() for k in keys]
    assert present == [True, False, True]


def test_cache_key_identity_depends_on_engine_and_module() -> None:
    assert KEY.entry_id() != OTHER.entry_id()
    assert KEY.entry_id() != CacheKey(engine=KEY.engine + ";x", module_sha256="ab" * 32).entry_id()
    assert KEY.text() == f"{KEY.engine}\n{'ab' * 32}\n".encode()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"}, Path("/x/cache/donjon")),
        ({"XDG_CACHE_HOME": "relative", "HOME": "/home/u"}, Path("/home/u/.cache/donjon")),
        ({"XDG_CACHE_HOME": "", "HOME": "/home/u"}, Path("/home/u/.cache/donjon")),
        ({"HOME": "/home/u"}, Path("/home/u/.cache/donjon")),
    ],
)
def test_default_cache_dir_follows_xdg(environ: dict[str, str], expected: Path) -> None:
    assert default_cache_dir(environ) == expected
