"""The ``kvm`` Keep's guest image: Debian's cloud kernel, a byte-reproducible initramfs, a manifest.

``python -m donjon.backends.kvm.image build`` (also run by ``scripts/ensure-qemu``, and by
``donjon run --backend kvm`` when the image is out of date) makes, under
``$DONJON_CACHE_DIR/kvm`` (else ``$XDG_CACHE_HOME/donjon/kvm``, else ``~/.cache/donjon/kvm``)::

    debs/linux-image-<release>_<version>_amd64.deb    apt-get download (once)
    kernels/<deb sha256 prefix>/                       its bzImage and virtio modules (once)
    images/<image id>/vmlinuz                          the kernel, as Debian ships it
    images/<image id>/initrd.cpio                      the initramfs (newc cpio, uncompressed)
    images/<image id>/manifest.json                    SHA-256 of kernel, initrd and cmdline
    current-<key>.json                                 which image this Python + donjon uses

The initramfs holds, at the paths they have on this host: busybox (static) and a small
``/init``; the virtio modules; **this** CPython (``sys.executable``'s real binary, its shared
libraries by ``ldd``, and only the standard library modules the guest agent imports, as
traced by ``python -m donjon.keep.vmguest --trace``); wasmtime and cbor2 from this
environment; donjon's own modules that the trace saw. Python files are sourceless,
unchecked-hash ``.pyc`` (compiled once, never re-checked in the VM), ELF files stripped when
``strip`` exists. ``cryptography`` is not included: a ``kvm`` Keep runs no TLS (sockets are
refused for ``kvm``).

Rule 1: the same inputs give the same bytes (the manifest's ``image_id`` is then the same):
entries are sorted, owned by 0:0, dated 0 (:mod:`.cpio`), and the ``.pyc`` files are compiled
with a fixed hash seed (a random one reorders frozenset constants).
Rule 2: the kernel command line is the constant :data:`~.qemu.BASE_CMDLINE`; host-specific
options (``tsc_early_khz`` under TCG) are added at launch and are not part of the manifest, so
the manifest is what a measured launch (SEV-SNP's kernel hashes) would be checked against.
Rule 3: an image is rebuilt only when an input changed: ``current-<key>.json`` lists every
input file with its size and modification time, and the build is skipped while they match.
Images go into place by an atomic rename, so concurrent builders agree.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from donjon import __version__
from donjon.backends.kvm.cpio import CpioEntry, write_newc
from donjon.backends.kvm.kernel import (
    KERNEL_METAPACKAGE,
    MICROVM_MODULES,
    KernelFiles,
    KernelPackageError,
    download_package,
    extract_kernel,
    load_order,
    modinfo_depends,
    resolve_package,
)
from donjon.backends.kvm.qemu import BASE_CMDLINE
from donjon.errors import BackendUnavailableError, Error, KeepLaunchError

__all__ = [
    "BUILD_COMMAND",
    "GUEST_AGENT",
    "GUEST_LIB_DIR",
    "IMAGE_FORMAT",
    "PCI_MODULES",
    "BuiltImage",
    "GuestFile",
    "GuestImage",
    "ImageInputs",
    "ImageManifest",
    "assemble",
    "build_image",
    "ensure_image",
    "find_image",
    "image_root",
    "main",
]

IMAGE_FORMAT = 1
"""Version of the image layout and manifest; an image of another version is rebuilt."""

GUEST_AGENT = "donjon.keep.vmguest"
"""The module ``/init`` executes (``python -m``); named here, never imported (layering)."""

GUEST_LIB_DIR = "opt/donjon/lib"
"""Where donjon, wasmtime and cbor2 live in the guest (``/init`` runs the agent from there)."""

PCI_MODULES = ("virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_console")
"""What a ``q35`` guest loads instead of ``virtio_mmio`` (plus their dependencies)."""

BUILD_COMMAND = "python -m donjon.backends.kvm.image build"
"""The command that builds the image (downloading the kernel package if needed)."""

KEPT_IMAGES = 3
"""Images kept in the cache besides those in use (older ones are deleted after a build)."""

_BUSYBOX_APPLETS = ("sh", "mount", "insmod", "cat", "ls", "poweroff")
_TRACE_TIMEOUT_S = 120.0  # seconds for the import trace and for compiling the .pyc files
_STRIP_TIMEOUT_S = 60.0  # seconds per `strip` run
_PT_INTERP = 3  # ELF program header type of the dynamic loader's path
_SKIPPED_NAMES = frozenset({"__pycache__", "py.typed"})
_SKIPPED_SUFFIXES = (".pyi", ".pyc", ".dist-info")
_DEB_PATTERN = "linux-image-*-cloud-amd64_*.deb"
_MANIFEST = "manifest.json"
_KERNEL = "vmlinuz"
_INITRD = "initrd.cpio"


def image_root(environ: Mapping[str, str]) -> Path:
    """Where kvm images are cached: ``kvm/`` under donjon's cache directory (the same rule as
    the compiled-module cache: ``$DONJON_CACHE_DIR``, ``$XDG_CACHE_HOME/donjon``, ``~/.cache``).
    """
    override = environ.get("DONJON_CACHE_DIR", "")
    if override:
        return Path(override) / "kvm"
    xdg = environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec says a relative value is to be ignored
        return Path(xdg) / "donjon" / "kvm"
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".cache" / "donjon" / "kvm"


# -- values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestFile:
    """A regular file in the guest.

    Attributes:
        path: its guest path, relative to ``/`` (``usr/lib/x.so``).
        data: its contents.
        mode: its permission bits.
    """

    path: str
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class ImageInputs:
    """Everything an image is made of, read from the host (:func:`collect_inputs`).

    Attributes:
        kernel: the bzImage and modules.
        kernel_package: the ``.deb`` file name they came from.
        kernel_package_sha256: its SHA-256 (hex).
        busybox: a static busybox binary.
        python: the guest path of the interpreter ``/init`` executes.
        python_version: its version (``3.11.7``).
        files: the interpreter, its libraries, the standard library subset, wasmtime, cbor2 and
            donjon's modules, at their guest paths.
    """

    kernel: KernelFiles
    kernel_package: str
    kernel_package_sha256: str
    busybox: bytes
    python: str
    python_version: str
    files: tuple[GuestFile, ...]


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """What an image is, by digest (``manifest.json``).

    Attributes:
        image_id: SHA-256 over the kernel's, initrd's and command line's digests (below).
        kernel_sha256: of the bzImage.
        kernel_bytes: its size.
        kernel_release: ``uname -r`` in the guest.
        kernel_package: the Debian package file it came from.
        kernel_package_sha256: that file's SHA-256.
        initrd_sha256: of the initramfs.
        initrd_bytes: its size.
        cmdline: the kernel command line.
        cmdline_sha256: of its UTF-8 bytes.
        modules: the kernel modules in the image, in load order.
        python_version: the guest's CPython.
        donjon_version: the donjon that built it.
        guest_agent: the module ``/init`` runs.
        format: :data:`IMAGE_FORMAT`.

    ``image_id = SHA-256("donjon-kvm-image/v1\\n" || kernel_sha256 || "\\n" || initrd_sha256
    || "\\n" || cmdline_sha256 || "\\n")``, hex digests as ASCII: the three inputs a measured
    direct boot (SEV-SNP ``kernel-hashes``) covers.
    """

    image_id: str
    kernel_sha256: str
    kernel_bytes: int
    kernel_release: str
    kernel_package: str
    kernel_package_sha256: str
    initrd_sha256: str
    initrd_bytes: int
    cmdline: str
    cmdline_sha256: str
    modules: tuple[str, ...]
    python_version: str
    donjon_version: str
    guest_agent: str
    format: int = IMAGE_FORMAT

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, two-space indent, a final newline)."""
        data = {name: getattr(self, name) for name in self.__slots__}
        data["modules"] = list(self.modules)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, blob: bytes) -> ImageManifest:
        """Parse a manifest written by :meth:`to_json`.

        Raises:
            KeepLaunchError: not such a manifest (another format, or damaged).
        """
        try:
            data = json.loads(blob)
            fields = {name: data[name] for name in cls.__slots__}
            fields["modules"] = tuple(fields["modules"])
            manifest = cls(**fields)
        except (ValueError, KeyError, TypeError) as e:
            raise KeepLaunchError(f"kvm image manifest is damaged ({e}); rebuild it") from e
        if manifest.format != IMAGE_FORMAT or manifest.image_id != _image_id(
            manifest.kernel_sha256, manifest.initrd_sha256, manifest.cmdline_sha256
        ):
            raise KeepLaunchError("kvm image manifest does not match its own digests; rebuild it")
        return manifest


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """An image in memory: what :func:`assemble` returns and :func:`store_image` writes."""

    kernel: bytes
    initrd: bytes
    manifest: ImageManifest


