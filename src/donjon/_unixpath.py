"""AF_UNIX socket paths of any length.

A socket address holds at most 107 bytes of path (``sun_path``), and a Keep's socket lives deep in
the keep manager's state directory. A longer path is reached through the directory's file
descriptor instead: ``/proc/self/fd/<dirfd>/<name>`` names the same file and is always short.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MAX_SUN_PATH_BYTES = 107
"""Longest socket path Linux accepts (``sizeof(sun_path)`` is 108, with the terminating NUL)."""


@contextmanager
def unix_socket_path(path: Path) -> Iterator[str]:
    """A path for ``bind``/``connect`` that names *path* and fits ``sun_path``; valid inside the
    ``with`` block only."""
    if len(os.fsencode(str(path))) <= MAX_SUN_PATH_BYTES:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
