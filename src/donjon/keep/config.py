"""Workload configuration: ``Enarx.toml``, compatible with Enarx, plus donjon's own sections.

A workload gets exactly what its config grants: arguments, environment variables, the file
descriptors listed in ``[[files]]`` (stdio, ``/dev/null``, listen and connect sockets), the host
directories listed in ``[[dirs]]``, the ``[limits]`` it runs under and the ``[network]`` limits of
its sockets. ``docs/workload-config.md`` documents every key.

Rule 1: parsing is pure. :func:`parse_config` and :meth:`WorkloadConfig.from_dict` read no files
and no clock; only :func:`load_config` touches the filesystem (to read the file and to check that
the host directories exist).
Rule 2: every error is a :class:`ConfigFileError` that names the file, the line and the field,
says what is wrong and what is allowed. Unknown keys are errors: a silently ignored typo in a
security configuration is a bug.
Rule 3: everything is bounded (config size, counts, string lengths), because a config may reach
the Keep through the untrusted host.

Example::

    >>> cfg = parse_config('args = ["-v"]\\n[[files]]\\nkind = "stdout"\\n')
    >>> cfg.args, cfg.fd_environment()
    (('-v',), (('FD_COUNT', '1'), ('FD_NAMES', 'stdout')))
"""

from __future__ import annotations

# tomllib (and the line scanner built on it) and json are imported where they are used: the
# keep process imports this module on `donjon run`'s start-up path (a time goal) and, for a
# config that arrives as plain data, needs neither.
import enum
import ipaddress
import math
import os
import re
import stat
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from donjon.errors import ConfigError

if TYPE_CHECKING:
    from donjon.keep._toml_lines import KeyPath, LineMap

__all__ = [
    "CONFIG_DICT_VERSION",
    "DEFAULT_ARGV0",
    "DEFAULT_LISTEN_ADDR",
    "DEFAULT_PORT",
    "KIB",
    "MAX_ARGS",
    "MAX_BUFFER_KIB",
    "MAX_CONFIG_BYTES",
    "MAX_DIRS",
    "MAX_ENV_NAME_BYTES",
    "MAX_ENV_VARS",
    "MAX_FILES",
    "MAX_HANDSHAKES_IN_PROGRESS",
    "MAX_HOST_BYTES",
    "MAX_LISTENER_CONNECTIONS",
    "MAX_MEMORY_MIB",
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "MAX_PEM_BYTES",
    "MAX_SECRETS",
    "MAX_SOCKET_TIMEOUT_S",
    "MAX_STRING_BYTES",
    "MAX_TIMEOUT_S",
    "MAX_URL_BYTES",
    "MIN_BUFFER_KIB",
    "SECRETS_GUEST_DIR",
    "ConfigFileError",
    "DirSpec",
    "FileKind",
    "FileSpec",
    "Limits",
    "NetworkLimits",
    "Protocol",
    "SecretSpec",
    "WorkloadConfig",
    "config_template",
    "load_config",
    "package_config",
    "parse_config",
]

# -- limits ------------------------------------------------------------------------------------

MAX_CONFIG_BYTES = 1024 * 1024  # bytes; Enarx's own limit on Enarx.toml
MAX_ARGS = 1024  # argv entries; bounds the argv buffer the Keep builds
MAX_ENV_VARS = 1024  # [env] entries, for the same reason
MAX_STRING_BYTES = 64 * 1024  # bytes, UTF-8, of one argument or environment value
MAX_ENV_NAME_BYTES = 256  # bytes, UTF-8, of one environment variable name
MAX_FILES = 256  # [[files]] entries (pre-opened fds)
MAX_DIRS = 64  # [[dirs]] entries (pre-opened directories)
MAX_NAME_BYTES = 255  # bytes of one fd name in FD_NAMES
MAX_HOST_BYTES = 253  # bytes of a connect host: the longest DNS name (RFC 1035 §2.3.4)
MAX_PATH_BYTES = 4096  # bytes of a host or guest path: Linux PATH_MAX
MAX_URL_BYTES = 2048  # bytes of the steward URL
MAX_PEM_BYTES = 256 * 1024  # bytes of inline PEM trust anchors: a full public CA bundle fits
MAX_SECRETS = 64  # [[secrets]] entries; each costs Steward a sealed value in one response
SECRETS_GUEST_DIR = "/run/secrets"  # where file secrets appear, read-only
# wasm32 addresses at most 65536 pages of 64 KiB = 4 GiB of linear memory (Wasm core spec §2.3.8).
MAX_MEMORY_MIB = 4096  # MiB
MAX_TIMEOUT_S = 365 * 24 * 3600.0  # seconds; a longer deadline is a typo, not a limit
# Socket limits ([network] and a listener's max_connections). The runtime's defaults are in
# donjon.keep.sockets.network (256 connections, 64 handshakes, 10/10/60 s, 256 KiB); these
# bounds only refuse values that are typos or that would undo the protection the limit gives.
MAX_LISTENER_CONNECTIONS = 65536  # connections; each holds an fd and two kernel buffers
MAX_HANDSHAKES_IN_PROGRESS = 4096  # TLS handshakes per listener; each holds TLS state
MAX_SOCKET_TIMEOUT_S = 3600.0  # seconds; a peer given longer is a slowloris given free rein
KIB = 1024  # bytes in a KiB
MIN_BUFFER_KIB = 4  # KiB; the runtime refuses smaller socket buffers (one page)
MAX_BUFFER_KIB = 16 * 1024  # KiB per buffer (16 MiB); Linux caps it at net.core.[rw]mem_max

DEFAULT_PORT = 443  # Enarx's default for listen and connect, whatever the protocol
DEFAULT_LISTEN_ADDR = "::"  # Enarx's default: every IPv6 (and, dual-stack, IPv4) address
DEFAULT_ARGV0 = "main.wasm"  # Enarx always passes this as argv[0]
CONFIG_DICT_VERSION = 1  # version of the plain-data form (to_dict / from_dict)

