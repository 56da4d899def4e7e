"""Test support for the deploy flow: real services on 127.0.0.1 port 0, and a hostile host's tools.

Everything here runs for real: uvicorn servers (in a thread, or ``donjon`` processes), keep
loaders and keep runtimes as processes, real TLS, real wasmtime, real nil evidence signed by a
development key that each test pins in its own ``tmp_path`` (``DONJON_NIL_DEV_KEY``).

The hostile host plugs into the seams the keep manager has for exactly this:

- ``Launcher`` (``donjon.host.core``): :class:`RewritingLauncher` edits the launch parameters
  before the real loader reads them (another nonce, a rogue Steward); :class:`ImpostorLauncher`
  starts an impostor keep runtime instead of the loader, or points the Keep's socket at an
  earlier Keep's;
- ``RelayTap`` (``donjon.host.app``): :class:`RelayRecorder` records every chunk the relay
  carries and may flip or drop some.

``python -m tests.integration.deploy_support impostor KEEP_DIR MODE`` is the impostor keep
runtime (see :func:`_impostor_main`). It records every plaintext byte a client sends it in
``KEEP_DIR/impostor.received`` and one line per connection in ``KEEP_DIR/impostor.log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from donjon._unixpath import unix_socket_path
from donjon.client.deploy import (
    DeployOptions,
    DeployResult,
    RegistryWorkload,
    Workload,
    deploy,
)
from donjon.crypto.ca import CertificateAuthority
from donjon.crypto.ratls import certificate_pem
from donjon.host.app import RelayTap, create_app
from donjon.host.auth import Principal, TokenStore
from donjon.host.core import KeepManager, Launcher
from donjon.host.launcher import ProcessLauncher
from donjon.host.store import KeepStore, write_atomic
from donjon.wire.cbor import decode, encode

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "build" / "examples"
START_TIMEOUT_S = 30.0
"""How long a service or Keep may take to come up on a loaded 2-core machine (seconds)."""
MARKER_SECTION = "donjon-test-marker"


# -- environment -------------------------------------------------------------------------------


def pin_dev_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point ``DONJON_NIL_DEV_KEY`` at a key in *tmp_path*; Keeps started from here inherit it."""
    path = tmp_path / "devkey" / "nil-dev-key.pem"
    monkeypatch.setenv("DONJON_NIL_DEV_KEY", str(path))
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a ``donjon`` subprocess: ours (pinned dev key included) plus *extra*."""
    env = dict(os.environ)
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


# -- workloads ---------------------------------------------------------------------------------


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def marked_module(base: bytes, marker: bytes, *, size: int = 192 * 1024) -> bytes:
    """*base* with a custom section holding *marker* repeated to about *size* bytes.

    A custom section (id 0) changes nothing about how the module runs, so the module is still
    the workload; the marker lets a test search everything an attacker saw for any of its bytes.
    """
    name = MARKER_SECTION.encode()
    payload = (marker * (size // len(marker) + 1))[:size]
    body = _leb128(len(name)) + name + payload
    return base + b"\x00" + _leb128(len(body)) + body


# -- Steward -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StewardHandle:
    url: str
    ca: x509.Certificate
    core: Any = None  # the StewardCore serving (a test may change its policy while it runs)

    @property
    def ca_pem(self) -> bytes:
        return certificate_pem(self.ca)

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.ca_pem)
        return path


@contextlib.contextmanager
def running_steward(
    policy: Any = None, secrets: Any = None, cert_lifetime: timedelta | None = None
) -> Iterator[StewardHandle]:
    """A real Steward (uvicorn in a thread, port 0) with a fresh CA and the real clock, and
    *secrets* (a ``SecretStore``) to release under the policy's ``[steward.secrets]``."""
    from donjon.steward.config import DEFAULT_CERT_LIFETIME, StewardPolicy
    from donjon.steward.core import StewardCore, SystemClock
    from tests.unit.steward._support import running

    ca = CertificateAuthority.create(now=datetime.now(UTC), lifetime=timedelta(days=2))
    core = StewardCore(
        ca,
        policy or StewardPolicy.dev(),
        clock=SystemClock(),
        secrets=secrets,
        cert_lifetime=cert_lifetime or DEFAULT_CERT_LIFETIME,
    )
    with running(core) as url:
        yield StewardHandle(url, ca.certificate, core)


