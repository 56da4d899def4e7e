"""The CA's shortcuts give exactly what the long way gives: SPKI bytes, signature checks, ids."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from donjon.crypto.ca import CertificateAuthority, KeyPair, LeafProfile, parse_csr
from donjon.errors import DecodeError, SignatureError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
_ECDSA_SHA384 = bytes.fromhex("06082a8648ce3d040303")  # OID 1.2.840.10045.4.3.3
_RSA_SHA384 = bytes.fromhex("06092a864886f70d01010c0500")  # OID 1.2.840.113549.1.1.12, NULL


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def _csr(tbs: bytes, key: ec.EllipticCurvePrivateKey, algorithm: bytes = _ECDSA_SHA384) -> bytes:
    """A CertificationRequest (RFC 2986 §4.2) over *tbs*, signed with ECDSA-SHA384."""
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA384()))
    return _der(0x30, tbs + _der(0x30, algorithm) + _der(0x03, b"\x00" + signature))


def _spki(key: ec.EllipticCurvePrivateKey, form: serialization.PublicFormat) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, form)


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_csr_spki_is_the_canonical_encoding(curve: str) -> None:
    for _ in range(3):  # the first CSR of a curve takes the long way; the others the short one
        key = KeyPair.generate(curve)
        assert parse_csr(key.csr(uris=["donjon:x"])).spki_der == key.spki_der


def test_a_compressed_point_csr_is_certified_under_its_canonical_spki() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    parse_csr(KeyPair(key).csr())  # learn the curve's canonical prefix
    compressed = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    canonical = _spki(key, serialization.PublicFormat.SubjectPublicKeyInfo)
    algorithm = canonical[2:20]  # SEQUENCE { id-ecPublicKey, secp384r1 }
    spki = _der(0x30, algorithm + _der(0x03, b"\x00" + compressed))
    tbs = _der(0x30, b"\x02\x01\x00" + _der(0x30, b"") + spki + _der(0xA0, b""))
    request = parse_csr(_csr(tbs, key))
    assert request.spki_der == canonical
    assert request.spki_der != spki


def test_the_signature_algorithm_must_be_ecdsa() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    tbs = x509.load_der_x509_csr(KeyPair(key).csr()).tbs_certrequest_bytes
    parse_csr(_csr(tbs, key))  # the hand-made request is accepted as such...
    with pytest.raises(DecodeError, match="not ECDSA"):  # ...and refused under an RSA OID
        parse_csr(_csr(tbs, key, _RSA_SHA384))
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SignatureError, match="does not verify"):
        parse_csr(_csr(tbs, other))


def test_cached_ca_values_match_the_certificate() -> None:
    ca = CertificateAuthority.create(now=NOW)
    spki = ca.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ca.key_id == hashlib.sha256(spki).digest()
    assert ca.not_valid_after == ca.certificate.not_valid_after_utc
    assert ca.valid_at(ca.certificate.not_valid_before_utc)
    assert not ca.valid_at(ca.certificate.not_valid_after_utc + timedelta(seconds=1))
    key = KeyPair.generate()
    request = parse_csr(key.csr())
    leaf = ca.issue(
        LeafProfile(
            spki_der=request.spki_der,
            common_name="k.keep.donjon.invalid",
            dns_names=(),
            uris=(),
            not_before=NOW,
            not_after=NOW + timedelta(hours=1),
            public_key=request.public_key,
        )
    )
    assert leaf.issuer == ca.certificate.subject
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(request.public_key)
