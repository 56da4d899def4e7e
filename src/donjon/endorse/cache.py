"""The on-disk cache of fetched endorsements: one file per request, written atomically.

Rule 1: an entry is filed under the SHA-256 of its request's path and query (not the host, so a
KDS mirror and KDS itself share entries) and records that path, so a file renamed or copied to
another key is not used for it.
Rule 2: an entry is checked before use: its header, its size (each kind has its limit), the
SHA-256 of its body. Anything else (truncated, corrupted, oversized, from another version) is
ignored, as if absent: the document is fetched again and the entry replaced.
Rule 3: the cache never decides whether a document is still good: the fetcher re-reads each
entry's own dates at the verification's ``now`` (:mod:`donjon.endorse.documents`). And nothing in
it is trusted: the verifier checks every signature on every use.
Rule 4: failing to write is not an error (the cache is an optimisation); it is logged.

Entry format (``<sha256 hex>.entry``)::

    donjon-endorsement/1\\n
    {"key": ..., "fetched_at": ..., "chain_bytes": N, "body_bytes": M, "sha256": ...}\\n
    <issuer chain: N bytes><body: M bytes>
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

_logger = logging.getLogger(__name__)

ENTRY_MAGIC: Final = b"donjon-endorsement/1\n"
MAX_HEADER_BYTES: Final = 4096
"""Largest entry header (bytes): a key of at most 2 KiB and a few numbers."""
MAX_ISSUER_CHAIN_BYTES: Final = 16 * 1024
"""Largest issuer chain kept with a document (bytes): Intel's are two certificates, ~1.9 KiB."""
_SUFFIX = ".entry"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A document as fetched.

    Attributes:
        key: the request's path and query.
        body: the answer's body.
        issuer_chain: the issuer chain header (Intel), URL-decoded, or None.
        fetched_at: when it was fetched (wall clock of the fetching process, UTC).
    """

    key: str
    body: bytes
    issuer_chain: bytes | None
    fetched_at: datetime


def _file_name(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest() + _SUFFIX


def _digest(chain: bytes, body: bytes) -> str:
    return hashlib.sha256(len(chain).to_bytes(8, "big") + chain + body).hexdigest()


class EndorsementCache:
    """Fetched endorsements in a directory (created on first write, mode 0700).

    Safe for several threads and processes: entries are replaced by atomic renames, and a reader
    sees a whole old entry, a whole new one, or none.

    Args:
        directory: where entries live.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, key: str) -> Path:
        """The file an entry for *key* lives in."""
        return self.directory / _file_name(key)

    def load(self, key: str, *, max_body_bytes: int) -> CacheEntry | None:
        """The entry for *key*, or None when absent or unusable (rule 2)."""
        path = self.path_for(key)
        limit = len(ENTRY_MAGIC) + MAX_HEADER_BYTES + MAX_ISSUER_CHAIN_BYTES + max_body_bytes
        try:
            with path.open("rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                    _logger.warning(
                        "ignoring cache entry %s: not a file of at most %d bytes", path, limit
                    )
                    return None
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            _logger.warning("ignoring cache entry %s: %s", path, e.strerror or e)
            return None
        entry = _parse(data, key=key, max_body_bytes=max_body_bytes)
        if entry is None:
            _logger.warning("ignoring corrupt cache entry %s; it will be fetched again", path)
        return entry

    def store(self, entry: CacheEntry) -> None:
        """Write *entry* atomically (rule 4: failures are logged, not raised)."""
        chain = entry.issuer_chain or b""
        header = {
            "key": entry.key,
            "fetched_at": entry.fetched_at.astimezone(UTC).isoformat(),
            "chain": entry.issuer_chain is not None,
            "chain_bytes": len(chain),
            "body_bytes": len(entry.body),
            "sha256": _digest(chain, entry.body),
        }
        line = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
        data = ENTRY_MAGIC + line + b"\n" + chain + entry.body
        target = self.path_for(entry.key)
        tmp: str | None = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            tmp = None
        except OSError as e:
            _logger.warning("cannot write cache entry %s: %s", target, e.strerror or e)
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def _parse(data: bytes, *, key: str, max_body_bytes: int) -> CacheEntry | None:
    if not data.startswith(ENTRY_MAGIC):
        return None
    rest = data[len(ENTRY_MAGIC) :]
    end = rest.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        return None
    try:
        header: Any = json.loads(rest[:end])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    chain_bytes = header.get("chain_bytes")
    body_bytes = header.get("body_bytes")
    fetched = header.get("fetched_at")
    digest = header.get("sha256")
    has_chain = header.get("chain")
    if (
        header.get("key") != key
        or not isinstance(chain_bytes, int)
        or not isinstance(body_bytes, int)
        or not isinstance(digest, str)
        or not isinstance(fetched, str)
        or not isinstance(has_chain, bool)
        or not 0 <= chain_bytes <= MAX_ISSUER_CHAIN_BYTES
        or not 0 < body_bytes <= max_body_bytes
    ):
        return None
    payload = rest[end + 1 :]
    if len(payload) != chain_bytes + body_bytes:
        return None
    chain, body = payload[:chain_bytes], payload[chain_bytes:]
    if _digest(chain, body) != digest:
        return None
    try:
        fetched_at = datetime.fromisoformat(fetched)
    except ValueError:
        return None
    if fetched_at.tzinfo is None:
        return None
    return CacheEntry(
        key=key,
        body=body,
        issuer_chain=chain if has_chain else None,
        fetched_at=fetched_at.astimezone(UTC),
    )


__all__ = [
    "ENTRY_MAGIC",
    "MAX_HEADER_BYTES",
    "MAX_ISSUER_CHAIN_BYTES",
    "CacheEntry",
    "EndorsementCache",
]
