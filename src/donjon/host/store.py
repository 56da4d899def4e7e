"""Durable records of Keeps in the keep manager's state directory.

Layout::

    STATE/keeps/<id>/record.cbor   the KeepRecord (written atomically: temp file, fsync, rename)
    STATE/keeps/<id>/launch.cbor   what the keep loader needs to start the Keep
    STATE/keeps/<id>/keep.sock     the keep runtime's socket (the relay connects here)
    STATE/keeps/<id>/status.cbor   written by the keep loader when the Keep ends
    STATE/keeps/<id>/keep.error    why the keep runtime ended before serving, if it did
    STATE/keeps/<id>/loader.log    the keep loader's and keep runtime's log

Rule 1: a record is replaced whole or not at all; a crash never leaves half a record.
Rule 2: records read back from disk are validated like any other untrusted input.
"""

from __future__ import annotations

import enum
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from donjon.errors import ConfigError, DecodeError, NotFoundError
from donjon.wire.cbor import decode, encode

MAX_RECORD_BYTES = 64 * 1024
"""Largest record file read back (bytes)."""
_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class KeepState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (KeepState.EXITED, KeepState.STOPPED, KeepState.FAILED)


@dataclass(frozen=True, slots=True)
class KeepRecord:
    """What the keep manager knows about one Keep."""

    id: str
    owner: str
    backend: str
    state: KeepState
    created_at: float
    loader_pid: int | None = None
    exit_code: int | None = None
    detail: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)

    def with_state(self, state: KeepState, **changes: Any) -> KeepRecord:
        return replace(self, state=state, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = str(self.state)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> KeepRecord:
        if not isinstance(d, dict):
            raise DecodeError("keep record is not a map")
        try:
            rec = cls(
                id=_str(d["id"]),
                owner=_str(d["owner"]),
                backend=_str(d["backend"]),
                state=KeepState(d["state"]),
                created_at=float(d["created_at"]),
                loader_pid=_opt_int(d.get("loader_pid")),
                exit_code=_opt_int(d.get("exit_code")),
                detail=d.get("detail") if isinstance(d.get("detail"), str) else None,
                limits=dict(d.get("limits") or {}),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise DecodeError(f"keep record is malformed: {e}") from e
        if not _ID_RE.match(rec.id):
            raise DecodeError(f"keep record has a bad id {rec.id!r}")
        return rec


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("expected text")
    return v


def _opt_int(v: Any) -> int | None:
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError("expected an integer")
    return v


def new_keep_id() -> str:
    return secrets.token_hex(8)


def valid_keep_id(keep_id: str) -> bool:
    return bool(_ID_RE.match(keep_id))


class KeepStore:
    """Keep records on disk under ``state_dir/keeps``."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "keeps"
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise ConfigError(f"cannot create the state directory {self.root}: {e}") from e

    def keep_dir(self, keep_id: str) -> Path:
        if not valid_keep_id(keep_id):
            raise NotFoundError(f"no Keep {keep_id!r}: Keep ids are 16 hex digits")
        return self.root / keep_id

    def save(self, record: KeepRecord) -> None:
        d = self.keep_dir(record.id)
        d.mkdir(exist_ok=True, mode=0o700)
        write_atomic(d / "record.cbor", encode(record.to_dict()))

    def load(self, keep_id: str) -> KeepRecord:
        path = self.keep_dir(keep_id) / "record.cbor"
        try:
            data = read_bounded(path, MAX_RECORD_BYTES)
        except FileNotFoundError:
            raise NotFoundError(f"no Keep {keep_id}") from None
        return KeepRecord.from_dict(decode(data, what=f"record of Keep {keep_id}"))

    def all(self) -> Iterator[KeepRecord]:
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and valid_keep_id(d.name) and (d / "record.cbor").exists():
                try:
                    yield self.load(d.name)
                except DecodeError:
                    continue  # a damaged record is skipped, never fatal to the manager


def write_atomic(path: Path, data: bytes) -> None:
    """Replace *path* with *data* atomically (temp file, fsync, rename); mode 0600."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_bounded(path: Path, limit: int) -> bytes:
    """Read a file, refusing one larger than *limit* bytes."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DecodeError(f"{path} is larger than {limit} bytes")
    return data
