"""The embedded AWS Nitro Enclaves Root-G1: provenance checks and trust-anchor handling."""

from __future__ import annotations

import hashlib
import zipfile
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from donjon.attestation.nitro import ROOT_G1_SHA256, NitroVerifier, embedded_root
from donjon.errors import ChainError

ZIP_SHA256 = "8cf60e2b2efca96c6a9e71e851d00c1b6991cc09eadbe64a6a1d1b1eb9faff7c"
PACKAGED = resources.files("donjon.attestation.nitro").joinpath(
    "roots", "aws-nitro-enclaves-root-g1.pem"
)


def test_fingerprint_is_the_one_aws_publishes() -> None:
    assert ROOT_G1_SHA256 == "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    root = embedded_root()
    assert root.fingerprint(hashes.SHA256()).hex() == ROOT_G1_SHA256
    assert root.subject.rfc4514_string() == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)


def test_packaged_pem_is_the_one_in_aws_zip(vectors_dir: Path) -> None:
    archive = vectors_dir / "nitro/roots/AWS_NitroEnclaves_Root-G1.zip"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == ZIP_SHA256
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["root.pem"]
        assert z.read("root.pem") == PACKAGED.read_bytes()


def test_provenance_file_records_source_and_hashes() -> None:
    text = resources.files("donjon.attestation.nitro").joinpath("roots", "PROVENANCE.md")
    provenance = text.read_text()
    for needle in (
        "https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip",
        ZIP_SHA256,
        ROOT_G1_SHA256,
        hashlib.sha256(PACKAGED.read_bytes()).hexdigest(),
    ):
        assert needle in provenance


def _self_signed(curve: ec.EllipticCurve) -> x509.Certificate:
    key = ec.generate_private_key(curve)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "t")])
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_a_root_must_be_self_signed_p384() -> None:
    with pytest.raises(ChainError, match="P-384"):
        NitroVerifier(root=_self_signed(ec.SECP256R1()))
    # Named as its own issuer but signed by another key: not a self-signed root.
    other = _self_signed(ec.SECP384R1())
    mismatched = (
        x509.CertificateBuilder()
        .subject_name(other.subject)
        .issuer_name(other.subject)
        .public_key(other.public_key())
        .serial_number(2)
        .not_valid_before(other.not_valid_before_utc)
        .not_valid_after(other.not_valid_after_utc)
        .sign(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384())
    )
    with pytest.raises(ChainError, match="not usable"):
        NitroVerifier(root=mismatched)
