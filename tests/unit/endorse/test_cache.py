"""The on-disk cache: atomic entries, and anything damaged is ignored, never trusted."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from donjon.endorse.cache import ENTRY_MAGIC, MAX_ISSUER_CHAIN_BYTES, CacheEntry, EndorsementCache

KEY = "/vcek/v1/Milan/abcd?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
WHEN = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
LIMIT = 64 * 1024


def _entry(body: bytes = b"\x30\x82body", chain: bytes | None = None) -> CacheEntry:
    return CacheEntry(key=KEY, body=body, issuer_chain=chain, fetched_at=WHEN)


def test_round_trip_with_and_without_an_issuer_chain(tmp_path: Path) -> None:
    cache = EndorsementCache(tmp_path / "c")
    cache.store(_entry())
    assert cache.load(KEY, max_body_bytes=LIMIT) == _entry()
    cache.store(_entry(b"{}", b"-----BEGIN CERTIFICATE-----\n"))
    assert cache.load(KEY, max_body_bytes=LIMIT) == _entry(b"{}", b"-----BEGIN CERTIFICATE-----\n")
    # An empty chain header is kept apart from no header.
    cache.store(_entry(b"{}", b""))
    loaded = cache.load(KEY, max_body_bytes=LIMIT)
    assert loaded is not None and loaded.issuer_chain == b""


def test_one_file_per_key_named_by_its_hash_and_no_temporary_left(tmp_path: Path) -> None:
    cache = EndorsementCache(tmp_path)
    cache.store(_entry())
    cache.store(_entry(b"newer"))
    files = list(tmp_path.iterdir())
    assert files == [cache.path_for(KEY)]
    assert files[0].name.endswith(".entry") and len(files[0].stem) == 64
    assert files[0].read_bytes().startswith(ENTRY_MAGIC)
    assert cache.load(KEY, max_body_bytes=LIMIT) == _entry(b"newer")


def test_directory_is_private(tmp_path: Path) -> None:
    cache = EndorsementCache(tmp_path / "new" / "dir")
    cache.store(_entry())
    assert stat.S_IMODE((tmp_path / "new" / "dir").stat().st_mode) == 0o700


def test_absent_is_none(tmp_path: Path) -> None:
    assert EndorsementCache(tmp_path / "missing").load(KEY, max_body_bytes=LIMIT) is None


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flipped body byte":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif how == "truncated":
        path.write_bytes(data[:-3])
    elif how == "appended":
        path.write_bytes(data + b"x")
    elif how == "other magic":
        path.write_bytes(b"donjon-endorsement/9\n" + data[len(ENTRY_MAGIC) :])
    elif how == "header not json":
        path.write_bytes(ENTRY_MAGIC + b"{nope\n" + data)
    elif how == "no header end":
        path.write_bytes(ENTRY_MAGIC + b"x" * 5000)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "naive time":
        head, _, rest = data[len(ENTRY_MAGIC) :].partition(b"\n")
        header = json.loads(head)
        header["fetched_at"] = "2026-11-27T15:00:00"
        path.write_bytes(ENTRY_MAGIC + json.dumps(header).encode() + b"\n" + rest)
    else:  # pragma: no cover
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "flipped body byte",
        "truncated",
        "appended",
        "other magic",
        "header not json",
        "no header end",
        "empty",
        "naive time",
    ],
)
def test_damaged_entries_are_ignored(tmp_path: Path, how: str) -> None:
    cache = EndorsementCache(tmp_path)
    cache.store(_entry())
    _damage(cache.path_for(KEY), how)
    assert cache.load(KEY, max_body_bytes=LIMIT) is None
    # The next store replaces it.
    cache.store(_entry())
    assert cache.load(KEY, max_body_bytes=LIMIT) == _entry()


def test_an_entry_copied_to_another_key_is_not_used_for_it(tmp_path: Path) -> None:
    cache = EndorsementCache(tmp_path)
    cache.store(_entry())
    other = "/vcek/v1/Milan/ffff?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
    cache.path_for(other).write_bytes(cache.path_for(KEY).read_bytes())
    assert cache.load(other, max_body_bytes=LIMIT) is None


def test_oversized_entries_are_ignored_unread(tmp_path: Path) -> None:
    cache = EndorsementCache(tmp_path)
    cache.store(_entry(b"x" * 2000))
    assert cache.load(KEY, max_body_bytes=1000) is None
    cache.path_for(KEY).write_bytes(ENTRY_MAGIC + b"\0" * (LIMIT + MAX_ISSUER_CHAIN_BYTES + 8192))
    assert cache.load(KEY, max_body_bytes=LIMIT) is None


def test_a_directory_in_place_of_an_entry_is_ignored(tmp_path: Path) -> None:
    cache = EndorsementCache(tmp_path)
    cache.path_for(KEY).mkdir()
    assert cache.load(KEY, max_body_bytes=LIMIT) is None
    cache.store(_entry())  # cannot replace a directory: logged, not raised
    assert cache.load(KEY, max_body_bytes=LIMIT) is None


def test_an_unwritable_cache_is_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A file where the directory should be: mkdir fails whoever runs the test (root included).
    (tmp_path / "blocked").write_bytes(b"")
    cache = EndorsementCache(tmp_path / "blocked" / "sub")
    cache.store(_entry())
    assert "cannot write cache entry" in caplog.text
    assert cache.load(KEY, max_body_bytes=LIMIT) is None
