"""The Wasm executor: runs WASI preview 1 command modules in wasmtime, with nothing ambient.

:class:`KeepRuntime` owns the wasmtime engines (one per engine setting), the linker, the epoch
ticker and the compiled modules, so a new run of a loaded module costs a fresh ``Store`` and an
instantiation from an ``InstancePre`` (well under a millisecond for small modules). Each run gets
exactly what its :class:`~donjon.keep.plan.Invocation` grants.

Rule 1: a workload never gets the host's environment, files or network. ``WasiConfig`` starts
empty; argv, env, stdio, pre-opened directories come only from the invocation.
Rule 2: every wasmtime exception is turned into a :mod:`donjon.keep.errors` error with one clear
line (``raise ... from e``); a run returns the workload's exit code or raises.
Rule 3: limits stop only the run that hit them: the memory cap is a per-``Store`` limiter, the
deadline a per-``Store`` epoch deadline. Engines with epoch interruption are used only for runs
that have a deadline, because epoch checks cost 5–27 % of CPU time (TOOLING.md §4).
Rule 4: every ``Store`` is closed in a ``finally`` (TOOLING.md P7), and captured output goes to
memory files rather than Python callbacks wherever possible, for the same reason.

Rule 5: fds are numbered as the config lists them. When wasmtime cannot number them itself
(sockets, anything at fd 3 or above: :attr:`Invocation.fds`), the socket layer
(:mod:`donjon.keep.sockets`) does: it opens the sockets before ``_start``, links the workload's
fd functions to a generated Wasm dispatcher (files and stdio stay in wasmtime; only sockets and
``null`` reach Python, through raw callbacks), and ends blocked socket calls at the deadline.
It is imported only for such runs, so other runs do not pay for it.

The standard linker is built in one place, :meth:`KeepRuntime._build_linker`; socket runs get a
per-run linker from :class:`~donjon.keep.sockets.session.SocketSession`.

Example:
    >>> from donjon.keep.config import WorkloadConfig
    >>> from donjon.keep.plan import Invocation
    >>> with KeepRuntime() as runtime:  # doctest: +SKIP
    ...     module = runtime.load(open("hello.wasm", "rb").read(), name="hello.wasm")
    ...     out = CapturedStdio()
    ...     inv = Invocation.from_config(WorkloadConfig(), program="hello.wasm")
    ...     runtime.run(module, inv, out), out.stdout
    (0, b'Hello, world!\\n')
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import wasmtime

from donjon._closing import Closing
from donjon.errors import ConfigError, WorkloadError
from donjon.keep.cache import CacheKey, CacheStatus, ModuleCache
from donjon.keep.config import DEFAULT_ARGV0, FileKind
from donjon.keep.errors import (
    DeadlineError,
    GuestTrapError,
    MemoryLimitError,
    NoEntryPointError,
    NotWasmError,
    UnresolvedImportError,
)
from donjon.keep.module import check_module_header, module_digest
from donjon.keep.plan import Invocation, format_mib

if TYPE_CHECKING:
    from donjon.keep.sockets.dispatch import DispatchModules
    from donjon.keep.sockets.network import NetworkOptions
    from donjon.keep.sockets.session import SocketSession

__all__ = [
    "EPOCH_TICK_S",
    "WASI_MODULE",
    "CapturedStdio",
    "InheritedStdio",
    "KeepRuntime",
    "LoadedModule",
    "Origin",
    "ProgressFactory",
    "StreamingStdio",
]

_logger = logging.getLogger(__name__)

WASI_MODULE = "wasi_snapshot_preview1"
"""The import module name of WASI preview 1, the only host API a workload gets."""

EPOCH_TICK_S = 0.01
"""Seconds between epoch ticks: a deadline is enforced to within about one tick."""

_NO_DEADLINE_TICKS = 1 << 62  # "never" for a store on an epoch engine, without u64 overflow
_WASM_PAGE_BYTES = 64 * 1024  # Wasm core spec §4.2.8
# A trap is blamed on the memory cap when linear memory is within this fraction of the cap:
# an allocator asks for its request plus bookkeeping, so a failed grow leaves some headroom
# (memhog under 64 MiB stops at 62.1 MiB). wasmtime-py has no limiter callback to be exact.
_NEAR_LIMIT_FRACTION = 1 / 8
_MEMO_ENTRIES = 32  # compiled modules kept in memory per runtime (LRU)...
_MEMO_BYTES = 512 * 1024 * 1024  # ...and at most this much of their Wasm (bytes)

ProgressFactory = Callable[[str, int], contextlib.AbstractContextManager[object]]
"""Makes a context manager shown around a compile, from the module's name and size."""


