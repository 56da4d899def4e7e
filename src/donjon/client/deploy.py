"""``donjon deploy``: get a Keep from an untrusted host, verify it, then hand it the workload.

Steps (each must succeed before the next):

1. Read the workload (a ``.wasm``, or a directory with ``Enarx.toml`` and one module) and a fresh
   32-byte client nonce.
2. Ask the keep manager for a Keep, giving it the nonce (public) and the Steward URL, if any.
3. Open the relay and run a TLS 1.3 handshake with the keep runtime *through* it.
4. Verify the Keep's certificate and attestation (:mod:`donjon.client.attested`): platform,
   keep-runtime measurement, nonce, policy. Nothing of the workload has been sent yet.
5. Send the workload frame (module, its SHA-256, config) and stream the Keep's stdout/stderr.
6. Return the workload's exit code.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from cryptography import x509

from donjon.attestation.policy import Policy
from donjon.client.attested import KeepIdentity, development_policy, verify_keep_certificate
from donjon.client.channel import KeepChannel
from donjon.client.host_api import HostClient, KeepInfo
from donjon.crypto.ratls import certificate_pem
from donjon.errors import (
    ConfigError,
    ConnectError,
    Error,
    KeepLaunchError,
    RemoteProtocolError,
    UsageError,
)
from donjon.keep.config import WorkloadConfig, load_config
from donjon.wire.frames import (
    MAX_MODULE_BYTES,
    DataFrame,
    ExitFrame,
    FrameDecoder,
    PackageFrame,
    StdinEofFrame,
    WorkloadFrame,
    encode_frame,
)

_logger = logging.getLogger(__name__)

NONCE_BYTES = 32
CONFIG_NAMES = ("Enarx.toml", "donjon.toml")


@dataclass(frozen=True, slots=True)
class Workload:
    """A workload ready to send."""

    module: bytes
    config: WorkloadConfig
    name: str

    @property
    def module_sha256(self) -> bytes:
        return hashlib.sha256(self.module).digest()

    @classmethod
    def load(cls, path: Path, *, config_path: Path | None = None) -> Workload:
        """A ``.wasm`` file (with an optional config), or a directory holding both.

        Raises:
            UsageError: no such file, not a module, or a directory without exactly one module.
            ConfigError: an invalid config.
        """
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
        return cls(module=module, config=config, name=module_path.name)


@dataclass(frozen=True, slots=True)
class RegistryWorkload:
    """A workload the Keep fetches itself from an OCI registry, after it has been verified.

    Attributes:
        reference: ``REGISTRY/REPO@sha256:...`` (resolved from a tag on the client).
        username, password: registry credentials; sent only to the verified Keep.
        publisher_keys: PEM public keys; if any, the Keep requires a signature by one of them.
    """

    reference: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    publisher_keys: tuple[bytes, ...] = ()

    @property
    def name(self) -> str:
        return self.reference


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
    token: str
    steward: str | None = None
    steward_ca: x509.Certificate | None = None
    policy: Policy | None = None
    insecure: bool = False
    backend: str = "nil"

    def effective_policy(self) -> Policy:
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
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_verified: Callable[[KeepInfo, KeepIdentity], None] | None = None,
) -> DeployResult:
    """Run *workload* in a fresh, verified Keep; stream its output; return its exit code.

    Raises:
        VerificationError: the Keep did not prove itself (nothing of the workload was sent).
        TransportError, RemoteProtocolError: the host or the channel failed.
    """
    if options.steward is not None and options.steward_ca is None:
        raise UsageError("--steward needs the Steward's CA certificate (--ca FILE) to trust")
    nonce = secrets.token_bytes(NONCE_BYTES)
    with HostClient(options.host, token=options.token) as host:
        keep = host.create_keep(
            backend=options.backend,
            nonce=nonce,
            steward=options.steward,
            steward_ca_pem=certificate_pem(options.steward_ca) if options.steward_ca else None,
            limits=_limits(workload.config) if isinstance(workload, Workload) else {},
        )
        _logger.info("keep %s created on %s", keep.id, options.host)
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
                policy=options.effective_policy(),
                insecure_ok=options.insecure,
                now=clock(),
                steward_ca=options.steward_ca,
            )
            if on_verified is not None:
                on_verified(keep, identity)
            channel.send(encode_frame(_first_frame(workload)) + encode_frame(StdinEofFrame()))
            exit_frame = _stream(channel, stdout, stderr)
    return DeployResult(
        exit_code=exit_frame.code,
        keep=keep,
        identity=identity,
        error=exit_frame.error,
        message=exit_frame.message,
    )


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
        )
    return WorkloadFrame(
        config=workload.config.to_dict(),
        module=workload.module,
        module_sha256=workload.module_sha256,
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


def _tls_context(steward_ca: x509.Certificate | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # The Keep is named by its attestation, not a DNS name: identity is checked on the claims.
    ctx.check_hostname = False
    if steward_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=certificate_pem(steward_ca).decode("ascii"))
    else:
        # RA-TLS: the certificate is self-signed; its evidence is verified after the handshake,
        # before any workload byte is sent.
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _limits(config: WorkloadConfig) -> dict[str, float | int]:
    limits: dict[str, float | int] = {}
    if config.limits.memory_mib is not None:
        limits["memory_mib"] = config.limits.memory_mib
    if config.limits.timeout_s is not None:
        limits["timeout_s"] = config.limits.timeout_s
    return limits
