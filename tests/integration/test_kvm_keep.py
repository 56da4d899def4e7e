"""The kvm backend for real: Keeps booted in QEMU (TCG on this project's machines), the guest
image built from this host, and the launcher against a fake QEMU that speaks the guest's side.

Each real boot costs ~8-10 s under TCG, so there are five: hello, an exit code with the VM's
network checked, stdin to stdout, a trap and a deadline. Without QEMU, busybox-static or the
kernel package these tests fail and say to run scripts/ensure-qemu: they never skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from donjon.backends.kvm.image import (
    GuestImage,
    assemble,
    build_image,
    ensure_image,
    find_image,
    image_root,
    store_image,
)
from donjon.backends.kvm.launcher import KVM_WARNING, TCG_NOTICE, KvmKeepLoader
from donjon.backends.kvm.qemu import QEMU_BINARY, Accel
from donjon.errors import Error, KeepLaunchError, RemoteProtocolError
from donjon.keep.config import WorkloadConfig
from donjon.wire.frames import WorkloadFrame, encode_frame
from tests.unit.backends.kvm.test_image import inputs as image_inputs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DONJON = Path(sys.executable).with_name("donjon")
CONFIGS = REPO / "examples" / "configs"
BOOT_TIMEOUT_S = 600  # one run; TCG on a busy 2-core machine shared with another test worker
FIX = (
    "run scripts/ensure-qemu (it installs qemu-system-x86 and busybox-static and builds the image)"
)


def _host_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DONJON_")}


@pytest.fixture(scope="module")
def kvm_root() -> Path:
    """The image cache of this user, with an up-to-date image (built here if only stale)."""
    if shutil.which(QEMU_BINARY) is None:
        pytest.fail(f"{QEMU_BINARY} is not installed: {FIX}")
    root = image_root(_host_environ())
    try:
        ensure_image(root)
    except Error as e:
        pytest.fail(f"the kvm guest image cannot be built ({e.diagnostics()}): {FIX}")
    return root


@pytest.fixture
def env(kvm_root: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "DONJON_CACHE_DIR": str(kvm_root.parent),
        "DONJON_BACKEND": "kvm",
    }


def donjon(env: dict[str, str], *args: str | Path, stdin: bytes = b"") -> tuple[int, bytes, str]:
    result = subprocess.run(
        [str(DONJON), "run", *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=BOOT_TIMEOUT_S,
        check=False,
    )
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return result.returncode, result.stdout, stderr


def donjon_lines(stderr: str) -> list[str]:
    """stderr without the kvm warning, the TCG note and an image-build notice (another engineer
    may change donjon's files while the tests run, and the CLI then rebuilds the image)."""
    return [
        line
        for line in stderr.splitlines()
        if line not in {KVM_WARNING, TCG_NOTICE}
        and not line.startswith("donjon: building the kvm guest image")
    ]


# -- real boots ------------------------------------------------------------------------------


@pytest.mark.timeout(BOOT_TIMEOUT_S)
def test_hello(env: dict[str, str], examples_dir: Path) -> None:
    started = time.monotonic()
    code, out, err = donjon(env, examples_dir / "hello.wasm")
    assert (code, out) == (0, b"Hello, world!\n"), err
    lines = err.splitlines()
    assert lines[0] == KVM_WARNING
    assert (TCG_NOTICE in lines) == (KvmKeepLoader().accel is Accel.TCG)
    assert donjon_lines(err) == []
    print(f"kvm hello: {time.monotonic() - started:.1f} s from the CLI's start to its exit")


@pytest.mark.timeout(BOOT_TIMEOUT_S)
def test_exit_code_and_a_vm_without_network(
    kvm_root: Path, examples_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    wasm = (examples_dir / "exitcode.wasm").read_bytes()
    request = encode_frame(
        WorkloadFrame(
            config=WorkloadConfig().to_dict(),
            module=wasm,
            module_sha256=hashlib.sha256(wasm).digest(),
            program="exitcode.wasm",
            args=("42",),
        )
    )
    with KvmKeepLoader(cache_root=kvm_root, forward_stdin=False).start() as keep:
        keep.send(request)
        assert keep.ready is not None and keep.ready.net == ("lo",)  # no NIC: only loopback
        assert keep.ready.uptime_s > 0 and keep.boot_s is not None
        code = keep.wait()
        workdir = keep.workdir
    assert code == 42
    assert capfd.readouterr() == ("", "")
    assert not workdir.exists()  # removed after a clean run
    print(f"kvm boot to ready: {keep.boot_s:.1f} s (guest uptime {keep.ready.uptime_s:.1f} s)")


@pytest.mark.timeout(BOOT_TIMEOUT_S)
def test_stdin_to_stdout(env: dict[str, str], examples_dir: Path) -> None:
    code, out, err = donjon(env, examples_dir / "rot13.wasm", stdin=b"Hello, World!\n" * 1000)
    assert (code, out) == (0, b"Uryyb, Jbeyq!\n" * 1000), err
    assert donjon_lines(err) == []


@pytest.mark.timeout(BOOT_TIMEOUT_S)
def test_a_trap_is_134_with_its_message(env: dict[str, str], examples_dir: Path) -> None:
    code, out, err = donjon(env, examples_dir / "trap.wasm")
    assert code == 134, err
    assert out == b"about to trap\n"
    assert donjon_lines(err) == [
        "donjon: error: trap.wasm trapped: wasm `unreachable` instruction executed"
    ]


@pytest.mark.timeout(BOOT_TIMEOUT_S)
def test_the_deadline_ends_a_spinning_workload(env: dict[str, str], examples_dir: Path) -> None:
    code, out, err = donjon(
        env, "--wasmcfgfile", CONFIGS / "limits.toml", examples_dir / "spin.wasm"
    )
    assert code == 137, err
    assert out == b"spinning\n"
    assert donjon_lines(err) == ["donjon: error: deadline of 2.0 s reached: spin.wasm was stopped"]


# -- no boot ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (
            '[[files]]\nkind = "stdin"\n[[files]]\nkind = "listen"\nname = "web"\nport = 8080\n',
            '"web" (listen)',
        ),
        ('[[dirs]]\nhost = "."\nguest = "/data"\n', "[[dirs]] /data"),
    ],
)
def test_sockets_and_dirs_are_refused_before_a_vm_boots(
    env: dict[str, str], examples_dir: Path, tmp_path: Path, config: str, problem: str
) -> None:
    path = tmp_path / "Enarx.toml"
    path.write_text(config)
    started = time.monotonic()
    code, out, err = donjon(env, "--wasmcfgfile", path, examples_dir / "hello.wasm")
    assert (code, out) == (3, b"")
    assert err.startswith("donjon: error: the kvm backend cannot") and problem in err
    assert KVM_WARNING not in err  # refused before anything was started
    assert time.monotonic() - started < 30


