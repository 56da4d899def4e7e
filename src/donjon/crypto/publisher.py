"""Publisher keys: the EC keys that sign workload packages (ES256 or ES384).

.. warning::
   This module uses ``cryptography.hazmat``. A publisher key says "this publisher vouches for
   this package digest"; whoever holds the private key can sign any package. Keep it offline or
   in a CI secret, encrypted at rest where possible.

Does: generate a key as PKCS#8 PEM (optionally encrypted), load private and public keys from
PEM, sign a COSE_Sign1 with the private key, and verify a COSE_Sign1 with the public key.
Does not: read or write files, decide what a signature means (``donjon.registry.signing``), or
decide which keys are trusted (the deploy policy).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from donjon.crypto.cose import sign1, verify_sign1
from donjon.crypto.keyformats import KeyFormatError, ec_public_key_from_spki
from donjon.crypto.signatures import spki_der
from donjon.errors import ConfigError
from donjon.wire.cose import CoseSign1

__all__ = [
    "MAX_PRIVATE_KEY_PEM_BYTES",
    "PUBLISHER_CURVES",
    "PublisherKey",
    "PublisherPublicKey",
    "generate_publisher_key_pem",
]

MAX_PRIVATE_KEY_PEM_BYTES = 8192
"""Largest private key file accepted (bytes); an encrypted P-384 PKCS#8 PEM is under 1 KiB."""

PUBLISHER_CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
"""Curves a publisher key may use: ES256 and ES384, what cosign and notation also sign with."""

_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384"}


def generate_publisher_key_pem(curve: str = "P-256", *, password: bytes | None = None) -> bytes:
    """A fresh publisher private key as PKCS#8 PEM.

    Args:
        curve: ``"P-256"`` (ES256, the default) or ``"P-384"`` (ES384).
        password: encrypt the PEM with this passphrase (best available PKCS#8 encryption).

    Raises:
        ConfigError: an unsupported curve or an empty password.
    """
    try:
        ec_curve = PUBLISHER_CURVES[curve]
    except KeyError:
        raise ConfigError(f"publisher keys use P-256 or P-384, not {curve!r}") from None
    if password is not None and not password:
        raise ConfigError("an empty passphrase would not protect the key; give one or none")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key = ec.generate_private_key(ec_curve)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@dataclass(frozen=True, slots=True, eq=False)
class PublisherPublicKey:
    """A publisher's public key: what a deploy policy pins.

    Attributes:
        spki: DER SubjectPublicKeyInfo.
        curve: ``"P-256"`` or ``"P-384"``.
    """

    _key: ec.EllipticCurvePublicKey
    spki: bytes
    curve: str

    @classmethod
    def from_pem(cls, data: bytes, *, source: str) -> PublisherPublicKey:
        """Load a public key from PEM (``PUBLIC KEY``) or DER SubjectPublicKeyInfo.

        Args:
            data: the key's bytes.
            source: where it came from (a path), for messages.

        Raises:
            ConfigError: not an EC P-256/P-384 public key (a private key is refused too).
        """
        if b"PRIVATE KEY" in data:
            raise ConfigError(
                f"{source}: this is a private key; verification needs only the public key "
                "(the .pub file `donjon package keygen` wrote)"
            )
        try:
            key = ec_public_key_from_spki(data, what=source)
        except KeyFormatError as e:
            raise ConfigError(f"{e.message}; give a PEM public key") from e
        curve = _CURVE_NAMES.get(key.curve.name)
        if curve is None:
            raise ConfigError(f"{source}: publisher keys are P-256 or P-384, not {key.curve.name}")
        return cls(_key=key, spki=spki_der(key), curve=curve)

    @property
    def key_id(self) -> bytes:
        """SHA-256 of the DER SubjectPublicKeyInfo: the COSE ``kid`` of its signatures."""
        return hashlib.sha256(self.spki).digest()

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the DER SubjectPublicKeyInfo (safe to print and pin)."""
        return f"sha256:{self.key_id.hex()}"

    def pem(self) -> str:
        """The key as a PEM ``PUBLIC KEY`` block."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def verify(self, message: CoseSign1, *, what: str) -> None:
        """Verify a decoded COSE_Sign1 over its exact received bytes.

        Raises:
            SignatureError: wrong algorithm for the key, or a signature that does not verify.
        """
        verify_sign1(message, self._key, what=what)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublisherPublicKey) and other.spki == self.spki

    def __hash__(self) -> int:
        return hash(self.spki)

    def __repr__(self) -> str:
        return f"PublisherPublicKey({self.curve}, {self.fingerprint})"


@dataclass(frozen=True, slots=True, eq=False)
class PublisherKey:
    """A loaded publisher private key. Its ``repr`` shows only the public fingerprint."""

    _key: ec.EllipticCurvePrivateKey
    public: PublisherPublicKey

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str, password: bytes | None = None) -> PublisherKey:
        """Load a P-256 or P-384 private key from PEM (PKCS#8 or SEC1, optionally encrypted).

        Args:
            pem: the key file's bytes.
            source: where the key came from (a path), for messages; never the key.
            password: the passphrase of an encrypted key.

        Raises:
            ConfigError: too large, not a PEM private key, a wrong or missing passphrase, or
                not an EC P-256/P-384 key.
        """
        if len(pem) > MAX_PRIVATE_KEY_PEM_BYTES:
            raise ConfigError(
                f"{source}: {len(pem)} bytes is too large for a publisher key "
                f"(limit {MAX_PRIVATE_KEY_PEM_BYTES})"
            )
        encrypted = b"ENCRYPTED" in pem
        if encrypted and password is None:
            raise ConfigError(
                f"{source}: the key is encrypted; set DONJON_PUBLISHER_KEY_PASSWORD or run "
                "interactively to be asked for the passphrase"
            )
        try:
            key = serialization.load_pem_private_key(pem, password=password if encrypted else None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # The library message may quote key material; say what to do instead.
            hint = "a wrong passphrase, or " if encrypted else ""
            raise ConfigError(
                f"{source}: cannot load the private key ({hint}not a PEM private key); "
                "create one with `donjon package keygen`"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVE_NAMES:
            raise ConfigError(f"{source}: a publisher key must be an EC P-256 or P-384 key")
        public = key.public_key()
        return cls(
            _key=key,
            public=PublisherPublicKey(
                _key=public, spki=spki_der(public), curve=_CURVE_NAMES[key.curve.name]
            ),
        )

    def sign1(self, payload: bytes, *, protected: dict[Any, Any]) -> bytes:
        """A tagged COSE_Sign1 over *payload* (ES256/ES384 by curve) with *protected* fields."""
        return sign1(self._key, payload, protected=protected)

    def __repr__(self) -> str:
        return f"PublisherKey({self.public.curve}, {self.public.fingerprint})"
