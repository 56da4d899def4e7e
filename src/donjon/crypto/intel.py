"""ECDSA P-256 primitives and certificate digests for Intel DCAP quote verification.

.. warning:: This module wraps ``cryptography.hazmat``. It exists so that
   ``donjon.attestation.intel`` can check Intel's P-256 signatures (quote, QE report, TCB info,
   QE identity) and pin certificates without importing primitives itself.

Does: load P-256 public keys from raw points and certificates, verify raw ``r || s`` ECDSA-SHA256
signatures over exact bytes, digest certificates and their public keys.
Does not: decide what to trust, parse quotes or read the clock.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from donjon.errors import ChainError, EvidenceFormatError, SignatureError

P256PublicKey = ec.EllipticCurvePublicKey
"""The key type every Intel DCAP signature in scope uses (ECDSA-256-with-P-256 curve)."""

P256_SIGNATURE_BYTES = 64  # bytes: r || s, 32 bytes each, big-endian (Intel quote format)
P256_POINT_BYTES = 64  # bytes: x || y without the SEC1 0x04 prefix, as Intel quotes carry it

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_P256 = ec.SECP256R1()


def p256_public_key(point: bytes, *, what: str) -> P256PublicKey:
    """Load a P-256 public key from the raw 64-byte ``x || y`` form used in quotes.

    Args:
        point: 64 bytes, x then y, big-endian.
        what: names the key in error messages.

    Raises:
        EvidenceFormatError: wrong length, or not a point on P-256.
    """
    if len(point) != P256_POINT_BYTES:
        raise EvidenceFormatError(f"{what}: {len(point)} bytes, expected {P256_POINT_BYTES}")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_P256, b"\x04" + point)
    except ValueError:
        raise EvidenceFormatError(f"{what}: not a point on the P-256 curve") from None


def certificate_p256_key(cert: x509.Certificate, *, what: str) -> P256PublicKey:
    """The P-256 public key of *cert*.

    Raises:
        ChainError: the certificate's key is not an EC P-256 key.
    """
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _P256.name:
        raise ChainError(f"{what}: the certificate's key is not ECDSA P-256, as Intel's PKI uses")
    return key


def verify_p256(key: P256PublicKey, signature: bytes, data: bytes, *, what: str) -> None:
    """Verify an ECDSA-P256-SHA256 signature given as raw ``r || s`` over exactly *data*.

    Raises:
        SignatureError: wrong length, an out-of-range r or s, or a signature that does not verify.
    """
    if len(signature) != P256_SIGNATURE_BYTES:
        raise SignatureError(
            f"{what}: signature is {len(signature)} bytes, expected {P256_SIGNATURE_BYTES}"
        )
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if r == 0 or s == 0:
        raise SignatureError(f"{what}: signature has a zero r or s")
    try:
        key.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
    except InvalidSignature:
        raise SignatureError(f"{what}: ECDSA P-256 signature does not verify") from None


def certificate_der(cert: x509.Certificate) -> bytes:
    """The DER encoding of *cert*."""
    return cert.public_bytes(Encoding.DER)


def certificate_sha256(cert: x509.Certificate) -> bytes:
    """SHA-256 over the DER certificate (its fingerprint)."""
    return hashlib.sha256(certificate_der(cert)).digest()


def spki_sha256(cert: x509.Certificate) -> bytes:
    """SHA-256 over the DER SubjectPublicKeyInfo of *cert* (identifies its key)."""
    return hashlib.sha256(
        cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).digest()


__all__ = [
    "P256_POINT_BYTES",
    "P256_SIGNATURE_BYTES",
    "P256PublicKey",
    "certificate_der",
    "certificate_p256_key",
    "certificate_sha256",
    "p256_public_key",
    "spki_sha256",
    "verify_p256",
]