_RESERVED_ENV = frozenset({"FD_COUNT", "FD_NAMES"})
# A secret's name at Steward (donjon.steward.secrets.SECRET_NAME: a bare TOML key, no dots);
# repeated here because this module is on `donjon run`'s start-up path and Steward's is not.
_SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_TOML_POSITION = re.compile(r"at line (\d+), column (\d+)")
_PEM_CERT = "-----BEGIN CERTIFICATE-----"
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class ConfigFileError(ConfigError):
    """A workload config that is not valid, with where and why as attributes.

    The message reads ``FILE:LINE: FIELD: PROBLEM``, e.g.
    ``Enarx.toml:7: files[2].prot: "udp" is not allowed; use "tls" or "tcp"``.

    Attributes:
        file: the config's name (its path, or the ``source`` given to the parser).
        line: the 1-based line the problem is on, or ``None`` (plain-data input, unreadable file).
        field: the field's path, e.g. ``files[2].prot`` (0-based index = fd number), or ``None``.
        problem: what is wrong and what is allowed, without the location.
    """

    def __init__(self, file: str, line: int | None, field: str | None, problem: str) -> None:
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
        self.file = file
        self.line = line
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file, self.line, self.field, self.problem))


# -- values ------------------------------------------------------------------------------------


class FileKind(enum.StrEnum):
    """What a pre-opened file descriptor is (Enarx's ``kind``)."""

    NULL = "null"
    STDIN = "stdin"
    STDOUT = "stdout"
    STDERR = "stderr"
    LISTEN = "listen"
    CONNECT = "connect"


class Protocol(enum.StrEnum):
    """How a listen or connect socket carries bytes (Enarx's ``prot``)."""

    TLS = "tls"  # TLS 1.3 terminated inside the Keep; the host sees ciphertext only
    TCP = "tcp"  # plaintext: the host can read and change every byte


_SOCKET_KINDS = frozenset({FileKind.LISTEN, FileKind.CONNECT})


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One pre-opened file descriptor; its fd number is its index in the files list.

    Attributes:
        kind: what the descriptor is.
        name: its name in ``FD_NAMES``: never empty, never contains ``:``.
        prot: listen/connect only: TLS (default) or plaintext TCP.
        addr: listen only: the IP address to bind (default ``"::"``).
        host: connect only: the host name or IP address to connect to.
        port: listen/connect only: 1..65535 (default 443); a listen may also say 0, for a free
            port the system picks when the Keep starts (reported when it listens).
        client_ca: listen with TLS only (donjon extension): PEM trust anchors; when set, every
            client must present a certificate that chains to one of them (mutual TLS).
        server_ca: connect with TLS only (donjon extension): PEM trust anchors that the server's
            certificate must chain to, instead of the runtime's default anchors.
        max_connections: listen only (donjon extension): connections this listener has open
            at once (1..65536); ``None``: ``[network] max_connections``, else the runtime's.
    """

    kind: FileKind
    name: str
    prot: Protocol | None = None
    addr: str | None = None
    host: str | None = None
    port: int | None = None
    client_ca: str | None = None
    server_ca: str | None = None
    max_connections: int | None = None

    @property
    def is_socket(self) -> bool:
        """True for listen and connect descriptors."""
        return self.kind in _SOCKET_KINDS

    def to_dict(self) -> dict[str, Any]:
        """Plain data (only the fields that are set); the inverse of the files entries that
        :meth:`WorkloadConfig.from_dict` reads."""
        out: dict[str, Any] = {"kind": self.kind.value, "name": self.name}
        if self.prot is not None:
            out["prot"] = self.prot.value
        for key in ("addr", "host", "port", "client_ca", "server_ca", "max_connections"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class DirSpec:
    """A host directory pre-opened in the guest (donjon extension).

    The host is untrusted: whatever the workload reads from here may have been written by the
    host, and whatever it writes here the host can read. Encrypt and authenticate what matters.

    Attributes:
        host: the host directory; relative paths in a file are resolved against the directory
            that holds the config. :func:`load_config` checks that it exists.
        guest: the absolute path the workload sees it at, normalised (no ``.``/``..``, no
            trailing ``/``).
        writable: whether the workload may create, change and delete files there.
    """

    host: Path
    guest: str
    writable: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for one run of the workload (donjon extension).

    Attributes:
        memory_mib: cap on the workload's linear memory, in MiB (1..4096); ``None``: no cap
            beyond wasm32's 4 GiB.
        timeout_s: wall-clock deadline in seconds (> 0); ``None``: no deadline.
    """

    memory_mib: int | None = None
    timeout_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data: only the limits that are set."""
        out: dict[str, Any] = {}
        if self.memory_mib is not None:
            out["memory_mib"] = self.memory_mib
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        return out


@dataclass(frozen=True, slots=True)
class NetworkLimits:
    """Limits on every socket of one run (donjon extension: ``[network]``).

    Each ``None`` leaves the runtime's value (``donjon.keep.sockets.SocketLimits``: the
    caller's, or the defaults) in place; a value set here overrides it for this run.

    Attributes:
        max_connections: connections one listener has open at once (1..65536), for listeners
            without their own ``max_connections``.
        max_pending_handshakes: TLS handshakes in progress per listener (1..4096); a new
            connection beyond it evicts the oldest.
        handshake_timeout_s: seconds a peer has to finish its TLS handshake (> 0, ≤ 3600).
        connect_timeout_s: seconds a ``connect`` entry has to connect and finish its TLS
            handshake (> 0, ≤ 3600).
        send_stall_timeout_s: seconds a blocking send may make no progress (a peer that never
            reads) before it returns what it sent, or ``ETIMEDOUT`` (> 0, ≤ 3600).
        buffer_kib: SO_SNDBUF and SO_RCVBUF of each connection, in KiB (4..16384).
    """

    max_connections: int | None = None
    max_pending_handshakes: int | None = None
    handshake_timeout_s: float | None = None
    connect_timeout_s: float | None = None
    send_stall_timeout_s: float | None = None
    buffer_kib: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data: only the limits that are set."""
        return {key: getattr(self, key) for key in _NETWORK_KEYS if getattr(self, key) is not None}


