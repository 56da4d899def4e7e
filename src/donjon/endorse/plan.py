"""Which endorsements a piece of evidence still needs, and where each one is served.

A pure function of the evidence bytes, the endorsements the caller already has, a
:class:`~donjon.endorse.config.FetchConfig` and ``now``: no network, no files, no clock.

Rule 1: evidence that does not parse needs nothing: the verifier runs next and explains what is
wrong with it far better than a fetch error would. Only authentic-looking requests cost a fetch.
Rule 2: what the caller gave wins. A document is planned only when nothing usable of its kind
was given (for dated documents: nothing *fresh at now*). A given certificate that is the wrong
one is the verifier's to reject, not ours to replace.
Rule 3: every URL is built from fixed paths and values parsed out of the evidence (hex, decimal
integers), so hostile evidence cannot make us ask for anything but a KDS or PCS document.

AMD KDS (AMD #57230 "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
Specification", chapter 4)::

    GET {kds}/vcek/v1/{product}/{hwid}?blSPL=BL&teeSPL=TEE&snpSPL=SNP&ucodeSPL=UCODE   (DER VCEK)
    GET {kds}/vcek/v1/Turin/{hwid:8 bytes}?fmcSPL=FMC&blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..
    GET {kds}/vcek/v1/{product}/cert_chain                                 (PEM ASK, then ARK)
    GET {kds}/vcek/v1/{product}/crl                                         (DER CRL, ARK-signed)

Intel PCS API v4 (a PCCS serves the same paths)::

    GET {pcs}/{sgx|tdx}/certification/v4/tcb?fmspc=FMSPC          TCB-Info-Issuer-Chain header
    GET {pcs}/{sgx|tdx}/certification/v4/qe/identity              SGX-Enclave-Identity-Issuer-Chain
    GET {pcs}/sgx/certification/v4/pckcrl?ca=processor|platform&encoding=der
                                                                  SGX-PCK-CRL-Issuer-Chain
    GET IntelSGXRootCA.der (Intel), or {pccs}/sgx/certification/v4/rootcacrl
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from donjon.attestation.intel.collateral import (
    MAX_COLLATERAL_ITEMS,
    Collateral,
    parse_collateral_item,
)
from donjon.attestation.intel.collateral import load_certificates as load_intel_certificates
from donjon.attestation.intel.pck import pck_extensions
from donjon.attestation.intel.quote import CERT_DATA_PCK_CERT_CHAIN, TeeType, parse_quote
from donjon.attestation.intel.verifier import embedded_root
from donjon.attestation.result import Endorsements, Platform
from donjon.attestation.snp.certs import load_certificates as load_amd_certificates
from donjon.attestation.snp.certs import load_collateral as load_amd_collateral
from donjon.attestation.snp.certs import parse_amd_extensions
from donjon.attestation.snp.hcl import is_hcl_report, parse_hcl_report
from donjon.attestation.snp.report import SigningKey, SnpReport, parse_report
from donjon.attestation.snp.tcb import ProductFamily, TcbVersion
from donjon.endorse.config import FetchConfig
from donjon.endorse.errors import EndorsementUnavailableError
from donjon.errors import ChainError, EvidenceFormatError, UsageError

MAX_DER_DOCUMENT_BYTES: Final = 64 * 1024
"""Largest certificate, certificate chain or CRL accepted (bytes): a VCEK is ~1.4 KiB, the
ASK/ARK chain ~4.5 KiB, AMD's and Intel's PCK CRLs 1-3 KiB."""

MAX_JSON_DOCUMENT_BYTES: Final = 1024 * 1024
"""Largest TCB info or QE identity accepted (bytes): real ones are 1-30 KiB."""

_TCB_SIGNING_CN = "Intel SGX TCB Signing"
_PCK_CN_PHRASE = "SGX PCK Certificate"
_TURIN_HW_ID_BYTES = 8  # Turin VCEKs carry the first 8 bytes of CHIP_ID as their hwID (KDS)
_KDS_HINT = "pass the VCEK with --cert, or point --kds-url at a reachable AMD KDS or cache"
_PCS_HINT = (
    "pass it with --collateral (TCB info, QE identity, CRLs) and --cert (issuer chains), or "
    "point --pcs-url at a reachable Intel PCS or PCCS"
)


class Service(enum.StrEnum):
    """Who serves a document."""

    KDS = "AMD KDS"
    PCS = "Intel PCS"


class DocumentKind(enum.StrEnum):
    """What a document is."""

    VCEK = "VCEK"
    AMD_CHAIN = "ASK/ARK chain"
    AMD_CRL = "AMD CRL"
    TCB_INFO = "TCB info"
    QE_IDENTITY = "QE identity"
    PCK_CRL = "PCK CA CRL"
    ROOT_CA_CRL = "Intel SGX Root CA CRL"

    @property
    def max_bytes(self) -> int:
        """The size limit of an answer of this kind (bytes)."""
        if self in (DocumentKind.TCB_INFO, DocumentKind.QE_IDENTITY):
            return MAX_JSON_DOCUMENT_BYTES
        return MAX_DER_DOCUMENT_BYTES


@dataclass(frozen=True, slots=True)
class DocumentRequest:
    """One document to obtain, and what a right answer holds.

    A wrong answer (say, the VCEK of another chip) is still handed to the verifier, which says
    precisely what is wrong with it, but it is never cached.

    Attributes:
        url: the absolute URL.
        kind: what it is.
        service: who serves it.
        what: a phrase for messages ("the VCEK of chip 3ac3fe21e13fb099… at TCB …").
        hint: what the user can do when it cannot be fetched.
        issuer_chain_header: the response header that carries the signer's chain (Intel).
        hw_id: VCEK: the hwID it must carry.
        tcb: VCEK: the TCB its SPL extensions must name.
        family: AMD documents: the product line.
        fmspc: TCB info: the FMSPC it must be for.
        identity: TCB info: ``SGX`` or ``TDX``; QE identity: ``QE`` or ``TD_QE``.
        crl_issuer: CRLs: the common name of the CA that must have issued it.
        send_api_key: whether the Intel PCS API key (if configured) goes with this request.
    """

    url: str
    kind: DocumentKind
    service: Service
    what: str
    hint: str
    issuer_chain_header: str | None = None
    hw_id: bytes | None = None
    tcb: TcbVersion | None = None
    family: ProductFamily | None = None
    fmspc: bytes | None = None
    identity: str | None = None
    crl_issuer: str | None = None
    send_api_key: bool = False

    @property
    def cache_key(self) -> str:
        """The URL's path and query: what the cache files an answer under (any host)."""
        parts = urlsplit(self.url)
        return f"{parts.path}?{parts.query}" if parts.query else parts.path

    @property
    def max_bytes(self) -> int:
        """The size limit of the answer (bytes)."""
        return self.kind.max_bytes