class Origin(enum.Enum):
    """Where a :class:`LoadedModule`'s machine code came from."""

    COMPILED = "compiled"
    CACHE = "cache"
    MEMORY = "memory"


@dataclass(frozen=True, slots=True)
class _EngineSettings:
    """The engine settings that change compiled code; part of the cache key (P4)."""

    epochs: bool

    def config(self) -> wasmtime.Config:
        cfg = wasmtime.Config()
        cfg.epoch_interruption = self.epochs
        return cfg

    def describe(self) -> str:
        return f"{_wasmtime_identity()};arch={os.uname().machine};epochs={int(self.epochs)}"


class LoadedModule:
    """A compiled, import-checked module, ready to instantiate in its runtime.

    Attributes:
        name: the name used in messages and as ``argv[0]``.
        sha256: the SHA-256 of the Wasm bytes (the module's identity).
        size: the Wasm bytes' length.
        origin: compiled now, loaded from the on-disk cache, or reused from memory.
        load_s: seconds spent compiling or deserializing.
        epochs: whether it was compiled for deadlines (epoch interruption).
    """

    __slots__ = (
        "_module",
        "_pre",
        "_wasm",
        "epochs",
        "load_s",
        "name",
        "origin",
        "sha256",
        "size",
    )

    def __init__(
        self,
        *,
        name: str,
        wasm: bytes,
        sha256: str,
        origin: Origin,
        load_s: float,
        epochs: bool,
        pre: wasmtime.InstancePre,
        module: wasmtime.Module,
    ) -> None:
        self.name = name
        self.sha256 = sha256
        self.size = len(wasm)
        self.origin = origin
        self.load_s = load_s
        self.epochs = epochs
        self._wasm = wasm
        self._pre = pre
        self._module = module

    def _renamed(self, name: str, origin: Origin) -> LoadedModule:
        return LoadedModule(
            name=name,
            wasm=self._wasm,
            sha256=self.sha256,
            origin=origin,
            load_s=0.0,
            epochs=self.epochs,
            pre=self._pre,
            module=self._module,
        )

    def __repr__(self) -> str:
        return (
            f"LoadedModule(name={self.name!r}, sha256={self.sha256[:16]}…, size={self.size}, "
            f"origin={self.origin.value}, epochs={self.epochs})"
        )


class InheritedStdio:
    """The run uses the current process's fds 0–2 (the keep process inherits the CLI's).

    A config that swaps streams (fd 1 of kind ``stderr``) is honoured by forwarding those writes
    to the other host fd.
    """

    def _configure(self, wasi: wasmtime.WasiConfig, stdio: tuple[FileKind, ...]) -> None:
        if stdio[0] is FileKind.STDIN:
            wasi.inherit_stdin()
        for fd, kind in ((1, stdio[1]), (2, stdio[2])):
            if kind is FileKind.NULL:
                continue  # wasmtime's default for an unset output is a sink
            host_fd = 1 if kind is FileKind.STDOUT else 2
            if host_fd == fd:
                if fd == 1:
                    wasi.inherit_stdout()
                else:
                    wasi.inherit_stderr()
            elif fd == 1:
                wasi.stdout_custom = _fd_writer(host_fd)
            else:
                wasi.stderr_custom = _fd_writer(host_fd)

    def _finish(self) -> None:
        pass


