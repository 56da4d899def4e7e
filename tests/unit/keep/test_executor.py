"""The executor and the library API, with real wasmtime and the real example workloads.

Every example is run and its exact output and exit code asserted; every way a module can fail
to run is checked for its error class, exit code and message.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
import wasmtime

from donjon.errors import ConfigError, LimitError, ModuleError, TrapError, WorkloadError
from donjon.keep.api import RunResult, run_module
from donjon.keep.cache import CacheKey, CacheStatus, ModuleCache
from donjon.keep.config import WorkloadConfig, parse_config
from donjon.keep.errors import (
    DeadlineError,
    GuestTrapError,
    MemoryLimitError,
    ModuleFileError,
    NoEntryPointError,
    NotWasmError,
    UnresolvedImportError,
    UnsupportedConfigError,
)
from donjon.keep.executor import CapturedStdio, KeepRuntime, Origin, StreamingStdio
from donjon.keep.plan import Invocation


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def cfg(text: str, base_dir: Path | None = None) -> WorkloadConfig:
    return parse_config(text, base_dir=base_dir)


# -- the examples, exactly ---------------------------------------------------------------------


def test_hello(examples_dir: Path) -> None:
    assert run_module(examples_dir / "hello.wasm") == RunResult(0, b"Hello, world!\n", b"")


def test_cat_copies_binary_stdin_exactly(examples_dir: Path) -> None:
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4: every byte value, past any buffer
    result = run_module(examples_dir / "cat.wasm", stdin=data)
    assert result == RunResult(0, data, b"")


def test_rot13(examples_dir: Path) -> None:
    result = run_module(examples_dir / "rot13.wasm", stdin=b"Hello, World! 123\n")
    assert result == RunResult(0, b"Uryyb, Jbeyq! 123\n", b"")


def test_argv_and_env_come_only_from_config_and_args(
    examples_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_SECRET", "must-not-leak")
    config = cfg('args = ["--greeting", "hello world"]\n[env]\nLANGUAGE = "en"\nMODE = "demo"\n')
    result = run_module(examples_dir / "argsenv.wasm", config, args=["extra", ""])
    assert result.stdout.decode() == (
        "argc=5\n"
        "argv[0]=argsenv.wasm\n"
        "argv[1]=--greeting\n"
        "argv[2]=hello world\n"
        "argv[3]=extra\n"
        "argv[4]=\n"
        "env FD_COUNT=3\n"
        "env FD_NAMES=stdin:stdout:stderr\n"
        "env LANGUAGE=en\n"
        "env MODE=demo\n"
    )
    assert result.exit_code == 0


def test_argv0_is_main_wasm_for_bytes_and_can_be_named(examples_dir: Path) -> None:
    wasm = (examples_dir / "argsenv.wasm").read_bytes()
    assert b"argv[0]=main.wasm\n" in run_module(wasm).stdout
    assert b"argv[0]=tool\n" in run_module(wasm, name="tool").stdout


@pytest.mark.parametrize("code", [0, 1, 7, 42, 125])
def test_exit_codes_pass_through(examples_dir: Path, code: int) -> None:
    result = run_module(examples_dir / "exitcode.wasm", args=[str(code)])
    assert result == RunResult(code, b"", b"")


def test_exit_status_outside_wasi_range_is_an_error(examples_dir: Path) -> None:
    with pytest.raises(GuestTrapError) as info:
        run_module(examples_dir / "exitcode.wasm", args=["126"])
    assert str(info.value) == (
        "exitcode.wasm exited with a status outside 0..125, which WASI preview 1 does not allow"
    )


def test_trap_reports_the_trap_and_keeps_output(examples_dir: Path) -> None:
    with pytest.raises(GuestTrapError) as info:
        run_module(examples_dir / "trap.wasm")
    error = info.value
    assert str(error) == "trap.wasm trapped: wasm `unreachable` instruction executed"
    assert error.trap_code == "UNREACHABLE"
    assert error.exit_code == 134
    assert isinstance(error, TrapError)
    assert error.backtrace  # frames, e.g. "0: 0xafa - <unknown>!<wasm function 30>"


def test_memory_limit_stops_memhog(examples_dir: Path) -> None:
    config = cfg("[limits]\nmemory_mib = 64\n")
    with pytest.raises(MemoryLimitError) as info:
        run_module(examples_dir / "memhog.wasm", config)
    error = info.value
    assert str(error).startswith("memory limit of 64 MiB reached: memhog.wasm could not grow")
    assert error.limit_bytes == 64 << 20
    assert error.used_bytes is not None and 56 << 20 <= error.used_bytes <= 64 << 20
    assert error.exit_code == 137 and isinstance(error, LimitError)


def test_memory_under_the_limit_is_fine(examples_dir: Path) -> None:
    result = run_module(
        examples_dir / "memhog.wasm", cfg("[limits]\nmemory_mib = 64\n"), args=["8"]
    )
    assert result == RunResult(0, b"memhog: allocated 8 MiB\n", b"")


def test_a_trap_far_below_the_memory_limit_is_a_plain_trap(examples_dir: Path) -> None:
    with pytest.raises(GuestTrapError):
        run_module(examples_dir / "trap.wasm", cfg("[limits]\nmemory_mib = 1024\n"))


def test_initial_memory_over_the_limit(examples_dir: Path) -> None:
    module = wat('(module (memory (export "memory") 100) (func (export "_start")))')
    with pytest.raises(MemoryLimitError) as info:
        run_module(module, cfg("[limits]\nmemory_mib = 1\n"))
    assert str(info.value) == (
        "memory limit of 1 MiB reached: main.wasm needs more linear memory than that to start"
    )


def test_deadline_stops_spin(examples_dir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineError) as info:
        run_module(examples_dir / "spin.wasm", cfg("[limits]\ntimeout_s = 0.3\n"))
    elapsed = time.monotonic() - started
    assert str(info.value) == "deadline of 0.3 s reached: spin.wasm was stopped"
    assert info.value.timeout_s == 0.3
    assert 0.3 <= elapsed < 5.0


def test_a_deadline_stops_only_its_own_workload(examples_dir: Path) -> None:
    runtime = KeepRuntime()
    spin = runtime.load((examples_dir / "spin.wasm").read_bytes(), name="spin.wasm")
    bench = runtime.load((examples_dir / "cpubench.wasm").read_bytes(), name="cpubench.wasm")
    outcome: dict[str, object] = {}

    def spinner() -> None:
        inv = Invocation.from_config(cfg("[limits]\ntimeout_s = 0.3\n"), program="spin.wasm")
        try:
            runtime.run(spin, inv, CapturedStdio())
        except DeadlineError as e:
            outcome["spin"] = e

    thread = threading.Thread(target=spinner)
    thread.start()
    out = CapturedStdio()
    inv = Invocation.from_config(
        cfg("[limits]\ntimeout_s = 60.0\n"), program="cpubench.wasm", args=["sha256", "16"]
    )
    assert runtime.run(bench, inv, out) == 0
    thread.join()
    runtime.close()
    expected = hashlib.sha256(bytes(range(256)) * 4096 * 16).hexdigest()
    assert out.stdout == f"sha256 16 MiB: {expected}\n".encode()
    assert isinstance(outcome["spin"], DeadlineError)


def test_cpubench_matches_hashlib_and_known_fannkuch(examples_dir: Path) -> None:
    result = run_module(examples_dir / "cpubench.wasm", args=["sha256", "3"])
    digest = hashlib.sha256(bytes(range(256)) * 4096 * 3).hexdigest()
    assert result == RunResult(0, f"sha256 3 MiB: {digest}\n".encode(), b"")
    # fannkuch-redux(7): checksum 228, 16 flips (Computer Language Benchmarks Game).
    result = run_module(examples_dir / "cpubench.wasm", args=["fannkuch", "7"])
    assert result == RunResult(0, b"228\nPfannkuchen(7) = 16\n", b"")


def _nbody_reference(steps: int, dt: float = 0.001) -> tuple[float, float]:
    """The n-body workload of cpubench.c, operation for operation, in Python floats."""
    bodies = [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 39.47841760435743],
        [4.84, -1.16, -0.10, 0.606, 2.81, -0.025, 0.0377],
        [8.34, 4.12, -0.40, -1.01, 1.82, 0.008, 0.0113],
        [12.89, -15.11, -0.22, 1.08, 0.868, -0.011, 0.0017],
        [15.37, -25.91, 0.17, 0.979, 0.594, -0.034, 0.0020],
    ]

    def energy() -> float:
        e = 0.0
        for i, (x, y, z, vx, vy, vz, m) in enumerate(bodies):
            e += 0.5 * m * (vx * vx + vy * vy + vz * vz)
            for x2, y2, z2, _, _, _, m2 in bodies[i + 1 :]:
                dx, dy, dz = x - x2, y - y2, z - z2
                e -= m * m2 / math.sqrt(dx * dx + dy * dy + dz * dz)
        return e

    before = energy()
    for _ in range(steps):
        for i, a in enumerate(bodies):
            for b in bodies[i + 1 :]:
                dx, dy, dz = a[0] - b[0], a[1] - b[1], a[2] - b[2]
                d2 = dx * dx + dy * dy + dz * dz
                mag = dt / (d2 * math.sqrt(d2))
                a[3] -= dx * b[6] * mag
                a[4] -= dy * b[6] * mag
                a[5] -= dz * b[6] * mag
                b[3] += dx * a[6] * mag
                b[4] += dy * a[6] * mag
                b[5] += dz * a[6] * mag
        for body in bodies:
            body[0] += dt * body[3]
            body[1] += dt * body[4]
            body[2] += dt * body[5]
    return before, energy()


def _mandelbrot_reference(n: int) -> int:
    inside = 0
    for py in range(n):
        ci = -1.5 + 3.0 * py / n
        for px in range(n):
            cr = -2.0 + 3.0 * px / n
            zr = zi = 0.0
            k = 0
            while k < 64 and zr * zr + zi * zi <= 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                k += 1
            inside += k == 64
    return inside


def test_cpubench_float_and_table_workloads_match_python(examples_dir: Path) -> None:
    """The benchmark's other workloads compute the right thing, bit for bit (no FMA)."""
    wasm = examples_dir / "cpubench.wasm"
    crc = zlib.crc32(bytes(range(256)) * 4096 * 2)
    assert run_module(wasm, args=["crc32", "2"]).stdout == f"crc32 2 MiB: {crc:08x}\n".encode()
    before, after = _nbody_reference(200)
    assert run_module(wasm, args=["nbody", "200"]).stdout == f"{before:.9f}\n{after:.9f}\n".encode()
    inside = _mandelbrot_reference(60)
    assert run_module(wasm, args=["mandelbrot", "60"]).stdout == (
        f"mandelbrot 60: {inside} inside\n".encode()
    )
    native = examples_dir / "native" / "cpubench"
    if native.exists():  # the native build, the benchmark's baseline, prints the same
        for args in (["crc32", "2"], ["nbody", "200"], ["mandelbrot", "60"]):
            assert subprocess.run([native, *args], capture_output=True, check=True).stdout == (
                run_module(wasm, args=args).stdout
            )


