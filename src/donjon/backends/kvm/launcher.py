"""The ``kvm`` keep loader: boots a QEMU micro-VM per Keep and relays its workload's stdio.

:class:`KvmKeepLoader` has the shape of :class:`~donjon.backends.nil.NilKeepLoader`:
:meth:`~KvmKeepLoader.start` boots a VM that waits for its workload, :meth:`KvmKeep.send` hands
it the request (an encoded :class:`~donjon.wire.frames.WorkloadFrame`) and :meth:`KvmKeep.wait`
relays stdin, stdout and stderr until the workload's exit code comes back.

For each Keep the loader

1. makes a private directory (``0700``) and listens there on a unix socket *before* QEMU starts
   (QEMU's chardev connects to it as a client, at once);
2. starts QEMU (:func:`~.qemu.qemu_command`) in its own session, with the image from the cache
   (:func:`~.image.ensure_image`, rebuilt when donjon or Python changed), KVM where it is
   hardware-assisted and TCG otherwise, the console into ``console.log``;
3. waits for the guest's ready frame and refuses a guest that has a network interface;
4. sends the workload frame and relays frames until the exit frame;
5. closes the channel (the guest then powers off), and kills QEMU if it is still there.

Rule 1: every phase has a hard timeout (:data:`CONNECT_TIMEOUT_S`, :data:`READY_TIMEOUT_S`, the
workload's own deadline plus :data:`RUN_GRACE_S`, :data:`EXIT_GRACE_S`), and QEMU is killed and
reaped in a ``finally`` whatever happened.
Rule 2: on failure the directory is kept and the error names its ``console.log``; on success it
is removed.
Rule 3: the guest is untrusted like any peer: frames are bounded and checked
(:mod:`donjon.wire.frames`), and an exit code outside 0..255 is a protocol error.
"""

from __future__ import annotations

import contextlib
import enum
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from donjon.backends.host_view import HostView
from donjon.backends.kvm.channel import (
    MAX_READY_BYTES,
    PORT_NAME,
    ReadyFrame,
    decode_ready,
    split_frame,
)
from donjon.backends.kvm.image import GuestImage, ensure_image, image_root
from donjon.backends.kvm.qemu import QEMU_BINARY, Accel, VmSpec, parse_tsc_khz, qemu_command
from donjon.backends.probe import hardware_kvm
from donjon.errors import (
    BackendUnavailableError,
    Error,
    KeepLaunchError,
    LimitError,
    RemoteProtocolError,
)
from donjon.wire.frames import (
    DataFrame,
    ExitFrame,
    FrameDecoder,
    StdinEofFrame,
    encode_frame,
)

__all__ = [
    "BASE_MEMORY_MIB",
    "CONNECT_TIMEOUT_S",
    "EXIT_GRACE_S",
    "KVM_WARNING",
    "READY_TIMEOUT_S",
    "RUN_GRACE_S",
    "TCG_NOTICE",
    "KvmKeep",
    "KvmKeepLoader",
    "memory_for",
]

KVM_WARNING = (
    "donjon: warning: the kvm backend isolates the workload from other workloads in a micro-VM, "
    "but not from this host, which can read and change the VM's memory (no confidentiality or "
    "integrity, no hardware evidence)"
)
"""Said once on stderr by ``donjon run --backend kvm``."""

TCG_NOTICE = (
    "donjon: note: no hardware-assisted KVM here: the VM runs under QEMU's software emulation "
    "(TCG), about 8 s to start and several times slower than the nil backend"
)
"""Said once on stderr when the VM is emulated."""

BASE_MEMORY_MIB = 256
"""VM memory for a small workload (MiB): the unpacked image (~45 MB), the kernel and two Python
processes fit with room; :func:`memory_for` adds the module's and the workload's share."""

CONNECT_TIMEOUT_S = 30.0
"""How long QEMU has to connect to the Keep's socket after it starts (seconds; it takes ms)."""

