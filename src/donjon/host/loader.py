"""The keep loader: one per Keep, untrusted, started by the keep manager.

``python -m donjon.host.loader KEEP_DIR`` creates the Keep through its backend and starts the keep
runtime in it, then waits. When the Keep ends it writes ``KEEP_DIR/status.cbor`` (state, exit code)
for the manager. SIGTERM stops the Keep (the runtime gets SIGTERM, then SIGKILL after a grace
period).

``python -m donjon.host.loader --spare`` is a *warm* loader: it starts a keep runtime at once
(which imports everything it will need, then waits) and reads its Keep's directory from stdin
when the keep manager has one. The keep manager keeps a pool of spares ready
(:mod:`donjon.host.launcher`), so a new Keep starts without waiting for two interpreters and their
imports. A spare serves exactly one Keep; one that is never given a Keep (stdin closed: the
manager stopped or discarded it) ends with its runtime, and one whose runtime ends before it has
a Keep ends too (the manager then starts another).

A spare says ``ready`` on stdout (a line) once its keep runtime has warmed up, which the runtime
tells it through a pipe of its own (``--ready-fd``); the keep manager uses it to pace the pool.
The first line of a Keep's ``loader.log`` says how its loader started: ``started cold``,
``started from a warm spare``, or ``started from a spare still warming up``.

Either way the loader writes ``KEEP_DIR/loader.pid`` (its pid and start time) once it has its
Keep: after a restart the keep manager recognises its loaders by it, not by a reused pid.

Backends: ``nil`` runs the keep runtime as a child process (no hardware isolation). Others are not
available on this host yet and end with a clear ``failed`` status.
"""

from __future__ import annotations

import ctypes
import enum
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from donjon._logfile import attach_log
from donjon._secretdirs import remove_leftovers
from donjon.errors import DecodeError
from donjon.host._spawn import module_command
from donjon.host.store import KeepState, read_bounded, write_atomic
from donjon.wire.cbor import decode, encode

MAX_LAUNCH_BYTES = 128 * 1024
MAX_REASON_BYTES = 4096
"""Largest failure reason read from the keep runtime (bytes); it writes at most 1000 chars."""
MAX_ASSIGNMENT_BYTES = 4096
"""Longest Keep directory a spare loader reads from the keep manager (bytes)."""
STOP_GRACE_S = 3.0
PID_FILE = "loader.pid"
"""``KEEP_DIR/loader.pid``: ``PID STARTTIME`` of the Keep's loader (``/proc/PID/stat`` field 22)."""
AGENT_MODULE = "donjon.keep.agent"
_PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when its parent dies (linux/prctl.h)."""
READY_LINE = b"ready\n"
"""What a spare writes on stdout once its keep runtime has warmed up."""


def process_start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks since boot), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the keep runtime die with this loader, even by SIGKILL.

    Without it, a loader killed while the keep manager is down leaves its runtime running
    unwatched: the manager reaps the Keep on restart, but the process would leak.
    """
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: nothing to load in the child
    loader_pid = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != loader_pid:  # the loader died before prctl took effect
            os._exit(1)

    return preexec


def _write_status(keep_dir: Path, state: KeepState, exit_code: int | None, detail: str) -> None:
    write_atomic(
        keep_dir / "status.cbor",
        encode({"state": str(state), "exit_code": exit_code, "detail": detail}),
    )