# -- files and directories ---------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_bytes(b"hello from the host\n")
    return data


def test_read_only_dir_can_be_read_but_not_changed(examples_dir: Path, data_dir: Path) -> None:
    config = cfg('[[dirs]]\nhost = "data"\nguest = "/data"\n', base_dir=data_dir.parent)
    readfile = examples_dir / "readfile.wasm"
    assert run_module(readfile, config, args=["/data/hello.txt"]) == RunResult(
        0, b"hello from the host\n", b""
    )
    result = run_module(readfile, config, args=["-w", "/data/out.txt", "x"])
    assert result == RunResult(1, b"", b"readfile: /data/out.txt: Operation not permitted\n")
    result = run_module(readfile, config, args=["-w", "/data/hello.txt", "x"])
    assert result.exit_code == 1
    assert sorted(p.name for p in data_dir.iterdir()) == ["hello.txt"]
    assert (data_dir / "hello.txt").read_bytes() == b"hello from the host\n"


def test_writable_dir_can_be_written(examples_dir: Path, data_dir: Path) -> None:
    config = cfg(
        '[[dirs]]\nhost = "data"\nguest = "/data"\nwritable = true\n', base_dir=data_dir.parent
    )
    result = run_module(examples_dir / "readfile.wasm", config, args=["-w", "/data/out.txt", "hi"])
    assert result == RunResult(0, b"wrote /data/out.txt\n", b"")
    assert (data_dir / "out.txt").read_bytes() == b"hi\n"


