"""The keep runtime's specific errors: one class per way a workload can fail to run.

Each is a subclass of the shared tree in :mod:`donjon.errors`, so ``except WorkloadError`` still
catches them all, and each has its own exit code, so a script can tell them apart::

    WorkloadError (125)          the keep itself failed (e.g. the keep process died)
    ├─ ModuleError               a module the keep cannot run
    │  ├─ NotWasmError      126  not a WebAssembly module (or a component, or invalid)
    │  ├─ ModuleFileError   127  the module file is missing, unreadable or too large
    │  ├─ NoEntryPointError 128  no ``_start`` (not a WASI command)
    │  └─ UnresolvedImportError 129  an import the keep does not provide
    ├─ TrapError                 the workload trapped
    │  └─ GuestTrapError    134  with the trap code and the wasm backtrace
    └─ LimitError                a configured limit stopped the workload
       ├─ MemoryLimitError  137  ``[limits] memory_mib``
       └─ DeadlineError     137  ``[limits] timeout_s``
    ConfigError
    └─ UnsupportedConfigError 3  a valid config asking for what this keep cannot do yet

A WASI preview 1 workload can only exit with 0..125 (wasmtime refuses larger statuses), so every
code from 126 up is donjon's. 125 is shared with a workload that exits 125, as in ``docker run``.

This module imports nothing heavy: the CLI raises these without loading wasmtime.
"""

from __future__ import annotations

from typing import ClassVar

from donjon.errors import ConfigError, LimitError, ModuleError, TrapError

__all__ = [
    "DeadlineError",
    "GuestTrapError",
    "MemoryLimitError",
    "ModuleFileError",
    "NoEntryPointError",
    "NotWasmError",
    "UnresolvedImportError",
    "UnsupportedConfigError",
]


class NotWasmError(ModuleError):
    """The bytes are not a WebAssembly core module that wasmtime can compile."""

    exit_code: ClassVar[int] = 126


class ModuleFileError(ModuleError):
    """The module file does not exist, cannot be read, or is larger than allowed."""

    exit_code: ClassVar[int] = 127


class NoEntryPointError(ModuleError):
    """The module exports no ``_start`` function of type ``() -> ()``: not a WASI command."""

    exit_code: ClassVar[int] = 128


class UnresolvedImportError(ModuleError):
    """The module imports something the keep does not provide.

    Attributes:
        module: the import's module name, e.g. ``"env"``.
        field: the import's field name, e.g. ``"foo"``.
    """

    exit_code: ClassVar[int] = 129

    def __init__(self, message: str, *, module: str, field: str) -> None:
        super().__init__(message)
        self.module = module
        self.field = field


class GuestTrapError(TrapError):
    """The workload trapped (``unreachable``, out-of-bounds access, stack overflow, ...).

    Attributes:
        trap_code: wasmtime's trap code name (e.g. ``"UNREACHABLE"``), or ``None``.
        backtrace: the wasm backtrace, one frame per line (may be empty).
    """

    exit_code: ClassVar[int] = 134

    def __init__(self, message: str, *, trap_code: str | None, backtrace: str = "") -> None:
        super().__init__(message)
        self.trap_code = trap_code
        self.backtrace = backtrace


class MemoryLimitError(LimitError):
    """The workload needed more linear memory than ``[limits] memory_mib`` allows.

    Attributes:
        limit_bytes: the configured cap.
        used_bytes: the linear memory in use when it stopped, when known.
    """

    exit_code: ClassVar[int] = 137

    def __init__(self, message: str, *, limit_bytes: int, used_bytes: int | None) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes
        self.used_bytes = used_bytes


class DeadlineError(LimitError):
    """The workload ran past ``[limits] timeout_s`` and was stopped.

    Attributes:
        timeout_s: the configured deadline, in seconds.
    """

    exit_code: ClassVar[int] = 137

    def __init__(self, message: str, *, timeout_s: float) -> None:
        super().__init__(message)
        self.timeout_s = timeout_s


class UnsupportedConfigError(ConfigError):
    """A valid config that asks for something this keep cannot provide yet (e.g. sockets)."""

    exit_code: ClassVar[int] = 3
