"""``donjon deploy``: get a Keep from an untrusted host, verify it, then hand it the workload.

Steps (each must succeed before the next):

1. Read the workload (a ``.wasm``, or a directory with ``Enarx.toml`` and one module, or a
   registry package resolved to a digest) and a fresh 32-byte client nonce.
2. Ask the keep manager for a Keep, giving it the nonce (public) and the Steward URL, if any.
   The verifiers (~120 ms of imports) load on a background thread meanwhile: while the request
   is in flight and the Keep starts on its host.
3. Open the relay and run a TLS 1.3 handshake with the keep runtime *through* it.
4. Verify the Keep's certificate and attestation (:mod:`donjon.client.attested`): platform,
   keep-runtime measurement, nonce, policy. Nothing of the workload has been sent yet.
5. Send the workload frame (module, its SHA-256, config, argv[0] and extra arguments), then
   stream the caller's stdin to the Keep (or end it at once) while its stdout/stderr stream back.
6. Return the workload's exit code.

Rule 1: a Keep this client created and did not see through to its exit frame is stopped
(``DELETE``) before the error propagates: a refused Keep does not linger on the host, and
nobody else can use it anyway (its evidence is bound to this client's nonce).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from donjon.errors import (
    ConfigError,
    ConnectError,
    Error,
    KeepLaunchError,
    RemoteProtocolError,
    UsageError,
)
from donjon.wire.frames import (
    MAX_DATA_FRAME_BYTES,
    MAX_MODULE_BYTES,
    DataFrame,
    ExitFrame,
    FrameDecoder,
    PackageFrame,
    StdinEofFrame,
    WorkloadFrame,
    encode_frame,
)

if TYPE_CHECKING:
    import ssl

    from cryptography import x509

    from donjon.attestation.policy import Policy
    from donjon.client.attested import KeepIdentity
    from donjon.client.channel import KeepChannel
    from donjon.client.host_api import HostClient, KeepInfo
    from donjon.keep.config import WorkloadConfig
    from donjon.registry import Credentials

__all__ = [
    "CONFIG_NAMES",
    "NONCE_BYTES",
    "DeployOptions",
    "DeployResult",
    "RegistryWorkload",
    "Workload",
    "deploy",
    "resolve_registry_workload",
]

_logger = logging.getLogger(__name__)

NONCE_BYTES = 32
CONFIG_NAMES = ("Enarx.toml", "donjon.toml")
STDIN_CHUNK_BYTES = 64 * 1024
"""Most stdin read and sent at once (bytes); a frame allows up to 1 MiB."""
CLEANUP_TIMEOUT_S = 10.0
"""Longest wait for the host to stop a Keep this client gives up on (seconds)."""


@dataclass(frozen=True, slots=True)
class Workload:
    """A workload ready to send.

    Attributes:
        module: the Wasm module.
        config: its config (``WorkloadConfig()`` for none).
        name: the module's file name: ``argv[0]`` in the Keep, as with ``donjon run``.
        args: arguments after the config's ``args``.
    """

    module: bytes
    config: WorkloadConfig
    name: str
    args: tuple[str, ...] = ()

    @property
    def module_sha256(self) -> bytes:
        return hashlib.sha256(self.module).digest()

    @property
    def identity(self) -> str:
        """The workload identity URI its Keep names when it asks Steward for its secrets."""
        from donjon.keep.workload_id import workload_identity

        return workload_identity(self.module_sha256, self.config, program=self.name, args=self.args)

    @classmethod
    def load(
        cls, path: Path, *, config_path: Path | None = None, args: Sequence[str] = ()
    ) -> Workload:
        """A ``.wasm`` file (with an optional config), or a directory holding both.

        Raises:
            UsageError: no such file, not a module, or a directory without exactly one module.
            ConfigError: an invalid config.
        """
        from donjon.keep.config import WorkloadConfig, load_config

        if path.is_dir():
            modules = sorted(path.glob("*.wasm"))
            if len(modules) != 1:
                raise UsageError(
                    f"{path} holds {len(modules)} .wasm files; a workload directory needs exactly "
                    "one module and an Enarx.toml"
                )
            if config_path is None:
                found = [path / n for n in CONFIG_NAMES if (path / n).is_file()]
                config_path = found[0] if found else None
            module_path = modules[0]
        else:
            module_path = path
        if not module_path.is_file():
            raise UsageError(f"{module_path}: no such file")
        size = module_path.stat().st_size
        if size > MAX_MODULE_BYTES:
            raise UsageError(
                f"{module_path} is {size} bytes; a Keep accepts at most {MAX_MODULE_BYTES}"
            )
        module = module_path.read_bytes()
        if not module.startswith(b"\0asm"):
            raise UsageError(f"{module_path} is not a WebAssembly module (no \\0asm header)")
        config = load_config(config_path) if config_path is not None else WorkloadConfig()
        if config.dirs:
            raise ConfigError(
                f"{config.source}: [[dirs]] are host directories; a deployed Keep runs on another "
                "machine whose storage is untrusted, so deploy does not take [[dirs]] (yet)"
            )
        return cls(module=module, config=config, name=module_path.name, args=tuple(args))

    @property
    def reads_stdin(self) -> bool:
        """Whether the config gives the workload a stdin (if not, the caller's is not read)."""
        from donjon.keep.config import FileKind

        return any(f.kind is FileKind.STDIN for f in self.config.effective_files())


@dataclass(frozen=True, slots=True)
class RegistryWorkload:
    """A workload the Keep fetches itself from an OCI registry, after it has been verified.

    Attributes:
        reference: ``REGISTRY/REPO@sha256:...`` (resolved from a tag on the client).
        username, password: registry credentials; sent only to the verified Keep.
        publisher_keys: PEM public keys; if any, the Keep requires a signature by one of them.
        args: arguments after the package config's ``args`` (``argv[0]`` is ``main.wasm``, the
            package's module layer).
    """

    reference: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    publisher_keys: tuple[bytes, ...] = ()
    args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.reference

    @property
    def reads_stdin(self) -> bool:
        return True  # its config is known only in the Keep


def resolve_registry_workload(
    reference: str,
    *,
    credentials: Credentials | None = None,
    publisher_keys: Sequence[bytes] = (),
    args: Sequence[str] = (),
) -> RegistryWorkload:
    """Resolve ``REGISTRY/REPO:TAG`` (or check ``...@sha256:``) to a package digest, here.

    The Keep is then given only the digest: whatever the tag points at later, it runs (or
    refuses) exactly the package resolved now.

    Args:
        reference: the package reference.
        credentials: for a private repository; used here to resolve, and sent to the Keep.
        publisher_keys: PEM public keys, each checked here so a bad key fails before a Keep.
        args: extra workload arguments.

    Raises:
        ReferenceSyntaxError, CredentialsError: a bad reference or key.
        NotFoundError, RegistryAuthError, TransportError: the registry's answer.
    """
    from donjon.crypto.publisher import PublisherPublicKey
    from donjon.registry import Reference, RegistryClient, resolve_package

    ref = Reference.parse(reference)
    for i, pem in enumerate(publisher_keys):
        PublisherPublicKey.from_pem(pem, source=f"publisher key {i + 1}")
    with RegistryClient.for_reference(ref, credentials=credentials) as client:
        manifest = resolve_package(client, ref)
    return RegistryWorkload(
        reference=str(ref.with_digest(manifest.digest)),
        username=credentials.username if credentials else None,
        password=credentials.password if credentials else None,
        publisher_keys=tuple(publisher_keys),
        args=tuple(args),
    )


@dataclass(frozen=True, slots=True)
class DeployOptions:
    """How to reach and judge the Keep.

    Attributes:
        host: the keep manager URL.
        token: its bearer token.
        steward: the Steward URL the Keep should get its certificate from (None: RA-TLS).
        steward_ca: the Steward CA certificate the client trusts (needed with *steward*).
        policy: the client's policy (None: production, or development with *insecure*).
        insecure: allow Keeps without confidentiality (nil).
        backend: the backend to ask the host for.
    """

    host: str
    token: str = field(repr=False)
    steward: str | None = None
    steward_ca: x509.Certificate | None = None
    policy: Policy | None = None
    insecure: bool = False
    backend: str = "nil"

    def effective_policy(self) -> Policy:
        from donjon.attestation.policy import Policy
        from donjon.client.attested import development_policy

        if self.policy is not None:
            return self.policy
        return development_policy() if self.insecure else Policy.production()


@dataclass(frozen=True, slots=True)
class DeployResult:
    exit_code: int
    keep: KeepInfo
    identity: KeepIdentity
    error: str | None = None
    message: str | None = None


def deploy(
    workload: Workload | RegistryWorkload,
    options: DeployOptions,
    *,
    stdout: BinaryIO,
    stderr: BinaryIO,
    stdin: BinaryIO | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_verified: Callable[[KeepInfo, KeepIdentity], None] | None = None,
) -> DeployResult:
    """Run *workload* in a fresh, verified Keep; stream its stdio; return its exit code.

    Args:
        workload: what to run.
        options: where and under which policy.
        stdout, stderr: where the workload's output goes (written and flushed as it comes).
        stdin: streamed to the workload while it runs (read by a background thread, only if
            the workload's config has a stdin); None: the workload reads end of file at once.
        clock: the time the Keep's certificate is checked at.
        on_verified: called once the Keep is verified, before anything is sent to it.

    Raises:
        VerificationError: the Keep did not prove itself (nothing of the workload was sent).
        TransportError, RemoteProtocolError: the host or the channel failed.
        Either way the Keep is stopped first (Rule 1).
    """
    if options.steward is not None and options.steward_ca is None:
        raise UsageError("--steward needs the Steward's CA certificate (--ca FILE) to trust")
    if isinstance(workload, Workload) and workload.config.secrets and options.steward is None:
        names = ", ".join(s.name for s in workload.config.secrets)
        raise UsageError(
            f"{workload.config.source or 'the config'} asks Steward for secrets ({names}); "
            "deploy with --steward URL --ca FILE, so that the Keep can get them"
        )
    from donjon.client.host_api import HostClient

    nonce = secrets.token_bytes(NONCE_BYTES)
    ca_pem = _pem(options.steward_ca) if options.steward_ca else None
    preload = threading.Thread(target=_preload_verifiers, name="donjon-deploy-imports")
    preload.start()
    with HostClient(options.host, token=options.token) as host:
        try:
            keep = host.create_keep(
                backend=options.backend,
                nonce=nonce,
                steward=options.steward,
                steward_ca_pem=ca_pem,
                limits=_limits(workload.config) if isinstance(workload, Workload) else {},
            )
        finally:
            preload.join()
        _logger.info("keep %s created on %s", keep.id, options.host)
        finished = False
        try:
            identity, exit_frame = _session(
                host, keep, nonce, workload, options, stdout, stderr, stdin, clock, on_verified
            )
            finished = True
        finally:
            if not finished:  # Rule 1, also on Ctrl-C
                _stop_quietly(host, keep.id)
    return DeployResult(
        exit_code=exit_frame.code,
        keep=keep,
        identity=identity,
        error=exit_frame.error,
        message=exit_frame.message,
    )


def _preload_verifiers() -> None:
    """Import what verifies a Keep (step 2); the session imports them again, for free, and
    reports any import error there."""
    try:
        import donjon.client.attested
        import donjon.client.channel  # noqa: F401
    except Exception as e:  # only a head start: the session's own import raises it
        _logger.debug("preloading the verifiers failed: %s", e)


def _session(
    host: HostClient,
    keep: KeepInfo,
    nonce: bytes,
    workload: Workload | RegistryWorkload,
    options: DeployOptions,
    stdout: BinaryIO,
    stderr: BinaryIO,
    stdin: BinaryIO | None,
    clock: Callable[[], datetime],
    on_verified: Callable[[KeepInfo, KeepIdentity], None] | None,
) -> tuple[KeepIdentity, ExitFrame]:
    # Preloaded during step 2 (see _preload_verifiers).
    from donjon.client.attested import verify_keep_certificate
    from donjon.client.channel import KeepChannel

    policy = options.effective_policy()
    context = _tls_context(options.steward_ca)
    try:
        channel = KeepChannel(host.relay_url(keep.id), token=host.token, context=context)
    except ConnectError as e:
        raise _unreachable(host, keep.id, e) from e
    with channel:
        peer = channel.handshake()
        identity = verify_keep_certificate(
            peer,
            nonce=nonce,
            policy=policy,
            insecure_ok=options.insecure,
            now=clock(),
            steward_ca=options.steward_ca,
        )
        if on_verified is not None:
            on_verified(keep, identity)
        first = encode_frame(_first_frame(workload))
        if stdin is None or not workload.reads_stdin:
            channel.send(first + encode_frame(StdinEofFrame()))
            return identity, _stream(channel, stdout, stderr)
        channel.send(first)
        feeder = _StdinFeeder(channel, stdin)
        feeder.start()
        try:
            return identity, _stream(channel, stdout, stderr)
        finally:
            feeder.stop()


class _StdinFeeder:
    """Streams the caller's stdin to the Keep from a daemon thread, then ``stdin-eof``.

    The thread may stay blocked in a read of the caller's stdin after the workload has ended
    (a terminal, a pipe that never closes); it is a daemon and sends nothing more once stopped.
    """

    def __init__(self, channel: KeepChannel, stdin: BinaryIO) -> None:
        self._channel = channel
        self._stdin = stdin
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="donjon-deploy-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        read: Callable[[int], bytes] = getattr(self._stdin, "read1", None) or self._stdin.read
        try:
            while not self._stopped.is_set():
                chunk = read(min(STDIN_CHUNK_BYTES, MAX_DATA_FRAME_BYTES))
                if not chunk or self._stopped.is_set():
                    break
                self._channel.send(encode_frame(DataFrame(stream="stdin", data=chunk)))
            if not self._stopped.is_set():
                self._channel.send(encode_frame(StdinEofFrame()))
        except (Error, OSError, ValueError) as e:
            # The session ended (or the caller's stdin failed): the receiving side reports how.
            _logger.debug("stdin forwarding ended: %s", e)


def _stop_quietly(host: HostClient, keep_id: str) -> None:
    with contextlib.suppress(Error):
        host.stop_keep(keep_id, timeout=CLEANUP_TIMEOUT_S)
        _logger.info("keep %s stopped", keep_id)


def _unreachable(host: HostClient, keep_id: str, error: ConnectError) -> Error:
    """The relay refused: if the Keep has already ended, say so and why (as the host reports)."""
    try:
        info = host.get_keep(keep_id)
    except Error:
        return error
    if info.state not in ("exited", "stopped", "failed"):
        return error
    return KeepLaunchError(
        f"the Keep {keep_id} ended before it could be verified ({info.state}: "
        f"{info.detail or 'no detail'}, as its host reports); nothing was sent to it"
    )


def _first_frame(workload: Workload | RegistryWorkload) -> WorkloadFrame | PackageFrame:
    if isinstance(workload, RegistryWorkload):
        return PackageFrame(
            reference=workload.reference,
            username=workload.username,
            password=workload.password,
            publisher_keys=workload.publisher_keys,
            args=workload.args,
        )
    return WorkloadFrame(
        config=workload.config.to_dict(),
        module=workload.module,
        module_sha256=workload.module_sha256,
        program=workload.name,
        args=workload.args,
    )


def _stream(channel: KeepChannel, stdout: BinaryIO, stderr: BinaryIO) -> ExitFrame:
    decoder = FrameDecoder()
    while True:
        data = channel.recv()
        if not data:
            raise RemoteProtocolError("the Keep closed the session before reporting an exit code")
        decoder.feed(data)
        while (frame := decoder.next_frame()) is not None:
            if isinstance(frame, ExitFrame):
                return frame
            if isinstance(frame, DataFrame) and frame.stream in ("stdout", "stderr"):
                out = stdout if frame.stream == "stdout" else stderr
                out.write(frame.data)
                out.flush()
            else:
                raise RemoteProtocolError(f"the Keep sent an unexpected {type(frame).__name__}")


def _pem(cert: x509.Certificate) -> bytes:
    from donjon.crypto.ratls import certificate_pem

    return certificate_pem(cert)


def _tls_context(steward_ca: x509.Certificate | None) -> ssl.SSLContext:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # The Keep is named by its attestation, not a DNS name: identity is checked on the claims.
    ctx.check_hostname = False
    if steward_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=_pem(steward_ca).decode("ascii"))
    else:
        # RA-TLS: the certificate is self-signed; its evidence is verified after the handshake,
        # before any workload byte is sent.
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _limits(config: WorkloadConfig) -> dict[str, Any]:
    limits: dict[str, float | int] = {}
    if config.limits.memory_mib is not None:
        limits["memory_mib"] = config.limits.memory_mib
    if config.limits.timeout_s is not None:
        limits["timeout_s"] = config.limits.timeout_s
    return limits