class CapturedStdio:
    """The run reads ``stdin`` from bytes and its output is captured.

    Output goes into anonymous memory files that wasmtime writes directly (no Python call per
    write, and none of TOOLING.md P7's exit-time panics); only when both fds 1 and 2 go to the
    same stream are Python callbacks used, to keep their order.

    Args:
        stdin: what the workload reads on a ``stdin`` fd.

    Attributes:
        stdout: what the workload wrote to its ``stdout`` stream (after the run).
        stderr: what the workload wrote to its ``stderr`` stream (after the run).
    """

    def __init__(self, stdin: bytes = b"") -> None:
        self._stdin = stdin
        self.stdout = b""
        self.stderr = b""
        self._files: dict[FileKind, int] = {}
        self._buffers: dict[FileKind, bytearray] = {}

    def _configure(self, wasi: wasmtime.WasiConfig, stdio: tuple[FileKind, ...]) -> None:
        if stdio[0] is FileKind.STDIN:
            _set_stdin_bytes(wasi, self._stdin)
        outputs = [(1, stdio[1]), (2, stdio[2])]
        shared = stdio[1] is stdio[2] and stdio[1] is not FileKind.NULL
        for fd, kind in outputs:
            if kind is FileKind.NULL:
                continue
            if shared:
                buffer = self._buffers.setdefault(kind, bytearray())
                if fd == 1:
                    wasi.stdout_custom = buffer.extend
                else:
                    wasi.stderr_custom = buffer.extend
                continue
            memfd = _memory_file(f"donjon-{kind.value}")
            self._files[kind] = memfd
            if fd == 1:
                wasi.stdout_file = f"/proc/self/fd/{memfd}"
            else:
                wasi.stderr_file = f"/proc/self/fd/{memfd}"

    def _finish(self) -> None:
        captured: dict[FileKind, bytes] = {k: bytes(b) for k, b in self._buffers.items()}
        for kind, fd in self._files.items():
            try:
                captured[kind] = _read_all(fd)
            finally:
                os.close(fd)
        self._files.clear()
        self._buffers.clear()
        self.stdout = captured.get(FileKind.STDOUT, b"")
        self.stderr = captured.get(FileKind.STDERR, b"")


class StreamingStdio:
    """The run reads ``stdin`` from bytes and each write is handed to a callback as it happens.

    For relaying output while the workload runs (e.g. over a network connection). Callbacks
    run on the thread that runs the workload, synchronously with its ``write``. A callback that
    raises fails that write with EIO (the workload sees an I/O error, as on a broken pipe) and
    the first exception is kept in :attr:`error`: nothing is raised through wasmtime.

    Args:
        on_stdout: called with each chunk the workload writes to its ``stdout`` stream.
        on_stderr: called with each chunk the workload writes to its ``stderr`` stream.
        stdin: what the workload reads on a ``stdin`` fd.

    Attributes:
        error: the first exception a callback raised, or ``None``.
    """

    def __init__(
        self,
        *,
        on_stdout: Callable[[bytes], object],
        on_stderr: Callable[[bytes], object],
        stdin: bytes = b"",
    ) -> None:
        self._sinks = {FileKind.STDOUT: on_stdout, FileKind.STDERR: on_stderr}
        self._stdin = stdin
        self.error: BaseException | None = None

    def _configure(self, wasi: wasmtime.WasiConfig, stdio: tuple[FileKind, ...]) -> None:
        if stdio[0] is FileKind.STDIN:
            _set_stdin_bytes(wasi, self._stdin)
        for fd, kind in ((1, stdio[1]), (2, stdio[2])):
            if kind is FileKind.NULL:
                continue
            writer = self._writer(self._sinks[kind])
            if fd == 1:
                wasi.stdout_custom = writer
            else:
                wasi.stderr_custom = writer

    def _writer(self, sink: Callable[[bytes], object]) -> Callable[[bytes], int]:
        def write(data: bytes) -> int:
            if self.error is not None:
                return -errno.EIO
            try:
                sink(data)
            except Exception as e:  # never raise through wasmtime (it would print and go on)
                self.error = e
                return -errno.EIO
            return len(data)

        return write

    def _finish(self) -> None:
        pass


