"""Fetched answers: their kind is checked, their own dates say how long they may be reused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote_to_bytes

import pytest

from donjon.attestation.result import Endorsements, Platform
from donjon.endorse.config import FetchConfig
from donjon.endorse.documents import DocumentError, read_document
from donjon.endorse.plan import DocumentKind, DocumentRequest, plan_endorsements
from tests.unit.endorse._vectors import SNP_TIME, read, snp

CONFIG = FetchConfig(kds_url="https://kds.example", pcs_url="https://pcs.example")
SGX = "sgx/collateral-00606a000000-2025-08"
TCB_CHAIN = read("sgx/roots/intel-tcb-signing-chain-2025.pem")


def _snp_requests(name: str) -> tuple[DocumentRequest, ...]:
    report = snp(name).report
    return plan_endorsements(
        Platform.SEV_SNP, report, Endorsements(), config=CONFIG, now=SNP_TIME
    ).requests


def _sgx_requests() -> dict[DocumentKind, DocumentRequest]:
    quote = read("sgx/occlum-trustee/quote.bin")
    plan = plan_endorsements(Platform.SGX, quote, Endorsements(), config=CONFIG, now=SNP_TIME)
    return {r.kind: r for r in plan.requests}


def test_vcek_is_kept_until_its_not_after() -> None:
    vcek_request, _ = _snp_requests("milan-trustee")
    document = read_document(vcek_request, snp("milan-trustee").vcek, None)
    assert document.mismatch is None
    assert document.certs == (snp("milan-trustee").vcek,) and document.collateral == ()
    # manifest leaf_validity: 2023-01-24T17:58:26 .. 2030-01-24T17:58:26
    start = datetime(2023, 1, 24, 17, 58, 26, tzinfo=UTC)
    end = datetime(2030, 1, 24, 17, 58, 26, tzinfo=UTC)
    assert (document.valid_from, document.valid_until) == (start, end)
    assert document.fresh_at(start) and document.fresh_at(end - timedelta(seconds=1))
    assert not document.fresh_at(end) and not document.fresh_at(start - timedelta(seconds=1))


def test_the_vcek_of_another_chip_does_not_answer_the_request() -> None:
    vcek_request, _ = _snp_requests("milan-trustee")
    document = read_document(vcek_request, snp("milan-gsg").vcek, None)
    assert document.mismatch is not None and "hwID is 3ac3fe21e13fb099" in document.mismatch


def test_a_vcek_for_another_tcb_does_not_answer_the_request() -> None:
    # The same chip at another TCB: change REPORTED_TCB's microcode SPL (byte 7 of 0x180).
    report = bytearray(snp("milan-trustee").report)
    report[0x187] = 0x74
    plan = plan_endorsements(
        Platform.SEV_SNP, bytes(report), Endorsements(), config=CONFIG, now=SNP_TIME
    )
    document = read_document(plan.requests[0], snp("milan-trustee").vcek, None)
    assert document.mismatch is not None and "issued for TCB" in document.mismatch


def test_ask_ark_chain_is_kept_until_the_first_not_after() -> None:
    _, chain_request = _snp_requests("genoa-oak")
    document = read_document(chain_request, read("sev-snp/roots/genoa-vcek-ask-ark.pem"), None)
    assert document.mismatch is None and len(document.certs) == 1
    wrong = read_document(chain_request, read("sev-snp/roots/milan-vcek-ask-ark.pem"), None)
    assert wrong.mismatch is not None and "ARK-Genoa" in wrong.mismatch


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"<html>hello</html>", "not a DER or PEM"),
        (b"\x30\x03\x02\x01\x00", "not a DER or PEM"),
        (bytes(70_000), "limit"),
    ],
)
def test_garbage_is_not_a_vcek(body: bytes, reason: str) -> None:
    vcek_request, _ = _snp_requests("genoa-oak")
    with pytest.raises(DocumentError, match=reason):
        read_document(vcek_request, body, None)


def test_two_certificates_are_not_one_vcek() -> None:
    vcek_request, _ = _snp_requests("genoa-oak")
    with pytest.raises(DocumentError, match="expected one VCEK"):
        read_document(vcek_request, read("sev-snp/azure-milan-hcl/vcek-chain.pem"), None)


def test_tcb_info_is_kept_until_next_update_and_carries_its_chain() -> None:
    request = _sgx_requests()[DocumentKind.TCB_INFO]
    body = read(f"{SGX}/tcbinfo.json")
    document = read_document(request, body, TCB_CHAIN)
    assert document.mismatch is None
    assert document.collateral == (body,) and document.certs == (TCB_CHAIN,)
    inner = json.loads(body)["tcbInfo"]
    assert document.valid_from == datetime.fromisoformat(inner["issueDate"])
    assert document.valid_until == datetime.fromisoformat(inner["nextUpdate"])


def test_tcb_info_needs_its_issuer_chain_and_the_right_fmspc() -> None:
    request = _sgx_requests()[DocumentKind.TCB_INFO]
    with pytest.raises(DocumentError, match="TCB-Info-Issuer-Chain"):
        read_document(request, read(f"{SGX}/tcbinfo.json"), None)
    other = read_document(
        request, read("tdx/collateral-00806f050000-2025-10/tcbinfo.json"), TCB_CHAIN
    )
    assert other.mismatch == "it is TDX TCB info for FMSPC 00806F050000"
    with pytest.raises(DocumentError, match="not an Intel PCS TCB info"):
        read_document(request, read(f"{SGX}/qe-identity.json"), TCB_CHAIN)
    with pytest.raises(DocumentError, match="header"):
        read_document(request, read(f"{SGX}/tcbinfo.json"), b"-----BEGIN CERTIFICATE-----\nxx")


def test_qe_identity_and_its_kind() -> None:
    request = _sgx_requests()[DocumentKind.QE_IDENTITY]
    sgx = read_document(request, read(f"{SGX}/qe-identity.json"), TCB_CHAIN)
    assert sgx.mismatch is None
    td = read_document(
        request, read("tdx/collateral-00806f050000-2025-10/qe-identity.json"), TCB_CHAIN
    )
    assert td.mismatch == "it is the TD_QE identity"


def test_crls_are_kept_until_next_update_and_must_be_the_issuers() -> None:
    requests = _sgx_requests()
    pck = read_document(requests[DocumentKind.PCK_CRL], read(f"{SGX}/pck-crl-platform.der"), None)
    assert pck.mismatch is None and pck.collateral == (read(f"{SGX}/pck-crl-platform.der"),)
    assert pck.valid_from == datetime(2025, 8, 15, 5, 41, 26, tzinfo=UTC)
    assert pck.valid_until == datetime(2025, 9, 14, 5, 41, 26, tzinfo=UTC)
    root_crl = read("sgx/roots/intel-root-ca-crl-2025-03-20.der")
    swapped = read_document(requests[DocumentKind.PCK_CRL], root_crl, None)
    assert swapped.mismatch is not None and "CN=Intel SGX Root CA" in swapped.mismatch
    # A PCCS may send the CRL as hex text; it is the same CRL.
    as_hex = read_document(requests[DocumentKind.ROOT_CA_CRL], root_crl.hex().encode(), None)
    assert as_hex.mismatch is None
    with pytest.raises(DocumentError, match="not one CRL"):
        read_document(requests[DocumentKind.ROOT_CA_CRL], read(f"{SGX}/tcbinfo.json"), None)


def test_issuer_chain_header_round_trip() -> None:
    # What the fetcher gets from a header is the PEM exactly.
    assert unquote_to_bytes(quote(TCB_CHAIN.decode(), safe="")) == TCB_CHAIN
