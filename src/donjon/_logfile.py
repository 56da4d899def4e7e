"""Send a process's stdout and stderr to a log file (the keep loader's and the keep runtime's).

Both are started detached by the keep manager and write their own log in the Keep's directory;
fds 1 and 2 are replaced so that anything printed, including by libraries, lands there.
"""

from __future__ import annotations

import os
from pathlib import Path


def attach_log(path: Path) -> None:
    """Make *path* (appended to, created with mode 0600) this process's stdout and stderr."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


__all__ = ["attach_log"]
