"""Test guests written in WAT: a "script" that makes raw WASI calls and reports each result.

Each step is a WAT expression of type i32; the guest evaluates the steps in order and writes
each value to its fd 1 as a little-endian u32, so a test reads back exactly what WASI answered.
Fixed memory: results at 0..16, scratch at 64..1024, caller data from 1024.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import wasmtime

_IMPORTS = {
    "fd_write": "(param i32 i32 i32 i32) (result i32)",
    "fd_read": "(param i32 i32 i32 i32) (result i32)",
    "fd_close": "(param i32) (result i32)",
    "fd_fdstat_get": "(param i32 i32) (result i32)",
    "fd_fdstat_set_flags": "(param i32 i32) (result i32)",
    "fd_filestat_get": "(param i32 i32) (result i32)",
    "fd_prestat_get": "(param i32 i32) (result i32)",
    "fd_renumber": "(param i32 i32) (result i32)",
    "fd_seek": "(param i32 i64 i32 i32) (result i32)",
    "path_open": "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)",
    "poll_oneoff": "(param i32 i32 i32 i32) (result i32)",
    "sock_accept": "(param i32 i32 i32) (result i32)",
    "sock_recv": "(param i32 i32 i32 i32 i32 i32) (result i32)",
    "sock_send": "(param i32 i32 i32 i32 i32) (result i32)",
    "sock_shutdown": "(param i32 i32) (result i32)",
}

RESULT = 0  # the u32 being reported
OUT_IOV = 8  # iovec {0, 4} for the report
SCRATCH = 64  # 64..1024: a call's outputs (nread, new fd, fdstat, events, ...)
DATA = 1024  # caller-supplied bytes from here


def script(steps: Sequence[str], data: Mapping[int, bytes] = {}, *, report_fd: int = 1) -> bytes:
    """A guest module that runs ``steps`` and reports each i32 result on ``report_fd``."""
    lines = ["(module"]
    for name, sig in _IMPORTS.items():
        lines.append(f'  (import "wasi_snapshot_preview1" "{name}" (func ${name} {sig}))')
    lines.append('  (memory (export "memory") 2)')
    lines.append(f"  (data (i32.const {OUT_IOV}) {_wat_bytes(struct.pack('<II', RESULT, 4))})")
    for offset, blob in data.items():
        lines.append(f"  (data (i32.const {offset}) {_wat_bytes(blob)})")
    lines.append(
        "  (func $emit (param $v i32)\n"
        f"    (i32.store (i32.const {RESULT}) (local.get $v))\n"
        f"    (drop (call $fd_write (i32.const {report_fd}) (i32.const {OUT_IOV}) (i32.const 1)"
        " (i32.const 16))))"
    )
    lines.append('  (func (export "_start")')
    for step in steps:
        lines.append(f"    (call $emit {step})")
    lines.append("  ))")
    return bytes(wasmtime.wat2wasm("\n".join(lines)))


def results(stdout: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(stdout) // 4}I", stdout))


def load_u32(addr: int) -> str:
    return f"(i32.load (i32.const {addr}))"


def load_u8(addr: int) -> str:
    return f"(i32.load8_u (i32.const {addr}))"


def then_load(call: str, addr: int) -> str:
    """Make ``call``, drop its errno, report the u32 it wrote at ``addr``."""
    return f"(block (result i32) (drop {call}) {load_u32(addr)})"


def iovec(buf: int, length: int) -> bytes:
    return struct.pack("<II", buf, length)


def fd_sub(userdata: int, fd: int, *, write: bool = False) -> bytes:
    return struct.pack("<QB7xI28x", userdata, 2 if write else 1, fd)


def clock_sub(userdata: int, timeout_ns: int, clock_id: int = 1) -> bytes:
    return struct.pack("<QB7xI4xQQH6x", userdata, 0, clock_id, timeout_ns, 0, 0)


def event(stdout_events: bytes, index: int) -> tuple[int, int, int, int]:
    """(userdata, error, type, flags) of event ``index`` in a block of events."""
    userdata, error, kind, _nbytes, flags = struct.unpack_from(
        "<QHB5xQH6x", stdout_events, index * 32
    )
    return userdata, error, kind, flags


def _wat_bytes(blob: bytes) -> str:
    return '"' + "".join(f"\\{b:02x}" for b in blob) + '"'
