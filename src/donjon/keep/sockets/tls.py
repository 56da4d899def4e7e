"""Where a Keep's TLS certificate comes from: the :class:`KeepTls` seam.

The socket layer terminates TLS 1.3 inside the Keep with contexts it asks a :class:`KeepTls`
for, one per ``[[files]]`` socket. Two implementations:

- :class:`IdentityTls`: the Keep's own key and certificate chain, as the deploy flow gets them
  from attestation (a Steward-issued chain, or a self-signed RA-TLS certificate that carries the
  evidence). Use this whenever the Keep has an identity.
- :class:`UnsafeEphemeralTls`: a fresh self-signed P-384 certificate that no attestation backs,
  for ``donjon run`` on a developer's machine; it warns on every use and publishes its SHA-256
  fingerprint so that a local client can pin it.

Beyond Enarx (which could do neither): a listener's ``client_ca`` requires client certificates
that chain to those anchors (mutual TLS), and a connect's ``server_ca`` is the only set of
anchors its server is verified against, with its host name. Without ``server_ca`` the anchors
are Mozilla's (``certifi``), shipped inside the runtime like Enarx's webpki-roots: never the
host's system store, which the untrusted host controls.

Keys never touch a filesystem: they reach OpenSSL through anonymous memory files
(:func:`donjon.keep.tls.server_context`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
from datetime import datetime, timedelta
from typing import Protocol

from donjon.crypto.ca import KeyPair, certificate_der
from donjon.crypto.ratls import certificate_pem, self_signed_certificate
from donjon.keep.errors import UnsupportedConfigError
from donjon.keep.tls import server_context

__all__ = ["EPHEMERAL_LIFETIME", "IdentityTls", "KeepTls", "UnsafeEphemeralTls"]

_logger = logging.getLogger(__name__)

EPHEMERAL_LIFETIME = timedelta(days=1)
"""Validity of an ephemeral certificate: a local run does not outlive it in practice."""


class KeepTls(Protocol):
    """Makes the TLS contexts of one Keep's sockets."""

    def server_context(self, *, client_ca: str | None) -> ssl.SSLContext:
        """A TLS 1.3 server context with the Keep's certificate; with ``client_ca`` (PEM), one
        that requires client certificates chaining to those anchors."""
        ...

    def client_context(self, *, server_ca: str | None) -> ssl.SSLContext:
        """A TLS 1.3 client context that verifies servers against ``server_ca`` (PEM; ``None``:
        the runtime's anchors) and presents the Keep's certificate if the server asks."""
        ...

    def describe(self) -> str:
        """A short phrase for messages, e.g. ``"the Keep's attested certificate"``."""
        ...


def _verifying(ctx: ssl.SSLContext, anchors_pem: str) -> None:
    try:
        ctx.load_verify_locations(cadata=anchors_pem)
    except ssl.SSLError as e:
        raise UnsupportedConfigError(f"the trust anchors cannot be loaded: {e}") from e
    # An anchor may be an intermediate (a team CA under a company root): trust it as given.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN


