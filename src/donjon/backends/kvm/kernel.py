"""The guest kernel: Debian's cloud kernel package, fetched with apt and unpacked in Python.

The ``kvm`` Keep boots Debian's ``linux-image-<version>-cloud-amd64`` directly (``-kernel``): its
bzImage is LZ4-compressed, so it decompresses fast even under QEMU's software emulation, and it
has everything virtio as modules. This module

- resolves the versioned package the ``linux-image-cloud-amd64`` metapackage depends on
  (``apt-cache depends``) and downloads it (``apt-get download``, no root needed);
- unpacks the ``.deb`` without ``dpkg-deb``: an ``ar`` archive holding ``data.tar.xz``;
- takes the bzImage and the ``.ko`` files a micro-VM needs, with their dependencies in load order,
  read from each module's ``.modinfo`` section (``depends=``), so no ``depmod`` is needed.

Rule 1: the parsing functions are pure (bytes in, values out) and bounded; only
:func:`resolve_package` and :func:`download_package` run programs.
Rule 2: a ``.deb`` is trusted host input (it came from the host's own apt), but it is still
parsed strictly: a malformed one is a :class:`KernelPackageError`, never a traceback.
"""

from __future__ import annotations

import io
import lzma
import re
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from donjon.errors import BackendUnavailableError, KeepLaunchError

__all__ = [
    "KERNEL_METAPACKAGE",
    "MICROVM_MODULES",
    "KernelFiles",
    "KernelPackageError",
    "download_package",
    "extract_kernel",
    "load_order",
    "modinfo_depends",
    "parse_apt_depends",
    "read_ar",
    "resolve_package",
]

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
"""Debian's metapackage that always depends on the current cloud kernel."""

MICROVM_MODULES = ("virtio_ring", "virtio", "virtio_mmio", "virtio_console")
"""What a QEMU ``microvm`` guest loads: virtio over MMIO and the virtio console (serial ports)."""

MAX_DEB_BYTES = 256 * 1024 * 1024
"""Largest kernel package read (bytes): Debian's cloud kernel is ~27 MB, the generic one ~70 MB."""

MAX_KERNEL_BYTES = 64 * 1024 * 1024
"""Largest bzImage accepted (bytes): Debian's are 8-15 MB."""

_APT_TIMEOUT_S = 300.0  # seconds for apt-cache / apt-get download (a 27 MB download)
_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60  # bytes of an ar member header
_VMLINUZ = re.compile(r"(?:\./)?boot/vmlinuz-(?P<version>[^/]+)")
_MODULE = re.compile(r"(?:\./)?lib/modules/(?P<version>[^/]+)/.+/(?P<name>[^/]+)\.ko(?P<xz>\.xz)?")


class KernelPackageError(KeepLaunchError):
    """The kernel package is missing, malformed, or lacks what the guest needs."""


@dataclass(frozen=True, slots=True)
class KernelFiles:
    """What the guest image takes from a kernel package.

    Attributes:
        version: the kernel release (``6.1.0-50-cloud-amd64``).
        bzimage: the compressed kernel as Debian ships it (``/boot/vmlinuz-<version>``).
        modules: module name to ``.ko`` bytes, in load order (dependencies first).
    """

    version: str
    bzimage: bytes
    modules: tuple[tuple[str, bytes], ...]


def parse_apt_depends(text: str, metapackage: str = KERNEL_METAPACKAGE) -> str:
    """The versioned kernel package named by ``apt-cache depends <metapackage>``.

    Raises:
        KernelPackageError: the output names no ``linux-image-...`` dependency.
    """
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        name = value.strip()
        if key.strip() == "Depends" and name.startswith("linux-image-") and name != metapackage:
            return name
    raise KernelPackageError(
        f"`apt-cache depends {metapackage}` names no linux-image package; run `apt-get update` "
        "(as root) and try again"
    )


def resolve_package(metapackage: str = KERNEL_METAPACKAGE) -> str:
    """Ask apt which versioned kernel package *metapackage* stands for.

    Raises:
        BackendUnavailableError: apt is not installed (not a Debian-like host).
        KernelPackageError: apt does not know the package.
    """
    output = _run_apt(["apt-cache", "depends", metapackage], cwd=None)
    return parse_apt_depends(output, metapackage)


def download_package(package: str, dest: Path) -> Path:
    """``apt-get download`` *package* into *dest* (no root needed) and return the ``.deb``.

    Raises:
        BackendUnavailableError: apt is not installed.
        KernelPackageError: the download failed (stale package lists, no network).
    """
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob(f"{package}_*.deb"))
    _run_apt(["apt-get", "download", package], cwd=dest)
    found = sorted(set(dest.glob(f"{package}_*.deb")) - before) or sorted(
        dest.glob(f"{package}_*.deb")
    )
    if not found:
        raise KernelPackageError(f"`apt-get download {package}` wrote no .deb into {dest}")
    return found[-1]


