"""Collateral formats: detection by content, exact signed bytes, and refusal of the ambiguous."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.attestation.intel.collateral import (
    MAX_COLLATERAL_ITEM_BYTES,
    MAX_COLLATERAL_ITEMS,
    SignedDocument,
    TcbStatus,
    parse_collateral,
    parse_collateral_item,
    parse_qe_identity,
    parse_tcb_info,
)
from donjon.errors import EvidenceFormatError

from .conftest import VECTORS

SGX = VECTORS / "sgx"
TDX = VECTORS / "tdx"


def _read(path: Path) -> bytes:
    return path.read_bytes()


def test_pcs_tcb_info_keeps_the_exact_signed_bytes() -> None:
    raw = _read(SGX / "mobilecoin-stale-crl" / "tcbinfo.json")
    c = parse_collateral_item(raw)
    (info,) = c.tcb_infos
    start = raw.index(b"{", 1)
    end = raw.rindex(b',"signature"')
    assert info.signed.body == raw[start:end]
    assert info.signed.signature.hex() == json.loads(raw)["signature"]
    assert info.id == "SGX" and info.version == 3 and info.fmspc.hex() == "00906ed50000"
    assert info.tcb_levels[0].status is TcbStatus.SW_HARDENING_NEEDED
    assert info.tcb_levels[0].advisory_ids == ("INTEL-SA-00334", "INTEL-SA-00615")
    assert len(info.tcb_levels[0].sgx_components) == 16


def test_tdx_tcb_info_has_module_identities() -> None:
    (info,) = parse_collateral_item(
        _read(TDX / "collateral-00806f050000-2025-10" / "tcbinfo.json")
    ).tcb_infos
    assert info.id == "TDX"
    assert info.tdx_module is not None and info.tdx_module.mrsigner == bytes(48)
    assert [m.id for m in info.tdx_module_identities] == ["TDX_03", "TDX_01"]
    assert all(level.tdx_components is not None for level in info.tcb_levels)


def test_pcs_qe_identity() -> None:
    (qe,) = parse_collateral_item(
        _read(SGX / "mobilecoin-stale-crl" / "qe-identity.json")
    ).qe_identities
    assert qe.id == "QE" and qe.isv_prod_id == 1
    assert qe.mrsigner.hex().startswith("8c4f5775")
    assert qe.attributes_mask.hex() == "fbffffffffffffff0000000000000000"
    assert qe.tcb_levels[0].isv_svn == 8


def test_dcap_qvl_collateral_json() -> None:
    raw = _read(TDX / "dcapqvl-v4" / "collateral.json")
    doc = json.loads(raw)
    c = parse_collateral_item(raw)
    assert c.tcb_infos[0].signed.body == doc["tcb_info"].encode()
    assert c.qe_identities[0].signed.body == doc["qe_identity"].encode()
    assert len(c.crls) == 2
    names = {
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for cert in c.certificates
    }
    assert names == {"Intel SGX TCB Signing", "Intel SGX Root CA", "Intel SGX PCK Platform CA"}


@pytest.mark.parametrize(
    "path",
    [
        SGX / "roots" / "intel-root-ca-crl-2025-03-20.der",
        SGX / "mobilecoin-stale-crl" / "pck-crl-processor.der",
    ],
)
def test_crl_as_der_hex_and_pem(path: Path) -> None:
    der = _read(path)
    from_der = parse_collateral_item(der).crls[0]
    from_hex = parse_collateral_item(der.hex().encode() + b"\n").crls[0]
    from_upper_hex = parse_collateral_item(der.hex().upper().encode()).crls[0]
    import base64

    pem = b"-----BEGIN X509 CRL-----\n" + base64.encodebytes(der) + b"-----END X509 CRL-----\n"
    from_pem = parse_collateral_item(pem).crls[0]
    assert from_der == from_hex == from_upper_hex == from_pem


def test_certificates_as_pem_and_der() -> None:
    chain = parse_collateral_item(_read(SGX / "roots" / "intel-tcb-signing-chain-2025.pem"))
    assert len(chain.certificates) == 2
    root = parse_collateral_item(_read(SGX / "roots" / "intel-sgx-root-ca.der"))
    assert root.certificates[0] == chain.certificates[1]


def test_every_vector_collateral_file_parses() -> None:
    files = [p for p in [*SGX.rglob("*"), *TDX.rglob("*")] if p.is_file() and p.name != "quote.bin"]
    assert len(files) >= 25
    c = parse_collateral(_read(p) for p in files)
    assert len(c.tcb_infos) == 8 and len(c.qe_identities) == 7


def test_whitespace_outside_the_signed_object_is_fine() -> None:
    raw = _read(SGX / "mobilecoin-stale-crl" / "tcbinfo.json")
    spaced = b"\n  " + raw.replace(b'{"tcbInfo":', b'{ "tcbInfo" :\n', 1) + b"\n"
    assert (
        parse_collateral_item(spaced).tcb_infos[0].signed
        == parse_collateral_item(raw).tcb_infos[0].signed
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"tcbInfo":{},"tcbInfo":{},"signature":"00"}', "duplicate"),
        (b'{"tcbInfo":{"version":3,"version":2},"signature":"' + b"00" * 64 + b'"}', "duplicate"),
        (b'{"tcbInfo":{},"signature":"00","extra":1}', "exactly the members"),
        (b'{"tcbInfo":{}}', "exactly the members"),
        (b'{"tcbInfo":{},"signature":"zz"}', "not hex"),
        (b'{"tcbInfo":{},"signature":"0011"}', "64 bytes"),
        (b'{"tcbInfo":{"version":NaN},"signature":"' + b"00" * 64 + b'"}', "not valid JSON"),
        (b'{"tcbInfo": [' * 5000 + b"]" * 5000, "not valid JSON"),
        (b'{"tcbInfo":{},"signature":"' + b"00" * 64 + b'"} trailing', "after"),
        (b'{"something":"else"}', "neither"),
        (b"\xff\xfe{}", "not a recognized format"),
        (b"{\xff}", "UTF-8"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "without a CERTIFICATE",
        ),
        (b"0\x03\x02\x01\x00", "not a recognized format"),
        (b"hello", "not a recognized format"),
    ],
)
def test_refused_items(data: bytes, match: str) -> None:
    with pytest.raises(EvidenceFormatError, match=match):
        parse_collateral_item(data)


def _signed(body: dict[str, object]) -> SignedDocument:
    return SignedDocument(body=json.dumps(body).encode(), signature=bytes(64))


def test_tcb_info_field_checks() -> None:
    raw = _read(SGX / "mobilecoin-stale-crl" / "tcbinfo.json")
    good = json.loads(raw)["tcbInfo"]
    parse_tcb_info(_signed(good))
    cases: list[tuple[Callable[[Any], object], str]] = [
        (lambda d: d.update(version=4), "version 4"),
        (lambda d: d.update(id="XYZ"), "neither"),
        (lambda d: d.update(fmspc="00"), "6 bytes"),
        (lambda d: d.update(issueDate="yesterday"), "ISO 8601"),
        (lambda d: d.update(issueDate="2023-07-12T19:56:44"), "time zone"),
        (lambda d: d["tcbLevels"][0].update(tcbStatus="Fine"), "recognized TCB status"),
        (lambda d: d["tcbLevels"][0]["tcb"].update(pcesvn=True), "integer"),
        (lambda d: d["tcbLevels"][0]["tcb"].update(pcesvn=70000), "integer"),
        (lambda d: d["tcbLevels"][0]["tcb"]["sgxtcbcomponents"].pop(), "16 components"),
        (lambda d: d["tcbLevels"][0].update(advisoryIDs=[1]), "strings"),
        (lambda d: d.pop("tcbLevels"), "no 'tcbLevels'"),
        (lambda d: d.update(tcbLevels={}), "array"),
    ]
    for mutate, match in cases:
        d = json.loads(json.dumps(good))
        mutate(d)
        with pytest.raises(EvidenceFormatError, match=match):
            parse_tcb_info(_signed(d))


def test_tcb_info_v2_layout() -> None:
    v2 = {
        "version": 2,
        "issueDate": "2020-01-01T00:00:00Z",
        "nextUpdate": "2020-02-01T00:00:00Z",
        "fmspc": "00906ED50000",
        "pceId": "0000",
        "tcbType": 0,
        "tcbEvaluationDataNumber": 5,
        "tcbLevels": [
            {
                "tcb": {**{f"sgxtcbcomp{i:02d}svn": i for i in range(1, 17)}, "pcesvn": 7},
                "tcbDate": "2019-11-13T00:00:00Z",
                "tcbStatus": "OutOfDate",
            }
        ],
    }
    info = parse_tcb_info(_signed(v2))
    assert info.id == "SGX"
    assert info.tcb_levels[0].sgx_components == tuple(range(1, 17))
    assert info.tcb_levels[0].tdx_components is None


def test_qe_identity_version_and_fields() -> None:
    raw = json.loads(_read(SGX / "mobilecoin-stale-crl" / "qe-identity.json"))["enclaveIdentity"]
    parse_qe_identity(_signed(raw))
    with pytest.raises(EvidenceFormatError, match="version 1"):
        parse_qe_identity(_signed({**raw, "version": 1}))
    with pytest.raises(EvidenceFormatError, match="32 bytes"):
        parse_qe_identity(_signed({**raw, "mrsigner": "00"}))
    with pytest.raises(EvidenceFormatError, match="recognized TCB status"):
        levels = [{**raw["tcbLevels"][0], "tcbStatus": "ConfigurationNeeded"}]
        parse_qe_identity(_signed({**raw, "tcbLevels": levels}))


def test_limits() -> None:
    with pytest.raises(EvidenceFormatError, match="more than"):
        parse_collateral_item(b" " * (MAX_COLLATERAL_ITEM_BYTES + 1))
    crl = _read(SGX / "roots" / "intel-root-ca-crl-2025-03-20.der")
    with pytest.raises(EvidenceFormatError, match="more than"):
        parse_collateral([crl] * (MAX_COLLATERAL_ITEMS + 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_only_format_errors(data: bytes) -> None:
    try:
        parse_collateral_item(data)
    except EvidenceFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    which=st.sampled_from(
        [
            "sgx/mobilecoin-stale-crl/tcbinfo.json",
            "sgx/collateral-00606a000000-2025-08/qe-identity.json",
            "tdx/dcapqvl-v4/collateral.json",
            "tdx/gotdx-spr-e4-2023/pck-crl-platform.der",
        ]
    ),
    at=st.integers(0, 20000),
    value=st.integers(0, 255),
    cut=st.none() | st.integers(0, 20000),
)
def test_mutated_items_only_format_errors(which: str, at: int, value: int, cut: int | None) -> None:
    data = bytearray(_read(VECTORS / which))
    data[at % len(data)] = value
    if cut is not None:
        del data[cut:]
    try:
        parse_collateral_item(bytes(data))
    except EvidenceFormatError:
        pass