# -- keep manager ------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI *app* as the keep manager does (h11, sans-io websockets) on port 0."""
    import uvicorn

    from donjon.steward.app import bind_socket, listening

    sock = bind_socket("127.0.0.1", 0)
    config = uvicorn.Config(
        app,
        http="h11",
        ws="websockets-sansio",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        ws_max_size=1024 * 1024,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=START_TIMEOUT_S)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield listening(sock, tls=False).url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class ManagerHandle:
    """A keep manager served in this process, with its state dir and admin token."""

    url: str
    token: str
    state_dir: Path
    manager: KeepManager
    tokens: TokenStore
    token_files: dict[str, Path] = field(default_factory=dict)

    def add_token(self, name: str) -> str:
        token = self.tokens.add(name)
        path = self.state_dir.parent / f"{name}.token"
        path.write_text(token + "\n")
        path.chmod(0o600)
        self.token_files[name] = path
        return token

    @property
    def token_file(self) -> Path:
        return self.token_files["admin"]

    def keep_dir(self, keep_id: str) -> Path:
        return self.manager.keep_dir(keep_id)


def deploy_options(
    host: ManagerHandle, steward: StewardHandle | None = None, **kw: Any
) -> DeployOptions:
    """Options to deploy to *host* with its admin token, attested by *steward* when given."""
    if steward is not None:
        kw = {"steward": steward.url, "steward_ca": steward.ca, **kw}
    return DeployOptions(host=host.url, token=host.token, **kw)


def deploy_captured(
    workload: Workload | RegistryWorkload, options: DeployOptions, stdin: Any = None
) -> tuple[DeployResult, bytes, bytes]:
    """Deploy *workload* in process; the result and what the workload wrote to stdout, stderr."""
    out, err = io.BytesIO(), io.BytesIO()
    result = deploy(workload, options, stdout=out, stderr=err, stdin=stdin)
    return result, out.getvalue(), err.getvalue()


def stop_all_keeps(state_dir: Path, manager: KeepManager) -> None:
    """Stop every live Keep recorded in *state_dir* (and reap finished loaders)."""
    for record in list(KeepStore(state_dir).all()):
        with contextlib.suppress(Exception):
            manager.stop(Principal(record.owner), record.id)


@contextlib.contextmanager
def running_manager(
    state_dir: Path,
    *,
    launcher: Launcher | None = None,
    relay_tap: RelayTap | None = None,
) -> Iterator[ManagerHandle]:
    """A real keep manager app (uvicorn in a thread) over *state_dir*, launching real loaders
    unless a hostile *launcher* is given. Every Keep is stopped when the block ends."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tokens = TokenStore(state_dir / "tokens")
    own_launcher = ProcessLauncher() if launcher is None else None
    manager = KeepManager(KeepStore(state_dir), launcher or own_launcher)  # type: ignore[arg-type]
    handle_tokens: dict[str, Path] = {}
    try:
        with serving(create_app(manager, tokens, relay_tap=relay_tap)) as url:
            handle = ManagerHandle(url, "", state_dir, manager, tokens, handle_tokens)
            handle.token = handle.add_token("admin")
            try:
                yield handle
            finally:
                stop_all_keeps(state_dir, manager)
    finally:
        if own_launcher is not None:
            own_launcher.close()


# -- hostile launchers -------------------------------------------------------------------------


class RewritingLauncher:
    """A host that edits the launch parameters, then starts the real loader (and real Keep)."""

    def __init__(self, rewrite: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._rewrite = rewrite
        # Cold loaders: a spare would outlive the test (nobody closes this launcher).
        self._inner = ProcessLauncher(spare=False)

    def start(self, keep_dir: Path) -> int:
        params = decode((keep_dir / "launch.cbor").read_bytes())
        write_atomic(keep_dir / "launch.cbor", encode(self._rewrite(dict(params))))
        return self._inner.start(keep_dir)

    def alive(self, pid: int, keep_dir: Path) -> bool:
        return self._inner.alive(pid, keep_dir)

    def terminate(self, pid: int, keep_dir: Path) -> None:
        self._inner.terminate(pid, keep_dir)


class ImpostorLauncher:
    """A host that starts its own keep runtime (``deploy_support impostor``) instead of donjon's.

    Modes: ``no-evidence`` (a self-signed certificate without evidence), ``wrong-measurement``
    (genuine nil evidence, or a genuine Steward certificate, for another keep runtime),
    ``replay=PATH`` (the Keep's socket is an earlier Keep's socket at PATH).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, keep_dir: Path) -> int:
        with (keep_dir / "impostor.stderr").open("ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.deploy_support",
                    "impostor",
                    str(keep_dir),
                    self.mode,
                ],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._children[proc.pid] = proc
        return proc.pid

    def alive(self, pid: int, keep_dir: Path) -> bool:
        proc = self._children.get(pid)
        return proc is not None and proc.poll() is None

    def terminate(self, pid: int, keep_dir: Path) -> None:
        proc = self._children.get(pid)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def impostor_received(keep_dir: Path) -> bytes:
    path = keep_dir / "impostor.received"
    return path.read_bytes() if path.exists() else b""


