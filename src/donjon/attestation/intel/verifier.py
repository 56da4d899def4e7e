"""The Intel SGX / TDX DCAP quote verifier: evidence + collateral + ``now`` -> claims or an error.

Steps (numbers in brackets are the quote verification steps of Intel's DCAP Quote Verification
Library, ``QuoteVerifier.cpp``; layouts are from the Intel SGX ECDSA Quote Library API and the Intel
TDX DCAP Quoting Library API, Appendix A):

 1. Parse the quote by its declared lengths (v3/v4/v5, SGX/TDX 1.0/1.5) and check that its TEE type
    is this verifier's platform.
 2. Parse the collateral (any mix of formats, detected by content).
 3. PCK certificate chain: from certification data type 5 (inside type 6 for v4/v5), else from the
    endorsements; every certificate valid at ``now``; a path to the pinned Intel SGX Root CA; a
    root in the chain that is not byte-identical to the pinned one is a look-alike and is refused;
    the leaf is a PCK certificate [4.1.2.4.4].
 4. CRLs: a root CA CRL and a PCK CA CRL, each signed by its issuer and fresh at ``now``; the PCK CA
    and the PCK certificate are not revoked [4.1.2.4.6, 4.1.2.4.7].
 5. The PCK certificate's SGX extensions (FMSPC, PCE-ID, TCB).
 6. The QE report is signed by the PCK key [4.1.2.4.12], and its report data is
    SHA-256(attestation key || QE authentication data) || 32 zero bytes [4.1.2.4.13].
 7. The quote (header, v5 body descriptor and body) is signed by the attestation key [4.1.2.4.16].
 8. TCB info for the PCK's FMSPC and PCE-ID and the quote's TEE [4.1.2.4.9, 4.1.2.4.10], fresh at
    ``now`` and signed over its exact bytes by the Intel SGX TCB Signing certificate, which chains
    to the root, is valid at ``now`` and is not on the root CA CRL.
 9. QE identity for the quote's TEE (``QE`` or ``TD_QE``) [4.1.2.4.14], checked the same way; the QE
    report's MISCSELECT, ATTRIBUTES (masked), MRSIGNER and ISVPRODID match it [4.1.2.4.15].
10. TDX: MRSIGNERSEAM and SEAMATTRIBUTES match the TDX module (or the module identity of its major
    version) in the TCB info [4.1.2.4.11].
11. TCB levels: platform, TDX module and QE statuses matched and converged [4.1.2.4.17]
    (:mod:`donjon.attestation.intel.tcb`).

Outcomes. Authentic evidence comes back as ``VerifiedEvidence`` whatever its TCB status (OutOfDate,
ConfigurationNeeded, ... are for the policy to judge). Two TCB outcomes are errors, raised as
:class:`TcbLevelError` (a ``TcbStatusError``) that carries the claims: a TCB that matches no level
Intel publishes (``TCB_NOT_SUPPORTED``), and a ``Revoked`` TCB level. A revoked PCK, PCK CA or TCB
Signing certificate is a ``ChainError``. Expired, not-yet-valid or stale certificates, CRLs, TCB
info or QE identity at ``now`` raise ``FreshnessError``.

Caching. Results that depend only on bytes (parsed collateral, certificate chains whose signatures
were checked, signatures over collateral and QE reports) are kept in bounded LRU caches on the
verifier, keyed by those exact bytes. Everything that depends on ``now`` (validity periods, CRL and
collateral freshness, revocation) and the quote signature itself is checked on every call.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import (
    VerificationError as X509VerificationError,
)

from donjon.attestation.intel.collateral import (
    MAX_COLLATERAL_ITEMS,
    Collateral,
    QeIdentity,
    TcbInfo,
    TcbStatus,
    load_certificates,
    parse_collateral_item,
)
from donjon.attestation.intel.pck import PckExtensions, pck_extensions
from donjon.attestation.intel.quote import (
    CERT_DATA_PCK_CERT_CHAIN,
    EnclaveReport,
    Quote,
    TdReport,
    TeeType,
    parse_quote,
)
from donjon.attestation.intel.tcb import TCB_NOT_SUPPORTED, TcbEvaluation, evaluate_tcb
from donjon.attestation.result import Endorsements, Platform, VerifiedEvidence
from donjon.crypto.intel import (
    P256PublicKey,
    certificate_der,
    certificate_p256_key,
    certificate_sha256,
    p256_public_key,
    verify_p256,
)
from donjon.errors import (
    ChainError,
    ConfigError,
    EvidenceFormatError,
    FreshnessError,
    MeasurementError,
    TcbStatusError,
)

INTEL_SGX_ROOT_CA_SHA256 = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)
"""SHA-256 of the DER Intel SGX Root CA certificate (see ``roots/PROVENANCE.md``)."""

MAX_CHAIN_CERTIFICATES = 3  # a PCK chain is exactly: PCK certificate, PCK CA, root
MAX_ENDORSEMENT_CERTS = 32  # certificate items given with the evidence
CACHE_ENTRIES = 64  # per cache; keys are the exact bytes (items up to 1 MiB), so this bounds memory

_PCK_CN_PHRASE = "SGX PCK Certificate"  # [4.1.2.4.4] the PCK leaf's CN contains this
_TCB_SIGNING_CN = "Intel SGX TCB Signing"  # subject CN of the signer of TCB info and QE identity
_PCK_CRL_URL = "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca={ca}"
_ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
_PCS = "https://api.trustedservices.intel.com"

_K = TypeVar("_K", bound=Hashable)
_D = TypeVar("_D", TcbInfo, QeIdentity)
_V = TypeVar("_V")


class TcbLevelError(TcbStatusError):
    """Authentic evidence whose TCB matches no level Intel publishes, or whose level is Revoked.

    Attributes:
        status: ``"TCB_NOT_SUPPORTED"`` or ``"Revoked"``.
        claims: the evidence's claims (JSON-compatible), as a successful verification would give.
    """

    def __init__(self, message: str, *, status: str, claims: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.claims: Mapping[str, Any] = dict(claims)


class _Lru(Generic[_K, _V]):
    """A small thread-safe LRU map. Values must be pure functions of their keys."""

    __slots__ = ("_data", "_lock", "_max")

    def __init__(self, max_entries: int) -> None:
        self._data: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get_or_compute(self, key: _K, compute: Callable[[], _V]) -> _V:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        # Computed outside the lock: a racing duplicate computation is harmless (same value).
        value = compute()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)
        return value


@dataclass(frozen=True, slots=True)
class _Cert:
    """A certificate and the facts about it the verifier reads (computed once per DER)."""

    cert: x509.Certificate
    der: bytes
    subject: bytes  # DER of the subject name
    issuer: bytes  # DER of the issuer name
    cn: str
    serial: int
    not_before: datetime
    not_after: datetime

    @classmethod
    def of(cls, cert: x509.Certificate) -> _Cert:
        return cls(
            cert=cert,
            der=certificate_der(cert),
            subject=cert.subject.public_bytes(),
            issuer=cert.issuer.public_bytes(),
            cn=_cn(cert.subject),
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    @property
    def self_issued(self) -> bool:
        return self.subject == self.issuer

    def valid_at(self, now: datetime) -> bool:
        return self.not_before <= now <= self.not_after

    def check_validity(self, now: datetime, what: str) -> None:
        if now < self.not_before:
            raise FreshnessError(
                f"{what} ({self.cn}) is not valid before {_iso(self.not_before)}; "
                f"verification time is {_iso(now)}"
            )
        if now > self.not_after:
            raise FreshnessError(
                f"{what} ({self.cn}) expired at {_iso(self.not_after)}; "
                f"verification time is {_iso(now)}"
            )


@dataclass(frozen=True, slots=True)
class _Crl:
    """A CRL and the facts about it the verifier reads (computed once per item)."""

    crl: x509.CertificateRevocationList
    issuer: bytes  # DER of the issuer name
    ident: bytes  # SHA-256 over the signed part and the signature: a cache key
    last_update: datetime
    next_update: datetime | None
    revoked: frozenset[int]

    @classmethod
    def of(cls, crl: x509.CertificateRevocationList) -> _Crl:
        return cls(
            crl=crl,
            issuer=crl.issuer.public_bytes(),
            ident=_sha256(crl.tbs_certlist_bytes + crl.signature),
            last_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
            revoked=frozenset(r.serial_number for r in crl),
        )

    def fresh_at(self, now: datetime) -> bool:
        return self.next_update is not None and self.last_update <= now <= self.next_update


@dataclass(frozen=True, slots=True)
class _Item:
    collateral: Collateral
    certs: tuple[_Cert, ...]
    crls: tuple[_Crl, ...]


@dataclass(frozen=True, slots=True)
class _View:
    """Everything the endorsements hold, parsed; a pure function of their bytes."""

    collateral: Collateral
    given: tuple[_Cert, ...]  # from Endorsements.certs
    pool: tuple[_Cert, ...]  # every certificate, given or in collateral, once each
    crls: tuple[_Crl, ...]


@dataclass(frozen=True, slots=True)
class _PckChain:
    leaf: _Cert
    ca: _Cert
    key: P256PublicKey
    extensions: PckExtensions


@dataclass(frozen=True, slots=True)
class _ChainShape:
    """The quote's own PCK chain, checked for shape and path (a pure function of its bytes)."""

    leaf: _Cert
    ca: _Cert | None  # None: the chain has no CA; it must come from the endorsements


