"""Steward's audit log: every decision, in a tamper-evident, append-only file.

``donjon steward serve --audit-log FILE`` appends one JSON line per decision: a certificate
issued or refused, secrets released or withheld. Each line carries ``prev``, the SHA-256 of the
line before it, so removing, reordering or changing a line breaks the chain; and every
:data:`CHECKPOINT_EVERY` records (and when Steward stops) a checkpoint line carries a COSE_Sign1
by the Steward CA's key over the chain so far, so a rewritten log does not verify either
(``donjon steward audit verify FILE --ca ca.crt``, :func:`verify_log`). What follows the last
checkpoint is chained but not yet signed; the verifier says how many such lines there are.

A line::

    {"seq": 12, "time": "2026-11-27T18:30:02Z", "event": "released", "endpoint": "/v1/secrets",
     "platform": "sev-snp", "workload": "donjon:workload:sha256:…", "key": "3f2a…",
     "policy": "fleet", "policy_digest": "…", "secrets": ["db-password"], "serial": "5e…",
     "reason": null, "prev": "<sha256 hex of line 11>"}

Rule 1: never a secret, a key or evidence bytes: names, hashes and reasons only.
Rule 2: several worker processes append to one file: each append holds ``flock`` while it reads
the last line (for ``prev`` and ``seq``) and writes its own with one ``write`` in append mode.
Rule 3: records reach the operating system at once; checkpoints are also ``fsync``-ed.
Rule 4: :func:`verify_log` is pure (bytes and a certificate in, a report out).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from donjon._closing import Closing
from donjon.crypto.ca import verify_signed_result
from donjon.errors import ConfigError, DecodeError, SignatureError
from donjon.wire.cbor import decode, encode

__all__ = [
    "CHECKPOINT_EVERY",
    "CHECKPOINT_TYPE",
    "AuditLog",
    "AuditReport",
    "verify_log",
]

_logger = logging.getLogger(__name__)

CHECKPOINT_EVERY = 100
"""Records between two signed checkpoints."""
CHECKPOINT_TYPE = "donjon/steward/audit-checkpoint/v1"
"""The ``type`` of a checkpoint's signed payload: never confused with an attestation result."""
GENESIS = "0" * 64
"""``prev`` of the first line."""
_TAIL_BYTES = 64 * 1024
"""How much of the file's end is read to find its last line (a line is a few hundred bytes)."""
MAX_LINE_BYTES = 64 * 1024
"""Longest line the verifier accepts."""