def impostor_log(keep_dir: Path) -> list[str]:
    path = keep_dir / "impostor.log"
    return path.read_text().splitlines() if path.exists() else []


# -- relay tap ---------------------------------------------------------------------------------


Mutation = Callable[[str, int, bytes], bytes | None]
"""(direction, index of the chunk in that direction, chunk) -> what to forward (None: drop)."""


class RelayRecorder:
    """A ``RelayTap`` that records every chunk the relay carries, as received and as forwarded."""

    def __init__(self, mutate: Mutation | None = None) -> None:
        self._mutate = mutate
        self._lock = threading.Lock()
        self.received: list[tuple[str, bytes]] = []
        self.forwarded: list[tuple[str, bytes]] = []
        self.mutated = 0

    def __call__(self, direction: str, chunk: bytes) -> bytes | None:
        with self._lock:
            index = sum(1 for d, _ in self.received if d == direction)
            self.received.append((direction, chunk))
            out = chunk if self._mutate is None else self._mutate(direction, index, chunk)
            if out != chunk:
                self.mutated += 1
            if out is not None:
                self.forwarded.append((direction, out))
            return out

    def carried(self, direction: str | None = None) -> bytes:
        """Every byte the relay saw (received and forwarded), in *direction* or both."""
        with self._lock:
            chunks = [c for d, c in self.received + self.forwarded if direction in (None, d)]
        return b"".join(chunks)

    def bytes_to_keep(self) -> int:
        with self._lock:
            return sum(len(c) for d, c in self.received if d == "to-keep")


def flip_byte(chunk: bytes, at: int | None = None) -> bytes:
    i = len(chunk) // 2 if at is None else at
    return chunk[:i] + bytes([chunk[i] ^ 0x01]) + chunk[i + 1 :]


# -- donjon processes --------------------------------------------------------------------------


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def start_service(args: list[str], stderr_path: Path) -> Service:
    """Start ``donjon ARGS`` (e.g. ``host serve --listen 127.0.0.1:0 ...``); wait for its URL."""
    with stderr_path.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "donjon", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=child_env(),
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(b"listening on "):
            return Service(proc, line.split()[-1].decode(), stderr_path)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise AssertionError(f"donjon {' '.join(args)} did not start:\n{stderr_path.read_text()}")


