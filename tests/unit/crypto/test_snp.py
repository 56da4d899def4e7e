"""donjon.crypto.snp: AMD's RSA-PSS certificate signatures and the P-384 report signature."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from donjon.attestation.snp.certs import load_certificates
from donjon.crypto.snp import (
    ReportSigningKey,
    der_bytes,
    spki_sha256,
    verify_amd_certificate_signature,
    verify_amd_crl_signature,
)
from donjon.errors import ChainError, SignatureError
from tests.vectors_gen.snp_gen import look_alike


def _certs(vectors_dir: Path, *paths: str) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for path in paths:
        out.extend(load_certificates((vectors_dir / "sev-snp" / path).read_bytes(), what=path))
    return out


def test_real_chain(vectors_dir: Path) -> None:
    vcek, ask, ark = _certs(vectors_dir, "turin-oak/vcek.der", "roots/turin-vcek-ask-ark.pem")
    verify_amd_certificate_signature(vcek, ask, what="VCEK")
    verify_amd_certificate_signature(ask, ark, what="ASK")
    verify_amd_certificate_signature(ark, ark, what="ARK")
    with pytest.raises(SignatureError, match="VCEK: RSA-PSS signature does not verify"):
        verify_amd_certificate_signature(vcek, ark, what="VCEK")


def test_issuer_must_have_an_rsa_key(vectors_dir: Path) -> None:
    (vcek,) = _certs(vectors_dir, "genoa-oak/vcek.der")
    with pytest.raises(ChainError, match="not an RSA key"):
        verify_amd_certificate_signature(vcek, vcek, what="VCEK")


def test_only_pss_sha384(vectors_dir: Path) -> None:
    la = look_alike()
    builder = (
        x509.CertificateBuilder()
        .subject_name(la.ask.subject)
        .issuer_name(la.ark.subject)
        .public_key(la.ask_key.public_key())
        .serial_number(7)
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
    )
    pkcs1 = builder.sign(la.ark_key, hashes.SHA384(), rsa_padding=padding.PKCS1v15())
    with pytest.raises(SignatureError, match="not RSASSA-PSS with SHA-384"):
        verify_amd_certificate_signature(pkcs1, la.ark, what="ASK")
    pss256 = builder.sign(
        la.ark_key,
        hashes.SHA256(),
        rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
    )
    with pytest.raises(SignatureError, match="not RSASSA-PSS with SHA-384"):
        verify_amd_certificate_signature(pss256, la.ark, what="ASK")
    salt64 = builder.sign(
        la.ark_key,
        hashes.SHA384(),
        rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=64),
    )
    with pytest.raises(SignatureError, match="does not verify"):
        verify_amd_certificate_signature(salt64, la.ark, what="ASK")


def test_crl_signature() -> None:
    la = look_alike()
    crl = x509.load_der_x509_crl(la.crl(issuer=la.ark, key=la.ark_key))
    verify_amd_crl_signature(crl, la.ark, what="CRL")
    with pytest.raises(SignatureError):
        verify_amd_crl_signature(crl, la.ask, what="CRL")


def test_outer_algorithm_must_match_the_signed_one(vectors_dir: Path) -> None:
    (vcek, ask) = _certs(vectors_dir, "genoa-oak/vcek.der", "roots/genoa-vcek-ask-ark.pem")[:2]
    der = bytearray(der_bytes(vcek))
    tbs_end = 4 + len(vcek.tbs_certificate_bytes)
    # Change the unsigned outer AlgorithmIdentifier's MGF1 OID (…1.1.8 → …1.1.10).
    mgf = der.index(bytes.fromhex("2a864886f70d010108"), tbs_end)
    der[mgf + 8] = 0x0A
    altered = x509.load_der_x509_certificate(bytes(der))
    assert altered.tbs_certificate_bytes == vcek.tbs_certificate_bytes
    with pytest.raises(SignatureError, match="not the canonical"):
        verify_amd_certificate_signature(altered, ask, what="VCEK")


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> tuple[bytes, bytes]:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(72, "little"), s.to_bytes(72, "little")


def test_report_signature(vectors_dir: Path) -> None:
    report = (vectors_dir / "sev-snp" / "genoa-oak" / "report.bin").read_bytes()
    (vcek,) = _certs(vectors_dir, "genoa-oak/vcek.der")
    key = ReportSigningKey.from_certificate(vcek, what="VCEK")
    key.verify_report(report[:0x2A0], report[0x2A0:0x2E8], report[0x2E8:0x330], what="report")
    with pytest.raises(SignatureError, match="does not verify"):
        key.verify_report(report[1:0x2A1], report[0x2A0:0x2E8], report[0x2E8:0x330], what="r")


def test_report_signature_encodings() -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    key = ReportSigningKey(private.public_key())
    data = b"signed bytes"
    r, s = _sign(private, data)
    key.verify_report(data, r, s, what="report")
    with pytest.raises(SignatureError, match="must be 72 bytes"):
        key.verify_report(data, r[:48], s[:48], what="report")
    with pytest.raises(SignatureError, match="exceeds 384 bits"):
        key.verify_report(data, r[:71] + b"\x01", s, what="report")
    with pytest.raises(SignatureError, match="all zeros"):
        key.verify_report(data, bytes(72), s, what="report")
    big_endian = (int.from_bytes(r, "little").to_bytes(72, "big"), s)
    with pytest.raises(SignatureError):
        key.verify_report(data, *big_endian, what="report")


def test_report_key_must_be_p384() -> None:
    la = look_alike()
    with pytest.raises(ChainError, match="not ECDSA P-384"):
        ReportSigningKey.from_certificate(la.ark, what="ARK")


def test_spki_sha256(vectors_dir: Path) -> None:
    (ark,) = _certs(vectors_dir, "roots/milan-vcek-ask-ark.pem")[1:]
    assert spki_sha256(ark).hex() == (
        "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9"
    )
