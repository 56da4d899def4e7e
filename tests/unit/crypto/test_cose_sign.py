from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from donjon.crypto.cose import sign1, verify_sign1
from donjon.errors import SignatureError
from donjon.wire.cose import decode_sign1


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()])
def test_sign_then_verify(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    msg = decode_sign1(sign1(key, b"claims"))
    verify_sign1(msg, key.public_key(), what="test")


def test_flipped_payload_and_other_key_rejected() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    wire = bytearray(sign1(key, b"claims"))
    wire[wire.index(b"claims")] ^= 1
    with pytest.raises(SignatureError):
        verify_sign1(decode_sign1(bytes(wire)), key.public_key(), what="test")
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SignatureError):
        verify_sign1(decode_sign1(sign1(key, b"c")), other.public_key(), what="test")
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SignatureError, match="does not match"):
        verify_sign1(decode_sign1(sign1(key, b"c")), p256.public_key(), what="test")
