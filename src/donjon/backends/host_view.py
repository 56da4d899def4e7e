"""A read-only view of the machine that probes and providers look through.

Every path is resolved under ``root`` so tests point a view at a fake tree (``tmp_path`` with a
``proc/cpuinfo``, a ``dev/kvm`` file, a ``sys/module/...`` directory) and production uses ``/``.
Non-file facts (the machine architecture, the executable search path, Python packages) are plain
fields, so a test states them instead of patching the interpreter.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from donjon.backends._common import TooLargeError, read_bounded

MAX_PROBE_READ_BYTES = 1024 * 1024
"""Most bytes a probe reads from one file (bytes). /proc/cpuinfo on a 256-thread host is about
400 KiB; probes parse only its first block, so longer files are truncated, never refused."""

DEFAULT_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Where executables are looked for when the caller gives no ``PATH``."""


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """Whether a Python distribution imports here, and its version.

    Attributes:
        name: the import name.
        version: the installed version, or None when it is not installed.
        error: why importing failed (a missing native library, ...), or None when it imported.
    """

    name: str
    version: str | None
    error: str | None


def probe_module(name: str) -> ModuleInfo:
    """Import *name* for real (a wheel without its native library fails here, not later)."""
    try:
        version: str | None = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:
        importlib.import_module(name)
    except Exception as e:  # any import failure (ImportError, OSError from ctypes) is the answer
        return ModuleInfo(name, version, f"{type(e).__name__}: {e}")
    return ModuleInfo(name, version, None)


@dataclass(frozen=True, slots=True)
class HostView:
    """Where probes look, and how.

    Attributes:
        root: the file-system root the absolute probe paths are resolved under.
        machine: the architecture as ``uname -m`` reports it (``x86_64``, ``aarch64``).
        search_path: a ``PATH``-style list of directories (under *root*) to find executables in.
        module_probe: how to ask whether a Python package imports (tests pass a stand-in).
    """

    root: Path = Path("/")
    machine: str = field(default_factory=platform.machine)
    search_path: str = DEFAULT_SEARCH_PATH
    module_probe: Callable[[str], ModuleInfo] = probe_module

    def path(self, absolute: str) -> Path:
        """The real path of *absolute* (e.g. ``"/dev/kvm"``) under this view's root."""
        return self.root / absolute.lstrip("/")

    def exists(self, absolute: str) -> bool:
        """Whether *absolute* exists (a device node, file, directory or socket)."""
        return os.path.lexists(self.path(absolute))

    def is_dir(self, absolute: str) -> bool:
        """Whether *absolute* is a directory."""
        return self.path(absolute).is_dir()

    def read_text(self, absolute: str, *, max_bytes: int = MAX_PROBE_READ_BYTES) -> str | None:
        """The text of a file, truncated at *max_bytes*; None when it is absent or unreadable."""
        try:
            data = read_bounded(self.path(absolute), max_bytes, truncate=True)
        except (OSError, TooLargeError):
            return None
        return data.decode("utf-8", errors="replace")

    def open_error(self, absolute: str) -> str | None:
        """Try to open *absolute* read-write; None if that works, else the OS's reason.

        Opening a KVM, SEV or SGX device node has no side effect; it is the only honest
        "can this user use it" test (permissions, udev rules, LSMs all apply).
        """
        try:
            fd = os.open(self.path(absolute), os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            return e.strerror or str(e)
        os.close(fd)
        return None

    def which(self, command: str) -> str | None:
        """The absolute path (as seen from *root*) of an executable *command*, or None."""
        for directory in self.search_path.split(os.pathsep):
            if not directory.startswith("/"):
                continue  # a relative PATH entry depends on the cwd: never trust it
            candidate = f"{directory.rstrip('/')}/{command}"
            real = self.path(candidate)
            if real.is_file() and os.access(real, os.X_OK):
                return candidate
        return None
