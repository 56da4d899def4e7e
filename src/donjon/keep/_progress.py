"""A progress line for long compiles, drawn on a terminal by a helper thread.

Cranelift has no progress callback, so "how far" is an estimate: the module's size over a
measured compile rate, shown as such ("~40%", "about 27 s left"), and never past 99% until the
compile really ends. The line appears only after :data:`PROGRESS_DELAY_S`, so small modules
(milliseconds) never flash it, and only when the caller says the stream is a terminal.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = [
    "COMPILE_RATE_BYTES_PER_S",
    "PROGRESS_DELAY_S",
    "PROGRESS_INTERVAL_S",
    "CompileProgress",
    "format_size",
]

COMPILE_RATE_BYTES_PER_S = 1.5e6
"""Cranelift's compile rate on large modules (bytes of Wasm per second), measured on this
project's 2-core machine: 69–104 MB modules took 44–72 s (TOOLING.md P3). Only the estimate
uses it."""

PROGRESS_DELAY_S = 0.5
"""Seconds of compiling before the line appears: shorter compiles show nothing."""

PROGRESS_INTERVAL_S = 0.1
"""Seconds between redraws (spinner speed)."""

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_BAR_CELLS = 20
_MAX_ESTIMATE_PERCENT = 99
_MIN_WIDTH = 20  # columns; narrower (or unknown) terminals are drawn as 80 wide
_DEFAULT_WIDTH = 80


def _terminal_width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, io.UnsupportedOperation):
        columns = 0
    return columns if columns >= _MIN_WIDTH else _DEFAULT_WIDTH  # a new pty reports 0


def format_size(size: int) -> str:
    """Bytes for people: ``2618`` → ``"2.6 kB"``, ``69_200_000`` → ``"69.2 MB"``."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"


class CompileProgress:
    """Shows ``⠹ compiling big.wasm (69.2 MB) [████░░░░] ~40%  18 s, about 27 s left``.

    Use as a context manager around the compile. When ``enabled`` is false it does nothing at
    all (no thread).

    Args:
        stream: where to draw (the keep's stderr).
        label: the module's name.
        size_bytes: the module's size.
        enabled: draw at all (true only when ``stream`` is a terminal).
        delay_s: seconds before the first draw.
        interval_s: seconds between draws.
        clock: a monotonic clock (injectable for tests).
        width: the terminal width; ``None`` asks the terminal.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        label: str,
        size_bytes: int,
        enabled: bool,
        delay_s: float = PROGRESS_DELAY_S,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self._stream = stream
        self._label = label
        self._size = size_bytes
        self._enabled = enabled
        self._delay_s = delay_s
        self._interval_s = interval_s
        self._clock = clock
        self._width = width
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0
        self._drawn = False
        self.expected_s = size_bytes / COMPILE_RATE_BYTES_PER_S

    def render(self, elapsed_s: float, frame: int) -> str:
        """The line for ``elapsed_s`` seconds into the compile (no control characters)."""
        spin = _SPINNER[frame % len(_SPINNER)]
        head = f"{spin} donjon: compiling {self._label} ({format_size(self._size)})"
        if elapsed_s < self.expected_s:
            fraction = elapsed_s / self.expected_s if self.expected_s > 0 else 0.0
            percent = min(_MAX_ESTIMATE_PERCENT, int(fraction * 100))
            filled = min(_BAR_CELLS - 1, int(fraction * _BAR_CELLS))
            bar = "█" * filled + "░" * (_BAR_CELLS - filled)
            left = self.expected_s - elapsed_s
            return f"{head} [{bar}] ~{percent}%  {elapsed_s:.0f} s, about {left:.0f} s left"
        return f"{head}  {elapsed_s:.0f} s (estimated {self.expected_s:.0f} s), still working"

    def __enter__(self) -> CompileProgress:
        self._start = self._clock()
        if self._enabled:
            self._thread = threading.Thread(
                target=self._run, name="donjon-compile-progress", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if self._drawn:
            elapsed = self._clock() - self._start
            outcome = "compiled" if exc_type is None else "failed to compile"
            self._write(
                f"\r\x1b[Kdonjon: {outcome} {self._label} ({format_size(self._size)}) "
                f"in {elapsed:.1f} s\n"
            )

    def _run(self) -> None:
        if self._stop.wait(self._delay_s):
            return
        frame = 0
        while not self._stop.is_set():
            line = self.render(self._clock() - self._start, frame)
            self._write(f"\r{self._fit(line)}\x1b[K")
            self._drawn = True
            frame += 1
            self._stop.wait(self._interval_s)

    def _fit(self, line: str) -> str:
        width = self._width or _terminal_width(self._stream)
        return line if len(line) < width else line[: max(1, width - 2)] + "…"

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            # A closed or broken terminal must not break the compile it is decorating.
            self._stop.set()