READY_TIMEOUT_S = {Accel.KVM: 60.0, Accel.TCG: 240.0}
"""How long the guest has to boot and send its ready frame (seconds): ~1 s on KVM, ~6 s under
TCG on an idle 2-core machine, several times that when the machine is busy."""

RUN_GRACE_S = 120.0
"""How long after the workload's own deadline (``[limits] timeout_s``) the loader waits for the
exit frame before it kills the VM (seconds): the guest's watchdog ends the workload itself; this
covers compiling the module under emulation, and a guest that hangs."""

EXIT_GRACE_S = 10.0
"""How long QEMU has to power off after the exit frame before it is killed (seconds)."""

_SEND_TIMEOUT_S = 60.0  # seconds, plus one per MiB of request, to hand the guest its workload
_READ_BYTES = 256 * 1024  # one read from the Keep's socket
_STDIN_BYTES = 64 * 1024  # one read from the caller's stdin
_QEMU_LOG = "qemu.log"
_CONSOLE_LOG = "console.log"
_SOCKET = "keep.sock"
_MAX_SUN_PATH_BYTES = 107  # Linux sun_path less the NUL
_FORWARDED = (signal.SIGTERM, signal.SIGHUP)  # like the nil loader, these stop the Keep


def memory_for(module_bytes: int, workload_mib: int | None) -> int:
    """The VM's memory (MiB) for a module of *module_bytes* and a workload memory cap.

    The module passes through the guest three times while it loads (the frame, the file, the
    compiler's input), and the workload's linear memory is on top.
    """
    module_mib = -(-module_bytes // (1024 * 1024))
    return BASE_MEMORY_MIB + 4 * module_mib + (workload_mib or 0)


class _State(enum.Enum):
    BOOTING = "booting"
    RUNNING = "running"
    DONE = "done"


class _SignalledError(Exception):
    """A forwarded signal (SIGTERM, SIGHUP) arrived while the Keep ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class KvmKeepLoader:
    """Starts ``kvm`` Keeps.

    Args:
        cache_root: the image cache (default: :func:`~.image.image_root` of the environment).
        image: the image to boot (default: the current one, built when out of date).
        accel: KVM or TCG (default: KVM where :func:`~donjon.backends.probe.hardware_kvm`).
        memory_mib: the VM's memory (see :func:`memory_for`).
        forward_stdin: relay this process's stdin to the workload (the CLI says whether its
            config gives it one); otherwise the workload's stdin is at its end at once.
        timeout_s: the workload's own deadline, if it has one (the run phase's timeout).
        on_notice: called with the lines to say on stderr (the TCG notice, an image build).
    """

    name = "kvm"

    def __init__(
        self,
        *,
        cache_root: Path | None = None,
        image: GuestImage | None = None,
        accel: Accel | None = None,
        memory_mib: int = BASE_MEMORY_MIB,
        forward_stdin: bool = True,
        timeout_s: float | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self._root = cache_root if cache_root is not None else image_root(os.environ)
        self._image = image
        self._accel = accel
        self._memory_mib = memory_mib
        self._forward_stdin = forward_stdin
        self._timeout_s = timeout_s
        self._notice = on_notice or (lambda line: None)

    @property
    def accel(self) -> Accel:
        """How this host runs Keeps: KVM where it is hardware-assisted, else TCG."""
        if self._accel is None:
            self._accel = Accel.KVM if hardware_kvm(HostView()) else Accel.TCG
        return self._accel

    def start(self) -> KvmKeep:
        """Boot a Keep's VM; it waits for its workload.

        Returns:
            The booting Keep: give it its request with :meth:`KvmKeep.send`.

        Raises:
            BackendUnavailableError: not an x86_64 host, no QEMU, no busybox-static or no
                kernel package (each with the command that installs it).
            KeepLaunchError: the image cannot be built or QEMU cannot be started.
        """
        if platform.machine() not in {"x86_64", "amd64"}:
            raise BackendUnavailableError(
                f"the kvm backend runs x86_64 guests on x86_64 hosts only, not {platform.machine()}"
            )
        qemu = shutil.which(QEMU_BINARY)
        if qemu is None:
            raise BackendUnavailableError(
                f"{QEMU_BINARY} is not installed: install qemu-system-x86 (Debian: "
                "`apt-get install qemu-system-x86`, or scripts/ensure-qemu)"
            )
        image = self._image or ensure_image(
            self._root,
            on_build=lambda: self._notice(
                "donjon: building the kvm guest image (after an update of donjon or Python; "
                "a few seconds)"
            ),
        )
        accel = self.accel
        tsc_khz = _host_tsc_khz() if accel is Accel.TCG else None
        workdir = _private_dir()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(workdir / _SOCKET))
            listener.listen(1)
            spec = VmSpec(
                kernel=image.kernel,
                initrd=image.initrd,
                socket=workdir / _SOCKET,
                console_log=workdir / _CONSOLE_LOG,
                accel=accel,
                memory_mib=self._memory_mib,
                tsc_khz=tsc_khz,
                cmdline=image.manifest.cmdline,
                port_name=PORT_NAME,
            )
            argv = qemu_command(spec, qemu=qemu)
            with open(workdir / _QEMU_LOG, "wb") as log:
                process = subprocess.Popen(  # noqa: S603 - QEMU with a command line we built
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a terminal's Ctrl-C is for us; we stop QEMU
                    close_fds=True,
                )
        except (OSError, Error) as e:
            listener.close()
            shutil.rmtree(workdir, ignore_errors=True)
            if isinstance(e, Error):
                raise
            raise KeepLaunchError(f"cannot start {QEMU_BINARY}: {e.strerror or e}") from e
        return KvmKeep(
            process,
            listener,
            workdir,
            accel=accel,
            forward_stdin=self._forward_stdin,
            timeout_s=self._timeout_s,
        )

    def run(self, request: bytes) -> int:
        """Boot a Keep, hand it *request* and wait for the workload's exit code."""
        with self.start() as keep:
            keep.send(request)
            return keep.wait()