@dataclass(frozen=True, slots=True)
class GuestImage:
    """An image on disk, ready to boot.

    Attributes:
        directory: ``images/<image id>``.
        manifest: its manifest.
    """

    directory: Path
    manifest: ImageManifest

    @property
    def kernel(self) -> Path:
        """The bzImage."""
        return self.directory / _KERNEL

    @property
    def initrd(self) -> Path:
        """The initramfs."""
        return self.directory / _INITRD


# -- assembling (pure) ---------------------------------------------------------------------


def assemble(inputs: ImageInputs, *, cmdline: str = BASE_CMDLINE) -> BuiltImage:
    """Lay out the initramfs and compute the manifest. Pure and deterministic (Rule 1)."""
    depends = {name: modinfo_depends(ko) for name, ko in inputs.kernel.modules}
    mmio = load_order(MICROVM_MODULES, depends)
    pci = load_order(PCI_MODULES, depends)
    entries: dict[str, CpioEntry] = {}

    def add(entry: CpioEntry) -> None:
        parts = entry.path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            entries.setdefault(parent, CpioEntry.directory(parent))
        entries[entry.path] = entry

    for directory in ("dev", "proc", "sys", "tmp", "run", "lib/modules"):
        add(CpioEntry.directory(directory))
    # The kernel's built-in initramfs has /dev/console too; the image does not rely on it.
    add(CpioEntry.char_device("dev/console", 5, 1))
    add(CpioEntry.file("init", _init_script(inputs.python, mmio, pci).encode(), 0o755))
    add(CpioEntry.file("bin/busybox", inputs.busybox, 0o755))
    for applet in _BUSYBOX_APPLETS:
        add(CpioEntry.symlink(f"bin/{applet}", "busybox"))
    for name, ko in inputs.kernel.modules:
        add(CpioEntry.file(f"lib/modules/{name}.ko", ko))
    for file in inputs.files:
        add(CpioEntry.file(file.path, file.data, file.mode))
    initrd = write_newc(entries.values())
    kernel_sha256 = hashlib.sha256(inputs.kernel.bzimage).hexdigest()
    initrd_sha256 = hashlib.sha256(initrd).hexdigest()
    cmdline_sha256 = hashlib.sha256(cmdline.encode()).hexdigest()
    manifest = ImageManifest(
        image_id=_image_id(kernel_sha256, initrd_sha256, cmdline_sha256),
        kernel_sha256=kernel_sha256,
        kernel_bytes=len(inputs.kernel.bzimage),
        kernel_release=inputs.kernel.version,
        kernel_package=inputs.kernel_package,
        kernel_package_sha256=inputs.kernel_package_sha256,
        initrd_sha256=initrd_sha256,
        initrd_bytes=len(initrd),
        cmdline=cmdline,
        cmdline_sha256=cmdline_sha256,
        modules=tuple(name for name, _ in inputs.kernel.modules),
        python_version=inputs.python_version,
        donjon_version=__version__,
        guest_agent=GUEST_AGENT,
    )
    return BuiltImage(kernel=inputs.kernel.bzimage, initrd=initrd, manifest=manifest)


