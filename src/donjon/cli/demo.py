"""``donjon demo``: the end-to-end demo on this machine, on loopback, in a temporary directory.

1. Start Steward (dev policy: admits nil evidence) and a keep manager, each as its own process.
2. Deploy an example workload to a nil Keep: the Keep gets a Steward certificate for its key, the
   client checks it (chain, nonce, measurement, policy) before it sends the workload.
3. Print what was verified and the workload's output.
4. Deploy a network workload (the echo server) the same way; connect to it with TLS as a client
   that trusts nothing but Steward's CA: the TLS ends inside the Keep, with the certificate the
   deploy verified.
5. Deploy a workload whose config asks Steward for a secret that Steward's policy releases to
   that workload's identity only: it receives it; the same module with another argument (another
   identity) is refused before it starts. Stop everything; exit 0.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from donjon.errors import Error, KeepLaunchError

if TYPE_CHECKING:
    from cryptography import x509

    from donjon.client.deploy import DeployOptions, DeployResult, Workload

_LISTENING = re.compile(rb"listening on (http://[0-9.]+:\d+)")
_KEEP_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(TLS 1\.3\)")
START_TIMEOUT_S = 30.0
ECHO_CONFIG = """\
# The echo server's config: stdio, and one TLS listener on loopback that the Keep terminates.
[[files]]
kind = "stdin"
[[files]]
kind = "stdout"
[[files]]
kind = "stderr"
[[files]]
kind = "listen"
name = "listen"
prot = "tls"
addr = "127.0.0.1"
port = 0
max_connections = 8
"""
ECHO_MESSAGE = b"a secret only the Keep may read"
BROKERED_NAME = "demo-token"
BROKERED_CONFIG = """\
# argsenv prints its environment: DEMO_TOKEN shows that the secret arrived.
[[secrets]]
name = "demo-token"
env = "DEMO_TOKEN"
"""


@contextmanager
def _service(args: list[str], log: Path) -> Iterator[str]:
    """Run ``donjon ARGS`` until the block ends; yield the URL it listens on."""
    with log.open("wb") as err:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "donjon", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        try:
            url = _await_url(proc, log)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _await_url(proc: subprocess.Popen[bytes], log: Path) -> str:
    assert proc.stdout is not None  # noqa: S101 - we asked for a pipe
    deadline = time.monotonic() + START_TIMEOUT_S
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := _LISTENING.search(line):
            return m.group(1).decode()
    raise KeepLaunchError(
        f"a demo service did not start; its log is {log}:\n"
        + log.read_text(errors="replace")[-2000:]
    )


def _examples_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "build" / "examples"
        if candidate.is_dir():
            return candidate
    raise click.ClickException("example workloads not built: run scripts/setup first")


@click.command()
@click.option(
    "--workload",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Module to deploy (default: the hello example).",
)
@click.option("--keep-dir", is_flag=True, help="Keep the demo's temporary directory.")
def demo(workload: Path | None, keep_dir: bool) -> None:
    """Start Steward and a keep manager on loopback and deploy an example to an attested Keep."""
    from donjon.client.deploy import DeployOptions, Workload, deploy
    from donjon.crypto.ca import load_certificate
    from donjon.crypto.ratls import load_peer_certificate

    module = workload or _examples_dir() / "hello.wasm"
    tmp = Path(tempfile.mkdtemp(prefix="donjon-demo-"))
    # The demo's nil development key lives in the demo dir, never in the user's data dir.
    os.environ.setdefault("DONJON_NIL_DEV_KEY", str(tmp / "nil-dev-key.pem"))

    def say(text: str) -> None:
        click.echo(click.style(text, bold=True), err=True)

    try:
        say("== 1. Steward (attestation service, dev policy) and a keep manager on loopback")
        secret_workload, policy = _secret_setup(tmp) if workload is None else (None, "dev")
        with (
            _service(
                [
                    "steward",
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--state-dir",
                    str(tmp / "steward"),
                    "--policy",
                    policy,
                ],
                tmp / "steward.log",
            ) as steward_url,
            _service(
                ["host", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(tmp / "host")],
                tmp / "host.log",
            ) as host_url,
        ):
            click.echo(f"   Steward      {steward_url}", err=True)
            click.echo(f"   keep manager {host_url}", err=True)
            ca = load_certificate((tmp / "steward" / "ca.crt").read_bytes())
            token = (tmp / "host" / "admin.token").read_text().strip()
            wl = Workload.load(module)
            say(
                f"== 2. deploy {module.name} to a new nil Keep "
                "(development: no TEE on this machine)"
            )
            options = DeployOptions(
                host=host_url, token=token, steward=steward_url, steward_ca=ca, insecure=True
            )
            out, err = io.BytesIO(), io.BytesIO()
            started = time.monotonic()
            result = deploy(wl, options, stdout=out, stderr=err)
            elapsed = time.monotonic() - started
            ident = result.identity
            cert = load_peer_certificate(ident.certificate_der)
            say("== 3. what the client verified before sending the workload")
            rows = [
                ("Keep", result.keep.id),
                ("verified via", f"{ident.via} (Steward CA {ca.subject.rfc4514_string()})"),
                ("platform", f"{ident.platform}  ← no TEE: nil is for development only"),
                ("measurement", ident.measurement.hex()),
                ("policy", ident.policy),
                (
                    "certificate",
                    f"serial {cert.serial_number:x}, sha256 {ident.certificate_sha256}",
                ),
                ("valid until", cert.not_valid_after_utc.isoformat()),
                ("workload", f"{wl.name} sha256 {wl.module_sha256.hex()}"),
            ]
            for name, value in rows:
                click.echo(f"   {name:<13} {value}", err=True)
            say("== 4. the workload's output, streamed back over attested TLS")
            sys.stdout.buffer.write(out.getvalue())
            sys.stdout.flush()
            if err.getvalue():
                sys.stderr.buffer.write(err.getvalue())
            click.echo(
                f"   exit code {result.exit_code}; deploy took {elapsed * 1000:.0f} ms", err=True
            )
            if result.exit_code != 0:
                raise SystemExit(result.exit_code)
            if workload is None:
                say(
                    "== 5. a network workload: echo_server.wasm in a new Keep, reached with TLS "
                    "that ends inside it"
                )
                _echo_demo(options, ca, tmp)
            if secret_workload is not None:
                say(
                    f"== 6. a secret Steward releases to one workload: {BROKERED_NAME}, to "
                    "argsenv.wasm under its config, and to nothing else"
                )
                _secret_demo(options, secret_workload)
        say("== 7. services stopped")
    except Error:
        click.echo(f"donjon: demo logs are in {tmp}", err=True)
        keep_dir = True
        raise
    finally:
        if not keep_dir:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _secret_setup(tmp: Path) -> tuple[Workload, str]:
    """Store a random secret in Steward's state dir and write the dev policy with a rule that
    releases it to argsenv.wasm under BROKERED_CONFIG; return that workload and the policy file."""
    import secrets

    from donjon.client.deploy import Workload
    from donjon.steward.config import DEV_POLICY_TOML
    from donjon.steward.secrets import SecretStore

    config = tmp / "secret.toml"
    config.write_text(BROKERED_CONFIG)
    wl = Workload.load(_examples_dir() / "argsenv.wasm", config_path=config)
    SecretStore(tmp / "steward").set(BROKERED_NAME, secrets.token_urlsafe(16).encode())
    policy = tmp / "steward-policy.toml"
    policy.write_text(
        DEV_POLICY_TOML + f'\n[steward.secrets]\n{BROKERED_NAME} = ["{wl.identity}"]\n'
    )
    return wl, str(policy)


def _secret_demo(options: DeployOptions, wl: Workload) -> None:
    """Deploy the named workload (it gets the secret), then the same module with another
    argument (Steward refuses it before it starts)."""
    import dataclasses

    from donjon.client.deploy import deploy

    out, err = io.BytesIO(), io.BytesIO()
    result = deploy(wl, options, stdout=out, stderr=err)
    received = [
        line.removeprefix("env DEMO_TOKEN=")
        for line in out.getvalue().decode(errors="replace").splitlines()
        if line.startswith("env DEMO_TOKEN=")
    ]
    other = dataclasses.replace(wl, args=("--show-me",))
    refused = deploy(other, options, stdout=io.BytesIO(), stderr=io.BytesIO())
    reason = (refused.message or "").removeprefix("Steward: ")
    rows = [
        ("identity", wl.identity),
        ("released", f"DEMO_TOKEN={received[0]}" if received else "NOTHING"),
        ("exit code", str(result.exit_code)),
        ("other args", other.identity),
        ("refused", f"exit {refused.exit_code}: {reason}"),
    ]
    for name, value in rows:
        click.echo(f"   {name:<13} {value}", err=True)
    if result.exit_code != 0 or not received or refused.exit_code == 0:
        raise KeepLaunchError("the secret was not released as the policy says")


class _Watched(io.RawIOBase):
    """A sink for a deploy's stderr that the demo can wait on while the deploy runs."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self._changed = threading.Condition()

    def writable(self) -> bool:
        return True

    def write(self, chunk: bytes) -> int:  # type: ignore[override]
        with self._changed:
            self.data += chunk
            self._changed.notify_all()
        return len(chunk)

    def wait_for(self, pattern: re.Pattern[bytes], timeout: float) -> re.Match[bytes] | None:
        with self._changed:
            self._changed.wait_for(lambda: pattern.search(self.data), timeout)
            return pattern.search(self.data)


