"""The keep loader: one per Keep, untrusted, started by the keep manager.

``python -m donjon.host.loader KEEP_DIR`` creates the Keep through its backend and starts the keep
runtime in it, then waits. When the Keep ends it writes ``KEEP_DIR/status.cbor`` (state, exit code)
for the manager. SIGTERM stops the Keep (the runtime gets SIGTERM, then SIGKILL after a grace
period).

Backends: ``nil`` runs the keep runtime as a child process (no hardware isolation). Others are not
available on this host yet and end with a clear ``failed`` status.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from donjon.errors import DecodeError
from donjon.host.store import KeepState, read_bounded, write_atomic
from donjon.wire.cbor import decode, encode

MAX_LAUNCH_BYTES = 128 * 1024
MAX_REASON_BYTES = 4096
"""Largest failure reason read from the keep runtime (bytes); it writes at most 1000 chars."""
STOP_GRACE_S = 3.0
_PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when its parent dies (linux/prctl.h)."""


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


def run_loader(keep_dir: Path) -> int:
    """Start the Keep described in *keep_dir* and wait for it; returns the loader's exit code."""
    try:
        params: Any = decode(read_bounded(keep_dir / "launch.cbor", MAX_LAUNCH_BYTES))
    except (OSError, DecodeError) as e:
        _write_status(keep_dir, KeepState.FAILED, None, f"unreadable launch parameters: {e}")
        return 1
    backend = params.get("backend") if isinstance(params, dict) else None
    if backend != "nil":
        _write_status(keep_dir, KeepState.FAILED, None, f"backend {backend!r} is not available")
        return 1
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own module
        [
            sys.executable,
            "-m",
            "donjon.keep.agent",
            "--socket",
            str(keep_dir / "keep.sock"),
            "--params",
            str(keep_dir / "launch.cbor"),
        ],
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent(),  # safe: the loader runs no threads
    )
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
    if stopping:
        _write_status(keep_dir, KeepState.STOPPED, rc, "stopped")
    elif rc == 0:
        _write_status(keep_dir, KeepState.EXITED, rc, "the Keep finished")
    else:
        reason = _failure_reason(keep_dir)
        detail = f"the keep runtime exited with {rc}" + (f": {reason}" if reason else "")
        _write_status(keep_dir, KeepState.EXITED, rc, detail)
    return 0


def _failure_reason(keep_dir: Path) -> str | None:
    """Why the keep runtime ended before serving, if it said (``keep.error``), cleaned up."""
    try:
        raw = read_bounded(keep_dir / "keep.error", MAX_REASON_BYTES)
    except (OSError, DecodeError):
        return None
    text = " ".join(raw.decode("utf-8", "replace").split())
    return "".join(c for c in text if c.isprintable()) or None


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m donjon.host.loader KEEP_DIR", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_loader(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
