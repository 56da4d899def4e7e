"""Starts one keep loader process per Keep, detached so Keeps outlive a keep-manager restart.

With ``spare=True`` (the keep manager's default) one *spare* loader is kept ready: a warm loader
whose keep runtime has already imported everything (``python -m donjon.host.loader --spare``).
:meth:`ProcessLauncher.start` hands the spare its Keep directory over a pipe and starts the next
spare, so a Keep's start no longer waits for two interpreters and their imports
(``benchmarks/bench_deploy.py``). Each spare serves one Keep and is never reused; a spare that is
not given a Keep ends when the pipe closes (the manager stopped or died).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from donjon.host._spawn import module_command
from donjon.host.loader import PID_FILE, process_start_time

STOP_GRACE_S = 5.0
"""How long a loader gets to stop its Keep after SIGTERM before it is killed (seconds)."""
LOADER_MODULE = "donjon.host.loader"


class ProcessLauncher:
    """Runs ``python -m donjon.host.loader`` in its own session, one per Keep.

    Args:
        spare: keep one warm loader ready for the next Keep.

    Thread-safe: the keep manager creates Keeps from several threads at once.
    """

    def __init__(self, *, spare: bool = True) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._use_spare = spare
        self._spare: subprocess.Popen[bytes] | None = None
        self._closed = False
        if spare:
            self._spare = self._spawn_spare()

    def start(self, keep_dir: Path) -> int:
        with self._lock:
            spare, self._spare = self._spare, None
        proc = self._assign(spare, keep_dir) if spare is not None else None
        if proc is None:
            proc = self._spawn_cold(keep_dir)
        with self._lock:
            self._children[proc.pid] = proc
            if self._use_spare and not self._closed and self._spare is None:
                self._spare = self._spawn_spare()
        return proc.pid

    def alive(self, pid: int, keep_dir: Path) -> bool:
        with self._lock:
            child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            with self._lock:
                self._children.pop(pid, None)  # reaped: no zombie left behind
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
            time.sleep(0.01)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.alive(pid, keep_dir)

    def close(self) -> None:
        """End the spare (Keeps already started keep running)."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            _discard(spare)

    @property
    def spare_pid(self) -> int | None:
        """The spare loader's pid, if one is ready (for tests and the benchmark)."""
        with self._lock:
            return self._spare.pid if self._spare is not None else None

    def _spawn_spare(self) -> subprocess.Popen[bytes] | None:
        try:
            return subprocess.Popen(  # noqa: S603 - fixed argv, our own module
                module_command(LOADER_MODULE, "main", "--spare"),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            return None  # no spare: Keeps start cold

    def _assign(
        self, spare: subprocess.Popen[bytes], keep_dir: Path
    ) -> subprocess.Popen[bytes] | None:
        """Hand *spare* its Keep; None if it is gone (then the Keep starts cold)."""
        if spare.stdin is None or spare.poll() is not None:
            _discard(spare)
            return None
        try:
            spare.stdin.write(os.fsencode(str(keep_dir.absolute())) + b"\n")
            spare.stdin.close()
        except OSError:
            _discard(spare)
            return None
        return spare

    def _spawn_cold(self, keep_dir: Path) -> subprocess.Popen[bytes]:
        log = open(keep_dir / "loader.log", "ab")
        try:
            return subprocess.Popen(  # noqa: S603 - fixed argv, our own module
                module_command(LOADER_MODULE, "main", str(keep_dir)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            log.close()


def _discard(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        try:
            proc.stdin.close()  # a spare ends (with its keep runtime) when its stdin closes
        except OSError:
            pass
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _is_loader_of(pid: int, keep_dir: Path) -> bool:
    """True if *pid* is the loader of *keep_dir*: a live loader process whose pid and start
    time are the ones it wrote to ``KEEP_DIR/loader.pid`` (a reused pid has another start time),
    or, for a loader started with its Keep on the command line, one that names *keep_dir*."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0] if ")" in stat else "?"
    if state in ("Z", "X") or LOADER_MODULE.encode() not in cmdline:
        return False
    if os.fsencode(str(keep_dir)) in cmdline.split(b"\0"):
        return True
    try:
        recorded = (keep_dir / PID_FILE).read_text().split()
    except OSError:
        return False
    return recorded == [str(pid), process_start_time(pid) or "?"]
