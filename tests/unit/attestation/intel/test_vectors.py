"""Every SGX and TDX vector of ../shared/vectors/manifest.json, at its verify_time, field by field.

``accept`` and ``accept-with-tcb-status`` must verify; ``reject-debug`` must verify with
``debug`` true (authentic, for the policy to reject); ``reject`` (no TCB level matches) must raise
``TcbLevelError`` with the claims attached; ``reject-stale-collateral`` must raise
``FreshnessError``. Every field the manifest lists is compared.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509

from donjon.attestation import Endorsements, Platform, VerifiedEvidence
from donjon.attestation.intel import (
    DcapVerifier,
    TcbLevelError,
    embedded_root,
    evaluate_tcb,
    parse_collateral,
    parse_quote,
    pck_extensions,
)
from donjon.attestation.intel.quote import TdReport
from donjon.errors import EvidenceFormatError, FreshnessError

from .conftest import CASES, Case, case

_NOT_FIELDS = {"result", "reason", "file_bytes", "production_policy"}


def _compare(claims: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, want in expected.items():
        if key in _NOT_FIELDS:
            continue
        if key == "advisories" and want is None:
            want = []  # the manifest writes null for "no advisories"
        assert key in claims, f"claim {key!r} missing"
        assert claims[key] == want, f"{key}: {claims[key]!r} != {want!r}"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_manifest_vector(c: Case, verifiers: dict[Platform, DcapVerifier]) -> None:
    verifier = verifiers[c.platform]
    result = c.expected["result"]
    if result in ("accept", "accept-with-tcb-status", "reject-debug"):
        evidence = verifier.verify(c.quote, endorsements=c.endorsements, now=c.now)
        assert isinstance(evidence, VerifiedEvidence)
        assert evidence.platform is c.platform
        claims = evidence.to_json()
        _compare(claims, c.expected)
        assert evidence.debug is (result == "reject-debug")
        assert evidence.debug is c.expected.get("debug", False)
        assert evidence.report_data.hex() == c.expected["report_data"]
        body = parse_quote(c.quote).body
        assert evidence.measurement == (
            body.mr_td if isinstance(body, TdReport) else body.mr_enclave
        )
        # The final status converges platform, TDX module and QE; here the QE is UpToDate, so it
        # is the platform status made worse by the module's.
        assert evidence.tcb_status == c.expected["platform_tcb_status"]
        assert list(evidence.advisory_ids) == (c.expected["advisories"] or [])
        assert claims["isv_prod_id" if c.platform is Platform.SGX else "rtmr0"] is not None
    elif result == "reject":
        with pytest.raises(TcbLevelError) as info:
            verifier.verify(c.quote, endorsements=c.endorsements, now=c.now)
        assert info.value.status == "TCB_NOT_SUPPORTED" == c.expected["platform_tcb_status"]
        _compare(dict(info.value.claims), c.expected)
        assert "no TCB level" in str(info.value)
    elif result == "reject-stale-collateral":
        with pytest.raises(FreshnessError, match="CRL is not fresh"):
            verifier.verify(c.quote, endorsements=c.endorsements, now=c.now)
        _check_stale_vector_fields(c)
    else:  # pragma: no cover - a new result kind in the manifest needs a decision here
        pytest.fail(f"unknown expected result {result!r}")


def _check_stale_vector_fields(c: Case) -> None:
    """The stale-CRL vector's fields, from the parser and the TCB evaluation (as if CRL freshness
    were waived, which the verifier never does)."""
    quote = parse_quote(c.quote)
    chain = x509.load_pem_x509_certificates(quote.certification_data.data.rstrip(b"\0"))
    ext = pck_extensions(chain[0])
    coll = parse_collateral(c.collateral)
    ev = evaluate_tcb(
        tcb_info=coll.tcb_infos[0],
        pck=ext.tcb,
        qe_identity=coll.qe_identities[0],
        qe_isv_svn=quote.qe_report.isv_svn,
    )
    body = quote.body
    assert not isinstance(body, TdReport)
    got = {
        "quote_version": quote.header.version,
        "tee_type": f"0x{int(quote.tee_type):x}",
        "fmspc": ext.fmspc.hex(),
        "pck_issuer": chain[1].subject.rfc4514_string().split("CN=")[1].split(",")[0],
        "pck_pcesvn": ext.tcb.pce_svn,
        "pck_cpusvn": ext.tcb.cpu_svn.hex(),
        "qe_isvsvn": quote.qe_report.isv_svn,
        "platform_tcb_status": ev.platform_status,
        "tcb_date": ev.tcb_date.strftime("%Y-%m-%dT%H:%M:%SZ") if ev.tcb_date else None,
        "advisories": list(ev.platform_level.advisory_ids) if ev.platform_level else [],
        "qe_tcb_status": str(ev.qe_level.status) if ev.qe_level else None,
        "report_data": body.report_data.hex(),
        "mrenclave": body.mr_enclave.hex(),
        "mrsigner": body.mr_signer.hex(),
        "isvprodid": body.isv_prod_id,
        "isvsvn": body.isv_svn,
        "attributes": body.attributes.hex(),
        "quote_bytes_used": quote.bytes_used,
    }
    _compare(got, c.expected)
    assert c.expected["file_bytes"] == len(c.quote)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_quote_chain_ends_in_the_embedded_root(c: Case) -> None:
    chain = x509.load_pem_x509_certificates(
        parse_quote(c.quote).certification_data.data.rstrip(b"\0")
    )
    assert chain[-1] == embedded_root()
    root_der = (c.dir / c.files["root_ca"]).resolve().read_bytes()
    assert x509.load_der_x509_certificate(root_der) == embedded_root()


def test_gotdx_v5_with_its_own_tcb_info(tdx_verifier: DcapVerifier) -> None:
    """The alternative TCB info (go-tdx-guest, 2026-02-01) gives the same result."""
    c = case("tdx-gotdx-v5")
    coll = json.loads(c.collateral[0])
    qe = (
        b'{"enclaveIdentity":'
        + coll["qe_identity"].encode()
        + b',"signature":"'
        + coll["qe_identity_signature"].encode()
        + b'"}'
    )
    items = (
        (c.dir / c.files["alt_tcb_info"]).read_bytes(),
        qe,
        coll["root_ca_crl"].encode(),  # hex text of the DER CRLs
        coll["pck_crl"].encode(),
        coll["tcb_info_issuer_chain"].encode(),
    )
    evidence = tdx_verifier.verify(c.quote, endorsements=Endorsements(collateral=items), now=c.now)
    assert evidence.tcb_status == "UpToDate"
    assert evidence.claims["tcb_info_issue_date"] == "2026-02-01T14:49:26Z"
    _compare(dict(evidence.claims), c.expected)
    # Both TCB infos given: the one with the newer issue date wins (same evaluation number).
    both = tdx_verifier.verify(
        c.quote, endorsements=Endorsements(collateral=(*c.collateral, items[0])), now=c.now
    )
    assert both.claims["tcb_info_issue_date"] == "2026-02-18T10:58:51Z"


def test_collateral_window_edges(tdx_verifier: DcapVerifier) -> None:
    """Inside the manifest's collateral window it verifies; a second outside, it does not."""
    c = case("tdx-oak-v4")
    start = c.now.replace(year=2025, month=10, day=19, hour=17, minute=48, second=50)
    tdx_verifier.verify(c.quote, endorsements=c.endorsements, now=start)
    with pytest.raises(FreshnessError, match="not yet valid"):
        tdx_verifier.verify(c.quote, endorsements=c.endorsements, now=start - timedelta(seconds=1))
    end = c.now.replace(month=11, day=12, hour=10, minute=45, second=32)
    with pytest.raises(FreshnessError):
        tdx_verifier.verify(c.quote, endorsements=c.endorsements, now=end + timedelta(seconds=1))