def _utc(now: datetime) -> datetime:
    given: object = now  # callers outside mypy's reach may pass anything
    if not isinstance(given, datetime) or given.utcoffset() is None:
        raise FreshnessError("the verification time `now` must be a timezone-aware datetime (UTC)")
    return now.astimezone(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class DcapVerifier:
    """Verifies Intel SGX or TDX DCAP quotes against collateral at a given time.

    Implements ``donjon.attestation.result.EvidenceVerifier``. Instances are safe to share
    between threads; they only cache results that depend on bytes, never on time.

    Args:
        platform: ``Platform.SGX`` or ``Platform.TDX``; quotes of the other TEE are refused.
        root: the trust anchor, normally the Intel SGX Root CA (see :meth:`from_embedded_roots`).

    Raises:
        ConfigError: a platform other than SGX/TDX, or a root that is not a self-signed P-256 CA.
    """

    platform: Platform

    def __init__(self, *, platform: Platform, root: x509.Certificate) -> None:
        if platform not in (Platform.SGX, Platform.TDX):
            raise ConfigError(f"DcapVerifier verifies SGX or TDX quotes, not {platform!s}")
        try:
            certificate_p256_key(root, what="root")
            root.verify_directly_issued_by(root)
        except (ChainError, ValueError, TypeError, InvalidSignature) as e:
            raise ConfigError(
                "the DCAP trust anchor must be a self-signed ECDSA P-256 CA certificate "
                f"({type(e).__name__}: {e})"
            ) from None
        self.platform = platform
        self._root = _Cert.of(root)
        self._root_key = certificate_p256_key(root, what="root")
        self._tee = TeeType.SGX if platform is Platform.SGX else TeeType.TDX
        self._items: _Lru[bytes, _Item] = _Lru(CACHE_ENTRIES)
        self._cert_items: _Lru[bytes, tuple[_Cert, ...]] = _Lru(CACHE_ENTRIES)
        self._views: _Lru[tuple[tuple[bytes, ...], tuple[bytes, ...]], _View] = _Lru(CACHE_ENTRIES)
        self._chains: _Lru[bytes, _ChainShape] = _Lru(CACHE_ENTRIES)
        self._paths: _Lru[tuple[bytes, ...], bool] = _Lru(CACHE_ENTRIES)
        self._pck_info: _Lru[bytes, tuple[P256PublicKey, PckExtensions]] = _Lru(CACHE_ENTRIES)
        self._keys: _Lru[bytes, P256PublicKey] = _Lru(CACHE_ENTRIES)
        self._signatures: _Lru[tuple[bytes, bytes, bytes], bool] = _Lru(4 * CACHE_ENTRIES)

    @classmethod
    def from_embedded_roots(cls, *, platform: Platform) -> DcapVerifier:
        """A verifier that trusts the Intel SGX Root CA shipped with donjon.

        Raises:
            ConfigError: the embedded root is missing or not the pinned certificate.
        """
        return cls(platform=platform, root=embedded_root())

    # ------------------------------------------------------------------------------ verify

    def verify(
        self, evidence: bytes, *, endorsements: Endorsements, now: datetime
    ) -> VerifiedEvidence:
        """Verify a DCAP quote with its collateral at time *now*.

        Args:
            evidence: the raw quote (trailing padding allowed).
            endorsements: ``collateral`` holds TCB info, QE identity, CRLs and issuer chains in any
                accepted format; ``certs`` may hold the PCK chain (if the quote lacks one) and the
                TCB Signing certificate.
            now: the verification time (timezone-aware).

        Returns:
            The verified evidence; its ``tcb_status`` is Intel's converged status.

        Raises:
            EvidenceFormatError: a malformed quote or collateral, a quote of the other TEE, or
                missing collateral.
            ChainError: a chain that does not reach the pinned root, a look-alike root, a bad or
                missing CRL signature, or a revoked certificate.
            SignatureError: a quote, QE report, TCB info or QE identity signature that fails.
            MeasurementError: the QE report does not bind the attestation key, or the QE or TDX
                module does not match Intel's identity.
            FreshnessError: a certificate, CRL, TCB info or QE identity not valid at *now*.
            TcbLevelError: the TCB matches no published level, or it is Revoked.
        """
        now = _utc(now)
        # (1) The quote.
        quote = parse_quote(evidence)
        if quote.tee_type is not self._tee:
            raise EvidenceFormatError(
                f"this is a {quote.tee_type.name} quote but the verifier is for "
                f"{self._tee.name}; verify it with --platform {quote.tee_type.name.lower()}"
            )
        # (2) Collateral, and every certificate we were given.
        view = self._view(endorsements)

        # (3) PCK chain.
        pck = self._pck_chain(quote, view, now)
        # (4) CRLs and revocation.
        root_crl = self._fresh_crl(view, self._root, now, "the Intel SGX Root CA CRL")
        pck_crl = self._fresh_crl(view, pck.ca, now, f"the {pck.ca.cn} CRL")
        _not_revoked(root_crl, pck.ca)
        _not_revoked(pck_crl, pck.leaf)

        # (6) QE report signed by the PCK key; its report data binds the attestation key.
        self._verify_cached(
            pck.key,
            quote.qe_report_signature,
            quote.qe_report.raw,
            pck.leaf.der,
            what="QE report signature by the PCK key",
        )
        expected = _sha256(quote.attestation_key + quote.qe_auth_data) + bytes(32)
        if not hmac.compare_digest(quote.qe_report.report_data, expected):
            raise MeasurementError(
                "the QE report data is not SHA-256(attestation key || QE authentication data) "
                "followed by zeros: the attestation key is not the one the QE certified"
            )
        # (7) Quote signature, always recomputed: it is what makes this evidence authentic.
        attestation_key = self._keys.get_or_compute(
            quote.attestation_key,
            lambda: p256_public_key(quote.attestation_key, what="attestation key"),
        )
        verify_p256(attestation_key, quote.signature, quote.signed_bytes, what="quote signature")

        # (8) TCB info, (9) QE identity, both signed by the TCB Signing certificate.
        ext = pck.extensions
        tcb_info = self._tcb_info(view.collateral, ext, now)
        qe_identity = self._qe_identity(view.collateral, now)
        signer = self._tcb_signer(view, root_crl, now)
        signer_key = self._keys.get_or_compute(
            signer.der, lambda: certificate_p256_key(signer.cert, what="TCB Signing certificate")
        )
        self._verify_cached(
            signer_key,
            tcb_info.signed.signature,
            tcb_info.signed.body,
            signer.der,
            what="TCB info signature by Intel SGX TCB Signing",
        )
        self._verify_cached(
            signer_key,
            qe_identity.signed.signature,
            qe_identity.signed.body,
            signer.der,
            what="QE identity signature by Intel SGX TCB Signing",
        )
        _match_qe_identity(quote.qe_report, qe_identity)

        # (10) TDX module identity.
        body = quote.body
        if isinstance(body, TdReport):
            _match_tdx_module(body, tcb_info)
        # (11) TCB levels.
        evaluation = evaluate_tcb(
            tcb_info=tcb_info,
            pck=ext.tcb,
            qe_identity=qe_identity,
            qe_isv_svn=quote.qe_report.isv_svn,
            tee_tcb_svn=body.tee_tcb_svn if isinstance(body, TdReport) else None,
            tee_tcb_svn2=body.tee_tcb_svn2 if isinstance(body, TdReport) else None,
        )
        expiry = min(
            tcb_info.next_update,
            qe_identity.next_update,
            *(c.next_update for c in (root_crl, pck_crl) if c.next_update is not None),
            pck.leaf.not_after,
            pck.ca.not_after,
            signer.not_after,
        )
        claims = _claims(quote, pck, tcb_info, qe_identity, evaluation, expiry)
        if evaluation.status is None:
            raise TcbLevelError(
                f"TCB not supported: {evaluation.reason}. The evidence is authentic, but Intel "
                "publishes no TCB level for this platform state; update the platform (microcode, "
                "BIOS, TDX module) or fetch newer TCB info",
                status=TCB_NOT_SUPPORTED,
                claims=claims,
            )
        if evaluation.status is TcbStatus.REVOKED:
            raise TcbLevelError(
                "TCB status Revoked: Intel has revoked this platform's TCB level "
                f"(advisories {', '.join(evaluation.advisory_ids) or 'none listed'}); its keys "
                "cannot be trusted",
                status=str(TcbStatus.REVOKED),
                claims=claims,
            )
        return VerifiedEvidence(
            platform=self.platform,
            measurement=body.mr_enclave if isinstance(body, EnclaveReport) else body.mr_td,
            report_data=body.report_data,
            debug=body.debug,
            tcb_status=str(evaluation.status),
            advisory_ids=evaluation.advisory_ids,
            claims=claims,
        )

    # ------------------------------------------------------------------------------ helpers

    def _view(self, endorsements: Endorsements) -> _View:
        # Copies as tuples: hashable cache keys, whatever sequence the caller built.
        items = tuple(endorsements.collateral)
        certs = tuple(endorsements.certs)
        if len(items) > MAX_COLLATERAL_ITEMS:
            raise EvidenceFormatError(f"more than {MAX_COLLATERAL_ITEMS} collateral items")
        if len(certs) > MAX_ENDORSEMENT_CERTS:
            raise EvidenceFormatError(f"more than {MAX_ENDORSEMENT_CERTS} certificate items")
        for kind, group in (("collateral", items), ("certificate", certs)):
            for i, item in enumerate(group):
                if not isinstance(item, bytes):
                    raise EvidenceFormatError(f"{kind} item {i} is not bytes")
        return self._views.get_or_compute((items, certs), partial(self._build_view, items, certs))

    def _build_view(self, items: tuple[bytes, ...], certs: tuple[bytes, ...]) -> _View:
        collateral = Collateral()
        pool: dict[bytes, _Cert] = {}
        crls: dict[bytes, _Crl] = {}
        for i, data in enumerate(items):
            item = self._items.get_or_compute(data, partial(_parse_item, data, i))
            collateral = collateral.merged(item.collateral)
            pool.update((c.der, c) for c in item.certs)
            crls.update((c.ident, c) for c in item.crls)
        given: list[_Cert] = []
        for i, data in enumerate(certs):
            found = self._cert_items.get_or_compute(data, partial(_parse_certs, data, i))
            given.extend(found)
            pool.update((c.der, c) for c in found)
        return _View(
            collateral=collateral,
            given=tuple(given),
            pool=tuple(pool.values()),
            crls=tuple(crls.values()),
        )

    def _pck_chain(self, quote: Quote, view: _View, now: datetime) -> _PckChain:
        data = quote.certification_data
        if data.type == CERT_DATA_PCK_CERT_CHAIN:
            shape = self._chains.get_or_compute(data.data, partial(self._chain_shape, data.data))
        else:
            leaves = [c for c in view.given if _PCK_CN_PHRASE in c.cn]
            if not leaves:
                raise EvidenceFormatError(
                    f"the quote carries certification data type {data.type}, not a PCK chain; "
                    f"pass the platform's PCK certificate chain as a certificate (from {_PCS}"
                    "/sgx/certification/v4/pckcert)"
                )
            shape = _ChainShape(leaf=leaves[0], ca=None)
        leaf = shape.leaf
        ca = shape.ca
        if ca is None:
            found = [c for c in view.pool if c.subject == leaf.issuer and not c.self_issued]
            if not found:
                raise ChainError(
                    f"no issuer ({_cn(leaf.cert.issuer)}) for the PCK certificate; pass the PCK "
                    "CA certificate chain"
                )
            ca = next((c for c in found if c.valid_at(now)), found[0])
            self._validate_path(leaf, ca, "PCK certificate")
        leaf.check_validity(now, "the PCK certificate")
        ca.check_validity(now, "the PCK CA")
        self._root.check_validity(now, "the Intel SGX Root CA")
        key, extensions = self._pck_info.get_or_compute(
            leaf.der,
            lambda: (
                certificate_p256_key(leaf.cert, what="PCK certificate"),
                pck_extensions(leaf.cert),
            ),
        )
        return _PckChain(leaf=leaf, ca=ca, key=key, extensions=extensions)

    def _chain_shape(self, data: bytes) -> _ChainShape:
        """Shape and path of the quote's PCK chain: PCK certificate, PCK CA, optional root."""
        certs = [
            _Cert.of(c) for c in load_certificates(data, "the quote's PCK chain", only_blocks=True)
        ]
        if len(certs) > MAX_CHAIN_CERTIFICATES:
            raise ChainError(
                f"the PCK chain has {len(certs)} certificates; expected the PCK certificate, "
                "the PCK CA and the Intel SGX Root CA"
            )
        leaf, rest = certs[0], certs[1:]
        if _PCK_CN_PHRASE not in leaf.cn:
            raise ChainError(
                f"the quote's leaf certificate {leaf.cn!r} is not an Intel SGX PCK certificate"
            )
        if rest and rest[-1].self_issued:
            # A root in the chain must be exactly the pinned one: a certificate with the root's
            # name and another key is a look-alike.
            if not hmac.compare_digest(rest[-1].der, self._root.der):
                raise ChainError(
                    f"the PCK chain ends in a root named {rest[-1].cn!r} that is not the pinned "
                    "Intel SGX Root CA (a look-alike with another key)"
                )
            rest = rest[:-1]
        if len(rest) > 1:
            raise ChainError(
                "the PCK chain has more than one CA between the PCK certificate and the root"
            )
        if not rest:
            return _ChainShape(leaf=leaf, ca=None)
        self._validate_path(leaf, rest[0], "PCK certificate")
        return _ChainShape(leaf=leaf, ca=rest[0])

    def _validate_path(self, leaf: _Cert, ca: _Cert | None, what: str) -> None:
        """A path from *leaf* (through *ca*) to the pinned root, by cryptography's verifier.

        The result is cached by the certificates' bytes: the path is checked at the latest
        notBefore of its certificates, and validity at ``now`` is checked on every call.
        """
        chain = (leaf, ca) if ca is not None else (leaf,)
        if ca is not None and ca.subject != leaf.issuer:
            raise ChainError(
                f"{ca.cn!r} did not issue the {what} (issuer {_cn(leaf.cert.issuer)!r})"
            )

        def validate() -> bool:
            # Intel's end-entity certificates (PCK, TCB Signing) carry no EKU or SAN, so the
            # end-entity extension policy is relaxed; CA certificates keep the Web PKI rules.
            verifier = (
                PolicyBuilder()
                .store(Store([self._root.cert]))
                .time(max(c.not_before for c in chain))
                .max_chain_depth(MAX_CHAIN_CERTIFICATES)
                .extension_policies(
                    ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                    ee_policy=ExtensionPolicy.permit_all(),
                )
                .build_client_verifier()
            )
            try:
                verifier.verify(leaf.cert, [c.cert for c in chain[1:]])
            except X509VerificationError as e:
                raise ChainError(
                    f"the {what} does not chain to the pinned Intel SGX Root CA: {e}"
                ) from None
            return True

        self._paths.get_or_compute(tuple(c.der for c in chain), validate)

    def _fresh_crl(self, view: _View, issuer: _Cert, now: datetime, what: str) -> _Crl:
        candidates = [c for c in view.crls if c.issuer == issuer.subject]
        if not candidates:
            if issuer is self._root:
                url = _ROOT_CRL_URL
            else:
                ca = "platform" if "Platform" in issuer.cn else "processor"
                url = _PCK_CRL_URL.format(ca=ca)
            raise EvidenceFormatError(f"{what} is missing from the collateral; fetch it from {url}")
        issuer_key = self._keys.get_or_compute(
            issuer.der, lambda: certificate_p256_key(issuer.cert, what=issuer.cn)
        )

        def signature_ok(crl: _Crl) -> bool:
            return self._signatures.get_or_compute(
                (crl.ident, b"crl", issuer.der), lambda: crl.crl.is_signature_valid(issuer_key)
            )

        signed = [c for c in candidates if signature_ok(c)]
        if not signed:
            raise ChainError(f"{what}: its signature does not verify with the issuer's key")
        fresh = [c for c in signed if c.fresh_at(now)]
        if not fresh:
            latest = max(signed, key=lambda c: c.last_update)
            until = _iso(latest.next_update) if latest.next_update else "(no nextUpdate)"
            raise FreshnessError(
                f"{what} is not fresh at {_iso(now)}: the newest one given is valid from "
                f"{_iso(latest.last_update)} to {until}; fetch a current CRL"
            )
        return max(fresh, key=lambda c: c.last_update)

    def _verify_cached(
        self, key: P256PublicKey, signature: bytes, data: bytes, signer_der: bytes, *, what: str
    ) -> None:
        def check() -> bool:
            verify_p256(key, signature, data, what=what)
            return True

        self._signatures.get_or_compute((data, signature, signer_der), check)

    def _tcb_info(self, collateral: Collateral, ext: PckExtensions, now: datetime) -> TcbInfo:
        want = "TDX" if self._tee is TeeType.TDX else "SGX"
        candidates = [
            t
            for t in collateral.tcb_infos
            if t.fmspc == ext.fmspc
            and t.id == want
            and t.pce_id == ext.pce_id
            and (want == "SGX" or t.version >= 3)
        ]
        if not candidates:
            have = sorted({f"{t.id}/{t.fmspc.hex()}" for t in collateral.tcb_infos}) or ["none"]
            raise EvidenceFormatError(
                f"no {want} TCB info (v3) for FMSPC {ext.fmspc.hex()} and PCE-ID "
                f"{ext.pce_id.hex()} among the collateral (given: {', '.join(have)}); fetch it "
                f"from {_PCS}/{want.lower()}/certification/v4/tcb?fmspc={ext.fmspc.hex()}"
            )
        return _freshest(candidates, now, f"the {want} TCB info for FMSPC {ext.fmspc.hex()}")

    def _qe_identity(self, collateral: Collateral, now: datetime) -> QeIdentity:
        want = "TD_QE" if self._tee is TeeType.TDX else "QE"
        candidates = [q for q in collateral.qe_identities if q.id == want]
        if not candidates:
            have = sorted({q.id for q in collateral.qe_identities}) or ["none"]
            tee = "tdx" if want == "TD_QE" else "sgx"
            raise EvidenceFormatError(
                f"no {want} identity among the collateral (given: {', '.join(have)}); fetch it "
                f"from {_PCS}/{tee}/certification/v4/qe/identity"
            )
        return _freshest(candidates, now, f"the {want} identity")

    def _tcb_signer(self, view: _View, root_crl: _Crl, now: datetime) -> _Cert:
        signers = [c for c in view.pool if c.cn == _TCB_SIGNING_CN]
        if not signers:
            raise EvidenceFormatError(
                "no Intel SGX TCB Signing certificate among the certificates or collateral; pass "
                "the TCB info issuer chain (PCS returns it in the TCB-Info-Issuer-Chain header)"
            )
        current = [c for c in signers if c.valid_at(now)]
        if not current:
            newest = max(signers, key=lambda c: c.not_after)
            newest.check_validity(now, "the Intel SGX TCB Signing certificate")
        # Intel re-issued the TCB Signing certificate with the same key; any copy that chains to
        # the root will do, so one damaged copy among several does not block verification.
        failure: ChainError | None = None
        for signer in current:
            try:
                self._validate_path(signer, None, "TCB Signing certificate")
            except ChainError as e:
                failure = failure or e
                continue
            _not_revoked(root_crl, signer)
            return signer
        raise failure or ChainError("no valid Intel SGX TCB Signing certificate")


def _parse_item(data: bytes, index: int) -> _Item:
    collateral = parse_collateral_item(data, index=index)
    return _Item(
        collateral=collateral,
        certs=tuple(_Cert.of(c) for c in collateral.certificates),
        crls=tuple(_Crl.of(c) for c in collateral.crls),
    )


def _parse_certs(data: bytes, index: int) -> tuple[_Cert, ...]:
    return tuple(_Cert.of(c) for c in load_certificates(data, f"certificate item {index}"))


def _not_revoked(crl: _Crl, cert: _Cert) -> None:
    if cert.serial in crl.revoked:
        raise ChainError(
            f"{cert.cn} (serial {cert.serial:x}) is revoked by {_cn(crl.crl.issuer)}'s CRL"
        )


def _freshest(candidates: list[_D], now: datetime, what: str) -> _D:
    """The newest of TCB infos / QE identities that is valid at *now*."""
    fresh = [c for c in candidates if c.issue_date <= now < c.next_update]
    if not fresh:
        newest = max(candidates, key=lambda c: (c.tcb_evaluation_data_number, c.issue_date))
        if now < newest.issue_date:
            raise FreshnessError(
                f"{what} is not yet valid: issued {_iso(newest.issue_date)}, verification time "
                f"is {_iso(now)}"
            )
        raise FreshnessError(
            f"{what} is stale: its nextUpdate was {_iso(newest.next_update)}, verification time "
            f"is {_iso(now)}; fetch current collateral"
        )
    return max(fresh, key=lambda c: (c.tcb_evaluation_data_number, c.issue_date))


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))


