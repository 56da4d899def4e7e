"""CPAK files (PEM, DER, JWK, JWK Set, Veraison trust anchors) and the key loaders under them."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from donjon.attestation.cca import CpakError, load_cpaks
from donjon.crypto.keyformats import (
    KeyFormatError,
    ec_public_key_from_cose_key,
    ec_public_key_from_jwk,
    ec_public_key_from_raw_point,
    ec_public_key_from_spki,
    public_key_der,
)
from donjon.errors import ChainError, EvidenceFormatError
from tests.flags import under_bb
from tests.vectors_gen.cca_gen import OTHER_KEY, cose_key, pem_public, raw_point


@pytest.fixture
def tfa_key(vectors_dir: Path) -> bytes:
    return (vectors_dir / "cca/tfrmm-legacy/cpak.pub.pem").read_bytes()


def test_pem_jwk_and_trust_anchor_files_give_the_same_key(vectors_dir: Path) -> None:
    pem = load_cpaks((vectors_dir / "cca/tfrmm-legacy/cpak.pub.pem").read_bytes())
    jwk = load_cpaks((vectors_dir / "cca/trustee-sha512-rim/cpak.jwk.json").read_bytes())
    ta = load_cpaks((vectors_dir / "cca/draft-ffm-00/ta-tfa.json").read_bytes())
    assert pem[0].spki_der == jwk[0].spki_der == ta[0].spki_der
    assert pem[0].instance_id is None
    assert ta[0].instance_id is not None and ta[0].instance_id.hex().startswith("0107")
    assert ta[0].implementation_id is not None and len(ta[0].implementation_id) == 32
    assert len(pem[0].fingerprint) == 64


def test_der_jwk_set_and_several_pem_blocks(tfa_key: bytes) -> None:
    key = ec_public_key_from_spki(tfa_key, what="t")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_cpaks(der)[0].spki_der == der
    two = load_cpaks(tfa_key + b"\n" + pem_public(OTHER_KEY))
    assert len(two) == 2
    numbers = OTHER_KEY.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-384",
        "x": _b64(numbers.x.to_bytes(48, "big")),
        "y": _b64(numbers.y.to_bytes(48, "big")),
    }
    jwks = json.dumps({"keys": [jwk, jwk]}).encode()
    assert [c.spki_der for c in load_cpaks(jwks)] == [public_key_der(OTHER_KEY.public_key())] * 2


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{not json", "not valid JSON"),
        (b'{"kty": "RSA", "n": "AQAB", "e": "AQAB"}', "only 'EC'"),
        (b'{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "d": "AA"}', "private key"),
        (b'{"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}', "crv"),
        (b'{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}', "48 bytes"),
        (b'{"kty": "EC", "crv": "P-384", "x": "!!", "y": "AA"}', "48 bytes|base64"),
        (b'[{"pkey": "x"}]', "JWK object"),
        (b"[1]", "JWK or a trust-anchor"),
        (b'[{"pkey": {"kty": "EC"}, "instance-id": 5}]', "crv|hex"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "PUBLIC KEY"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "SubjectPublicKeyInfo"),
        (b"\x30\x03\x02\x01\x01", "SubjectPublicKeyInfo"),
        (b"A" * (64 * 1024 + 1), "limit"),
    ],
)
def test_bad_cpak_files_are_chain_errors(data: bytes, match: str) -> None:
    with pytest.raises(CpakError, match=match) as info:
        load_cpaks(data)
    assert isinstance(info.value, ChainError)


def test_trust_anchor_ids_must_be_hex_of_the_right_size(vectors_dir: Path) -> None:
    entry = json.loads((vectors_dir / "cca/draft-ffm-00/ta-tfa.json").read_bytes())[0]
    for bad, match in (("zz", "not hex"), ("0102", "expected 33")):
        with pytest.raises(CpakError, match=match):
            load_cpaks(json.dumps([{**entry, "instance-id": bad}]).encode())


def test_rsa_pem_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(CpakError, match="expected an EC public key"):
        load_cpaks(pem)


# --- the RAK loaders -------------------------------------------------------------------------


def test_cose_key_and_raw_point_give_the_same_key() -> None:
    a = ec_public_key_from_cose_key(cose_key(OTHER_KEY), what="t")
    b = ec_public_key_from_raw_point("P-384", raw_point(OTHER_KEY), what="t")
    assert public_key_der(a) == public_key_der(b) == public_key_der(OTHER_KEY.public_key())
    decoded = cbor2.loads(cose_key(OTHER_KEY))
    assert public_key_der(ec_public_key_from_cose_key(decoded, what="t")) == public_key_der(a)


def _cose(**edits: object) -> bytes:
    item = cbor2.loads(cose_key(OTHER_KEY))
    for k, v in edits.items():
        key = int(k.removeprefix("k").replace("m", "-"))
        if v is None:
            del item[key]
        else:
            item[key] = v
    return bytes(cbor2.dumps(item))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x58", "not a CBOR COSE_Key"),
        (cbor2.dumps([1, 2]), "must be a CBOR map"),
        (_cose(k1=1), "only 2 \\(EC2\\)"),
        (_cose(k1=b"\x02"), "only 2 \\(EC2\\)"),
        (_cose(km1=9), "crv"),
        (_cose(km1=True), "crv"),
        (_cose(km1=b"\x02"), "crv"),
        (_cose(k3=-7), "does not fit"),
        (_cose(k3=b"x"), "does not fit"),
        (_cose(km3=True), "byte strings"),
        (_cose(km4=b"secret"), "private key"),
        (_cose(km2=bytes(48)), "not a valid P-384"),
        (_cose(km2=bytes(47)), "48 bytes"),
        # {"1": 2, h'31': 2}: equal hashes, so decoding compares "1" with b"1" (BytesWarning).
        pytest.param(bytes.fromhex("a2613102413102"), "mixes text and byte", marks=under_bb),
    ],
)
def test_bad_cose_keys(data: bytes, match: str) -> None:
    with pytest.raises(KeyFormatError, match=match) as info:
        ec_public_key_from_cose_key(data, what="RAK")
    assert isinstance(info.value, EvidenceFormatError)


@pytest.mark.parametrize(
    ("point", "match"),
    [
        (raw_point(OTHER_KEY)[1:], "97 bytes"),
        (b"\x02" + raw_point(OTHER_KEY)[1:49] + bytes(48), "uncompressed"),
        (b"\x04" + bytes(96), "not a valid P-384"),
    ],
)
def test_bad_raw_points(point: bytes, match: str) -> None:
    with pytest.raises(KeyFormatError, match=match):
        ec_public_key_from_raw_point("P-384", point, what="RAK")


def test_jwk_loader_checks_point_on_curve() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(p256.x.to_bytes(32, "big")),
        "y": _b64(((p256.y + 1) % 2**256).to_bytes(32, "big")),
    }
    with pytest.raises(KeyFormatError, match="not a valid P-256"):
        ec_public_key_from_jwk(jwk, what="t")