def _image_id(kernel_sha256: str, initrd_sha256: str, cmdline_sha256: str) -> str:
    text = f"donjon-kvm-image/v1\n{kernel_sha256}\n{initrd_sha256}\n{cmdline_sha256}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def _init_script(python: str, mmio: Sequence[str], pci: Sequence[str]) -> str:
    return f"""#!/bin/sh
# PID 1 of a donjon kvm Keep until it executes the guest agent ({GUEST_AGENT}).
# No network, no disks: one virtio-serial port to the host.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Allocations are backed when touched, as on the host: the keep reads a module into a buffer
# sized for the largest module accepted, which the default heuristic refuses in a small VM.
echo 1 > /proc/sys/vm/overcommit_memory
modules="{" ".join(mmio)}"
# A q35 machine (the fallback under TCG without a TSC frequency) has virtio over PCI.
set -- /sys/bus/pci/devices/*
if [ -e "$1" ]; then
    modules="{" ".join(pci)}"
fi
for m in $modules; do
    insmod /lib/modules/$m.ko || echo "init: cannot load kernel module $m" >&2
done
# -m puts the working directory first on sys.path: that is where donjon and wasmtime are.
cd /{GUEST_LIB_DIR}
exec {python} -S -E -s -B -m {GUEST_AGENT}
"""