def _match_qe_identity(report: EnclaveReport, identity: QeIdentity) -> None:
    """[4.1.2.4.15] the QE report matches Intel's identity of the quoting enclave."""
    if report.misc_select & identity.miscselect_mask != identity.miscselect:
        raise MeasurementError(
            f"QE MISCSELECT {report.misc_select:08x} does not match the {identity.id} identity"
        )
    if _masked(report.attributes, identity.attributes_mask) != identity.attributes:
        raise MeasurementError(
            f"QE ATTRIBUTES {report.attributes.hex()} do not match the {identity.id} identity"
        )
    if not hmac.compare_digest(report.mr_signer, identity.mrsigner):
        raise MeasurementError(
            f"QE MRSIGNER {report.mr_signer.hex()} is not Intel's {identity.id} signer "
            f"{identity.mrsigner.hex()}"
        )
    if report.isv_prod_id != identity.isv_prod_id:
        raise MeasurementError(
            f"QE ISVPRODID {report.isv_prod_id} is not the {identity.id} identity's "
            f"{identity.isv_prod_id}"
        )


def _match_tdx_module(body: TdReport, tcb_info: TcbInfo) -> None:
    """[4.1.2.4.11] MRSIGNERSEAM and SEAMATTRIBUTES match the TCB info's TDX module."""
    module = tcb_info.tdx_module
    if module is None:
        raise EvidenceFormatError("the TDX TCB info has no tdxModule; it is not valid TDX TCB info")
    mrsigner, attributes, mask = module.mrsigner, module.attributes, module.attributes_mask
    major = body.tee_tcb_svn[1]
    if major > 0:
        identity = next(
            (m for m in tcb_info.tdx_module_identities if m.id.upper() == f"TDX_{major:02X}"),
            None,
        )
        if identity is None:
            raise MeasurementError(
                f"the TCB info has no TDX module identity TDX_{major:02X} for this TD's TDX "
                "module; fetch current TDX TCB info"
            )
        mrsigner, attributes, mask = (
            identity.mrsigner,
            identity.attributes,
            identity.attributes_mask,
        )
    if not hmac.compare_digest(body.mr_signer_seam, mrsigner):
        raise MeasurementError(
            f"MRSIGNERSEAM {body.mr_signer_seam.hex()} is not the TDX module signer Intel publishes"
        )
    if _masked(body.seam_attributes, mask) != _masked(attributes, mask):
        raise MeasurementError(
            f"SEAMATTRIBUTES {body.seam_attributes.hex()} do not match the TDX module's"
        )


