"""The keep process of the ``nil`` backend: ``python -m donjon.keep.process --request-fd N``.

The keep loader (:mod:`donjon.backends.nil`) starts this process with the CLI's stdin, stdout and
stderr, and writes one :class:`~donjon.keep.request.KeepRequest` (CBOR) into the pipe ``N``. The
process reads the module, loads it (compiled-module cache, progress line on a terminal), runs it
once with exactly what the config grants, and exits with the workload's exit code, or prints
``donjon: error: ...`` and exits with the error's code (125 and above; ``docs/commands/run.md``).

It imports wasmtime but nothing of the CLI or the HTTP stack, to start fast.

Rule 1: nothing here may print a Python traceback for bad input; only a bug does (exit 125).
Rule 2: this process runs exactly one workload, so its deadline is the process's: a watchdog ends
the whole process when it passes, whether the workload computes or sits in a blocking host call.
The module is compiled without epoch checks, which cost 5-27 % of CPU time (TOOLING.md §4);
in-process runs of the library API, where one process serves many workloads, use epochs.
Rule 3: the process ends with ``os._exit`` after flushing, so wasmtime's runtime threads are not
torn down by the interpreter's exit (TOOLING.md P7).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from donjon.errors import DecodeError, Error, LimitError, UsageError, WorkloadError
from donjon.keep.errors import GuestTrapError
from donjon.keep.request import MAX_REQUEST_BYTES, KeepRequest

if TYPE_CHECKING:
    from donjon.keep.plan import Invocation
    from donjon.keep.secret_files import SecretFiles
    from donjon.keep.sockets import NetworkOptions

__all__ = ["main"]

_logger = logging.getLogger(__name__)

_INTERNAL_ERROR_EXIT = WorkloadError.exit_code


def main(argv: list[str] | None = None) -> NoReturn:
    """Run one request and exit the process with the workload's or the error's exit code."""
    # Ctrl-C must stop the workload even while wasm runs (Python handlers would wait for it).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        code = _serve(sys.argv[1:] if argv is None else argv)
    except Error as e:
        _report(e)
        code = e.exit_code
    except Exception as e:  # a bug: say so, with the traceback that helps fix it
        traceback.print_exc()
        sys.stderr.write(f"donjon: internal error in the keep process: {e!r}\n")
        code = _INTERNAL_ERROR_EXIT
    _exit(code)


def _serve(argv: list[str]) -> int:
    fd = _request_fd(argv)
    # wasmtime is loaded *before* the request is read: the loader starts this process early,
    # so this overlaps with the CLI reading the workload's config.
    import donjon.keep.executor  # noqa: F401
    from donjon.keep.plan import Invocation
    from donjon.keep.secret_files import SecretFiles

    data = _read_request(fd)
    if not data:
        return 0  # the loader cancelled this keep before sending a request: nothing to say
    request = KeepRequest.decode(data)
    _configure_logging(request.log_level)
    with SecretFiles() as files:
        invocation = Invocation.from_config(
            request.config,
            program=request.program,
            args=request.args,
            secrets=request.secrets,
            secrets_dir=files.write(request.config, request.secrets),
        )
        return _run(request, invocation, files)


def _run(request: KeepRequest, invocation: Invocation, files: SecretFiles) -> int:
    from donjon.keep._progress import CompileProgress
    from donjon.keep.cache import ModuleCache
    from donjon.keep.executor import InheritedStdio, KeepRuntime, ProgressFactory
    from donjon.keep.module import read_module_file

    wasm = read_module_file(request.module)
    progress: ProgressFactory | None = None
    if request.progress and sys.stderr.isatty():

        def progress(label: str, size: int) -> CompileProgress:
            return CompileProgress(sys.stderr, label=label, size_bytes=size, enabled=True)

    cache = ModuleCache(request.cache_dir) if request.cache_dir is not None else None
    runtime = KeepRuntime(cache=cache, progress=progress)
    timeout_s = invocation.timeout_s
    if timeout_s is not None:
        invocation = dataclasses.replace(invocation, timeout_s=None)  # Rule 2: the watchdog's
    module = runtime.load(wasm, name=request.program, deadline=False)
    if timeout_s is not None:
        _start_watchdog(timeout_s, request.program, before_exit=files.close)
    return runtime.run(module, invocation, InheritedStdio(), network=_network(invocation))


def _network(invocation: Invocation) -> NetworkOptions | None:
    """Sockets for a local run: TLS with an ephemeral, unattested certificate (its fingerprint
    is printed, so a local client can pin it), and notices on stderr."""
    if invocation.fds is None:
        return None
    from donjon.keep.sockets import NetworkOptions

    tls = None
    if invocation.uses_tls:  # only then pay for loading cryptography (~0.1 s)
        from datetime import UTC, datetime

        from donjon.keep.sockets.tls import UnsafeEphemeralTls

        tls = UnsafeEphemeralTls.generate(now=datetime.now(UTC))
    return NetworkOptions(tls=tls, on_notice=_notice)


def _notice(text: str) -> None:
    sys.stderr.write(f"donjon: {text}\n")
    sys.stderr.flush()


def _request_fd(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--request-fd" or not argv[1].isdigit():
        raise UsageError(
            "usage: python -m donjon.keep.process --request-fd N (started by `donjon run`)"
        )
    return int(argv[1])


def _read_request(fd: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                raise DecodeError(f"keep request is over {MAX_REQUEST_BYTES} bytes")
            chunks.append(chunk)
    except OSError as e:
        raise DecodeError(f"cannot read the keep request from fd {fd}: {e.strerror}") from e
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return b"".join(chunks)


def _start_watchdog(
    timeout_s: float, program: str, *, before_exit: Callable[[], None] = lambda: None
) -> None:
    def fire() -> None:
        message = f"donjon: error: deadline of {timeout_s} s reached: {program} was stopped\n"
        try:
            os.write(2, message.encode())
            before_exit()  # e.g. remove the workload's secret files: os._exit skips `with`
        finally:
            os._exit(LimitError.exit_code)

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()


def _configure_logging(level: int) -> None:
    logger = logging.getLogger("donjon")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("donjon: %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def _report(error: Error) -> None:
    sys.stderr.write(f"donjon: error: {error.diagnostics()}\n")
    if isinstance(error, GuestTrapError) and error.backtrace:
        _logger.info("wasm backtrace:\n%s", error.backtrace)


def _exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
