"""Reading a Wasm module and recognising what it is, before wasmtime sees it. No wasmtime here.

A module reaches the keep from the untrusted host, so its size is bounded and its header is
checked first: a text file, a component or a truncated download gets a clear one-line error,
not a parser message from deep inside wasmtime.

Example:
    >>> check_module_header(b"\\0asm\\x01\\0\\0\\0", "ok.wasm")
    >>> try:
    ...     check_module_header(b"hello", "notes.txt")
    ... except NotWasmError as e:
    ...     print(e.exit_code)
    126
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from donjon.keep.errors import ModuleFileError, NotWasmError
from donjon.keep.plan import MIB, format_mib

__all__ = ["MAX_MODULE_BYTES", "check_module_header", "module_digest", "read_module_file"]

MAX_MODULE_BYTES = 512 * MIB
"""Largest module the keep accepts (bytes). The largest real workloads seen are ~100 MB
(TOOLING.md P3) and compile to 2.4x that; the bound stops a hostile host from making the keep
read an unbounded file into memory."""

_MAGIC = b"\0asm"
# The 4 bytes after the magic: version 1 for a core module (Wasm core spec §5.5.16); a
# component has a different version and a layer field of 1 (component model Binary.md).
_CORE_VERSION = b"\x01\x00\x00\x00"
_COMPONENT_LAYER = b"\x01\x00"


def check_module_header(data: bytes, name: str) -> None:
    """Refuse anything that is not a WebAssembly *core module* by its first 8 bytes.

    Args:
        data: the module's bytes (at least its first 8).
        name: the module's name, for the message.

    Raises:
        NotWasmError: not Wasm at all, a Wasm component, or an unknown binary version.
    """
    if len(data) < 8 or data[:4] != _MAGIC:
        what = "it is empty" if not data else "it does not start with the Wasm magic bytes \\0asm"
        if data[:4] == _MAGIC:
            what = f"it is only {len(data)} bytes long (truncated?)"
        raise NotWasmError(f"{name} is not a WebAssembly module: {what}")
    if data[6:8] == _COMPONENT_LAYER:
        raise NotWasmError(
            f"{name} is a WebAssembly component (WASI preview 2); donjon runs WASI preview 1 "
            "command modules: build for wasm32-wasip1 (or wasm32-wasi)"
        )
    if data[4:8] != _CORE_VERSION:
        raise NotWasmError(
            f"{name} is a WebAssembly binary of unknown version {data[4:8].hex()}; "
            "donjon runs version 1 core modules"
        )


def module_digest(data: bytes) -> str:
    """The module's identity: the SHA-256 of its bytes, lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def read_module_file(path: Path, *, max_bytes: int = MAX_MODULE_BYTES) -> bytes:
    """Read a module file, bounded, and check its header.

    Args:
        path: the ``.wasm`` file.
        max_bytes: refuse larger files.

    Returns:
        The module's bytes.

    Raises:
        ModuleFileError: missing, a directory, unreadable, or larger than ``max_bytes``.
        NotWasmError: not a WebAssembly core module.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ModuleFileError(_open_problem(path, e)) from e
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ModuleFileError(f"{path} is a directory; give the path of a .wasm file")
        if info.st_size > max_bytes:
            raise ModuleFileError(
                f"{path} is {format_mib(info.st_size)}; the largest module accepted is "
                f"{format_mib(max_bytes)}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ModuleFileError(f"{path} cannot be read: {e.strerror or e}") from e
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ModuleFileError(f"{path} grew past {format_mib(max_bytes)} while being read")
    check_module_header(data, path.name)
    return data


def _open_problem(path: Path, e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return f"{path} does not exist; check the module path"
    if e.errno == errno.EACCES:
        return f"{path} cannot be read: permission denied"
    return f"{path} cannot be opened: {e.strerror or e}"
