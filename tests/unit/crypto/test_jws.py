"""Compact JWS with ECDSA: round trips per curve, and every way a token is refused."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509

from donjon.crypto.ca import KeyPair
from donjon.crypto.jws import sign_jwt, verify_jwt
from donjon.errors import ConfigError, DecodeError, SignatureError
from tests.unit.steward._support import shared_ca

CLAIMS = {"eat_profile": "tag:github.com,2023:veraison/ear", "iat": 5, "submods": {"a": {}}}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public(key: KeyPair) -> object:
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    return load_der_public_key(key.spki_der)


@pytest.mark.parametrize(("curve", "alg", "size"), [("P-256", "ES256", 32), ("P-384", "ES384", 48),
                                                    ("P-521", "ES512", 66)])  # fmt: skip
def test_round_trip_per_curve(curve: str, alg: str, size: int) -> None:
    key = KeyPair.generate(curve)
    token = sign_jwt(CLAIMS, key.private_key_pem(), kid="k1")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": alg, "kid": "k1", "typ": "JWT"}
    signature = base64.urlsafe_b64decode(token.split(".")[2] + "==")
    assert len(signature) == 2 * size  # r || s, not DER
    assert verify_jwt(token, _public(key)) == CLAIMS  # type: ignore[arg-type]


def test_a_certificate_names_the_only_key_that_verifies() -> None:
    key = KeyPair.generate("P-384")
    token = sign_jwt(CLAIMS, key.private_key_pem())
    other = x509.load_der_x509_certificate(shared_ca().certificate_der)  # another P-384 key
    with pytest.raises(SignatureError, match="does not verify"):
        verify_jwt(token, other)


def _tamper(token: str, header: dict[str, object] | None = None, payload: bytes | None = None,
            signature: bytes | None = None) -> str:  # fmt: skip
    h, p, s = token.split(".")
    if header is not None:
        h = _b64(json.dumps(header).encode())
    if payload is not None:
        p = _b64(payload)
    if signature is not None:
        s = _b64(signature)
    return f"{h}.{p}.{s}"


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"header": {"alg": "none", "typ": "JWT"}}, SignatureError, "'none' is not ES384"),
        ({"header": {"alg": "HS256", "typ": "JWT"}}, SignatureError, "is not ES384"),
        ({"header": {"alg": "ES256", "typ": "JWT"}}, SignatureError, "is not ES384"),
        ({"header": {"alg": "ES384", "crit": ["x"]}}, SignatureError, "critical extensions"),
        ({"payload": b'{"iat": 6}'}, SignatureError, "does not verify"),
        ({"payload": b"[1]"}, DecodeError, "must be JSON objects"),
        ({"payload": b"{"}, DecodeError, "not JSON"),
        ({"signature": b"\x00" * 95}, SignatureError, "must be 96 bytes"),
        ({"signature": b"\x01" * 96}, SignatureError, "does not verify"),
    ],
)
def test_tampered_tokens_are_refused(
    change: dict[str, object], error: type[Exception], message: str
) -> None:
    key = KeyPair.generate("P-384")
    token = _tamper(sign_jwt(CLAIMS, key.private_key_pem()), **change)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        verify_jwt(token, _public(key))  # type: ignore[arg-type]


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!!.e30.AA", "x" * (1024 * 1024 + 1)])
def test_malformed_tokens_are_decode_errors(token: str) -> None:
    with pytest.raises(DecodeError):
        verify_jwt(token, _public(KeyPair.generate("P-384")))  # type: ignore[arg-type]


def test_a_signing_key_must_be_ec() -> None:
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        sign_jwt(CLAIMS, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