class KvmKeep:
    """A booting or running ``kvm`` Keep. Use as a context manager: leaving it early stops it.

    Attributes:
        pid: QEMU's process id.
        workdir: the Keep's private directory (socket, console log).
        ready: the guest's ready frame, once :meth:`send` has it.
        boot_s: seconds from QEMU's start to the ready frame.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        listener: socket.socket,
        workdir: Path,
        *,
        accel: Accel,
        forward_stdin: bool,
        timeout_s: float | None,
    ) -> None:
        self._process = process
        self._listener = listener
        self.workdir = workdir
        self._accel = accel
        self._forward_stdin = forward_stdin
        self._timeout_s = timeout_s
        self._started = time.monotonic()
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder()
        self._state = _State.BOOTING
        self._failed = False
        self._kill = False  # stop at once (a signal), without waiting for the power-off
        self._stdin_stop: tuple[int, int] | None = None
        self._send_lock = threading.Lock()
        self.pid = process.pid
        self.ready: ReadyFrame | None = None
        self.boot_s: float | None = None

    def __enter__(self) -> KvmKeep:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is not _State.DONE:
            # Leaving early because of an error keeps the console log; Ctrl-C does not.
            self._failed = self._failed or isinstance(exc, Exception)
            self._kill = True
            self._finish()

    @property
    def console_log(self) -> Path:
        """The guest's serial console (kept when the Keep failed)."""
        return self.workdir / _CONSOLE_LOG

    def send(self, request: bytes) -> None:
        """Wait for the guest to be ready, then hand it *request* (an encoded workload frame).

        Raises:
            KeepLaunchError: QEMU stopped, the guest did not get ready in time, or it has a
                network interface.
            RemoteProtocolError: the guest's ready frame is malformed.
        """
        if self._state is not _State.BOOTING:
            raise KeepLaunchError("the kvm Keep was already given its workload")
        try:
            sock = self._accept()
            self._sock = sock
            self.ready = self._read_ready(sock)
            self.boot_s = time.monotonic() - self._started
            if self.ready.net != ("lo",):
                raise KeepLaunchError(
                    f"the Keep's VM has network interfaces {list(self.ready.net)}; it must have "
                    "none but lo, so the workload is not handed to it"
                )
            sock.settimeout(_SEND_TIMEOUT_S + len(request) / (1024 * 1024))
            sock.sendall(request)
            if not self._forward_stdin:
                sock.sendall(encode_frame(StdinEofFrame()))
            sock.settimeout(None)
        except (OSError, TimeoutError) as e:
            self._failed = True
            raise self._launch_error(f"the Keep's VM stopped taking its workload ({e})") from e
        except BaseException:
            self._failed = True
            raise
        self._state = _State.RUNNING

    def wait(self) -> int:
        """Relay stdio until the workload ends; stop the VM.

        While it runs, Ctrl-C and SIGTERM/SIGHUP sent to this process stop the Keep (QEMU is
        killed), and the result is ``128 + N``, as a shell reports a signal.

        Returns:
            The workload's exit code (as ``donjon run`` on ``nil`` reports it).

        Raises:
            KeepLaunchError: the VM stopped without an exit code.
            LimitError: the workload's deadline passed long ago and the VM did not stop it.
            RemoteProtocolError: the guest sent something the protocol does not allow.
        """
        if self._state is not _State.RUNNING or self._sock is None:
            raise KeepLaunchError("the kvm Keep has not been given its workload")
        handlers = _install_handlers()
        try:
            if self._forward_stdin:
                self._start_stdin_relay(self._sock)
            code = self._relay(self._sock)
        except KeyboardInterrupt:
            self._kill = True
            code = 128 + signal.SIGINT
        except _SignalledError as e:
            self._kill = True
            code = 128 + e.signum
        except BaseException:
            self._failed = True
            raise
        finally:
            _restore_handlers(handlers)
            self._finish()
        return code

    def cancel(self) -> None:
        """Stop the Keep (QEMU is killed) and clean up."""
        if self._state is not _State.DONE:
            self._kill = True
            self._finish()

    # -- phases ------------------------------------------------------------------------------

    def _accept(self) -> socket.socket:
        deadline = self._started + CONNECT_TIMEOUT_S
        self._listener.settimeout(0.1)
        while True:
            try:
                sock, _ = self._listener.accept()
                return sock
            except TimeoutError:
                pass
            self._check_alive("before it connected to the Keep's socket")
            if time.monotonic() > deadline:
                raise self._launch_error(
                    f"QEMU did not connect to the Keep's socket within {CONNECT_TIMEOUT_S} s"
                )

    def _read_ready(self, sock: socket.socket) -> ReadyFrame:
        timeout = READY_TIMEOUT_S[self._accel]
        deadline = time.monotonic() + timeout
        buffer = bytearray()
        while True:
            taken = split_frame(buffer, max_bytes=MAX_READY_BYTES)
            if taken is not None:
                payload, rest = taken
                self._decoder.feed(bytes(rest))
                return decode_ready(payload)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._launch_error(
                    f"the Keep's VM did not start within {timeout:.0f} s "
                    f"({self._accel} acceleration)"
                )
            sock.settimeout(min(remaining, 0.5))
            try:
                data = sock.recv(_READ_BYTES)
            except TimeoutError:
                self._check_alive("while the VM was booting")
                continue
            except OSError:
                data = b""
            if not data:
                self._check_alive("while the VM was booting")
                raise self._launch_error("the Keep's VM closed its channel while booting")
            buffer += data

    def _relay(self, sock: socket.socket) -> int:
        deadline = (
            None if self._timeout_s is None else time.monotonic() + self._timeout_s + RUN_GRACE_S
        )
        out = _Output()
        while True:
            frame = self._decoder.next_frame()
            if frame is None:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise LimitError(
                            f"deadline of {self._timeout_s} s reached and the Keep's VM did "
                            "not stop the workload; the VM was killed"
                        )
                    sock.settimeout(remaining)
                try:
                    data = sock.recv(_READ_BYTES)
                except TimeoutError:
                    continue
                except OSError:
                    data = b""  # reset by a guest that went away with bytes unread
                if not data:
                    raise self._launch_error("the Keep's VM stopped before the workload finished")
                self._decoder.feed(data)
                continue
            if isinstance(frame, DataFrame) and frame.stream in {"stdout", "stderr"}:
                out.write(1 if frame.stream == "stdout" else 2, frame.data)
            elif isinstance(frame, ExitFrame):
                if frame.message:
                    out.write(2, f"donjon: error: {frame.message}\n".encode())
                return frame.code
            else:
                raise RemoteProtocolError(
                    f"the Keep's VM sent a {type(frame).__name__} frame, which only a client sends"
                )

    def _start_stdin_relay(self, sock: socket.socket) -> None:
        self._stdin_stop = os.pipe()
        stop = self._stdin_stop[0]

        def pump() -> None:
            while True:
                try:
                    readable, _, _ = select.select([0, stop], [], [])
                    if stop in readable:
                        return
                    data = os.read(0, _STDIN_BYTES)
                except (OSError, ValueError):
                    data = b""  # a closed or unreadable stdin ends like an empty one
                frame = DataFrame("stdin", data) if data else StdinEofFrame()
                try:
                    with self._send_lock:
                        sock.sendall(encode_frame(frame))
                except OSError:
                    return  # the Keep is gone: nothing more to relay
                if not data:
                    return

        threading.Thread(target=pump, name="donjon-kvm-stdin", daemon=True).start()

    # -- the end -----------------------------------------------------------------------------

    def _finish(self) -> None:
        """Close the channel, let QEMU power off (or kill it), clean up (Rule 1, Rule 2)."""
        self._state = _State.DONE
        if self._stdin_stop is not None:
            with contextlib.suppress(OSError):
                os.write(self._stdin_stop[1], b"x")
        for closable in (self._sock, self._listener):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()
        try:
            self._process.wait(timeout=0 if self._failed or self._kill else EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self._process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
            if self._stdin_stop is not None:
                for fd in self._stdin_stop:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        if self._failed:
            with contextlib.suppress(OSError):
                (self.workdir / _SOCKET).unlink()
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _check_alive(self, when: str) -> None:
        code = self._process.poll()
        if code is not None:
            raise self._launch_error(f"QEMU stopped {when} (exit status {code})")

    def _launch_error(self, what: str) -> KeepLaunchError:
        self._failed = True
        detail = _last_line(self.workdir / _QEMU_LOG)
        return KeepLaunchError(
            f"{what}{f': {detail}' if detail else ''}; its console log is {self.console_log}"
        )


class _Output:
    """Writes to this process's stdout/stderr; a reader that went away loses the rest."""

    def __init__(self) -> None:
        self._closed: set[int] = set()

    def write(self, fd: int, data: bytes) -> None:
        if fd in self._closed:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            self._closed.add(fd)


def _install_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may change signal handlers

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _SignalledError(signum)

    return {sig: signal.signal(sig, stop) for sig in _FORWARDED}


def _restore_handlers(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _private_dir() -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="donjon-kvm-"))  # 0700
    if len(os.fsencode(str(workdir / _SOCKET))) > _MAX_SUN_PATH_BYTES:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir = Path(tempfile.mkdtemp(prefix="donjon-kvm-", dir="/tmp"))
    return workdir


def _host_tsc_khz() -> int | None:
    def read(path: str) -> str | None:
        try:
            with open(path) as f:
                return f.read(1024 * 1024)
        except OSError:
            return None

    cpuinfo = read("/proc/cpuinfo") or ""
    found = parse_tsc_khz(cpuinfo, sysfs_khz=read("/sys/devices/system/cpu/cpu0/tsc_freq_khz"))
    if found is not None:
        return found
    try:  # the kernel log, where this user may read it
        dmesg = ["dmesg"]  # found on PATH, like any tool a user runs
        log = subprocess.run(  # noqa: S603 - a fixed command line
            dmesg, capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_tsc_khz(cpuinfo, kernel_log=log)


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line), "")
