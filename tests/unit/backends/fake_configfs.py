"""A fake configfs-tsm "kernel" over a real directory tree, behind the provider's ConfigfsIo seam.

It behaves the way Linux's configfs-tsm does (drivers/virt/coco/tsm.c):

- ``mkdir report/<name>`` populates the entry's attributes (configfs does this, a plain file
  system cannot, which is why the fake sits at the seam rather than under the provider);
- every write to ``inblob`` or ``privlevel`` bumps ``generation``; ``inblob`` takes at most 64
  bytes, ``privlevel`` must be >= ``privlevel_floor``; read-only attributes refuse writes;
- reading ``outblob`` generates the report from the *current* inblob when the generation moved
  since the last report (so a concurrent writer's inblob ends up in the report, as in the kernel);
- ``rmdir`` removes the entry and its attributes.

The files are real files under ``tmp_path``; tests inspect them directly.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from donjon.backends._common import read_bounded

SNP_REPORT_BYTES = 0x4A0
SNP_REPORT_DATA_OFFSET = 0x50
SNP_VMPL_OFFSET = 0x30
TDX_QUOTE_REPORT_DATA_OFFSET = 48 + 520  # quote header + TD report body up to REPORTDATA

_READ_ONLY = {"outblob", "auxblob", "provider", "generation", "privlevel_floor"}


def snp_cert_table(entries: list[tuple[str, bytes]]) -> bytes:
    """An SEV-SNP certificate table: entries, an all-zero terminator, then the blobs."""
    header_size = 24 * (len(entries) + 1)
    table = b""
    blobs = b""
    for guid, data in entries:
        table += uuid.UUID(guid).bytes + struct.pack("<II", header_size + len(blobs), len(data))
        blobs += data
    return table + bytes(24) + blobs


class FakeTsmKernel:
    """configfs-tsm semantics over files under *root* (``<root>/report/...``)."""

    def __init__(
        self,
        root: Path,
        *,
        provider: str = "sev_guest",
        privlevel_floor: int = 0,
        auxblob: bytes = b"",
    ) -> None:
        self.root = root
        self.report_dir = root / "report"
        self.report_dir.mkdir(parents=True)
        self.provider = provider
        self.privlevel_floor = privlevel_floor
        self.auxblob = auxblob
        self.lock = threading.RLock()
        self.reports_generated = 0
        self.outblob_override: bytes | None = None
        self.outblob_error: OSError | None = None
        self.on_outblob_read: Callable[[Path], None] | None = None
        self.rmdir_error: OSError | None = None
        self._last_generation: dict[Path, int] = {}

    # --- ConfigfsIo ---

    def mkdir(self, path: Path) -> None:
        if path.parent != self.report_dir:
            raise PermissionError(errno.EPERM, "configfs: mkdir only in report/", str(path))
        with self.lock:
            os.mkdir(path)
            attrs = {
                "provider": f"{self.provider}\n".encode(),
                "generation": b"0\n",
                "inblob": b"",
                "outblob": b"",
            }
            if self.provider == "sev_guest":
                attrs["auxblob"] = b""
                attrs["privlevel"] = b""
                attrs["privlevel_floor"] = f"{self.privlevel_floor}\n".encode()
            for name, data in attrs.items():
                (path / name).write_bytes(data)
            self._last_generation[path] = -1

    def rmdir(self, path: Path) -> None:
        if self.rmdir_error is not None:
            raise self.rmdir_error
        with self.lock:
            for child in path.iterdir():
                child.unlink()
            os.rmdir(path)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def write(self, path: Path, data: bytes) -> None:
        with self.lock:
            name = path.name
            if not path.exists():
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
            if name in _READ_ONLY:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            if name == "inblob" and len(data) > 64:
                raise OSError(errno.EINVAL, "Invalid argument", str(path))
            if name == "privlevel":
                level = int(data.decode().strip())
                if not self.privlevel_floor <= level <= 3:
                    raise OSError(errno.EINVAL, "Invalid argument", str(path))
            path.write_bytes(data)
            generation = path.parent / "generation"
            generation.write_bytes(f"{int(generation.read_text()) + 1}\n".encode())

    def read(self, path: Path, max_bytes: int) -> bytes:
        if path.name == "outblob":
            if self.on_outblob_read is not None:
                self.on_outblob_read(path.parent)
            if self.outblob_error is not None:
                raise self.outblob_error
            with self.lock:
                self._generate(path.parent)
        return read_bounded(path, max_bytes)

    # --- the "TEE" ---

    def _generate(self, entry: Path) -> None:
        generation = int((entry / "generation").read_text())
        if self._last_generation.get(entry) == generation:
            return  # the kernel returns the cached report while nothing was written
        self._last_generation[entry] = generation
        self.reports_generated += 1
        inblob = (entry / "inblob").read_bytes().ljust(64, b"\0")
        if self.outblob_override is not None:
            report = self.outblob_override
        elif self.provider == "sev_guest":
            privlevel = (entry / "privlevel").read_text().strip()
            vmpl = int(privlevel) if privlevel else 0
            body = bytearray(hashlib.sha384(b"fake snp" + inblob).digest() * 25)[:SNP_REPORT_BYTES]
            struct.pack_into("<I", body, 0, 2)  # report version
            struct.pack_into("<I", body, SNP_VMPL_OFFSET, vmpl)
            body[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + 64] = inblob
            report = bytes(body)
            (entry / "auxblob").write_bytes(self.auxblob)
        elif self.provider == "tdx_guest":
            body = bytearray(TDX_QUOTE_REPORT_DATA_OFFSET + 64 + 4)
            struct.pack_into("<HHI", body, 0, 4, 0, 0x81)  # quote v4, TEE type TDX
            body[TDX_QUOTE_REPORT_DATA_OFFSET : TDX_QUOTE_REPORT_DATA_OFFSET + 64] = inblob
            report = bytes(body)
        else:
            report = b"token:" + inblob
        (entry / "outblob").write_bytes(report)