def _claims(
    quote: Quote,
    pck: _PckChain,
    tcb_info: TcbInfo,
    qe_identity: QeIdentity,
    ev: TcbEvaluation,
    expiry: datetime,
) -> dict[str, Any]:
    ext = pck.extensions
    body = quote.body
    claims: dict[str, Any] = {
        "quote_version": quote.header.version,
        "tee_type": f"0x{int(quote.tee_type):x}",
        "quote_bytes_used": quote.bytes_used,
        "report_data": body.report_data.hex(),
        "debug": body.debug,
        "fmspc": ext.fmspc.hex(),
        "pce_id": ext.pce_id.hex(),
        "sgx_type": ext.sgx_type.name.lower(),
        "pck_issuer": pck.ca.cn,
        "pck_pcesvn": ext.tcb.pce_svn,
        "pck_cpusvn": ext.tcb.cpu_svn.hex(),
        "pck_tcb_components": list(ext.tcb.sgx_components),
        "qe_isvsvn": quote.qe_report.isv_svn,
        "qe_tcb_status": str(ev.qe_level.status) if ev.qe_level else TCB_NOT_SUPPORTED,
        "platform_tcb_status": ev.platform_status,
        "tcb_status": str(ev.status) if ev.status else TCB_NOT_SUPPORTED,
        "tcb_date": _iso(ev.tcb_date) if ev.tcb_date else None,
        "advisories": list(ev.platform_level.advisory_ids) if ev.platform_level else [],
        "advisory_ids": list(ev.advisory_ids),
        "tcb_evaluation_data_number": tcb_info.tcb_evaluation_data_number,
        "tcb_info_issue_date": _iso(tcb_info.issue_date),
        "qe_identity_issue_date": _iso(qe_identity.issue_date),
        "collateral_expiry": _iso(expiry),
    }
    if isinstance(body, EnclaveReport):
        claims.update(
            {
                "measurement": body.mr_enclave.hex(),
                "mrenclave": body.mr_enclave.hex(),
                "mrsigner": body.mr_signer.hex(),
                "isvprodid": body.isv_prod_id,
                "isvsvn": body.isv_svn,
                "isv_prod_id": body.isv_prod_id,
                "isv_svn": body.isv_svn,
                "attributes": body.attributes.hex(),
                "miscselect": f"{body.misc_select:08x}",
                "cpusvn": body.cpu_svn.hex(),
                "config_id": body.config_id.hex(),
                "config_svn": body.config_svn,
                "isv_ext_prod_id": body.isv_ext_prod_id.hex(),
                "isv_family_id": body.isv_family_id.hex(),
            }
        )
    else:
        claims.update(
            {
                "measurement": body.mr_td.hex(),
                "mrtd": body.mr_td.hex(),
                "rtmr0": body.rtmrs[0].hex(),
                "rtmr1": body.rtmrs[1].hex(),
                "rtmr2": body.rtmrs[2].hex(),
                "rtmr3": body.rtmrs[3].hex(),
                "mrseam": body.mr_seam.hex(),
                "mrsignerseam": body.mr_signer_seam.hex(),
                "seam_attributes": body.seam_attributes.hex(),
                "tee_tcb_svn": body.tee_tcb_svn.hex(),
                "td_attributes": body.td_attributes.hex(),
                "sept_ve_disable": bool(body.td_attributes[3] & 0x10),
                "xfam": body.xfam.hex(),
                "mrconfigid": body.mr_config_id.hex(),
                "mrowner": body.mr_owner.hex(),
                "mrownerconfig": body.mr_owner_config.hex(),
                "tdx_module_identity": ev.tdx_module_identity,
                "tdx_module_status": (
                    str(ev.tdx_module_level.status) if ev.tdx_module_level else None
                ),
            }
        )
        if body.tee_tcb_svn2 is not None and body.mr_service_td is not None:
            claims["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
            claims["mrservicetd"] = body.mr_service_td.hex()
    return claims


def embedded_root() -> x509.Certificate:
    """The Intel SGX Root CA shipped as package data, checked against its pinned fingerprint.

    Raises:
        ConfigError: the file is missing, does not parse, or is not the pinned certificate.
    """
    try:
        pem = (
            resources.files("donjon.attestation.intel")
            .joinpath("roots/intel_sgx_root_ca.pem")
            .read_bytes()
        )
        root = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as e:
        raise ConfigError(f"the embedded Intel SGX Root CA cannot be loaded: {e}") from e
    if not hmac.compare_digest(certificate_sha256(root), INTEL_SGX_ROOT_CA_SHA256):
        raise ConfigError(
            "the embedded Intel SGX Root CA does not match its pinned SHA-256 fingerprint; the "
            "installation is corrupt or was tampered with"
        )
    return root


__all__ = [
    "CACHE_ENTRIES",
    "INTEL_SGX_ROOT_CA_SHA256",
    "DcapVerifier",
    "TcbLevelError",
    "embedded_root",
]
