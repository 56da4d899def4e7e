"""The two generated Wasm modules that route a workload's fd calls (TOOLING.md §9, idea 2).

**A** (the trampoline) is instantiated before the workload. For every WASI preview 1 function
that takes a file descriptor it exports a function of the same type that makes one
``call_indirect`` through a shared table; the workload's imports of those names are linked to
A's exports. **B** (the dispatcher) is instantiated after the workload, with the workload's
linear memory imported and re-exported as ``"memory"``, so that wasmtime's own WASI functions,
called from B's code, read and write the workload's memory. B's active element segment fills
the shared table with its functions when it is instantiated.

B owns the workload's fd numbering in a table of its own memory (``fdmap``): one i32 per guest
fd, ``v > 0`` is wasmtime's fd ``v - 1``, ``v < 0`` is served by Python (a socket or ``null``),
``0`` is closed. Calls on wasmtime's fds are rewritten and forwarded in Wasm, so files and stdio
never enter Python; calls on Python's fds go to the ``donjon_sock`` imports (raw host
callbacks), which get the guest fd and, last, the size of linear memory in pages.

Rule 1: pure text generation; :func:`compile_modules` is the only function that touches
wasmtime, and runs once per engine.
Rule 2: a guest fd that is not open is ``BADF`` in every function, as in wasmtime; ``poll_oneoff``
fails as a whole with ``BADF`` when one of its fds is not open (wasmtime's behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from donjon.keep.sockets.abi import Errno

__all__ = [
    "FD_FUNCTIONS",
    "HIGH_WATER_OFFSET",
    "MAX_GUEST_FDS",
    "MAX_POLL_SUBSCRIPTIONS",
    "PYTHON_IMPORTS",
    "PYTHON_MODULE",
    "TABLE_MODULE",
    "TABLE_NAME",
    "DispatchModules",
    "FdFunction",
    "compile_modules",
    "dispatcher_wat",
    "trampoline_wat",
]

MAX_GUEST_FDS = 16384
"""Guest fd numbers 0..16383: one 64 KiB page of the map (wasmtime's own table is larger)."""
MAX_POLL_SUBSCRIPTIONS = 16384
"""Subscriptions in one ``poll_oneoff`` over wasmtime fds (the save area's size; EINVAL above)."""
HIGH_WATER_OFFSET = MAX_GUEST_FDS * 4
"""Byte offset in ``fdmap`` of the high-water mark: one more than the highest fd ever used."""
_SAVE_OFFSET = 2 * 65536  # the poll save area: page 2 of fdmap
_FDMAP_PAGES = 3

PYTHON_MODULE = "donjon_sock"
"""Import module of the raw Python callbacks."""
TABLE_MODULE = "donjon"
TABLE_NAME = "fwd"


@dataclass(frozen=True, slots=True)
class FdFunction:
    """One WASI preview 1 function that takes file descriptors.

    Attributes:
        name: the import name in ``wasi_snapshot_preview1``.
        params: core Wasm parameter types; every function returns an i32 errno.
        fds: positions of the parameters that are fds (translated by B).
        python: a Python-served fd is handed to the Python import of the same name.
        errno: otherwise, what a Python-served fd answers (e.g. ``SPIPE`` for ``fd_seek``).
        special: B's body is hand-written (``close``, ``renumber``, ``prestat``, ``path_open``,
            ``poll``).
    """

    name: str
    params: tuple[str, ...]
    fds: tuple[int, ...] = (0,)
    python: bool = False
    errno: int = Errno.INVAL
    special: str | None = None


_I, _L = "i32", "i64"

# witx signatures of wasi_snapshot_preview1, lowered to core Wasm (wasi-libc's wasi/api.h).
FD_FUNCTIONS: tuple[FdFunction, ...] = (
    FdFunction("fd_advise", (_I, _L, _L, _I), errno=Errno.SPIPE),
    FdFunction("fd_allocate", (_I, _L, _L), errno=Errno.SPIPE),
    FdFunction("fd_close", (_I,), special="close"),
    FdFunction("fd_datasync", (_I,)),
    FdFunction("fd_fdstat_get", (_I, _I), python=True),
    FdFunction("fd_fdstat_set_flags", (_I, _I), python=True),
    FdFunction("fd_fdstat_set_rights", (_I, _L, _L), errno=Errno.NOTSUP),
    FdFunction("fd_filestat_get", (_I, _I), python=True),
    FdFunction("fd_filestat_set_size", (_I, _L)),
    FdFunction("fd_filestat_set_times", (_I, _L, _L, _I)),
    FdFunction("fd_pread", (_I, _I, _I, _L, _I), errno=Errno.SPIPE),
    FdFunction("fd_prestat_get", (_I, _I), special="prestat"),
    FdFunction("fd_prestat_dir_name", (_I, _I, _I), errno=Errno.NOTDIR),
    FdFunction("fd_pwrite", (_I, _I, _I, _L, _I), errno=Errno.SPIPE),
    FdFunction("fd_read", (_I, _I, _I, _I), python=True),
    FdFunction("fd_readdir", (_I, _I, _I, _L, _I), errno=Errno.NOTDIR),
    FdFunction("fd_renumber", (_I, _I), fds=(0, 1), special="renumber"),
    FdFunction("fd_seek", (_I, _L, _I, _I), errno=Errno.SPIPE),
    FdFunction("fd_sync", (_I,)),
    FdFunction("fd_tell", (_I, _I), errno=Errno.SPIPE),
    FdFunction("fd_write", (_I, _I, _I, _I), python=True),
    FdFunction("path_create_directory", (_I, _I, _I), errno=Errno.NOTDIR),
    FdFunction("path_filestat_get", (_I, _I, _I, _I, _I), errno=Errno.NOTDIR),
    FdFunction("path_filestat_set_times", (_I, _I, _I, _I, _L, _L, _I), errno=Errno.NOTDIR),
    FdFunction("path_link", (_I, _I, _I, _I, _I, _I, _I), fds=(0, 4), errno=Errno.NOTDIR),
    FdFunction("path_open", (_I, _I, _I, _I, _I, _L, _L, _I, _I), special="path_open"),
    FdFunction("path_readlink", (_I, _I, _I, _I, _I, _I), errno=Errno.NOTDIR),
    FdFunction("path_remove_directory", (_I, _I, _I), errno=Errno.NOTDIR),
    FdFunction("path_rename", (_I, _I, _I, _I, _I, _I), fds=(0, 3), errno=Errno.NOTDIR),
    FdFunction("path_symlink", (_I, _I, _I, _I, _I), fds=(2,), errno=Errno.NOTDIR),
    FdFunction("path_unlink_file", (_I, _I, _I), errno=Errno.NOTDIR),
    FdFunction("poll_oneoff", (_I, _I, _I, _I), fds=(), special="poll"),
    FdFunction("sock_accept", (_I, _I, _I), python=True),
    FdFunction("sock_recv", (_I, _I, _I, _I, _I, _I), python=True),
    FdFunction("sock_send", (_I, _I, _I, _I, _I), python=True),
    FdFunction("sock_shutdown", (_I, _I), python=True),
)

# The Python imports: the WASI-named ones take the WASI parameters; all take `pages` last.
PYTHON_IMPORTS: dict[str, tuple[str, ...]] = {
    **{f.name: (*f.params, _I) for f in FD_FUNCTIONS if f.python},
    "close": (_I, _I),  # (fd, pages)
    "move": (_I, _I, _I),  # (from, to, pages): fd_renumber moved a Python fd
    "poll": (_I, _I, _I, _I, _L, _I),  # (in, out, nsubs, nevents_ptr, monotonic_now_ns, pages)
}

_WASI = "wasi_snapshot_preview1"


def _params(types: tuple[str, ...]) -> str:
    return " ".join(f"(param $p{i} {t})" for i, t in enumerate(types))


def _sig(types: tuple[str, ...]) -> str:
    params = " ".join(types)
    return f"(param {params}) (result i32)" if params else "(result i32)"


def trampoline_wat() -> str:
    """Module A: one exported forwarder per :data:`FD_FUNCTIONS` entry, through the table."""
    lines = [
        "(module",
        f'  (import "{TABLE_MODULE}" "{TABLE_NAME}" (table $fwd {len(FD_FUNCTIONS)} funcref))',
    ]
    for index, fn in enumerate(FD_FUNCTIONS):
        lines.append(f"  (type $t{index} (func {_sig(fn.params)}))")
    for index, fn in enumerate(FD_FUNCTIONS):
        args = " ".join(f"(local.get $p{i})" for i in range(len(fn.params)))
        lines.append(
            f'  (func (export "{fn.name}") {_params(fn.params)} (result i32)\n'
            f"    (call_indirect $fwd (type $t{index}) {args} (i32.const {index})))"
        )
    lines.append(")")
    return "\n".join(lines)


def _inner(param: int) -> str:
    return f"(i32.sub (local.get $e{param}) (i32.const 1))"


def _forward_body(fn: FdFunction) -> str:
    """The generic body: translate each fd; forward, refuse, or hand to Python."""
    out = []
    for pos in fn.fds:
        out.append(f"    (local.set $e{pos} (call $lookup (local.get $p{pos})))")
    for pos in fn.fds:
        out.append(
            f"    (if (i32.eqz (local.get $e{pos})) (then (return (i32.const {Errno.BADF}))))"
        )
    negative = " ".join(f"(i32.lt_s (local.get $e{pos}) (i32.const 0))" for pos in fn.fds)
    if len(fn.fds) > 1:
        negative = f"(i32.or {negative})"
    if fn.python:
        args = " ".join(f"(local.get $p{i})" for i in range(len(fn.params)))
        python = f"(call $py_{fn.name} {args} (memory.size $mem))"
    else:
        python = f"(i32.const {fn.errno})"
    out.append(f"    (if {negative} (then (return {python})))")
    args = " ".join(
        _inner(i) if i in fn.fds else f"(local.get $p{i})" for i in range(len(fn.params))
    )
    out.append(f"    (call $orig_{fn.name} {args})")
    return "\n".join(out)


_SPECIAL_BODIES = {
    "close": f"""
    (local.set $e0 (call $lookup (local.get $p0)))
    (if (i32.eqz (local.get $e0)) (then (return (i32.const {Errno.BADF}))))
    (if (i32.lt_s (local.get $e0) (i32.const 0))
      (then
        (local.set $r (call $py_close (local.get $p0) (memory.size $mem)))
        (if (i32.eqz (local.get $r)) (then (call $set (local.get $p0) (i32.const 0))))
        (return (local.get $r))))
    ;; another guest fd still uses this wasmtime fd (two entries of one stdio kind)
    (if (call $shared (local.get $p0) (local.get $e0))
      (then (call $set (local.get $p0) (i32.const 0)) (return (i32.const 0))))
    (local.set $r (call $orig_fd_close {_inner(0)}))
    (if (i32.eqz (local.get $r)) (then (call $set (local.get $p0) (i32.const 0))))
    (local.get $r)""",
    "renumber": f"""
    (local.set $e0 (call $lookup (local.get $p0)))
    (local.set $e1 (call $lookup (local.get $p1)))
    (if (i32.or (i32.eqz (local.get $e0)) (i32.eqz (local.get $e1)))
      (then (return (i32.const {Errno.BADF}))))
    (if (i32.eq (local.get $p0) (local.get $p1)) (then (return (i32.const 0))))
    (if (i32.gt_s (local.get $e1) (i32.const 0))
      (then
        (if (i32.eqz (call $shared (local.get $p1) (local.get $e1)))
          (then (drop (call $orig_fd_close {_inner(1)}))))))
    (if (i32.lt_s (local.get $e1) (i32.const 0))
      (then (drop (call $py_close (local.get $p1) (memory.size $mem)))))
    (if (i32.lt_s (local.get $e0) (i32.const 0))
      (then (drop (call $py_move (local.get $p0) (local.get $p1) (memory.size $mem)))))
    (call $set (local.get $p1) (local.get $e0))
    (call $set (local.get $p0) (i32.const 0))
    (i32.const 0)""",
    # Sockets, null and stdio at fd >= 3 answer "not a directory" (tag 1): wasi-libc's preopen
    # scan stops at the first BADF and exits on any other error, and skips such tags.
    "prestat": f"""
    (local.set $e0 (call $lookup (local.get $p0)))
    (if (i32.gt_s (local.get $e0) (i32.const 3))
      (then (return (call $orig_fd_prestat_get {_inner(0)} (local.get $p1)))))
    (if (i32.eqz (local.get $e0)) (then (return (i32.const {Errno.BADF}))))
    (if (i32.eqz (call $inbounds (local.get $p1) (i64.const 8)))
      (then (return (i32.const {Errno.FAULT}))))
    (i32.store8 $mem (local.get $p1) (i32.const 1))
    (i32.store $mem offset=4 (local.get $p1) (i32.const 0))
    (i32.const 0)""",
    # wasmtime opens the file and writes its own fd; B numbers it (lowest free guest fd).
    "path_open": f"""
    (local.set $e0 (call $lookup (local.get $p0)))
    (if (i32.eqz (local.get $e0)) (then (return (i32.const {Errno.BADF}))))
    (if (i32.lt_s (local.get $e0) (i32.const 0)) (then (return (i32.const {Errno.NOTDIR}))))
    (local.set $r (call $orig_path_open {_inner(0)} (local.get $p1) (local.get $p2)
      (local.get $p3) (local.get $p4) (local.get $p5) (local.get $p6) (local.get $p7)
      (local.get $p8)))
    (if (local.get $r) (then (return (local.get $r))))
    (local.set $e1 (i32.load $mem (local.get $p8)))
    (local.set $g (call $alloc))
    (if (i32.lt_s (local.get $g) (i32.const 0))
      (then
        (drop (call $orig_fd_close (local.get $e1)))
        (return (i32.const {Errno.NFILE}))))
    (call $set (local.get $g) (i32.add (local.get $e1) (i32.const 1)))
    (i32.store $mem (local.get $p8) (local.get $g))
    (i32.const 0)""",
    # Only wasmtime fds: rewrite the subscriptions in place to wasmtime's fds, call wasmtime's
    # poll_oneoff (exact semantics for stdin, files, clocks), restore. Any Python fd: Python.
    "poll": f"""
    (if (i32.eqz (local.get $p2)) (then (return (call $orig_poll_oneoff (local.get $p0)
      (local.get $p1) (local.get $p2) (local.get $p3)))))
    (if (i32.eqz (call $inbounds (local.get $p0)
          (i64.mul (i64.extend_i32_u (local.get $p2)) (i64.const 48))))
      (then (return (call $orig_poll_oneoff (local.get $p0) (local.get $p1) (local.get $p2)
        (local.get $p3)))))
    (block $done (loop $scan
      (br_if $done (i32.ge_u (local.get $i) (local.get $p2)))
      (local.set $p (i32.add (local.get $p0) (i32.mul (local.get $i) (i32.const 48))))
      (local.set $tag (i32.load8_u $mem offset=8 (local.get $p)))
      (if (i32.or (i32.eq (local.get $tag) (i32.const 1)) (i32.eq (local.get $tag) (i32.const 2)))
        (then
          (local.set $e0 (call $lookup (i32.load $mem offset=16 (local.get $p))))
          (if (i32.eqz (local.get $e0)) (then (return (i32.const {Errno.BADF}))))
          (if (i32.lt_s (local.get $e0) (i32.const 0)) (then (local.set $py (i32.const 1))))
          (local.set $nfd (i32.add (local.get $nfd) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $scan)))
    (if (local.get $py)
      (then (return (call $py_poll (local.get $p0) (local.get $p1) (local.get $p2)
        (local.get $p3) (call $monotonic (local.get $p1)) (memory.size $mem)))))
    (if (i32.eqz (local.get $nfd)) (then (return (call $orig_poll_oneoff (local.get $p0)
      (local.get $p1) (local.get $p2) (local.get $p3)))))
    (if (i32.gt_u (local.get $nfd) (i32.const {MAX_POLL_SUBSCRIPTIONS}))
      (then (return (i32.const {Errno.INVAL}))))
    (call $rewrite (local.get $p0) (local.get $p2) (i32.const 1))
    (local.set $r (call $orig_poll_oneoff (local.get $p0) (local.get $p1) (local.get $p2)
      (local.get $p3)))
    (call $rewrite (local.get $p0) (local.get $p2) (i32.const 0))
    (local.get $r)""",
}

_HELPERS = f"""
  (func $lookup (param $fd i32) (result i32)
    (if (i32.ge_u (local.get $fd) (i32.const {MAX_GUEST_FDS})) (then (return (i32.const 0))))
    (i32.load $map (i32.shl (local.get $fd) (i32.const 2))))
  (func $set (param $fd i32) (param $v i32)
    (i32.store $map (i32.shl (local.get $fd) (i32.const 2)) (local.get $v)))
  (func $high_water (result i32) (i32.load $map (i32.const {HIGH_WATER_OFFSET})))
  (func $alloc (result i32)
    (local $i i32)
    (block $full (loop $scan
      (br_if $full (i32.ge_u (local.get $i) (i32.const {MAX_GUEST_FDS})))
      (if (i32.eqz (call $lookup (local.get $i)))
        (then
          (if (i32.ge_u (local.get $i) (call $high_water))
            (then (i32.store $map (i32.const {HIGH_WATER_OFFSET})
              (i32.add (local.get $i) (i32.const 1)))))
          (return (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $scan)))
    (i32.const -1))
  (func $shared (param $fd i32) (param $v i32) (result i32)
    (local $i i32) (local $n i32)
    (local.set $n (call $high_water))
    (block $no (loop $scan
      (br_if $no (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.and (i32.ne (local.get $i) (local.get $fd))
                   (i32.eq (call $lookup (local.get $i)) (local.get $v)))
        (then (return (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $scan)))
    (i32.const 0))
  (func $inbounds (param $ptr i32) (param $len i64) (result i32)
    (i64.le_u (i64.add (i64.extend_i32_u (local.get $ptr)) (local.get $len))
              (i64.shl (i64.extend_i32_u (memory.size $mem)) (i64.const 16))))
  ;; wasmtime's monotonic clock has its own epoch; Python converts absolute deadlines with it.
  (func $monotonic (param $scratch i32) (result i64)
    (if (i32.eqz (call $inbounds (local.get $scratch) (i64.const 8))) (then (return (i64.const 0))))
    (drop (call $orig_clock_time_get (i32.const 1) (i64.const 0) (local.get $scratch)))
    (i64.load $mem (local.get $scratch)))
  ;; save=1: guest fds -> wasmtime fds, saving the guest fds; save=0: put them back.
  (func $rewrite (param $in i32) (param $n i32) (param $save i32)
    (local $i i32) (local $j i32) (local $p i32) (local $tag i32)
    (block $done (loop $each
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $p (i32.add (local.get $in) (i32.mul (local.get $i) (i32.const 48))))
      (local.set $tag (i32.load8_u $mem offset=8 (local.get $p)))
      (if (i32.or (i32.eq (local.get $tag) (i32.const 1)) (i32.eq (local.get $tag) (i32.const 2)))
        (then
          (if (local.get $save)
            (then
              (i32.store $map offset={_SAVE_OFFSET} (i32.shl (local.get $j) (i32.const 2))
                (i32.load $mem offset=16 (local.get $p)))
              (i32.store $mem offset=16 (local.get $p)
                (i32.sub (call $lookup (i32.load $mem offset=16 (local.get $p))) (i32.const 1))))
            (else
              (i32.store $mem offset=16 (local.get $p)
                (i32.load $map offset={_SAVE_OFFSET} (i32.shl (local.get $j) (i32.const 2))))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $each))))
"""


def dispatcher_wat() -> str:
    """Module B: the fd map, the forwarding functions, and the table's element segment."""
    lines = [
        "(module",
        '  (import "env" "memory" (memory $mem 0))',
        f'  (import "{TABLE_MODULE}" "{TABLE_NAME}" (table $fwd {len(FD_FUNCTIONS)} funcref))',
    ]
    for fn in FD_FUNCTIONS:
        lines.append(f'  (import "{_WASI}" "{fn.name}" (func $orig_{fn.name} {_sig(fn.params)}))')
    lines.append(
        f'  (import "{_WASI}" "clock_time_get" (func $orig_clock_time_get {_sig((_I, _L, _I))}))'
    )
    for name, types in PYTHON_IMPORTS.items():
        lines.append(f'  (import "{PYTHON_MODULE}" "{name}" (func $py_{name} {_sig(types)}))')
    lines.append(f'  (memory $map (export "fdmap") {_FDMAP_PAGES})')
    lines.append('  (export "memory" (memory $mem))')
    lines.append(_HELPERS)
    for fn in FD_FUNCTIONS:
        locals_ = ["(local $e0 i32)", "(local $e1 i32)"] + [
            f"(local $e{pos} i32)" for pos in fn.fds if pos > 1
        ]
        if fn.special is not None:
            locals_ += [
                "(local $r i32)",
                "(local $g i32)",
                "(local $i i32)",
                "(local $p i32)",
                "(local $tag i32)",
                "(local $py i32)",
                "(local $nfd i32)",
            ]
            body = _SPECIAL_BODIES[fn.special]
        else:
            body = _forward_body(fn)
        lines.append(
            f"  (func $f_{fn.name} {_params(fn.params)} (result i32)\n    "
            + " ".join(locals_)
            + body
            + ")"
        )
    names = " ".join(f"$f_{fn.name}" for fn in FD_FUNCTIONS)
    lines.append(f"  (elem (table $fwd) (i32.const 0) func {names})")
    lines.append(
        f'  (func (export "orig_poll_oneoff") {_params((_I, _I, _I, _I))} (result i32)\n'
        "    (call $orig_poll_oneoff (local.get $p0) (local.get $p1) (local.get $p2)"
        " (local.get $p3)))"
    )
    lines.append(")")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class DispatchModules:
    """A and B compiled for one engine (a module is tied to the engine that compiled it)."""

    engine: wasmtime.Engine
    trampoline: wasmtime.Module
    dispatcher: wasmtime.Module


def compile_modules(engine: wasmtime.Engine) -> DispatchModules:
    """Compile A and B for ``engine`` (a few milliseconds; do it once per engine)."""
    return DispatchModules(
        engine=engine,
        trampoline=wasmtime.Module(engine, trampoline_wat()),
        dispatcher=wasmtime.Module(engine, dispatcher_wat()),
    )