_DEFAULT_STDIO = (
    FileSpec(FileKind.STDIN, "stdin"),
    FileSpec(FileKind.STDOUT, "stdout"),
    FileSpec(FileKind.STDERR, "stderr"),
)


@dataclass(frozen=True, slots=True)
class SecretSpec:
    """A ``[[secrets]]`` entry: a secret Steward releases to this workload once attested.

    Exactly one of :attr:`env` and :attr:`file` is set.

    Attributes:
        name: the secret's name at Steward (``donjon steward secret set NAME``).
        env: the environment variable the workload reads it from (UTF-8 text values only).
        file: the file name it is read from in :data:`SECRETS_GUEST_DIR` (any bytes).
    """

    name: str
    env: str | None = None
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.env is not None:
            out["env"] = self.env
        if self.file is not None:
            out["file"] = self.file
        return out


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """Everything a workload is granted. Build it with :func:`parse_config`,
    :func:`load_config` or :meth:`from_dict`, which validate; the default is "no config".

    Attributes:
        args: ``argv[1:]``; ``argv[0]`` is always ``"main.wasm"`` (see :meth:`argv`).
        env: environment variables in file order, names unique.
        steward: the Steward URL to get the Keep's certificate from; ``None``: self-signed.
        files: the pre-opened fds in order, or ``None`` when the config has no ``[[files]]``
            (then the workload gets ordinary stdin, stdout and stderr: :meth:`effective_files`).
            An explicit ``files = []`` means no fds at all.
        dirs: pre-opened host directories.
        limits: resource limits.
        network: limits on the workload's sockets.
        secrets: secrets Steward releases to the workload after attestation (deployed Keeps
            only: the keep runtime asks for them, and adds them to the environment).
        source: the config's file name, for messages.
    """

    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # values may be secrets
    steward: str | None = None
    files: tuple[FileSpec, ...] | None = None
    dirs: tuple[DirSpec, ...] = ()
    limits: Limits = field(default_factory=Limits)
    network: NetworkLimits = field(default_factory=NetworkLimits)
    secrets: tuple[SecretSpec, ...] = ()
    source: str | None = None

    def effective_files(self) -> tuple[FileSpec, ...]:
        """The fds the workload gets: :attr:`files`, or stdin, stdout, stderr when ``None``."""
        return _DEFAULT_STDIO if self.files is None else self.files

    def fd_environment(self) -> tuple[tuple[str, str], ...]:
        """``FD_COUNT`` and ``FD_NAMES`` exactly as Enarx sets them for :meth:`effective_files`.

        ``FD_COUNT`` is the number of fds; ``FD_NAMES`` their names joined with ``:``.
        """
        files = self.effective_files()
        return (("FD_COUNT", str(len(files))), ("FD_NAMES", ":".join(f.name for f in files)))

    def environment(self) -> tuple[tuple[str, str], ...]:
        """The workload's whole environment, in Enarx's order: ``FD_COUNT``, ``FD_NAMES``, then
        :attr:`env`. Nothing from the host's environment is ever added."""
        return self.fd_environment() + self.env

    def argv(self, program: str = DEFAULT_ARGV0) -> tuple[str, ...]:
        """The workload's argv: ``program`` (Enarx: ``"main.wasm"``) followed by :attr:`args`."""
        return (program, *self.args)

    def to_dict(self) -> dict[str, Any]:
        """Plain data made of str, int, float, bool, list and dict (for CBOR transport).

        Omits what is unset; ``files`` is present only when the config had ``[[files]]``, and
        ``network`` only when a ``[network]`` limit is set (so such configs still reach a Keep
        whose donjon predates ``[network]``).
        """
        out: dict[str, Any] = {
            "version": CONFIG_DICT_VERSION,
            "args": list(self.args),
            "env": [[k, v] for k, v in self.env],
            "dirs": [
                {"host": str(d.host), "guest": d.guest, "writable": d.writable} for d in self.dirs
            ],
            "limits": self.limits.to_dict(),
        }
        if self.steward is not None:
            out["steward"] = self.steward
        network = self.network.to_dict()
        if network:
            out["network"] = network
        if self.files is not None:
            out["files"] = [f.to_dict() for f in self.files]
        if self.secrets:
            out["secrets"] = [s.to_dict() for s in self.secrets]
        if self.source is not None:
            out["source"] = self.source
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkloadConfig:
        """The inverse of :meth:`to_dict`, validating every field as hostile input.

        Args:
            data: plain data, e.g. decoded from CBOR that crossed the untrusted host.

        Returns:
            The config. Host directories are not checked for existence here.

        Raises:
            ConfigFileError: the data is not a valid config (``line`` is ``None``).
        """
        raw: object = data  # typed as a Mapping, but it came from the untrusted host
        source = raw.get("source") if isinstance(raw, Mapping) else None
        shown = source if isinstance(source, str) and source else "workload config"
        where = _Where(_clip(shown, 200), None)
        if not isinstance(raw, Mapping):
            raise where.error((), f"must be a mapping, got {_type_name(raw)}")
        _reject_unknown(where, (), data, _DICT_KEYS)
        version = data.get("version")
        if type(version) is not int or version != CONFIG_DICT_VERSION:
            raise where.error(
                ("version",), f"must be {CONFIG_DICT_VERSION}; this donjon reads no other version"
            )
        if "source" in data and not isinstance(data["source"], str):
            raise where.error(("source",), f"must be a string, got {_type_name(data['source'])}")
        return _build(where, data, base_dir=None, env_as_pairs=True)


# -- entry points ------------------------------------------------------------------------------