def _run_apt(argv: list[str], cwd: Path | None) -> str:
    if shutil.which(argv[0]) is None:
        raise BackendUnavailableError(
            f"{argv[0]} is not installed: the kvm backend takes its guest kernel from Debian's "
            f"{KERNEL_METAPACKAGE} package; on a Debian or Ubuntu host run scripts/ensure-qemu"
        )
    try:
        result = subprocess.run(  # noqa: S603 - a fixed apt command line
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_APT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelPackageError(f"`{' '.join(argv)}` failed: {e}") from e
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KernelPackageError(
            f"`{' '.join(argv)}` failed ({last}); run `apt-get update` as root (stale package "
            "lists name versions the mirror no longer has) and try again"
        )
    return result.stdout


def read_ar(blob: bytes) -> dict[str, bytes]:
    """The members of a Unix ``ar`` archive (the outer layer of a ``.deb``).

    Raises:
        KernelPackageError: not an ar archive, or a truncated member.
    """
    if not blob.startswith(_AR_MAGIC):
        raise KernelPackageError("not a Debian package: no ar archive magic")
    members: dict[str, bytes] = {}
    offset = len(_AR_MAGIC)
    while offset < len(blob):
        header = blob[offset : offset + _AR_HEADER]
        if len(header) < _AR_HEADER or header[58:60] != b"`\n":
            raise KernelPackageError(f"Debian package: bad ar member header at byte {offset}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as e:
            raise KernelPackageError(f"Debian package: bad size of ar member {name!r}") from e
        start = offset + _AR_HEADER
        if start + size > len(blob):
            raise KernelPackageError(f"Debian package: ar member {name!r} is truncated")
        members[name] = blob[start : start + size]
        offset = start + size + (size & 1)  # members are 2-byte aligned
    return members


def extract_kernel(deb: bytes, wanted: Iterable[str] = MICROVM_MODULES) -> KernelFiles:
    """Take the bzImage and the *wanted* modules (with their dependencies) from a kernel .deb.

    Args:
        deb: the package's bytes.
        wanted: module names the guest loads; dependencies are added before them.

    Raises:
        KernelPackageError: not a kernel package, or a wanted module (or a dependency) is
            missing.
    """
    members = read_ar(deb)
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise KernelPackageError("Debian package has no data.tar member")
    bzimage: bytes | None = None
    version: str | None = None
    modules: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(members[data_name]), mode="r:*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                kernel = _VMLINUZ.fullmatch(member.name)
                module = _MODULE.fullmatch(member.name)
                if kernel is None and module is None:
                    continue
                if member.size > MAX_KERNEL_BYTES:
                    raise KernelPackageError(f"{member.name} is larger than {MAX_KERNEL_BYTES}")
                stream = archive.extractfile(member)
                if stream is None:
                    continue
                data = stream.read()
                if kernel is not None:
                    bzimage, version = data, kernel["version"]
                elif module is not None:
                    modules[module["name"]] = lzma.decompress(data) if module["xz"] else data
    except (tarfile.TarError, lzma.LZMAError, EOFError, OSError) as e:
        raise KernelPackageError(f"Debian package: cannot read {data_name}: {e}") from e
    if bzimage is None or version is None:
        raise KernelPackageError("Debian package has no /boot/vmlinuz-*: not a kernel package")
    depends = {name: modinfo_depends(ko) for name, ko in modules.items()}
    order = load_order(wanted, depends)
    return KernelFiles(version, bzimage, tuple((name, modules[name]) for name in order))


def load_order(wanted: Iterable[str], depends: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """*wanted* modules and their dependencies, each after everything it depends on.

    Module names compare with ``-`` and ``_`` alike, as the kernel's do.

    Raises:
        KernelPackageError: a module or dependency not in *depends*, or a dependency cycle.
    """
    known = {_canonical(n): n for n in depends}
    order: list[str] = []
    state: dict[str, bool] = {}  # False: being visited; True: done

    def visit(name: str, chain: tuple[str, ...]) -> None:
        real = known.get(_canonical(name))
        if real is None:
            needed = f" (needed by {chain[-1]})" if chain else ""
            raise KernelPackageError(f"kernel module {name}{needed} is not in the package")
        if state.get(real) is True:
            return
        if state.get(real) is False:
            raise KernelPackageError(f"kernel modules depend on each other in a cycle: {chain}")
        state[real] = False
        for dep in depends[real]:
            visit(dep, (*chain, real))
        state[real] = True
        order.append(real)

    for name in wanted:
        visit(name, ())
    return tuple(order)


def modinfo_depends(ko: bytes) -> tuple[str, ...]:
    """The ``depends=`` list of a kernel module's ``.modinfo`` ELF section.

    Raises:
        KernelPackageError: not a 64-bit little-endian ELF file, or no ``.modinfo`` section.
    """
    section = _elf_section(ko, ".modinfo")
    for item in section.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key == b"depends":
            return tuple(d for d in value.decode("ascii", "replace").split(",") if d)
    return ()


def _elf_section(elf: bytes, wanted: str) -> bytes:
    # ELF64 little-endian (System V gABI): e_shoff at 0x28, e_shentsize/e_shnum/e_shstrndx at
    # 0x3A; each section header has sh_name (u32) at 0, sh_offset (u64) at 0x18, sh_size at 0x20.
    if len(elf) < 0x40 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise KernelPackageError("kernel module is not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    if shentsize < 0x28 or shstrndx >= shnum or shoff + shnum * shentsize > len(elf):
        raise KernelPackageError("kernel module has a malformed ELF section table")

    def header(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        (name,) = struct.unpack_from("<I", elf, base)
        offset, size = struct.unpack_from("<QQ", elf, base + 0x18)
        if offset + size > len(elf):
            raise KernelPackageError("kernel module has a section past its end")
        return name, offset, size

    _, names_at, names_size = header(shstrndx)
    names = elf[names_at : names_at + names_size]
    for index in range(shnum):
        name_at, offset, size = header(index)
        end = names.find(b"\0", name_at)
        if end >= 0 and names[name_at:end] == wanted.encode():
            return elf[offset : offset + size]
    raise KernelPackageError(f"kernel module has no {wanted} section")


def _canonical(name: str) -> str:
    return name.replace("-", "_")
