"""ProcessLauncher with real keep loaders: cold starts, and the pool of warm spares.

The Keeps here have unreadable launch parameters, so each loader writes a ``failed`` status and
ends at once: what is tested is how it started (the first line of its ``loader.log``), which
process it was, and what is left running. Each spare is a real loader and keep runtime (a Python
process that imports wasmtime), so the pools are small.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from donjon.errors import ConfigError
from donjon.host.launcher import ProcessLauncher
from donjon.host.pool import MAX_SPARES, PoolStatus
from donjon.wire.cbor import decode

TIMEOUT_S = 60.0
"""Longest wait for spares to warm up or loaders to end on a loaded 2-core machine (seconds)."""
WARM = "donjon loader: started from a warm spare ("
COLD = "donjon loader: started cold"
STILL_WARMING = "donjon loader: started from a spare still warming up ("


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _unreadable_keep(tmp_path: Path, keep_id: str) -> Path:
    keep_dir = tmp_path / "keeps" / keep_id
    keep_dir.mkdir(parents=True)
    (keep_dir / "launch.cbor").write_bytes(b"\xff not cbor")
    return keep_dir


def _ended(launcher: ProcessLauncher, pid: int, keep_dir: Path) -> dict[str, object]:
    """Wait for the loader to end; its status."""
    _wait(lambda: not launcher.alive(pid, keep_dir), f"loader {pid} to end")
    status = decode((keep_dir / "status.cbor").read_bytes())
    assert isinstance(status, dict)
    return status


def _first_log_line(keep_dir: Path) -> str:
    return (keep_dir / "loader.log").read_text().splitlines()[0]


def _exists(pid: int) -> bool:
    """The process exists, zombie included (a zombie would be a child nobody reaped)."""
    return Path(f"/proc/{pid}").exists()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _runtime_of(spare: int) -> int:
    _wait(lambda: len(_children(spare)) == 1, f"the keep runtime of spare {spare}")
    return _children(spare)[0]


def _most_warming_until_ready(launcher: ProcessLauncher, ready: int) -> int:
    """Watch the pool until *ready* spares have warmed up; the most seen warming at once."""
    most = 0
    deadline = time.monotonic() + TIMEOUT_S
    while (status := launcher.status()).ready < ready:
        most = max(most, status.warming)
        assert time.monotonic() < deadline, f"timed out waiting for {ready} ready spares"
        time.sleep(0.005)
    return most


@pytest.mark.parametrize("kwargs", [{"spares": 0}, {"spare": False}], ids=["spares=0", "no-spare"])
def test_without_spares_every_keep_starts_cold(tmp_path: Path, kwargs: dict[str, int]) -> None:
    launcher = ProcessLauncher(**kwargs)  # type: ignore[arg-type]
    try:
        assert launcher.status() == PoolStatus(0, 0, 0, 0, closed=False)
        assert (launcher.spare_pid, launcher.spare_pids) == (None, ())
        keep_dir = _unreadable_keep(tmp_path, "0123456789abcdef")
        pid = launcher.start(keep_dir)
        status = _ended(launcher, pid, keep_dir)
        assert status["state"] == "failed"
        assert str(status["detail"]).startswith("unreadable launch parameters")
        assert _first_log_line(keep_dir) == COLD
        assert not launcher.alive(pid, tmp_path)  # another dir: never the same loader
        launcher.terminate(pid, keep_dir)  # a no-op on an ended loader
        assert launcher.spare_pids == ()
    finally:
        launcher.close()


def test_a_pool_serves_a_burst_from_warm_spares_then_refills_two_at_a_time(
    tmp_path: Path,
) -> None:
    launcher = ProcessLauncher(spares=3)
    try:
        assert _most_warming_until_ready(launcher, 3) <= 2
        spares = set(launcher.spare_pids)
        assert len(spares) == 3
        runtimes = {_runtime_of(s) for s in spares}
        keeps = [_unreadable_keep(tmp_path, f"{i:016x}") for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            pids = list(pool.map(launcher.start, keeps))
        assert len(set(pids)) == 4
        for pid, keep_dir in zip(pids, keeps, strict=True):
            assert _ended(launcher, pid, keep_dir)["state"] == "failed"
            # The loader wrote its pid and start time for a restarted manager to recognise it.
            assert (keep_dir / "loader.pid").read_text().split()[0] == str(pid)
        firsts = {pid: _first_log_line(k) for pid, k in zip(pids, keeps, strict=True)}
        warm = {pid for pid, line in firsts.items() if line.startswith(WARM)}
        assert warm == spares  # the three warm spares took three of the Keeps...
        [other] = set(pids) - spares  # ...and the fourth found none ready
        assert firsts[other] == COLD or firsts[other].startswith(STILL_WARMING)
        # The pool refills: three new spares, never one that served a Keep.
        assert _most_warming_until_ready(launcher, 3) <= 2
        refilled = set(launcher.spare_pids)
        assert len(refilled) == 3 and not refilled & set(pids)
        assert launcher.status().failures == 0
        assert all(not _exists(p) for p in runtimes)  # their runtimes ended with their Keeps
        new_runtimes = {_runtime_of(s) for s in refilled}
    finally:
        launcher.close()
    # close() ended the idle spares and their keep runtimes, and reaped them.
    assert launcher.spare_pids == () and launcher.status().closed
    assert not any(_exists(p) for p in refilled | new_runtimes)


def test_a_spare_that_dies_is_replaced(tmp_path: Path) -> None:
    launcher = ProcessLauncher(spares=1)
    try:
        assert launcher.wait_for_spares(1, timeout_s=TIMEOUT_S)
        first = launcher.spare_pid
        assert first is not None
        # Its keep runtime dies (the OOM killer, say): the spare is no longer warm; it ends and
        # the pool starts another.
        os.kill(_runtime_of(first), signal.SIGKILL)
        _wait(lambda: launcher.spare_pid not in (None, first), "a second spare")
        second = launcher.spare_pid
        assert second is not None
        assert launcher.wait_for_spares(1, timeout_s=TIMEOUT_S)
        second_runtime = _runtime_of(second)
        # The spare loader itself is killed: its runtime dies with it (PR_SET_PDEATHSIG).
        os.kill(second, signal.SIGKILL)
        _wait(lambda: launcher.spare_pid not in (None, first, second), "a third spare")
        assert launcher.wait_for_spares(1, timeout_s=TIMEOUT_S)
        # Both dead spares were reaped (no zombie), and the pool never counted them as failures
        # to warm up (they had warmed up).
        _wait(lambda: not any(_exists(p) for p in (first, second, second_runtime)), "reaping")
        assert launcher.status() == PoolStatus(1, ready=1, warming=0, failures=0, closed=False)
        keep_dir = _unreadable_keep(tmp_path, "0123456789abcdef")
        third = launcher.spare_pid
        assert launcher.start(keep_dir) == third
        _ended(launcher, third, keep_dir)
        assert _first_log_line(keep_dir).startswith(WARM)
    finally:
        launcher.close()


def test_a_closed_launcher_has_ended_its_spares_and_starts_keeps_cold(tmp_path: Path) -> None:
    launcher = ProcessLauncher(spares=2)
    assert launcher.wait_for_spares(2, timeout_s=TIMEOUT_S)
    spares = launcher.spare_pids
    runtimes = [_runtime_of(s) for s in spares]
    launcher.close()
    launcher.close()  # idempotent
    assert not any(_exists(p) for p in (*spares, *runtimes))
    assert launcher.spare_pid is None
    assert not launcher.wait_for_spares(1, timeout_s=0.1)
    keep_dir = _unreadable_keep(tmp_path, "0123456789abcdef")
    pid = launcher.start(keep_dir)
    assert pid not in spares
    assert _ended(launcher, pid, keep_dir)["state"] == "failed"
    assert _first_log_line(keep_dir) == COLD
    assert launcher.spare_pids == ()


def test_spares_is_a_number_in_range_given_once() -> None:
    with pytest.raises(ConfigError, match="not both"):
        ProcessLauncher(spares=2, spare=True)
    for bad in (-1, MAX_SPARES + 1):
        with pytest.raises(ConfigError, match=re.escape(f"0..{MAX_SPARES}")):
            ProcessLauncher(spares=bad)
