"""The public surface of donjon.attestation.snp, its trust configuration and embedded roots."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

import donjon.attestation.snp as snp
from donjon.attestation.result import Endorsements, EvidenceVerifier, Platform
from donjon.attestation.snp import ProductFamily, SnpVerifier
from donjon.attestation.snp.certs import load_certificates
from donjon.attestation.snp.verifier import EMBEDDED_ROOT_FILES
from donjon.crypto.snp import spki_sha256
from donjon.errors import ChainError, ConfigError
from tests.vectors_gen.snp_gen import ca_cert, look_alike

_ROOTS = resources.files("donjon.attestation.snp") / "roots"


def test_exported_members() -> None:
    exported = {name for name in dir(snp) if not name.startswith("_")}
    modules = {"certs", "hcl", "report", "tcb", "verifier", "annotations"}
    assert exported - modules == set(snp.__all__)
    assert len(snp.__all__) == len(set(snp.__all__))
    for name in snp.__all__:
        assert getattr(snp, name) is not None


def test_is_an_evidence_verifier() -> None:
    verifier: EvidenceVerifier = SnpVerifier.from_embedded_roots()
    assert verifier.platform is Platform.SEV_SNP


def test_embedded_roots() -> None:
    verifier = SnpVerifier.from_embedded_roots()
    names = sorted(c.subject.rfc4514_string().split(",")[0] for c in verifier.roots)
    assert names == ["CN=ARK-Genoa", "CN=ARK-Milan", "CN=ARK-Turin"]
    assert {f.value for f in ProductFamily} == {"Milan", "Genoa", "Turin"}


def test_embedded_roots_match_the_vectors(vectors_dir: Path) -> None:
    for name in EMBEDDED_ROOT_FILES:
        embedded = (_ROOTS / name).read_bytes()
        assert embedded == (vectors_dir / "sev-snp" / "roots" / name).read_bytes(), name


def test_provenance_lists_every_fingerprint() -> None:
    text = (_ROOTS / "PROVENANCE.md").read_text()
    for name in EMBEDDED_ROOT_FILES:
        digest = hashlib.sha256((_ROOTS / name).read_bytes()).hexdigest()
        assert f"| `{name}` | `{digest}` |" in text, name
        for cert in load_certificates((_ROOTS / name).read_bytes(), what=name):
            cn = cert.subject.rfc4514_string().split(",")[0].removeprefix("CN=")
            row = re.search(rf"^\| {re.escape(cn)} \| (.*)$", text, flags=re.MULTILINE)
            assert row is not None, cn
            assert cert.fingerprint(hashes.SHA256()).hex() in row.group(1)
            assert spki_sha256(cert).hex() in row.group(1)
            assert f"{cert.serial_number:#x}" in row.group(1)


def test_roots_must_contain_an_ark() -> None:
    with pytest.raises(ConfigError, match="at least one self-signed AMD ARK"):
        SnpVerifier(roots=())
    la = look_alike()
    with pytest.raises(ConfigError, match="at least one self-signed AMD ARK"):
        SnpVerifier(roots=(la.ask,))
    genoa = [c for c in SnpVerifier.from_embedded_roots().roots if "Genoa" in str(c.subject)]
    with pytest.raises(ConfigError, match="not among the trusted ARKs"):
        SnpVerifier(roots=(*genoa, la.ask))


def test_roots_must_be_amd_named() -> None:
    la = look_alike()
    other = ca_cert("ARK-Naples", la.ark_key, issuer_cn="ARK-Naples", issuer_key=la.ark_key)
    with pytest.raises(ConfigError, match="not an AMD ARK"):
        SnpVerifier(roots=(other,))
    stray = ca_cert("SEV-Genoa", la.ask_key, issuer_cn="ARK-Milan", issuer_key=la.ark_key)
    with pytest.raises(ConfigError, match="is not an AMD ASK"):
        SnpVerifier(roots=(la.ark, stray))


def test_roots_must_verify() -> None:
    la = look_alike()
    bad_self = ca_cert("ARK-Milan", la.ark_key, issuer_cn="ARK-Milan", issuer_key=la.ask_key)
    with pytest.raises(ConfigError, match="not validly self-signed"):
        SnpVerifier(roots=(bad_self,))
    wrong_parent = ca_cert("SEV-Milan", la.ask_key, issuer_cn="ARK-Milan", issuer_key=la.ask_key)
    with pytest.raises(ConfigError, match="not signed by the embedded AMD ARK-Milan"):
        SnpVerifier(roots=(la.ark, wrong_parent))


def test_two_arks_with_one_name() -> None:
    la = look_alike()
    real = [c for c in SnpVerifier.from_embedded_roots().roots if "Milan" in str(c.subject)]
    with pytest.raises(ConfigError, match="different keys"):
        SnpVerifier(roots=(*real, la.ark))


def test_verify_vcek_chain_accepts_objects_and_bundles(vectors_dir: Path) -> None:
    verifier = SnpVerifier.from_embedded_roots()
    now = datetime(2025, 9, 1, tzinfo=UTC)
    der = (vectors_dir / "sev-snp" / "milan-vlek-aws" / "vlek.der").read_bytes()
    cert = load_certificates(der, what="vlek")[0]
    chain = verifier.verify_vcek_chain(cert, now=now)
    assert chain.key_type is snp.SnpKeyType.VLEK
    assert chain.csp_id == "CN=cc-us-east-2.amazonaws.com"
    assert chain.hw_id is None
    assert chain.issuer_name == "CN=SEV-VLEK-Milan"
    assert chain.valid_from == cert.not_valid_before_utc
    assert chain.valid_until == cert.not_valid_after_utc
    assert verifier.verify_vcek_chain(der, now=now.replace(tzinfo=None)) == chain  # cached
    with pytest.raises(ChainError, match="expected one certificate, got 2"):
        verifier.verify_vcek_chain(
            (vectors_dir / "sev-snp" / "roots" / "milan-vlek-ask-ark.pem").read_bytes(), now=now
        )


def test_several_leaves_pick_the_one_for_the_report(vectors_dir: Path) -> None:
    folder = vectors_dir / "sev-snp"
    verifier = SnpVerifier.from_embedded_roots()
    certs = tuple(
        (folder / p).read_bytes()
        for p in ("milan-gsg/vcek.der", "milan-vlek-aws/vlek.der", "milan-trustee/vcek.der")
    )
    verified = verifier.verify(
        (folder / "milan-trustee" / "report.bin").read_bytes(),
        endorsements=Endorsements(certs=certs),
        now=datetime(2025, 9, 1, tzinfo=UTC),
    )
    assert verified.claims["chip_id"].startswith("c38427a30d4c7af9")


def test_certificates_in_collateral_are_used(vectors_dir: Path) -> None:
    folder = vectors_dir / "sev-snp" / "genoa-oak"
    verified = SnpVerifier.from_embedded_roots().verify(
        (folder / "report.bin").read_bytes(),
        endorsements=Endorsements(collateral=((folder / "vcek.der").read_bytes(),)),
        now=datetime(2025, 9, 1, tzinfo=UTC),
    )
    assert verified.claims["family"] == "Genoa"
    assert verified.claims["crl_checked"] is False


def test_custom_roots() -> None:
    la = look_alike()
    assert isinstance(la.ark, x509.Certificate)
    assert SnpVerifier(roots=(la.ark,)).roots == (la.ark,)
    assert SnpVerifier(roots=(la.ark, la.ask, la.ark)).roots == (la.ark,)