def _echo_demo(options: DeployOptions, ca: x509.Certificate, tmp: Path) -> None:
    """Deploy the echo server, talk to it as a client that trusts only Steward's CA."""
    from cryptography import x509

    from donjon.client.attested import KeepIdentity
    from donjon.client.deploy import Workload, deploy
    from donjon.client.host_api import KeepInfo
    from donjon.crypto.ca import certificate_spki
    from donjon.crypto.ratls import certificate_pem, load_peer_certificate

    config = tmp / "echo.toml"
    config.write_text(ECHO_CONFIG)
    wl = Workload.load(_examples_dir() / "echo_server.wasm", config_path=config, args=["-c", "1"])
    out, err = io.BytesIO(), _Watched()
    verified: list[KeepIdentity] = []
    outcome: list[DeployResult | Error] = []

    def on_verified(_keep: KeepInfo, identity: KeepIdentity) -> None:
        verified.append(identity)

    def run() -> None:
        try:
            outcome.append(
                deploy(wl, options, stdout=out, stderr=err, on_verified=on_verified)  # type: ignore[arg-type]
            )
        except Error as e:
            outcome.append(e)

    thread = threading.Thread(target=run, name="donjon-demo-echo", daemon=True)
    thread.start()
    found = err.wait_for(_KEEP_LISTENING, START_TIMEOUT_S)
    if found is None or not verified:
        thread.join(START_TIMEOUT_S)
        if outcome and isinstance(outcome[0], Error):
            raise outcome[0]
        raise KeepLaunchError(
            "the echo server's Keep did not start listening: " + err.data.decode(errors="replace")
        )
    port = int(found.group(1))
    cert = load_peer_certificate(verified[0].certificate_der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    keep_name = names.get_values_for_type(x509.DNSName)[0]
    # A client that knows nothing of the host: it trusts Steward's CA and checks the Keep's name.
    context = ssl.create_default_context(cadata=certificate_pem(ca).decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=keep_name) as tls,
    ):
        presented = tls.getpeercert(binary_form=True)
        tls.sendall(ECHO_MESSAGE)
        echoed = b""
        while len(echoed) < len(ECHO_MESSAGE) and (chunk := tls.recv(4096)):
            echoed += chunk
        tls.unwrap()
    thread.join(START_TIMEOUT_S)
    result = outcome[0] if outcome else None
    served = load_peer_certificate(presented or b"")
    same_key = certificate_spki(served) == certificate_spki(cert)
    served_names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = served_names.get_values_for_type(x509.UniformResourceIdentifier)
    rows = [
        (
            "listener",
            f"127.0.0.1:{port} (the host's loopback: a nil Keep shares the host's network)",
        ),
        ("certificate", f"chains to Steward's CA, names {keep_name}"),
        ("same key", "yes: the key the deploy verified" if same_key else "NO"),
        ("workload", f"{uris[0] if uris else 'NONE'} (Steward certifies what runs)"),
        ("sent", ECHO_MESSAGE.decode()),
        ("echoed", echoed.decode(errors="replace")),
    ]
    for name, value in rows:
        click.echo(f"   {name:<13} {value}", err=True)
    sys.stdout.buffer.write(out.getvalue())
    sys.stdout.flush()
    if not same_key or uris != [wl.identity] or echoed != ECHO_MESSAGE:
        raise KeepLaunchError("the echo server's Keep did not answer as verified")
    if isinstance(result, Error):
        raise result
    if result is None:
        raise KeepLaunchError("the echo server's deploy did not finish after its one connection")
    click.echo(f"   exit code {result.exit_code}", err=True)
    if result.exit_code != 0:
        raise SystemExit(result.exit_code)