def test_no_ambient_filesystem(examples_dir: Path, data_dir: Path) -> None:
    readfile = examples_dir / "readfile.wasm"
    result = run_module(readfile, args=["/etc/passwd"])
    assert result == RunResult(1, b"", b"readfile: /etc/passwd: No such file or directory\n")
    config = cfg('[[dirs]]\nhost = "data"\nguest = "/data"\n', base_dir=data_dir.parent)
    result = run_module(readfile, config, args=["/data/../../../etc/passwd"])
    assert result.exit_code == 1 and result.stdout == b""
    result = run_module(readfile, config, args=["hello.txt"])  # no working directory either
    assert result == RunResult(1, b"", b"readfile: hello.txt: No such file or directory\n")


def test_a_missing_host_dir_is_a_config_error(examples_dir: Path, tmp_path: Path) -> None:
    config = cfg('[[dirs]]\nhost = "gone"\nguest = "/data"\n', base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"cannot pre-open .*gone as /data"):
        run_module(examples_dir / "hello.wasm", config)


# -- stdio kinds (Enarx [[files]]) -------------------------------------------------------------


def test_null_stdin_reads_end_of_file(examples_dir: Path) -> None:
    config = cfg(
        '[[files]]\nkind = "null"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
    )
    result = run_module(examples_dir / "cat.wasm", config, stdin=b"never read")
    assert result == RunResult(0, b"", b"")


