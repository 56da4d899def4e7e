"""What a fetched (or cached) answer is: its kind checked, its validity window, whether it answers
the request. Pure: bytes in, a :class:`Document` out.

Rule 1: only an answer that parses as the kind asked for is used at all; anything else is
:class:`DocumentError` (the fetcher turns it into a one-line error naming the URL).
Rule 2: a document's own dates say how long it may be reused: a certificate (chain) until the
first ``notAfter``, a CRL until its ``nextUpdate``, TCB info and QE identity until their
``nextUpdate`` (and their signing chain's ``notAfter``). Reuse is judged at the ``now`` of each
verification (:meth:`Document.fresh_at`), never by the clock.
Rule 3: parsing here is not verifying. Signatures, chains and revocation are the verifier's, on
every use: the cache saves round trips, it is not a trust anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from donjon.attestation.intel.collateral import load_certificates as load_intel_certificates
from donjon.attestation.intel.collateral import parse_collateral_item
from donjon.attestation.snp.certs import load_certificates as load_amd_certificates
from donjon.attestation.snp.certs import load_crls, parse_amd_extensions
from donjon.endorse.plan import DocumentKind, DocumentRequest
from donjon.errors import ChainError, EvidenceFormatError


class DocumentError(ValueError):
    """An answer that is not the kind of document asked for (internal; the message says why)."""


@dataclass(frozen=True, slots=True)
class Document:
    """A usable answer to a :class:`~donjon.endorse.plan.DocumentRequest`.

    Attributes:
        request: what was asked.
        certs: items for ``Endorsements.certs`` (a VCEK, a chain, an issuer chain).
        collateral: items for ``Endorsements.collateral`` (CRLs, TCB info, QE identity).
        valid_from: when it starts to be valid.
        valid_until: when it stops being valid (reuse ends then).
        mismatch: None when it answers the request; else why not (it is not cached, and the
            verifier gets it to say precisely what is wrong).
    """

    request: DocumentRequest
    certs: tuple[bytes, ...]
    collateral: tuple[bytes, ...]
    valid_from: datetime
    valid_until: datetime
    mismatch: str | None = None

    def fresh_at(self, now: datetime) -> bool:
        """Whether the document may be reused at *now* (rule 2)."""
        return self.valid_from <= now < self.valid_until


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _window(certs: tuple[x509.Certificate, ...]) -> tuple[datetime, datetime]:
    return (
        max(c.not_valid_before_utc for c in certs),
        min(c.not_valid_after_utc for c in certs),
    )


def read_document(request: DocumentRequest, body: bytes, issuer_chain: bytes | None) -> Document:
    """Check that *body* (and the issuer chain header, for Intel) is the document asked for.

    Raises:
        DocumentError: empty, too large, or not a document of the requested kind.
    """
    if not body:
        raise DocumentError("an empty answer")
    if len(body) > request.max_bytes:
        raise DocumentError(f"{len(body)} bytes, more than the {request.max_bytes}-byte limit")
    kind = request.kind
    try:
        if kind is DocumentKind.VCEK:
            return _vcek(request, body)
        if kind is DocumentKind.AMD_CHAIN:
            return _amd_chain(request, body)
        if kind is DocumentKind.AMD_CRL:
            return _amd_crl(request, body)
        return _intel(request, body, issuer_chain)
    except (ChainError, EvidenceFormatError) as e:
        raise DocumentError(e.message) from None


def _vcek(request: DocumentRequest, body: bytes) -> Document:
    certs = load_amd_certificates(body, what="the answer")
    if len(certs) != 1:
        raise DocumentError(f"{len(certs)} certificates, expected one VCEK")
    cert = certs[0]
    ext = parse_amd_extensions(cert, what="the VCEK")
    mismatch = None
    if request.hw_id is not None and ext.hw_id != request.hw_id:
        shown = ext.hw_id.hex()[:16] if ext.hw_id is not None else "none"
        mismatch = f"its hwID is {shown}…, not {request.hw_id.hex()[:16]}…"
    elif request.tcb is not None:
        try:
            tcb = ext.tcb(request.tcb.family, what="the VCEK")
        except ChainError as e:
            mismatch = e.message
        else:
            if tcb.raw != request.tcb.raw:
                mismatch = f"it was issued for TCB {tcb}, not {request.tcb}"
    valid_from, valid_until = _window(certs)
    return Document(request, (body,), (), valid_from, valid_until, mismatch)


def _amd_chain(request: DocumentRequest, body: bytes) -> Document:
    certs = load_amd_certificates(body, what="the answer")
    names = [_cn(c.subject) for c in certs]
    mismatch = None
    if request.family is not None and f"ARK-{request.family}" not in names:
        mismatch = f"it holds {', '.join(names)}, not ARK-{request.family}"
    valid_from, valid_until = _window(certs)
    return Document(request, (body,), (), valid_from, valid_until, mismatch)


def _crl_window(crl: x509.CertificateRevocationList) -> tuple[datetime, datetime]:
    last = crl.last_update_utc
    # A CRL without nextUpdate is never current (RFC 5280 §5.1.2.5): it is used once, not kept.
    return last, crl.next_update_utc or last


def _amd_crl(request: DocumentRequest, body: bytes) -> Document:
    crls = load_crls(body, what="the answer")
    if len(crls) != 1:
        raise DocumentError(f"{len(crls)} CRLs, expected one")
    issuer = _cn(crls[0].issuer)
    mismatch = None
    if request.crl_issuer is not None and issuer != request.crl_issuer:
        mismatch = f"it is the CRL of CN={issuer}, not CN={request.crl_issuer}"
    valid_from, valid_until = _crl_window(crls[0])
    return Document(request, (), (body,), valid_from, valid_until, mismatch)


def _intel(request: DocumentRequest, body: bytes, issuer_chain: bytes | None) -> Document:
    kind = request.kind
    parsed = parse_collateral_item(body)
    chain_certs: tuple[x509.Certificate, ...] = ()
    if issuer_chain is not None:
        chain_certs = load_intel_certificates(
            issuer_chain, f"the {request.issuer_chain_header} header", only_blocks=True
        )
    elif kind in (DocumentKind.TCB_INFO, DocumentKind.QE_IDENTITY):
        raise DocumentError(f"no {request.issuer_chain_header} header (the signer's chain)")
    certs = (issuer_chain,) if issuer_chain is not None else ()
    mismatch = None
    if kind is DocumentKind.TCB_INFO:
        if len(parsed.tcb_infos) != 1:
            raise DocumentError("not an Intel PCS TCB info document")
        info = parsed.tcb_infos[0]
        if info.id != request.identity or info.fmspc != request.fmspc:
            mismatch = f"it is {info.id} TCB info for FMSPC {info.fmspc.hex().upper()}"
        valid_from, valid_until = info.issue_date, info.next_update
    elif kind is DocumentKind.QE_IDENTITY:
        if len(parsed.qe_identities) != 1:
            raise DocumentError("not an Intel PCS QE identity document")
        identity = parsed.qe_identities[0]
        if identity.id != request.identity:
            mismatch = f"it is the {identity.id} identity"
        valid_from, valid_until = identity.issue_date, identity.next_update
    else:
        if len(parsed.crls) != 1 or parsed.tcb_infos or parsed.qe_identities:
            raise DocumentError("not one CRL")
        crl = parsed.crls[0]
        issuer = _cn(crl.issuer)
        if request.crl_issuer is not None and issuer != request.crl_issuer:
            mismatch = f"it is the CRL of CN={issuer}, not CN={request.crl_issuer}"
        valid_from, valid_until = _crl_window(crl)
    if chain_certs:
        valid_until = min(valid_until, min(c.not_valid_after_utc for c in chain_certs))
    return Document(request, certs, (body,), valid_from, valid_until, mismatch)


__all__ = ["Document", "DocumentError", "read_document"]
