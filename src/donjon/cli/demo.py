"""``donjon demo``: the end-to-end demo on this machine, on loopback, in a temporary directory.

1. Start Steward (dev policy: admits nil evidence) and a keep manager, each as its own process.
2. Deploy an example workload to a nil Keep: the Keep gets a Steward certificate for its key, the
   client checks it (chain, nonce, measurement, policy) before it sends the workload.
3. Print what was verified and the workload's output; stop everything; exit 0.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from donjon.errors import Error, KeepLaunchError

_LISTENING = re.compile(rb"listening on (http://[0-9.]+:\d+)")
START_TIMEOUT_S = 30.0


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
                    "dev",
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
        say("== 5. services stopped")
        if result.exit_code != 0:
            raise SystemExit(result.exit_code)
    except Error:
        click.echo(f"donjon: demo logs are in {tmp}", err=True)
        keep_dir = True
        raise
    finally:
        if not keep_dir:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