# -- reading the host ------------------------------------------------------------------------


def collect_inputs(
    root: Path, *, fetch: bool, python: str | None = None, search_path: Sequence[str] = ()
) -> tuple[ImageInputs, list[Path]]:
    """Read everything the image is made of from this host.

    Args:
        root: the image cache (:func:`image_root`).
        fetch: download the kernel package with apt when it is not cached.
        python: the interpreter to put in the guest (default: this one's real binary).
        search_path: where donjon, wasmtime and cbor2 are imported from (default: ``sys.path``).

    Returns:
        The inputs, and every host file they were read from (for the freshness check).

    Raises:
        BackendUnavailableError: busybox-static or the kernel package is missing (with the
            command that installs it).
        KeepLaunchError: the trace, the compile or ``ldd`` failed.
    """
    python = python or os.path.realpath(sys.executable)
    paths = list(search_path) or [p for p in sys.path if p and os.path.isabs(p)]
    deb = _kernel_package(root, fetch=fetch)
    deb_bytes = deb.read_bytes()
    deb_sha256 = hashlib.sha256(deb_bytes).hexdigest()
    kernel = _kernel_files(root, deb_bytes, deb_sha256)
    busybox_path = _busybox()
    files, sources = _python_files(python, paths)
    version = _run(
        [python, "-S", "-E", "-c", "import sys; print(sys.version.split()[0])"],
        what="asking the interpreter for its version",
    ).strip()
    inputs = ImageInputs(
        kernel=kernel,
        kernel_package=deb.name,
        kernel_package_sha256=deb_sha256,
        busybox=busybox_path.read_bytes(),
        python=python,
        python_version=version,
        files=tuple(files),
    )
    return inputs, [deb, busybox_path, *sources]


def _kernel_package(root: Path, *, fetch: bool) -> Path:
    debs = root / "debs"
    cached = sorted(debs.glob(_DEB_PATTERN), key=_version_key) if debs.is_dir() else []
    if fetch:
        try:
            package = resolve_package()
            matching = [d for d in cached if d.name.startswith(f"{package}_")]
            return matching[-1] if matching else download_package(package, _mkdirs(debs))
        except (KernelPackageError, BackendUnavailableError):
            if not cached:
                raise
    if not cached:
        raise BackendUnavailableError(
            f"the kvm guest kernel ({KERNEL_METAPACKAGE}) is not downloaded yet: run "
            f"`{BUILD_COMMAND}` (or scripts/ensure-qemu), which fetches it with apt"
        )
    return cached[-1]