def run_donjon(
    args: list[str],
    *,
    timeout: float = 120.0,
    input_bytes: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the ``donjon`` CLI as a process (environment: ours plus *env*); text output."""
    result = subprocess.run(
        [sys.executable, "-m", "donjon", *args],
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
        env=child_env(**(env or {})),
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The CLI failed cleanly: non-zero exit, no traceback, exactly one ``donjon: error:`` line."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("donjon: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# -- /proc -------------------------------------------------------------------------------------


def live_processes_mentioning(text: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains *text*."""
    found: list[int] = []
    needle = os.fsencode(text)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state = stat.rpartition(")")[2].split()[0]
        if needle in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[int]:
    """Pids of the live children of *pid*."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def keep_processes(keep_dir: Path | str) -> list[int]:
    """The live processes of the Keep in *keep_dir*: its loader and the loader's children (the
    keep runtime).

    A loader started cold names *keep_dir* on its command line; a spare loader (started before
    its Keep existed) is the one whose pid and start time ``KEEP_DIR/loader.pid`` records, as
    the keep manager itself checks after a restart.
    """
    from donjon.host.loader import PID_FILE, process_start_time

    keep_dir = Path(keep_dir)
    pids = set(live_processes_mentioning(str(keep_dir)))
    try:
        pid_text, started = (keep_dir / PID_FILE).read_text().split()
    except (OSError, ValueError):
        pass
    else:
        pid = int(pid_text)
        if pid_alive(pid) and process_start_time(pid) == started and _is_loader(pid):
            pids.add(pid)
    for pid in list(pids):
        pids.update(children_of(pid))
    return sorted(pids)


def _is_loader(pid: int) -> bool:
    # An exiting process has an empty command line: it no longer counts (as for the manager).
    try:
        return b"donjon.host.loader" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_for_keep_processes(keep_dir: Path | str, count: int = 2) -> list[int]:
    """Wait until the Keep has *count* live processes (loader and runtime); return them."""
    found: list[int] = []

    def enough() -> bool:
        found[:] = keep_processes(keep_dir)
        return len(found) == count

    wait_until(enough, timeout=60, what=f"{count} processes of {keep_dir}")
    return list(found)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


# -- a session with an existing Keep (what deploy does after create) ---------------------------


@dataclass(frozen=True)
class SessionResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    error: str | None
    message: str | None
    via: str


def run_in_keep(
    host_url: str,
    token: str,
    keep_id: str,
    nonce: bytes,
    module: bytes,
    *,
    config: dict[str, Any] | None = None,
    steward_ca: x509.Certificate | None = None,
) -> SessionResult:
    """Verify the existing Keep *keep_id* (created with *nonce*), send *module*, collect output."""
    from donjon.client.attested import development_policy, verify_keep_certificate
    from donjon.client.channel import KeepChannel
    from donjon.client.host_api import HostClient
    from donjon.keep.config import WorkloadConfig
    from donjon.wire.frames import (
        DataFrame,
        ExitFrame,
        FrameDecoder,
        StdinEofFrame,
        WorkloadFrame,
        encode_frame,
    )

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    if steward_ca is None:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=certificate_pem(steward_ca).decode())
    with (
        HostClient(host_url, token=token) as host,
        KeepChannel(host.relay_url(keep_id), token=token, context=ctx) as channel,
    ):
        identity = verify_keep_certificate(
            channel.handshake(),
            nonce=nonce,
            policy=development_policy(),
            insecure_ok=True,
            now=datetime.now(UTC),
            steward_ca=steward_ca,
        )
        channel.send(
            encode_frame(
                WorkloadFrame(
                    config=config if config is not None else WorkloadConfig().to_dict(),
                    module=module,
                    module_sha256=hashlib.sha256(module).digest(),
                )
            )
            + encode_frame(StdinEofFrame())
        )
        out, err = bytearray(), bytearray()
        decoder = FrameDecoder()
        while True:
            data = channel.recv()
            if not data:
                raise AssertionError("the Keep closed without an exit frame")
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                if isinstance(frame, ExitFrame):
                    return SessionResult(
                        frame.code, bytes(out), bytes(err), frame.error, frame.message, identity.via
                    )
                if isinstance(frame, DataFrame):
                    (out if frame.stream == "stdout" else err).extend(frame.data)


# -- the impostor keep runtime (a separate process) ------------------------------------------


def _impostor_identity(keep_dir: Path, mode: str) -> tuple[bytes, bytes]:
    """(key PEM, chain PEM) for the impostor, made the way *mode* says."""
    from donjon.attestation.result import Endorsements
    from donjon.backends.nil_evidence import NilEvidenceProvider, default_dev_key_path
    from donjon.crypto.binding import report_data_for
    from donjon.crypto.ca import KeyPair
    from donjon.crypto.oids import DONJON_EVIDENCE
    from donjon.crypto.ratls import self_signed_certificate
    from donjon.steward.client import StewardClient
    from donjon.steward.messages import CsrEvidence

    params = decode((keep_dir / "launch.cbor").read_bytes())
    nonce: bytes = params["nonce"]
    key = KeyPair.generate("P-384")
    now = datetime.now(UTC)
    keep_id = params["keep_id"]

    def certificate(extensions: list[tuple[x509.ObjectIdentifier, bytes]]) -> bytes:
        cert = self_signed_certificate(
            key.private_key_pem(),
            common_name=f"donjon keep {keep_id}",
            dns_names=[f"{keep_id}.keep.donjon.invalid"],
            extensions=extensions,
            now=now,
            lifetime=timedelta(hours=1),
        )
        return certificate_pem(cert)

    if mode == "no-evidence":
        return key.private_key_pem(), certificate([])
    if mode != "wrong-measurement":
        raise SystemExit(f"unknown impostor mode {mode!r}")
    # Genuine nil evidence, correctly bound to this key and the client's nonce, signed by the
    # machine's development key: only the keep-runtime measurement gives the impostor away.
    provider = NilEvidenceProvider(
        key_path=default_dev_key_path(os.environ),
        measurement=hashlib.sha384(b"an impostor keep runtime").digest(),
    )
    steward = params.get("steward")
    if steward:
        with StewardClient(steward, ca=params.get("steward_ca_pem")) as client:
            steward_nonce = client.nonce()
            evidence = provider.evidence(report_data_for(key.spki_der, steward_nonce + nonce))
            issued = client.attest(
                key.csr(),
                evidence,
                provider.platform,
                Endorsements(),
                steward_nonce,
                client_nonce=nonce,
            )
        return key.private_key_pem(), b"".join(certificate_pem(c) for c in issued.chain)
    evidence = provider.evidence(report_data_for(key.spki_der, nonce))
    bundle = CsrEvidence(platform="nil", evidence=evidence, nonce=nonce)
    return key.private_key_pem(), certificate([(DONJON_EVIDENCE, bundle.encode())])


def _impostor_main(keep_dir: Path, mode: str) -> int:
    """Serve TLS on the Keep's socket as an impostor; record all a client sends, forever."""
    from donjon.keep.tls import server_context

    log = (keep_dir / "impostor.log").open("a", buffering=1)
    sock_path = keep_dir / "keep.sock"
    if mode.startswith("replay="):
        # The host answers this Keep's relay with an earlier Keep (alive, and still waiting).
        sock_path.symlink_to(Path(mode.partition("=")[2]))
        log.write("replaying\n")
        signal.pause()
        return 0
    key_pem, chain_pem = _impostor_identity(keep_dir, mode)
    context = server_context(key_pem, chain_pem)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = keep_dir / "keep.sock.tmp"
    with unix_socket_path(tmp) as bind_path:
        listener.bind(bind_path)
    listener.listen(4)
    os.replace(tmp, sock_path)
    with (keep_dir / "impostor.received").open("ab", buffering=0) as received:
        while True:
            conn, _ = listener.accept()
            log.write("connection\n")
            try:
                tls = context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.write(f"handshake failed: {e}\n")
                conn.close()
                continue
            log.write("handshake ok\n")
            with tls:
                tls.settimeout(30)
                try:
                    while data := tls.recv(65536):
                        received.write(data)
                except (ssl.SSLError, OSError) as e:
                    log.write(f"session ended: {e}\n")
            log.write("closed\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "impostor":
        raise SystemExit(_impostor_main(Path(sys.argv[2]), sys.argv[3]))
    print("usage: python -m tests.integration.deploy_support impostor KEEP_DIR MODE")
    raise SystemExit(2)


# -- a workload's own TLS sockets --------------------------------------------------------------

ECHO_TLS_CONFIG = (
    '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
    '[[files]]\nkind = "listen"\nname = "listen"\nprot = "tls"\naddr = "127.0.0.1"\nport = 0\n'
)
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(TLS 1\.3\)")
LISTEN_WAIT_S = 60.0


class WatchedStream:
    """A binary sink that a test can wait on for a pattern while ``deploy`` writes to it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._changed = threading.Condition()

    def write(self, chunk: bytes) -> int:
        with self._changed:
            self.data += chunk
            self._changed.notify_all()
        return len(chunk)

    def flush(self) -> None:
        pass

    def wait_for(self, pattern: re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        with self._changed:
            found = self._changed.wait_for(lambda: pattern.search(self.data), timeout)
            if not found:
                raise AssertionError(f"not seen within {timeout} s: {bytes(self.data)!r}")
            return found


def echo_once(conn: ssl.SSLSocket, data: bytes) -> bytes:
    conn.sendall(data)
    got = b""
    while len(got) < len(data) and (chunk := conn.recv(65536)):
        got += chunk
    conn.unwrap()  # close_notify: the echo server's end of input, so it ends the connection
    return got
