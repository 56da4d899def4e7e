"""The ``newc`` cpio format that Linux unpacks as an initramfs: a byte-reproducible writer and a
strict reader. Pure: bytes in, bytes out.

Format (``Documentation/driver-api/early-userspace/buffer-format.rst``; cpio(5) "New ASCII")::

    entry   = header(110 bytes) || name || NUL || pad to 4 || data || pad to 4
    header  = "070701" || 13 fields of 8 uppercase hex digits:
              ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
              namesize (with the NUL) check (0)
    archive = entry* || entry("TRAILER!!!") [|| zero padding]

Rule 1: the same entries always give the same bytes. The writer sorts entries by path
(bytewise, so a directory precedes its contents), numbers inodes 1..n in that order, and sets
every owner to 0:0 and every mtime to 0, whatever the host files said (GNU cpio's
``--reproducible -R 0:0`` with ``find | LC_ALL=C sort``).
Rule 2: regular files have ``nlink`` 1, so the kernel never treats two of them as hard links.
Rule 3: paths are relative, ``/``-separated, without ``.``/``..`` or empty parts; a path given
twice, or whose parent directory is not itself an entry, is refused.

Example:
    >>> blob = write_newc([CpioEntry.directory("bin"), CpioEntry.file("bin/x", b"hi", 0o755)])
    >>> [(e.path, e.data) for e in read_newc(blob)]
    [('bin', b''), ('bin/x', b'hi')]
"""

from __future__ import annotations

import enum
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from donjon.errors import DecodeError, EncodeError

__all__ = ["MAX_PATH_BYTES", "CpioEntry", "EntryKind", "read_newc", "write_newc"]

MAX_PATH_BYTES = 4095
"""Longest entry path (bytes, UTF-8): Linux's PATH_MAX less the NUL."""

_MAGIC = b"070701"
_FIELDS = 13
_HEADER_BYTES = len(_MAGIC) + 8 * _FIELDS  # 110
_TRAILER = "TRAILER!!!"
_MAX_FIELD = 0xFFFFFFFF  # each header field is 8 hex digits


class EntryKind(enum.Enum):
    """What an entry is; the value is its ``S_IFMT`` bits."""

    DIRECTORY = stat.S_IFDIR
    FILE = stat.S_IFREG
    SYMLINK = stat.S_IFLNK
    CHAR_DEVICE = stat.S_IFCHR


@dataclass(frozen=True, slots=True)
class CpioEntry:
    """One archive member.

    Attributes:
        path: relative ``/``-separated path (``usr/bin/python3.11``).
        kind: directory, regular file, symbolic link or character device.
        mode: permission bits (``0o755``); the kind's bits are added when written.
        data: a file's contents, a link's target, empty for a directory or device.
        rdev: a device's (major, minor) numbers.
    """

    path: str
    kind: EntryKind
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @classmethod
    def directory(cls, path: str, mode: int = 0o755) -> CpioEntry:
        """A directory entry."""
        return cls(path, EntryKind.DIRECTORY, mode)

    @classmethod
    def file(cls, path: str, data: bytes, mode: int = 0o644) -> CpioEntry:
        """A regular file entry."""
        return cls(path, EntryKind.FILE, mode, data)

    @classmethod
    def symlink(cls, path: str, target: str) -> CpioEntry:
        """A symbolic link entry (mode 0777, as Linux creates them)."""
        return cls(path, EntryKind.SYMLINK, 0o777, target.encode())

    @classmethod
    def char_device(cls, path: str, major: int, minor: int, mode: int = 0o600) -> CpioEntry:
        """A character device node (``/dev/console`` is 5:1)."""
        return cls(path, EntryKind.CHAR_DEVICE, mode, rdev=(major, minor))


