"""``donjon run`` as a user runs it: the real CLI in a subprocess, a real keep process, exact
outputs and exit codes, the compiled-module cache on disk, signals and a terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import wasmtime

from donjon.backends.nil import NIL_WARNING

pytestmark = pytest.mark.integration

DONJON = Path(sys.executable).with_name("donjon")
CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"
TIMEOUT_S = 60


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A minimal environment: the user's cache in a temporary directory, no DONJON_* leaks."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "DONJON_CACHE_DIR": str(tmp_path / "cache"),
        "DONJON_BACKEND": "nil",
        "HOST_SECRET": "must-not-reach-the-workload",
    }


def donjon(
    env: dict[str, str],
    *args: str | Path,
    stdin: bytes = b"",
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(DONJON), *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=TIMEOUT_S,
        check=False,
    )


def write_config(tmp_path: Path, text: str, name: str = "Enarx.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_clean_error(result: subprocess.CompletedProcess[bytes], code: int, line: str) -> None:
    assert result.returncode == code, result.stderr.decode()
    assert result.stderr.decode() == f"donjon: error: {line}\n"
    assert b"Traceback" not in result.stderr


# -- running and forwarding --------------------------------------------------------------------


def test_hello_with_the_nil_warning_when_no_backend_is_chosen(
    env: dict[str, str], examples_dir: Path
) -> None:
    del env["DONJON_BACKEND"]
    result = donjon(env, "run", examples_dir / "hello.wasm")
    assert (result.returncode, result.stdout) == (0, b"Hello, world!\n")
    assert result.stderr.decode() == NIL_WARNING + "\n"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_no_warning_when_nil_is_asked_for(
    env: dict[str, str], examples_dir: Path, how: str
) -> None:
    args: list[str | Path] = ["run", examples_dir / "hello.wasm"]
    if how == "flag":
        del env["DONJON_BACKEND"]
        args[1:1] = ["--backend", "nil"]
    result = donjon(env, *args)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"Hello, world!\n", b"")


def test_stdin_is_forwarded(env: dict[str, str], examples_dir: Path) -> None:
    result = donjon(env, "run", examples_dir / "rot13.wasm", stdin=b"Hello, World!\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"Uryyb, Jbeyq!\n", b"")
    data = bytes(range(256)) * 8192  # 2 MiB, every byte value
    result = donjon(env, "run", examples_dir / "cat.wasm", stdin=data)
    assert (result.returncode, result.stdout == data) == (0, True)


def test_args_env_and_no_host_environment(env: dict[str, str], examples_dir: Path) -> None:
    result = donjon(
        env,
        "run",
        "--wasmcfgfile",
        CONFIGS / "argsenv.toml",
        examples_dir / "argsenv.wasm",
        "--",
        "-x",
        "two words",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == (
        "argc=5\n"
        "argv[0]=argsenv.wasm\n"
        "argv[1]=--greeting\n"
        "argv[2]=hello world\n"
        "argv[3]=-x\n"
        "argv[4]=two words\n"
        "env FD_COUNT=3\n"
        "env FD_NAMES=stdin:stdout:stderr\n"
        "env LANGUAGE=en\n"
        "env MODE=demo\n"
    )


def test_config_from_the_environment_variable(env: dict[str, str], examples_dir: Path) -> None:
    env["DONJON_WASMCFGFILE"] = str(CONFIGS / "null-stdin.toml")
    result = donjon(env, "run", examples_dir / "argsenv.wasm", stdin=b"ignored")
    assert b"env FD_NAMES=null:stdout:stderr\n" in result.stdout
    result = donjon(env, "run", examples_dir / "cat.wasm", stdin=b"not read: stdin is null")
    assert (result.returncode, result.stdout) == (0, b"")


def test_arguments_without_double_dash(env: dict[str, str], examples_dir: Path) -> None:
    result = donjon(env, "run", examples_dir / "exitcode.wasm", "9")
    assert result.returncode == 9
    result = donjon(env, "run", examples_dir / "argsenv.wasm", "--", "--")
    assert b"argc=2\nargv[0]=argsenv.wasm\nargv[1]=--\n" in result.stdout


@pytest.mark.parametrize("code", [0, 3, 42, 125])
def test_exit_code_is_donjons_exit_code(env: dict[str, str], examples_dir: Path, code: int) -> None:
    result = donjon(env, "run", examples_dir / "exitcode.wasm", "--", str(code))
    assert (result.returncode, result.stdout, result.stderr) == (code, b"", b"")


def test_readfile_from_a_read_only_dir(env: dict[str, str], examples_dir: Path) -> None:
    config = CONFIGS / "data-ro.toml"
    readfile = examples_dir / "readfile.wasm"
    result = donjon(env, "run", "--wasmcfgfile", config, readfile, "--", "/data/hello.txt")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        (CONFIGS / "data" / "hello.txt").read_bytes(),
        b"",
    )
    result = donjon(env, "run", "--wasmcfgfile", config, readfile, "--", "-w", "/data/x", "y")
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        b"",
        b"readfile: /data/x: Operation not permitted\n",
    )
    assert not (CONFIGS / "data" / "x").exists()


def test_writable_dir_and_no_ambient_files(
    env: dict[str, str], examples_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    config = write_config(tmp_path, '[[dirs]]\nhost = "out"\nguest = "/out"\nwritable = true\n')
    readfile = examples_dir / "readfile.wasm"
    result = donjon(env, "run", "--wasmcfgfile", config, readfile, "--", "-w", "/out/f", "data")
    assert (result.returncode, result.stdout) == (0, b"wrote /out/f\n")
    assert (tmp_path / "out" / "f").read_bytes() == b"data\n"
    result = donjon(env, "run", readfile, "--", "/etc/passwd", cwd=tmp_path)
    assert result.stderr == b"readfile: /etc/passwd: No such file or directory\n"


# -- errors: one line, a distinct exit code ----------------------------------------------------


def test_trap(env: dict[str, str], examples_dir: Path) -> None:
    result = donjon(env, "run", examples_dir / "trap.wasm")
    assert result.stdout == b"about to trap\n"
    assert_clean_error(result, 134, "trap.wasm trapped: wasm `unreachable` instruction executed")


def test_memory_limit(env: dict[str, str], examples_dir: Path) -> None:
    result = donjon(
        env, "run", "--wasmcfgfile", CONFIGS / "limits.toml", examples_dir / "memhog.wasm"
    )
    assert result.returncode == 137
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith("memhog: malloc failed after ")  # the workload's own stderr
    assert lines[1].startswith(
        "donjon: error: memory limit of 64 MiB reached: memhog.wasm could not grow its memory"
    )
    assert len(lines) == 2


def test_deadline(env: dict[str, str], examples_dir: Path) -> None:
    started = time.monotonic()
    result = donjon(
        env, "run", "--wasmcfgfile", CONFIGS / "limits.toml", examples_dir / "spin.wasm"
    )
    assert time.monotonic() - started >= 2.0
    assert result.stdout == b"spinning\n"
    assert_clean_error(result, 137, "deadline of 2.0 s reached: spin.wasm was stopped")


def test_deadline_while_blocked_in_a_host_call(
    env: dict[str, str], examples_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "[limits]\ntimeout_s = 0.3\n")
    # stdin stays open and empty: cat blocks in fd_read, where epochs cannot interrupt it.
    with subprocess.Popen(
        [str(DONJON), "run", "--wasmcfgfile", str(config), str(examples_dir / "cat.wasm")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        started = time.monotonic()
        _, err = _wait_open_stdin(proc)
        elapsed = time.monotonic() - started
    assert proc.returncode == 137
    assert err == b"donjon: error: deadline of 0.3 s reached: cat.wasm was stopped\n"
    assert elapsed < 10


def _wait_open_stdin(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    proc.wait(timeout=TIMEOUT_S)  # stdin is still open: the keep must end on its own
    return proc.stdout.read(), proc.stderr.read()


def test_not_wasm(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "notes.wasm"
    path.write_text("just text\n")
    result = donjon(env, "run", path)
    assert_clean_error(
        result,
        126,
        "notes.wasm is not a WebAssembly module: it does not start with the Wasm magic "
        "bytes \\0asm",
    )


def test_missing_module(env: dict[str, str], tmp_path: Path) -> None:
    result = donjon(env, "run", tmp_path / "nothere.wasm")
    assert_clean_error(
        result, 127, f"{tmp_path / 'nothere.wasm'} does not exist; check the module path"
    )


def test_no_start(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "lib.wasm"
    path.write_bytes(wasmtime.wat2wasm('(module (func (export "_initialize")))'))
    result = donjon(env, "run", path)
    assert_clean_error(
        result,
        128,
        "lib.wasm is a WASI reactor (a library with _initialize), not a command: it has no _start "
        "to run; build it as a program with a main function",
    )


def test_missing_import_is_named(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "needs.wasm"
    path.write_bytes(
        wasmtime.wat2wasm('(module (import "env" "host_magic" (func)) (func (export "_start")))')
    )
    result = donjon(env, "run", path)
    assert_clean_error(
        result,
        129,
        "needs.wasm imports the function env::host_magic, which the keep does not provide; a "
        "workload can import only WASI preview 1 functions (wasi_snapshot_preview1)",
    )


def test_unreadable_and_invalid_configs(
    env: dict[str, str], examples_dir: Path, tmp_path: Path
) -> None:
    hello = examples_dir / "hello.wasm"
    result = donjon(env, "run", "--wasmcfgfile", tmp_path / "none.toml", hello)
    assert_clean_error(
        result, 3, f"{tmp_path / 'none.toml'}: does not exist; write one with `donjon config init`"
    )
    bad = write_config(tmp_path, 'args = ["ok"]\n[limits]\nmemory_mib = "lots"\n')
    result = donjon(env, "run", "--wasmcfgfile", bad, hello)
    assert result.returncode == 3
    assert result.stderr.decode().startswith(f"donjon: error: {bad}:3: limits.memory_mib: ")
    assert result.stdout == b""


def test_a_listen_socket_is_granted_with_notices(
    env: dict[str, str], examples_dir: Path, tmp_path: Path
) -> None:
    # Once refused; the socket layer now provides it (tests/integration/test_sockets.py).
    config = write_config(
        tmp_path,
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
        '[[files]]\nkind = "listen"\nname = "api"\nprot = "tcp"\naddr = "127.0.0.1"\n'
        "port = 0\n",
    )
    result = donjon(env, "run", "--wasmcfgfile", config, examples_dir / "hello.wasm")
    assert (result.returncode, result.stdout) == (0, b"Hello, world!\n")
    stderr = result.stderr.decode()
    assert 'donjon: plaintext TCP on files[3] "api": the host can read and change' in stderr
    assert 'donjon: files[3] "api": listening on 127.0.0.1:' in stderr


def test_other_backends_are_unavailable(env: dict[str, str], examples_dir: Path) -> None:
    result = donjon(env, "run", "--backend", "sgx", examples_dir / "hello.wasm")
    assert_clean_error(
        result,
        1,
        "the sgx backend cannot run workloads with this donjon yet; only nil and kvm can. Run "
        "`donjon platform info` to see which backends this machine supports",
    )
    result = donjon(env, "run", "--backend", "bogus", examples_dir / "hello.wasm")
    assert result.returncode == 2
    assert b"'bogus' is not one of" in result.stderr


# -- the compiled-module cache -----------------------------------------------------------------


def _entries(env: dict[str, str]) -> list[Path]:
    return sorted((Path(env["DONJON_CACHE_DIR"]) / "modules").glob("*.cwasm"))


def test_cache_miss_hit_and_tamper(env: dict[str, str], examples_dir: Path) -> None:
    hello = examples_dir / "hello.wasm"
    first = donjon(env, "-v", "run", hello)
    assert first.stdout == b"Hello, world!\n"
    assert "hello.wasm: compiled in " in first.stderr.decode()
    (entry,) = _entries(env)
    assert oct(entry.stat().st_mode & 0o777) == "0o600"

    second = donjon(env, "-v", "run", hello)
    assert second.stdout == b"Hello, world!\n"
    assert "hello.wasm: loaded its compiled code from the cache in " in second.stderr.decode()

    blob = bytearray(entry.read_bytes())
    blob[-100] ^= 0x01  # one bit of the native code
    entry.write_bytes(bytes(blob))
    third = donjon(env, "-v", "run", hello)
    assert third.stdout == b"Hello, world!\n"
    stderr = third.stderr.decode()
    assert "failed its integrity check (HMAC mismatch); deleting it and compiling afresh" in stderr
    assert "hello.wasm: compiled in " in stderr
    assert entry.read_bytes() != bytes(blob)  # rewritten with a good entry

    fourth = donjon(env, "-v", "run", hello)
    assert "from the cache" in fourth.stderr.decode()


def test_no_cache_writes_nothing(env: dict[str, str], examples_dir: Path) -> None:
    result = donjon(env, "run", "--no-cache", examples_dir / "hello.wasm")
    assert result.stdout == b"Hello, world!\n"
    assert not Path(env["DONJON_CACHE_DIR"]).exists()


def test_default_cache_location_is_xdg(
    env: dict[str, str], examples_dir: Path, tmp_path: Path
) -> None:
    del env["DONJON_CACHE_DIR"]
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    assert donjon(env, "run", examples_dir / "hello.wasm").returncode == 0
    assert len(list((tmp_path / "xdg" / "donjon" / "modules").glob("*.cwasm"))) == 1


# -- progress on a terminal, quiet otherwise ---------------------------------------------------


def _big_module(functions: int, ops: int) -> bytes:
    """A valid module of many arithmetic functions: big enough to take a while to compile."""

    def leb(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def section(sid: int, items: Sequence[bytes]) -> bytes:
        payload = leb(len(items)) + b"".join(items)
        return bytes([sid]) + leb(len(payload)) + payload

    # (local.get 0) (i32.const k) (i32.add) (i32.const 3) (i32.mul) (local.set 0), k < 64
    body = (
        b"\x00"
        + b"".join(
            b"\x20\x00\x41" + bytes([k % 64]) + b"\x6a\x41\x03\x6c\x21\x00" for k in range(ops)
        )
        + b"\x20\x00\x0b"
    )
    bodies = [b"\x02\x00\x0b"] + [leb(len(body)) + body] * functions
    return (
        b"\0asm\x01\0\0\0"
        + section(1, [b"\x60\x00\x00", b"\x60\x01\x7f\x01\x7f"])
        + section(3, [b"\x00"] + [b"\x01"] * functions)
        + section(7, [b"\x06_start\x00\x00"])
        + section(10, bodies)
    )


def test_compile_progress_on_a_terminal_only(env: dict[str, str], tmp_path: Path) -> None:
    big = tmp_path / "big.wasm"
    # 2.5 MB: 1.5-3 s to compile here, well past the 0.5 s before the progress line appears
    big.write_bytes(_big_module(functions=2500, ops=100))
    primary, secondary = pty.openpty()
    try:
        with subprocess.Popen(
            [str(DONJON), "run", str(big)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=secondary,
            env=env,
        ) as proc:
            os.close(secondary)
            terminal = _read_all(primary, proc)
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert "donjon: compiling big.wasm (2.5 MB) [" in terminal
    assert "\x1b[Kdonjon: compiled big.wasm (2.5 MB) in " in terminal

    # the second run loads from the cache: no compile, nothing drawn
    again = donjon(env, "run", big)
    assert (again.returncode, again.stderr) == (0, b"")
    # and without a terminal a compile draws nothing either
    quiet = donjon(env, "run", "--no-cache", big)
    assert (quiet.returncode, quiet.stderr) == (0, b"")


def _read_all(fd: int, proc: subprocess.Popen[bytes]) -> str:
    chunks = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=TIMEOUT_S)
    return b"".join(chunks).decode("utf-8", "replace")


# -- signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "target"), [(signal.SIGINT, "group"), (signal.SIGTERM, "cli")])
def test_signals_stop_the_keep(
    env: dict[str, str], examples_dir: Path, sig: signal.Signals, target: str
) -> None:
    proc = subprocess.Popen(
        [str(DONJON), "run", str(examples_dir / "spin.wasm")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group, like a shell job
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"spinning\n"  # the workload is running
    if target == "group":
        os.killpg(proc.pid, sig)  # what Ctrl-C on a terminal does
    else:
        os.kill(proc.pid, sig)  # only the CLI: it passes the signal on to the keep
    assert proc.wait(timeout=TIMEOUT_S) == 128 + sig
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()


# -- start-up hygiene: what each process imports -----------------------------------------------


def test_the_cli_never_imports_wasmtime(env: dict[str, str], examples_dir: Path) -> None:
    code = (
        "import sys\n"
        "from donjon.cli.main import main\n"
        "try:\n"
        "    main(['run', '--backend', 'nil', sys.argv[1]])\n"
        "except SystemExit as e:\n"
        "    print('wasmtime' in sys.modules, e.code, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(examples_dir / "hello.wasm")],
        capture_output=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert (result.stdout, result.stderr) == (b"Hello, world!\n", b"False 0\n")


def test_the_keep_process_never_imports_the_cli_or_http_stack() -> None:
    code = (
        "import sys, donjon.keep.process, donjon.keep.executor, donjon.keep._progress\n"
        "print(sorted(m for m in ('click', 'httpx', 'starlette', 'uvicorn') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, timeout=TIMEOUT_S, check=True
    )
    assert result.stdout == b"[]\n"
