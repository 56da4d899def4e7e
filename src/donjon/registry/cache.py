"""A content-addressed local blob cache whose entries are re-checked on every read.

Layout (the same as an OCI image layout's ``blobs/``, so tools can read it)::

    ROOT/blobs/sha256/<hex>     complete, verified blobs
    ROOT/tmp/                   writes in progress; renamed into blobs/ only when complete

Rule 1: nothing partial is ever visible under ``blobs/``: a blob is written to ``tmp/``, its
digest checked, and only then renamed into place (``os.replace`` is atomic on one file system).
Rule 2: the cache is untrusted storage. A read hashes the file again; an entry that does not
match its name is deleted and reported as absent, so the caller fetches it again.
Rule 3: a cache on the host's disk is readable by the host. A Keep must not cache a private
workload there (DESIGN.md trust model); the Keep's own memory or sealed storage is the place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from donjon.registry.errors import DigestMismatchError
from donjon.registry.oci import Digest

__all__ = ["BlobCache"]

_logger = logging.getLogger(__name__)


class BlobCache:
    """A directory of blobs named by digest.

    Args:
        root: the cache directory (created on first write, mode 0700).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: Digest) -> Path:
        """Where a blob with *digest* is stored (whether or not it is there)."""
        # Digest.parse allows only [a-z0-9] in both parts, so this cannot leave the root.
        return self.root / "blobs" / digest.algorithm / digest.hex

    def get(self, digest: Digest, *, max_bytes: int) -> bytes | None:
        """The cached blob, re-checked against *digest*, or ``None`` if absent or bad.

        Args:
            digest: the blob's digest.
            max_bytes: entries larger than this are treated as bad (and deleted).
        """
        path = self.path(digest)
        try:
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            _logger.warning("cannot read cached blob %s: %s", digest, e)
            return None
        if len(data) > max_bytes or not digest.matches(data):
            # Rule 2: whoever changed it, the entry is useless; drop it and fetch again.
            _logger.warning("cached blob %s is corrupt or oversized; removing it", digest)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def contains(self, digest: Digest) -> bool:
        """Whether an entry exists (unchecked; :meth:`get` checks)."""
        return self.path(digest).is_file()

    def put(self, digest: Digest, data: bytes) -> Path:
        """Store *data* under *digest* atomically.

        Raises:
            DigestMismatchError: *data* does not hash to *digest* (nothing is stored).
            OSError: the cache directory cannot be written.
        """
        actual = Digest.of(data, digest.algorithm)
        if actual != digest:
            raise DigestMismatchError(
                f"refusing to cache bytes hashing to {actual} under {digest}",
                expected=str(digest),
                actual=str(actual),
            )
        return self.put_checked(digest, data)

    def put_checked(self, digest: Digest, data: bytes) -> Path:
        """Store *data*, which the caller has just checked against *digest*, atomically.

        Like :meth:`put` without hashing *data* again (a 20 MB module costs ~15 ms to hash).
        A wrong claim costs nothing but the entry: :meth:`get` re-checks every read (Rule 2)
        and deletes what does not match its name.

        Raises:
            OSError: the cache directory cannot be written.
        """
        final = self.path(digest)
        tmp_dir = self.root / "tmp"
        # Every level 0700: a cached workload is nobody else's business on this machine.
        for directory in (self.root, tmp_dir, self.root / "blobs", final.parent):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=f"{digest.hex[:16]}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        return final

    def temporary_files(self) -> list[Path]:
        """Leftover files in ``tmp/`` (from a crash); empty in normal operation."""
        tmp_dir = self.root / "tmp"
        return sorted(tmp_dir.iterdir()) if tmp_dir.is_dir() else []
