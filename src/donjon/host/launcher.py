"""Starts one keep loader process per Keep, detached so Keeps outlive a keep-manager restart.

A pool of *spare* loaders is kept ready (``ProcessLauncher(spares=N)``, ``donjon host serve
--spares N``; 1 by default): warm loaders whose keep runtime has already imported everything
(``python -m donjon.host.loader --spare``). :meth:`ProcessLauncher.start` hands a spare its Keep
directory over a pipe, so a Keep's start does not wait for two interpreters and their imports
(``benchmarks/bench_deploy.py``); with no spare left it starts the loader cold.

How the pool runs (its policy is :class:`donjon.host.pool.SparePool`, pure and tested alone):

- A background thread (``donjon-spares``) starts spares and replaces the ones taken: a create
  request never waits for a spawn. At most two warm up at once, so a burst that takes every
  spare refills two by two instead of starting a dozen interpreters on a 2-core host.
- Each spare reports on its stdout when its keep runtime has warmed up (``ready``); a Keep takes
  a ready spare first (the one that waited longest), else the one warming up longest.
- A spare that ends before it has a Keep (killed, out of memory, its runtime died) is seen at
  once (its stdout closes), forgotten and replaced; spares dying while warming up back off.
- Each spare serves one Keep and is never reused; it holds no key and no nonce before it has
  its Keep (the runtime makes its key only after its launch message).
- Spares end when the pipe to them closes: :meth:`ProcessLauncher.close` (the keep manager
  stopping), or the keep manager dying. A restarted manager never adopts a spare: it has no
  record, and its pipe is gone.

Cost: each idle spare is a loader and a keep runtime, ~77 MiB RSS (~47 MiB PSS) here.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from donjon.errors import ConfigError
from donjon.host._spawn import module_command
from donjon.host.loader import PID_FILE, READY_LINE, process_start_time
from donjon.host.pool import DEFAULT_SPARES, MAX_WARMING, PoolStatus, SparePool

__all__ = ["LOADER_MODULE", "STOP_GRACE_S", "ProcessLauncher"]

_logger = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
"""How long a loader gets to stop its Keep after SIGTERM before it is killed (seconds)."""
LOADER_MODULE = "donjon.host.loader"
_CLOSE_JOIN_S = 10.0
"""Longest wait for the pool thread to stop when the launcher closes (seconds)."""
_REPORT_BYTES = 256
"""Most a spare's report pipe is read at once (bytes): it writes one ``ready`` line."""


