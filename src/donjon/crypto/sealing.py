"""Secrets sealed to a Keep's attested key: HPKE (RFC 9180), base mode, single shot.

Steward releases a secret only inside a response that it encrypts to the key the Keep's
evidence binds, so the secret is readable by that Keep alone: not by the host that relays the
bytes, not by a load balancer that terminates Steward's TLS, not by a log that records the
response. The suite is DHKEM(P-384, HKDF-SHA384), HKDF-SHA384, AES-256-GCM: the curve of the
Keep's key (P-384, like the SEV-SNP VCEK) and the strongest AEAD HPKE defines for it.

The HPKE ``info`` binds the secret's name and the nonce of the request that released it::

    info = "donjon/secret/v1" || 0x00 || u16be(len(name)) || name || u16be(len(nonce)) || nonce

so a sealed value cannot be replayed under another name, or into another request's answer.
The sealed form is HPKE's ``enc || ciphertext`` (97 + len(value) + 16 bytes for P-384).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from donjon.errors import DecodeError, VerificationError

__all__ = ["MAX_SEALED_BYTES", "SEAL_OVERHEAD", "SealError", "open_secret", "seal_secret"]

_SUITE = hpke.Suite(hpke.KEM.P384, hpke.KDF.HKDF_SHA384, hpke.AEAD.AES_256_GCM)
_DOMAIN = b"donjon/secret/v1\x00"
SEAL_OVERHEAD = 97 + 16
"""Bytes a sealed value has beyond the value: the P-384 encapsulated key and the GCM tag."""
MAX_SEALED_BYTES = 64 * 1024 + SEAL_OVERHEAD
"""Largest sealed value opened (bytes): Steward's largest secret plus the overhead."""


class SealError(VerificationError):
    """A sealed secret does not open with this key, name and nonce."""


def _info(name: str, nonce: bytes) -> bytes:
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DecodeError("a secret name must be valid Unicode text") from e
    if len(encoded) > 0xFFFF or len(nonce) > 0xFFFF:
        raise DecodeError("secret name or nonce too long to seal")
    return (
        _DOMAIN + len(encoded).to_bytes(2, "big") + encoded + len(nonce).to_bytes(2, "big") + nonce
    )


def seal_secret(value: bytes, recipient_spki_der: bytes, *, name: str, nonce: bytes) -> bytes:
    """Encrypt *value* to the P-384 key *recipient_spki_der* (DER SubjectPublicKeyInfo).

    Raises:
        DecodeError: the key is not a P-384 public key.
    """
    try:
        key = serialization.load_der_public_key(recipient_spki_der)
    except ValueError as e:
        raise DecodeError(f"the key to seal a secret to cannot be loaded: {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise DecodeError("secrets are sealed to P-384 keys only; the Keep's key is not one")
    return _SUITE.encrypt(value, key, info=_info(name, nonce))


def open_secret(sealed: bytes, private_key_pem: bytes, *, name: str, nonce: bytes) -> bytes:
    """Decrypt what :func:`seal_secret` sealed to the public half of *private_key_pem*.

    Raises:
        SealError: wrong key, name or nonce, or altered bytes (nothing is returned then).
        DecodeError: the sealed value is too large, or the key is not a P-384 private key.
    """
    if len(sealed) > MAX_SEALED_BYTES:
        raise DecodeError(f"sealed secret {name!r} is over {MAX_SEALED_BYTES} bytes")
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise DecodeError(f"the Keep's key cannot be loaded: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
        raise DecodeError("secrets are sealed to P-384 keys only; this key is not one")
    try:
        return _SUITE.decrypt(sealed, key, info=_info(name, nonce))
    except (InvalidTag, ValueError) as e:
        raise SealError(
            f"secret {name!r} does not open with this Keep's key: it was sealed to another key "
            "or request, or altered on the way"
        ) from e