def _load_chain(ctx: ssl.SSLContext, key_pem: bytes, chain_pem: bytes) -> None:
    fd = os.memfd_create("donjon-keep-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, key_pem + chain_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _default_anchors(ctx: ssl.SSLContext) -> None:
    try:
        import certifi
    except ImportError as e:
        raise UnsupportedConfigError(
            "a TLS connect entry without server_ca needs the runtime's default trust anchors "
            "(the certifi package), which are not installed; add server_ca with the PEM of the "
            "server's CA"
        ) from e
    ctx.load_verify_locations(cafile=certifi.where())


class IdentityTls:
    """The Keep's own identity: its private key and certificate chain (leaf first), as PEM.

    The chain can be renewed while listeners run (:meth:`renew`, the same key with a newer
    certificate): each listener's context switches every handshake that starts afterwards to
    the new chain (OpenSSL's ClientHello callback, which runs with or without SNI), so a
    long-running server never presents a certificate that has expired.

    Args:
        key_pem: the private key (PKCS#8 or SEC1 PEM); kept in memory only.
        chain_pem: the certificate chain, leaf first.
        description: how messages name the certificate.
    """

    def __init__(
        self, key_pem: bytes, chain_pem: bytes, *, description: str = "the Keep's certificate"
    ) -> None:
        self._key_pem = key_pem
        self._chain_pem = chain_pem
        self._description = description
        self._lock = threading.Lock()
        self._generation = 0
        # (client_ca, generation) -> the context of the current chain for that listener.
        self._renewed: dict[str | None, tuple[int, ssl.SSLContext]] = {}

    def __repr__(self) -> str:
        return f"IdentityTls({self._description!r})"  # never the key

    @property
    def chain_pem(self) -> bytes:
        """The chain presented to handshakes that start now."""
        with self._lock:
            return self._chain_pem

    def renew(self, chain_pem: bytes) -> None:
        """Present *chain_pem* (for the same key) from the next handshake on.

        Raises:
            ssl.SSLError: the chain does not load with the Keep's key (nothing changes then).
        """
        server_context(self._key_pem, chain_pem)  # refuse a chain for another key up front
        with self._lock:
            self._chain_pem = chain_pem
            self._generation += 1

    def server_context(self, *, client_ca: str | None) -> ssl.SSLContext:
        ctx = self._server_context(self._chain_pem, client_ca)
        first = self._generation

        def current(tls: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
            if self._generation != first:  # renewed since this listener started
                tls.context = self._current_context(client_ca)

        ctx.sni_callback = current
        return ctx

    def _current_context(self, client_ca: str | None) -> ssl.SSLContext:
        with self._lock:
            generation, chain = self._generation, self._chain_pem
            cached = self._renewed.get(client_ca)
        if cached is not None and cached[0] == generation:
            return cached[1]
        ctx = self._server_context(chain, client_ca)
        with self._lock:
            self._renewed[client_ca] = (generation, ctx)
        return ctx

    def _server_context(self, chain_pem: bytes, client_ca: str | None) -> ssl.SSLContext:
        ctx = server_context(self._key_pem, chain_pem)
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            _verifying(ctx, client_ca)
        return ctx

    def client_context(self, *, server_ca: str | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and host name checks
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if server_ca is not None:
            _verifying(ctx, server_ca)
        else:
            _default_anchors(ctx)
        _load_chain(ctx, self._key_pem, self._chain_pem)
        return ctx

    def describe(self) -> str:
        return self._description


class UnsafeEphemeralTls:
    """A fresh self-signed P-384 certificate that no attestation backs: local use only.

    Anyone who trusts it trusts this host, not a Keep. Each context made from it logs a warning
    with its fingerprint, so that the fact is never silent.

    Attributes:
        certificate_pem: the certificate, for a local client to trust.
        fingerprint_sha256: SHA-256 of its DER, as ``AB:CD:...`` (``openssl x509 -fingerprint
            -sha256`` prints the same), for a local client to pin.
    """

    def __init__(self, key_pem: bytes, certificate: bytes, fingerprint: str) -> None:
        self._identity = IdentityTls(key_pem, certificate, description=self._text(fingerprint))
        self.certificate_pem = certificate
        self.fingerprint_sha256 = fingerprint

    @classmethod
    def generate(
        cls,
        *,
        now: datetime,
        names: tuple[str, ...] = ("localhost",),
        lifetime: timedelta = EPHEMERAL_LIFETIME,
    ) -> UnsafeEphemeralTls:
        """Make a key and a certificate for ``names``, valid from ``now`` for ``lifetime``."""
        key = KeyPair.generate("P-384")
        key_pem = key.private_key_pem()
        cert = self_signed_certificate(
            key_pem,
            common_name="donjon local keep (not attested)",
            dns_names=list(names),
            extensions=[],
            now=now,
            lifetime=lifetime,
        )
        digest = hashlib.sha256(certificate_der(cert)).hexdigest().upper()
        fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
        return cls(key_pem, certificate_pem(cert), fingerprint)

    @staticmethod
    def _text(fingerprint: str) -> str:
        return f"ephemeral self-signed certificate, not attested, SHA-256 {fingerprint}"

    def __repr__(self) -> str:
        return f"UnsafeEphemeralTls(sha256={self.fingerprint_sha256})"

    def _warn(self) -> None:
        _logger.warning(
            "TLS uses an ephemeral self-signed certificate that no attestation backs "
            "(SHA-256 %s): a client that trusts it trusts this host, not a Keep",
            self.fingerprint_sha256,
        )

    def server_context(self, *, client_ca: str | None) -> ssl.SSLContext:
        self._warn()
        return self._identity.server_context(client_ca=client_ca)

    def client_context(self, *, server_ca: str | None) -> ssl.SSLContext:
        self._warn()
        return self._identity.client_context(server_ca=server_ca)

    def describe(self) -> str:
        return self._identity.describe()