def _seq(line: bytes) -> int:
    return int(json.loads(line)["seq"])


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog(Closing):
    """Appends decisions to *path* (created 0600), signing a checkpoint every so often.

    Args:
        path: the log file.
        sign: signs a checkpoint payload (the CA's ``sign_result``: COSE_Sign1, ES384).
        clock: the time of each record.
        checkpoint_every: records between checkpoints.
    """

    def __init__(
        self,
        path: Path,
        sign: Callable[[bytes], bytes],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.path = path
        self._sign = sign
        self._clock = clock
        self._every = checkpoint_every
        self._since_checkpoint = 0
        self._lock = threading.Lock()
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._reader = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ConfigError(
                f"cannot open the audit log {path}: {e.strerror}; give a writable file path"
            ) from e

    def record(self, fields: Mapping[str, Any]) -> None:
        """Append one decision (see the module docstring); never raises for a full disk: a
        failure to write is logged as an error, and the decision stands."""
        try:
            with self._lock:
                self._append(dict(fields))
                self._since_checkpoint += 1
                if self._since_checkpoint >= self._every:
                    self._append_checkpoint()
        except OSError as e:
            _logger.error("cannot write the audit log %s: %s", self.path, e.strerror)

    def checkpoint(self) -> None:
        """Sign the chain so far now (Steward does when it stops)."""
        try:
            with self._lock:
                if self._since_checkpoint:
                    self._append_checkpoint()
        except OSError as e:
            _logger.error("cannot write the audit log %s: %s", self.path, e.strerror)

    def close(self) -> None:
        if self._fd < 0:
            return
        self.checkpoint()
        os.close(self._fd)
        os.close(self._reader)
        self._fd = self._reader = -1

    def _append(self, fields: dict[str, Any]) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._write_after(self._last_line(), fields)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _append_checkpoint(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            last = self._last_line()
            if last is None:
                return
            payload = encode(
                {"type": CHECKPOINT_TYPE, "seq": _seq(last), "chain": _line_hash(last)}
            )
            self._write_after(last, {"event": "checkpoint", "signed": self._sign(payload).hex()})
            os.fsync(self._fd)
            self._since_checkpoint = 0
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _write_after(self, last: bytes | None, fields: dict[str, Any]) -> None:
        """Append *fields* as the line after *last*, numbered and chained to it (the caller
        holds the flock, so no other process writes in between)."""
        record = {
            "seq": 0 if last is None else _seq(last) + 1,
            "time": self._clock().astimezone(UTC).isoformat(timespec="seconds"),
            **fields,
            "prev": GENESIS if last is None else _line_hash(last),
        }
        os.write(
            self._fd, json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        )

    def _last_line(self) -> bytes | None:
        size = os.fstat(self._reader).st_size
        if size == 0:
            return None
        for window in (4096, _TAIL_BYTES):  # a line is a few hundred bytes: one small read
            start = max(0, size - window)
            tail = os.pread(self._reader, size - start, start).rstrip(b"\n")
            if b"\n" in tail or start == 0:
                return tail.rsplit(b"\n", 1)[-1] or None
        raise OSError(0, f"the last line of {self.path} is over {_TAIL_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :func:`verify_log` found.

    Attributes:
        records: decision lines (checkpoints not counted).
        checkpoints: signed checkpoints that verified.
        unsigned_tail: decision lines after the last checkpoint (chained, not yet signed).
        problems: what is wrong, first problem first; empty when the log verifies.
        events: how many of each event.
    """

    records: int
    checkpoints: int
    unsigned_tail: int
    problems: tuple[str, ...]
    events: dict[str, int] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_log(data: bytes, ca_certificate: x509.Certificate) -> AuditReport:
    """Check an audit log's chain and its checkpoints' signatures by *ca_certificate*'s key.

    Returns:
        The report: counts, and every problem found (a broken chain, a bad or missing
        signature, a line that is not a record), each naming its line number.
    """
    problems: list[str] = []
    events: dict[str, int] = {}
    prev = GENESIS
    records = checkpoints = tail = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line:
            continue
        if len(line) > MAX_LINE_BYTES:
            problems.append(f"line {number}: over {MAX_LINE_BYTES} bytes")
            break
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"line {number}: not JSON")
            break
        if not isinstance(record, dict) or record.get("prev") != prev:
            problems.append(
                f"line {number}: the chain is broken (a line was changed, removed or inserted "
                "before it)"
            )
            prev = _line_hash(line)
            continue
        event = record.get("event")
        if event == "checkpoint":
            problem = _checkpoint_problem(record, prev, ca_certificate)
            if problem:
                problems.append(f"line {number}: {problem}")
            else:
                checkpoints += 1
                tail = 0
        else:
            records += 1
            tail += 1
            events[str(event)] = events.get(str(event), 0) + 1
        prev = _line_hash(line)
    return AuditReport(records, checkpoints, tail, tuple(problems), events)


def _checkpoint_problem(record: dict[str, Any], chain: str, ca: x509.Certificate) -> str | None:
    try:
        signed = bytes.fromhex(str(record.get("signed", "")))
        payload = decode(verify_signed_result(signed, ca), what="audit checkpoint")
    except (ValueError, DecodeError, SignatureError) as e:
        return f"the checkpoint's signature does not verify with this CA ({e})"
    if not isinstance(payload, dict) or payload.get("type") != CHECKPOINT_TYPE:
        return "the checkpoint's signed payload is not an audit checkpoint"
    if payload.get("chain") != chain:
        return "the checkpoint signs another chain than the lines before it"
    return None
