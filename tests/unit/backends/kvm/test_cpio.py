"""The newc writer: exact bytes, reproducibility, refusals, and busybox's own cpio reading it."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from donjon.backends.kvm.cpio import CpioEntry, EntryKind, read_newc, write_newc
from donjon.errors import DecodeError, EncodeError


def header(ino: int, mode: int, nlink: int, size: int, namesize: int, rdev: int = 0) -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev >> 8, rdev & 0xFF, namesize, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields)


TRAILER = header(0, 0, 1, 0, 11) + b"TRAILER!!!\0" + b"\0" * 3

# (entries, exact archive) pairs, written by hand from the format (buffer-format.rst).
CASES = [
    ([], TRAILER),
    (
        [CpioEntry.directory("d"), CpioEntry.file("d/f", b"hi")],
        header(1, 0o040755, 2, 0, 2)
        + b"d\0"
        + header(2, 0o100644, 1, 2, 4)
        + b"d/f\0"
        + b"\0\0"
        + b"hi\0\0"
        + TRAILER,
    ),
    (
        [CpioEntry.symlink("sh", "busybox")],
        header(1, 0o120777, 1, 7, 3) + b"sh\0" + b"\0" * 3 + b"busybox\0" + TRAILER,
    ),
    (
        [CpioEntry.char_device("console", 5, 1)],
        header(1, 0o020600, 1, 0, 8, rdev=0x0501) + b"console\0" + b"\0\0" + TRAILER,
    ),
]


@pytest.mark.parametrize(("entries", "blob"), CASES)
def test_exact_bytes_both_ways(entries: list[CpioEntry], blob: bytes) -> None:
    assert write_newc(entries) == blob
    assert read_newc(blob) == entries
    assert len(blob) % 4 == 0


def tree() -> list[CpioEntry]:
    return [
        CpioEntry.directory("bin"),
        CpioEntry.file("bin/busybox", b"\x7fELF" + bytes(100), 0o755),
        CpioEntry.symlink("bin/sh", "busybox"),
        CpioEntry.directory("dev"),
        CpioEntry.char_device("dev/console", 5, 1),
        CpioEntry.file("init", b"#!/bin/sh\nexec /bin/sh\n", 0o755),
        CpioEntry.directory("usr"),
        CpioEntry.directory("usr/lib"),
        CpioEntry.file("usr/lib/a-b", b"x" * 5),
        CpioEntry.directory("usr/lib/a"),
        CpioEntry.file("usr/lib/a/c", b""),
    ]


def test_the_order_of_the_input_does_not_matter_and_parents_come_first() -> None:
    expected = write_newc(tree())
    for seed in range(5):
        shuffled = tree()
        random.Random(seed).shuffle(shuffled)
        assert write_newc(shuffled) == expected
    paths = [e.path for e in read_newc(expected)]
    assert paths == sorted(paths, key=str.encode)
    assert paths.index("usr/lib/a") < paths.index("usr/lib/a/c")


def test_owner_time_and_links_are_fixed_whatever_the_entries() -> None:
    blob = write_newc(tree())
    offset = 0
    while True:
        fields = [int(blob[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        _, mode, uid, gid, nlink, mtime, size = fields[:7]
        namesize = fields[11]
        name = blob[offset + 110 : offset + 110 + namesize - 1]
        assert (uid, gid, mtime) == (0, 0, 0)
        if name == b"TRAILER!!!":
            break
        assert nlink == (2 if mode & 0o170000 == 0o040000 else 1)
        offset = (offset + 110 + namesize + 3) & ~3
        offset = (offset + size + 3) & ~3


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([CpioEntry.file("x", b"1"), CpioEntry.file("x", b"2")], "given twice"),
        ([CpioEntry.file("a/b", b"")], "no directory entry 'a'"),
        ([CpioEntry.file("a", b""), CpioEntry.file("a/b", b"")], "no directory entry 'a'"),
        ([CpioEntry.file("/etc/passwd", b"")], "must be relative"),
        ([CpioEntry.directory("a"), CpioEntry.file("a/../b", b"")], "must be relative"),
        ([CpioEntry.file("a//b", b"")], "must be relative"),
        ([CpioEntry.file("", b"")], "must be relative"),
        ([CpioEntry.file("TRAILER!!!", b"")], "must be relative"),
        ([CpioEntry("x", EntryKind.FILE, 0o100644)], "has mode"),
        ([CpioEntry("d", EntryKind.DIRECTORY, 0o755, b"data")], "cannot have contents"),
        ([CpioEntry("f", EntryKind.FILE, 0o644, rdev=(1, 3))], "is not a device"),
    ],
)
def test_bad_entries_are_refused(entries: list[CpioEntry], problem: str) -> None:
    with pytest.raises(EncodeError, match=problem):
        write_newc(entries)


@pytest.mark.parametrize(
    ("blob", "problem"),
    [
        (b"", "no newc cpio header at byte 0"),
        (b"070707" + b"0" * 104, "no newc cpio header"),  # the old binary-compatible format
        (b"070701" + b"G" * 104, "non-hex field"),
        (write_newc([CpioEntry.file("f", b"abcd")])[:114], "runs past the end"),
        (header(1, 0o060600, 1, 0, 2) + b"b\0" + TRAILER, "unsupported file type"),
    ],
)
def test_bad_archives_are_refused(blob: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        read_newc(blob)


def test_busybox_cpio_lists_and_extracts_what_we_wrote(tmp_path: Path) -> None:
    """An independent reader of the format: busybox's cpio, the one the guest image ships."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail(
            "busybox is not installed: run scripts/ensure-qemu (it installs busybox-static)"
        )
    archive = tmp_path / "a.cpio"
    archive.write_bytes(write_newc([e for e in tree() if e.kind is not EntryKind.CHAR_DEVICE]))
    listing = subprocess.run(
        [busybox, "cpio", "-t", "-F", str(archive)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listing == [e.path for e in read_newc(archive.read_bytes())]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        [busybox, "cpio", "-i", "-d", "-F", str(archive)], cwd=out, capture_output=True, check=True
    )
    assert (out / "bin/busybox").read_bytes() == b"\x7fELF" + bytes(100)
    assert (out / "bin/busybox").stat().st_mode & 0o777 == 0o755
    assert (out / "bin/sh").readlink() == Path("busybox")
    assert (out / "usr/lib/a-b").read_bytes() == b"xxxxx"