Stdio = InheritedStdio | CapturedStdio | StreamingStdio


class KeepRuntime(Closing):
    """Engines, linker, compiled modules and the epoch ticker, shared by many runs.

    Thread-safe: runs may happen in parallel threads (wasm runs with the GIL released).

    Args:
        cache: the on-disk compiled-module cache, or ``None`` for none.
        progress: shown around compiles (the keep process passes a terminal progress line).

    Attributes:
        last_cache_status: what the on-disk cache said on the latest :meth:`load` that consulted
            it (``None`` if it was not consulted); for logs and tests.
    """

    def __init__(
        self, *, cache: ModuleCache | None = None, progress: ProgressFactory | None = None
    ) -> None:
        self._cache = cache
        self._progress = progress
        self._lock = threading.Lock()
        self._engines: dict[bool, _EngineState] = {}
        self._memo: OrderedDict[tuple[bool, str], LoadedModule] = OrderedDict()
        self.last_cache_status: CacheStatus | None = None

    def close(self) -> None:
        """Stop the epoch tickers and drop compiled modules. Idempotent."""
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
            self._memo.clear()
        for state in engines:
            state.ticker.shutdown()

    # -- loading ---------------------------------------------------------------------------

    def load(
        self, wasm: bytes, *, name: str = DEFAULT_ARGV0, deadline: bool = False
    ) -> LoadedModule:
        """Compile (or fetch from a cache) and check a module.

        Args:
            wasm: the module's bytes (a WebAssembly binary core module).
            name: its name, for messages and ``argv[0]``.
            deadline: compile for runs with a deadline (``[limits] timeout_s``). A run with
                the other setting recompiles (or finds the other cache entry) on its own.

        Returns:
            The loaded module.

        Raises:
            NotWasmError: not a valid core module, or wasmtime cannot compile it.
            NoEntryPointError: no ``_start`` of type ``() -> ()``.
            UnresolvedImportError: it imports something the keep does not provide.
        """
        check_module_header(wasm, name)
        sha256 = module_digest(wasm)
        state = self._engine(deadline)
        with self._lock:
            memo = self._memo.get((deadline, sha256))
            if memo is not None:
                self._memo.move_to_end((deadline, sha256))
        if memo is not None:
            self.last_cache_status = None
            return memo._renamed(name, Origin.MEMORY)
        started = time.perf_counter()
        module, origin = self._compile(state, wasm, name, sha256)
        load_s = time.perf_counter() - started
        _check_entry_point(module, name)
        pre = self._instance_pre(state, module, name)
        loaded = LoadedModule(
            name=name,
            wasm=wasm,
            sha256=sha256,
            origin=origin,
            load_s=load_s,
            epochs=deadline,
            pre=pre,
            module=module,
        )
        if origin is Origin.CACHE:
            _logger.info(
                "%s: loaded its compiled code from the cache in %.1f ms", name, load_s * 1e3
            )
        else:
            _logger.info("%s: compiled in %.1f ms", name, load_s * 1e3)
        with self._lock:
            self._memo[(deadline, sha256)] = loaded
            while len(self._memo) > 1 and (
                len(self._memo) > _MEMO_ENTRIES
                or sum(m.size for m in self._memo.values()) > _MEMO_BYTES
            ):
                self._memo.popitem(last=False)
        return loaded

    def _compile(
        self, state: _EngineState, wasm: bytes, name: str, sha256: str
    ) -> tuple[wasmtime.Module, Origin]:
        key = CacheKey(engine=state.description, module_sha256=sha256)
        self.last_cache_status = None
        if self._cache is not None:
            found = self._cache.lookup(key)
            self.last_cache_status = found.status
            if found.payload is not None:
                try:
                    # Safe only because the cache authenticated these exact bytes (P5).
                    return wasmtime.Module.deserialize(state.engine, found.payload), Origin.CACHE
                except wasmtime.WasmtimeError as e:
                    _logger.warning("%s: cached code does not load (%s); recompiling", name, e)
        progress = self._progress(name, len(wasm)) if self._progress else contextlib.nullcontext()
        try:
            with progress:
                module = wasmtime.Module(state.engine, wasm)
        except wasmtime.WasmtimeError as e:
            raise NotWasmError(f"{name} is not a valid WebAssembly module: {_cause(e)}") from e
        if self._cache is not None:
            self._cache.put(key, bytes(module.serialize()))
        return module, Origin.COMPILED

    def _instance_pre(
        self, state: _EngineState, module: wasmtime.Module, name: str
    ) -> wasmtime.InstancePre:
        try:
            return state.linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as e:
            raise _link_error(state, module, name, e) from e

    # -- running ---------------------------------------------------------------------------

    def run(
        self,
        module: LoadedModule,
        invocation: Invocation,
        stdio: Stdio,
        *,
        network: NetworkOptions | None = None,
    ) -> int:
        """Run ``module``'s ``_start`` once, with what ``invocation`` grants.

        Args:
            module: a module loaded by this runtime.
            invocation: argv, env, stdio, fds, directories and limits.
            stdio: where the caller's stdin, stdout and stderr streams go.
            network: how ``listen``/``connect`` entries are provided (the Keep's TLS identity,
                limits, a stop signal, notices); the defaults serve plaintext sockets only.
                The config's socket limits (``invocation.network``, a listener's own
                ``max_connections``) override ``network.limits`` for this run.

        Returns:
            The workload's exit code (0..125).

        Raises:
            GuestTrapError: the workload trapped.
            MemoryLimitError: it needed more memory than ``invocation.memory_bytes``.
            DeadlineError: it ran past ``invocation.timeout_s`` (also while blocked in a
                socket call).
            ConfigError: a pre-opened directory cannot be opened.
            UnsupportedConfigError: a TLS socket, but ``network`` has no TLS identity.
            SocketSetupError: a listener cannot be bound or a connection made (the workload
                does not start); PeerVerificationError when a TLS server is refused.
            RunStoppedError: ``network.stop`` was set.
        """
        deadline = invocation.timeout_s is not None
        if module.epochs != deadline:
            module = self.load(module._wasm, name=module.name, deadline=deadline)
        state = self._engine(deadline)
        session: SocketSession | None = None
        if invocation.fds is not None:
            from donjon.keep.sockets.network import NetworkOptions
            from donjon.keep.sockets.session import SocketSession

            options = network or NetworkOptions()
            limits = invocation.socket_limits(options.limits)
            if limits is not options.limits:
                options = replace(options, limits=limits)
            session = SocketSession.open(invocation, options)
        try:
            return self._run(state, module, invocation, stdio, session)
        finally:
            if session is not None:
                session.close()

    def _run(
        self,
        state: _EngineState,
        module: LoadedModule,
        invocation: Invocation,
        stdio: Stdio,
        session: SocketSession | None,
    ) -> int:
        deadline = invocation.timeout_s is not None
        store = wasmtime.Store(state.engine)
        try:
            if invocation.memory_bytes is not None:
                store.set_limits(memory_size=invocation.memory_bytes)
            if deadline:
                store.set_epoch_deadline(_NO_DEADLINE_TICKS)
            store.set_wasi(_wasi_config(invocation, stdio))
            if session is None:
                instance = self._instantiate(module, store, invocation)
            else:
                instance = self._instantiate_with_sockets(state, module, store, invocation, session)
            start = instance.exports(store)["_start"]
            if not isinstance(start, wasmtime.Func):  # checked at load; a wiring bug if not
                raise NoEntryPointError(f"{module.name}: _start is not a function")
            with state.ticker.running(deadline):
                if invocation.timeout_s is not None:
                    store.set_epoch_deadline(_deadline_ticks(invocation.timeout_s))
                if session is not None:
                    session.start(invocation.timeout_s)
                try:
                    start(store)
                except wasmtime.ExitTrap as e:
                    return int(e.code)
                except wasmtime.Trap as e:
                    caused = session and session.failure(module.name, invocation.timeout_s)
                    raise (caused or _trap_error(e, module, instance, store, invocation)) from e
                except wasmtime.WasmtimeError as e:
                    caused = session and session.failure(module.name, invocation.timeout_s)
                    raise (caused or _runtime_error(e, module)) from e
            return 0
        finally:
            store.close()
            stdio._finish()

    def _instantiate_with_sockets(
        self,
        state: _EngineState,
        module: LoadedModule,
        store: wasmtime.Store,
        invocation: Invocation,
        session: SocketSession,
    ) -> wasmtime.Instance:
        modules = self._dispatch_modules(state)
        try:
            return session.instantiate(modules, store, module._module)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            raise _instantiation_error(e, module, invocation) from e

    def _dispatch_modules(self, state: _EngineState) -> DispatchModules:
        with self._lock:
            if state.dispatch is None:
                from donjon.keep.sockets.dispatch import compile_modules

                state.dispatch = compile_modules(state.engine)
            return state.dispatch

    def _instantiate(
        self, module: LoadedModule, store: wasmtime.Store, invocation: Invocation
    ) -> wasmtime.Instance:
        try:
            return module._pre.instantiate(store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            raise _instantiation_error(e, module, invocation) from e

    # -- engines ---------------------------------------------------------------------------

    def _engine(self, epochs: bool) -> _EngineState:
        with self._lock:
            state = self._engines.get(epochs)
            if state is None:
                settings = _EngineSettings(epochs=epochs)
                engine = wasmtime.Engine(settings.config())
                state = _EngineState(
                    engine=engine,
                    linker=self._build_linker(engine),
                    description=settings.describe(),
                    ticker=_EpochTicker(engine),
                )
                self._engines[epochs] = state
            return state

    @staticmethod
    def _build_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
        """Everything a workload can import: WASI preview 1, as wasmtime implements it.

        Socket runs link the same names, with the fd functions routed through the socket
        layer's dispatcher (:meth:`SocketSession.instantiate`); this linker checks imports.
        """
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        return linker


@dataclass(slots=True)
class _EngineState:
    engine: wasmtime.Engine
    linker: wasmtime.Linker
    description: str
    ticker: _EpochTicker
    dispatch: DispatchModules | None = None  # the socket layer's modules, compiled on first use


class _EpochTicker:
    """Advances one engine's epoch every :data:`EPOCH_TICK_S` while any run has a deadline."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._users = 0
        self._stop: threading.Event | None = None

    @contextlib.contextmanager
    def running(self, needed: bool) -> Iterator[None]:
        if not needed:
            yield
            return
        with self._lock:
            self._users += 1
            if self._stop is None:
                self._stop = threading.Event()
                threading.Thread(
                    target=self._tick, args=(self._stop,), name="donjon-epoch", daemon=True
                ).start()
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._stop is not None:
                    self._stop.set()
                    self._stop = None

    def shutdown(self) -> None:
        with self._lock:
            if self._stop is not None:
                self._stop.set()
                self._stop = None

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(EPOCH_TICK_S):
            self._engine.increment_epoch()


# -- helpers -------------------------------------------------------------------------------


def _wasi_config(invocation: Invocation, stdio: Stdio) -> wasmtime.WasiConfig:
    wasi = wasmtime.WasiConfig()
    wasi.argv = list(invocation.argv)
    wasi.env = [list(pair) for pair in invocation.env]
    stdio._configure(wasi, invocation.stdio)
    for preopen in invocation.preopens:
        try:
            wasi.preopen_dir(str(preopen.host), preopen.guest, fs_mutable=preopen.writable)
        except wasmtime.WasmtimeError as e:
            raise ConfigError(
                f"cannot pre-open {preopen.host} as {preopen.guest}: it does not exist or "
                "is not a readable directory"
            ) from e
    return wasi


def _deadline_ticks(timeout_s: float) -> int:
    # One extra tick: the first tick may come at any time up to EPOCH_TICK_S after now, so
    # the workload always gets at least timeout_s.
    return max(1, math.ceil(timeout_s / EPOCH_TICK_S)) + 1


def _check_entry_point(module: wasmtime.Module, name: str) -> None:
    exports = {e.name: e.type for e in module.exports}
    start = exports.get("_start")
    if isinstance(start, wasmtime.FuncType):
        if not start.params and not start.results:
            return
        raise NoEntryPointError(
            f"{name}: _start must take no parameters and return nothing; it is not a WASI "
            "command entry point"
        )
    if "_initialize" in exports:
        raise NoEntryPointError(
            f"{name} is a WASI reactor (a library with _initialize), not a command: it has no "
            "_start to run; build it as a program with a main function"
        )
    raise NoEntryPointError(
        f"{name} exports no _start function, so there is nothing to run; build it as a WASI "
        "command (a program with a main function)"
    )


_EXTERN_KINDS = {
    wasmtime.FuncType: "function",
    wasmtime.MemoryType: "memory",
    wasmtime.TableType: "table",
    wasmtime.GlobalType: "global",
}


def _link_error(
    state: _EngineState, module: wasmtime.Module, name: str, error: wasmtime.WasmtimeError
) -> WorkloadError:
    """Name the first import the linker cannot satisfy (or say why it does not fit)."""
    store = wasmtime.Store(state.engine)
    try:
        for imp in module.imports:
            field = imp.name or ""
            try:
                state.linker.get(store, imp.module, field)
            except wasmtime.WasmtimeError:
                kind = _EXTERN_KINDS.get(type(imp.type), "item")
                return UnresolvedImportError(
                    f"{name} imports the {kind} {imp.module}::{field}, which the keep does not "
                    f"provide; {_import_hint(imp.module)}",
                    module=imp.module,
                    field=field,
                )
    finally:
        store.close()
    text = str(error)
    if "incompatible import type" in text:
        first = text.strip().splitlines()[0]
        module_name, field = _between(first, "`", "::"), _between(first, "::", "`")
        return UnresolvedImportError(
            f"{name} imports {module_name}::{field} with a type the keep does not provide "
            f"({_cause(error)})",
            module=module_name,
            field=field,
        )
    return NotWasmError(f"{name} cannot be linked: {_cause(error)}")


def _import_hint(module: str) -> str:
    if module == WASI_MODULE:
        return "it is not a WASI preview 1 function"
    if module == "wasi_unstable":
        return "wasi_unstable is the old WASI snapshot 0; rebuild for wasm32-wasip1"
    return f"a workload can import only WASI preview 1 functions ({WASI_MODULE})"


def _between(text: str, start: str, end: str) -> str:
    _, _, tail = text.partition(start)
    return tail.partition(end)[0] if tail else ""


def _trap_error(
    trap: wasmtime.Trap,
    module: LoadedModule,
    instance: wasmtime.Instance,
    store: wasmtime.Store,
    invocation: Invocation,
) -> WorkloadError:
    code = trap.trap_code
    if code is wasmtime.TrapCode.INTERRUPT and invocation.timeout_s is not None:
        return DeadlineError(
            f"deadline of {invocation.timeout_s} s reached: {module.name} was stopped",
            timeout_s=invocation.timeout_s,
        )
    limit = invocation.memory_bytes
    if limit is not None and code is wasmtime.TrapCode.UNREACHABLE:
        used = _memory_in_use(instance, store)
        if used is not None and used >= limit - limit * _NEAR_LIMIT_FRACTION:
            return MemoryLimitError(
                f"memory limit of {format_mib(limit)} reached: {module.name} could not grow "
                f"its memory past {format_mib(used)} and aborted",
                limit_bytes=limit,
                used_bytes=used,
            )
    return GuestTrapError(
        f"{module.name} trapped: {_trap_message(trap)}",
        trap_code=_trap_code(trap),
        backtrace=_backtrace(trap),
    )


def _runtime_error(error: wasmtime.WasmtimeError, module: LoadedModule) -> WorkloadError:
    cause = _cause(error)
    if "invalid exit status" in cause:
        return GuestTrapError(
            f"{module.name} exited with a status outside 0..125, which WASI preview 1 does "
            "not allow",
            trap_code=None,
            backtrace="",
        )
    return GuestTrapError(f"{module.name} failed: {cause}", trap_code=None, backtrace="")


def _memory_in_use(instance: wasmtime.Instance, store: wasmtime.Store) -> int | None:
    memory = instance.exports(store).get("memory")
    if isinstance(memory, wasmtime.Memory):
        return int(memory.data_len(store))
    return None


def _trap_message(trap: wasmtime.Trap) -> str:
    # wasmtime's chain ends "Caused by: [0: memory fault at ...] [1:] wasm trap: <what>".
    for line in trap.message.splitlines():
        _, marker, what = line.partition("wasm trap: ")
        if marker:
            return what.strip()
    return _last_line(trap.message)


def _trap_code(trap: wasmtime.Trap) -> str | None:
    code = trap.trap_code
    return None if code is None else code.name


def _backtrace(trap: wasmtime.Trap) -> str:
    lines = trap.message.splitlines()
    try:
        first = next(i for i, line in enumerate(lines) if "wasm backtrace:" in line)
    except StopIteration:
        return ""
    frames = []
    for line in lines[first + 1 :]:
        if not line.strip() or line.startswith("Caused by"):
            break
        frames.append(line.strip())
    return "\n".join(frames)


def _cause(error: Exception) -> str:
    """wasmtime's innermost cause: the last line of its "Caused by:" chain."""
    return _last_line(str(error))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def _instantiation_error(
    e: wasmtime.Trap | wasmtime.WasmtimeError, module: LoadedModule, invocation: Invocation
) -> WorkloadError:
    """What a failed instantiation means for the workload: a trap in its start function, its
    memory limit, or another reason wasmtime gives."""
    if isinstance(e, wasmtime.Trap):
        return GuestTrapError(
            f"{module.name} trapped in its start function: {_trap_message(e)}",
            trap_code=_trap_code(e),
            backtrace=_backtrace(e),
        )
    limit = invocation.memory_bytes
    if limit is not None and "memory" in str(e) and "limit" in str(e):
        return MemoryLimitError(
            f"memory limit of {format_mib(limit)} reached: {module.name} needs more "
            "linear memory than that to start",
            limit_bytes=limit,
            used_bytes=None,
        )
    return WorkloadError(f"{module.name} could not be instantiated: {_cause(e)}")


def _set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    # A memory file, not wasmtime's private stdin-bytes call (TOOLING.md 3.1, P7).
    fd = _memory_file("donjon-stdin")
    try:
        _write_all(fd, data)
        wasi.stdin_file = f"/proc/self/fd/{fd}"  # wasmtime opens its own description of it
    finally:
        os.close(fd)


def _memory_file(name: str) -> int:
    return os.memfd_create(name, os.MFD_CLOEXEC)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _fd_writer(fd: int) -> Callable[[bytes], int]:
    def write(data: bytes) -> int:
        try:
            return os.write(fd, data)
        except OSError:
            return len(data)  # the reader went away: discard, as a closed pipe would

    return write


def _wasmtime_identity() -> str:
    """The installed wasmtime-py version and native library size, without importlib.metadata
    (which costs ~60 ms at start-up)."""
    package = Path(wasmtime.__file__).parent
    version = "unknown"
    try:
        with os.scandir(package.parent) as entries:
            for entry in entries:
                if entry.name.startswith("wasmtime-") and entry.name.endswith(".dist-info"):
                    version = entry.name.removeprefix("wasmtime-").removesuffix(".dist-info")
                    break
    except OSError:
        pass
    lib_size = 0
    for lib in package.glob("*/_libwasmtime.*"):
        lib_size = lib.stat().st_size
        break
    return f"wasmtime={version};lib={lib_size}"
