"""The keep loader: one per Keep, untrusted, started by the keep manager.

``python -m donjon.host.loader KEEP_DIR`` creates the Keep through its backend and starts the keep
runtime in it, then waits. When the Keep ends it writes ``KEEP_DIR/status.cbor`` (state, exit code)
for the manager. SIGTERM stops the Keep (the runtime gets SIGTERM, then SIGKILL after a grace
period).

Backends: ``nil`` runs the keep runtime as a child process (no hardware isolation). Others are not
available on this host yet and end with a clear ``failed`` status.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from donjon.errors import DecodeError
from donjon.host.store import KeepState, read_bounded, write_atomic
from donjon.wire.cbor import decode, encode

MAX_LAUNCH_BYTES = 128 * 1024
STOP_GRACE_S = 3.0


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
        _write_status(keep_dir, KeepState.EXITED, rc, f"the keep runtime exited with {rc}")
    return 0


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m donjon.host.loader KEEP_DIR", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_loader(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