def test_wrong_platform_is_named(sgx_verifier: DcapVerifier) -> None:
    c = case("tdx-oak-v4")
    with pytest.raises(EvidenceFormatError, match="TDX quote but the verifier is for SGX"):
        sgx_verifier.verify(c.quote, endorsements=c.endorsements, now=c.now)


def test_naive_now_is_refused(sgx_verifier: DcapVerifier) -> None:
    c = case("sgx-dcapqvl")
    with pytest.raises(FreshnessError, match="timezone-aware"):
        sgx_verifier.verify(c.quote, endorsements=c.endorsements, now=c.now.replace(tzinfo=None))


def test_repeated_verification_uses_caches_and_agrees(sgx_verifier: DcapVerifier) -> None:
    c = case("sgx-occlum")
    first = sgx_verifier.verify(c.quote, endorsements=c.endorsements, now=c.now)
    again = sgx_verifier.verify(c.quote, endorsements=c.endorsements, now=c.now)
    assert first == again
    # Cached signatures never excuse stale collateral: time checks run on every call.
    with pytest.raises(FreshnessError):
        sgx_verifier.verify(c.quote, endorsements=c.endorsements, now=c.now + timedelta(days=60))


# ---------------------------------------------------------------- cross-check with dcap-qvl


def _dcap_qvl_collateral(c: Case) -> Any:
    if "collateral" in c.files:
        return dcap_qvl.QuoteCollateralV3.from_json(c.collateral[0].decode())
    tcb = json.loads((c.dir / c.files["tcb_info"]).resolve().read_bytes())
    qe = json.loads((c.dir / c.files["qe_identity"]).resolve().read_bytes())
    raw_tcb = (c.dir / c.files["tcb_info"]).resolve().read_text()
    raw_qe = (c.dir / c.files["qe_identity"]).resolve().read_text()
    chain_file = c.files.get("tcb_signing_chain") or c.files["tcb_signing_cert"]
    chain = (c.dir / chain_file).resolve().read_text()
    return dcap_qvl.QuoteCollateralV3.from_json(
        json.dumps(
            {
                "pck_crl_issuer_chain": (c.dir / c.files["pck_crl_issuer_chain"])
                .resolve()
                .read_text(),
                "root_ca_crl": (c.dir / c.files["root_ca_crl"]).resolve().read_bytes().hex(),
                "pck_crl": (c.dir / c.files["pck_crl"]).resolve().read_bytes().hex(),
                "tcb_info_issuer_chain": chain,
                # The exact signed substrings, as the PCS files carry them.
                "tcb_info": raw_tcb[raw_tcb.index("{", 1) : raw_tcb.rindex(',"signature"')],
                "tcb_info_signature": tcb["signature"],
                "qe_identity_issuer_chain": chain,
                "qe_identity": raw_qe[raw_qe.index("{", 1) : raw_qe.rindex(',"signature"')],
                "qe_identity_signature": qe["signature"],
            }
        )
    )


