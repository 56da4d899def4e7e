"""The fd table under the socket layer, with real wasmtime, no network: ``null`` fds, stdio and
files in one workload, numbered exactly as ``[[files]]`` lists them.

A WAT "script" guest (:mod:`.guest`) makes raw WASI calls and reports each errno, so these
tests see exactly what a workload sees; the C examples check the same through wasi-libc.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from donjon.keep.api import RunResult, run_module
from donjon.keep.config import WorkloadConfig, parse_config
from donjon.keep.errors import DeadlineError
from donjon.keep.executor import CapturedStdio, KeepRuntime
from donjon.keep.plan import Invocation
from tests.unit.keep.sockets.guest import (
    SCRATCH,
    clock_sub,
    fd_sub,
    iovec,
    load_u8,
    load_u32,
    results,
    script,
)

STDIO = '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
NULL3 = STDIO + '[[files]]\nkind = "null"\nname = "gap"\n'

# Guest memory used by the steps below.
WRITE_IOV, READ_IOV, TEXT, READ_BUF = 1024, 1032, 1100, 1200
PATH_A, PATH_B, SUBS, EVENTS = 1300, 1310, 2048, 3072
NOUT = SCRATCH  # where calls write their one u32 output
STAT = SCRATCH + 64
DATA = {
    WRITE_IOV: iovec(TEXT, 3),
    READ_IOV: iovec(READ_BUF, 64),
    TEXT: b"abc",
    PATH_A: b"a.txt",
    PATH_B: b"b.txt",
}
RIGHTS = "(i64.const 0x200026)"  # read, seek, tell, filestat_get: a read-only directory


def call(name: str, *args: int | str) -> str:
    rendered = " ".join(a if isinstance(a, str) else f"(i32.const {a})" for a in args)
    return f"(call ${name} {rendered})"


def open_file(path: int) -> str:
    return call("path_open", 4, 0, path, 5, 0, RIGHTS, "(i64.const 0)", 0, NOUT)


def poll(subs: list[bytes], at: int = SUBS) -> tuple[str, dict[int, bytes]]:
    return call("poll_oneoff", at, EVENTS, len(subs), NOUT), {at: b"".join(subs)}


def run(wasm: bytes, config: WorkloadConfig, stdin: bytes = b"") -> RunResult:
    return run_module(wasm, config, stdin=stdin, name="guest.wasm")


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_bytes(b"AAAA")
    (tmp_path / "b.txt").write_bytes(b"BBBBBB")
    return tmp_path


def config_with_dir(base: str, directory: Path) -> WorkloadConfig:
    return parse_config(f'{base}[[dirs]]\nhost = "{directory}"\nguest = "/data"\n')


def test_null_fd_reads_nothing_keeps_nothing_and_is_a_character_device(files_dir: Path) -> None:
    steps = [
        call("fd_write", 3, WRITE_IOV, 1, NOUT),
        load_u32(NOUT),
        call("fd_read", 3, READ_IOV, 1, NOUT),
        load_u32(NOUT),
        call("fd_fdstat_get", 3, STAT),
        load_u8(STAT),  # filetype
        call("fd_filestat_get", 3, STAT),
        load_u8(STAT + 16),
        call("fd_seek", 3, "(i64.const 0)", 0, NOUT),
        call("sock_accept", 3, 0, NOUT),
        call("sock_shutdown", 3, 2),
    ]
    result = run(script(steps, DATA), config_with_dir(NULL3, files_dir))
    assert result.exit_code == 0
    assert results(result.stdout) == [0, 3, 0, 0, 0, 2, 0, 2, 70, 57, 57]


def test_unknown_fds_are_badf_everywhere(files_dir: Path) -> None:
    subs_at = SUBS
    steps = [
        call("fd_read", 99, READ_IOV, 1, NOUT),
        call("fd_close", 99),
        call("fd_write", 20000, WRITE_IOV, 1, NOUT),
        call("fd_fdstat_get", 5, STAT),
        call("sock_accept", 5, 0, NOUT),
        call("fd_renumber", 3, 99),
        call("poll_oneoff", subs_at, EVENTS, 2, NOUT),  # one good fd, one unknown: all BADF
    ]
    data = {**DATA, subs_at: fd_sub(1, 3) + fd_sub(2, 99)}
    result = run(script(steps, data), config_with_dir(NULL3, files_dir))
    assert results(result.stdout) == [8, 8, 8, 8, 8, 8, 8]


def test_preopen_scan_sees_null_as_not_a_directory_and_finds_the_dir(files_dir: Path) -> None:
    steps = [
        call("fd_prestat_get", 3, STAT),
        load_u8(STAT),
        call("fd_prestat_get", 4, STAT),
        load_u8(STAT),
        call("fd_prestat_get", 5, STAT),
    ]
    result = run(script(steps, DATA), config_with_dir(NULL3, files_dir))
    # null: success with tag 1 (skipped); /data: a directory (tag 0); then BADF ends the scan.
    assert results(result.stdout) == [0, 1, 0, 0, 8]


def test_opened_files_get_the_lowest_free_fd_and_renumber_moves_them(files_dir: Path) -> None:
    steps = [
        open_file(PATH_A),
        load_u32(NOUT),  # 5: after the null (3) and the directory (4)
        call("fd_close", 5),
        open_file(PATH_A),
        load_u32(NOUT),  # 5 again: freed numbers are reused
        call("fd_close", 3),  # the null fd
        open_file(PATH_B),
        load_u32(NOUT),  # 3: the lowest free fd
        call("fd_read", 3, READ_IOV, 1, NOUT),
        load_u32(NOUT),  # b.txt's 6 bytes
        call("fd_renumber", 5, 3),  # a.txt replaces b.txt at fd 3
        call("fd_read", 3, READ_IOV, 1, NOUT),
        load_u32(NOUT),  # a.txt's 4 bytes
        call("fd_read", 5, READ_IOV, 1, NOUT),  # moved away
    ]
    result = run(script(steps, DATA), config_with_dir(NULL3, files_dir))
    assert results(result.stdout) == [0, 5, 0, 0, 5, 0, 0, 3, 0, 6, 0, 0, 4, 8]


def test_poll_mixes_null_stdin_files_and_clocks(files_dir: Path) -> None:
    one_s = 1_000_000_000
    at2, at3, at4 = SUBS + 200, SUBS + 400, SUBS + 600
    steps = [
        call("poll_oneoff", SUBS, EVENTS, 2, NOUT),  # null ready at once, the clock does not fire
        load_u32(NOUT),
        load_u32(EVENTS),  # its userdata
        call("poll_oneoff", at2, EVENTS, 2, NOUT),  # stdin (wasmtime's) + null (Python's)
        load_u32(NOUT),
        call("poll_oneoff", at3, EVENTS, 1, NOUT),  # a clock alone: wasmtime's own poll
        load_u32(NOUT),
        load_u32(EVENTS),
        open_file(PATH_A),
        call("poll_oneoff", at4, EVENTS, 1, NOUT),  # a file alone: rewritten and forwarded
        load_u32(NOUT),
        load_u32(EVENTS),
    ]
    data = {
        **DATA,
        SUBS: fd_sub(42, 3) + clock_sub(7, one_s),
        at2: fd_sub(1, 0) + fd_sub(2, 3, write=True),
        at3: clock_sub(9, 1_000_000),
        at4: fd_sub(11, 5),
    }
    result = run(script(steps, data), config_with_dir(NULL3, files_dir), stdin=b"input")
    got = results(result.stdout)
    # The second poll: null is ready at once, so wasmtime is asked about stdin with a zero
    # timeout, and wasmtime's own poll may answer that before it has seen the (always ready)
    # memory-file stdin: one event or two, never none and never anything else.
    assert got in (
        [0, 1, 42, 0, 2, 0, 1, 9, 0, 0, 1, 11],
        [0, 1, 42, 0, 1, 0, 1, 9, 0, 0, 1, 11],
    ), got


def test_stdio_and_files_work_beside_python_fds(examples_dir: Path, files_dir: Path) -> None:
    data = bytes(range(256)) * 512
    config = parse_config(NULL3)
    assert Invocation.from_config(config, program="cat.wasm").fds is not None
    assert run_module(examples_dir / "cat.wasm", config, stdin=data) == RunResult(0, data, b"")
    config = config_with_dir(NULL3, files_dir)
    result = run_module(examples_dir / "readfile.wasm", config, args=["/data/a.txt"])
    assert result == RunResult(0, b"AAAA", b"")  # wasi-libc's preopen scan skipped fd 3


def test_enarx_numbering_with_stdio_elsewhere(examples_dir: Path) -> None:
    # fd 0 null, fd 1 stderr stream, fd 2 stdout stream, fd 3 null: exact Enarx numbering.
    config = parse_config(
        '[[files]]\nkind = "null"\n[[files]]\nkind = "stderr"\n[[files]]\nkind = "stdout"\n'
        '[[files]]\nkind = "null"\nname = "null2"\n'
    )
    result = run_module(examples_dir / "argsenv.wasm", config)
    assert result.exit_code == 0 and result.stdout == b""
    assert b"env FD_COUNT=4\nenv FD_NAMES=null:stderr:stdout:null2\n" in result.stderr


def test_fewer_than_three_files_leave_the_others_absent(files_dir: Path) -> None:
    # With the socket layer, an fd the config does not list does not exist, and pre-opens
    # still start at fd 3, where wasi-libc looks for them.
    config = parse_config(
        f'[[files]]\nkind = "stdout"\n[[files]]\nkind = "null"\nname = "n"\n'
        f'[[dirs]]\nhost = "{files_dir}"\nguest = "/data"\n'
    )
    invocation = Invocation.from_config(config, program="guest.wasm")
    assert invocation.preopen_base == 3
    steps = [call("fd_write", 2, WRITE_IOV, 1, NOUT), call("fd_prestat_get", 3, STAT)]
    result = run_module(script(steps, DATA, report_fd=0), config, name="guest.wasm")
    assert results(result.stdout) == [8, 0]


def test_deadline_still_applies_under_the_socket_layer(examples_dir: Path) -> None:
    config = parse_config(NULL3 + "[limits]\ntimeout_s = 0.3\n")
    with pytest.raises(DeadlineError):
        run_module(examples_dir / "spin.wasm", config)


def test_many_runs_reuse_the_compiled_dispatcher(examples_dir: Path) -> None:
    wasm = (examples_dir / "hello.wasm").read_bytes()
    invocation = Invocation.from_config(parse_config(NULL3), program="hello.wasm")
    with KeepRuntime() as runtime:
        module = runtime.load(wasm, name="hello.wasm")
        for _ in range(5):
            out = CapturedStdio()
            assert runtime.run(module, invocation, out) == 0
            assert out.stdout == b"Hello, world!\n"
