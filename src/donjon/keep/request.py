"""The message a keep loader hands a keep process: what to run and how. Pure, no wasmtime.

It travels as one deterministic CBOR map (RFC 8949 §4.2) over a pipe the loader creates, so the
workload's arguments and config never appear in a process listing, and nothing is written to
disk. The keep process treats it as hostile input: bounded, every field checked, the config
re-validated by :meth:`WorkloadConfig.from_dict`.

Encoding (version 1)::

    {"v": 1, "module": "/abs/path/hello.wasm", "program": "hello.wasm", "args": [...],
     "config": WorkloadConfig.to_dict(), "cache_dir": "/home/u/.cache/donjon" | null,
     "progress": bool, "log_level": int, ? "secrets": {name: bytes}}

Example:
    >>> req = KeepRequest(module=Path("/w/hello.wasm"), program="hello.wasm")
    >>> KeepRequest.decode(req.encode()) == req
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from donjon.errors import DecodeError
from donjon.keep.config import (
    MAX_ARGS,
    MAX_PATH_BYTES,
    MAX_SECRETS,
    MAX_STRING_BYTES,
    WorkloadConfig,
)
from donjon.wire import cbor

__all__ = ["MAX_REQUEST_BYTES", "MAX_SECRET_VALUE_BYTES", "REQUEST_VERSION", "KeepRequest"]

REQUEST_VERSION = 1
"""Version of the request encoding; a keep process refuses any other."""

MAX_SECRET_VALUE_BYTES = 64 * 1024
"""Largest secret value (bytes), as Steward's store allows."""

MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""Largest request accepted (bytes): a 1 MiB config, arguments and 64 secrets of 64 KiB."""

_KEYS = frozenset(
    {"v", "module", "program", "args", "config", "cache_dir", "progress", "log_level", "secrets"}
)


@dataclass(frozen=True, slots=True)
class KeepRequest:
    """What the keep process runs.

    Attributes:
        module: the ``.wasm`` file to read.
        program: ``argv[0]`` and the name in messages.
        args: arguments after the config's ``args``.
        config: the workload config.
        cache_dir: the compiled-module cache, or ``None`` for no cache.
        progress: draw compile progress on stderr (the loader saw a terminal).
        log_level: the ``logging`` level for the keep process's own messages.
        secrets: values for the config's ``[[secrets]]`` by name, given locally
            (``donjon run --secret NAME=FILE``); never printed.
    """

    module: Path
    program: str
    args: tuple[str, ...] = ()
    config: WorkloadConfig = field(default_factory=WorkloadConfig)
    cache_dir: Path | None = None
    progress: bool = False
    log_level: int = 30
    secrets: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def encode(self) -> bytes:
        """The request as deterministic CBOR."""
        body: dict[str, Any] = {
            "v": REQUEST_VERSION,
            "module": str(self.module),
            "program": self.program,
            "args": list(self.args),
            "config": self.config.to_dict(),
            "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
            "progress": self.progress,
            "log_level": self.log_level,
        }
        if self.secrets:
            body["secrets"] = dict(self.secrets)
        return cbor.encode(body)

    @classmethod
    def decode(cls, data: bytes) -> KeepRequest:
        """Parse and check a request.

        Raises:
            DecodeError: not CBOR, the wrong version or shape, or out of bounds.
            ConfigFileError: the embedded config is not valid.
        """
        raw = cbor.decode(data, what="keep request", max_bytes=MAX_REQUEST_BYTES)
        if not isinstance(raw, Mapping):
            raise DecodeError("keep request must be a CBOR map")
        unknown = set(raw) - _KEYS
        if unknown:
            raise DecodeError(f"keep request has unknown fields {sorted(map(str, unknown))}")
        if raw.get("v") != REQUEST_VERSION:
            raise DecodeError(
                f"keep request version {raw.get('v')!r} is not {REQUEST_VERSION}; the CLI and "
                "the keep runtime come from different donjon versions"
            )
        args = raw.get("args", [])
        if not isinstance(args, list) or len(args) > MAX_ARGS:
            raise DecodeError(f"keep request args must be a list of at most {MAX_ARGS} strings")
        cache_dir = raw.get("cache_dir")
        config = raw.get("config", {})
        if not isinstance(config, Mapping):
            raise DecodeError("keep request config must be a map")
        level = raw.get("log_level", 30)
        if type(level) is not int or not 0 <= level <= 50:
            raise DecodeError("keep request log_level must be an integer 0..50")
        progress = raw.get("progress", False)
        if not isinstance(progress, bool):
            raise DecodeError("keep request progress must be a boolean")
        secrets = raw.get("secrets", {})
        if (
            not isinstance(secrets, Mapping)
            or len(secrets) > MAX_SECRETS
            or not all(
                isinstance(k, str) and isinstance(v, bytes) and len(v) <= MAX_SECRET_VALUE_BYTES
                for k, v in secrets.items()
            )
        ):
            raise DecodeError(
                f"keep request secrets must map at most {MAX_SECRETS} names to values of at most "
                f"{MAX_SECRET_VALUE_BYTES} bytes"
            )
        return cls(
            module=Path(_text(raw.get("module"), "module", MAX_PATH_BYTES)),
            program=_text(raw.get("program"), "program", MAX_STRING_BYTES),
            args=tuple(_text(a, "args", MAX_STRING_BYTES) for a in args),
            config=WorkloadConfig.from_dict(config),
            cache_dir=None
            if cache_dir is None
            else Path(_text(cache_dir, "cache_dir", MAX_PATH_BYTES)),
            progress=progress,
            log_level=level,
            secrets=dict(secrets),
        )


def _text(value: Any, what: str, max_bytes: int) -> str:
    if not isinstance(value, str) or (not value and what != "args"):
        raise DecodeError(f"keep request {what} must be a string (non-empty unless an argument)")
    if "\0" in value or len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise DecodeError(f"keep request {what} has a NUL or is over {max_bytes} bytes")
    return value
