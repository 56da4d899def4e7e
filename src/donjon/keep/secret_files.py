"""Secrets delivered as files: a private, memory-backed directory the workload sees read-only.

A ``[[secrets]]`` entry with ``file = "tls.key"`` reaches the workload as
``/run/secrets/tls.key`` (:data:`~donjon.keep.config.SECRETS_GUEST_DIR`). WASI can only pre-open
a directory of the Keep's own filesystem, so the keep runtime writes the released values into a
fresh directory and pre-opens it read-only; the directory exists while the workload runs and
is removed, files and all, when it ends, however it ends.

Rule 1: the directory is on ``/dev/shm`` (tmpfs: memory, never a disk) when the Keep has one,
else in the temporary directory; it is created with mode 0700 by ``mkdtemp`` and each file with
mode 0400, ``O_EXCL | O_NOFOLLOW``, so nothing can be there before us or be swapped in.
Rule 2: in a hardware Keep that memory is the TEE's; in a ``nil`` Keep it is the host's, like
everything else there.
Rule 3: a process that ends without its ``with`` block finishing (the deadline watchdog's
``os._exit``, a SIGKILL) cannot remove the directory itself; its name starts with
``donjon-secrets-<pid>-``, and whoever waited for that process removes what it left
(:func:`remove_leftovers`, called by the ``nil`` keep loaders once the process has ended).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from donjon._closing import Closing
from donjon._secretdirs import MEMORY_DIR, PREFIX, default_base, remove_leftovers
from donjon.keep.config import WorkloadConfig

__all__ = ["MEMORY_DIR", "SecretFiles", "remove_leftovers"]


class SecretFiles(Closing):
    """The directory of one workload's file secrets; removed when the ``with`` block ends."""

    def __init__(self, base: Path | None = None) -> None:
        self._base = base
        self._dir: Path | None = None

    def write(self, config: WorkloadConfig, released: Mapping[str, bytes]) -> Path | None:
        """Write the config's file secrets from *released* (values by secret name).

        Returns:
            The directory to pre-open at ``/run/secrets``, or None if the config has no file
            secrets.
        """
        wanted = [s for s in config.secrets if s.file is not None and s.name in released]
        if not wanted:
            return None
        prefix = f"{PREFIX}{os.getpid()}-"
        directory = Path(tempfile.mkdtemp(prefix=prefix, dir=self._where()))
        self._dir = directory
        for spec in wanted:
            assert spec.file is not None  # noqa: S101 - filtered above
            fd = os.open(
                directory / spec.file,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o400,
            )
            try:
                view = memoryview(released[spec.name])
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        return directory

    def close(self) -> None:
        """Remove the directory and its files (idempotent)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _where(self) -> Path | None:
        return self._base if self._base is not None else default_base()
