"""The generated dispatcher modules: complete, typed exactly like wasmtime's WASI, compilable."""

from __future__ import annotations

import wasmtime

from donjon.keep.sockets.dispatch import (
    FD_FUNCTIONS,
    PYTHON_IMPORTS,
    PYTHON_MODULE,
    compile_modules,
    dispatcher_wat,
    trampoline_wat,
)

WASI = "wasi_snapshot_preview1"
# Every function of wasi_snapshot_preview1 (witx), and those that take no fd.
WASI_P1 = {
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get",
    "clock_time_get", "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get",
    "fd_fdstat_set_flags", "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size",
    "fd_filestat_set_times", "fd_pread", "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite",
    "fd_read", "fd_readdir", "fd_renumber", "fd_seek", "fd_sync", "fd_tell", "fd_write",
    "path_create_directory", "path_filestat_get", "path_filestat_set_times", "path_link",
    "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
    "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get",
    "sock_accept", "sock_recv", "sock_send", "sock_shutdown",
}  # fmt: skip
NO_FD = {
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get",
    "clock_time_get", "proc_exit", "proc_raise", "sched_yield", "random_get",
}  # fmt: skip


def _kind(valtype: wasmtime.ValType) -> str:
    return str(valtype)


def test_every_wasi_function_that_takes_an_fd_is_dispatched() -> None:
    names = [fn.name for fn in FD_FUNCTIONS]
    assert len(names) == len(set(names))
    assert set(names) == WASI_P1 - NO_FD


def test_signatures_match_wasmtime_exactly() -> None:
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    try:
        for fn in FD_FUNCTIONS:
            func = linker.get(store, WASI, fn.name)
            assert isinstance(func, wasmtime.Func)
            ty = func.type(store)
            assert [_kind(p) for p in ty.params] == list(fn.params), fn.name
            assert [_kind(r) for r in ty.results] == ["i32"], fn.name
            assert all(fn.params[pos] == "i32" for pos in fn.fds), fn.name
            assert fn.special is not None or fn.python or fn.errno > 0, fn.name
    finally:
        store.close()


def test_python_imports_take_the_wasi_parameters_and_the_memory_size() -> None:
    by_name = {fn.name: fn for fn in FD_FUNCTIONS}
    for name, types in PYTHON_IMPORTS.items():
        assert types[-1] == "i32"  # pages
        if name in by_name:
            assert by_name[name].python
            assert types[:-1] == by_name[name].params
    assert {n for n in PYTHON_IMPORTS if n not in by_name} == {"close", "move", "poll"}


def test_modules_compile_per_engine_and_have_the_expected_shape() -> None:
    for epochs in (False, True):
        config = wasmtime.Config()
        config.epoch_interruption = epochs
        engine = wasmtime.Engine(config)
        modules = compile_modules(engine)
        assert modules.engine is engine
        exports_a = {e.name for e in modules.trampoline.exports}
        assert exports_a == {fn.name for fn in FD_FUNCTIONS}
        imports_b = {(i.module, i.name) for i in modules.dispatcher.imports}
        assert ("env", "memory") in imports_b
        assert {n for m, n in imports_b if m == PYTHON_MODULE} == set(PYTHON_IMPORTS)
        exports_b = {e.name for e in modules.dispatcher.exports}
        assert exports_b == {"memory", "fdmap", "orig_poll_oneoff"}


def test_generated_text_is_deterministic() -> None:
    assert trampoline_wat() == trampoline_wat()
    assert dispatcher_wat() == dispatcher_wat()