def test_null_stdout_discards_writes(examples_dir: Path) -> None:
    config = cfg(
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "null"\n[[files]]\nkind = "stderr"\n'
    )
    assert run_module(examples_dir / "hello.wasm", config) == RunResult(0, b"", b"")


def test_swapped_streams_and_fd_names(examples_dir: Path) -> None:
    config = cfg(
        '[[files]]\nkind = "null"\n'
        '[[files]]\nkind = "stderr"\nname = "log"\n'
        '[[files]]\nkind = "stdout"\nname = "out"\n'
    )
    result = run_module(examples_dir / "argsenv.wasm", config)
    assert result == RunResult(
        0, b"", b"argc=1\nargv[0]=argsenv.wasm\nenv FD_COUNT=3\nenv FD_NAMES=null:log:out\n"
    )


def test_both_output_fds_to_one_stream_keep_their_order(examples_dir: Path) -> None:
    config = cfg(
        '[[files]]\nkind = "stdin"\n'
        '[[files]]\nkind = "stdout"\n'
        '[[files]]\nkind = "stdout"\nname = "also-stdout"\n'
    )
    result = run_module(examples_dir / "readfile.wasm", config, args=["/a", "/b"])
    expected = b"readfile: /a: No such file or directory\nreadfile: /b: No such file or directory\n"
    assert result == RunResult(1, expected, b"")


def test_empty_files_gives_no_stdio_and_fd_count_zero(examples_dir: Path) -> None:
    result = run_module(examples_dir / "argsenv.wasm", cfg("files = []\n"))
    assert result == RunResult(0, b"", b"")  # stdout is not granted: nothing comes out
    result = run_module(examples_dir / "cat.wasm", cfg("files = []\n"), stdin=b"x")
    assert result == RunResult(0, b"", b"")


@pytest.mark.parametrize(
    ("files", "streams"),
    [
        (
            '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
            '[[files]]\nkind = "listen"\nname = "api"\nport = 8443\n',
            ("stdin", "stdout", "stderr"),
        ),
        ('[[files]]\nkind = "connect"\nhost = "example.com"\nprot = "tcp"\n', ("null",) * 3),
        ('[[files]]\nkind = "stdout"\n', ("null", "stdout", "null")),
        (
            '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdin"\nname = "in2"\n',
            ("stdin", "null", "null"),
        ),
        (
            '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
            '[[files]]\nkind = "null"\n',
            ("stdin", "stdout", "stderr"),
        ),
    ],
)
def test_fd_layouts_wasmtime_cannot_number_go_to_the_socket_layer(
    files: str, streams: tuple[str, ...]
) -> None:
    # Once refused (UnsupportedConfigError); the socket layer now numbers these fds exactly
    # as listed, and wasmtime's own fds 0-2 carry only the caller's streams that are used.
    config = cfg(files)
    invocation = Invocation.from_config(config, program="x.wasm")
    assert invocation.fds == config.effective_files()
    assert tuple(kind.value for kind in invocation.stdio) == streams


