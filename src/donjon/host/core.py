"""The keep manager's logic: create, list, inspect and stop Keeps; survive restarts.

Rule 1: only a Keep's creator can see, inspect, relay to or stop it; to anyone else it does not
exist.
Rule 2: every Keep the manager started is, after any restart of the manager, either re-attached
(its loader is alive) or reaped (marked finished, loader and runtime terminated): never leaked.
Rule 3: launching is behind the ``Launcher`` seam so the logic is tested with the real process
launcher and with nothing faked.
Rule 4: the per-owner limit is exact under concurrency: counting an owner's live Keeps and
recording the new one (as ``starting``) happen under one lock; the loader starts outside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from donjon.errors import ConfigError, DecodeError, KeepLaunchError, NotFoundError
from donjon.host.auth import Principal
from donjon.host.store import (
    KeepRecord,
    KeepState,
    KeepStore,
    new_keep_id,
    read_bounded,
    write_atomic,
)
from donjon.wire.cbor import decode, encode

_logger = logging.getLogger(__name__)

MAX_NONCE_BYTES = 64
"""Longest client nonce bound into a Keep's evidence (bytes)."""
MAX_KEEPS_PER_OWNER = 64
"""Keeps one principal may have alive at once: bounds what one client can make the host run."""
MAX_STATUS_BYTES = 16 * 1024
SUPPORTED_BACKENDS = ("nil",)


@dataclass(frozen=True, slots=True)
class CreateKeep:
    """A client's request for a new Keep."""

    backend: str
    nonce: bytes
    steward: str | None = None
    steward_ca_pem: bytes | None = None
    limits: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> CreateKeep:
        if not isinstance(d, dict):
            raise DecodeError("create-keep request must be a CBOR map")
        unknown = set(d) - {"backend", "nonce", "steward", "steward_ca_pem", "limits"}
        if unknown:
            raise DecodeError(f"create-keep request has unknown fields {sorted(unknown)}")
        backend, nonce = d.get("backend", "nil"), d.get("nonce")
        steward, ca, limits = d.get("steward"), d.get("steward_ca_pem"), d.get("limits")
        if limits is None:  # absent; any other non-map (``[]``, ``0``) is refused below
            limits = {}
        if not isinstance(backend, str):
            raise DecodeError("backend must be text")
        if not isinstance(nonce, bytes) or not 16 <= len(nonce) <= MAX_NONCE_BYTES:
            raise DecodeError(f"nonce must be 16..{MAX_NONCE_BYTES} bytes")
        if steward is not None and (not isinstance(steward, str) or len(steward) > 2048):
            raise DecodeError("steward must be a URL")
        if ca is not None and (not isinstance(ca, bytes) or len(ca) > 64 * 1024):
            raise DecodeError("steward_ca_pem must be at most 64 KiB of PEM")
        if not isinstance(limits, dict) or not set(limits) <= {"memory_mib", "timeout_s"}:
            raise DecodeError("limits may hold only memory_mib and timeout_s")
        for k, v in limits.items():
            if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0:
                raise DecodeError(f"limits.{k} must be a positive number")
        return cls(backend=backend, nonce=nonce, steward=steward, steward_ca_pem=ca, limits=limits)

    def launch_params(self, keep_id: str) -> dict[str, Any]:
        return {
            "keep_id": keep_id,
            "backend": self.backend,
            "nonce": self.nonce,
            "steward": self.steward,
            "steward_ca_pem": self.steward_ca_pem,
            "limits": self.limits,
        }


class Launcher(Protocol):
    """Starts keep loaders and tells whether they still run."""

    def start(self, keep_dir: Path) -> int:
        """Start the keep loader for the Keep in *keep_dir*; return its pid."""
        ...

    def alive(self, pid: int, keep_dir: Path) -> bool:
        """Whether *pid* is still the keep loader of *keep_dir* (guards against pid reuse)."""
        ...

    def terminate(self, pid: int, keep_dir: Path) -> None:
        """Stop the keep loader (and through it, the Keep)."""
        ...


