"""Starts one keep loader process per Keep, detached so Keeps outlive a keep-manager restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE_S = 5.0
"""How long a loader gets to stop its Keep after SIGTERM before it is killed (seconds)."""


class ProcessLauncher:
    """Runs ``python -m donjon.host.loader KEEP_DIR`` in its own session."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, keep_dir: Path) -> int:
        log = open(keep_dir / "loader.log", "ab")
        try:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own module
                [sys.executable, "-m", "donjon.host.loader", str(keep_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            log.close()
        self._children[proc.pid] = proc
        return proc.pid

    def alive(self, pid: int, keep_dir: Path) -> bool:
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            del self._children[pid]  # reaped: no zombie left behind
            return False
        return _is_loader_of(pid, keep_dir)

    def terminate(self, pid: int, keep_dir: Path) -> None:
        if not self.alive(pid, keep_dir):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            if not self.alive(pid, keep_dir):
                return
            time.sleep(0.02)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.alive(pid, keep_dir)


def _is_loader_of(pid: int, keep_dir: Path) -> bool:
    """True if *pid* runs and its command line names *keep_dir* (a reused pid will not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0] if ")" in stat else "?"
    if state in ("Z", "X"):
        return False
    return b"donjon.host.loader" in cmdline and os.fsencode(str(keep_dir)) in cmdline