# -- modules the keep cannot run ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "error", "message"),
    [
        (b"", NotWasmError, "main.wasm is not a WebAssembly module: it is empty"),
        (
            b"#!/bin/sh\necho hi\n",
            NotWasmError,
            "main.wasm is not a WebAssembly module: it does not start with the Wasm magic bytes",
        ),
        (b"\0asm\x01\0", NotWasmError, "it is only 6 bytes long (truncated?)"),
        (b"\0asm\x0d\0\x01\0", NotWasmError, "is a WebAssembly component (WASI preview 2)"),
        (b"\0asm\x02\0\0\0", NotWasmError, "unknown version 02000000"),
        (
            b"\0asm\x01\0\0\0\x05",
            NotWasmError,
            "main.wasm is not a valid WebAssembly module: unexpected end-of-file",
        ),
        (
            '(module (memory (export "memory") 1))',
            NoEntryPointError,
            "main.wasm exports no _start function, so there is nothing to run",
        ),
        (
            '(module (memory (export "memory") 1) (func (export "_initialize")))',
            NoEntryPointError,
            "main.wasm is a WASI reactor (a library with _initialize), not a command",
        ),
        (
            '(module (func (export "_start") (param i32)))',
            NoEntryPointError,
            "_start must take no parameters and return nothing",
        ),
        (
            '(module (import "env" "foo" (func)) (func (export "_start")))',
            UnresolvedImportError,
            "main.wasm imports the function env::foo, which the keep does not provide; a "
            "workload can import only WASI preview 1 functions (wasi_snapshot_preview1)",
        ),
        (
            '(module (import "env" "memory" (memory 1)) (func (export "_start")))',
            UnresolvedImportError,
            "imports the memory env::memory",
        ),
        (
            '(module (import "wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) '
            '(result i32))) (func (export "_start")))',
            UnresolvedImportError,
            "wasi_unstable is the old WASI snapshot 0; rebuild for wasm32-wasip1",
        ),
        (
            '(module (import "wasi_snapshot_preview1" "sock_open" (func)) '
            '(func (export "_start")))',
            UnresolvedImportError,
            "wasi_snapshot_preview1::sock_open, which the keep does not provide; it is not a "
            "WASI preview 1 function",
        ),
        (
            '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32))) '
            '(func (export "_start")))',
            UnresolvedImportError,
            "imports wasi_snapshot_preview1::fd_write with a type the keep does not provide",
        ),
    ],
)
def test_bad_modules_get_one_clear_line(
    module: bytes | str, error: type[ModuleError], message: str
) -> None:
    wasm = wat(module) if isinstance(module, str) else module
    with pytest.raises(error) as info:
        run_module(wasm, use_cache=False)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_module_errors_have_distinct_exit_codes() -> None:
    codes = {
        NotWasmError.exit_code,
        ModuleFileError.exit_code,
        NoEntryPointError.exit_code,
        UnresolvedImportError.exit_code,
        GuestTrapError.exit_code,
        MemoryLimitError.exit_code,
        ConfigError.exit_code,
    }
    assert len(codes) == 7
    assert min(codes - {ConfigError.exit_code}) >= 126  # above every WASI exit status
    assert DeadlineError.exit_code == MemoryLimitError.exit_code == LimitError.exit_code


def test_unresolved_import_names_module_and_field() -> None:
    with pytest.raises(UnresolvedImportError) as info:
        run_module(wat('(module (import "env" "foo" (func)) (func (export "_start")))'))
    assert (info.value.module, info.value.field) == ("env", "foo")


def test_missing_and_unreadable_module_files(tmp_path: Path) -> None:
    with pytest.raises(
        ModuleFileError, match=r"nothere.wasm does not exist; check the module path"
    ):
        run_module(tmp_path / "nothere.wasm")
    with pytest.raises(ModuleFileError, match="is a directory"):
        run_module(tmp_path)
    text = tmp_path / "notes.wasm"
    text.write_text("hello\n")
    with pytest.raises(NotWasmError, match=r"notes\.wasm is not a WebAssembly module"):
        run_module(text)


def test_a_trap_in_the_start_section() -> None:
    module = wat('(module (func $s unreachable) (start $s) (func (export "_start")))')
    for config in (WorkloadConfig(), cfg("[limits]\ntimeout_s = 5.0\n")):
        with pytest.raises(
            GuestTrapError, match="trapped in its start function: wasm `unreachable`"
        ):
            run_module(module, config, use_cache=False)


def test_other_traps_are_named() -> None:
    module = wat(
        '(module (memory (export "memory") 1) '
        '(func (export "_start") (drop (i32.load (i32.const 70000)))))'
    )
    with pytest.raises(GuestTrapError) as info:
        run_module(module)
    assert info.value.trap_code == "MEMORY_OUT_OF_BOUNDS"
    assert str(info.value) == "main.wasm trapped: out of bounds memory access"