def write_newc(entries: Iterable[CpioEntry]) -> bytes:
    """Encode *entries* as one reproducible newc archive (Rules 1-3), trailer included.

    Raises:
        EncodeError: a bad or duplicate path, a missing parent directory, a mode outside the
            permission bits, or a member too large for the format.
    """
    ordered = sorted(entries, key=lambda e: e.path.encode())
    seen: dict[str, EntryKind] = {}
    out = bytearray()
    for ino, entry in enumerate(ordered, start=1):
        _check_path(entry.path)
        if entry.path in seen:
            raise EncodeError(f"initramfs entry {entry.path!r} is given twice")
        parent = entry.path.rpartition("/")[0]
        if parent and seen.get(parent) is not EntryKind.DIRECTORY:
            raise EncodeError(
                f"initramfs entry {entry.path!r} has no directory entry {parent!r} before it"
            )
        if entry.mode & ~0o7777:
            raise EncodeError(f"initramfs entry {entry.path!r} has mode {entry.mode:o}")
        if entry.kind in {EntryKind.DIRECTORY, EntryKind.CHAR_DEVICE} and entry.data:
            raise EncodeError(f"initramfs entry {entry.path!r} cannot have contents")
        if entry.rdev != (0, 0) and entry.kind is not EntryKind.CHAR_DEVICE:
            raise EncodeError(f"initramfs entry {entry.path!r} is not a device")
        seen[entry.path] = entry.kind
        nlink = 2 if entry.kind is EntryKind.DIRECTORY else 1
        _append(out, entry, nlink, ino)
    _append(out, CpioEntry(_TRAILER, EntryKind.FILE, 0), 1, 0, trailer=True)
    return bytes(out)


def read_newc(blob: bytes) -> list[CpioEntry]:
    """Decode a newc archive up to its trailer (tests and ``image show`` use it).

    Raises:
        DecodeError: a bad magic, a truncated member, or a member kind this module does not
            write (block devices, FIFOs, sockets).
    """
    entries: list[CpioEntry] = []
    offset = 0
    while True:
        header = blob[offset : offset + _HEADER_BYTES]
        if len(header) < _HEADER_BYTES or header[:6] != _MAGIC:
            raise DecodeError(f"no newc cpio header at byte {offset}; not a newc archive")
        try:
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(_FIELDS)]
        except ValueError as e:
            raise DecodeError(f"cpio header at byte {offset} has a non-hex field") from e
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = offset + _HEADER_BYTES
        data_start = _pad4(name_start + namesize)
        end = data_start + size
        if namesize < 1 or end > len(blob):
            raise DecodeError(f"cpio member at byte {offset} runs past the end of the archive")
        name = blob[name_start : name_start + namesize - 1].decode("utf-8", "surrogateescape")
        if name == _TRAILER:
            return entries
        kind = stat.S_IFMT(mode)
        if kind not in {k.value for k in EntryKind}:
            raise DecodeError(f"cpio member {name!r} has an unsupported file type {kind:o}")
        entries.append(
            CpioEntry(
                name,
                EntryKind(kind),
                stat.S_IMODE(mode),
                blob[data_start:end],
                rdev=(fields[9], fields[10]),
            )
        )
        offset = _pad4(end)


def _append(
    out: bytearray, entry: CpioEntry, nlink: int, ino: int, *, trailer: bool = False
) -> None:
    encoded = entry.path.encode() + b"\0"
    data = entry.data
    major, minor = entry.rdev
    if len(data) > _MAX_FIELD or not (0 <= major <= _MAX_FIELD and 0 <= minor <= _MAX_FIELD):
        raise EncodeError(f"initramfs entry {entry.path!r} does not fit a newc header")
    mode = 0 if trailer else entry.kind.value | entry.mode
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, major, minor, len(encoded), 0)
    out += _MAGIC + b"".join(b"%08X" % f for f in fields) + encoded
    out += b"\0" * (_pad4(len(out)) - len(out))
    out += data
    out += b"\0" * (_pad4(len(out)) - len(out))


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _check_path(path: str) -> None:
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(p in {"", ".", ".."} for p in parts)
        or "\0" in path
        or len(path.encode()) > MAX_PATH_BYTES
        or path == _TRAILER
    ):
        raise EncodeError(
            f"initramfs path {path!r} must be relative, '/'-separated, without '.', '..' or "
            f"empty parts, and at most {MAX_PATH_BYTES} bytes"
        )
