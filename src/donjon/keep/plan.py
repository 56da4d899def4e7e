"""What one run of a workload is granted, worked out from its config: pure, no wasmtime.

:class:`Invocation` is the complete list of what the executor gives a workload: argv, the
environment, what fds 0–2 are, pre-opened directories, limits and the limits of its sockets.
It is built only from the :class:`~donjon.keep.config.WorkloadConfig` and the command-line
arguments, never from the host process's environment or files.

Rule 1: nothing ambient. The environment is exactly ``FD_COUNT``, ``FD_NAMES`` and the config's
``[env]``; argv is the module's name, the config's ``args``, then the caller's arguments.
Rule 2: fds are numbered exactly as ``[[files]]`` lists them (Enarx), with ``[[dirs]]`` after
them. wasmtime alone always has fds 0, 1 and 2 and numbers pre-opened directories from 3, so it
numbers the fds itself only for the layouts it can express exactly: at most three entries, each
a stdio kind or ``null`` where it fits. Every other layout (any socket, anything at fd 3 or
above, stdio in another place) is numbered by the socket layer (:attr:`Invocation.fds`).
Rule 3: with fewer than three entries and no socket, fds up to 2 behave as ``null`` (as before);
with the socket layer, an fd the config does not list does not exist (``EBADF``).

Example:
    >>> from donjon.keep.config import parse_config
    >>> inv = Invocation.from_config(parse_config('args = ["a"]'), program="x.wasm", args=("b",))
    >>> inv.argv
    ('x.wasm', 'a', 'b')
    >>> [kind.value for kind in inv.stdio]
    ['stdin', 'stdout', 'stderr']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from donjon.keep.config import (
    KIB,
    SECRETS_GUEST_DIR,
    FileKind,
    FileSpec,
    NetworkLimits,
    Protocol,
    WorkloadConfig,
)
from donjon.keep.errors import UnsupportedConfigError

if TYPE_CHECKING:
    # Only the type: a run without sockets must not load the socket layer (ssl, threads).
    from donjon.keep.sockets.network import SocketLimits

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
        preopens: pre-opened directories, in order, from fd :attr:`preopen_base`.
        memory_bytes: cap on linear memory, or ``None``.
        timeout_s: wall-clock deadline in seconds, or ``None``.
        fds: the whole ``[[files]]`` layout when the socket layer numbers the fds (guest fd =
            index), or ``None`` when wasmtime does (fds 0-2 as :attr:`stdio`, pre-opens
            from 3). With it, :attr:`stdio` says which of the caller's streams wasmtime's own
            fds 0, 1 and 2 carry (``STDIN``/``STDOUT``/``STDERR``, or ``NULL`` when unused).
            A listen entry's own ``max_connections`` travels here, on its :class:`FileSpec`.
        network: the config's ``[network]`` limits, put over the caller's socket limits by
            :meth:`socket_limits`.
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(repr=False)  # values may be secrets
    stdio: tuple[FileKind, FileKind, FileKind]
    preopens: tuple[Preopen, ...] = ()
    memory_bytes: int | None = None
    timeout_s: float | None = None
    fds: tuple[FileSpec, ...] | None = None
    network: NetworkLimits = field(default_factory=NetworkLimits)

    @property
    def preopen_base(self) -> int:
        """The guest fd of the first pre-opened directory.

        Never below 3: wasi-libc looks for pre-opens from fd 3 up, so with fewer than three
        ``[[files]]`` the fds in between do not exist.
        """
        return 3 if self.fds is None else max(3, len(self.fds))

    @property
    def sockets(self) -> tuple[tuple[int, FileSpec], ...]:
        """The ``listen`` and ``connect`` entries, with their fd numbers."""
        return tuple((fd, spec) for fd, spec in enumerate(self.fds or ()) if spec.is_socket)

    @property
    def uses_tls(self) -> bool:
        """Whether a socket terminates TLS (the run then needs the Keep's TLS identity)."""
        return any(spec.prot is Protocol.TLS for _, spec in self.sockets)

    def socket_limits(self, base: SocketLimits) -> SocketLimits:
        """``base`` (the caller's limits, or the defaults) with every limit that the config's
        ``[network]`` sets put over it: the workload's owner decides for their own Keep.

        A listener's own ``max_connections`` is not folded in here; the socket layer reads it
        from the listener's :class:`FileSpec`, which wins over both.

        Args:
            base: the limits the run would otherwise use.

        Returns:
            ``base`` itself when the config sets none, else a copy with the config's values.
        """
        network = self.network
        changes: dict[str, Any] = {
            name: value
            for name in (
                "max_connections",
                "max_pending_handshakes",
                "handshake_timeout_s",
                "connect_timeout_s",
                "send_stall_timeout_s",
            )
            if (value := getattr(network, name)) is not None
        }
        if network.buffer_kib is not None:
            changes["buffer_bytes"] = network.buffer_kib * KIB
        return replace(base, **changes) if changes else base

    @classmethod
    def from_config(
        cls,
        config: WorkloadConfig,
        *,
        program: str,
        args: Sequence[str] = (),
        secrets: Mapping[str, bytes] | None = None,
        secrets_dir: Path | None = None,
    ) -> Invocation:
        """Work out what a run of ``program`` under ``config`` is granted.

        Args:
            config: the validated workload config (``WorkloadConfig()`` for none).
            program: ``argv[0]``, the module's name (e.g. ``"hello.wasm"``).
            args: arguments after the config's ``args`` (the command line's ``-- ARGS``).
            secrets: the values Steward released for the config's ``[[secrets]]``, by secret
                name; ``env`` ones join the environment after ``[env]``, in the config's order.
            secrets_dir: where the caller wrote the ``file`` ones
                (:class:`~donjon.keep.secret_files.SecretFiles`); pre-opened read-only at
                ``/run/secrets``.

        Returns:
            The invocation.

        Raises:
            UnsupportedConfigError: the config asks for secrets and *secrets* lacks one (only a
                deployed Keep with a Steward receives them), an ``env`` secret is not UTF-8 text
                without NUL, or ``file`` secrets come without *secrets_dir*.
        """
        limits = config.limits
        stdio, fds = _layout(config.effective_files())
        env = config.environment()
        preopens = tuple(Preopen(d.host, d.guest, d.writable) for d in config.dirs)
        if config.secrets:
            released = secrets or {}
            missing = [s.name for s in config.secrets if s.name not in released]
            if missing:
                raise UnsupportedConfigError(
                    f"{config.source or 'the workload config'} asks Steward for secrets "
                    f"({', '.join(missing)}), which Steward releases only to an attested Keep: "
                    "deploy the workload with `donjon deploy --steward URL --ca FILE`; to try it "
                    "here, give each value with `donjon run --secret NAME=FILE`"
                )
            env += tuple(
                (s.env, _env_text(s.name, released[s.name]))
                for s in config.secrets
                if s.env is not None
            )
            if any(s.file is not None for s in config.secrets):
                if secrets_dir is None:
                    raise UnsupportedConfigError(
                        "file secrets need the directory they were written to; pass secrets_dir"
                    )
                preopens += (Preopen(secrets_dir, SECRETS_GUEST_DIR, writable=False),)
        return cls(
            argv=(*config.argv(program), *args),
            env=env,
            stdio=stdio,
            fds=fds,
            preopens=preopens,
            memory_bytes=None if limits.memory_mib is None else limits.memory_mib * MIB,
            timeout_s=limits.timeout_s,
            network=config.network,
        )


def _env_text(name: str, value: bytes) -> str:
    """A secret as an environment variable's value: UTF-8 text without NUL, or a clear error."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = "\x00"  # refused just below, with the same message
    if "\x00" in text:
        raise UnsupportedConfigError(
            f"secret {name!r} is not UTF-8 text without NUL bytes, so no environment variable "
            'can hold it; deliver it as a file (file = "..." in [[secrets]]) or store it as '
            "text (e.g. base64)"
        )
    return text


def _layout(
    files: tuple[FileSpec, ...],
) -> tuple[tuple[FileKind, FileKind, FileKind], tuple[FileSpec, ...] | None]:
    """What wasmtime's fds 0-2 carry, and the socket layer's layout when wasmtime cannot number
    the fds itself (Rule 2)."""
    if len(files) <= len(_STDIO_KINDS) and all(
        spec.kind in _STDIO_KINDS[index] for index, spec in enumerate(files)
    ):
        # An fd the config does not list behaves as null: wasmtime always has fds 0-2, so the
        # closest honest thing to "no such fd" is one that reads nothing and keeps nothing.
        kinds = [spec.kind for spec in files] + [FileKind.NULL] * (3 - len(files))
        return (kinds[0], kinds[1], kinds[2]), None
    present = {spec.kind for spec in files}
    streams = tuple(
        kind if kind in present else FileKind.NULL
        for kind in (FileKind.STDIN, FileKind.STDOUT, FileKind.STDERR)
    )
    return (streams[0], streams[1], streams[2]), files


def format_mib(size: int) -> str:
    """``67108864`` → ``"64 MiB"``; ``1572864`` → ``"1.5 MiB"``."""
    mib = size / MIB
    return f"{mib:.0f} MiB" if mib == int(mib) else f"{mib:.1f} MiB"
