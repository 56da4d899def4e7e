"""KeepManager and CreateKeep: the keep manager's logic, with a Launcher written for the test.

``_TableLauncher`` implements the ``Launcher`` protocol (the seam the manager has for this), so the
logic is exercised without processes. The real ``ProcessLauncher`` (real loaders, the spare pool)
is tested in ``test_launcher.py``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from donjon.errors import ConfigError, DecodeError, KeepLaunchError, NotFoundError
from donjon.host.auth import Principal
from donjon.host.core import MAX_NONCE_BYTES, CreateKeep, KeepManager
from donjon.host.store import KeepState, KeepStore, write_atomic
from donjon.wire.cbor import decode, encode

ALICE = Principal("alice")
BOB = Principal("bob")
NONCE = bytes(range(32))


@dataclass
class _TableLauncher:
    """A Launcher whose loaders are entries in a table: alive until the test says otherwise."""

    next_pid: int = 1000
    live: dict[int, Path] = field(default_factory=dict)
    started: list[Path] = field(default_factory=list)
    terminated: list[int] = field(default_factory=list)
    fail_with: OSError | None = None

    def start(self, keep_dir: Path) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        self.next_pid += 1
        self.live[self.next_pid] = keep_dir
        self.started.append(keep_dir)
        return self.next_pid

    def alive(self, pid: int, keep_dir: Path) -> bool:
        return self.live.get(pid) == keep_dir

    def terminate(self, pid: int, keep_dir: Path) -> None:
        self.terminated.append(pid)
        self.live.pop(pid, None)

    def die(self, pid: int, keep_dir: Path, status: dict[str, Any] | None) -> None:
        """The loader ends, leaving *status* (as the real loader writes it), or nothing."""
        self.live.pop(pid, None)
        if status is not None:
            write_atomic(keep_dir / "status.cbor", encode(status))


@pytest.fixture
def launcher() -> _TableLauncher:
    return _TableLauncher()


@pytest.fixture
def manager(tmp_path: Path, launcher: _TableLauncher) -> KeepManager:
    return KeepManager(KeepStore(tmp_path), launcher, clock=lambda: 1700000000.0)


def _request(**overrides: Any) -> CreateKeep:
    return CreateKeep.from_dict({"backend": "nil", "nonce": NONCE} | overrides)


# -- CreateKeep ------------------------------------------------------------------------------


def test_create_keep_from_dict_defaults() -> None:
    req = CreateKeep.from_dict({"nonce": NONCE})
    assert req == CreateKeep(backend="nil", nonce=NONCE)
    assert req.launch_params("0123456789abcdef") == {
        "keep_id": "0123456789abcdef",
        "backend": "nil",
        "nonce": NONCE,
        "steward": None,
        "steward_ca_pem": None,
        "limits": {},
    }


def test_create_keep_full() -> None:
    req = CreateKeep.from_dict(
        {
            "backend": "nil",
            "nonce": bytes(MAX_NONCE_BYTES),
            "steward": "http://127.0.0.1:1",
            "steward_ca_pem": b"-----BEGIN CERTIFICATE-----",
            "limits": {"memory_mib": 64, "timeout_s": 2.5},
        }
    )
    assert req.limits == {"memory_mib": 64, "timeout_s": 2.5}
    assert req.steward == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "must be a CBOR map"),
        ({"nonce": NONCE, "evil": 1}, "unknown fields ['evil']"),
        ({}, "nonce must be"),
        ({"nonce": "text"}, "nonce must be"),
        ({"nonce": bytes(15)}, "nonce must be 16..64"),
        ({"nonce": bytes(MAX_NONCE_BYTES + 1)}, "nonce must be 16..64"),
        ({"nonce": NONCE, "backend": 1}, "backend must be text"),
        ({"nonce": NONCE, "steward": 7}, "steward must be a URL"),
        ({"nonce": NONCE, "steward": "h" * 2049}, "steward must be a URL"),
        ({"nonce": NONCE, "steward_ca_pem": "pem"}, "at most 64 KiB"),
        ({"nonce": NONCE, "steward_ca_pem": bytes(64 * 1024 + 1)}, "at most 64 KiB"),
        ({"nonce": NONCE, "limits": []}, "only memory_mib and timeout_s"),
        ({"nonce": NONCE, "limits": 0}, "only memory_mib and timeout_s"),
        ({"nonce": NONCE, "limits": {"fuel": 1}}, "only memory_mib and timeout_s"),
        ({"nonce": NONCE, "limits": {"memory_mib": 0}}, "limits.memory_mib must be a positive"),
        ({"nonce": NONCE, "limits": {"timeout_s": "1"}}, "limits.timeout_s must be a positive"),
        ({"nonce": NONCE, "limits": {"timeout_s": False}}, "limits.timeout_s must be a positive"),
    ],
)
def test_create_keep_refuses(body: Any, fragment: str) -> None:
    with pytest.raises(DecodeError) as e:
        CreateKeep.from_dict(body)
    assert fragment in e.value.diagnostics()


# -- create / get / list / stop ----------------------------------------------------------------


def test_create_saves_record_and_launch_params_then_starts(
    manager: KeepManager, launcher: _TableLauncher
) -> None:
    record = manager.create(ALICE, _request(limits={"timeout_s": 3}))
    assert record.state is KeepState.RUNNING
    assert (record.owner, record.backend, record.created_at) == ("alice", "nil", 1700000000.0)
    assert record.loader_pid == 1001
    assert record.limits == {"timeout_s": 3}
    keep_dir = manager.keep_dir(record.id)
    assert launcher.started == [keep_dir]
    params = decode((keep_dir / "launch.cbor").read_bytes())
    assert params["nonce"] == NONCE and params["keep_id"] == record.id
    assert (keep_dir / "launch.cbor").stat().st_mode & 0o777 == 0o600
    assert manager.get(ALICE, record.id) == record


def test_create_refuses_unknown_backend(manager: KeepManager, launcher: _TableLauncher) -> None:
    with pytest.raises(ConfigError, match="backend 'sev-snp' is not available on this host"):
        manager.create(ALICE, _request(backend="sev-snp"))
    assert launcher.started == []
    assert manager.list_keeps(ALICE) == []


def test_loader_that_cannot_start_fails_the_keep(
    manager: KeepManager, launcher: _TableLauncher
) -> None:
    launcher.fail_with = OSError(24, "Too many open files")
    with pytest.raises(KeepLaunchError, match="could not start the keep loader"):
        manager.create(ALICE, _request())
    [record] = manager.list_keeps(ALICE)
    assert record.state is KeepState.FAILED
    assert record.detail is not None and "Too many open files" in record.detail


def test_per_owner_limit_counts_only_live_keeps(tmp_path: Path, launcher: _TableLauncher) -> None:
    manager = KeepManager(KeepStore(tmp_path), launcher, max_keeps_per_owner=2)
    first = manager.create(ALICE, _request())
    manager.create(ALICE, _request())
    with pytest.raises(ConfigError, match="alice already has 2 Keeps"):
        manager.create(ALICE, _request())
    manager.create(BOB, _request())  # others are not affected
    manager.stop(ALICE, first.id)
    manager.create(ALICE, _request())  # a finished Keep frees its slot


def test_per_owner_limit_is_exact_under_concurrent_creates(
    tmp_path: Path, launcher: _TableLauncher
) -> None:
    # The clock is read between counting alice's Keeps and recording the new one: a slow clock
    # lets every thread count before any records, which over-admits unless admission is locked.
    def slow_clock() -> float:
        time.sleep(0.05)
        return 1700000000.0

    manager = KeepManager(KeepStore(tmp_path), launcher, clock=slow_clock, max_keeps_per_owner=3)
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        try:
            manager.create(ALICE, _request())
            outcomes.append("created")
        except ConfigError as e:
            outcomes.append(e.message)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 3
    refusals = [o for o in outcomes if o != "created"]
    assert len(refusals) == 5
    assert all("alice already has 3 Keeps (the limit is 3)" in r for r in refusals)
    assert len(manager.list_keeps(ALICE)) == 3 == len(launcher.started)


def test_only_the_owner_sees_a_keep(manager: KeepManager, launcher: _TableLauncher) -> None:
    record = manager.create(ALICE, _request())
    assert manager.list_keeps(BOB) == []
    with pytest.raises(NotFoundError) as e:
        manager.get(BOB, record.id)
    with pytest.raises(NotFoundError) as missing:
        manager.get(BOB, "0" * 16)
    assert str(e.value) == str(missing.value).replace("0" * 16, record.id)
    with pytest.raises(NotFoundError):
        manager.stop(BOB, record.id)
    assert launcher.terminated == []
    assert manager.get(ALICE, record.id).state is KeepState.RUNNING


@pytest.mark.parametrize("keep_id", ["../tokens", "0123", "0123456789ABCDEF", "", "0" * 17])
def test_malformed_ids_are_not_found(manager: KeepManager, keep_id: str) -> None:
    with pytest.raises(NotFoundError, match="16 hex digits"):
        manager.get(ALICE, keep_id)


def test_stop_terminates_the_loader_once(manager: KeepManager, launcher: _TableLauncher) -> None:
    record = manager.create(ALICE, _request())
    stopped = manager.stop(ALICE, record.id)
    assert (stopped.state, stopped.detail) == (KeepState.STOPPED, "stopped by its owner")
    assert launcher.terminated == [record.loader_pid]
    assert manager.stop(ALICE, record.id) == stopped
    assert launcher.terminated == [record.loader_pid]
    assert manager.get(ALICE, record.id) == stopped


def test_a_keep_that_ends_takes_the_loaders_status(
    manager: KeepManager, launcher: _TableLauncher
) -> None:
    record = manager.create(ALICE, _request())
    assert record.loader_pid is not None
    launcher.die(
        record.loader_pid,
        manager.keep_dir(record.id),
        {"state": "exited", "exit_code": 134, "detail": "the keep runtime exited with 134"},
    )
    ended = manager.get(ALICE, record.id)
    assert (ended.state, ended.exit_code) == (KeepState.EXITED, 134)
    assert ended.detail == "the keep runtime exited with 134"
    # Now finished: stopping it terminates nothing.
    assert manager.stop(ALICE, record.id) == ended
    assert launcher.terminated == []


@pytest.mark.parametrize(
    "status",
    [
        None,
        b"\xff",
        encode({"state": "exploded"}),
        encode(["exited"]),
        encode({"state": "exited", "pad": bytes(20 * 1024)}),
    ],
    ids=["missing", "not-cbor", "unknown-state", "not-a-map", "oversized"],
)
def test_a_vanished_loader_is_reaped_as_failed(
    manager: KeepManager, launcher: _TableLauncher, status: bytes | None
) -> None:
    record = manager.create(ALICE, _request())
    assert record.loader_pid is not None
    keep_dir = manager.keep_dir(record.id)
    launcher.die(record.loader_pid, keep_dir, None)
    if status is not None:
        (keep_dir / "status.cbor").write_bytes(status)
    ended = manager.get(ALICE, record.id)
    assert (ended.state, ended.detail) == (KeepState.FAILED, "keep loader vanished")


def test_status_with_odd_fields_is_sanitised(
    manager: KeepManager, launcher: _TableLauncher
) -> None:
    record = manager.create(ALICE, _request())
    assert record.loader_pid is not None
    launcher.die(
        record.loader_pid,
        manager.keep_dir(record.id),
        {"state": "stopped", "exit_code": True, "detail": 7},
    )
    ended = manager.get(ALICE, record.id)
    assert (ended.state, ended.exit_code, ended.detail) == (KeepState.STOPPED, None, None)


def test_reconcile_reattaches_and_reaps(tmp_path: Path, launcher: _TableLauncher) -> None:
    first = KeepManager(KeepStore(tmp_path), launcher)
    alive = first.create(ALICE, _request())
    dead = first.create(BOB, _request())
    done = first.create(ALICE, _request())
    first.stop(ALICE, done.id)
    assert dead.loader_pid is not None
    launcher.die(dead.loader_pid, first.keep_dir(dead.id), None)
    # A new manager over the same state (a restart) sees what happened meanwhile.
    second = KeepManager(KeepStore(tmp_path), launcher)
    attached, reaped = second.reconcile()
    assert (attached, reaped) == ([alive.id], [dead.id])
    assert second.get(BOB, dead.id).state is KeepState.FAILED
    assert second.get(ALICE, alive.id).state is KeepState.RUNNING
    assert second.reconcile() == ([alive.id], [])  # reaping happens once


def test_a_keep_being_created_is_not_reaped_by_a_concurrent_request(tmp_path: Path) -> None:
    # Another request (list, a relay's get) that reads the record while its loader is being
    # started must see it STARTING, not reap it as 'vanished' (which it would then save, and a
    # relay would refuse the Keep while its processes ran on, unstoppable). Found by
    # benchmarks/bench_deploy.py creating 20 Keeps at once.
    observed: list[KeepState] = []

    class ObservingLauncher(_TableLauncher):
        def start(self, keep_dir: Path) -> int:
            observed.extend(r.state for r in creating.list_keeps(ALICE))
            return super().start(keep_dir)

    creating = KeepManager(KeepStore(tmp_path), ObservingLauncher())
    record = creating.create(ALICE, _request())
    assert observed == [KeepState.STARTING]
    assert creating.get(ALICE, record.id).state is KeepState.RUNNING


def test_reconcile_reaps_a_keep_left_starting_by_a_crash(tmp_path: Path) -> None:
    store = KeepStore(tmp_path)
    # The manager died between saving the record and starting its loader.
    crashed = KeepManager(store, _TableLauncher(fail_with=None))
    record = crashed.create(ALICE, _request())
    store.save(record.with_state(KeepState.STARTING, loader_pid=None))
    restarted = KeepManager(store, _TableLauncher())
    assert restarted.get(ALICE, record.id).state is KeepState.STARTING  # not judged by a read
    assert restarted.reconcile() == ([], [record.id])
    assert restarted.get(ALICE, record.id).state is KeepState.FAILED


def test_damaged_record_does_not_stop_the_manager(
    manager: KeepManager, tmp_path: Path, launcher: _TableLauncher
) -> None:
    good = manager.create(ALICE, _request())
    bad = manager.create(ALICE, _request())
    (manager.keep_dir(bad.id) / "record.cbor").write_bytes(b"\x00garbage")
    assert [r.id for r in manager.list_keeps(ALICE)] == [good.id]
    assert manager.reconcile() == ([good.id], [])
    with pytest.raises(DecodeError):
        manager.get(ALICE, bad.id)
