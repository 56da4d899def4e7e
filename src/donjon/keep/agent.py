"""The keep runtime's agent: what runs inside a Keep created by the keep manager.

``python -m donjon.keep.agent --socket PATH --params FILE``

1. Generate a P-384 key that never leaves this process.
2. Obtain evidence whose report data binds the key and the client's nonce (and Steward's nonce,
   when a Steward is named): from the backend's evidence provider (nil here; configfs-tsm on a
   confidential VM).
3. Get a certificate from Steward, or make a self-signed one that carries the evidence (RA-TLS).
4. Listen on PATH (the keep manager relays the client's TLS bytes here) and serve TLS 1.3.
5. Receive the workload frame, check its digest, run it, stream stdout/stderr back, send the exit
   code, and end with the workload's exit code.

Everything from the host (the params file, the socket) is untrusted: the params hold only public
values (the client's nonce, a Steward URL), and a wrong value can only make attestation fail.
Rule 1: no workload byte is accepted before the TLS handshake, and the client sends none before it
has verified this Keep.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from donjon.attestation.result import Endorsements
from donjon.backends.nil_evidence import NilEvidenceProvider
from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import KeyPair
from donjon.crypto.oids import DONJON_EVIDENCE
from donjon.crypto.ratls import certificate_pem, self_signed_certificate
from donjon.errors import ConfigError, DecodeError, Error, RemoteProtocolError, WorkloadError
from donjon.keep.config import WorkloadConfig, parse_config
from donjon.keep.executor import KeepRuntime, StreamingStdio
from donjon.keep.plan import Invocation
from donjon.keep.tls import server_context
from donjon.steward.messages import CsrEvidence
from donjon.wire.cbor import decode
from donjon.wire.frames import (
    MAX_DATA_FRAME_BYTES,
    DataFrame,
    ExitFrame,
    FrameDecoder,
    PackageFrame,
    StdinEofFrame,
    WorkloadFrame,
    encode_frame,
)

if TYPE_CHECKING:
    from donjon.backends.evidence import EvidenceProvider

# The Steward client (httpx) and the hardware probes are imported only where they are used:
# each Keep is a fresh process, and their imports (~200 ms) would sit on every nil/RA-TLS
# deploy's path to the first output byte (benchmarks/bench_deploy.py).

_logger = logging.getLogger("donjon.keep.agent")

MAX_PARAMS_BYTES = 128 * 1024
ACCEPT_TIMEOUT_S = 300.0
"""How long a Keep waits for its client before it gives up and ends (seconds)."""
HANDSHAKE_TIMEOUT_S = 30.0
SESSION_IDLE_S = 120.0
"""Longest wait for the next bytes of the workload frame (seconds)."""
MAX_STDIN_BYTES = 16 * 1024 * 1024
"""Most stdin a client may send before the workload starts (bytes)."""
MAX_FAILED_SESSIONS = 8
"""Failed TLS sessions (e.g. a relay tampering with bytes) tolerated before the Keep ends."""
RA_TLS_LIFETIME = timedelta(hours=24)
EXIT_PROTOCOL = 125
FAILURE_FILE = "keep.error"
"""Written next to the socket when the Keep ends before serving: why (for its loader's status)."""
MAX_FAILURE_CHARS = 1000


@dataclass(frozen=True, slots=True)
class LaunchParams:
    keep_id: str
    backend: str
    nonce: bytes
    steward: str | None
    steward_ca_pem: bytes | None

    @classmethod
    def from_dict(cls, d: Any) -> LaunchParams:
        if not isinstance(d, dict):
            raise DecodeError("launch parameters are not a map")
        keep_id, backend, nonce = d.get("keep_id"), d.get("backend"), d.get("nonce")
        steward, ca = d.get("steward"), d.get("steward_ca_pem")
        if not isinstance(keep_id, str) or not isinstance(backend, str):
            raise DecodeError("launch parameters need keep_id and backend")
        if not isinstance(nonce, bytes) or not 16 <= len(nonce) <= 64:
            raise DecodeError("launch parameters need a 16..64-byte nonce")
        if steward is not None and not isinstance(steward, str):
            raise DecodeError("steward must be a URL")
        if ca is not None and not isinstance(ca, bytes):
            raise DecodeError("steward_ca_pem must be bytes")
        return cls(keep_id, backend, nonce, steward, ca)


@dataclass(frozen=True, slots=True)
class Identity:
    """The Keep's TLS identity: its key (in memory only) and certificate chain."""

    key_pem: bytes
    chain_pem: bytes
    via: str


def evidence_provider(backend: str) -> EvidenceProvider:
    if backend == "nil":
        return NilEvidenceProvider.default()
    from donjon.backends.evidence import detect_provider
    from donjon.backends.host_view import HostView

    return detect_provider(HostView())


def establish_identity(params: LaunchParams, *, now: datetime) -> Identity:
    """Make a key, get evidence binding it, and a certificate (Steward's or RA-TLS)."""
    key = KeyPair.generate("P-384")
    provider = evidence_provider(params.backend)
    dns = [f"{params.keep_id}.keep.donjon.invalid"]
    if params.steward is not None:
        from donjon.steward.client import StewardClient

        with StewardClient(params.steward, ca=params.steward_ca_pem) as steward:
            steward_nonce = steward.nonce()
            evidence = provider.evidence(
                report_data_for(key.spki_der, steward_nonce + params.nonce)
            )
            issued = steward.attest(
                key.csr(),
                evidence,
                provider.platform,
                Endorsements(),
                steward_nonce,
                client_nonce=params.nonce,
            )
        chain = b"".join(certificate_pem(c) for c in issued.chain)
        return Identity(key_pem=key.private_key_pem(), chain_pem=chain, via="steward")
    evidence = provider.evidence(report_data_for(key.spki_der, params.nonce))
    bundle = CsrEvidence(platform=str(provider.platform), evidence=evidence, nonce=params.nonce)
    key_pem = key.private_key_pem()
    cert = self_signed_certificate(
        key_pem,
        common_name=f"donjon keep {params.keep_id}",
        dns_names=dns,
        extensions=[(DONJON_EVIDENCE, bundle.encode())],
        now=now,
        lifetime=RA_TLS_LIFETIME,
    )
    return Identity(key_pem=key_pem, chain_pem=certificate_pem(cert), via="ra-tls")


class _Session:
    """One TLS session with the client: frames in, frames out."""

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self._tls = tls
        self._decoder = FrameDecoder()

    def receive_workload(self) -> tuple[WorkloadFrame | PackageFrame, bytes]:
        workload: WorkloadFrame | PackageFrame | None = None
        stdin = bytearray()
        while True:
            frame = self._decoder.next_frame()
            if frame is None:
                data = self._tls.recv(256 * 1024)
                if not data:
                    raise RemoteProtocolError("the client closed before sending the workload")
                self._decoder.feed(data)
                continue
            if isinstance(frame, WorkloadFrame | PackageFrame) and workload is None:
                workload = frame
            elif isinstance(frame, DataFrame) and frame.stream == "stdin":
                stdin += frame.data
                if len(stdin) > MAX_STDIN_BYTES:
                    raise RemoteProtocolError(f"stdin exceeds {MAX_STDIN_BYTES} bytes")
            elif isinstance(frame, StdinEofFrame) and workload is not None:
                return workload, bytes(stdin)
            else:
                raise RemoteProtocolError(f"unexpected {type(frame).__name__} from the client")

    def send_output(self, stream: str, data: bytes) -> None:
        for i in range(0, len(data), MAX_DATA_FRAME_BYTES):
            self._tls.sendall(
                encode_frame(DataFrame(stream=stream, data=data[i : i + MAX_DATA_FRAME_BYTES]))
            )

    def send_exit(self, code: int, error: Error | None = None) -> None:
        frame = ExitFrame(
            code=code,
            error=type(error).__name__ if error is not None else None,
            message=error.diagnostics() if error is not None else None,
        )
        self._tls.sendall(encode_frame(frame))
        try:
            self._tls.unwrap()
        except (OSError, ssl.SSLError):
            pass


def fetch_workload(frame: PackageFrame) -> tuple[bytes, WorkloadConfig]:
    """Fetch a package by digest (after attestation), checking digests and required signatures.

    The registry credentials came over the attested channel: the host never sees them (it sees
    the registry connection, which is TLS except to loopback registries in development).
    """
    from donjon.crypto.publisher import PublisherPublicKey
    from donjon.registry import Credentials, Reference, fetch_package

    ref = Reference.parse(frame.reference)
    credentials = (
        Credentials(frame.username, frame.password or "") if frame.username is not None else None
    )
    keys = [
        PublisherPublicKey.from_pem(k, source=f"publisher key {i}")
        for i, k in enumerate(frame.publisher_keys)
    ]
    package = fetch_package(ref, credentials=credentials, publisher_keys=keys)
    try:
        text = package.config_toml.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{ref}: the package's Enarx.toml is not UTF-8") from e
    config = (
        parse_config(text, source=f"{ref.repository} Enarx.toml")
        if text.strip()
        else WorkloadConfig()
    )
    if config.dirs:
        raise ConfigError(f"{ref}: [[dirs]] are host directories; a deployed Keep refuses them")
    _logger.info("fetched %s (publisher %s)", ref, package.publisher or "none required")
    return package.module, config


def run_workload(session: _Session, frame: WorkloadFrame | PackageFrame, stdin: bytes) -> int:
    """Check and run the workload; stream its output. Returns its exit code."""
    if isinstance(frame, PackageFrame):
        module_bytes, config = fetch_workload(frame)
    else:
        digest = hashlib.sha256(frame.module).digest()
        if not hmac.compare_digest(digest, frame.module_sha256):
            raise RemoteProtocolError("the workload's module does not match its SHA-256")
        module_bytes, config = frame.module, WorkloadConfig.from_dict(frame.config)
    stdio = StreamingStdio(
        on_stdout=lambda b: session.send_output("stdout", b),
        on_stderr=lambda b: session.send_output("stderr", b),
        stdin=stdin,
    )
    with KeepRuntime() as runtime:
        module = runtime.load(
            module_bytes, name="main.wasm", deadline=config.limits.timeout_s is not None
        )
        invocation = Invocation.from_config(config, program="main.wasm")
        return runtime.run(module, invocation, stdio)


def serve(sock_path: Path, identity: Identity) -> int:
    """Serve TLS on *sock_path* until one workload has run; return its exit code."""
    context = server_context(identity.key_pem, identity.chain_pem)
    sock_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = sock_path.with_name(sock_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    listener.bind(str(tmp))
    os.chmod(tmp, 0o600)
    listener.listen(4)
    os.replace(tmp, sock_path)  # appears only once it accepts connections
    deadline = time.monotonic() + ACCEPT_TIMEOUT_S
    failures = 0
    try:
        while failures < MAX_FAILED_SESSIONS:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _logger.warning("no client came within %.0f s; ending", ACCEPT_TIMEOUT_S)
                return EXIT_PROTOCOL
            listener.settimeout(remaining)
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                tls = context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as e:
                failures += 1
                _logger.warning("TLS handshake failed: %s", e)
                conn.close()
                continue
            with tls:
                tls.settimeout(SESSION_IDLE_S)
                session = _Session(tls)
                try:
                    frame, stdin = session.receive_workload()
                except (RemoteProtocolError, DecodeError, ssl.SSLError, OSError) as e:
                    failures += 1
                    _logger.warning("session failed before the workload arrived: %s", e)
                    continue
                tls.settimeout(None)
                try:
                    code = run_workload(session, frame, stdin)
                except WorkloadError as e:
                    session.send_exit(e.exit_code, e)
                    return e.exit_code
                except Error as e:
                    session.send_exit(EXIT_PROTOCOL, e)
                    return EXIT_PROTOCOL
                session.send_exit(code)
                return code
        return EXIT_PROTOCOL
    finally:
        listener.close()
        sock_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="donjon.keep.agent")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--params", required=True, type=Path)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="donjon keep: %(message)s", stream=sys.stderr)
    try:
        with ns.params.open("rb") as f:
            raw = f.read(MAX_PARAMS_BYTES + 1)
        params = LaunchParams.from_dict(
            decode(raw, what="launch parameters", max_bytes=MAX_PARAMS_BYTES)
        )
        identity = establish_identity(params, now=datetime.now(UTC))
        _logger.info(
            "identity ready (%s); certificate sha256 %s",
            identity.via,
            hashlib.sha256(identity.chain_pem).hexdigest()[:16],
        )
        return serve(ns.socket, identity)
    except Error as e:
        _logger.error("%s", e.diagnostics())
        _note_failure(ns.socket, e.diagnostics())
        return EXIT_PROTOCOL
    except OSError as e:
        _logger.error("%s", e)
        _note_failure(ns.socket, str(e))
        return EXIT_PROTOCOL


def _note_failure(sock_path: Path, reason: str) -> None:
    # The reason is what the log says (a Steward refusal, bad launch parameters): no secret.
    # The loader puts it in the Keep's status, so the client learns why its Keep is gone.
    try:
        sock_path.with_name(FAILURE_FILE).write_text(reason[:MAX_FAILURE_CHARS])
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