def _version_key(path: Path) -> list[tuple[int, str]]:
    # Natural order, so 6.1.0-56 sorts after 6.1.0-9.
    out: list[tuple[int, str]] = []
    for token in "".join(c if c.isalnum() else " " for c in path.name).split():
        out.append((int(token), "") if token.isdigit() else (-1, token))
    return out


def _kernel_files(root: Path, deb: bytes, deb_sha256: str) -> KernelFiles:
    """The kernel and modules, unpacked once per package into ``kernels/``."""
    directory = root / "kernels" / deb_sha256[:16]
    index = directory / "kernel.json"
    wanted = tuple(dict.fromkeys((*MICROVM_MODULES, *PCI_MODULES)))
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(index.read_text())
        if data["package_sha256"] == deb_sha256 and tuple(data["wanted"]) == wanted:
            return KernelFiles(
                version=data["release"],
                bzimage=(directory / _KERNEL).read_bytes(),
                modules=tuple(
                    (name, (directory / f"{name}.ko").read_bytes()) for name in data["modules"]
                ),
            )
    kernel = extract_kernel(deb, wanted)
    staging = Path(tempfile.mkdtemp(prefix=".kernel-", dir=_mkdirs(root / "kernels")))
    try:
        (staging / _KERNEL).write_bytes(kernel.bzimage)
        for name, ko in kernel.modules:
            (staging / f"{name}.ko").write_bytes(ko)
        record = {
            "package_sha256": deb_sha256,
            "release": kernel.version,
            "wanted": list(wanted),
            "modules": [name for name, _ in kernel.modules],
        }
        (staging / "kernel.json").write_text(json.dumps(record, indent=2) + "\n")
        _replace_dir(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return kernel


def _busybox() -> Path:
    found = shutil.which("busybox") or "/bin/busybox"
    path = Path(found)
    fix = (
        "install busybox-static (Debian: `apt-get install busybox-static`, or scripts/ensure-qemu)"
    )
    try:
        head = path.read_bytes()
    except OSError as e:
        raise BackendUnavailableError(f"busybox is not installed: {fix}") from e
    if _elf_interpreter(head) is not None:
        raise BackendUnavailableError(
            f"{path} is dynamically linked; the VM needs a static one: {fix}"
        )
    return path


def _elf_interpreter(elf: bytes) -> str | None:
    """The dynamic loader an ELF file asks for (``PT_INTERP``), or ``None`` (static)."""
    if len(elf) < 0x40 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return None
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + 0x28 > len(elf):
            break
        (kind,) = struct.unpack_from("<I", elf, base)
        if kind == _PT_INTERP:
            offset, _, _, size = struct.unpack_from("<QQQQ", elf, base + 8)
            return elf[offset : offset + size].rstrip(b"\0").decode("ascii", "replace")
    return None


def _python_files(python: str, paths: Sequence[str]) -> tuple[list[GuestFile], list[Path]]:
    trace = _trace(python, paths)
    stdlib = Path(trace["stdlib"])
    planned: dict[str, Path] = {}  # guest path -> host file
    packages: set[Path] = set()
    for name in trace["files"]:
        file = Path(name)
        if file.is_relative_to(stdlib):
            planned[str(file).lstrip("/")] = file
            continue
        entries = [Path(p) for p in paths if file.is_relative_to(p)]
        if not entries:
            raise KeepLaunchError(
                f"the guest imports {file}, which is neither in the standard library nor on "
                "the import path the image is built from"
            )
        entry = max(entries, key=lambda p: len(p.parts))
        relative = file.relative_to(entry)
        if relative.parts[0] == "donjon":
            planned[f"{GUEST_LIB_DIR}/{relative}"] = file
        else:  # a third-party distribution: all of it (wasmtime loads its .so by path)
            packages.add(entry / relative.parts[0])
    for package in sorted(packages):
        tree = sorted(package.rglob("*")) if package.is_dir() else [package]
        for file in tree:
            if file.is_file() and not _skipped(file.relative_to(package.parent)):
                planned[f"{GUEST_LIB_DIR}/{file.relative_to(package.parent)}"] = file
    planned[python.lstrip("/")] = Path(python)
    elves = [host for host in planned.values() if _is_elf(host)]
    for library in _ldd_closure(elves):
        planned.setdefault(str(library).lstrip("/"), library)
    sources = sorted(set(planned.values()))
    files = _compile_sources(python, planned, stdlib)
    strip = shutil.which("strip")
    loader = (_elf_interpreter(Path(python).read_bytes()) or "").lstrip("/")
    for guest, host in sorted(planned.items()):
        if host.suffix == ".py":
            continue
        data = host.read_bytes()
        if data[:4] == b"\x7fELF":
            # Debug symbols are most of libpython and wasmtime; the loader is left as it is.
            if strip is not None and guest != loader:
                data = _stripped(strip, host)
            files.append(GuestFile(guest, data, 0o755))
        else:
            files.append(GuestFile(guest, data, 0o755 if os.access(host, os.X_OK) else 0o644))
    return files, sources


def _skipped(relative: Path) -> bool:
    return any(
        part in _SKIPPED_NAMES or part.endswith(_SKIPPED_SUFFIXES) for part in relative.parts
    )


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _trace(python: str, paths: Sequence[str]) -> dict[str, Any]:
    bootstrap = (
        "import sys, importlib; i = sys.argv.index('--'); sys.path[:0] = sys.argv[1:i]; "
        f"del sys.argv[1 : i + 1]; importlib.import_module({GUEST_AGENT!r}).main()"
    )
    result = _run(
        [python, "-S", "-E", "-s", "-B", "-c", bootstrap, *paths, "--", "--trace"],
        what="tracing the guest agent's imports",
    )
    try:
        trace = json.loads(result)
        if not isinstance(trace["files"], list) or not isinstance(trace["stdlib"], str):
            raise TypeError("unexpected shape")
    except (ValueError, KeyError, TypeError) as e:
        raise KeepLaunchError(
            f"the guest agent's import trace is not what it should be: {e}"
        ) from e
    return dict(trace)


_COMPILE = """\
import json, py_compile, sys
for source, target, shown in json.load(sys.stdin):
    py_compile.compile(source, cfile=target, dfile=shown, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def _compile_sources(python: str, planned: Mapping[str, Path], stdlib: Path) -> list[GuestFile]:
    """Sourceless unchecked-hash ``.pyc`` files, compiled by the guest's interpreter.

    ``os.py`` stays as source (with its ``.pyc`` in ``__pycache__``): it is the landmark
    CPython looks for to find its standard library.
    """
    landmark = str(stdlib / "os.py").lstrip("/")
    tag = _run(
        [python, "-S", "-E", "-c", "import sys; print(sys.implementation.cache_tag)"],
        what="asking the interpreter for its bytecode tag",
    ).strip()
    jobs: list[tuple[str, str, str]] = []
    targets: list[str] = []
    files: list[GuestFile] = []
    with tempfile.TemporaryDirectory(prefix="donjon-pyc-") as tmp:
        for index, (guest, host) in enumerate(sorted(planned.items())):
            if host.suffix != ".py":
                continue
            if guest == landmark:
                files.append(GuestFile(guest, host.read_bytes()))
                target = str(Path(guest).parent / "__pycache__" / f"os.{tag}.pyc")
            else:
                target = guest + "c"
            jobs.append((str(host), f"{tmp}/{index}.pyc", "/" + guest))
            targets.append(target)
        _run(
            [python, "-S", "-s", "-B", "-c", _COMPILE],
            what="compiling the guest's Python files",
            stdin=json.dumps(jobs),
            env={"PYTHONHASHSEED": "0"},  # Rule 1: frozenset constants in a fixed order
        )
        for (_, compiled, _), target in zip(jobs, targets, strict=True):
            files.append(GuestFile(target, Path(compiled).read_bytes()))
    return files


def _ldd_closure(elves: Iterable[Path]) -> list[Path]:
    """Every shared library (and the loader) the ELF files need, as ``ldd`` resolves them."""
    paths = sorted(str(p) for p in elves)
    output = _run(["ldd", *paths], what="listing shared libraries with ldd", ok_codes=(0, 1))
    libraries: set[Path] = set()
    for line in output.splitlines():
        line = line.strip()
        if "not found" in line:
            raise KeepLaunchError(f"a library the guest needs is missing on this host: {line}")
        target = line.split("=>")[-1].strip().split(" (")[0].strip()
        if target.startswith("/") and not target.endswith(":"):
            libraries.add(Path(target))
    return sorted(libraries)


def _stripped(strip: str, host: Path) -> bytes:
    with tempfile.TemporaryDirectory(prefix="donjon-strip-") as tmp:
        out = Path(tmp) / "out"
        _run([strip, "--strip-unneeded", "-o", str(out), str(host)], what=f"stripping {host}")
        return out.read_bytes()


def _run(
    argv: list[str],
    *,
    what: str,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> str:
    try:
        result = subprocess.run(  # noqa: S603 - fixed tools and this interpreter
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            timeout=_TRACE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KeepLaunchError(f"building the kvm image failed while {what}: {e}") from e
    if result.returncode not in ok_codes:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KeepLaunchError(f"building the kvm image failed while {what}: {detail}")
    return result.stdout


# -- the cache -----------------------------------------------------------------------------


def build_image(
    root: Path, *, fetch: bool = False, python: str | None = None, search_path: Sequence[str] = ()
) -> GuestImage:
    """Build the image from this host's files and make it current (Rule 3 does not apply).

    Raises:
        BackendUnavailableError: busybox-static or the kernel package is missing.
        KeepLaunchError: a step failed (the message says which).
    """
    try:
        inputs, sources = collect_inputs(root, fetch=fetch, python=python, search_path=search_path)
        image = store_image(root, assemble(inputs))
        pointer = {
            "image_id": image.manifest.image_id,
            "format": [IMAGE_FORMAT, __version__],
            "inputs": _fingerprint(sources),
        }
        _write_atomic(root / _pointer_name(inputs.python), json.dumps(pointer, indent=1).encode())
        _prune(root, keep=image.manifest.image_id)
    except OSError as e:  # an unreadable input or a full disk, not a bug
        raise KeepLaunchError(f"building the kvm image in {root} failed: {e}") from e
    return image


def find_image(root: Path, *, python: str | None = None) -> GuestImage | None:
    """The current image for this interpreter and donjon, if it is there and up to date."""
    python = python or os.path.realpath(sys.executable)
    try:
        pointer = json.loads((root / _pointer_name(python)).read_text())
        image_id, inputs = pointer["image_id"], pointer["inputs"]
        if (
            not isinstance(image_id, str)
            or pointer["format"] != [IMAGE_FORMAT, __version__]
            or _fingerprint(Path(entry[0]) for entry in inputs) != inputs
        ):
            return None
        directory = root / "images" / image_id
        manifest = ImageManifest.from_json((directory / _MANIFEST).read_bytes())
    except (OSError, ValueError, KeyError, TypeError, IndexError, KeepLaunchError):
        return None
    image = GuestImage(directory, manifest)
    try:
        if (
            manifest.image_id != image_id
            or image.kernel.stat().st_size != manifest.kernel_bytes
            or image.initrd.stat().st_size != manifest.initrd_bytes
        ):
            return None
    except OSError:
        return None
    return image


def ensure_image(
    root: Path, *, fetch: bool = False, on_build: Callable[[], None] | None = None
) -> GuestImage:
    """The current image, built first when it is missing or out of date (Rule 3).

    Args:
        root: the image cache.
        fetch: download the kernel package if it is not cached (``donjon run`` does not).
        on_build: called before a build starts (the CLI says so on stderr).
    """
    image = find_image(root)
    if image is not None:
        return image
    if on_build is not None:
        on_build()
    return build_image(root, fetch=fetch)


def store_image(root: Path, built: BuiltImage) -> GuestImage:
    """Write *built* into ``images/<image id>`` (atomically; an existing one is kept)."""
    images = _mkdirs(root / "images")
    directory = images / built.manifest.image_id
    if not (directory / _MANIFEST).is_file():
        staging = Path(tempfile.mkdtemp(prefix=".image-", dir=images))
        try:
            (staging / _KERNEL).write_bytes(built.kernel)
            (staging / _INITRD).write_bytes(built.initrd)
            (staging / _MANIFEST).write_bytes(built.manifest.to_json())
            _replace_dir(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    os.utime(directory)  # the newest images are the ones pruning keeps
    return GuestImage(directory, built.manifest)


def _pointer_name(python: str) -> str:
    package = Path(__file__).resolve().parents[2]  # donjon's own package directory
    key = hashlib.sha256(f"{python}\0{package}".encode()).hexdigest()[:16]
    return f"current-{key}.json"


def _fingerprint(sources: Iterable[Path]) -> list[list[Any]]:
    """Each input's path, size and modification time; this module's own files count too."""
    here = Path(__file__).resolve().parent
    builder = [here / name for name in ("image.py", "cpio.py", "kernel.py", "qemu.py")]
    out: list[list[Any]] = []
    for path in sorted({*map(Path, sources), *builder}):
        info = path.stat()
        out.append([str(path), info.st_size, info.st_mtime_ns])
    return out


def _prune(root: Path, *, keep: str) -> None:
    images = root / "images"
    in_use = {keep}
    for pointer in root.glob("current-*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            in_use.add(json.loads(pointer.read_text())["image_id"])
    candidates = sorted(
        (d for d in images.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    for old in candidates[KEPT_IMAGES:]:
        if old.name not in in_use:
            shutil.rmtree(old, ignore_errors=True)


def _mkdirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _replace_dir(staging: Path, final: Path) -> None:
    try:
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():  # not a concurrent builder that got there first
            raise


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=_mkdirs(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the command -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m donjon.backends.kvm.image build|show``."""
    parser = argparse.ArgumentParser(
        prog="python -m donjon.backends.kvm.image",
        description="Build or show the kvm Keep's guest image (kernel + initramfs + manifest).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the image (downloads the kernel once)")
    build.add_argument("--no-fetch", action="store_true", help="do not download the kernel package")
    build.add_argument(
        "--if-needed", action="store_true", help="do nothing when the image is up to date"
    )
    commands.add_parser("show", help="print the current image's manifest")
    args = parser.parse_args(argv)
    root = image_root(os.environ)
    try:
        if args.command == "show":
            image = find_image(root)
            if image is None:
                print(f"no up-to-date kvm image in {root}; build one: {BUILD_COMMAND}")
                return 1
            sys.stdout.write(image.manifest.to_json().decode())
            return 0
        started = time.perf_counter()
        image = find_image(root) if args.if_needed else None
        built = image is None
        if image is None:
            image = build_image(root, fetch=not args.no_fetch)
    except Error as e:
        print(f"donjon: error: {e.diagnostics()}", file=sys.stderr)
        return e.exit_code
    manifest = image.manifest
    print(
        f"kvm image {manifest.image_id[:16]} "
        f"({'built' if built else 'up to date'} in {time.perf_counter() - started:.1f} s)\n"
        f"  kernel  {image.kernel} ({manifest.kernel_release}, {manifest.kernel_bytes} bytes)\n"
        f"  initrd  {image.initrd} ({manifest.initrd_bytes} bytes, "
        f"sha256 {manifest.initrd_sha256})\n"
        f"  cmdline {manifest.cmdline}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
