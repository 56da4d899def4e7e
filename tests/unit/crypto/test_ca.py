"""Steward's CA: CSR parsing and checks, issuance profile, results, key handling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.crypto.ca import (
    CertificateAuthority,
    KeyPair,
    LeafProfile,
    certificate_der,
    is_dns_name,
    parse_csr,
    verify_issued,
    verify_signed_result,
)
from donjon.crypto.oids import DONJON_ARC, ENARX_KVM, ENARX_SGX, ENARX_SNP
from donjon.errors import ConfigError, DecodeError, SignatureError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(now=NOW)


def test_enarx_oids_match_enarx_sources() -> None:
    # enarx/steward crates/server/src/kvm.rs, attestation/src/{sgx,snp}/mod.rs
    assert ENARX_KVM.dotted_string == "1.3.6.1.4.1.58270.1.1"
    assert ENARX_SGX.dotted_string == "1.3.6.1.4.1.58270.1.2"
    assert ENARX_SNP.dotted_string == "1.3.6.1.4.1.58270.1.3"
    assert DONJON_ARC.startswith("2.25.")


def test_csr_round_trip() -> None:
    key = KeyPair.generate("P-256")
    csr = parse_csr(
        key.csr(dns_names=["A.Example"], uris=["donjon:x"], extensions=[(ENARX_KVM, b"")])
    )
    assert csr.spki_der == key.spki_der
    assert csr.curve == "P-256"
    assert csr.dns_names == ("a.example",)
    assert csr.uris == ("donjon:x",)
    ext = csr.extension(ENARX_KVM.dotted_string)
    assert ext is not None and ext.value == b"" and ext.critical is False
    assert "PRIVATE" not in repr(key) and "_key" not in repr(key)


def test_csr_signature_is_checked() -> None:
    key, other = KeyPair.generate(), KeyPair.generate()
    csr = x509.load_der_x509_csr(key.csr())
    # Re-sign the same request info with another key: the signature no longer matches the SPKI.
    forged = bytearray(key.csr())
    forged[-10] ^= 0x40
    with pytest.raises((SignatureError, DecodeError)):
        parse_csr(bytes(forged))
    assert csr.is_signature_valid
    assert other.spki_der != key.spki_der


def test_csr_from_a_key_that_is_not_ec_is_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(rsa_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(DecodeError, match="only for EC keys"):
        parse_csr(csr)


def test_csr_with_other_attributes_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, b"secret")
        .sign(key, hashes.SHA384())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(DecodeError, match=r"1\.2\.840\.113549\.1\.9\.7 is not allowed"):
        parse_csr(csr)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30\x00", b"\x30\x82\xff\xff", b"-----BEGIN CERTIFICATE REQUEST-----", bytes(100)],
)
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_csr(data)


def test_oversized_csr_is_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="limit"):
        parse_csr(b"\x30" * 300_000)


def test_ca_certificate_profile(ca: CertificateAuthority) -> None:
    cert = ca.certificate
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert ca.self_signed and ca.valid_at(NOW)
    assert "PRIVATE" not in repr(ca)


def test_issue_profile(ca: CertificateAuthority) -> None:
    key = KeyPair.generate()
    leaf = ca.issue(
        LeafProfile(
            spki_der=key.spki_der,
            common_name="k.keep.donjon.invalid",
            dns_names=("k.keep.donjon.invalid",),
            uris=("donjon:workload:sha256:" + "00" * 32,),
            not_before=NOW,
            not_after=NOW + timedelta(hours=1),
            extensions=((x509.ObjectIdentifier(DONJON_ARC + ".2"), b"\xa0"),),
        )
    )
    verify_issued(leaf, ca.certificate)
    assert leaf.serial_number.bit_length() <= 159
    assert leaf.signature_hash_algorithm is not None
    assert leaf.signature_hash_algorithm.name == "sha384"
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=1)
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    other = CertificateAuthority.create(now=NOW)
    with pytest.raises(SignatureError):
        verify_issued(leaf, other.certificate)


def test_issue_refuses_a_period_the_ca_does_not_cover(ca: CertificateAuthority) -> None:
    with pytest.raises(ConfigError, match="not valid for the requested period"):
        ca.issue(
            LeafProfile(
                spki_der=KeyPair.generate().spki_der,
                common_name="x",
                dns_names=(),
                uris=(),
                not_before=NOW - timedelta(days=30),
                not_after=NOW,
            )
        )


def test_load_round_trip_and_mismatch(ca: CertificateAuthority) -> None:
    again = CertificateAuthority.load(ca.private_key_pem(), ca.certificate_pem)
    assert certificate_der(again.certificate) == ca.certificate_der
    assert again.derive_secret(b"info") == ca.derive_secret(b"info")
    assert again.derive_secret(b"info") != ca.derive_secret(b"other")
    other = CertificateAuthority.create(now=NOW)
    with pytest.raises(ConfigError, match="does not match"):
        CertificateAuthority.load(other.private_key_pem(), ca.certificate_pem)
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        CertificateAuthority.load(b"nope", ca.certificate_pem)


def test_signed_results(ca: CertificateAuthority) -> None:
    result = ca.sign_result(b"claims")
    assert verify_signed_result(result, ca.certificate) == b"claims"
    other = CertificateAuthority.create(now=NOW)
    with pytest.raises(SignatureError):
        verify_signed_result(result, other.certificate)
    with pytest.raises(DecodeError):
        verify_signed_result(b"\x00", ca.certificate)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.example", True),
        ("x-1.keep.donjon.invalid", True),
        ("A.example", False),
        ("-a.example", False),
        ("a_b.example", False),
        ("*.example", False),
        ("127.0.0.1", False),
        ("a." * 130 + "x", False),
        ("", False),
        ("a.example.", False),
    ],
)
def test_is_dns_name(name: str, ok: bool) -> None:
    assert is_dns_name(name) is ok


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_subject_key_identifier_matches_rfc5280_method_1(
    ca: CertificateAuthority, curve: str
) -> None:
    key = KeyPair.generate(curve)
    csr = parse_csr(key.csr())
    for public_key in (csr.public_key, None):
        leaf = ca.issue(
            LeafProfile(
                spki_der=key.spki_der,
                common_name="k",
                dns_names=(),
                uris=(),
                not_before=NOW,
                not_after=NOW + timedelta(hours=1),
                public_key=public_key,
            )
        )
        ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parse_csr_raises_only_documented_errors(data: bytes) -> None:
    try:
        parse_csr(data)
    except (DecodeError, SignatureError):
        pass


_VALID_CSR = KeyPair.generate("P-256").csr(dns_names=["a.example"], extensions=[(ENARX_KVM, b"")])


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(_VALID_CSR) - 1), st.integers(1, 255))
def test_parse_csr_with_one_flipped_byte(position: int, flip: int) -> None:
    data = bytearray(_VALID_CSR)
    data[position] ^= flip
    try:
        csr = parse_csr(bytes(data))
    except (DecodeError, SignatureError):
        return
    # A flip that still parses and verifies can only be in unsigned bytes (outer framing).
    assert csr.spki_der
