"""Keep records on disk: atomic replacement, bounded reads, damaged records skipped."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from donjon.errors import DecodeError, NotFoundError
from donjon.host.store import (
    MAX_RECORD_BYTES,
    KeepRecord,
    KeepState,
    KeepStore,
    new_keep_id,
    read_bounded,
    valid_keep_id,
    write_atomic,
)
from donjon.wire.cbor import encode


def _record(**changes: object) -> KeepRecord:
    base = KeepRecord(
        id="0123456789abcdef",
        owner="alice",
        backend="nil",
        state=KeepState.RUNNING,
        created_at=1700000000.5,
        loader_pid=4242,
        limits={"timeout_s": 2.0},
    )
    state = changes.pop("state", base.state)
    assert isinstance(state, KeepState)
    return base.with_state(state, **changes)


@pytest.fixture
def store(tmp_path: Path) -> KeepStore:
    return KeepStore(tmp_path)


def test_round_trip(store: KeepStore) -> None:
    record = _record()
    store.save(record)
    assert store.load(record.id) == record
    assert list(store.all()) == [record]
    path = store.keep_dir(record.id) / "record.cbor"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700


def test_to_dict_is_plain_cbor() -> None:
    d = _record().to_dict()
    assert d["state"] == "running"
    assert KeepRecord.from_dict(d) == _record()
    assert encode(d)  # no enum or dataclass left in it


def test_states() -> None:
    assert [s for s in KeepState if s.finished] == [
        KeepState.EXITED,
        KeepState.STOPPED,
        KeepState.FAILED,
    ]
    assert not KeepState.STARTING.finished and not KeepState.RUNNING.finished


def test_ids() -> None:
    ids = {new_keep_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(valid_keep_id(i) for i in ids)
    for bad in ["", "../../etc", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0"]:
        assert not valid_keep_id(bad)


@pytest.mark.parametrize("keep_id", ["..", "../tokens", "/etc/passwd", "0" * 15])
def test_keep_dir_refuses_paths_outside(store: KeepStore, keep_id: str) -> None:
    with pytest.raises(NotFoundError, match="16 hex digits"):
        store.keep_dir(keep_id)


def test_load_missing(store: KeepStore) -> None:
    with pytest.raises(NotFoundError, match="no Keep 0123456789abcdef"):
        store.load("0123456789abcdef")


def test_save_replaces_whole_and_leaves_no_temp_files(store: KeepStore) -> None:
    store.save(_record())
    store.save(_record(state=KeepState.EXITED, exit_code=3))
    assert store.load("0123456789abcdef").exit_code == 3
    assert [p.name for p in store.keep_dir("0123456789abcdef").iterdir()] == ["record.cbor"]


def test_write_atomic_failure_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "data"
    write_atomic(target, b"old")
    # A rename onto a non-empty directory fails after the temp file is written.
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "x").write_bytes(b"")
    with pytest.raises(OSError):
        write_atomic(blocker, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "data"]


def test_read_bounded(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_bounded(path, 10) == b"x" * 10
    with pytest.raises(DecodeError, match="larger than 9 bytes"):
        read_bounded(path, 9)


DAMAGED: dict[str, bytes] = {
    "not-cbor": b"\xff\xff",
    "empty": b"",
    "not-a-map": encode([1, 2]),
    "missing-owner": encode({k: v for k, v in _record().to_dict().items() if k != "owner"}),
    "bad-state": encode(_record().to_dict() | {"state": "zombie"}),
    "bool-pid": encode(_record().to_dict() | {"loader_pid": True}),
    "text-pid": encode(_record().to_dict() | {"loader_pid": "1"}),
    "bad-id": encode(_record().to_dict() | {"id": "../../x"}),
    "oversized": encode(_record().to_dict() | {"detail": "x" * MAX_RECORD_BYTES}),
    "trailing": encode(_record().to_dict()) + b"\x00",
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_damaged_records_are_skipped_not_fatal(store: KeepStore, damage: str) -> None:
    good = _record(id="fedcba9876543210")
    store.save(good)
    store.save(_record())
    (store.keep_dir("0123456789abcdef") / "record.cbor").write_bytes(DAMAGED[damage])
    assert list(store.all()) == [good]
    with pytest.raises(DecodeError):
        store.load("0123456789abcdef")


def test_stray_entries_are_ignored(store: KeepStore) -> None:
    store.save(_record())
    (store.root / "README").write_text("not a keep")
    (store.root / "not-an-id").mkdir()
    (store.root / "fedcba9876543210").mkdir()  # no record yet (a crash before the first save)
    assert [r.id for r in store.all()] == ["0123456789abcdef"]
