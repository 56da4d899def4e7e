"""The guest agent of a ``kvm`` Keep: the program the micro-VM's ``/init`` executes as PID 1.

``/init`` (a busybox shell script built by :mod:`donjon.backends.kvm.image`) mounts ``/proc``,
``/sys`` and ``/dev``, loads the virtio modules and executes
``python -S -E -s -B -m donjon.keep.vmguest``. The agent then

1. finds the virtio-serial port named ``donjon.0`` (:data:`~donjon.backends.kvm.channel.PORT_NAME`)
   and sends the ready frame, which lists the VM's network interfaces (only ``lo``: the VM has no
   network device, and the host refuses to go on otherwise);
2. receives one :class:`~donjon.wire.frames.WorkloadFrame` (config, module, digest, program, args)
   and checks it as hostile input: the config is validated again, the digest recomputed;
3. runs it exactly as ``donjon run`` runs a ``nil`` workload: it starts the ``nil`` keep process
   (``python -m donjon.keep.process --request-fd N``, :mod:`donjon.keep.process`) with a
   :class:`~donjon.keep.request.KeepRequest`, so limits, the deadline watchdog, error messages and
   exit codes (0-125 the workload's, 126-129 bad modules, 134 trap, 137 limits) are the same code;
4. streams the keep process's stdout and stderr to the host as data frames and the host's stdin
   frames into it, then sends an exit frame with its exit status;
5. powers the VM off (``o`` to ``/proc/sysrq-trigger``) once the host has closed the channel.

``python -m donjon.keep.vmguest --trace`` runs on the *host* when the image is built: it imports
and exercises what the agent and the keep process use, and prints the files those imports
loaded, so the image carries exactly those (plus a margin).

Rule 1: as the VM's PID 1 the agent never exits on its own: every way out, errors included,
ends in a power-off. (Should the power-off fail, PID 1 exits, the kernel panics, and ``panic=-1``
with QEMU's ``-no-reboot`` still end the VM.) It refuses to run as any other PID, so it can
never power off a host by mistake.
Rule 2: the host is untrusted: every frame is bounded and checked (:mod:`donjon.wire.frames`),
and a host that goes away ends the workload and the VM.
Rule 3: writes to the port are whole frames under one lock, in write-all loops (virtio-serial
writes may be partial).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, NoReturn

from donjon.backends.kvm.channel import PORT_NAME, ReadyFrame, encode_ready
from donjon.errors import Error, LimitError, RemoteProtocolError, UsageError, WorkloadError
from donjon.keep.config import WorkloadConfig
from donjon.keep.errors import UnsupportedConfigError
from donjon.keep.request import KeepRequest
from donjon.wire.frames import (
    MAX_DATA_FRAME_BYTES,
    DataFrame,
    ExitFrame,
    Frame,
    FrameDecoder,
    StdinEofFrame,
    WorkloadFrame,
    encode_frame,
)

__all__ = ["KEEP_PROCESS_MODULE", "kvm_config_problem", "main"]

KEEP_PROCESS_MODULE = "donjon.keep.process"
"""The keep process the agent starts for the workload (the ``nil`` backend's)."""

PORT_WAIT_S = 30.0
"""How long the agent waits for the virtio port to appear after the modules load (seconds)."""

WORKLOAD_WAIT_S = 300.0
"""How long the agent waits for the host's first workload byte, or between two reads of the
workload frame, before it powers off (seconds): the host sends at once after the ready frame."""

HANGUP_WAIT_S = 5.0
"""How long the agent waits, after its exit frame, for the host to close the channel (seconds)."""

MODULE_DIR = Path("/run/donjon")
"""Where the workload's module is written in the VM's memory-backed root file system."""

_READ_BYTES = 256 * 1024  # one read from the port
_RELAY_BYTES = 64 * 1024  # one read from the keep process's stdout/stderr (< 1 MiB frame limit)
_IDLE_POLL_S = 0.01  # the port reads 0 bytes while the host end is not connected yet
_INTERNAL_ERROR = WorkloadError.exit_code
_CHILD_BOOTSTRAP = (
    "import sys; i = sys.argv.index('--'); sys.path[:0] = sys.argv[1:i]; "
    f"del sys.argv[1 : i + 1]; from {KEEP_PROCESS_MODULE} import main; main()"
)


def kvm_config_problem(config: WorkloadConfig) -> str | None:
    """Why the ``kvm`` backend cannot run *config* yet, or ``None`` when it can.

    The VM has no network device and no shared directory, so ``listen``/``connect`` files and
    ``[[dirs]]`` are refused (the CLI before it boots a VM, the agent again inside it).
    """
    sockets = [f for f in config.effective_files() if f.is_socket]
    if sockets:
        names = ", ".join(f'"{f.name}" ({f.kind.value})' for f in sockets)
        return (
            f"the kvm backend cannot give a workload sockets yet (files {names}): its VM has "
            "no network device. Run it with --backend nil, or remove the listen/connect files"
        )
    if config.dirs:
        guests = ", ".join(d.guest for d in config.dirs)
        return (
            f"the kvm backend cannot share host directories with its VM yet ([[dirs]] {guests}). "
            "Run it with --backend nil, or remove the [[dirs]] entries"
        )
    return None


def main(argv: list[str] | None = None) -> NoReturn:
    """Run as the VM's init (no arguments) or trace the imports (``--trace``, on the host)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--trace"]:
        _trace()
        sys.stdout.flush()
        os._exit(0)
    if args or os.getpid() != 1:
        sys.stderr.write(
            "donjon: error: donjon.keep.vmguest is the init program of a kvm Keep's VM and runs "
            "only as PID 1 there (`--trace` lists its imports)\n"
        )
        sys.exit(UsageError.exit_code)
    try:
        _serve()
    except BaseException:  # Rule 1: whatever happened, say it on the console and power off
        traceback.print_exc()
    _power_off()


# -- the agent -------------------------------------------------------------------------------


class _Port:
    """The virtio-serial port: whole frames out under a lock (Rule 3), bytes in."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self.connected = False  # the host has sent something: from now on 0 bytes is a hang-up

    def send(self, frame: bytes) -> None:
        with self._lock:
            view = memoryview(frame)
            while view:
                view = view[os.write(self.fd, view) :]

    def read(self, timeout_s: float | None) -> bytes:
        """Bytes from the host; ``b""`` when the host hung up, or nothing came in *timeout_s*."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return b""
            if not poller.poll(None if remaining is None else max(1, int(remaining * 1000))):
                return b""
            data = os.read(self.fd, _READ_BYTES)
            if data:
                self.connected = True
                return data
            if self.connected:
                return b""
            time.sleep(_IDLE_POLL_S)  # virtio-serial reads 0 until the host end is open


def _serve() -> None:
    port = _Port(os.open(_find_port(PORT_NAME), os.O_RDWR | os.O_CLOEXEC))
    port.send(encode_ready(ReadyFrame(net=_interfaces(), uptime_s=_uptime())))
    decoder = FrameDecoder()
    reader: threading.Thread | None = None
    try:
        frame = _receive_workload(port, decoder)
        request = _keep_request(frame)
        del frame  # the module's bytes are in the file now; the VM's memory is small
        code, error, reader = _run(port, decoder, request)
    except Error as e:
        code, error = e.exit_code, e
    port.send(encode_frame(_exit_frame(code, error)))
    # The host closes the channel once it has the exit frame; then the VM can go (the reader
    # thread powers it off when it sees that).
    if reader is not None:
        reader.join(HANGUP_WAIT_S)
    else:
        port.read(HANGUP_WAIT_S)


def _find_port(name: str) -> str:
    deadline = time.monotonic() + PORT_WAIT_S
    base = Path("/sys/class/virtio-ports")
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for entry in sorted(base.iterdir()):
                with contextlib.suppress(OSError):
                    if (entry / "name").read_text().strip() == name:
                        return f"/dev/{entry.name}"
        time.sleep(_IDLE_POLL_S)
    raise RemoteProtocolError(f"no virtio-serial port named {name} after {PORT_WAIT_S} s")


def _interfaces() -> tuple[str, ...]:
    try:
        return tuple(sorted(os.listdir("/sys/class/net")))
    except OSError:
        return ()


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def _receive_workload(port: _Port, decoder: FrameDecoder) -> WorkloadFrame:
    while True:
        frame = decoder.next_frame()
        if isinstance(frame, WorkloadFrame):
            return frame
        if frame is not None:
            raise RemoteProtocolError(f"the host sent {type(frame).__name__} before the workload")
        data = port.read(WORKLOAD_WAIT_S)
        if not data:
            raise RemoteProtocolError("the host sent no workload; powering off")
        decoder.feed(data)


def _keep_request(frame: WorkloadFrame) -> KeepRequest:
    """Check the workload frame and write its module where the keep process will read it."""
    config = WorkloadConfig.from_dict(frame.config)
    problem = kvm_config_problem(config)
    if problem is not None:
        raise UnsupportedConfigError(problem)
    if not hmac.compare_digest(hashlib.sha256(frame.module).digest(), frame.module_sha256):
        raise RemoteProtocolError("the workload's module does not match its SHA-256 digest")
    program = frame.program or "main.wasm"
    if program in {".", ".."}:
        raise RemoteProtocolError(f"the workload's program name {program!r} is not a file name")
    MODULE_DIR.mkdir(parents=True, exist_ok=True)
    path = MODULE_DIR / program
    path.write_bytes(frame.module)
    return KeepRequest(module=path, program=program, args=frame.args, config=config)


def _run(
    port: _Port, decoder: FrameDecoder, request: KeepRequest
) -> tuple[int, Error | None, threading.Thread]:
    """Run the keep process with *request*; its exit code, an error to report, the host reader."""
    request_read, request_write = os.pipe()
    try:
        child = subprocess.Popen(  # noqa: S603 - this interpreter and our own module
            [
                sys.executable,
                "-I",
                "-S",
                "-B",
                "-c",
                _CHILD_BOOTSTRAP,
                *[p for p in sys.path if os.path.isabs(p)],
                "--",
                "--request-fd",
                str(request_read),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(request_read,),
            env={},
        )
    except OSError as e:
        os.close(request_write)
        raise WorkloadError(f"cannot start the keep process in the VM: {e.strerror or e}") from e
    finally:
        os.close(request_read)
    if child.stdin is None or child.stdout is None or child.stderr is None:  # asked for pipes
        raise WorkloadError("the keep process in the VM has no stdio pipes")
    oom_before = _oom_kills()
    relays = [
        _thread(_relay, child.stdout, "stdout", port),
        _thread(_relay, child.stderr, "stderr", port),
    ]
    reader = _thread(_feed_stdin, port, decoder, child.stdin, child)
    with contextlib.suppress(BrokenPipeError):
        _write_all(request_write, request.encode())
    os.close(request_write)
    status = child.wait()
    for relay in relays:
        relay.join()
    code = 128 - status if status < 0 else status
    if status == -signal.SIGKILL and _oom_kills() > oom_before:
        return (
            code,
            LimitError(
                f"the Keep's VM ran out of memory ({_memory_mib()} MiB) and its kernel stopped "
                "the workload; set [limits] memory_mib in the workload config, which also sizes "
                "the VM"
            ),
            reader,
        )
    return code, None, reader


def _thread(target: Callable[..., None], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _relay(pipe: IO[bytes], stream: str, port: _Port) -> None:
    fd = pipe.fileno()
    while True:
        data = os.read(fd, _RELAY_BYTES)
        if not data:
            return
        for start in range(0, len(data), MAX_DATA_FRAME_BYTES):
            port.send(encode_frame(DataFrame(stream, data[start : start + MAX_DATA_FRAME_BYTES])))


def _feed_stdin(
    port: _Port, decoder: FrameDecoder, stdin: IO[bytes], child: subprocess.Popen[bytes]
) -> None:
    fd: int | None = stdin.fileno()
    try:
        while True:
            frame: Frame | None = decoder.next_frame()
            if frame is None:
                data = port.read(None)
                if not data:
                    # Rule 2: the host went away (after the exit frame, or killed): so do the
                    # workload and the VM. Nothing more can be written: a virtio port whose
                    # host end is closed blocks writers.
                    with contextlib.suppress(OSError):
                        child.kill()
                    _power_off()
                decoder.feed(data)
                continue
            if isinstance(frame, DataFrame) and frame.stream == "stdin":
                if fd is not None:
                    try:
                        _write_all(fd, frame.data)
                    except BrokenPipeError:
                        _close(stdin)  # the workload stopped reading; drop the rest
                        fd = None
            elif isinstance(frame, StdinEofFrame):
                _close(stdin)
                fd = None
            else:
                raise RemoteProtocolError(f"the host sent {type(frame).__name__} during the run")
    except (Error, OSError):
        traceback.print_exc()
    _close(stdin)
    with contextlib.suppress(OSError):
        child.kill()


def _close(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        stream.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _exit_frame(code: int, error: Error | None) -> ExitFrame:
    if error is None:
        return ExitFrame(code=code)
    if not 0 <= code <= 255:
        code = _INTERNAL_ERROR
    return ExitFrame(code=code, error=type(error).__name__, message=error.diagnostics())


def _oom_kills() -> int:
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _memory_mib() -> int:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return 0


def _power_off() -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    with contextlib.suppress(OSError), open("/proc/sysrq-trigger", "w") as trigger:
        trigger.write("o")
    time.sleep(10)  # the power-off runs asynchronously in the kernel
    os._exit(_INTERNAL_ERROR)  # Rule 1: PID 1 exiting panics the kernel, which ends the VM too


# -- the import trace (runs on the host, at image build time) ----------------------------------

# Two tiny WASI commands: one writes and exits 3, one traps. Together with a deadline and a
# memory limit they take the executor through the paths a workload can take.
_TRACE_OK = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $x (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 3))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $x (i32.const 3))))"""
_TRACE_TRAP = '(module (memory (export "memory") 1) (func (export "_start") unreachable))'


def _trace() -> None:
    """Exercise the agent and the keep process, then print the files their imports loaded."""
    import importlib
    import logging

    import wasmtime

    # What donjon.keep.process imports lazily, and what the keep process runs.
    from donjon.keep import process  # noqa: F401 - loaded for its imports
    from donjon.keep._progress import CompileProgress  # noqa: F401 - imported by process
    from donjon.keep.cache import ModuleCache  # noqa: F401 - imported by process
    from donjon.keep.config import parse_config
    from donjon.keep.executor import CapturedStdio, InheritedStdio, KeepRuntime  # noqa: F401
    from donjon.keep.module import read_module_file  # noqa: F401 - imported by process
    from donjon.keep.plan import Invocation
    from donjon.keep.secret_files import SecretFiles

    # Beyond what runs below: `python -m` (how /init starts the agent), the suggestions of a
    # config error, and codecs a workload's config or output may ask for.
    for margin in ("runpy", "difflib", "encodings.ascii", "encodings.latin_1"):
        importlib.import_module(margin)
    logging.getLogger("donjon").addHandler(logging.StreamHandler(sys.stderr))
    config = parse_config("[limits]\nmemory_mib = 16\ntimeout_s = 30.0\n")
    KeepRequest.decode(KeepRequest(module=Path("/x.wasm"), program="x.wasm").encode())
    with SecretFiles() as written:  # the keep process writes a workload's file secrets with it
        written.write(config, {})
    with KeepRuntime() as runtime:
        for wat, deadline in ((_TRACE_OK, False), (_TRACE_OK, True), (_TRACE_TRAP, False)):
            wasm = bytes(wasmtime.wat2wasm(wat))
            module = runtime.load(wasm, name="trace.wasm", deadline=deadline)
            invocation = Invocation.from_config(
                config if deadline else WorkloadConfig(), program="trace.wasm"
            )
            try:
                runtime.run(module, invocation, CapturedStdio())
            except Error as e:
                e.diagnostics()
                traceback.format_exc()
    # The agent's own frames, both ways.
    decoder = FrameDecoder()
    decoder.feed(
        encode_frame(WorkloadFrame(config={}, module=b"", module_sha256=bytes(32), args=("a",)))
        + encode_frame(DataFrame("stdin", b"x"))
        + encode_frame(StdinEofFrame())
        + encode_frame(ExitFrame(code=1, error="E", message="m"))
    )
    while decoder.next_frame() is not None:
        pass
    encode_ready(ReadyFrame(net=("lo",), uptime_s=1.0))
    files = sorted(
        {
            str(Path(module_file))
            for module in list(sys.modules.values())
            if isinstance(module_file := getattr(module, "__file__", None), str)
        }
    )
    json.dump({"files": files, "stdlib": os.path.dirname(os.__file__)}, sys.stdout)


if __name__ == "__main__":
    main()
