"""Where a keep process writes a workload's file secrets, and how a loader cleans up after one.

Private to donjon: :mod:`donjon.keep.secret_files` makes the directories; the ``nil`` keep
loaders (:mod:`donjon.backends.nil`, :mod:`donjon.host.loader`), which sit below or beside the
keep runtime, remove what a keep process that ended abruptly left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["MEMORY_DIR", "PREFIX", "default_base", "remove_leftovers"]

MEMORY_DIR = Path("/dev/shm")  # noqa: S108 - only ever a parent for mkdtemp (0700, unique)
"""Where the directory goes when it can: a tmpfs, so a secret never reaches a disk."""

PREFIX = "donjon-secrets-"
"""Directory names are ``PREFIX<pid>-<random>``: the pid says whose they are."""


def default_base() -> Path | None:
    """MEMORY_DIR when usable, else None (tempfile's own choice)."""
    if MEMORY_DIR.is_dir() and os.access(MEMORY_DIR, os.W_OK | os.X_OK):
        return MEMORY_DIR
    return None


def remove_leftovers(pid: int, base: Path | None = None) -> int:
    """Remove the secret directories an ended process *pid* left (this user's only).

    Returns:
        How many were removed.
    """
    where = base if base is not None else (default_base() or Path(tempfile.gettempdir()))
    removed = 0
    for path in where.glob(f"{PREFIX}{pid}-*"):
        try:
            if path.is_symlink() or path.lstat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed
