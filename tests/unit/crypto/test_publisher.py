"""Publisher keys: generation, loading (plain and encrypted), and what is refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from donjon.crypto.publisher import (
    PublisherKey,
    PublisherPublicKey,
    generate_publisher_key_pem,
)
from donjon.errors import ConfigError, SignatureError
from donjon.wire.cose import decode_sign1


@pytest.mark.parametrize(("curve", "alg"), [("P-256", -7), ("P-384", -35)])
def test_generate_load_sign_verify(curve: str, alg: int) -> None:
    pem = generate_publisher_key_pem(curve)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = PublisherKey.from_pem(pem, source="k")
    assert key.public.curve == curve
    assert key.public.fingerprint.startswith("sha256:") and len(key.public.key_id) == 32
    assert "PRIVATE" not in repr(key) and key.public.fingerprint in repr(key)
    public = PublisherPublicKey.from_pem(key.public.pem().encode(), source="k.pub")
    assert public == key.public and hash(public) == hash(key.public)
    message = decode_sign1(key.sign1(b"payload", protected={}))
    assert message.alg == alg
    public.verify(message, what="test")
    other = PublisherKey.from_pem(generate_publisher_key_pem(curve), source="o").public
    with pytest.raises(SignatureError):
        other.verify(message, what="test")


def test_encrypted_keys() -> None:
    pem = generate_publisher_key_pem(password=b"hunter22")
    assert b"ENCRYPTED" in pem
    assert PublisherKey.from_pem(pem, source="k", password=b"hunter22").public.curve == "P-256"
    with pytest.raises(ConfigError, match="DONJON_PUBLISHER_KEY_PASSWORD"):
        PublisherKey.from_pem(pem, source="k")
    with pytest.raises(ConfigError, match="wrong passphrase") as info:
        PublisherKey.from_pem(pem, source="k", password=b"nope")
    assert "hunter22" not in info.value.message
    with pytest.raises(ConfigError, match="empty passphrase"):
        generate_publisher_key_pem(password=b"")


def test_refused_keys() -> None:
    with pytest.raises(ConfigError, match="P-256 or P-384"):
        generate_publisher_key_pem("P-521")
    p521 = ec.generate_private_key(ec.SECP521R1())
    pem = p521.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigError, match="P-256 or P-384"):
        PublisherKey.from_pem(pem, source="k")
    with pytest.raises(ConfigError, match="P-256 or P-384"):
        PublisherPublicKey.from_pem(
            p521.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            source="k.pub",
        )
    rsa_pub = (
        rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError, match="EC public key"):
        PublisherPublicKey.from_pem(rsa_pub, source="rsa.pub")
    with pytest.raises(ConfigError, match="private key"):
        PublisherPublicKey.from_pem(generate_publisher_key_pem(), source="k")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        PublisherKey.from_pem(b"junk", source="k")
    with pytest.raises(ConfigError, match="too large"):
        PublisherKey.from_pem(b"x" * 10000, source="k")
