"""COSE_Sign1 (RFC 9052 §4.2) structure: encode, decode and the Sig_structure to be signed.

The cryptography lives in ``donjon.crypto.cose``; this module only shapes bytes.
Rule 1: a signature is verified over the exact protected-header bytes received (never re-encoded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from donjon.errors import DecodeError
from donjon.wire.cbor import MAX_MESSAGE_BYTES, decode, encode

COSE_SIGN1_TAG = 18
"""CBOR tag of a COSE_Sign1 message (RFC 9052 §2)."""

HEADER_ALG = 1
HEADER_KID = 4
HEADER_X5CHAIN = 33  # RFC 9360

ALG_ES256 = -7
ALG_ES384 = -35
ALG_ES512 = -36


@dataclass(frozen=True, slots=True)
class CoseSign1:
    """A decoded COSE_Sign1 message.

    ``protected_bytes`` are kept exactly as received so the signature can be checked over them.
    """

    protected_bytes: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> int | None:
        alg = self.protected.get(HEADER_ALG)
        return alg if isinstance(alg, int) else None

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        """The Sig_structure bytes the signature covers."""
        return sig_structure(self.protected_bytes, self.payload, external_aad)


def sig_structure(protected_bytes: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """Sig_structure for COSE_Sign1: ["Signature1", protected, external_aad, payload]."""
    return bytes(cbor2.dumps(["Signature1", protected_bytes, external_aad, payload]))


def encode_sign1(
    protected: dict[Any, Any],
    unprotected: dict[Any, Any],
    payload: bytes,
    signature: bytes,
    *,
    tagged: bool = True,
) -> bytes:
    """Encode a COSE_Sign1 whose protected header is *protected* (deterministically encoded)."""
    protected_bytes = encode(protected) if protected else b""
    body = [protected_bytes, unprotected, payload, signature]
    return encode(cbor2.CBORTag(COSE_SIGN1_TAG, body) if tagged else body)


def decode_sign1(
    data: bytes | Any, *, what: str = "COSE_Sign1", max_bytes: int = MAX_MESSAGE_BYTES
) -> CoseSign1:
    """Decode a COSE_Sign1 given as bytes (tagged or untagged) or as an already decoded item.

    Raises:
        DecodeError: the structure is not a COSE_Sign1.
    """
    item = decode(data, what=what, max_bytes=max_bytes) if isinstance(data, bytes) else data
    if isinstance(item, cbor2.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise DecodeError(
                f"{what}: CBOR tag {item.tag}, expected {COSE_SIGN1_TAG} (COSE_Sign1)"
            )
        item = item.value
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise DecodeError(f"{what}: expected a 4-element COSE_Sign1 array")
    protected_bytes, unprotected, payload, signature = item
    if not isinstance(protected_bytes, bytes):
        raise DecodeError(f"{what}: protected header must be a byte string")
    if not isinstance(unprotected, dict):
        raise DecodeError(f"{what}: unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise DecodeError(f"{what}: payload must be a byte string (detached payloads unsupported)")
    if not isinstance(signature, bytes):
        raise DecodeError(f"{what}: signature must be a byte string")
    protected: Any = {}
    if protected_bytes:
        protected = decode(protected_bytes, what=f"{what} protected header")
        if not isinstance(protected, dict):
            raise DecodeError(f"{what}: protected header must encode a map")
    return CoseSign1(
        protected_bytes=protected_bytes,
        protected=dict(protected),
        unprotected=dict(unprotected),
        payload=payload,
        signature=signature,
    )