@pytest.mark.parametrize(
    "c", [c for c in CASES if c.expected["result"] != "reject-stale-collateral"], ids=lambda c: c.id
)
def test_agrees_with_dcap_qvl(c: Case, verifiers: dict[Platform, DcapVerifier]) -> None:
    """dcap-qvl's verdict and status agree with ours wherever dcap-qvl accepts the evidence.

    dcap-qvl refuses debug enclaves and TDs without SEPT_VE_DISABLE outright (our result keeps
    them as authentic evidence for the policy), and reports "No matching TCB level" as an error.
    """
    now = int(c.now.timestamp())
    coll = _dcap_qvl_collateral(c)
    try:
        theirs = dcap_qvl.verify(c.quote, coll, now)
    except ValueError as e:
        message = str(e)
        if c.expected["result"] == "reject":
            assert "TCB" in message or "tcb" in message
            with pytest.raises(TcbLevelError):
                verifiers[c.platform].verify(c.quote, endorsements=c.endorsements, now=c.now)
            return
        ours = verifiers[c.platform].verify(c.quote, endorsements=c.endorsements, now=c.now)
        if ours.debug:
            assert "Debug" in message or "debug" in message
        else:
            assert ours.claims.get("sept_ve_disable") is False
            assert "SEPT_VE_DISABLE" in message
        return
    ours = verifiers[c.platform].verify(c.quote, endorsements=c.endorsements, now=c.now)
    assert theirs.status == ours.claims["platform_tcb_status"]
    assert list(theirs.advisory_ids) == list(ours.claims["advisories"])
    assert c.expected["result"] in ("accept", "accept-with-tcb-status")
