"""Helpers shared by the probes and the evidence providers: the evidence error, bounded reads."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from donjon.errors import BackendError

_READ_CHUNK_BYTES = 64 * 1024
"""Read size per system call (bytes)."""


class EvidenceError(BackendError):
    """The TEE was there but did not produce evidence (an I/O error, a refused request, a race).

    Attributes:
        errno: the OS error number, when an OS call failed.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class TooLargeError(Exception):
    """Internal: a file held more than the caller's limit. Callers turn it into a donjon error."""


def read_bounded(path: Path, max_bytes: int, *, truncate: bool = False) -> bytes:
    """Read a whole file, refusing (or truncating at) more than *max_bytes*.

    Reads in a loop with ``os.read`` because sysfs/configfs/procfs files may return short reads
    and have no meaningful size in ``stat``.

    Raises:
        OSError: the file cannot be opened or read.
        TooLargeError: the file is larger than *max_bytes* and *truncate* is false.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        total = 0
        while True:
            want = min(_READ_CHUNK_BYTES, max_bytes + 1 - total)
            if want <= 0:
                break
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        if truncate:
            return data[:max_bytes]
        raise TooLargeError(f"{path} holds more than {max_bytes} bytes")
    return data


def write_all(path: Path, data: bytes) -> None:
    """Write *data* to an existing file in one ``write`` call, then close it.

    configfs commits a binary attribute when the file is closed, and the kernel's report ABI
    expects the whole blob in one write, so a short write is an error, not a retry.

    Raises:
        OSError: the file cannot be opened or written, or the write was short.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)", str(path))