class KeepManager:
    """Keeps on this host, persisted in a :class:`KeepStore`."""

    def __init__(
        self,
        store: KeepStore,
        launcher: Launcher,
        *,
        clock: Callable[[], float] = time.time,
        max_keeps_per_owner: int = MAX_KEEPS_PER_OWNER,
    ) -> None:
        self._store = store
        self._launcher = launcher
        self._clock = clock
        self._max = max_keeps_per_owner
        self._admission = threading.Lock()  # Rule 4

    def keep_dir(self, keep_id: str) -> Path:
        return self._store.keep_dir(keep_id)

    def create(self, principal: Principal, request: CreateKeep) -> KeepRecord:
        """Create a Keep for *principal* and start its loader."""
        if request.backend not in SUPPORTED_BACKENDS:
            raise ConfigError(
                f"backend {request.backend!r} is not available on this host; "
                f"it offers {', '.join(SUPPORTED_BACKENDS)} (see `donjon platform info`)"
            )
        with self._admission:
            alive = [r for r in self.list_keeps(principal) if not r.state.finished]
            if len(alive) >= self._max:
                raise ConfigError(
                    f"{principal.name} already has {len(alive)} Keeps (the limit is "
                    f"{self._max}); stop some first"
                )
            record = KeepRecord(
                id=new_keep_id(),
                owner=principal.name,
                backend=request.backend,
                state=KeepState.STARTING,
                created_at=self._clock(),
                limits=dict(request.limits),
            )
            self._store.save(record)
        keep_dir = self._store.keep_dir(record.id)
        write_atomic(keep_dir / "launch.cbor", encode(request.launch_params(record.id)))
        try:
            pid = self._launcher.start(keep_dir)
        except OSError as e:
            failed = record.with_state(KeepState.FAILED, detail=f"loader did not start: {e}")
            self._store.save(failed)
            raise KeepLaunchError(f"could not start the keep loader: {e}") from e
        record = record.with_state(KeepState.RUNNING, loader_pid=pid)
        self._store.save(record)
        _logger.info("keep %s created for %s (loader pid %d)", record.id, principal.name, pid)
        return record

    def list_keeps(self, principal: Principal) -> list[KeepRecord]:
        return [self._refresh(r) for r in self._store.all() if r.owner == principal.name]

    def get(self, principal: Principal, keep_id: str) -> KeepRecord:
        record = self._store.load(keep_id)
        if record.owner != principal.name:
            raise NotFoundError(f"no Keep {keep_id}")  # Rule 1: do not reveal others' Keeps
        return self._refresh(record)

    def stop(self, principal: Principal, keep_id: str) -> KeepRecord:
        record = self.get(principal, keep_id)
        if record.state.finished:
            return record
        if record.loader_pid is not None:
            self._launcher.terminate(record.loader_pid, self._store.keep_dir(keep_id))
        stopped = record.with_state(KeepState.STOPPED, detail="stopped by its owner")
        self._store.save(stopped)
        return stopped

    def reconcile(self) -> tuple[list[str], list[str]]:
        """After a (re)start: re-attach live Keeps, reap the rest. Returns (attached, reaped)."""
        attached: list[str] = []
        reaped: list[str] = []
        for record in self._store.all():
            if record.state.finished:
                continue
            refreshed = self._refresh(record, starting_is_stale=True)
            if refreshed.state.finished:
                reaped.append(record.id)
            else:
                attached.append(record.id)
        return attached, reaped

    def _refresh(self, record: KeepRecord, *, starting_is_stale: bool = False) -> KeepRecord:
        """Bring a live record up to date with its loader's fate.

        A STARTING record is being created by a concurrent request (its loader may not have a
        pid yet): it is left alone, except at reconcile time, when it can only be the leftover
        of a manager that died while creating it.
        """
        if record.state.finished:
            return record
        if record.state is KeepState.STARTING and not starting_is_stale:
            return record
        keep_dir = self._store.keep_dir(record.id)
        if record.loader_pid is not None and self._launcher.alive(record.loader_pid, keep_dir):
            return record
        status = _read_status(keep_dir)
        if status is None:
            updated = record.with_state(KeepState.FAILED, detail="keep loader vanished")
        else:
            state = KeepState(status["state"])
            updated = record.with_state(
                state, exit_code=status.get("exit_code"), detail=status.get("detail")
            )
        self._store.save(updated)
        return updated


def _read_status(keep_dir: Path) -> dict[str, Any] | None:
    try:
        raw = decode(read_bounded(keep_dir / "status.cbor", MAX_STATUS_BYTES), what="keep status")
    except (FileNotFoundError, DecodeError):
        return None
    if not isinstance(raw, dict) or raw.get("state") not in {s.value for s in KeepState}:
        return None
    code = raw.get("exit_code")
    detail = raw.get("detail")
    return {
        "state": raw["state"],
        "exit_code": code if isinstance(code, int) and not isinstance(code, bool) else None,
        "detail": detail if isinstance(detail, str) else None,
    }