def package_config(config_toml: bytes, *, source: str) -> WorkloadConfig:
    """The config of a workload package (its ``Enarx.toml`` layer): empty means no config.

    Used wherever a package's config is read (the Keep that fetched it, ``donjon workload id``),
    so both see the same config and compute the same workload identity.

    Raises:
        ConfigFileError: not UTF-8, invalid, or with ``[[dirs]]`` (host directories: a deployed
            Keep runs on another machine).
    """
    try:
        text = config_toml.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigFileError(source, None, None, "is not UTF-8 text") from e
    if not text.strip():
        return WorkloadConfig()
    config = parse_config(text, source=source)
    if config.dirs:
        raise ConfigFileError(
            source, None, "dirs", "[[dirs]] are host directories; a deployed Keep refuses them"
        )
    return config


def parse_config(
    text: str, *, source: str = "Enarx.toml", base_dir: Path | None = None
) -> WorkloadConfig:
    """Parse and validate an ``Enarx.toml`` text.

    Args:
        text: the TOML text.
        source: the file name used in messages and kept in :attr:`WorkloadConfig.source`.
        base_dir: where relative ``[[dirs]]`` host paths are resolved; ``None`` keeps them
            relative. Nothing is read from it.

    Returns:
        The validated config.

    Raises:
        ConfigFileError: the text is not valid TOML or not a valid config.
    """
    config, _ = _parse(text, source, base_dir)
    return config


def load_config(path: Path) -> WorkloadConfig:
    """Read an ``Enarx.toml`` file (at most :data:`MAX_CONFIG_BYTES`) and validate it.

    Relative ``[[dirs]]`` host paths are resolved against the file's directory and must exist
    and be directories now, so a typo is caught before a Keep is started.

    Args:
        path: the config file.

    Returns:
        The validated config, with :attr:`WorkloadConfig.source` set to ``str(path)``.

    Raises:
        ConfigFileError: the file cannot be read, is too large, is not UTF-8, is not valid
            TOML, is not a valid config, or names a host directory that does not exist.
    """
    source = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as e:
        raise ConfigFileError(
            source, None, None, "does not exist; write one with `donjon config init`"
        ) from e
    except IsADirectoryError as e:
        raise ConfigFileError(
            source, None, None, "is a directory; give the path of the config file itself"
        ) from e
    except OSError as e:
        raise ConfigFileError(source, None, None, f"cannot be read: {e.strerror or e}") from e
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigFileError(source, None, None, _too_large_message())
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigFileError(
            source, line, None, f"is not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8"
        ) from e
    config, lines = _parse(text, source, path.absolute().parent)
    where = _Where(source, lines)
    for index, spec in enumerate(config.dirs):
        _check_host_dir(where, ("dirs", index, "host"), spec.host)
    return config


def config_template() -> str:
    """The commented ``Enarx.toml`` template that ``donjon config init`` writes.

    It parses to the default config. Lines starting ``# `` are examples and parse too when
    uncommented; lines starting ``## `` are explanations.
    """
    # Imported here: importlib.resources costs ~20 ms that `donjon run` need not pay.
    import importlib.resources

    resource = importlib.resources.files("donjon.keep").joinpath("config_template.toml")
    return resource.read_text(encoding="utf-8")


# -- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Where:
    """Where errors point: the file and, for TOML, the line of each key."""

    file: str
    lines: LineMap | None

    def error(self, path: KeyPath, problem: str) -> ConfigFileError:
        line = None if self.lines is None else self.lines.nearest(path)
        return ConfigFileError(self.file, line, _field_name(path) or None, problem)


_TOP_KEYS = ("args", "env", "steward", "files", "dirs", "limits", "network", "secrets")
_DICT_KEYS = ("version", *_TOP_KEYS, "source")
_KIND_KEYS: dict[FileKind, tuple[str, ...]] = {
    FileKind.NULL: ("kind", "name"),
    FileKind.STDIN: ("kind", "name"),
    FileKind.STDOUT: ("kind", "name"),
    FileKind.STDERR: ("kind", "name"),
    FileKind.LISTEN: ("kind", "name", "prot", "addr", "port", "client_ca", "max_connections"),
    FileKind.CONNECT: ("kind", "name", "prot", "host", "port", "server_ca"),
}
_FILE_KEYS = tuple(dict.fromkeys(k for keys in _KIND_KEYS.values() for k in keys))
_DIR_KEYS = ("host", "guest", "writable")
_SECRET_KEYS = ("name", "env", "file")
_LIMIT_KEYS = ("memory_mib", "timeout_s")
_NETWORK_KEYS = (
    "max_connections",
    "max_pending_handshakes",
    "handshake_timeout_s",
    "connect_timeout_s",
    "send_stall_timeout_s",
    "buffer_kib",
)


def _parse(text: str, source: str, base_dir: Path | None) -> tuple[WorkloadConfig, LineMap]:
    import tomllib

    from donjon.keep._toml_lines import scan_lines

    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigFileError(source, None, None, _too_large_message())
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        line = text.count("\n", 0, e.start) + 1
        raise ConfigFileError(
            source, line, None, "is not valid Unicode text (a lone surrogate); save it as UTF-8"
        ) from e
    if size > MAX_CONFIG_BYTES:
        raise ConfigFileError(source, None, None, _too_large_message())
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        match = _TOML_POSITION.search(message)
        line = int(match.group(1)) if match else text.count("\n") + 1
        raise ConfigFileError(source, line, None, f"not valid TOML: {message}") from e
    except RecursionError as e:
        raise ConfigFileError(
            source, None, None, "nests arrays or tables too deeply to be a workload config"
        ) from e
    lines = scan_lines(text)
    where = _Where(source, lines)
    config = _build(where, data, base_dir=base_dir, env_as_pairs=False)
    return config, lines


