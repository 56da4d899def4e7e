"""AMD certificate extensions and loading certificates, CRLs and collateral."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.attestation.snp import (
    AmdCertExtensions,
    ProductFamily,
    SnpKeyType,
    parse_amd_extensions,
)
from donjon.attestation.snp.certs import (
    MAX_CERTS_PER_ITEM,
    MAX_ENDORSEMENT_ITEM_BYTES,
    load_certificates,
    load_collateral,
    load_crls,
)
from donjon.errors import ChainError
from tests.vectors_gen.snp_gen import look_alike


def _leaf(vectors_dir: Path, path: str) -> x509.Certificate:
    return load_certificates((vectors_dir / "sev-snp" / path).read_bytes(), what=path)[0]


def test_milan_vcek(vectors_dir: Path) -> None:
    ext = parse_amd_extensions(_leaf(vectors_dir, "milan-trustee/vcek.der"), what="vcek")
    assert ext.struct_version == 0
    assert ext.product_name == "Milan-B0"
    assert ext.product_family is ProductFamily.MILAN
    assert dict(ext.spls) == {1: 3, 2: 0, 3: 8, 4: 0, 5: 0, 6: 0, 7: 0, 8: 115}
    assert ext.hw_id is not None
    assert ext.hw_id.hex().startswith("c38427a30d4c7af9")
    assert len(ext.hw_id) == 64
    assert ext.csp_id is None
    assert ext.tcb(ProductFamily.MILAN, what="vcek").raw == 0x7308000000000003


def test_turin_vcek(vectors_dir: Path) -> None:
    ext = parse_amd_extensions(_leaf(vectors_dir, "turin-oak/vcek.der"), what="vcek")
    assert ext.struct_version == 1
    assert ext.product_name == "Turin"
    assert ext.hw_id == bytes.fromhex("3b42092f69c656d3")
    tcb = ext.tcb(ProductFamily.TURIN, what="vcek")
    assert tcb.fields() == {"fmc": 0, "bl": 1, "tee": 0, "snp": 2, "ucode": 71}
    # A Turin VCEK read as Milan has an fmcSPL Milan lacks.
    with pytest.raises(ChainError, match="fmcSPL extension, which Milan lacks"):
        ext.tcb(ProductFamily.MILAN, what="vcek")


def test_vlek(vectors_dir: Path) -> None:
    ext = parse_amd_extensions(_leaf(vectors_dir, "milan-vlek-aws/vlek.der"), what="vlek")
    assert ext.product_name == "Milan"
    assert ext.csp_id == "CN=cc-us-east-2.amazonaws.com"
    assert ext.hw_id is None
    assert ext.tcb(ProductFamily.MILAN, what="vlek").fields()["ucode"] == 217  # 02 02 00 d9


def test_octet_string_wrapped_hw_id(vectors_dir: Path) -> None:
    """trustee's crafted VCEK wraps its hwID in an OCTET STRING; KDS writes it raw."""
    ext = parse_amd_extensions(_leaf(vectors_dir, "neg-fake-vcek/vcek-invalid.der"), what="fake")
    assert ext.hw_id == bytes(range(64))


def test_missing_components() -> None:
    empty = AmdCertExtensions(None, None, (), None, None)
    with pytest.raises(ChainError, match="no blSPL, teeSPL, snpSPL, ucodeSPL extension"):
        empty.tcb(ProductFamily.GENOA, what="empty")
    assert empty.product_family is None


def _cert_with(extensions: list[tuple[str, bytes]]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SEV-VCEK")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
    )
    for oid, value in extensions:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    return builder.sign(key, hashes.SHA384())


_ARC = "1.3.6.1.4.1.3704.1"


@pytest.mark.parametrize(
    ("oid", "value", "message"),
    [
        (f"{_ARC}.3.1", b"\x04\x01\x00", "expected DER tag"),
        (f"{_ARC}.3.1", b"\x02\x00", "empty DER INTEGER"),
        (f"{_ARC}.3.1", b"\x02\x01\xff", "negative"),
        (f"{_ARC}.3.1", b"\x02\x02\x01\x00", "does not fit in one byte"),
        (f"{_ARC}.3.1", b"\x02\x05\x00", "DER length"),
        (f"{_ARC}.3.1", b"\x02\x81", "bad DER length"),
        (f"{_ARC}.3.1", b"\x02\x84\x00\x00\x00\x01\x00", "bad DER length"),
        (f"{_ARC}.3.10", b"\x02\x01\x00", "unknown TCB component"),
        (f"{_ARC}.3.0", b"\x02\x01\x00", "unknown TCB component"),
        (f"{_ARC}.2", b"\x16\x02\xff\xfe", "IA5"),
        (f"{_ARC}.4", b"\x01\x02\x03", "hwID is 3 bytes"),
        (f"{_ARC}.5", b"\x0c\x01a", "expected DER tag"),
    ],
)
def test_malformed_extensions(oid: str, value: bytes, message: str) -> None:
    with pytest.raises(ChainError, match=message):
        parse_amd_extensions(_cert_with([(oid, value)]), what="test")