class _Agent:
    """The keep runtime process, cold (given its Keep on the command line) or warm."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        launch_fd: int | None,
        ready_fd: int | None = None,
    ) -> None:
        self.proc = proc
        self._launch_fd = launch_fd
        self.ready_fd = ready_fd
        """Readable once the warm runtime has warmed up (one byte) or ended (end of file)."""

    @classmethod
    def warm(cls) -> _Agent:
        """Start a keep runtime that imports everything, then waits for its launch message."""
        read_end, write_end = os.pipe()
        ready_r, ready_w = os.pipe()
        try:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own module
                module_command(
                    AGENT_MODULE,
                    "run",
                    *("--launch-fd", str(read_end)),
                    *("--ready-fd", str(ready_w)),
                ),
                stdin=subprocess.DEVNULL,
                # Not the loader's stdout (the spare's report pipe to the keep manager): the
                # runtime's output goes to the Keep's log once it has one.
                stdout=subprocess.DEVNULL,
                pass_fds=(read_end, ready_w),
                preexec_fn=_die_with_parent(),  # safe: the loader runs no threads
            )
        except BaseException:
            os.close(write_end)
            os.close(ready_r)
            raise
        finally:
            os.close(read_end)
            os.close(ready_w)
        return cls(proc, write_end, ready_r)

    @classmethod
    def cold(cls, keep_dir: Path) -> _Agent:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own module
            module_command(
                AGENT_MODULE,
                "run",
                *("--socket", str(keep_dir / "keep.sock")),
                *("--params", str(keep_dir / "launch.cbor")),
            ),
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(),  # safe: the loader runs no threads
        )
        return cls(proc, None)

    def launch(self, keep_dir: Path, params: bytes) -> bool:
        """Give a warm runtime its Keep; False if it is no longer there to take it."""
        fd, self._launch_fd = self._launch_fd, None
        if fd is None or self.proc.poll() is not None:
            if fd is not None:
                os.close(fd)
            return False
        message = encode(
            {
                "socket": str(keep_dir / "keep.sock"),
                "params": params,
                "log": str(keep_dir / "loader.log"),
            }
        )
        try:
            view = memoryview(message)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def discard(self) -> None:
        if self._launch_fd is not None:
            os.close(self._launch_fd)
            self._launch_fd = None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_loader(keep_dir: Path, warm: _Agent | None = None) -> int:
    """Start the Keep described in *keep_dir* and wait for it; returns the loader's exit code."""
    _write_pid_file(keep_dir)
    if warm is None:
        _note("started cold")
    try:
        raw = read_bounded(keep_dir / "launch.cbor", MAX_LAUNCH_BYTES)
        params: Any = decode(raw)
    except (OSError, DecodeError) as e:
        if warm is not None:
            warm.discard()
        _write_status(keep_dir, KeepState.FAILED, None, f"unreadable launch parameters: {e}")
        return 1
    backend = params.get("backend") if isinstance(params, dict) else None
    if backend != "nil":
        if warm is not None:
            warm.discard()
        _write_status(keep_dir, KeepState.FAILED, None, f"backend {backend!r} is not available")
        return 1
    if warm is not None and warm.launch(keep_dir, raw):
        agent = warm
    else:
        if warm is not None:
            warm.discard()  # it died before it had its Keep: start one the slow way
            _note("the spare's keep runtime had ended: starting one cold")
        agent = _Agent.cold(keep_dir)
    proc = agent.proc
    stopping = False

    def _on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        proc.terminate()

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    while True:
        try:
            rc = proc.wait(timeout=STOP_GRACE_S if stopping else None)
            break
        except subprocess.TimeoutExpired:
            proc.kill()
    # A runtime stopped by a signal leaves its socket behind: nothing listens there any more;
    # and its workload's secret files, which it could not remove itself.
    (keep_dir / "keep.sock").unlink(missing_ok=True)
    remove_leftovers(proc.pid)
    if stopping:
        _write_status(keep_dir, KeepState.STOPPED, rc, "stopped")
    elif rc == 0:
        _write_status(keep_dir, KeepState.EXITED, rc, "the Keep finished")
    else:
        reason = _failure_reason(keep_dir)
        detail = f"the keep runtime exited with {rc}" + (f": {reason}" if reason else "")
        _write_status(keep_dir, KeepState.EXITED, rc, detail)
    return 0


def run_spare() -> int:
    """A warm loader: start a keep runtime now, wait for a Keep directory on stdin, run it.

    Returns 0 when the keep manager closes stdin without a Keep, 1 when the keep runtime ends
    before there is a Keep (the manager replaces the spare); otherwise what the Keep's loader
    returns.
    """
    started = time.monotonic()
    agent = _Agent.warm()

    def _on_term(signum: int, frame: FrameType | None) -> None:
        agent.discard()
        os._exit(0)

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    warmup = _await_assignment(agent)
    if warmup is None:
        agent.discard()
        return 1  # the runtime ended: this spare is no longer warm
    keep_dir = _read_assignment()
    if keep_dir is None:
        agent.discard()
        return 0
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # run_loader installs its own
    attach_log(keep_dir / "loader.log")
    age = time.monotonic() - started
    if warmup.state is _WarmUp.WARM:
        _note(
            f"started from a warm spare (its keep runtime warmed up in {warmup.seconds:.2f} s; "
            f"the spare was {age:.2f} s old)"
        )
    elif warmup.state is _WarmUp.WARMING:
        _note(f"started from a spare still warming up ({age:.2f} s old)")
    else:
        _note(f"started from a spare ({age:.2f} s old; whether it had warmed up is unknown)")
    return run_loader(keep_dir, agent)