@dataclass(frozen=True, slots=True)
class Plan:
    """The documents to obtain for one piece of evidence, in the order they are needed."""

    requests: tuple[DocumentRequest, ...] = ()


_NOTHING: Final = Plan()

# Every request to a vendor service names that service and, unless it knows better, the same
# way around an unreachable one.
_kds_request: Final = functools.partial(DocumentRequest, service=Service.KDS, hint=_KDS_HINT)
_pcs_request: Final = functools.partial(DocumentRequest, service=Service.PCS, hint=_PCS_HINT)

MEMO_ENTRIES: Final = 256
"""Parsed items remembered per kind (count). Steward plans every request in its event loop, and
the items (a host's VCEK, its quote's PCK chain, the same TCB info) repeat from request to
request; parsing them again would cost ~0.2-2 ms each time."""

MEMO_ITEM_BYTES: Final = 64 * 1024
"""Largest item whose parse is remembered (bytes); larger ones are parsed every time, so hostile
input cannot pin more than ~16 MiB per kind."""

_V = TypeVar("_V")
_MISSING: Final = object()


def _memo(func: Callable[[bytes], _V]) -> Callable[[bytes], _V]:
    """Remember *func* (pure, of bytes) in a bounded map that forgets everything when full.

    Single dict operations are atomic under the GIL, so threads may share it; two threads may
    both compute a missing entry, which is harmless because entries are pure functions of keys.
    """
    remembered: dict[bytes, _V] = {}

    @functools.wraps(func)
    def memoized(item: bytes) -> _V:
        found = remembered.get(item, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        value = func(item)
        if len(item) <= MEMO_ITEM_BYTES:
            if len(remembered) >= MEMO_ENTRIES:
                remembered.clear()
            remembered[item] = value
        return value

    return memoized


def plan_endorsements(
    platform: Platform,
    evidence: bytes,
    endorsements: Endorsements,
    *,
    config: FetchConfig,
    now: datetime,
) -> Plan:
    """What *evidence* still needs beyond *endorsements* (see the module rules).

    Args:
        platform: the evidence format; only ``sev-snp``, ``sgx`` and ``tdx`` ever need anything.
        evidence: the evidence bytes, as the verifier will get them.
        endorsements: what the caller already has.
        config: the services' base URLs and options.
        now: the verification time; dated documents not valid then count as missing.

    Raises:
        EndorsementUnavailableError: something is missing that no service serves (a VLEK, the
            VCEK of a report whose CHIP_ID is masked, an unknown product line).
        UsageError: *now* is naive (it must carry a timezone, UTC by convention).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise UsageError("now must be a timezone-aware datetime (UTC), not a naive one")
    if platform is Platform.SEV_SNP:
        return _plan_snp(evidence, endorsements, config, now)
    if platform in (Platform.SGX, Platform.TDX):
        return _plan_dcap(platform, evidence, endorsements, config, now)
    return _NOTHING


# ------------------------------------------------------------------------------------- AMD


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class _AmdItem:
    """What one certificate or collateral item holds, as planning needs it."""

    leaves: int = 0
    leaf_families: tuple[ProductFamily, ...] = ()  # from the leaves' productName
    intermediates: int = 0
    crls: tuple[tuple[str, datetime, datetime | None], ...] = ()  # issuer CN, this/next update


def _family(leaf: x509.Certificate) -> ProductFamily | None:
    try:
        return parse_amd_extensions(leaf, what="given VCEK").product_family
    except ChainError:
        return None


def _amd_item_of(
    certs: Iterable[x509.Certificate], crls: Iterable[x509.CertificateRevocationList]
) -> _AmdItem:
    certs = tuple(certs)
    leaves = [c for c in certs if not _is_ca(c)]
    families = (_family(leaf) for leaf in leaves)
    return _AmdItem(
        leaves=len(leaves),
        leaf_families=tuple(f for f in families if f is not None),
        intermediates=sum(1 for c in certs if _is_ca(c) and c.subject != c.issuer),
        crls=tuple((_cn(c.issuer), c.last_update_utc, c.next_update_utc) for c in crls),
    )


@_memo
def _amd_cert_item(item: bytes) -> _AmdItem:
    try:
        return _amd_item_of(load_amd_certificates(item, what="certificate item"), ())
    except ChainError:
        return _AmdItem()  # the verifier will say what is wrong with it


@_memo
def _amd_collateral_item(item: bytes) -> _AmdItem:
    try:
        collateral = load_amd_collateral(item, what="collateral item")
    except ChainError:
        return _AmdItem()
    return _amd_item_of((c for c, _ in collateral.certs), (c for c, _ in collateral.crls))


@dataclass(frozen=True, slots=True)
class _AmdGiven:
    has_leaf: bool
    leaf_family: ProductFamily | None
    has_intermediate: bool
    fresh_crl_issuers: frozenset[str]


def _amd_given(endorsements: Endorsements, now: datetime) -> _AmdGiven:
    items = [_amd_cert_item(i) for i in endorsements.certs]
    items += [_amd_collateral_item(i) for i in endorsements.collateral]
    families = [f for item in items for f in item.leaf_families]
    return _AmdGiven(
        has_leaf=any(item.leaves for item in items),
        leaf_family=families[0] if families else None,
        has_intermediate=any(item.intermediates for item in items),
        fresh_crl_issuers=frozenset(
            issuer
            for item in items
            for issuer, last, next_update in item.crls
            if next_update is not None and last <= now <= next_update
        ),
    )


def _snp_report(evidence: bytes) -> SnpReport | None:
    data = evidence
    try:
        if is_hcl_report(data):
            data = parse_hcl_report(data).snp_report
        return parse_report(data)
    except EvidenceFormatError:
        return None


def _product(report: SnpReport, given: _AmdGiven, config: FetchConfig) -> tuple[ProductFamily, str]:
    """The product line to ask KDS for, and how it was chosen (for messages)."""
    if report.version >= 3 and report.cpu_family is not None:
        return report.cpu_family, "named by the report's CPUID"
    leaf_family = given.leaf_family
    if leaf_family is not None:
        return leaf_family, "named by the given VCEK"
    if config.kds_product is not None:
        return config.kds_product, "named by --kds-product"
    if report.version >= 3:
        raise EndorsementUnavailableError(
            f"the report's CPUID family/model ({report.cpuid_fam_mod_step.hex()}) names no EPYC "
            "product line AMD KDS serves; pass the VCEK with --cert, or name the line with "
            "--kds-product Milan|Genoa|Turin"
        )
    return ProductFamily.MILAN, "assumed for a version 2 report; name another with --kds-product"


def _plan_snp(
    evidence: bytes, endorsements: Endorsements, config: FetchConfig, now: datetime
) -> Plan:
    report = _snp_report(evidence)
    if report is None or report.signing_key is SigningKey.NONE or report.mask_chip_key:
        return _NOTHING  # the verifier refuses it without any certificate
    given = _amd_given(endorsements, now)
    need_vcek = not given.has_leaf
    if need_vcek and report.signing_key is SigningKey.VLEK:
        raise EndorsementUnavailableError(
            "the report is signed by a VLEK (SIGNING_KEY 1), which AMD KDS does not serve: pass "
            "the VLEK with --cert; the cloud provider supplies it (the certificate table of the "
            "extended report, or its metadata service)"
        )
    if need_vcek and report.chip_id_masked:
        raise EndorsementUnavailableError(
            "the report's CHIP_ID is zero (MASK_CHIP_ID set), so AMD KDS cannot name its VCEK: "
            "pass the VCEK with --cert, or request reports without masking the chip id"
        )
    if not need_vcek and not config.amd_crl:
        return _NOTHING
    family, chosen = _product(report, given, config)
    base = f"{config.kds_url}/vcek/v1/{family}"
    requests: list[DocumentRequest] = []
    if need_vcek:
        tcb = TcbVersion(family, report.reported_tcb)
        hw_id = (
            report.chip_id[:_TURIN_HW_ID_BYTES] if family is ProductFamily.TURIN else report.chip_id
        )
        # Decimal SPLs, two digits, in TCB_VERSION order (fmc first on Turin), as AMD's tools send.
        query = "&".join(f"{name}SPL={value:02d}" for name, value in tcb.fields().items())
        requests.append(
            _kds_request(
                url=f"{base}/{hw_id.hex()}?{query}",
                kind=DocumentKind.VCEK,
                what=f"the {family} VCEK ({chosen}) of chip {hw_id.hex()[:16]}… at TCB {tcb}",
                hw_id=hw_id,
                tcb=tcb,
                family=family,
            )
        )
        if not given.has_intermediate:
            requests.append(
                _kds_request(
                    url=f"{base}/cert_chain",
                    kind=DocumentKind.AMD_CHAIN,
                    what=f"the {family} ASK/ARK chain",
                    family=family,
                )
            )
    if config.amd_crl and f"ARK-{family}" not in given.fresh_crl_issuers:
        requests.append(
            _kds_request(
                url=f"{base}/crl",
                kind=DocumentKind.AMD_CRL,
                what=f"AMD's {family} CRL",
                hint="pass a current CRL with --collateral, or point --kds-url at a reachable "
                "AMD KDS or cache (or leave out --kds-crl)",
                family=family,
                crl_issuer=f"ARK-{family}",
            )
        )
    return Plan(tuple(requests))


# ----------------------------------------------------------------------------------- Intel


@functools.cache
def _intel_root_subject() -> x509.Name:
    return embedded_root().subject


@_memo
def _intel_cert_item(item: bytes) -> tuple[x509.Certificate, ...]:
    try:
        return load_intel_certificates(item, "certificate item")
    except EvidenceFormatError:
        return ()  # the verifier will say what is wrong with it


@_memo
def _intel_collateral_item(item: bytes) -> Collateral | None:
    try:
        return parse_collateral_item(item)
    except EvidenceFormatError:
        return None


@dataclass(frozen=True, slots=True)
class _Pck:
    """What planning needs of a PCK certificate."""

    issuer: x509.Name
    fmspc: bytes
    pce_id: bytes


def _pck_of(leaf: x509.Certificate) -> _Pck | None:
    try:
        ext = pck_extensions(leaf)
    except EvidenceFormatError:
        return None
    return _Pck(issuer=leaf.issuer, fmspc=ext.fmspc, pce_id=ext.pce_id)


@_memo
def _quote_pck(chain: bytes) -> _Pck | None:
    try:
        certs = load_intel_certificates(chain, "the quote's PCK chain", only_blocks=True)
    except EvidenceFormatError:
        return None
    return _pck_of(certs[0])


def _given_pck(given: Iterable[x509.Certificate]) -> _Pck | None:
    leaf = next((c for c in given if _PCK_CN_PHRASE in _cn(c.subject)), None)
    return None if leaf is None else _pck_of(leaf)


def _fresh(issued: datetime, next_update: datetime | None, now: datetime) -> bool:
    return next_update is not None and issued <= now < next_update


def _plan_dcap(
    platform: Platform,
    evidence: bytes,
    endorsements: Endorsements,
    config: FetchConfig,
    now: datetime,
) -> Plan:
    try:
        quote = parse_quote(evidence)
    except EvidenceFormatError:
        return _NOTHING
    tdx = quote.tee_type is TeeType.TDX
    if tdx != (platform is Platform.TDX):
        return _NOTHING  # the verifier names the mismatch
    given = [c for item in endorsements.certs for c in _intel_cert_item(item)]
    data = quote.certification_data
    if data.type == CERT_DATA_PCK_CERT_CHAIN:
        pck = _quote_pck(data.data)
    else:
        pck = _given_pck(given)
    if pck is None or len(endorsements.collateral) > MAX_COLLATERAL_ITEMS:
        return _NOTHING
    parsed = [_intel_collateral_item(item) for item in endorsements.collateral]
    collateral = Collateral()
    for item in parsed:
        if item is None:
            return _NOTHING  # the verifier will say what is wrong with it
        collateral = collateral.merged(item)
    pck_ca = _cn(pck.issuer)
    if "Platform" in pck_ca:
        ca = "platform"
    elif "Processor" in pck_ca:
        ca = "processor"
    else:
        return _NOTHING  # not an Intel PCK certificate: the verifier refuses it
    tee = "TDX" if tdx else "SGX"
    qe_id = "TD_QE" if tdx else "QE"
    base = f"{config.pcs_url}/{tee.lower()}/certification/v4"
    pool = [*given, *collateral.certificates]
    has_signer = any(_cn(c.subject) == _TCB_SIGNING_CN for c in pool)
    has_tcb_info = any(
        t.id == tee
        and t.fmspc == pck.fmspc
        and t.pce_id == pck.pce_id
        and (not tdx or t.version >= 3)
        and _fresh(t.issue_date, t.next_update, now)
        for t in collateral.tcb_infos
    )
    has_qe = any(
        q.id == qe_id and _fresh(q.issue_date, q.next_update, now) for q in collateral.qe_identities
    )
    crls = [(c.issuer, _fresh(c.last_update_utc, c.next_update_utc, now)) for c in collateral.crls]
    has_pck_crl = any(issuer == pck.issuer and fresh for issuer, fresh in crls)
    has_root_crl = any(issuer == _intel_root_subject() and fresh for issuer, fresh in crls)
    fmspc = pck.fmspc.hex().upper()
    requests: list[DocumentRequest] = []
    if not has_tcb_info or not has_signer:
        # The TCB Signing chain only comes in the TCB-Info-Issuer-Chain header: a TCB info is
        # fetched for it even when the caller gave one.
        requests.append(
            _pcs_request(
                url=f"{base}/tcb?fmspc={fmspc}",
                kind=DocumentKind.TCB_INFO,
                what=f"the {tee} TCB info for FMSPC {fmspc}",
                issuer_chain_header="TCB-Info-Issuer-Chain",
                fmspc=pck.fmspc,
                identity=tee,
                send_api_key=True,
            )
        )
    if not has_qe:
        requests.append(
            _pcs_request(
                url=f"{base}/qe/identity",
                kind=DocumentKind.QE_IDENTITY,
                what=f"the {qe_id} identity",
                issuer_chain_header="SGX-Enclave-Identity-Issuer-Chain",
                identity=qe_id,
                send_api_key=True,
            )
        )
    if not has_pck_crl:
        requests.append(
            _pcs_request(
                url=f"{config.pcs_url}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der",
                kind=DocumentKind.PCK_CRL,
                what=f"the CRL of the {pck_ca}",
                issuer_chain_header="SGX-PCK-CRL-Issuer-Chain",
                crl_issuer=pck_ca,
                send_api_key=True,
            )
        )
    if not has_root_crl:
        root_url = config.root_crl_url
        requests.append(
            _pcs_request(
                url=root_url,
                kind=DocumentKind.ROOT_CA_CRL,
                what="the CRL of the Intel SGX Root CA",
                crl_issuer=_cn(_intel_root_subject()),
                send_api_key=root_url.startswith(config.pcs_url + "/"),
            )
        )
    return Plan(tuple(requests))


__all__ = [
    "MAX_DER_DOCUMENT_BYTES",
    "MAX_JSON_DOCUMENT_BYTES",
    "DocumentKind",
    "DocumentRequest",
    "Plan",
    "Service",
    "plan_endorsements",
]