class ProcessLauncher:
    """Runs ``python -m donjon.host.loader`` in its own session, one per Keep.

    Args:
        spares: warm spare loaders to keep ready, 0 to 16 (0: every Keep starts cold).
        spare: the older on/off form (``True`` is ``spares=1``, ``False`` is ``spares=0``).
        max_warming: spares warming up at once (see :mod:`donjon.host.pool`).

    Raises:
        ConfigError: both *spares* and *spare* given, or *spares* out of range.

    Thread-safe: the keep manager creates Keeps from several threads at once.
    """

    def __init__(
        self,
        *,
        spares: int | None = None,
        spare: bool | None = None,
        max_warming: int = MAX_WARMING,
    ) -> None:
        if spares is not None and spare is not None:
            raise ConfigError("give spares (a number) or spare (on/off), not both")
        target = spares if spares is not None else DEFAULT_SPARES if spare is None else int(spare)
        self._pool = SparePool(target, max_warming=max_warming)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._spares: dict[int, subprocess.Popen[bytes]] = {}
        self._retired: list[IO[bytes]] = []  # report pipes of taken spares, for the thread
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        if target:
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._thread = threading.Thread(
                target=self._keep_pool, name="donjon-spares", daemon=True
            )
            self._thread.start()

    # -- the Launcher protocol ---------------------------------------------------------------

    def start(self, keep_dir: Path) -> int:
        """Start the loader of the Keep in *keep_dir* (from a spare if one is left); its pid."""
        spare = self._take_spare()
        proc = self._assign(spare, keep_dir) if spare is not None else None
        if proc is None:
            proc = self._spawn_cold(keep_dir)
        with self._lock:
            self._children[proc.pid] = proc
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

    # -- the pool ----------------------------------------------------------------------------

    def close(self) -> None:
        """Discard every spare and start no more (Keeps already started keep running).

        Idempotent. Afterwards :meth:`start` starts every Keep cold.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            spares = [self._spares.pop(key) for key in self._pool.close()]
            self._changed.notify_all()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=_CLOSE_JOIN_S)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        _discard_all(spares, reports=True)  # the pool thread has ended: its pipes are ours

    def status(self) -> PoolStatus:
        """How many spares are ready and warming up now."""
        with self._lock:
            return self._pool.status(time.monotonic())

    @property
    def spare_pids(self) -> tuple[int, ...]:
        """The spare loaders' pids, oldest first (for tests, the benchmark and diagnostics)."""
        with self._lock:
            return self._pool.keys

    @property
    def spare_pid(self) -> int | None:
        """The pid of the spare the next Keep would take, if there is one."""
        with self._lock:
            return self._pool.peek()

    def wait_for_spares(self, ready: int, *, timeout_s: float) -> bool:
        """Wait until at least *ready* spares have warmed up; False if *timeout_s* passes first
        (or the launcher closes)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                if self._pool.status(time.monotonic()).ready >= ready:
                    return True
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return False
                self._changed.wait(left)

    # -- internals ---------------------------------------------------------------------------

    def _take_spare(self) -> subprocess.Popen[bytes] | None:
        """A live spare for a new Keep, out of the pool (the thread starts its replacement).

        Whoever takes a spare out of ``_spares`` owns its process and stdin; its report pipe
        (stdout) stays the pool thread's to unregister and close, so no thread closes a file
        descriptor another one still watches.
        """
        taken: subprocess.Popen[bytes] | None = None
        dead: list[subprocess.Popen[bytes]] = []
        with self._lock:
            while (key := self._pool.take()) is not None:
                proc = self._spares.pop(key)
                if proc.stdout is not None:
                    self._retired.append(proc.stdout)
                if proc.poll() is None:
                    taken = proc
                    break
                dead.append(proc)  # ended just now: the pool thread had not seen it yet
            self._changed.notify_all()
        self._wake()
        _discard_all(dead, reports=False)
        return taken

    def _wake(self) -> None:
        if self._wake_w < 0:
            return  # no pool thread
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full (the thread wakes anyway), or closed meanwhile

    def _keep_pool(self) -> None:
        """The pool thread: start spares when due, and watch their report pipes."""
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        watched: dict[int, IO[bytes]] = {}
        try:
            while True:
                with self._lock:
                    if self._closed:
                        return
                    now = time.monotonic()
                    due = self._pool.spawns_due(now)
                    retired, self._retired = self._retired, []
                    timeout = self._pool.next_check(now)
                for pipe in retired:
                    _unwatch(selector, watched, pipe)
                for _ in range(due):
                    self._spawn_spare(selector, watched)
                if due:
                    continue  # the pool may want more (e.g. a spare that failed at once)
                for key, _ in selector.select(timeout):
                    if key.data is None:
                        _drain(self._wake_r)
                    else:
                        self._on_report(key.data, selector, watched)
        finally:
            for pipe in list(watched.values()):
                _unwatch(selector, watched, pipe)
            with self._lock:
                retired, self._retired = self._retired, []
            for pipe in retired:
                pipe.close()
            selector.close()

    def _spawn_spare(self, selector: selectors.BaseSelector, watched: dict[int, IO[bytes]]) -> None:
        try:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own module
                module_command(LOADER_MODULE, "main", "--spare"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            _logger.warning("could not start a spare keep loader: %s", e)
            with self._lock:
                self._pool.spawn_failed(time.monotonic())
            return
        if proc.stdout is None:  # pragma: no cover - stdout=PIPE always gives one
            raise RuntimeError("subprocess gave no stdout pipe")
        with self._lock:
            if not self._closed:
                self._pool.spawned(proc.pid, time.monotonic())
                self._spares[proc.pid] = proc
                selector.register(proc.stdout, selectors.EVENT_READ, proc.pid)
                watched[proc.pid] = proc.stdout
                return
        _discard_all([proc], reports=True)  # closed meanwhile: never watched

    def _on_report(
        self, pid: int, selector: selectors.BaseSelector, watched: dict[int, IO[bytes]]
    ) -> None:
        pipe = watched[pid]
        try:
            data = os.read(pipe.fileno(), _REPORT_BYTES)
        except OSError:
            data = b""
        ended: subprocess.Popen[bytes] | None = None
        with self._lock:
            now = time.monotonic()
            if data:
                if READY_LINE.strip() in data:
                    self._pool.ready(pid, now)
                    self._changed.notify_all()
                return
            # End of file: the spare ended, or it was taken and its stdout is its Keep's log now.
            ended = self._spares.pop(pid, None)
            if ended is not None:
                self._pool.ended(pid, now)
                self._changed.notify_all()
        _unwatch(selector, watched, pipe)
        if ended is not None:
            _logger.info("spare keep loader %d ended before it had a Keep; replacing it", pid)
            _discard_all([ended], reports=False)  # its pipe: closed above

    def _assign(
        self, spare: subprocess.Popen[bytes], keep_dir: Path
    ) -> subprocess.Popen[bytes] | None:
        """Hand *spare* its Keep; None if it is gone (then the Keep starts cold)."""
        if spare.stdin is None or spare.poll() is not None:
            _discard_all([spare], reports=False)
            return None
        try:
            spare.stdin.write(os.fsencode(str(keep_dir.absolute())) + b"\n")
            spare.stdin.close()
        except OSError:
            _discard_all([spare], reports=False)
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


def _unwatch(
    selector: selectors.BaseSelector, watched: dict[int, IO[bytes]], pipe: IO[bytes]
) -> None:
    for pid, watched_pipe in list(watched.items()):
        if watched_pipe is pipe:
            del watched[pid]
            selector.unregister(pipe)
    pipe.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


def _discard_all(procs: list[subprocess.Popen[bytes]], *, reports: bool) -> None:
    """End spares that have no Keep: closing its stdin ends a spare (and its keep runtime);
    all are told first, then waited for, so discarding N spares takes one spare's time.

    Args:
        procs: the spares.
        reports: also close their report pipes (only when the pool thread does not watch them).
    """
    for proc in procs:
        for pipe in (proc.stdin, proc.stdout if reports else None):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
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
