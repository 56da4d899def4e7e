"""Signature checks over exact bytes, with library exceptions mapped to donjon errors."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from donjon.errors import EvidenceFormatError, SignatureError

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    """A hash object by lowercase name ("sha256", "sha384", "sha512")."""
    try:
        return _HASHES[name]()
    except KeyError:
        raise EvidenceFormatError(f"unsupported hash algorithm {name!r}") from None


def verify_ecdsa_raw(
    public_key: ec.EllipticCurvePublicKey, r: int, s: int, data: bytes, *, hash_name: str, what: str
) -> None:
    """Verify an ECDSA signature given as integers (r, s) over *data*.

    Raises:
        SignatureError: the signature does not verify.
    """
    try:
        public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_algorithm(hash_name)))
    except InvalidSignature:
        raise SignatureError(f"{what}: ECDSA signature does not verify") from None


def verify_ecdsa_concat(
    public_key: ec.EllipticCurvePublicKey,
    signature: bytes,
    data: bytes,
    *,
    hash_name: str,
    what: str,
) -> None:
    """Verify an ECDSA signature encoded as big-endian r || s (COSE, Intel quotes).

    Raises:
        SignatureError: wrong length or the signature does not verify.
    """
    n = (public_key.curve.key_size + 7) // 8
    if len(signature) != 2 * n:
        raise SignatureError(f"{what}: signature is {len(signature)} bytes, expected {2 * n}")
    r = int.from_bytes(signature[:n], "big")
    s = int.from_bytes(signature[n:], "big")
    verify_ecdsa_raw(public_key, r, s, data, hash_name=hash_name, what=what)


def verify_rsa_pss(
    public_key: rsa.RSAPublicKey,
    signature: bytes,
    data: bytes,
    *,
    hash_name: str,
    salt_length: int,
    what: str,
) -> None:
    """Verify an RSASSA-PSS signature (MGF1 with the same hash)."""
    h = hash_algorithm(hash_name)
    try:
        public_key.verify(
            signature, data, padding.PSS(mgf=padding.MGF1(h), salt_length=salt_length), h
        )
    except InvalidSignature:
        raise SignatureError(f"{what}: RSA-PSS signature does not verify") from None


def ec_public_key_from_point(curve_name: str, point: bytes) -> ec.EllipticCurvePublicKey:
    """Load an EC public key from an uncompressed SEC1 point (0x04 || x || y) or raw x || y."""
    curves: dict[str, ec.EllipticCurve] = {
        "P-256": ec.SECP256R1(),
        "P-384": ec.SECP384R1(),
        "P-521": ec.SECP521R1(),
    }
    try:
        curve = curves[curve_name]
    except KeyError:
        raise EvidenceFormatError(f"unsupported curve {curve_name!r}") from None
    n = (curve.key_size + 7) // 8
    if len(point) == 2 * n:
        point = b"\x04" + point
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise EvidenceFormatError(f"not a valid {curve_name} public key point: {e}") from None


def spki_der(public_key: PublicKey) -> bytes:
    """DER SubjectPublicKeyInfo of a public key."""
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