def test_long_form_lengths_and_reserved_spls() -> None:
    cert = _cert_with(
        [
            (f"{_ARC}.2", b"\x16\x81\x05Genoa"),
            (f"{_ARC}.3.1", b"\x02\x01\x01"),
            (f"{_ARC}.3.2", b"\x02\x01\x02"),
            (f"{_ARC}.3.3", b"\x02\x01\x03"),
            (f"{_ARC}.3.8", b"\x02\x01\x04"),
            (f"{_ARC}.3.5", b"\x02\x01\x07"),
        ]
    )
    ext = parse_amd_extensions(cert, what="test")
    assert ext.product_family is ProductFamily.GENOA
    with pytest.raises(ChainError, match="reserved SPL 5 is 7"):
        ext.tcb(ProductFamily.GENOA, what="test")


def test_key_types() -> None:
    assert [t.value for t in SnpKeyType] == ["vcek", "vlek"]


def test_load_certificates(vectors_dir: Path) -> None:
    roots = vectors_dir / "sev-snp" / "roots"
    bundle = load_certificates((roots / "turin-vcek-ask-ark.pem").read_bytes(), what="bundle")
    assert [c.subject.rfc4514_string().split(",")[0] for c in bundle] == [
        "CN=SEV-Turin",
        "CN=ARK-Turin",
    ]
    der = bundle[0].public_bytes(Encoding.DER)
    assert load_certificates(der, what="der")[0] == bundle[0]
    with pytest.raises(ChainError, match="not a DER or PEM X"):
        load_certificates(b"\x30\x00", what="junk")
    with pytest.raises(ChainError, match="not a DER or PEM X"):
        load_certificates(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", what="x"
        )
    with pytest.raises(ChainError, match="byte limit"):
        load_certificates(b"\0" * (MAX_ENDORSEMENT_ITEM_BYTES + 1), what="big")
    many = (roots / "milan-vcek-ask-ark.pem").read_bytes() * (MAX_CERTS_PER_ITEM // 2 + 1)
    with pytest.raises(ChainError, match="more than 16"):
        load_certificates(many, what="many")


def test_vcek_serial_zero_loads_without_a_warning(vectors_dir: Path) -> None:
    # pytest turns warnings into errors; the serial-0 deprecation warning is expected and
    # silenced in load_certificates only.
    cert = _leaf(vectors_dir, "genoa-oak/vcek.der")
    assert cert.serial_number == 0


def test_crls_and_collateral() -> None:
    la = look_alike()
    crl_der = la.crl(issuer=la.ark, key=la.ark_key, revoked=(5,))
    crl = load_crls(crl_der, what="crl")[0]
    pem_crl = crl.public_bytes(Encoding.PEM)
    assert load_crls(pem_crl * 2, what="two")[1] == crl
    with pytest.raises(ChainError, match="no X509 CRL"):
        load_crls(b"-----BEGIN CERTIFICATE-----\n", what="x")
    with pytest.raises(ChainError, match="unterminated"):
        load_crls(b"-----BEGIN X509 CRL-----\nAAAA", what="x")

    both = load_collateral(pem_crl + la.ark.public_bytes(Encoding.PEM), what="pem")
    assert [c for c, _ in both.crls] == [crl]
    assert [c for c, _ in both.certs] == [la.ark]
    assert load_collateral(crl_der, what="der").crls[0][1] == crl_der
    ark_der = la.ark.public_bytes(Encoding.DER)
    assert load_collateral(ark_der, what="der cert").certs[0][1] == ark_der
    with pytest.raises(ChainError, match="not a DER or PEM CRL"):
        load_collateral(b"{}", what="json")
    with pytest.raises(ChainError, match="neither"):
        load_collateral(b"-----BEGIN PUBLIC KEY-----\n", what="key")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_loaders_raise_only_chain_errors(data: bytes) -> None:
    for loader in (load_certificates, load_crls, load_collateral):
        try:
            loader(data, what="fuzz")
        except ChainError:
            pass
