"""Self-signed certificates that carry their own evidence (RA-TLS), for Keeps without a Steward.

The Keep's key signs a certificate whose non-critical ``DONJON_EVIDENCE`` extension holds the
evidence; the evidence's report data binds the certificate's key and the client's nonce, and the
TLS handshake proves the Keep holds that key. A relying party verifies the evidence, not a CA.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from donjon.crypto.ca import tls_leaf_builder
from donjon.errors import DecodeError, FreshnessError, SignatureError

MAX_CERTIFICATE_BYTES = 256 * 1024
"""Largest peer certificate parsed (bytes): evidence with Intel collateral is ~60 KiB."""


def self_signed_certificate(
    key_pem: bytes,
    *,
    common_name: str,
    dns_names: Sequence[str],
    extensions: Sequence[tuple[x509.ObjectIdentifier, bytes]],
    now: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """A self-signed TLS server and client certificate for the key in *key_pem*."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("RA-TLS certificates use EC keys")
    builder = tls_leaf_builder(
        common_name=common_name,
        issuer=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
        public_key=key.public_key(),
        not_before=now - timedelta(minutes=5),
        not_after=now + lifetime,
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
    for oid, value in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    return builder.sign(key, hashes.SHA384())


def load_peer_certificate(der: bytes) -> x509.Certificate:
    """Parse a peer's DER certificate, bounded.

    Raises:
        DecodeError: too large or not a certificate.
    """
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise DecodeError(f"peer certificate is {len(der)} bytes; limit {MAX_CERTIFICATE_BYTES}")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as e:
        raise DecodeError(f"peer certificate does not parse: {e}") from e


def check_validity(cert: x509.Certificate, now: datetime) -> None:
    """Raise FreshnessError unless *now* is inside the certificate's validity period."""
    if now < cert.not_valid_before_utc:
        raise FreshnessError(
            f"certificate is not valid before {cert.not_valid_before_utc.isoformat()}"
        )
    if now > cert.not_valid_after_utc:
        raise FreshnessError(f"certificate expired at {cert.not_valid_after_utc.isoformat()}")


def verify_self_signed(cert: x509.Certificate, now: datetime) -> None:
    """Check that *cert* is signed by its own key and valid at *now*.

    Raises:
        SignatureError: not self-signed by its key.
        FreshnessError: outside its validity period.
    """
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SignatureError(f"the Keep's certificate is not self-signed: {e}") from e
    except InvalidSignature as e:
        raise SignatureError("the Keep's certificate signature does not verify") from e
    check_validity(cert, now)


def extension_bytes(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    """The raw value of a non-standard extension, or None if absent."""
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as e:
        raise DecodeError(f"certificate extensions do not parse: {e}") from e
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
