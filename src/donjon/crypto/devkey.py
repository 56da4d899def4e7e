"""Development signing keys: the P-384 key that signs ``nil`` evidence on one machine.

.. warning::
   This module uses ``cryptography.hazmat``. A development key proves only "some donjon process
   on a machine that holds this key file said so"; it protects nothing against the host. It exists
   so the whole attestation flow runs without TEE hardware, and policies must opt in to it.

Does: generate a key as PKCS#8 PEM, load one, sign a COSE_Sign1 with it, and verify a COSE_Sign1
against a DER SubjectPublicKeyInfo.
Does not: read or write files (``donjon.backends.nil_evidence`` manages the key file), or decide
whether a key is trusted (``donjon.attestation.nil``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from donjon.crypto.cose import sign1, verify_sign1
from donjon.crypto.signatures import spki_der
from donjon.errors import ConfigError, EvidenceFormatError
from donjon.wire.cose import CoseSign1

MAX_KEY_PEM_BYTES = 4096
"""Largest key file accepted (bytes); a P-384 PKCS#8 PEM is about 300 bytes."""

MAX_SPKI_BYTES = 512
"""Largest SubjectPublicKeyInfo accepted (bytes); a P-384 SPKI is 120 bytes."""

DEV_KEY_CURVE = "secp384r1"
"""Development keys are P-384, the curve every TEE vendor in DESIGN.md uses for its own reports."""


def generate_dev_key_pem() -> bytes:
    """A fresh P-384 private key as unencrypted PKCS#8 PEM (the caller stores it mode 0600)."""
    key = ec.generate_private_key(ec.SECP384R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def spki_sha256(spki: bytes) -> str:
    """The lowercase hex SHA-256 of a DER SubjectPublicKeyInfo: how a dev key is named."""
    return hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True, slots=True, eq=False)
class DevSigningKey:
    """A loaded development signing key.

    Attributes:
        spki: DER SubjectPublicKeyInfo of the public key.
    """

    _key: ec.EllipticCurvePrivateKey
    spki: bytes

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str) -> DevSigningKey:
        """Load a P-384 private key from PEM.

        Args:
            pem: the key file's bytes.
            source: where the key came from, for error messages (a path); never the key.

        Raises:
            ConfigError: not a PEM private key, or not a P-384 EC key.
        """
        if len(pem) > MAX_KEY_PEM_BYTES:
            raise ConfigError(
                f"{source}: {len(pem)} bytes is too large for a development key "
                f"(limit {MAX_KEY_PEM_BYTES}); delete it and a new key will be created"
            )
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # The library message may quote key material; say what to do instead.
            raise ConfigError(
                f"{source}: not an unencrypted PEM private key; "
                "delete it and a new development key will be created"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != DEV_KEY_CURVE:
            raise ConfigError(
                f"{source}: a development key must be an EC P-384 key; "
                "delete it and a new one will be created"
            )
        return cls(_key=key, spki=spki_der(key.public_key()))

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo."""
        return spki_sha256(self.spki)

    def spki_pem(self) -> str:
        """The public key as a PEM ``PUBLIC KEY`` block (safe to print and share)."""
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def sign1(self, payload: bytes, *, protected: dict[Any, Any]) -> bytes:
        """A tagged COSE_Sign1 (ES384) over *payload* with extra *protected* header entries."""
        return sign1(self._key, payload, protected=protected)

    def __repr__(self) -> str:
        # Never show the private key, even in a debugger or a log line.
        return f"DevSigningKey(sha256={self.fingerprint})"


def load_p384_spki(spki: bytes, *, what: str) -> ec.EllipticCurvePublicKey:
    """Load a DER SubjectPublicKeyInfo that must hold a P-384 EC public key.

    Raises:
        EvidenceFormatError: too large, not DER SPKI, or not a P-384 key.
    """
    if len(spki) > MAX_SPKI_BYTES:
        raise EvidenceFormatError(
            f"{what}: public key is {len(spki)} bytes; the limit is {MAX_SPKI_BYTES}"
        )
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise EvidenceFormatError(f"{what}: not a DER SubjectPublicKeyInfo: {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != DEV_KEY_CURVE:
        raise EvidenceFormatError(f"{what}: the signing key must be an EC P-384 key")
    if spki_der(key) != spki:
        # A non-canonical encoding would give one key two fingerprints.
        raise EvidenceFormatError(f"{what}: public key is not in canonical DER form")
    return key


def verify_sign1_with_spki(message: CoseSign1, spki: bytes, *, what: str) -> None:
    """Verify a decoded COSE_Sign1 over its exact received bytes with a P-384 SPKI.

    Raises:
        EvidenceFormatError: the SPKI is not a canonical P-384 key.
        SignatureError: the signature, or its algorithm, does not verify.
    """
    verify_sign1(message, load_p384_spki(spki, what=what), what=what)
