"""The ``nil`` keep loader: starts a keep process on the host, with no TEE at all.

``nil`` isolates the workload only by wasmtime's sandbox inside an ordinary host process. It
offers **no confidentiality and no integrity against the host**: the host's root, the keep
loader's user and any debugger can read and change the workload's memory. It exists for
development and CI, where no TEE is available.

The loader is deliberately thin and knows nothing of workloads: it starts the equivalent of
``python -I -m donjon.keep.process --request-fd N`` with the caller's stdin, stdout and stderr,
writes the opaque request bytes (made by :mod:`donjon.keep.request`) into pipe ``N``, waits,
and returns the keep's exit status. The keep process gets an empty environment, so nothing of
the host's environment can reach the keep runtime, let alone the workload.

A keep can be started *before* its request is ready (:meth:`NilKeepLoader.start`): it loads
wasmtime while the caller is still reading the workload's config, which is most of the start-up
time of ``donjon run`` on a 2-core machine.

Example:
    >>> loader = NilKeepLoader()
    >>> loader.run(request_bytes)  # doctest: +SKIP
    0
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

from donjon._secretdirs import remove_leftovers
from donjon.errors import KeepLaunchError

__all__ = ["KEEP_PROCESS_MODULE", "NIL_WARNING", "KeepProcess", "NilKeepLoader"]

KEEP_PROCESS_MODULE = "donjon.keep.process"
"""The module run as the keep process (``python -m``)."""

NIL_WARNING = (
    "donjon: warning: no backend chosen; using nil, which offers no confidentiality or "
    "integrity against this host (choose one with --backend; see `donjon platform info`)"
)
"""Said once on stderr when ``nil`` is picked without being asked for."""

# Signals the loader passes on to the keep, so `kill <cli>` stops the workload too.
_FORWARDED = (signal.SIGTERM, signal.SIGHUP)


class NilKeepLoader:
    """Starts ``nil`` keep processes.

    Args:
        python: the interpreter for the keep process (default: this one).
    """

    name = "nil"

    def __init__(self, *, python: str = sys.executable) -> None:
        self._python = python

    def start(self) -> KeepProcess:
        """Start a keep process that waits for its request.

        Returns:
            The running keep; give it its request with :meth:`KeepProcess.send`, or
            :meth:`KeepProcess.cancel` it.

        Raises:
            KeepLaunchError: the keep process could not be started.
        """
        read_end, write_end = os.pipe()
        # The keep starts with SIGINT ignored, so CPython installs no KeyboardInterrupt handler
        # in it (a Ctrl-C during its start-up would print a traceback); once running, the keep
        # restores the default action itself. Only the main thread may change handlers.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            os.set_inheritable(read_end, True)
            pid = os.posix_spawn(
                self._python,
                [*_keep_command(self._python), "--request-fd", str(read_end)],
                {},  # an empty environment: the keep gets nothing from the host's
                setsigdef=(signal.SIGPIPE,),
            )
        except OSError as e:
            os.close(write_end)
            raise KeepLaunchError(
                f"cannot start the nil keep process with {self._python}: {e.strerror or e}"
            ) from e
        finally:
            os.close(read_end)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return KeepProcess(pid, write_end)

    def run(self, request: bytes) -> int:
        """Start a keep, hand it ``request`` and wait for it to end.

        Returns:
            The keep's exit status (see :meth:`KeepProcess.wait`).

        Raises:
            KeepLaunchError: the keep process could not be started.
        """
        with self.start() as keep:
            keep.send(request)
            return keep.wait()


# `python -m donjon.keep.process`, started faster: -S skips the site module (and every .pth file
# in site-packages, ~9 ms) and this process's own import path is handed over instead, so the keep
# imports exactly the donjon and wasmtime this CLI would. -I: no PYTHON* variables, no user site,
# no current directory on the path.
_BOOTSTRAP = (
    "import sys; i = sys.argv.index('--'); sys.path[:0] = sys.argv[1:i]; del sys.argv[1 : i + 1]; "
    f"from {KEEP_PROCESS_MODULE} import main; main()"
)


def _keep_command(python: str) -> list[str]:
    paths = [p for p in sys.path if p and os.path.isabs(p)]
    return [python, "-I", "-S", "-c", _BOOTSTRAP, *paths, "--"]


class KeepProcess:
    """A started ``nil`` keep process. Use as a context manager: leaving it early cancels it.

    Attributes:
        pid: the keep process's id.
    """

    def __init__(self, pid: int, request_fd: int) -> None:
        self.pid = pid
        self._request_fd: int | None = request_fd
        self._status: int | None = None

    def __enter__(self) -> KeepProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is None:
            self.cancel()

    def send(self, request: bytes) -> None:
        """Write the request and close the pipe (once)."""
        fd = self._take_fd()
        try:
            view = memoryview(request)
            while view:
                view = view[os.write(fd, view) :]
        except BrokenPipeError:
            pass  # the keep ended before reading it all; its exit status says why
        finally:
            os.close(fd)

    def wait(self) -> int:
        """Wait for the keep to end.

        While it runs, Ctrl-C belongs to the keep (it gets SIGINT from the terminal and ends)
        and SIGTERM/SIGHUP sent to this process are passed on to it.

        Returns:
            Its exit status; ``128 + N`` if signal ``N`` ended it, as a shell reports it.
        """
        if self._status is not None:
            return self._status
        in_main = threading.current_thread() is threading.main_thread()
        handlers: dict[signal.Signals, Any] = {}
        if in_main:  # only the main thread may change signal handlers

            def forward(signum: int, frame: FrameType | None) -> None:
                try:
                    os.kill(self.pid, signum)
                except ProcessLookupError:
                    pass

            handlers[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
            for sig in _FORWARDED:
                handlers[sig] = signal.signal(sig, forward)
        try:
            _, status = os.waitpid(self.pid, 0)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        code = os.waitstatus_to_exitcode(status)
        self._status = 128 - code if code < 0 else code
        remove_leftovers(self.pid)  # a keep stopped by its watchdog or a signal cannot itself
        return self._status

    @property
    def waiting(self) -> bool:
        """Whether the keep still waits for its request (nothing was sent, nothing ended)."""
        return self._request_fd is not None and self._status is None

    def cancel(self) -> None:
        """Stop a keep that has not been given a request (or is no longer wanted)."""
        if self._request_fd is not None:
            os.close(self._take_fd())
        if self._status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(self.pid, 0)
            self._status = 128 - os.waitstatus_to_exitcode(status)
            remove_leftovers(self.pid)

    def _take_fd(self) -> int:
        fd = self._request_fd
        if fd is None:
            raise KeepLaunchError("the keep request was already sent")
        self._request_fd = None
        return fd


_prestarted: KeepProcess | None = None


def prestart() -> KeepProcess | None:
    """Start a keep process now, for a ``donjon run`` that is still parsing its command line.

    The ``donjon`` executable calls this before it imports the CLI framework, so the keep loads
    wasmtime while the CLI loads click (about 50 ms of start-up saved). Returns None if it could
    not start; the run command then starts one itself and reports any failure.
    """
    global _prestarted
    try:
        _prestarted = NilKeepLoader().start()
    except KeepLaunchError:
        _prestarted = None
    return _prestarted


def take_prestarted() -> KeepProcess | None:
    """The keep :func:`prestart` started, handed over once."""
    global _prestarted
    keep, _prestarted = _prestarted, None
    return keep
