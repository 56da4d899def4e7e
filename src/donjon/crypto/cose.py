"""COSE_Sign1 signing and verification with EC keys (ES256, ES384, ES512)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from donjon.crypto.signatures import hash_algorithm, verify_ecdsa_concat
from donjon.errors import SignatureError
from donjon.wire.cbor import encode
from donjon.wire.cose import (
    ALG_ES256,
    ALG_ES384,
    ALG_ES512,
    HEADER_ALG,
    CoseSign1,
    encode_sign1,
    sig_structure,
)

_ALG_HASH = {ALG_ES256: "sha256", ALG_ES384: "sha384", ALG_ES512: "sha512"}
_CURVE_ALG = {"secp256r1": ALG_ES256, "secp384r1": ALG_ES384, "secp521r1": ALG_ES512}


def sign1(
    key: ec.EllipticCurvePrivateKey,
    payload: bytes,
    *,
    protected: dict[Any, Any] | None = None,
    unprotected: dict[Any, Any] | None = None,
) -> bytes:
    """Sign *payload* as a tagged COSE_Sign1 with the algorithm that fits the key's curve."""
    alg = _CURVE_ALG[key.curve.name]
    header = {HEADER_ALG: alg, **(protected or {})}
    protected_bytes = encode(header)
    der = key.sign(
        sig_structure(protected_bytes, payload), ec.ECDSA(hash_algorithm(_ALG_HASH[alg]))
    )
    r, s = decode_dss_signature(der)
    n = (key.curve.key_size + 7) // 8
    signature = r.to_bytes(n, "big") + s.to_bytes(n, "big")
    return encode_sign1(header, unprotected or {}, payload, signature)


def verify_sign1(
    message: CoseSign1,
    public_key: ec.EllipticCurvePublicKey,
    *,
    what: str,
    external_aad: bytes = b"",
) -> None:
    """Verify a decoded COSE_Sign1 over its exact received bytes.

    Raises:
        SignatureError: unsupported algorithm, algorithm/key mismatch, or a bad signature.
    """
    alg = message.alg
    if alg not in _ALG_HASH:
        raise SignatureError(f"{what}: unsupported COSE algorithm {alg!r} (ES256/384/512 only)")
    if _CURVE_ALG.get(public_key.curve.name) != alg:
        raise SignatureError(
            f"{what}: COSE algorithm {alg} does not match the {public_key.curve.name} key"
        )
    verify_ecdsa_concat(
        public_key,
        message.signature,
        message.to_be_signed(external_aad),
        hash_name=_ALG_HASH[alg],
        what=what,
    )
