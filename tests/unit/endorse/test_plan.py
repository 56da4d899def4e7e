"""What is missing and where it is served, from the real vectors (offline, pure)."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from donjon.attestation.result import Endorsements, Platform
from donjon.attestation.snp.certs import parse_amd_extensions
from donjon.attestation.snp.tcb import ProductFamily
from donjon.endorse.config import INTEL_ROOT_CA_CRL_URL, FetchConfig
from donjon.endorse.errors import EndorsementUnavailableError
from donjon.endorse.plan import (
    MAX_DER_DOCUMENT_BYTES,
    MAX_JSON_DOCUMENT_BYTES,
    DocumentKind,
    Service,
    plan_endorsements,
)
from donjon.errors import UsageError
from tests.unit.endorse._vectors import SNP_TIME, read, snp

KDS = "https://kds.example"
PCS = "https://pcs.example"
CONFIG = FetchConfig(kds_url=KDS, pcs_url=PCS)
NO_THING = Endorsements()

# report -> (product, hwid bytes in the URL): Turin's VCEK names the first 8 bytes of CHIP_ID.
SNP_VECTORS = {
    "milan-gsg": ("Milan", 64),
    "milan-trustee": ("Milan", 64),
    "genoa-oak": ("Genoa", 64),
    "turin-oak": ("Turin", 8),
}


def _vcek_extensions(der: bytes) -> tuple[bytes | None, dict[int, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # serial 0 (AMD)
        cert = x509.load_der_x509_certificate(der)
    ext = parse_amd_extensions(cert, what="vcek")
    return ext.hw_id, dict(ext.spls)


@pytest.mark.parametrize("name", sorted(SNP_VECTORS))
def test_vcek_url_is_built_from_the_report_and_names_the_vectors_vcek(name: str) -> None:
    vector = snp(name)
    product, hw_bytes = SNP_VECTORS[name]
    plan = plan_endorsements(Platform.SEV_SNP, vector.report, NO_THING, config=CONFIG, now=SNP_TIME)
    vcek, chain = plan.requests
    # From the manifest: CHIP_ID and the REPORTED_TCB components, in TCB_VERSION order.
    query = "&".join(f"{k}SPL={v:02d}" for k, v in vector.tcb.items())
    hw_id = vector.chip_id[:hw_bytes]
    assert vcek.url == f"{KDS}/vcek/v1/{product}/{hw_id.hex()}?{query}"
    assert (vcek.kind, vcek.service, vcek.hw_id) == (DocumentKind.VCEK, Service.KDS, hw_id)
    assert vcek.cache_key == f"/vcek/v1/{product}/{hw_id.hex()}?{query}"
    assert vcek.max_bytes == MAX_DER_DOCUMENT_BYTES
    # ... and the VCEK AMD issued for that chip and TCB says the same in its extensions.
    cert_hw_id, spls = _vcek_extensions(vector.vcek)
    assert cert_hw_id == hw_id
    numbers = {"bl": 1, "tee": 2, "snp": 3, "ucode": 8, "fmc": 9}
    assert {numbers[k]: v for k, v in vector.tcb.items()} == {
        n: v for n, v in spls.items() if n in numbers.values()
    }
    assert vcek.tcb is not None and vcek.tcb.fields() == vector.tcb
    assert chain.url == f"{KDS}/vcek/v1/{product}/cert_chain"
    assert chain.kind is DocumentKind.AMD_CHAIN


def test_turin_query_starts_with_fmc() -> None:
    plan = plan_endorsements(
        Platform.SEV_SNP, snp("turin-oak").report, NO_THING, config=CONFIG, now=SNP_TIME
    )
    assert plan.requests[0].url.endswith(
        "/vcek/v1/Turin/3b42092f69c656d3?fmcSPL=00&blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71"
    )


def test_product_line_cpuid_then_hint_then_milan() -> None:
    v2 = snp("milan-trustee").report
    v5 = snp("genoa-oak").report
    hinted = FetchConfig(kds_url=KDS, kds_product=ProductFamily.GENOA)
    default = plan_endorsements(Platform.SEV_SNP, v2, NO_THING, config=CONFIG, now=SNP_TIME)
    assert "/vcek/v1/Milan/" in default.requests[0].url
    assert "assumed for a version 2 report" in default.requests[0].what
    hint = plan_endorsements(Platform.SEV_SNP, v2, NO_THING, config=hinted, now=SNP_TIME)
    assert "/vcek/v1/Genoa/" in hint.requests[0].url
    # A report that names its line (version 3+) is asked for as such, whatever the hint.
    turin = FetchConfig(kds_url=KDS, kds_product=ProductFamily.TURIN)
    named = plan_endorsements(Platform.SEV_SNP, v5, NO_THING, config=turin, now=SNP_TIME)
    assert "/vcek/v1/Genoa/" in named.requests[0].url


def test_what_the_caller_gave_is_not_fetched_again() -> None:
    vector = snp("milan-trustee")
    chain = read("sev-snp/roots/milan-vcek-ask-ark.pem")
    with_vcek = Endorsements(certs=(vector.vcek,))
    assert (
        plan_endorsements(
            Platform.SEV_SNP, vector.report, with_vcek, config=CONFIG, now=SNP_TIME
        ).requests
        == ()
    )
    with_chain = plan_endorsements(
        Platform.SEV_SNP, vector.report, Endorsements(certs=(chain,)), config=CONFIG, now=SNP_TIME
    )
    assert [r.kind for r in with_chain.requests] == [DocumentKind.VCEK]
    # A VCEK for another chip is still "given": rejecting it is the verifier's job.
    other = Endorsements(certs=(snp("milan-gsg").vcek,))
    assert (
        plan_endorsements(
            Platform.SEV_SNP, vector.report, other, config=CONFIG, now=SNP_TIME
        ).requests
        == ()
    )


def test_amd_crl_only_when_asked_and_from_the_given_vceks_line() -> None:
    vector = snp("milan-trustee")
    crl = FetchConfig(kds_url=KDS, amd_crl=True)
    given = Endorsements(certs=(vector.vcek,))
    plan = plan_endorsements(Platform.SEV_SNP, vector.report, given, config=crl, now=SNP_TIME)
    (request,) = plan.requests
    assert request.url == f"{KDS}/vcek/v1/Milan/crl"
    assert (request.kind, request.crl_issuer) == (DocumentKind.AMD_CRL, "ARK-Milan")
    # The VCEK's productName names the line of a version 2 report.
    genoa = Endorsements(certs=(snp("genoa-oak").vcek,))
    plan = plan_endorsements(Platform.SEV_SNP, vector.report, genoa, config=crl, now=SNP_TIME)
    assert plan.requests[0].url == f"{KDS}/vcek/v1/Genoa/crl"


def test_a_vlek_cannot_be_fetched() -> None:
    report = read("sev-snp/milan-vlek-aws/report.bin")
    with pytest.raises(EndorsementUnavailableError, match=r"VLEK .*does not serve.*--cert"):
        plan_endorsements(Platform.SEV_SNP, report, NO_THING, config=CONFIG, now=SNP_TIME)
    # With the VLEK given, nothing is missing.
    given = Endorsements(certs=(read("sev-snp/milan-vlek-aws/vlek.der"),))
    assert (
        plan_endorsements(Platform.SEV_SNP, report, given, config=CONFIG, now=SNP_TIME).requests
        == ()
    )


def test_a_masked_chip_id_cannot_name_a_vcek() -> None:
    report = bytearray(snp("milan-trustee").report)
    report[0x1A0:0x1E0] = bytes(64)
    with pytest.raises(EndorsementUnavailableError, match="CHIP_ID is zero"):
        plan_endorsements(Platform.SEV_SNP, bytes(report), NO_THING, config=CONFIG, now=SNP_TIME)


def test_an_unknown_cpuid_needs_a_hint() -> None:
    report = bytearray(snp("genoa-oak").report)
    report[0x188] = 0x17  # a Zen 2 family: no SNP product line
    with pytest.raises(EndorsementUnavailableError, match="--kds-product"):
        plan_endorsements(Platform.SEV_SNP, bytes(report), NO_THING, config=CONFIG, now=SNP_TIME)
    hinted = FetchConfig(kds_url=KDS, kds_product=ProductFamily.GENOA)
    plan = plan_endorsements(Platform.SEV_SNP, bytes(report), NO_THING, config=hinted, now=SNP_TIME)
    assert "/vcek/v1/Genoa/" in plan.requests[0].url


@pytest.mark.parametrize(
    ("platform", "evidence"),
    [
        (Platform.SEV_SNP, b"not a report"),
        (Platform.SEV_SNP, bytes(1184)),
        (Platform.TDX, b"\x04\x00" + bytes(100)),
        (Platform.SGX, read("tdx/oak-v4/quote.bin")),  # a TDX quote given as SGX
        (Platform.NITRO, read("nitro/blocky-prod-2024/attestation.cbor")),
        (Platform.NIL, b"anything"),
        (Platform.CCA, b"anything"),
    ],
)
def test_evidence_the_verifier_will_refuse_needs_nothing(
    platform: Platform, evidence: bytes
) -> None:
    assert (
        plan_endorsements(platform, evidence, NO_THING, config=CONFIG, now=SNP_TIME).requests == ()
    )


# -- Intel -----------------------------------------------------------------------------------

SGX_TIME = datetime(2025, 9, 1, tzinfo=UTC)
SGX_COLLATERAL = "sgx/collateral-00606a000000-2025-08"


def _sgx_full() -> Endorsements:
    return Endorsements(
        certs=(
            read("sgx/roots/intel-tcb-signing-chain-2025.pem"),
            read("sgx/roots/intel-pck-platform-ca-chain.pem"),
        ),
        collateral=(
            read(f"{SGX_COLLATERAL}/tcbinfo.json"),
            read(f"{SGX_COLLATERAL}/qe-identity.json"),
            read(f"{SGX_COLLATERAL}/pck-crl-platform.der"),
            read("sgx/roots/intel-root-ca-crl-2025-03-20.der"),
        ),
    )


def test_intel_urls_from_the_pck_certificate_in_the_quote() -> None:
    quote = read("sgx/occlum-trustee/quote.bin")
    plan = plan_endorsements(Platform.SGX, quote, NO_THING, config=CONFIG, now=SGX_TIME)
    urls = [r.url for r in plan.requests]
    assert urls == [
        f"{PCS}/sgx/certification/v4/tcb?fmspc=00606A000000",
        f"{PCS}/sgx/certification/v4/qe/identity",
        f"{PCS}/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
        f"{PCS}/sgx/certification/v4/rootcacrl",  # a PCCS serves the root CA CRL itself
    ]
    tcb, qe, pck_crl, root_crl = plan.requests
    assert (tcb.fmspc, tcb.identity, tcb.issuer_chain_header) == (
        bytes.fromhex("00606a000000"),
        "SGX",
        "TCB-Info-Issuer-Chain",
    )
    assert tcb.max_bytes == MAX_JSON_DOCUMENT_BYTES
    assert (qe.identity, qe.issuer_chain_header) == ("QE", "SGX-Enclave-Identity-Issuer-Chain")
    assert pck_crl.crl_issuer == "Intel SGX PCK Platform CA"
    assert root_crl.crl_issuer == "Intel SGX Root CA"
    assert all(r.send_api_key for r in plan.requests)


def test_tdx_paths_and_intels_own_root_crl() -> None:
    quote = read("tdx/oak-v4/quote.bin")
    plan = plan_endorsements(Platform.TDX, quote, NO_THING, config=FetchConfig(), now=SGX_TIME)
    pcs = "https://api.trustedservices.intel.com"
    assert [r.url for r in plan.requests] == [
        f"{pcs}/tdx/certification/v4/tcb?fmspc=00806F050000",
        f"{pcs}/tdx/certification/v4/qe/identity",
        f"{pcs}/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
        INTEL_ROOT_CA_CRL_URL,
    ]
    assert plan.requests[1].identity == "TD_QE"
    # The API key goes to Intel PCS only, not to the certificates host.
    assert [r.send_api_key for r in plan.requests] == [True, True, True, False]


def test_intel_collateral_given_and_fresh_needs_nothing() -> None:
    quote = read("sgx/occlum-trustee/quote.bin")
    assert (
        plan_endorsements(Platform.SGX, quote, _sgx_full(), config=CONFIG, now=SGX_TIME).requests
        == ()
    )


def test_stale_intel_collateral_counts_as_missing() -> None:
    quote = read("sgx/occlum-trustee/quote.bin")
    # TCB info, QE identity and the PCK CRL expire mid-September 2025; the root CRL in April 2026.
    later = datetime(2025, 10, 1, tzinfo=UTC)
    plan = plan_endorsements(Platform.SGX, quote, _sgx_full(), config=CONFIG, now=later)
    assert [r.kind for r in plan.requests] == [
        DocumentKind.TCB_INFO,
        DocumentKind.QE_IDENTITY,
        DocumentKind.PCK_CRL,
    ]


def test_tcb_info_without_its_signing_chain_is_fetched_for_the_chain() -> None:
    quote = read("sgx/occlum-trustee/quote.bin")
    full = _sgx_full()
    no_chain = Endorsements(certs=full.certs[1:], collateral=full.collateral)
    plan = plan_endorsements(Platform.SGX, quote, no_chain, config=CONFIG, now=SGX_TIME)
    assert [r.kind for r in plan.requests] == [DocumentKind.TCB_INFO]


def test_dcap_qvl_collateral_counts() -> None:
    quote = read("tdx/dcapqvl-v4/quote.bin")
    given = Endorsements(collateral=(read("tdx/dcapqvl-v4/collateral.json"),))
    when = datetime(2025, 7, 4, tzinfo=UTC)
    assert plan_endorsements(Platform.TDX, quote, given, config=CONFIG, now=when).requests == ()


def test_unparseable_intel_collateral_is_left_to_the_verifier() -> None:
    quote = read("sgx/occlum-trustee/quote.bin")
    given = Endorsements(collateral=(b'{"tcbInfo": 1}',))
    assert plan_endorsements(Platform.SGX, quote, given, config=CONFIG, now=SGX_TIME).requests == ()


def test_now_must_carry_a_timezone() -> None:
    with pytest.raises(UsageError, match="timezone-aware"):
        plan_endorsements(
            Platform.SEV_SNP,
            snp("genoa-oak").report,
            NO_THING,
            config=CONFIG,
            now=datetime(2025, 9, 1),
        )