def _build(
    where: _Where, data: Mapping[str, Any], *, base_dir: Path | None, env_as_pairs: bool
) -> WorkloadConfig:
    if not env_as_pairs:
        _reject_unknown(where, (), data, _TOP_KEYS)
    args = _args(where, data["args"]) if "args" in data else ()
    if "env" not in data:
        env: tuple[tuple[str, str], ...] = ()
    elif env_as_pairs:
        env = _env_pairs(where, data["env"])
    else:
        env = _env_table(where, data["env"])
    steward = _steward(where, data["steward"]) if "steward" in data else None
    files = _files(where, data["files"]) if "files" in data else None
    dirs = _dirs(where, data["dirs"], base_dir) if "dirs" in data else ()
    limits = _limits(where, data["limits"]) if "limits" in data else Limits()
    network = _network(where, data["network"]) if "network" in data else NetworkLimits()
    secrets = _secrets(where, data["secrets"], env) if "secrets" in data else ()
    if any(s.file is not None for s in secrets):
        for index, d in enumerate(dirs):
            if d.guest == SECRETS_GUEST_DIR:
                raise where.error(
                    ("dirs", index, "guest"),
                    f"{SECRETS_GUEST_DIR} is where [[secrets]] files appear; use another path",
                )
    source = data.get("source") if env_as_pairs else where.file
    return WorkloadConfig(
        args=args,
        env=env,
        steward=steward,
        files=files,
        dirs=dirs,
        limits=limits,
        network=network,
        secrets=secrets,
        source=source if isinstance(source, str) else None,
    )


def _args(where: _Where, value: Any) -> tuple[str, ...]:
    path: KeyPath = ("args",)
    items = _list(where, path, value, MAX_ARGS, 'args = ["--flag", "value"]')
    return tuple(_text(where, (*path, i), item, MAX_STRING_BYTES) for i, item in enumerate(items))


def _env_table(where: _Where, value: Any) -> tuple[tuple[str, str], ...]:
    path: KeyPath = ("env",)
    if not isinstance(value, dict):
        raise where.error(
            path, f'must be a table of strings ([env] then NAME = "value"), got {_type_name(value)}'
        )
    _bound(where, path, len(value), MAX_ENV_VARS, "variables")
    return tuple(_env_entry(where, (*path, k), k, v) for k, v in value.items())


def _env_pairs(where: _Where, value: Any) -> tuple[tuple[str, str], ...]:
    path: KeyPath = ("env",)
    items = _list(where, path, value, MAX_ENV_VARS, "[[name, value], ...]")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, pair in enumerate(items):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise where.error((*path, i), "must be a [name, value] pair")
        name, text = pair
        if not isinstance(name, str):
            raise where.error((*path, i), f"name must be a string, got {_type_name(name)}")
        if name in seen:
            raise where.error((*path, i), f"{_show(name)} is set twice; names must be unique")
        seen.add(name)
        out.append(_env_entry(where, (*path, i), name, text))
    return tuple(out)


def _env_entry(where: _Where, path: KeyPath, name: str, value: Any) -> tuple[str, str]:
    if not name:
        raise where.error(path, "an environment variable needs a non-empty name")
    _text(where, path, name, MAX_ENV_NAME_BYTES, what="name")
    if "=" in name:
        raise where.error(path, "an environment variable name cannot contain '='")
    if name in _RESERVED_ENV:
        raise where.error(
            path, f"{name} is set by the Keep from [[files]] (FD_COUNT, FD_NAMES); remove it"
        )
    # Values may be secrets: messages describe them, never quote them.
    if not isinstance(value, str):
        raise where.error(path, f"must be a string, got {_type_name(value)}; quote the value")
    _text(where, path, value, MAX_STRING_BYTES, what="value", quote=False)
    return name, value


