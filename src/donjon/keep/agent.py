"""The keep runtime's agent: what runs inside a Keep created by the keep manager.

``python -m donjon.keep.agent --socket PATH --params FILE`` (started for one Keep), or
``python -m donjon.keep.agent --launch-fd N`` (started *before* its Keep exists: it imports
everything, then waits for its launch message on fd N; the keep loader keeps one such warm
process ready, so a new Keep does not wait for an interpreter and its imports).

1. Generate a P-384 key that never leaves this process (only once the launch parameters are
   here: a warm process holds no key and no nonce before it is given its Keep).
2. Obtain evidence whose report data binds the key and the client's nonce (and Steward's nonce,
   when a Steward is named): from the backend's evidence provider (nil here; configfs-tsm on a
   confidential VM).
3. Get a certificate from Steward, or make a self-signed one that carries the evidence (RA-TLS).
4. Listen on PATH (the keep manager relays the client's TLS bytes here) and serve TLS 1.3.
5. Receive the workload frame, check its digest (or fetch the package by digest), run it with
   its stdin, stdout and stderr streamed over the session, send the exit code, and end with the
   workload's exit code.

Everything from the host (the launch parameters, the socket) is untrusted: the parameters hold
only public values (the client's nonce, a Steward URL), and a wrong value can only make
attestation fail.

Rule 1: no workload byte is accepted before the TLS handshake, and the client sends none before it
has verified this Keep.
Rule 2: one process, one Keep, one workload: a warm process is given exactly one Keep and ends
with it.
Rule 3: while the workload runs, this process's fds 0-2 are the workload's stdio: pipes that one
session thread (:class:`_Pump`) moves to and from the attested channel; the agent's own log goes
to a duplicate of the original stderr. stdin is streamed (at most :data:`STDIN_BUFFER_BYTES` wait
in the Keep; beyond that the client is slowed down by TCP), and so is output.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import hmac
import logging
import os
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from donjon._logfile import attach_log
from donjon._unixpath import unix_socket_path
from donjon.attestation.result import Endorsements
from donjon.backends.nil_evidence import NilEvidenceProvider
from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import KeyPair
from donjon.crypto.oids import DONJON_EVIDENCE
from donjon.crypto.ratls import certificate_pem, self_signed_certificate
from donjon.errors import (
    DecodeError,
    Error,
    LimitError,
    RemoteProtocolError,
    WorkloadError,
)
from donjon.keep.config import DEFAULT_ARGV0, FileKind, WorkloadConfig, package_config
from donjon.keep.errors import UnsupportedConfigError
from donjon.keep.executor import InheritedStdio, KeepRuntime
from donjon.keep.plan import Invocation
from donjon.keep.secret_files import SecretFiles
from donjon.keep.tls import server_context
from donjon.steward.messages import CsrEvidence
from donjon.wire.cbor import decode
from donjon.wire.frames import (
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
    from donjon.keep.sockets import NetworkOptions

# The Steward client and the registry client (httpx) and the hardware probes are imported only
# where they are used, or by a warm agent before it has a Keep (:func:`prewarm`): a Keep started
# cold would otherwise pay ~200 ms for them on its path to the first output byte
# (benchmarks/bench_deploy.py).

_logger = logging.getLogger("donjon.keep.agent")

MAX_PARAMS_BYTES = 128 * 1024
MAX_LAUNCH_MESSAGE_BYTES = MAX_PARAMS_BYTES + 16 * 1024
"""Largest launch message a warm agent reads from its loader (bytes): the parameters and paths."""
ACCEPT_TIMEOUT_S = 300.0
"""How long a Keep waits for its client before it gives up and ends (seconds)."""
HANDSHAKE_TIMEOUT_S = 30.0
SESSION_IDLE_S = 120.0
"""Longest wait for the next bytes of the workload frame (seconds)."""
STDIN_BUFFER_BYTES = 1024 * 1024
"""Most stdin held in the Keep at once (bytes); beyond it the Keep stops reading the client."""
OUTPUT_BUFFER_BYTES = 1024 * 1024
"""Most output waiting for the client (bytes); beyond it the workload waits on its pipe."""
WATCHDOG_GRACE_S = 0.5
"""Seconds past the deadline before a workload stuck in a host call (e.g. reading stdin that
never comes) is stopped with the whole Keep; epoch interruption cannot reach it there."""
EXIT_FLUSH_TIMEOUT_S = 5.0
"""Longest wait to hand the exit frame to a slow client before ending anyway (seconds)."""
MAX_FAILED_SESSIONS = 8
"""Failed TLS sessions (e.g. a relay tampering with bytes) tolerated before the Keep ends."""
RA_TLS_LIFETIME = timedelta(hours=24)
EXIT_PROTOCOL = 125
FAILURE_FILE = "keep.error"
"""Written next to the socket when the Keep ends before serving: why (for its loader's status)."""
MAX_FAILURE_CHARS = 1000
DEFAULT_PROGRAM = DEFAULT_ARGV0
"""argv[0] when the client names none (a registry package's module layer is ``main.wasm``)."""
_READ_BYTES = 64 * 1024
_TLS_WRITE_BYTES = 16 * 1024  # one TLS record
# (module (func (export "_start"))): compiled by a warm agent so its engine and linker exist.
_WARM_MODULE = bytes.fromhex(
    "0061736d0100000001040160000003020100070a01065f737461727400000a040102000b"
)


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
class LaunchMessage:
    """What a warm agent's loader hands it once it has a Keep (CBOR on the launch fd).

    Attributes:
        socket: where to listen.
        params: the launch parameters (``launch.cbor``'s bytes; decoded like any untrusted input).
        log: the Keep's log file, which becomes this process's stdout and stderr.
    """

    socket: Path
    params: bytes
    log: Path

    @classmethod
    def decode(cls, data: bytes) -> LaunchMessage:
        d = decode(data, what="launch message", max_bytes=MAX_LAUNCH_MESSAGE_BYTES)
        if not isinstance(d, dict):
            raise DecodeError("the launch message is not a map")
        sock, params, log = d.get("socket"), d.get("params"), d.get("log")
        if not isinstance(sock, str) or not isinstance(log, str) or not isinstance(params, bytes):
            raise DecodeError("the launch message needs socket, params and log")
        if not os.path.isabs(sock) or not os.path.isabs(log):
            raise DecodeError("the launch message's paths must be absolute")
        return cls(Path(sock), params, Path(log))


@dataclass(frozen=True, slots=True)
class Identity:
    """The Keep's TLS identity: its key (in memory only) and certificate chain."""

    key_pem: bytes
    chain_pem: bytes
    via: str


@dataclass
class Warm:
    """What a warm agent prepared before it had a Keep: nothing bound to any Keep.

    Attributes:
        runtime: the keep runtime (its engine and linker built).
        nil_provider: the nil evidence provider, its development key loaded and the runtime
            measurement computed (None if that failed; the Keep then tries again, and reports).
    """

    runtime: KeepRuntime
    nil_provider: NilEvidenceProvider | None = None


def prewarm(*, assigned: Callable[[], bool] = lambda: False) -> Warm:
    """Import and build everything a Keep needs that does not depend on which Keep it is.

    Args:
        assigned: whether the Keep has arrived; checked between steps, so a spare given its
            Keep early stops warming up (what is left is done on demand, as a cold Keep does,
            and never makes it slower than one).

    Returns:
        The runtime (engine and linker built) and the nil evidence provider (development key
        loaded, measurement computed), for :func:`establish_identity` and :func:`serve`.
    """
    warm = Warm(runtime=KeepRuntime())
    for step in (_warm_nil_provider, _warm_runtime, _warm_http_clients):
        if assigned():
            break
        step(warm)
    return warm


def _warm_nil_provider(warm: Warm) -> None:
    provider = NilEvidenceProvider.default()
    try:
        _ = provider.key, provider.measurement
    except Error as e:  # reported when the Keep really needs it
        _logger.debug("warming the nil provider failed: %s", e)
    else:
        warm.nil_provider = provider


def _warm_runtime(warm: Warm) -> None:
    try:
        warm.runtime.load(_WARM_MODULE, name="warm.wasm", deadline=False)
    except Error as e:  # never fatal: the Keep's own load reports a real problem
        _logger.debug("warming the runtime failed: %s", e)


def _warm_http_clients(warm: Warm) -> None:
    # Imported for their side effect (~150 ms): a Keep with a Steward, or fetching a package,
    # then does not import them on its path to the first output byte; nor does it make the
    # HTTPS trust store (~50 ms).
    import donjon.crypto.sealing
    import donjon.keep.workload_id
    import donjon.registry  # noqa: F401
    from donjon.steward.client import default_tls_context

    default_tls_context()


def evidence_provider(backend: str, warm: Warm | None = None) -> EvidenceProvider:
    if backend == "nil":
        if warm is not None and warm.nil_provider is not None:
            return warm.nil_provider
        return NilEvidenceProvider.default()
    from donjon.backends.evidence import detect_provider
    from donjon.backends.host_view import HostView

    return detect_provider(HostView())


def establish_identity(
    params: LaunchParams, *, now: datetime, warm: Warm | None = None
) -> Identity:
    """Make a key, get evidence binding it, and a certificate (Steward's or RA-TLS)."""
    key = KeyPair.generate("P-384")
    provider = evidence_provider(params.backend, warm)
    dns = [f"{params.keep_id}.keep.donjon.invalid"]
    if params.steward is not None:
        chain = _steward_chain(
            params.steward, params.steward_ca_pem, key, provider, client_nonce=params.nonce
        )
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


def _steward_chain(
    url: str,
    ca_pem: bytes | None,
    key: KeyPair,
    provider: EvidenceProvider,
    *,
    client_nonce: bytes | None = None,
    workload: str | None = None,
) -> bytes:
    """A Steward certificate chain (PEM, leaf first) for *key*, from fresh evidence binding it
    and a fresh Steward nonce (followed by the relying party's *client_nonce*, if any); naming
    *workload* (a URI SAN) if given."""
    from donjon.steward.client import StewardClient

    with StewardClient(url, ca=ca_pem) as steward:
        steward_nonce = steward.nonce()
        bound = steward_nonce if client_nonce is None else steward_nonce + client_nonce
        evidence = provider.evidence(report_data_for(key.spki_der, bound))
        issued = steward.attest(
            key.csr(uris=[workload] if workload is not None else []),
            evidence,
            provider.platform,
            Endorsements(),
            steward_nonce,
            client_nonce=client_nonce,
        )
    return b"".join(certificate_pem(c) for c in issued.chain)


def recertify(
    params: LaunchParams, identity: Identity, warm: Warm | None = None, workload: str | None = None
) -> bytes:
    """A new Steward certificate chain for the Keep's key (same key, fresh evidence), naming
    *workload* if given, pinned to the CA that issued its current one (which the client
    verified).

    Raises:
        UnsupportedConfigError: the Keep has no Steward certificate to renew.
        VerificationError: Steward no longer accepts the Keep's evidence.
        TransportError: Steward could not be reached.
    """
    steward = _pinned_steward(params, identity)
    if steward is None:
        raise UnsupportedConfigError("this Keep has no Steward certificate to renew")
    url, ca = steward
    key = KeyPair.from_pem(identity.key_pem, what="the Keep's key")
    provider = evidence_provider(params.backend, warm)
    return _steward_chain(url, ca, key, provider, workload=workload)


def _pinned_steward(params: LaunchParams, identity: Identity) -> tuple[str, bytes] | None:
    """Steward's URL and the CA that issued this Keep's certificate (the one its client
    verified: the host chose the URL, but cannot substitute another Steward), as PEM; None
    when the Keep has no Steward certificate (RA-TLS)."""
    from cryptography import x509

    chain = x509.load_pem_x509_certificates(identity.chain_pem)
    if identity.via != "steward" or params.steward is None or len(chain) < 2:
        return None
    return params.steward, certificate_pem(chain[-1])


Recertifier = Callable[[str], bytes]
"""Gets a Steward certificate chain (PEM) for the Keep's key that names a workload identity."""

SecretFetcher = Callable[[WorkloadConfig, str, str | None], dict[str, bytes]]
"""Gets a workload's ``[[secrets]]`` from Steward: (config, workload identity, verified
publisher fingerprint) -> values by secret name."""


def release_secrets(
    config: WorkloadConfig,
    workload: str,
    publisher: str | None = None,
    *,
    params: LaunchParams,
    identity: Identity,
    warm: Warm | None = None,
) -> dict[str, bytes]:
    """Ask Steward for the secrets the workload's config names, as the workload's own Keep.

    The request names *workload* (:func:`~donjon.keep.workload_id.workload_identity`) in a
    CSR for the Keep's attested key (and, for a registry package whose signature the Keep
    verified, its publisher: ``donjon:publisher:sha256:<hex>``, a second URI), with fresh
    evidence binding that key and Steward's nonce; Steward seals each secret it releases to
    that key. Steward is pinned to the CA that issued this Keep's own certificate
    (:func:`_pinned_steward`).

    Returns:
        The values by secret name, as stored (an ``env`` secret is checked to be text when the
        invocation is made).

    Raises:
        UnsupportedConfigError: this Keep has no Steward (deployed over RA-TLS).
        PolicyError: Steward does not release a secret to this workload.
        TransportError: Steward could not be reached.
    """
    if not config.secrets:
        return {}
    names = [s.name for s in config.secrets]
    pinned = _pinned_steward(params, identity)
    if pinned is None:
        raise UnsupportedConfigError(
            f"the workload asks Steward for secrets ({', '.join(names)}) but this Keep was "
            "deployed without one; deploy it with `donjon deploy --steward URL --ca FILE`"
        )
    from donjon.steward.client import StewardClient

    url, ca = pinned
    provider = evidence_provider(params.backend, warm)
    with StewardClient(url, ca=ca) as steward:
        values = steward.secrets(
            KeyPair.from_pem(identity.key_pem, what="the Keep's key"),
            workload,
            names,
            evidence=provider.evidence,
            platform=provider.platform,
            publisher=f"donjon:publisher:{publisher}" if publisher is not None else None,
        )
    # Counts only: this log is the host's to read, and which secrets a workload has is not.
    _logger.info("received %d secret(s) from Steward for the workload", len(values))
    return values


def receive_workload(tls: ssl.SSLSocket, decoder: FrameDecoder) -> WorkloadFrame | PackageFrame:
    """Read up to the first frame, which must be the workload; later bytes stay in *decoder*.

    Raises:
        RemoteProtocolError: the client closed, or sent anything else first.
    """
    while True:
        frame = decoder.next_frame()
        if frame is None:
            data = tls.recv(256 * 1024)
            if not data:
                raise RemoteProtocolError("the client closed before sending the workload")
            decoder.feed(data)
            continue
        if isinstance(frame, WorkloadFrame | PackageFrame):
            return frame
        raise RemoteProtocolError(f"unexpected {type(frame).__name__} before the workload")


def fetch_workload(frame: PackageFrame) -> tuple[bytes, WorkloadConfig, str | None]:
    """Fetch a package by digest (after attestation), checking digests and required signatures.

    Returns:
        The module, its config, and the fingerprint (``sha256:<hex>``) of the publisher key
        whose signature verified, if the client required one.

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
    config = package_config(package.config_toml, source=f"{ref.repository} Enarx.toml")
    # Not which package: this log is the host's to read, and the registry connection is not.
    _logger.info("fetched the package (publisher: %s)", package.publisher or "none required")
    return package.module, config, package.publisher


def _workload_parts(
    frame: WorkloadFrame | PackageFrame,
) -> tuple[bytes, WorkloadConfig, str, tuple[str, ...], str | None]:
    """(module, config, argv[0], extra args, verified publisher), every digest checked."""
    if isinstance(frame, PackageFrame):
        module_bytes, config, publisher = fetch_workload(frame)
        return module_bytes, config, DEFAULT_PROGRAM, frame.args, publisher
    digest = hashlib.sha256(frame.module).digest()
    if not hmac.compare_digest(digest, frame.module_sha256):
        raise RemoteProtocolError("the workload's module does not match its SHA-256")
    config = WorkloadConfig.from_dict(frame.config)
    return frame.module, config, frame.program or DEFAULT_PROGRAM, frame.args, None


class _Pump:
    """The session thread while the workload runs: client ↔ the workload's stdio pipes.

    The only user of the TLS socket while it runs (an ``SSLSocket`` is not safe to share between
    threads), non-blocking, driven by ``select``: stdin frames go into the workload's fd 0 pipe,
    what it writes on fds 1 and 2 comes back as stdout/stderr frames. It ends when both output
    pipes reach end of file (the workload has ended and fds 1 and 2 were closed).

    Args:
        tls: the session, blocking until now; made non-blocking here.
        decoder: holds any client bytes read after the workload frame.
        stdin_w, out_r, err_r: the pipe ends on this side.
        wants_stdin: whether the workload has a stdin at all (else stdin is read and discarded).
        stop_at: monotonic time at which a workload stuck in a host call is stopped, or None.
        program: argv[0], for the deadline message.
        timeout_s: the workload's deadline, for the message.
    """

    def __init__(
        self,
        tls: ssl.SSLSocket,
        decoder: FrameDecoder,
        *,
        stdin_w: int,
        out_r: int,
        err_r: int,
        wants_stdin: bool,
        stop_at: float | None,
        program: str,
        timeout_s: float | None,
    ) -> None:
        self._tls = tls
        self._decoder = decoder
        self._stdin_w: int | None = stdin_w
        self._outputs = {out_r: "stdout", err_r: "stderr"}
        self._wants_stdin = wants_stdin
        self._stop_at = stop_at
        self._program = program
        self._timeout_s = timeout_s
        self._pending = bytearray()  # stdin for the workload
        self._outbox = bytearray()  # framed output for the client
        self._retry_len = 0  # a TLS write to repeat with the same bytes (OpenSSL's rule)
        self._reading_client = True
        self._stdin_eof = False
        self._client_gone = False
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="donjon-keep-session", daemon=True)

    def start(self) -> None:
        self._tls.setblocking(False)
        for fd in (*self._outputs, self._stdin_w):
            if fd is not None:
                os.set_blocking(fd, False)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
        self._tls.setblocking(True)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug: the workload's output may be incomplete; say so in the log
            _logger.exception("the session thread failed")
        finally:
            for fd in self._outputs:
                os.close(fd)
            self._outputs.clear()
            self._close_stdin()
            if self._retry_len:  # hand the rest over whole: a blocking send may repeat it
                self._retry_len = 0

    def leftover(self) -> bytes:
        """Output not yet sent when the workload ended (the caller sends it before the exit)."""
        return b"" if self._client_gone else bytes(self._outbox)

    def _loop(self) -> None:
        self._take_frames()  # what came with the workload frame (often all of stdin)
        while self._outputs:
            readers: list[Any] = []
            writers: list[Any] = []
            want_client = self._reading_client and len(self._pending) < STDIN_BUFFER_BYTES
            if want_client and self._tls.pending():
                self._read_client()
                continue
            if want_client:
                readers.append(self._tls)
            if self._outbox and not self._client_gone:
                writers.append(self._tls)
            if len(self._outbox) < OUTPUT_BUFFER_BYTES or self._client_gone:
                readers.extend(self._outputs)
            if self._pending and self._stdin_w is not None:
                writers.append(self._stdin_w)
            timeout = None
            if self._stop_at is not None:
                timeout = max(0.0, self._stop_at - time.monotonic())
            readable, writable, _ = select.select(readers, writers, [], timeout)
            if self._stop_at is not None and time.monotonic() >= self._stop_at:
                if not self.done.is_set():
                    self._stop_stuck_workload()
                self._stop_at = None
            for item in readable:
                if item is self._tls:
                    self._read_client()
                else:
                    self._read_output(item)
            for item in writable:
                if item is self._tls:
                    self._write_client()
                elif item == self._stdin_w:
                    self._write_stdin()

    def _read_client(self) -> None:
        try:
            data = self._tls.recv(_READ_BYTES)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return
        except (ssl.SSLError, OSError) as e:
            _logger.info("the client's side of the session ended: %s", e)
            data = b""
        if not data:
            self._reading_client = False
            self._stdin_eof = True
            if not self._pending:
                self._close_stdin()
            return
        self._decoder.feed(data)
        self._take_frames()

    def _take_frames(self) -> None:
        """Handle every complete frame the decoder holds (stdin and its end, nothing else)."""
        try:
            while (frame := self._decoder.next_frame()) is not None:
                if isinstance(frame, DataFrame) and frame.stream == "stdin":
                    if self._wants_stdin and not self._stdin_eof and self._stdin_w is not None:
                        self._pending += frame.data
                elif isinstance(frame, StdinEofFrame):
                    self._stdin_eof = True
                else:
                    raise RemoteProtocolError(f"unexpected {type(frame).__name__} from the client")
        except RemoteProtocolError as e:
            _logger.warning("%s; no more stdin is read", e)
            self._reading_client = False
            self._stdin_eof = True
        if self._stdin_eof and not self._pending:
            self._close_stdin()

    def _write_stdin(self) -> None:
        if self._stdin_w is None:
            return
        try:
            n = os.write(self._stdin_w, self._pending[:_READ_BYTES])
        except BlockingIOError:
            return
        except OSError:  # the workload closed its stdin (or ended): what is left is dropped
            self._pending.clear()
            self._close_stdin()
            return
        del self._pending[:n]
        if self._stdin_eof and not self._pending:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self._stdin_w is not None:
            os.close(self._stdin_w)
            self._stdin_w = None

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_BYTES)
        except BlockingIOError:
            return
        if not data:
            os.close(fd)
            del self._outputs[fd]
            return
        if not self._client_gone:
            self._outbox += encode_frame(DataFrame(stream=self._outputs[fd], data=data))

    def _write_client(self) -> None:
        size = self._retry_len or min(len(self._outbox), _TLS_WRITE_BYTES)
        try:
            n = self._tls.send(bytes(self._outbox[:size]))
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            self._retry_len = size
            return
        except (ssl.SSLError, OSError) as e:
            _logger.info("the client went away: %s; the workload's output is dropped", e)
            self._client_gone = True
            self._outbox.clear()
            return
        self._retry_len = 0
        del self._outbox[:n]

    def _stop_stuck_workload(self) -> None:
        """The deadline passed while the workload sits in a host call: end the whole Keep."""
        for fd in list(self._outputs):
            self._read_output(fd)  # what it wrote so far still reaches the client
        message = (
            f"deadline of {self._timeout_s} s reached: {self._program} was stopped while "
            "blocked in a host call"
        )
        _logger.warning("%s", message)
        self._outbox += encode_frame(
            ExitFrame(code=LimitError.exit_code, error="DeadlineError", message=message)
        )
        if not self._client_gone:
            self._tls.settimeout(EXIT_FLUSH_TIMEOUT_S)
            try:
                if self._retry_len:
                    self._tls.send(bytes(self._outbox[: self._retry_len]))
                    del self._outbox[: self._retry_len]
                self._tls.sendall(bytes(self._outbox))
                self._tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
        _flush_logs()
        os._exit(LimitError.exit_code)


class _WorkloadStdio:
    """Pipes on fds 0-2 for one run (Rule 3); :meth:`close` ends the workload's side."""

    def __init__(self) -> None:
        in_r, self.stdin_w = os.pipe()
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        for fd in (self.stdin_w, self.out_r, self.err_r):
            os.set_inheritable(fd, False)
        os.dup2(in_r, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (in_r, out_w, err_w):
            os.close(fd)

    @staticmethod
    def close() -> None:
        """Put /dev/null on fds 0-2: the session thread sees end of file on the outputs."""
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in (0, 1, 2):
                os.dup2(null, fd)
        finally:
            os.close(null)


def run_workload(
    tls: ssl.SSLSocket,
    decoder: FrameDecoder,
    frame: WorkloadFrame | PackageFrame,
    runtime: KeepRuntime,
    identity: Identity,
    secrets: SecretFetcher | None = None,
    recertify: Recertifier | None = None,
) -> int:
    """Check and run the workload with its stdio streamed over *tls*; send its exit frame.

    A workload whose config has ``[[secrets]]`` gets them from Steward through *secrets*
    before it starts; without them it does not start.

    Its ``prot = "tls"`` sockets present the Keep's own attested key. With a Steward
    (*recertify*), the Keep first gets a certificate for that key that also names the
    workload's identity (module, config, argv: :mod:`donjon.keep.workload_id`), so a peer of
    the workload learns from Steward's certificate which workload, with which grants, it talks
    to; the certificate is renewed before it expires while the workload runs
    (:mod:`donjon.keep.renewal`). Without a Steward, the sockets present the RA-TLS
    certificate the client verified. Notices about its sockets (where a listener is) go to its
    stderr, that is, to the client.

    Returns:
        The workload's exit code, or the error's (125 for a failure that is not the
        workload's, e.g. a package that cannot be fetched).
    """
    with SecretFiles() as files:
        return _run_workload(tls, decoder, frame, runtime, identity, secrets, recertify, files)


def _run_workload(
    tls: ssl.SSLSocket,
    decoder: FrameDecoder,
    frame: WorkloadFrame | PackageFrame,
    runtime: KeepRuntime,
    identity: Identity,
    secrets: SecretFetcher | None,
    recertify: Recertifier | None,
    files: SecretFiles,
) -> int:
    try:
        module_bytes, config, program, args, publisher = _workload_parts(frame)
        module = runtime.load(
            module_bytes, name=program, deadline=config.limits.timeout_s is not None
        )

        @functools.cache
        def workload() -> str:
            # Only a run that asks Steward for something names its workload: computed once.
            from donjon.keep.workload_id import workload_identity

            digest = hashlib.sha256(module_bytes).digest()
            return workload_identity(digest, config, program=program, args=args)

        released: dict[str, bytes] = {}
        if config.secrets and secrets is not None:
            released = secrets(config, workload(), publisher)
        invocation = Invocation.from_config(
            config,
            program=program,
            args=args,
            secrets=released,
            secrets_dir=files.write(config, released),
        )
        workload_chain = None
        if recertify is not None and invocation.uses_tls:
            workload_chain = recertify(workload())
    except Error as e:
        code = e.exit_code if isinstance(e, WorkloadError) else EXIT_PROTOCOL
        _send_exit(tls, code, e)
        return code
    stdio = _WorkloadStdio()
    stop_at = None
    if invocation.timeout_s is not None:
        stop_at = time.monotonic() + invocation.timeout_s + WATCHDOG_GRACE_S
    pump = _Pump(
        tls,
        decoder,
        stdin_w=stdio.stdin_w,
        out_r=stdio.out_r,
        err_r=stdio.err_r,
        wants_stdin=invocation.stdio[0] is FileKind.STDIN,
        stop_at=stop_at,
        program=program,
        timeout_s=invocation.timeout_s,
    )
    pump.start()
    error: Error | None = None
    network = _network(invocation, identity, workload_chain)
    renewer = None
    if network is not None and recertify is not None and workload_chain is not None:
        from donjon.keep.renewal import CertificateRenewer
        from donjon.keep.sockets.tls import IdentityTls

        if isinstance(network.tls, IdentityTls):
            renew = functools.partial(recertify, workload())
            renewer = CertificateRenewer(network.tls, renew, _notice_to_client)
            renewer.start()
    try:
        code = runtime.run(module, invocation, InheritedStdio(), network=network)
    except WorkloadError as e:
        code, error = e.exit_code, e
    except Error as e:
        code, error = EXIT_PROTOCOL, e
    finally:
        if renewer is not None:
            renewer.stop()
        pump.done.set()
        stdio.close()
        pump.join()
    _send_exit(tls, code, error, before=pump.leftover())
    return code


_CERT_NAMES = {
    "steward": "the Keep's Steward-issued certificate",
    "ra-tls": "the Keep's self-signed RA-TLS certificate",
}


def _network(
    invocation: Invocation, identity: Identity, workload_chain: bytes | None = None
) -> NetworkOptions | None:
    """The workload's sockets: TLS with the Keep's key (and *workload_chain*, Steward's
    certificate naming the workload, if there is one), notices on its stderr."""
    if invocation.fds is None:
        return None
    from donjon.keep.sockets import NetworkOptions
    from donjon.keep.sockets.tls import IdentityTls

    tls = IdentityTls(
        identity.key_pem,
        workload_chain or identity.chain_pem,
        description=(
            "the Keep's Steward-issued certificate naming the workload"
            if workload_chain is not None
            else _CERT_NAMES.get(identity.via, "the Keep's certificate")
        ),
    )
    return NetworkOptions(tls=tls, on_notice=_notice_to_client)


def _notice_to_client(text: str) -> None:
    """A socket notice, on the workload's stderr (streamed to the client) and in the Keep's log."""
    _logger.info("%s", text)
    with contextlib.suppress(OSError):
        os.write(2, f"donjon: {text}\n".encode())


def _send_exit(
    tls: ssl.SSLSocket, code: int, error: Error | None = None, *, before: bytes = b""
) -> None:
    frame = ExitFrame(
        code=code,
        error=type(error).__name__ if error is not None else None,
        message=error.diagnostics() if error is not None else None,
    )
    tls.settimeout(EXIT_FLUSH_TIMEOUT_S)
    try:
        tls.sendall(before + encode_frame(frame))
        tls.unwrap()
    except (OSError, ssl.SSLError):
        pass


def serve(
    sock_path: Path,
    identity: Identity,
    runtime: KeepRuntime | None = None,
    secrets: SecretFetcher | None = None,
    recertify: Recertifier | None = None,
) -> int:
    """Serve TLS on *sock_path* until one workload has run; return its exit code."""
    context = server_context(identity.key_pem, identity.chain_pem)
    runtime = runtime or KeepRuntime()
    sock_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = sock_path.with_name(sock_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with unix_socket_path(tmp) as bind_path:
        listener.bind(bind_path)
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
                decoder = FrameDecoder()
                try:
                    frame = receive_workload(tls, decoder)
                except (RemoteProtocolError, DecodeError, ssl.SSLError, OSError) as e:
                    failures += 1
                    _logger.warning("session failed before the workload arrived: %s", e)
                    continue
                listener.close()  # Rule 2: one workload; nobody else may connect from now on
                return run_workload(tls, decoder, frame, runtime, identity, secrets, recertify)
        return EXIT_PROTOCOL
    finally:
        listener.close()
        sock_path.unlink(missing_ok=True)


def _say_ready(fd: int) -> None:
    """Tell the spare loader that this runtime has warmed up (it paces the keep manager's pool)."""
    try:
        os.write(fd, b"r")
    except OSError:
        pass  # the loader took its Keep meanwhile and stopped listening
    finally:
        os.close(fd)


def _read_launch(fd: int) -> LaunchMessage:
    """The warm agent's launch message: everything until the loader closes the pipe."""
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := os.read(fd, 64 * 1024):
            size += len(chunk)
            if size > MAX_LAUNCH_MESSAGE_BYTES:
                raise DecodeError(f"the launch message exceeds {MAX_LAUNCH_MESSAGE_BYTES} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)
    if not chunks:
        raise _NoKeepError
    return LaunchMessage.decode(b"".join(chunks))


class _NoKeepError(Exception):
    """The loader closed the launch pipe without a Keep (the spare was discarded)."""


def _own_log_stream() -> TextIO:
    """The agent's log on a duplicate of stderr, so fds 0-2 can become the workload's (Rule 3).

    ``sys.stderr`` and ``sys.stdout`` point there too, so nothing the agent itself prints (a
    traceback from a bug) can land in the workload's output.
    """
    stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    sys.stderr = stream
    sys.stdout = stream
    return stream


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="donjon.keep.agent")
    parser.add_argument("--socket", type=Path)
    parser.add_argument("--params", type=Path)
    parser.add_argument("--launch-fd", type=int)
    parser.add_argument("--ready-fd", type=int, help="written to (one byte) once warmed up")
    ns = parser.parse_args(argv)
    warm: Warm | None = None
    if ns.launch_fd is not None:
        fd = ns.launch_fd
        warm = prewarm(assigned=lambda: bool(select.select([fd], [], [], 0)[0]))
        if ns.ready_fd is not None:
            _say_ready(ns.ready_fd)
        try:
            launch = _read_launch(ns.launch_fd)
        except _NoKeepError:
            return 0
        except (DecodeError, OSError) as e:
            print(f"donjon keep: bad launch message: {e}", file=sys.stderr)
            return EXIT_PROTOCOL
        attach_log(launch.log)
        sock_path, raw = launch.socket, launch.params
    elif ns.socket is not None and ns.params is not None:
        sock_path = ns.socket
        try:
            with ns.params.open("rb") as f:
                raw = f.read(MAX_PARAMS_BYTES + 1)
        except OSError as e:
            print(f"donjon keep: cannot read {ns.params}: {e}", file=sys.stderr)
            _note_failure(sock_path, str(e))
            return EXIT_PROTOCOL
    else:
        parser.error("give --socket and --params, or --launch-fd")
    logging.basicConfig(
        level=logging.INFO, format="donjon keep: %(message)s", stream=_own_log_stream()
    )
    # The HTTP clients log each request's URL (a registry path names the package): the host
    # reads this log, so they say only what goes wrong.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        params = LaunchParams.from_dict(
            decode(raw, what="launch parameters", max_bytes=MAX_PARAMS_BYTES)
        )
        identity = establish_identity(params, now=datetime.now(UTC), warm=warm)
        _logger.info(
            "identity ready (%s%s); certificate sha256 %s",
            identity.via,
            ", warm" if warm is not None else "",
            hashlib.sha256(identity.chain_pem).hexdigest()[:16],
        )
        secrets = functools.partial(release_secrets, params=params, identity=identity, warm=warm)
        renew: Recertifier | None = None
        if identity.via == "steward":
            renew = functools.partial(recertify, params, identity, warm)
        runtime = warm.runtime if warm is not None else None
        return serve(sock_path, identity, runtime, secrets, renew)
    except Error as e:
        _logger.error("%s", e.diagnostics())
        _note_failure(sock_path, e.diagnostics())
        return EXIT_PROTOCOL
    except OSError as e:
        _logger.error("%s", e)
        _note_failure(sock_path, str(e))
        return EXIT_PROTOCOL


def _note_failure(sock_path: Path, reason: str) -> None:
    # The reason is what the log says (a Steward refusal, bad launch parameters): no secret.
    # The loader puts it in the Keep's status, so the client learns why its Keep is gone.
    try:
        sock_path.with_name(FAILURE_FILE).write_text(reason[:MAX_FAILURE_CHARS])
    except OSError:
        pass


def run() -> None:
    """Entry point: run :func:`main` and end the process at once (wasmtime's threads and a
    blocked stdin reader are not torn down by the interpreter's exit; TOOLING.md P7)."""
    code = main()
    _flush_logs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
