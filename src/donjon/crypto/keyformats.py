"""Loading public keys from the formats attestation endorsements and evidence use.

.. warning:: This module wraps ``cryptography.hazmat``. It returns key objects that other layers
   hand back to ``donjon.crypto`` functions; they never call methods of the keys themselves.

Formats:

* PEM or DER SubjectPublicKeyInfo (an Arm CPAK as ``cca_platform.pub``);
* JWK (RFC 7517/7518 §6.2: ``kty`` ``EC`` with ``crv``, ``x``, ``y`` in base64url);
* COSE_Key (RFC 9053 §7.1.1: kty 2 = EC2, crv 1/2/3 = P-256/P-384/P-521, x at -2, y at -3);
* a raw uncompressed SEC1 point (``donjon.crypto.signatures.ec_public_key_from_point``).

Every loader accepts public keys only: a JWK carrying ``d`` (a private key) is refused so that
private halves are never spread around as "endorsements".
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    load_der_public_key,
    load_pem_public_key,
)

from donjon.crypto.signatures import ec_public_key_from_point, spki_der
from donjon.errors import DecodeError, EvidenceFormatError
from donjon.wire.cbor import decode

EcPublicKey = ec.EllipticCurvePublicKey
"""The EC public key type, for layers that may not import ``cryptography.hazmat``."""

MAX_KEY_BYTES = 16 * 1024
"""Largest encoded public key accepted (bytes); a P-521 SPKI PEM is under 300 bytes."""

_JWK_CURVES = {"P-256": "P-256", "P-384": "P-384", "P-521": "P-521"}
_COSE_KTY_EC2 = 2
_COSE_CURVES = {1: "P-256", 2: "P-384", 3: "P-521"}
_COSE_KEY_KTY = 1
_COSE_KEY_ALG = 3
_COSE_EC2_CRV = -1
_COSE_EC2_X = -2
_COSE_EC2_Y = -3
_COSE_EC2_D = -4
_COSE_ALG_FOR_CURVE = {"P-256": -7, "P-384": -35, "P-521": -36}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class KeyFormatError(EvidenceFormatError):
    """Bytes that do not hold a public key in the expected format."""


def curve_name(key: EcPublicKey) -> str:
    """The JOSE/COSE name of *key*'s curve ("P-256", "P-384", "P-521").

    Raises:
        KeyFormatError: the key is on a curve donjon does not use.
    """
    try:
        return _CURVE_NAMES[key.curve.name]
    except KeyError:
        raise KeyFormatError(f"unsupported EC curve {key.curve.name}") from None


def as_ec_public_key(key: object, *, what: str) -> EcPublicKey:
    """Narrow a public key (e.g. from ``x509.Certificate.public_key()``) to an EC key.

    Raises:
        KeyFormatError: *key* is not an EC public key on P-256, P-384 or P-521.
    """
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFormatError(f"{what}: expected an EC public key, got {type(key).__name__}")
    curve_name(key)
    return key


def ec_public_key_from_spki(data: bytes, *, what: str) -> EcPublicKey:
    """Load an EC public key from PEM (``PUBLIC KEY``) or DER SubjectPublicKeyInfo.

    Raises:
        KeyFormatError: not a SubjectPublicKeyInfo, or not an EC key.
    """
    if len(data) > MAX_KEY_BYTES:
        raise KeyFormatError(f"{what}: {len(data)} bytes; the limit is {MAX_KEY_BYTES} bytes")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key: object = load_pem_public_key(data)
        else:
            key = load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyFormatError(f"{what}: not a PEM/DER SubjectPublicKeyInfo: {e}") from e
    return as_ec_public_key(key, what=what)


def _b64url(value: object, *, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_KEY_BYTES:
        raise KeyFormatError(f"{what}: expected a base64url string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as e:
        raise KeyFormatError(f"{what}: not base64url: {e}") from e


def ec_public_key_from_jwk(jwk: Mapping[str, Any], *, what: str) -> EcPublicKey:
    """Load an EC public key from a JWK object (RFC 7518 §6.2.1).

    Raises:
        KeyFormatError: not an EC JWK, a private JWK, or coordinates off the curve.
    """
    if jwk.get("kty") != "EC":
        raise KeyFormatError(f"{what}: JWK kty is {jwk.get('kty')!r}; only 'EC' is supported")
    if "d" in jwk:
        raise KeyFormatError(f"{what}: the JWK holds a private key ('d'); give the public half")
    crv = jwk.get("crv")
    if crv not in _JWK_CURVES:
        raise KeyFormatError(f"{what}: JWK crv {crv!r}; expected P-256, P-384 or P-521")
    x = _b64url(jwk.get("x"), what=f"{what} JWK x")
    y = _b64url(jwk.get("y"), what=f"{what} JWK y")
    return _key_from_coordinates(_JWK_CURVES[crv], x, y, what=what)


def ec_public_key_from_cose_key(data: bytes | Mapping[Any, Any], *, what: str) -> EcPublicKey:
    """Load an EC2 public key from a COSE_Key, encoded or already decoded (RFC 9053 §7.1.1).

    Raises:
        KeyFormatError: not a COSE_Key map, not EC2, a private key, or a bad point.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_KEY_BYTES:
            raise KeyFormatError(f"{what}: {len(data)} bytes; the limit is {MAX_KEY_BYTES}")
        try:
            item = decode(data, what=what)
        except DecodeError as e:  # a WireError: report it in the verification tree
            raise KeyFormatError(f"{what}: not a CBOR COSE_Key: {e.message}") from e
        except BytesWarning as e:  # cbor2 compared "k" with b"k" under ``python -bb``
            raise KeyFormatError(f"{what}: a COSE_Key map mixes text and byte keys") from e
    else:
        item = data
    if not isinstance(item, Mapping):
        raise KeyFormatError(f"{what}: a COSE_Key must be a CBOR map")
    # Check types before values: under ``python -bb`` comparing bytes with an int raises.
    kty = item.get(_COSE_KEY_KTY)
    if type(kty) is not int or kty != _COSE_KTY_EC2:
        raise KeyFormatError(f"{what}: COSE_Key kty {kty!r}; only 2 (EC2) is supported")
    if _COSE_EC2_D in item:
        raise KeyFormatError(f"{what}: the COSE_Key holds a private key (-4)")
    crv = item.get(_COSE_EC2_CRV)
    if type(crv) is not int or crv not in _COSE_CURVES:
        raise KeyFormatError(f"{what}: COSE_Key crv {crv!r}; expected 1, 2 or 3 (P-256/384/521)")
    name = _COSE_CURVES[crv]
    alg = item.get(_COSE_KEY_ALG)
    if alg is not None and (type(alg) is not int or alg != _COSE_ALG_FOR_CURVE[name]):
        raise KeyFormatError(f"{what}: COSE_Key alg {alg!r} does not fit curve {name}")
    x, y = item.get(_COSE_EC2_X), item.get(_COSE_EC2_Y)
    if not isinstance(x, bytes) or not isinstance(y, bytes):
        # y may be a bool for point compression (RFC 9053 §7.1.1); no CCA token uses it.
        raise KeyFormatError(f"{what}: COSE_Key x and y must be byte strings")
    return _key_from_coordinates(name, x, y, what=what)


