"""The library API: run a WebAssembly module with a workload config, get its exit code and output.

This runs the workload *in the calling process* (no Keep isolation beyond wasmtime's sandbox):
it is for tests, tools and embedding. ``donjon run`` uses a separate keep process instead.

Example:
    >>> from donjon.keep.api import run_module
    >>> from donjon.keep.config import parse_config
    >>> result = run_module(Path("build/examples/hello.wasm"))  # doctest: +SKIP
    >>> result.exit_code, result.stdout  # doctest: +SKIP
    (0, b'Hello, world!\\n')
    >>> cfg = parse_config("[limits]\\ntimeout_s = 2.0")
    >>> run_module(Path("build/examples/spin.wasm"), cfg)  # doctest: +SKIP
    Traceback (most recent call last):
    donjon.keep.errors.DeadlineError: deadline of 2.0 s reached: spin.wasm was stopped

For many runs of the same module, keep a :class:`KeepRuntime`: it keeps the engine and the
compiled module, so each further run costs well under a millisecond plus the workload's time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from donjon.keep.cache import ModuleCache, default_cache_dir
from donjon.keep.config import DEFAULT_ARGV0, WorkloadConfig
from donjon.keep.executor import CapturedStdio, KeepRuntime, LoadedModule, StreamingStdio
from donjon.keep.module import read_module_file
from donjon.keep.plan import Invocation

__all__ = [
    "CapturedStdio",
    "KeepRuntime",
    "LoadedModule",
    "ModuleCache",
    "RunResult",
    "StreamingStdio",
    "default_cache_dir",
    "run_module",
]


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a workload ended.

    Attributes:
        exit_code: the workload's exit status (0..125).
        stdout: everything it wrote to its stdout stream.
        stderr: everything it wrote to its stderr stream.
    """

    exit_code: int
    stdout: bytes
    stderr: bytes


_runtimes: dict[Path | None, KeepRuntime] = {}
_runtimes_lock = threading.Lock()


def run_module(
    module: Path | bytes,
    config: WorkloadConfig | None = None,
    *,
    args: Sequence[str] = (),
    stdin: bytes = b"",
    name: str | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> RunResult:
    """Run a WASI preview 1 command module once and capture its output.

    Args:
        module: a ``.wasm`` path, or the module's bytes.
        config: what the workload is granted; ``None`` is the default config (stdio only).
        args: arguments after the config's ``args``.
        stdin: what the workload reads from a ``stdin`` fd.
        name: ``argv[0]`` and the name in messages; default: the file's name, or
            ``"main.wasm"`` for bytes.
        cache_dir: keep compiled modules in this directory across processes (see
            :func:`default_cache_dir`); ``None`` keeps them in this process's memory only.
        use_cache: ``False`` compiles afresh, ignoring both caches.

    Returns:
        The exit code and captured output.

    Raises:
        ModuleFileError: the path cannot be read.
        NotWasmError, NoEntryPointError, UnresolvedImportError: a module the keep cannot run.
        GuestTrapError: the workload trapped.
        MemoryLimitError, DeadlineError: a ``[limits]`` entry stopped it.
        UnsupportedConfigError, ConfigError: the config cannot be honoured.
    """
    if isinstance(module, Path):
        program = name or module.name
        wasm = read_module_file(module)
    else:
        program = name or DEFAULT_ARGV0
        wasm = bytes(module)
    invocation = Invocation.from_config(config or WorkloadConfig(), program=program, args=args)
    stdio = CapturedStdio(stdin)
    if use_cache:
        runtime = _shared_runtime(cache_dir)
        loaded = runtime.load(wasm, name=program, deadline=invocation.timeout_s is not None)
        code = runtime.run(loaded, invocation, stdio)
    else:
        with KeepRuntime() as runtime:
            loaded = runtime.load(wasm, name=program, deadline=invocation.timeout_s is not None)
            code = runtime.run(loaded, invocation, stdio)
    return RunResult(exit_code=code, stdout=stdio.stdout, stderr=stdio.stderr)


def _shared_runtime(cache_dir: Path | None) -> KeepRuntime:
    with _runtimes_lock:
        runtime = _runtimes.get(cache_dir)
        if runtime is None:
            cache = ModuleCache(cache_dir) if cache_dir is not None else None
            runtime = KeepRuntime(cache=cache)
            _runtimes[cache_dir] = runtime
        return runtime
