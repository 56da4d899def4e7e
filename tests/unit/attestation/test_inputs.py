"""Evidence/certificate/collateral file handling, on the real vector files."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.attestation import inputs
from donjon.attestation.inputs import (
    EndorsementKind,
    EvidenceEncoding,
    InputError,
    classify_cert_file,
    classify_collateral_file,
    decode_evidence,
    load_cert_file,
    load_collateral_file,
    load_endorsements,
    load_evidence,
    read_bounded,
    split_der_items,
)
from donjon.errors import UsageError

_HEX_CHARS = frozenset(b"0123456789abcdefABCDEF")


@pytest.fixture
def snp_report(vectors_dir: Path) -> bytes:
    return (vectors_dir / "sev-snp/milan-trustee/report.bin").read_bytes()


def test_input_error_is_a_usage_error_with_exit_code_2() -> None:
    assert issubclass(InputError, UsageError)
    assert InputError.exit_code == 2


# --- evidence ---------------------------------------------------------------------------------


def test_raw_evidence_is_passed_through(snp_report: bytes) -> None:
    decoded = decode_evidence(snp_report)
    assert decoded.encoding is EvidenceEncoding.RAW
    assert decoded.data is snp_report


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: b.hex().encode(),
        lambda b: b.hex().upper().encode(),
        lambda b: b"0x" + b.hex().encode() + b"\n",
        # xxd -p style: 60 hex digits per line
        lambda b: b"\n".join(b.hex().encode()[i : i + 60] for i in range(0, 2 * len(b), 60)),
    ],
)
def test_hex_evidence_is_detected(snp_report: bytes, encode: object) -> None:
    assert callable(encode)
    decoded = decode_evidence(encode(snp_report))
    assert decoded.encoding is EvidenceEncoding.HEX
    assert decoded.data == snp_report


@pytest.mark.parametrize(
    "encode",
    [
        base64.b64encode,
        base64.urlsafe_b64encode,
        lambda b: base64.b64encode(b).rstrip(b"="),
        base64.encodebytes,  # 76-character lines
    ],
)
def test_base64_evidence_is_detected(vectors_dir: Path, encode: object) -> None:
    assert callable(encode)
    # The Nitro sample was distributed as base64 upstream; its bytes decode back exactly.
    raw = (vectors_dir / "nitro/blocky-prod-2024/attestation.cbor").read_bytes()
    decoded = decode_evidence(encode(raw))
    assert decoded.encoding is EvidenceEncoding.BASE64
    assert decoded.data == raw


def test_text_that_is_neither_hex_nor_base64_is_raw() -> None:
    doc = b'{"format": "something", "report": "abc"}'
    assert decode_evidence(doc) == inputs.DecodedEvidence(doc, EvidenceEncoding.RAW)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b" \n\t ", "only whitespace"),
        (b"abc", "odd number of digits"),
        (b"0x123\n", "odd number of digits"),
    ],
)
def test_unusable_evidence_text_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match):
        decode_evidence(data, what="evidence file x.bin")


@given(st.binary(min_size=1, max_size=512))
def test_hex_round_trip(data: bytes) -> None:
    assert decode_evidence(data.hex().encode()).data == data


@given(st.binary(min_size=1, max_size=512))
def test_base64_round_trip_unless_it_reads_as_hex(data: bytes) -> None:
    text = base64.b64encode(data)
    decoded = decode_evidence(text)
    if set(text.rstrip(b"=")) <= _HEX_CHARS and not text.endswith(b"="):
        # The documented ambiguity: all-hex-digit text is hex.
        assert decoded.encoding is EvidenceEncoding.HEX
    else:
        assert decoded == inputs.DecodedEvidence(data, EvidenceEncoding.BASE64)


@given(st.binary(min_size=1, max_size=512))
def test_decode_evidence_only_raises_input_error(data: bytes) -> None:
    try:
        decoded = decode_evidence(data)
    except InputError:
        return
    assert decoded.data


# --- certificates and keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("sev-snp/milan-gsg/vcek.der", EndorsementKind.DER),
        ("sev-snp/roots/milan-vcek-ask-ark.pem", EndorsementKind.PEM),
        ("sev-snp/azure-milan-hcl/vcek-chain.pem", EndorsementKind.PEM),
        ("sgx/roots/intel-sgx-root-ca.der", EndorsementKind.DER),
        ("sgx/roots/intel-tcb-signing-chain-2025.pem", EndorsementKind.PEM),
        ("cca/tfrmm-legacy/cpak.pub.pem", EndorsementKind.PEM),
        ("cca/trustee-sha512-rim/cpak.jwk.json", EndorsementKind.JSON),
        ("cca/draft-ffm-00/ta-tfa.json", EndorsementKind.JSON),
        ("nitro/roots/aws-nitro-enclaves-root-g1.pem", EndorsementKind.PEM),
    ],
)
def test_cert_files_of_the_vectors_are_accepted_unchanged(
    vectors_dir: Path, path: str, kind: EndorsementKind
) -> None:
    data = (vectors_dir / path).read_bytes()
    assert classify_cert_file(data) is kind
    assert load_cert_file(vectors_dir / path) == data


def test_concatenated_der_certificates_are_split(vectors_dir: Path) -> None:
    vcek = (vectors_dir / "sev-snp/milan-gsg/vcek.der").read_bytes()
    root = (vectors_dir / "sgx/roots/intel-sgx-root-ca.der").read_bytes()
    assert classify_cert_file(vcek + root) is EndorsementKind.DER
    assert split_der_items(vcek + root) == (vcek, root)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"hello world", "neither DER, PEM"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "only PRIVATE KEY"),
        (b"{not json", "does not parse"),
        (b"\x30\x82\x10\x00\x01\x02", "truncated"),
        (b"\x30\x80\x00\x00", "invalid DER length"),
        (b"\x30\x03\x01\x01\xff\x04", "not the start of a DER structure"),
    ],
)
def test_unusable_cert_files_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match):
        classify_cert_file(data)


def test_truncated_real_certificate_is_refused(vectors_dir: Path) -> None:
    vcek = (vectors_dir / "sev-snp/milan-gsg/vcek.der").read_bytes()
    with pytest.raises(InputError, match="truncated"):
        classify_cert_file(vcek[:-1])


# --- collateral -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("sgx/dcapqvl/collateral.json", EndorsementKind.JSON),
        ("sgx/mobilecoin-stale-crl/tcbinfo.json", EndorsementKind.JSON),
        ("sgx/mobilecoin-stale-crl/qe-identity.json", EndorsementKind.JSON),
        ("sgx/mobilecoin-stale-crl/pck-crl-processor.der", EndorsementKind.DER),
        ("sgx/roots/intel-root-ca-crl-2025-03-20.der", EndorsementKind.DER),
        ("sgx/roots/intel-pck-platform-ca-chain.pem", EndorsementKind.PEM),
    ],
)
def test_collateral_files_of_the_vectors_are_accepted_unchanged(
    vectors_dir: Path, path: str, kind: EndorsementKind
) -> None:
    data = (vectors_dir / path).read_bytes()
    assert classify_collateral_file(data) is kind
    assert load_collateral_file(vectors_dir / path) == data


def test_pem_crl_is_collateral_but_not_a_certificate() -> None:
    pem = b"-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"
    assert classify_collateral_file(pem) is EndorsementKind.PEM
    with pytest.raises(InputError, match="X509 CRL"):
        classify_cert_file(pem)


def test_json_scalar_is_not_collateral() -> None:
    for scalar in (b"1", b"true", b'"tcb info"'):
        with pytest.raises(InputError, match="neither DER, PEM"):
            classify_collateral_file(scalar)


# --- files ------------------------------------------------------------------------------------


def test_read_bounded_refuses_what_is_not_a_small_regular_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read evidence file"):
        read_bounded(tmp_path / "missing.bin", max_bytes=10, what="evidence file")
    with pytest.raises(InputError, match="not a regular file"):
        read_bounded(tmp_path, max_bytes=10, what="evidence file")
    with pytest.raises(InputError, match="not a regular file"):
        read_bounded(Path("/dev/zero"), max_bytes=10, what="evidence file")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 11)
    with pytest.raises(InputError, match="11 bytes, more than the 10-byte limit"):
        read_bounded(big, max_bytes=10, what="evidence file")
    assert read_bounded(big, max_bytes=11, what="evidence file") == b"x" * 11


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    f = tmp_path / "secret.bin"
    f.write_bytes(b"x")
    f.chmod(0)
    with pytest.raises(InputError, match="cannot read"):
        read_bounded(f, max_bytes=10, what="evidence file")


def test_limits_are_named_and_sane() -> None:
    assert inputs.MAX_EVIDENCE_FILE_BYTES >= 2 * 8000  # hex of the largest (padded) sample
    assert inputs.MAX_CERT_FILE_BYTES <= inputs.MAX_COLLATERAL_FILE_BYTES
    assert 8 <= inputs.MAX_ENDORSEMENT_FILES <= 256


def test_load_evidence_from_hex_file(tmp_path: Path, snp_report: bytes) -> None:
    f = tmp_path / "report.hex"
    f.write_text(snp_report.hex() + "\n")
    assert load_evidence(f).data == snp_report


def test_load_endorsements_keeps_order_and_bounds_count(vectors_dir: Path) -> None:
    vcek = vectors_dir / "sev-snp/milan-gsg/vcek.der"
    chain = vectors_dir / "sev-snp/roots/milan-vcek-ask-ark.pem"
    crl = vectors_dir / "sgx/roots/intel-root-ca-crl-2025-03-20.der"
    e = load_endorsements([vcek, chain], [crl])
    assert e.certs == (vcek.read_bytes(), chain.read_bytes())
    assert e.collateral == (crl.read_bytes(),)
    with pytest.raises(InputError, match="at most"):
        load_endorsements([vcek] * (inputs.MAX_ENDORSEMENT_FILES + 1))


def test_a_cert_file_given_as_collateral_is_named_in_the_error(tmp_path: Path) -> None:
    f = tmp_path / "key.pem"
    f.write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InputError, match=r"collateral file .*key\.pem.*PUBLIC KEY"):
        load_collateral_file(f)


@given(st.binary(max_size=2048))
def test_classifiers_only_raise_input_error(data: bytes) -> None:
    for classify in (classify_cert_file, classify_collateral_file):
        try:
            kind = classify(data)
        except InputError:
            continue
        assert kind in set(EndorsementKind)


@given(st.binary(min_size=1, max_size=64), st.integers(0, 4000))
def test_mutated_certificates_only_raise_input_error(patch: bytes, at: int) -> None:
    vcek = (
        Path(__file__).resolve().parents[4] / "shared/vectors/sev-snp/milan-gsg/vcek.der"
    ).read_bytes()
    mutated = vcek[: at % len(vcek)] + patch + vcek[at % len(vcek) + len(patch) :]
    try:
        classify_cert_file(mutated)
    except InputError:
        pass