def _key_from_coordinates(name: str, x: bytes, y: bytes, *, what: str) -> EcPublicKey:
    size = {"P-256": 32, "P-384": 48, "P-521": 66}[name]
    if len(x) != size or len(y) != size:
        raise KeyFormatError(
            f"{what}: {name} coordinates must be {size} bytes each, got {len(x)} and {len(y)}"
        )
    try:
        return ec_public_key_from_point(name, b"\x04" + x + y)
    except EvidenceFormatError as e:
        raise KeyFormatError(f"{what}: {e.message}") from e


def ec_public_key_from_raw_point(curve: str, point: bytes, *, what: str) -> EcPublicKey:
    """Load an EC public key from an uncompressed SEC1 point ``0x04 || x || y``.

    Raises:
        KeyFormatError: wrong length, not uncompressed, or not on the curve.
    """
    size = {"P-256": 32, "P-384": 48, "P-521": 66}.get(curve)
    if size is None:
        raise KeyFormatError(f"{what}: unsupported curve {curve!r}")
    if len(point) != 1 + 2 * size or point[:1] != b"\x04":
        raise KeyFormatError(
            f"{what}: expected an uncompressed {curve} point (0x04 || x || y, "
            f"{1 + 2 * size} bytes), got {len(point)} bytes"
        )
    try:
        return ec_public_key_from_point(curve, point)
    except EvidenceFormatError as e:
        raise KeyFormatError(f"{what}: {e.message}") from e


def public_key_der(key: EcPublicKey) -> bytes:
    """DER SubjectPublicKeyInfo of *key*: a stable identity for comparing and caching keys."""
    return spki_der(key)


def certificate_public_key(cert: x509.Certificate, *, what: str) -> EcPublicKey:
    """The EC public key of *cert*, parsed now (``cryptography`` parses it lazily).

    Raises:
        KeyFormatError: the key is malformed, on an unsupported curve, or not EC.
    """
    try:
        key: object = cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyFormatError(f"{what}: the public key cannot be read: {e}") from e
    return as_ec_public_key(key, what=what)


def certificate_der(cert: x509.Certificate) -> bytes:
    """The DER encoding of *cert* (for fingerprints and exact comparisons)."""
    return cert.public_bytes(Encoding.DER)


__all__ = [
    "MAX_KEY_BYTES",
    "EcPublicKey",
    "KeyFormatError",
    "as_ec_public_key",
    "certificate_der",
    "certificate_public_key",
    "curve_name",
    "ec_public_key_from_cose_key",
    "ec_public_key_from_jwk",
    "ec_public_key_from_raw_point",
    "ec_public_key_from_spki",
    "public_key_der",
]