# -- the runtime: reuse, engines, caches -------------------------------------------------------


def test_runtime_reuses_compiled_modules(examples_dir: Path) -> None:
    wasm = (examples_dir / "hello.wasm").read_bytes()
    with KeepRuntime() as runtime:
        first = runtime.load(wasm, name="hello.wasm")
        again = runtime.load(wasm, name="hi.wasm")
        assert first.origin is Origin.COMPILED
        assert again.origin is Origin.MEMORY and again.name == "hi.wasm"
        assert first.sha256 == hashlib.sha256(wasm).hexdigest() and first.size == len(wasm)
        inv = Invocation.from_config(WorkloadConfig(), program="hello.wasm")
        for _ in range(50):
            out = CapturedStdio()
            assert runtime.run(first, inv, out) == 0
            assert out.stdout == b"Hello, world!\n"


def test_a_module_loaded_without_deadline_support_runs_with_a_deadline(examples_dir: Path) -> None:
    with KeepRuntime() as runtime:
        spin = runtime.load((examples_dir / "spin.wasm").read_bytes(), name="spin.wasm")
        assert not spin.epochs
        inv = Invocation.from_config(cfg("[limits]\ntimeout_s = 0.1\n"), program="spin.wasm")
        out = CapturedStdio()
        with pytest.raises(DeadlineError):
            runtime.run(spin, inv, out)
        assert out.stdout == b"spinning\n"


def test_disk_cache_hit_after_compile(examples_dir: Path, tmp_path: Path) -> None:
    wasm = (examples_dir / "hello.wasm").read_bytes()
    with KeepRuntime(cache=ModuleCache(tmp_path)) as runtime:
        assert runtime.load(wasm, name="hello.wasm").origin is Origin.COMPILED
        assert runtime.last_cache_status is CacheStatus.MISS
    with KeepRuntime(cache=ModuleCache(tmp_path)) as runtime:
        module = runtime.load(wasm, name="hello.wasm")
        assert module.origin is Origin.CACHE
        assert runtime.last_cache_status is CacheStatus.HIT
        out = CapturedStdio()
        inv = Invocation.from_config(WorkloadConfig(), program="hello.wasm")
        assert runtime.run(module, inv, out) == 0 and out.stdout == b"Hello, world!\n"
    # deadline and no-deadline code are different entries (different engine settings)
    with KeepRuntime(cache=ModuleCache(tmp_path)) as runtime:
        assert runtime.load(wasm, deadline=True).origin is Origin.COMPILED
    assert len(list((tmp_path / "modules").glob("*.cwasm"))) == 2


def test_a_tampered_cache_entry_is_refused_and_recompiled(
    examples_dir: Path, tmp_path: Path
) -> None:
    hello = (examples_dir / "hello.wasm").read_bytes()
    trap = (examples_dir / "trap.wasm").read_bytes()
    with KeepRuntime(cache=ModuleCache(tmp_path)) as runtime:
        runtime.load(hello, name="hello.wasm")
        runtime.load(trap, name="trap.wasm")
    entries = {p.stat().st_size: p for p in (tmp_path / "modules").glob("*.cwasm")}
    assert len(entries) == 2
    # Put trap's (authentic) compiled code where hello's belongs: if it were loaded, running
    # hello would trap. It must be refused and hello recompiled.
    hello_entry = ModuleCache(tmp_path).path_for(_key_of(hello, tmp_path))
    trap_entry = next(p for p in entries.values() if p != hello_entry)
    os.replace(trap_entry, hello_entry)
    with KeepRuntime(cache=ModuleCache(tmp_path)) as runtime:
        module = runtime.load(hello, name="hello.wasm")
        assert runtime.last_cache_status is CacheStatus.REJECTED
        assert module.origin is Origin.COMPILED
        out = CapturedStdio()
        inv = Invocation.from_config(WorkloadConfig(), program="hello.wasm")
        assert runtime.run(module, inv, out) == 0 and out.stdout == b"Hello, world!\n"
    # the recompiled entry was written back and is good again
    with KeepRuntime(cache=ModuleCache(tmp_path)) as runtime:
        assert runtime.load(hello).origin is Origin.CACHE