class _WarmUp(enum.Enum):
    WARMING = "warming"
    WARM = "warm"
    UNKNOWN = "unknown"
    """The runtime closed its ready pipe without saying it had warmed up."""


@dataclass(frozen=True, slots=True)
class _WarmUpSeen:
    state: _WarmUp
    seconds: float = 0.0
    """How long the warm-up took (for ``WARM``)."""


def _await_assignment(agent: _Agent) -> _WarmUpSeen | None:
    """Wait until the keep manager writes to stdin; meanwhile report the warm-up (``ready``).

    Returns:
        How far the runtime had warmed up when the Keep came, or None if it ended first.
    """
    started = time.monotonic()
    try:
        pidfd: int | None = os.pidfd_open(agent.proc.pid)
    except OSError:  # e.g. before Linux 5.3: only stdin and the ready pipe are watched
        pidfd = None
    seen = _WarmUpSeen(_WarmUp.WARMING)
    ready_fd = agent.ready_fd
    try:
        while True:
            watched = [0]
            if pidfd is not None:
                watched.append(pidfd)
            if ready_fd is not None:
                watched.append(ready_fd)
            readable, _, _ = select.select(watched, [], [])
            if 0 in readable:
                return seen
            if pidfd is not None and pidfd in readable:
                return None
            if ready_fd is not None and ready_fd in readable:
                said = os.read(ready_fd, 1)
                os.close(ready_fd)
                ready_fd = None
                if said:
                    seen = _WarmUpSeen(_WarmUp.WARM, time.monotonic() - started)
                    _report_ready()
                else:  # closed unsaid: the runtime is ending (pidfd tells), or says nothing
                    seen = _WarmUpSeen(_WarmUp.UNKNOWN)
    finally:
        if pidfd is not None:
            os.close(pidfd)
        if ready_fd is not None:
            os.close(ready_fd)
        agent.ready_fd = None


def _report_ready() -> None:
    try:
        os.write(1, READY_LINE)
    except OSError:
        pass  # the keep manager took this spare (or ended) meanwhile: nobody to tell


def _note(text: str) -> None:
    """One line in the Keep's log (stderr is ``loader.log``): how this loader started."""
    try:
        os.write(2, f"donjon loader: {text}\n".encode())
    except OSError:
        pass


def _read_assignment() -> Path | None:
    """The Keep directory the keep manager writes on stdin, or None if it closes it first."""
    data = b""
    while len(data) <= MAX_ASSIGNMENT_BYTES:
        chunk = os.read(0, MAX_ASSIGNMENT_BYTES + 1)
        if not chunk:
            break
        data += chunk
    text = data.decode("utf-8", "replace").strip()
    if not text or len(data) > MAX_ASSIGNMENT_BYTES or not os.path.isabs(text):
        return None
    path = Path(text)
    return path if path.is_dir() else None


def _write_pid_file(keep_dir: Path) -> None:
    started = process_start_time(os.getpid())
    if started is not None:
        write_atomic(keep_dir / PID_FILE, f"{os.getpid()} {started}\n".encode())


def _failure_reason(keep_dir: Path) -> str | None:
    """Why the keep runtime ended before serving, if it said (``keep.error``), cleaned up."""
    try:
        raw = read_bounded(keep_dir / "keep.error", MAX_REASON_BYTES)
    except (OSError, DecodeError):
        return None
    text = " ".join(raw.decode("utf-8", "replace").split())
    return "".join(c for c in text if c.isprintable()) or None


def main() -> None:
    args = sys.argv[1:]
    if args == ["--spare"]:
        raise SystemExit(run_spare())
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m donjon.host.loader KEEP_DIR | --spare", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_loader(Path(args[0])))


if __name__ == "__main__":
    main()