def test_the_image_build_is_byte_reproducible(kvm_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "kvm"
    (root / "debs").mkdir(parents=True)
    for deb in (kvm_root / "debs").glob("*.deb"):
        os.link(deb, root / "debs" / deb.name)
    first = build_image(root)
    started = time.monotonic()
    shutil.rmtree(root / "images")
    for pointer in root.glob("current-*.json"):
        pointer.unlink()
    second = build_image(root)
    build_s = time.monotonic() - started
    assert second.manifest == first.manifest
    assert second.initrd.read_bytes() == first.initrd.read_bytes()
    assert hashlib.sha256(second.initrd.read_bytes()).hexdigest() == first.manifest.initrd_sha256
    assert first.manifest.modules[:4] == ("virtio_ring", "virtio", "virtio_mmio", "virtio_console")
    assert find_image(root) == second
    print(
        f"kvm image: initrd {first.manifest.initrd_bytes / 1e6:.1f} MB, kernel "
        f"{first.manifest.kernel_bytes / 1e6:.1f} MB, rebuilt in {build_s:.1f} s"
    )
    # An input that changed (here: its recorded modification time) makes the image stale.
    pointer = next(root.glob("current-*.json"))
    data = json.loads(pointer.read_text())
    data["inputs"][0][2] += 1
    pointer.write_text(json.dumps(data))
    assert find_image(root) is None


# -- the launcher against a fake QEMU ------------------------------------------------------------

FAKE_QEMU = """\
import os, socket, sys, time
sys.path[:0] = {path!r}
from donjon.backends.kvm.channel import ReadyFrame, encode_ready
from donjon.wire.frames import (
    DataFrame, ExitFrame, FrameDecoder, StdinEofFrame, WorkloadFrame, encode_frame,
)
mode = os.environ["FAKE_GUEST"]
argv = sys.argv[1:]
if mode == "fail":
    sys.stderr.write("qemu-system-x86_64: -device virtserialport: no such bus\\n")
    sys.exit(1)
chardev = argv[argv.index("-chardev") + 1]
console = argv[argv.index("-serial") + 1].removeprefix("file:")
sock = socket.socket(socket.AF_UNIX)
sock.connect(chardev.split("path=")[1])
with open(console, "w") as f:
    f.write("fake guest booted\\n")
net = ("eth0", "lo") if mode == "net" else ("lo",)
sock.sendall(encode_ready(ReadyFrame(net=net, uptime_s=1.5)))
decoder = FrameDecoder()

def frame():
    while True:
        got = decoder.next_frame()
        if got is not None:
            return got
        data = sock.recv(65536)
        if not data:
            sys.exit(0)
        decoder.feed(data)

if mode == "net":
    time.sleep(60)
workload = frame()
assert isinstance(workload, WorkloadFrame)
if mode == "vanish":
    sys.exit(0)
if mode == "rogue":
    sock.sendall(encode_frame(workload))
    time.sleep(60)
if mode == "message":
    sock.sendall(encode_frame(ExitFrame(code=3, error="ConfigFileError", message="bad config")))
    frame()  # ends at the launcher's hang-up
hello = f"{{workload.program}} {{' '.join(workload.args)}}\\n".encode()
sock.sendall(encode_frame(DataFrame("stdout", hello)) + encode_frame(DataFrame("stderr", b"e\\n")))
while True:
    got = frame()
    if isinstance(got, StdinEofFrame):
        break
    sock.sendall(encode_frame(DataFrame("stdout", got.data.upper())))
sock.sendall(encode_frame(ExitFrame(code=7)))
frame()  # the launcher closes the channel, then the "VM" powers off
"""


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GuestImage:
    """A QEMU on PATH that speaks the guest's side of the channel, and an image for it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / QEMU_BINARY
    paths = [p for p in sys.path if os.path.isabs(p)]
    script.write_text(f"#!{sys.executable}\n" + FAKE_QEMU.format(path=paths))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '')}")
    return store_image(tmp_path / "kvm", assemble(image_inputs()))


def fake_request(args: tuple[str, ...] = ("a", "b")) -> bytes:
    wasm = b"\0asm\x01\0\0\0"
    return encode_frame(
        WorkloadFrame(
            config=WorkloadConfig().to_dict(),
            module=wasm,
            module_sha256=hashlib.sha256(wasm).digest(),
            program="x.wasm",
            args=args,
        )
    )


@contextlib.contextmanager
def stdin_from(data: bytes) -> Iterator[None]:
    """This process's fd 0 reads *data* (the launcher relays fd 0, as the CLI's stdin)."""
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    saved = os.dup(0)
    os.dup2(read, 0)
    os.close(read)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def loader(image: GuestImage, *, forward_stdin: bool = False) -> KvmKeepLoader:
    return KvmKeepLoader(image=image, accel=Accel.TCG, forward_stdin=forward_stdin)


def test_fake_guest_stdio_and_exit_code(
    fake_qemu: GuestImage, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_GUEST", "echo")
    with stdin_from(b"hello keep"):
        code = loader(fake_qemu, forward_stdin=True).run(fake_request())
    assert code == 7
    assert capfd.readouterr() == ("x.wasm a b\nHELLO KEEP", "e\n")


def test_fake_guest_with_a_network_interface_is_refused(
    fake_qemu: GuestImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GUEST", "net")
    with loader(fake_qemu).start() as keep, pytest.raises(KeepLaunchError) as caught:
        keep.send(fake_request())
    assert "network interfaces ['eth0', 'lo']" in caught.value.message
    assert keep.console_log.read_text() == "fake guest booted\n"  # kept for diagnosis
    shutil.rmtree(keep.workdir)


def test_fake_guest_that_vanishes_names_its_console_log(
    fake_qemu: GuestImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GUEST", "vanish")
    with loader(fake_qemu).start() as keep:
        keep.send(fake_request())
        with pytest.raises(KeepLaunchError) as caught:
            keep.wait()
    assert caught.value.message.startswith("the Keep's VM stopped before the workload finished")
    assert caught.value.message.endswith(f"its console log is {keep.console_log}")
    assert keep.console_log.is_file()
    shutil.rmtree(keep.workdir)


def test_qemu_that_fails_at_once_says_why(
    fake_qemu: GuestImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GUEST", "fail")
    with loader(fake_qemu).start() as keep, pytest.raises(KeepLaunchError) as caught:
        keep.send(fake_request())
    assert "QEMU stopped before it connected to the Keep's socket (exit status 1)" in str(
        caught.value
    )
    assert "no such bus" in str(caught.value)
    shutil.rmtree(keep.workdir)


def test_fake_guest_error_message_and_rogue_frames(
    fake_qemu: GuestImage, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_GUEST", "message")
    assert loader(fake_qemu).run(fake_request()) == 3
    assert capfd.readouterr().err == "donjon: error: bad config\n"
    monkeypatch.setenv("FAKE_GUEST", "rogue")
    with loader(fake_qemu).start() as keep:
        keep.send(fake_request())
        with pytest.raises(RemoteProtocolError, match="WorkloadFrame frame, which only a client"):
            keep.wait()
    assert keep.console_log.is_file()  # a failed Keep keeps its log
    shutil.rmtree(keep.workdir)


def test_missing_qemu_and_missing_image_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Error) as caught:
        KvmKeepLoader(cache_root=tmp_path / "kvm").start()
    assert "install qemu-system-x86" in str(caught.value)
    fake = tmp_path / QEMU_BINARY
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(Error) as caught:
        KvmKeepLoader(cache_root=tmp_path / "kvm").start()
    assert "python -m donjon.backends.kvm.image build" in str(caught.value)


def test_image_command_show_and_build_if_needed(kvm_root: Path) -> None:
    env = {**_host_environ(), "DONJON_CACHE_DIR": str(kvm_root.parent)}
    command = [sys.executable, "-m", "donjon.backends.kvm.image"]
    built = subprocess.run(
        [*command, "build", "--if-needed", "--no-fetch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    image = find_image(kvm_root)
    assert image is not None
    assert f"kvm image {image.manifest.image_id[:16]}" in built.stdout
    shown = subprocess.run(
        [*command, "show"], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert json.loads(shown.stdout)["image_id"] == image.manifest.image_id
    assert shown.stdout == image.manifest.to_json().decode()