def test_a_flipped_byte_in_cached_code_is_never_loaded(examples_dir: Path, tmp_path: Path) -> None:
    hello = (examples_dir / "hello.wasm").read_bytes()
    with KeepRuntime(cache=ModuleCache(tmp_path)) as runtime:
        runtime.load(hello)
    entry = ModuleCache(tmp_path).path_for(_key_of(hello, tmp_path))
    blob = bytearray(entry.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    entry.write_bytes(bytes(blob))
    with KeepRuntime(cache=ModuleCache(tmp_path)) as runtime:
        module = runtime.load(hello)
        assert runtime.last_cache_status is CacheStatus.REJECTED
        assert module.origin is Origin.COMPILED


def test_run_module_with_a_cache_dir(examples_dir: Path, tmp_path: Path) -> None:
    result = run_module(examples_dir / "hello.wasm", cache_dir=tmp_path / "c")
    assert result.stdout == b"Hello, world!\n"
    assert len(list((tmp_path / "c" / "modules").glob("*.cwasm"))) == 1
    assert run_module(examples_dir / "hello.wasm", use_cache=False).stdout == b"Hello, world!\n"


def test_compile_progress_is_called_around_compiles_only(
    examples_dir: Path, tmp_path: Path
) -> None:
    seen: list[tuple[str, int]] = []

    class Recorder:
        def __init__(self, name: str, size: int) -> None:
            seen.append((name, size))

        def __enter__(self) -> Recorder:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    wasm = (examples_dir / "hello.wasm").read_bytes()
    with KeepRuntime(cache=ModuleCache(tmp_path), progress=Recorder) as runtime:
        runtime.load(wasm, name="hello.wasm")
    with KeepRuntime(cache=ModuleCache(tmp_path), progress=Recorder) as runtime:
        runtime.load(wasm, name="hello.wasm")  # from the cache: no compile, no progress
    assert seen == [("hello.wasm", len(wasm))]


def test_workload_errors_are_workload_errors() -> None:
    for cls in (NotWasmError, NoEntryPointError, GuestTrapError, MemoryLimitError, DeadlineError):
        assert issubclass(cls, WorkloadError)
    assert issubclass(UnsupportedConfigError, ConfigError)


def _key_of(wasm: bytes, cache_dir: Path) -> CacheKey:
    """The cache key the runtime uses for ``wasm`` without deadlines (the only entry made)."""
    entries = list((cache_dir / "modules").glob("*.cwasm"))
    digest = hashlib.sha256(wasm).hexdigest()
    with KeepRuntime() as runtime:
        description = runtime._engine(False).description
    key = CacheKey(engine=description, module_sha256=digest)
    assert any(e.name.startswith(key.entry_id()) for e in entries)
    return key


def test_streaming_stdio_hands_over_each_write(examples_dir: Path) -> None:
    chunks: list[tuple[str, bytes]] = []
    stdio = StreamingStdio(
        on_stdout=lambda b: chunks.append(("out", b)),
        on_stderr=lambda b: chunks.append(("err", b)),
        stdin=b"abc\n",
    )
    with KeepRuntime() as runtime:
        module = runtime.load((examples_dir / "rot13.wasm").read_bytes(), name="rot13.wasm")
        inv = Invocation.from_config(WorkloadConfig(), program="rot13.wasm")
        assert runtime.run(module, inv, stdio) == 0
        assert b"".join(b for s, b in chunks if s == "out") == b"nop\n"
        assert stdio.error is None

        readfile = runtime.load((examples_dir / "readfile.wasm").read_bytes(), name="readfile")
        chunks.clear()
        inv = Invocation.from_config(WorkloadConfig(), program="readfile", args=["/x"])
        assert runtime.run(readfile, inv, stdio) == 1
        assert chunks == [("err", b"readfile: /x: No such file or directory\n")]


def test_a_failing_stream_callback_fails_the_write_not_the_keep(examples_dir: Path) -> None:
    def broken(data: bytes) -> None:
        raise BrokenPipeError("client went away")

    # 200 kB: more than stdio's buffer, so cat's own fwrite sees the error and exits 1.
    stdio = StreamingStdio(on_stdout=broken, on_stderr=broken, stdin=b"x" * 200_000)
    with KeepRuntime() as runtime:
        module = runtime.load((examples_dir / "cat.wasm").read_bytes(), name="cat.wasm")
        inv = Invocation.from_config(WorkloadConfig(), program="cat.wasm")
        assert runtime.run(module, inv, stdio) == 1
    assert isinstance(stdio.error, BrokenPipeError)