def _steward(where: _Where, value: Any) -> str:
    path: KeyPath = ("steward",)
    url = _text(where, path, value, MAX_URL_BYTES)
    allowed = 'use an https URL such as "https://steward.example.com"'
    if any(c.isspace() for c in url):
        raise where.error(path, f"{_show(url)} contains white space; {allowed}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise where.error(path, f"{_show(url)} is not a valid URL ({e}); {allowed}") from e
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("https", "http") or not host:
        raise where.error(path, f"{_show(url)} is not an https URL; {allowed}")
    if scheme == "http" and host not in _LOOPBACK_HOSTS:
        raise where.error(
            path,
            f"{_show(url)} uses plain http, which the host could read and alter; {allowed} "
            "(http is accepted only for a development Steward on localhost/127.0.0.1/[::1])",
        )
    if parts.username is not None or parts.password is not None:
        raise where.error(
            path, "must not carry a user name or password (the config is not a secret store)"
        )
    if parts.fragment:
        raise where.error(path, f"{_show(url)} has a #fragment, which means nothing here")
    if port == 0:
        raise where.error(path, f"{_show(url)} has port 0; use a port in 1..65535")
    return url


def _files(where: _Where, value: Any) -> tuple[FileSpec, ...]:
    path: KeyPath = ("files",)
    if isinstance(value, dict):
        raise where.error(
            path, "must be an array of tables: write [[files]] (two brackets), not [files]"
        )
    items = _list(where, path, value, MAX_FILES, '[[files]] tables, e.g. kind = "stdout"')
    specs: list[FileSpec] = []
    names: dict[str, int] = {}
    binds: dict[tuple[str, int], int] = {}
    for index, item in enumerate(items):
        spec = _file_spec(where, (*path, index), item)
        other = names.get(spec.name)
        if other is not None:
            name_path: KeyPath = (*path, index, "name")
            raise where.error(
                name_path,
                f"{_show(spec.name)} is already the name of files[{other}]; names must be unique "
                f'so FD_NAMES can tell fds apart: add name = "..." to one of them',
            )
        names[spec.name] = index
        # Port 0 is "any free port": two such listeners never collide.
        if spec.kind is FileKind.LISTEN and spec.addr is not None and spec.port:
            bind = (ipaddress.ip_address(spec.addr).compressed, spec.port)
            other = binds.get(bind)
            if other is not None:
                raise where.error(
                    (*path, index, "port"),
                    f"files[{other}] already listens on {_endpoint(spec.addr, spec.port)}; "
                    "choose another port or addr",
                )
            binds[bind] = index
        specs.append(spec)
    return tuple(specs)


def _file_spec(where: _Where, path: KeyPath, value: Any) -> FileSpec:
    if not isinstance(value, dict):
        raise where.error(path, f"must be a table ([[files]] entry), got {_type_name(value)}")
    _reject_unknown(where, path, value, _FILE_KEYS)
    kinds = ", ".join(f'"{k.value}"' for k in FileKind)
    if "kind" not in value:
        raise where.error((*path, "kind"), f"is missing; set kind = one of {kinds}")
    raw_kind = value["kind"]
    if not isinstance(raw_kind, str) or raw_kind not in FileKind.__members__.values():
        shown = _show(raw_kind) if isinstance(raw_kind, str) else _type_name(raw_kind)
        raise where.error((*path, "kind"), f"{shown} is not allowed; use one of {kinds}")
    kind = FileKind(raw_kind)
    for key in value:
        if key not in _KIND_KEYS[kind]:
            applies = " or ".join(f'"{k.value}"' for k in FileKind if key in _KIND_KEYS[k])
            raise where.error(
                (*path, key), f'is not allowed for kind = "{kind.value}"; only for kind = {applies}'
            )

    name = _fd_name(where, (*path, "name"), value["name"]) if "name" in value else None
    if kind not in _SOCKET_KINDS:
        return FileSpec(kind, name if name is not None else kind.value)

    prot = _protocol(where, (*path, "prot"), value.get("prot", Protocol.TLS.value))
    port = _port(
        where, (*path, "port"), value.get("port", DEFAULT_PORT), any_port=kind is FileKind.LISTEN
    )
    if kind is FileKind.LISTEN:
        if name is None:
            raise where.error(
                (*path, "name"), 'is required for kind = "listen"; add name = "..." (no ":")'
            )
        addr = _ip_address(where, (*path, "addr"), value.get("addr", DEFAULT_LISTEN_ADDR))
        client_ca = _trust_anchors(where, path, "client_ca", value, prot, "authenticate clients")
        max_connections = (
            _connections(where, (*path, "max_connections"), value["max_connections"])
            if "max_connections" in value
            else None
        )
        return FileSpec(
            kind,
            name,
            prot=prot,
            addr=addr,
            port=port,
            client_ca=client_ca,
            max_connections=max_connections,
        )

    if "host" not in value:
        raise where.error(
            (*path, "host"), 'is required for kind = "connect"; add host = "name or IP address"'
        )
    host = _host(where, (*path, "host"), value["host"])
    if name is None:
        if ":" in host:
            raise where.error(
                (*path, "name"),
                f"defaults to the host {_show(host)}, which contains ':' and would break FD_NAMES; "
                'add name = "..."',
            )
        name = host
    server_ca = _trust_anchors(where, path, "server_ca", value, prot, "verify the server")
    return FileSpec(kind, name, prot=prot, host=host, port=port, server_ca=server_ca)


def _fd_name(where: _Where, path: KeyPath, value: Any) -> str:
    name = _text(where, path, value, MAX_NAME_BYTES)
    if not name:
        raise where.error(path, 'must not be empty; use a short word such as name = "api"')
    if ":" in name:
        raise where.error(path, f"{_show(name)} contains ':', which separates FD_NAMES entries")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise where.error(path, f"{_show(name)} contains a control character")
    return name


def _protocol(where: _Where, path: KeyPath, value: Any) -> Protocol:
    if isinstance(value, str) and value in Protocol.__members__.values():
        return Protocol(value)
    shown = _show(value) if isinstance(value, str) else _type_name(value)
    raise where.error(path, f'{shown} is not allowed; use "tls" or "tcp"')


def _port(where: _Where, path: KeyPath, value: Any, *, any_port: bool) -> int:
    # A listener may ask for port 0: the system picks a free port when the Keep starts (as a
    # u16, Enarx accepts it too). Connecting to port 0 means nothing.
    lowest = 0 if any_port else 1
    if type(value) is not int:
        raise where.error(path, f"must be an integer in {lowest}..65535, got {_type_name(value)}")
    if not lowest <= value <= 65535:
        hint = " (0: any free port)" if any_port else ""
        raise where.error(path, f"{value} is out of range; use a port in {lowest}..65535{hint}")
    return value


def _ip_address(where: _Where, path: KeyPath, value: Any) -> str:
    addr = _text(where, path, value, 64)
    try:
        ipaddress.ip_address(addr)
    except ValueError as e:
        raise where.error(
            path,
            f'{_show(addr)} is not an IP address; use e.g. "::" (all), "0.0.0.0" (all IPv4), '
            '"127.0.0.1" or "::1"',
        ) from e
    return addr


def _host(where: _Where, path: KeyPath, value: Any) -> str:
    host = _text(where, path, value, MAX_HOST_BYTES)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not host or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise where.error(
            path,
            f"{_show(host)} is neither an IP address nor a DNS name; "
            'use e.g. host = "api.example.com" or "192.0.2.10"',
        )
    if labels[-1].isdigit():
        raise where.error(path, f"{_show(host)} looks like an IP address but is not a valid one")
    return host


def _trust_anchors(
    where: _Where, path: KeyPath, key: str, entry: Mapping[str, Any], prot: Protocol, purpose: str
) -> str | None:
    if key not in entry:
        return None
    key_path: KeyPath = (*path, key)
    if prot is not Protocol.TLS:
        raise where.error(key_path, f'needs prot = "tls": plain TCP has no TLS to {purpose} with')
    pem = _text(where, key_path, entry[key], MAX_PEM_BYTES, quote=False)
    if _PEM_CERT not in pem:
        raise where.error(
            key_path,
            f"must hold PEM certificates ({_PEM_CERT} ...); paste them inline in a '''...''' "
            "string, so they are part of the measured config",
        )
    # Imported here: only configs with trust anchors pay for loading cryptography.
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise where.error(key_path, f"does not hold valid PEM certificates: {e}") from e
    return pem


def _dirs(where: _Where, value: Any, base_dir: Path | None) -> tuple[DirSpec, ...]:
    path: KeyPath = ("dirs",)
    if isinstance(value, dict):
        raise where.error(path, "must be an array of tables: write [[dirs]], not [dirs]")
    items = _list(where, path, value, MAX_DIRS, '[[dirs]] tables with host = "..." guest = "/..."')
    specs: list[DirSpec] = []
    guests: dict[str, int] = {}
    for index, item in enumerate(items):
        spec = _dir_spec(where, (*path, index), item, base_dir)
        other = guests.get(spec.guest)
        if other is not None:
            raise where.error(
                (*path, index, "guest"),
                f"{_show(spec.guest)} is already used by dirs[{other}]; each guest path once",
            )
        guests[spec.guest] = index
        specs.append(spec)
    return tuple(specs)


def _dir_spec(where: _Where, path: KeyPath, value: Any, base_dir: Path | None) -> DirSpec:
    if not isinstance(value, dict):
        raise where.error(path, f"must be a table ([[dirs]] entry), got {_type_name(value)}")
    _reject_unknown(where, path, value, _DIR_KEYS)
    for key in ("host", "guest"):
        if key not in value:
            raise where.error((*path, key), f'is missing; add {key} = "..."')
    host_text = _text(where, (*path, "host"), value["host"], MAX_PATH_BYTES)
    if not host_text:
        raise where.error((*path, "host"), 'must not be empty; use "." for the config directory')
    host = Path(host_text)
    if base_dir is not None and not host.is_absolute():
        host = base_dir / host
    guest = _guest_path(where, (*path, "guest"), value["guest"])
    writable = value.get("writable", False)
    if not isinstance(writable, bool):
        raise where.error((*path, "writable"), f"must be true or false, got {_type_name(writable)}")
    return DirSpec(host=host, guest=guest, writable=writable)


def _guest_path(where: _Where, path: KeyPath, value: Any) -> str:
    guest = _text(where, path, value, MAX_PATH_BYTES)
    if not guest.startswith("/"):
        raise where.error(path, f'{_show(guest)} is not absolute; use e.g. guest = "/data"')
    if guest == "/":
        return guest
    parts = guest.rstrip("/").split("/")[1:]
    if any(part in ("", ".", "..") for part in parts):
        raise where.error(
            path, f'{_show(guest)} has an empty, "." or ".." component; write it plainly'
        )
    return "/" + "/".join(parts)


def _secrets(where: _Where, value: Any, env: tuple[tuple[str, str], ...]) -> tuple[SecretSpec, ...]:
    path: KeyPath = ("secrets",)
    if isinstance(value, dict):
        raise where.error(path, "must be an array of tables: write [[secrets]], not [secrets]")
    example = '[[secrets]] tables with name = "..." and env = "..." or file = "..."'
    items = _list(where, path, value, MAX_SECRETS, example)
    plain = {name for name, _ in env}
    specs: list[SecretSpec] = []
    names: dict[str, int] = {}
    envs: dict[str, int] = {}
    files: dict[str, int] = {}
    for index, item in enumerate(items):
        here: KeyPath = (*path, index)
        if not isinstance(item, dict):
            raise where.error(here, f"must be a table ([[secrets]] entry), got {_type_name(item)}")
        _reject_unknown(where, here, item, _SECRET_KEYS)
        if "name" not in item:
            raise where.error((*here, "name"), 'is missing; add name = "..."')
        if ("env" in item) == ("file" in item):
            raise where.error(
                here,
                'needs exactly one of env = "VARIABLE" (an environment variable) and '
                f'file = "NAME" (a read-only file in {SECRETS_GUEST_DIR})',
            )
        name = _text(where, (*here, "name"), item["name"], 64)
        if not _SECRET_NAME.fullmatch(name):
            raise where.error(
                (*here, "name"),
                f"{_show(name)} is not a secret name: 1-64 of a-z, 0-9, '_' and '-', starting "
                "with a letter or digit (the name given to `donjon steward secret set`)",
            )
        if name in names:
            raise where.error((*here, "name"), f"{_show(name)} is already secrets[{names[name]}]")
        names[name] = index
        if "file" in item:
            file = _secret_file(where, (*here, "file"), item["file"])
            if file in files:
                raise where.error(
                    (*here, "file"), f"{_show(file)} is already secrets[{files[file]}]'s file"
                )
            files[file] = index
            specs.append(SecretSpec(name=name, file=file))
            continue
        variable = _text(where, (*here, "env"), item["env"], MAX_ENV_NAME_BYTES)
        _env_entry(where, (*here, "env"), variable, "")
        if variable in plain:
            raise where.error(
                (*here, "env"), f"{_show(variable)} is also set in [env]; give the secret its own"
            )
        if variable in envs:
            raise where.error(
                (*here, "env"), f"{_show(variable)} is already secrets[{envs[variable]}]'s variable"
            )
        envs[variable] = index
        specs.append(SecretSpec(name=name, env=variable))
    return tuple(specs)


def _secret_file(where: _Where, path: KeyPath, value: Any) -> str:
    file = _text(where, path, value, MAX_NAME_BYTES)
    if not file or file in (".", "..") or "/" in file:
        raise where.error(
            path,
            f'{_show(file)} is not a file name; give a plain name such as "tls.key" (it '
            f"appears as {SECRETS_GUEST_DIR}/<name>)",
        )
    return file


def _limits(where: _Where, value: Any) -> Limits:
    path: KeyPath = ("limits",)
    if not isinstance(value, dict):
        raise where.error(path, f"must be a table ([limits]), got {_type_name(value)}")
    _reject_unknown(where, path, value, _LIMIT_KEYS)
    memory_mib: int | None = None
    timeout_s: float | None = None
    if "memory_mib" in value:
        memory = value["memory_mib"]
        if type(memory) is not int:
            raise where.error(
                (*path, "memory_mib"),
                f"must be an integer number of MiB, got {_type_name(memory)}",
            )
        if not 1 <= memory <= MAX_MEMORY_MIB:
            raise where.error(
                (*path, "memory_mib"),
                f"{memory} is out of range; use 1..{MAX_MEMORY_MIB} "
                "(wasm32 linear memory is at most 4 GiB)",
            )
        memory_mib = memory
    if "timeout_s" in value:
        timeout = value["timeout_s"]
        if type(timeout) not in (int, float):
            raise where.error(
                (*path, "timeout_s"), f"must be a number of seconds, got {_type_name(timeout)}"
            )
        seconds = float(timeout)
        if not math.isfinite(seconds) or not 0 < seconds <= MAX_TIMEOUT_S:
            raise where.error(
                (*path, "timeout_s"),
                f"{timeout} is out of range; use a number of seconds > 0 and at most "
                f"{MAX_TIMEOUT_S:.0f} (one year), or leave timeout_s out for no deadline",
            )
        timeout_s = seconds
    return Limits(memory_mib=memory_mib, timeout_s=timeout_s)


def _network(where: _Where, value: Any) -> NetworkLimits:
    path: KeyPath = ("network",)
    if not isinstance(value, dict):
        raise where.error(path, f"must be a table ([network]), got {_type_name(value)}")
    _reject_unknown(where, path, value, _NETWORK_KEYS)
    found: dict[str, Any] = {}
    for key, item in value.items():  # in file order, so the first bad line is reported
        key_path: KeyPath = (*path, key)
        if key == "max_connections":
            found[key] = _connections(where, key_path, item)
        elif key == "max_pending_handshakes":
            found[key] = _bounded_int(
                where,
                key_path,
                item,
                1,
                MAX_HANDSHAKES_IN_PROGRESS,
                "handshakes",
                "TLS handshakes in progress per listener",
            )
        elif key == "buffer_kib":
            found[key] = _bounded_int(
                where,
                key_path,
                item,
                MIN_BUFFER_KIB,
                MAX_BUFFER_KIB,
                "KiB",
                f"KiB per socket buffer: {MIN_BUFFER_KIB} KiB to {MAX_BUFFER_KIB // KIB} MiB",
            )
        else:  # handshake_timeout_s, connect_timeout_s, send_stall_timeout_s
            found[key] = _socket_seconds(where, key_path, item)
    return NetworkLimits(**found)


def _connections(where: _Where, path: KeyPath, value: Any) -> int:
    return _bounded_int(
        where,
        path,
        value,
        1,
        MAX_LISTENER_CONNECTIONS,
        "connections",
        "connections open at once per listener",
    )


def _bounded_int(
    where: _Where, path: KeyPath, value: Any, low: int, high: int, unit: str, hint: str
) -> int:
    # TOML's true is a Python int; a limit of "true" is a mistake, not 1.
    if type(value) is not int:
        raise where.error(path, f"must be an integer number of {unit}, got {_type_name(value)}")
    if not low <= value <= high:
        raise where.error(path, f"{value} is out of range; use {low}..{high} ({hint})")
    return value


def _socket_seconds(where: _Where, path: KeyPath, value: Any) -> float:
    if type(value) not in (int, float):
        raise where.error(path, f"must be a number of seconds, got {_type_name(value)}")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_SOCKET_TIMEOUT_S:
        raise where.error(
            path,
            f"{value} is out of range; use a number of seconds > 0 and at most "
            f"{MAX_SOCKET_TIMEOUT_S:.0f} (one hour)",
        )
    return seconds


def _check_host_dir(where: _Where, path: KeyPath, host: Path) -> None:
    try:
        mode = os.stat(host).st_mode
    except FileNotFoundError as e:
        raise where.error(path, f"the host directory {host} does not exist; create it") from e
    except OSError as e:
        raise where.error(path, f"the host directory {host} cannot be used: {e.strerror}") from e
    if not stat.S_ISDIR(mode):
        raise where.error(path, f"{host} is not a directory; [[dirs]] pre-opens directories")


# -- helpers -----------------------------------------------------------------------------------


def _list(where: _Where, path: KeyPath, value: Any, limit: int, example: str) -> list[Any]:
    if not isinstance(value, list):
        raise where.error(path, f"must be an array ({example}), got {_type_name(value)}")
    _bound(where, path, len(value), limit, "entries")
    return value


def _bound(where: _Where, path: KeyPath, count: int, limit: int, what: str) -> None:
    if count > limit:
        raise where.error(path, f"has {count} {what}; at most {limit} are allowed")


def _text(
    where: _Where,
    path: KeyPath,
    value: Any,
    max_bytes: int,
    *,
    what: str = "",
    quote: bool = True,
) -> str:
    """A string that WASI and the runtime can carry: valid Unicode, no NUL, bounded."""
    subject = f"the {what} " if what else ""
    if not isinstance(value, str):
        raise where.error(path, f"{subject}must be a string, got {_type_name(value)}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise where.error(path, f"{subject}is not valid Unicode (a lone surrogate)") from e
    if "\x00" in value:
        raise where.error(path, f"{subject}contains a NUL character, which WASI cannot pass on")
    if size > max_bytes:
        shown = f"{_show(value)} " if quote else ""
        raise where.error(
            path, f"{subject}{shown}is {size} bytes long; at most {max_bytes} bytes are allowed"
        )
    return value


def _reject_unknown(
    where: _Where, path: KeyPath, table: Mapping[str, Any], allowed: Iterable[str]
) -> None:
    allowed = tuple(allowed)
    for key in table:
        if key in allowed:
            continue
        key_text = str(key)
        import difflib  # only on this error path: it costs ~10 ms to import

        close = difflib.get_close_matches(key_text, allowed, n=1, cutoff=0.6)
        hint = f'did you mean "{close[0]}"? ' if close else ""
        listed = ", ".join(allowed)
        raise where.error((*path, key_text), f"unknown key; {hint}allowed here: {listed}")


def _field_name(path: KeyPath) -> str:
    import json

    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += f".{_clip(key, 64)}" if out else _clip(key, 64)
    return out


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "nothing (null)"
    return f"a {type(value).__name__}"


def _show(value: object) -> str:
    """A value quoted for a message: escaped, and cut short if long."""
    import json

    shown = json.dumps(_clip(str(value), 60), ensure_ascii=False)
    # Lone surrogates cannot be printed; show them escaped instead of failing to report.
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _too_large_message() -> str:
    return (
        f"is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB, the limit for a workload config"
    )
