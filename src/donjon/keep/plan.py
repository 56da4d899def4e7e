"""What one run of a workload is granted, worked out from its config: pure, no wasmtime.

:class:`Invocation` is the complete list of what the executor gives a workload: argv, the
environment, what fds 0–2 are, pre-opened directories and limits. It is built only from the
:class:`~donjon.keep.config.WorkloadConfig` and the command-line arguments, never from the host
process's environment or files.

Rule 1: nothing ambient. The environment is exactly ``FD_COUNT``, ``FD_NAMES`` and the config's
``[env]``; argv is the module's name, the config's ``args``, then the caller's arguments.
Rule 2: a config this keep cannot honour exactly is refused with
:class:`~donjon.keep.errors.UnsupportedConfigError`, never approximated silently. wasmtime
always has fds 0, 1 and 2 and numbers pre-opened directories from 3, so for now ``[[files]]``
may hold stdio and ``null`` entries at positions 0–2 only; sockets need the socket layer.

Example:
    >>> from donjon.keep.config import parse_config
    >>> inv = Invocation.from_config(parse_config('args = ["a"]'), program="x.wasm", args=("b",))
    >>> inv.argv
    ('x.wasm', 'a', 'b')
    >>> [kind.value for kind in inv.stdio]
    ['stdin', 'stdout', 'stderr']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from donjon.keep.config import FileKind, WorkloadConfig
from donjon.keep.errors import UnsupportedConfigError

__all__ = ["MIB", "Invocation", "Preopen", "format_mib"]

MIB = 1024 * 1024
"""Bytes in a MiB."""

# What each of wasmtime's fixed fds can be: 0 is an input stream, 1 and 2 are output streams.
_STDIO_KINDS: tuple[frozenset[FileKind], ...] = (
    frozenset({FileKind.NULL, FileKind.STDIN}),
    frozenset({FileKind.NULL, FileKind.STDOUT, FileKind.STDERR}),
    frozenset({FileKind.NULL, FileKind.STDOUT, FileKind.STDERR}),
)


@dataclass(frozen=True, slots=True)
class Preopen:
    """A host directory the workload sees at ``guest``.

    Attributes:
        host: the host directory (untrusted host storage).
        guest: the absolute guest path.
        writable: ``False`` makes wasmtime refuse every change (create, write, delete, rename).
    """

    host: Path
    guest: str
    writable: bool


@dataclass(frozen=True, slots=True)
class Invocation:
    """Everything one run of a workload gets; the executor adds nothing.

    Attributes:
        argv: ``argv[0]`` (the module's name) and the arguments.
        env: the environment, in order.
        stdio: what fds 0, 1 and 2 are: ``NULL`` (reads see end of file, writes are
            discarded), ``STDIN``, ``STDOUT`` or ``STDERR`` (the caller's stream of that name).
        preopens: pre-opened directories (fd 3 onwards, in order).
        memory_bytes: cap on linear memory, or ``None``.
        timeout_s: wall-clock deadline in seconds, or ``None``.
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    stdio: tuple[FileKind, FileKind, FileKind]
    preopens: tuple[Preopen, ...] = ()
    memory_bytes: int | None = None
    timeout_s: float | None = None

    @classmethod
    def from_config(
        cls, config: WorkloadConfig, *, program: str, args: Sequence[str] = ()
    ) -> Invocation:
        """Work out what a run of ``program`` under ``config`` is granted.

        Args:
            config: the validated workload config (``WorkloadConfig()`` for none).
            program: ``argv[0]``, the module's name (e.g. ``"hello.wasm"``).
            args: arguments after the config's ``args`` (the command line's ``-- ARGS``).

        Returns:
            The invocation.

        Raises:
            UnsupportedConfigError: the config asks for fds this keep cannot provide yet.
        """
        limits = config.limits
        return cls(
            argv=(*config.argv(program), *args),
            env=config.environment(),
            stdio=_stdio(config),
            preopens=tuple(Preopen(d.host, d.guest, d.writable) for d in config.dirs),
            memory_bytes=None if limits.memory_mib is None else limits.memory_mib * MIB,
            timeout_s=limits.timeout_s,
        )


def _stdio(config: WorkloadConfig) -> tuple[FileKind, FileKind, FileKind]:
    files = config.effective_files()
    source = config.source or "workload config"
    for index, spec in enumerate(files):
        if index >= len(_STDIO_KINDS):
            what = f"a {spec.kind.value} socket" if spec.is_socket else f'kind "{spec.kind.value}"'
            raise UnsupportedConfigError(
                f"{source}: files[{index}]: {what} at fd {index} is not supported yet: this "
                "keep provides fds 0-2 only (stdio and null); remove the entry to run the "
                "workload here"
            )
        if spec.kind not in _STDIO_KINDS[index]:
            allowed = " or ".join(f'"{k.value}"' for k in sorted(_STDIO_KINDS[index]))
            raise UnsupportedConfigError(
                f'{source}: files[{index}]: kind "{spec.kind.value}" at fd {index} is not '
                f"supported yet; fd {index} can be {allowed}"
            )
    # An fd the config does not list behaves as null: wasmtime always has fds 0-2, so the
    # closest honest thing to "no such fd" is one that reads nothing and keeps nothing.
    kinds = [spec.kind for spec in files] + [FileKind.NULL] * (3 - len(files))
    return kinds[0], kinds[1], kinds[2]


def format_mib(size: int) -> str:
    """``67108864`` → ``"64 MiB"``; ``1572864`` → ``"1.5 MiB"``."""
    mib = size / MIB
    return f"{mib:.0f} MiB" if mib == int(mib) else f"{mib:.1f} MiB"
