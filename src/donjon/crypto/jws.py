"""Compact JWS (RFC 7515) with ECDSA (RFC 7518 §3.4): how an EAR travels as a JWT.

Only what attestation results need: sign a JSON claims-set with an EC private key (ES256,
ES384 or ES512 by the key's curve; the signature is ``r || s``, not DER), and verify one against
a public key or certificate, refusing any other algorithm (no ``none``, no HMAC) and any header
parameter that would change the meaning (``crit``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from donjon.errors import ConfigError, DecodeError, SignatureError

__all__ = ["MAX_JWT_BYTES", "sign_jwt", "verify_jwt"]

MAX_JWT_BYTES = 1024 * 1024
"""Longest token :func:`verify_jwt` reads."""

_ALGS: dict[str, tuple[str, hashes.HashAlgorithm, int]] = {
    "secp256r1": ("ES256", hashes.SHA256(), 32),
    "secp384r1": ("ES384", hashes.SHA384(), 48),
    "secp521r1": ("ES512", hashes.SHA512(), 66),
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:  # strict: a character outside the base64url alphabet is an error, not skipped
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except ValueError as e:
        raise DecodeError(f"JWT {what} is not base64url") from e


def sign_jwt(claims: Mapping[str, Any], key_pem: bytes, *, kid: str | None = None) -> str:
    """``header.payload.signature`` for *claims*, signed with the EC key *key_pem*.

    Raises:
        ConfigError: the key is not an unencrypted EC private key on P-256, P-384 or P-521.
    """
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"the signing key is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _ALGS:
        raise ConfigError("the signing key must be an EC key on P-256, P-384 or P-521")
    alg, digest, size = _ALGS[key.curve.name]
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
        + "."
        + _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    )
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(digest)))
    return signing_input + "." + _b64(r.to_bytes(size, "big") + s.to_bytes(size, "big"))


def verify_jwt(token: str, signer: x509.Certificate | ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The claims of *token* once its ECDSA signature verifies with *signer*'s key.

    Raises:
        DecodeError: not a compact JWS with a JSON object header and payload.
        SignatureError: another algorithm than the key's, a ``crit`` header, or a bad signature.
    """
    if len(token) > MAX_JWT_BYTES:
        raise DecodeError(f"JWT is over {MAX_JWT_BYTES} bytes")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise DecodeError("a JWT has three dot-separated parts")
    try:
        header = json.loads(_unb64(parts[0], "header"))
        claims = json.loads(_unb64(parts[1], "payload"))
    except ValueError as e:
        raise DecodeError(f"JWT header or payload is not JSON: {e}") from e
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise DecodeError("JWT header and payload must be JSON objects")
    key = signer.public_key() if isinstance(signer, x509.Certificate) else signer
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _ALGS:
        raise SignatureError("the JWT's signer must be an EC key on P-256, P-384 or P-521")
    alg, digest, size = _ALGS[key.curve.name]
    if header.get("alg") != alg:
        raise SignatureError(f"JWT algorithm {header.get('alg')!r} is not {alg}, the key's")
    if "crit" in header:
        raise SignatureError("JWT header has critical extensions this verifier does not know")
    signature = _unb64(parts[2], "signature")
    if len(signature) != 2 * size:
        raise SignatureError(f"{alg} signature must be {2 * size} bytes")
    der = encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )
    try:
        key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(digest))
    except InvalidSignature as e:
        raise SignatureError("the JWT's signature does not verify with this key") from e
    return claims
