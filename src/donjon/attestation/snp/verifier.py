"""The SEV-SNP evidence verifier: report, VCEK/VLEK chain to an embedded AMD root, claims.

Checks, in order (the numbers appear in the code and in ``docs/attestation/sev-snp.md``);
"ABI" is the SEV-SNP Firmware ABI Specification (AMD #56860), "KDS" the AMD Key Distribution
Service interface specification (#57230; VLEKs: AMD's VLEK certificate definition):

 1. size: exactly 1184 bytes (ABI "ATTESTATION_REPORT Structure")  → EvidenceFormatError
 2. VERSION is 2, 3 or 5                                              → EvidenceFormatError
 3. SIGNATURE_ALGO is 1, ECDSA P-384 with SHA-384                     → EvidenceFormatError
 4. VMPL is 0..3                                                      → EvidenceFormatError
 5. SIGNING_KEY (flags bits 4:2) is 0 VCEK, 1 VLEK or 7 none          → EvidenceFormatError
 6. must-be-zero bytes are zero, per version                          → EvidenceFormatError
 7. the report is signed: SIGNING_KEY ≠ 7 and MASK_CHIP_KEY = 0       → SignatureError
 8. the VCEK/VLEK chains to an embedded ARK: leaf ← ASK/ASVK ← ARK, each RSASSA-PSS SHA-384
    with a 48-byte salt (KDS "Certificate Signing"); a supplied ARK is never trusted, and a
    chain ending in a look-alike ARK (same name, other key) is named as such → ChainError
 9. the leaf is a VCEK/VLEK of that chain: P-384 key, AMD extensions well formed, productName
    of the chain's family, hwID on a VCEK, cspID on a VLEK        → ChainError
10. every certificate of the chain is valid at ``now``               → FreshnessError
11. CRLs in the collateral, when they name a CA of the chain: signed by it, current at ``now``,
    and not revoking the certificate below it → ChainError / FreshnessError
12. SIGNING_KEY agrees with the certificate type (VCEK vs VLEK)     → SnpEndorsementMismatchError
13. the CPUID family/model (report version 3+) names the chain's product family  → …Mismatch…
14. CHIP_ID == the VCEK's hwID (zero-extended; skipped for a VLEK and when CHIP_ID is masked
    to zero)                                                         → SnpEndorsementMismatchError
15. REPORTED_TCB == the TCB of the VCEK/VLEK's SPL extensions, byte for byte, in the family's
    layout (:mod:`donjon.attestation.snp.tcb`)                       → SnpEndorsementMismatchError
16. the ECDSA P-384 SHA-384 signature (R, S: 72-byte little-endian) over bytes 0x000-0x29F
    verifies with the leaf's key                                     → SignatureError
17. Azure HCL reports: REPORT_DATA == hash(runtime data), zero-padded → MeasurementError

Checks 12-15 run before the signature so that a wrong certificate is reported as such ("this
VCEK belongs to another chip") rather than as a bad signature.

Speed: chain validation (8, 9) is cached per (leaf DER, supplied intermediates); the parse of
an ``Endorsements`` value per its bytes; CRL signatures per (CRL, issuer); and the appraisal of a
report's *body* per (endorsements, body bytes). The body is every byte of the report except
REPORT_DATA (0x050-0x08F) and the signature (0x2A0-0x32F): the reports of one guest differ only
there, since REPORT_DATA carries each request's nonce. Checks 1-9 and 12-15 and the claims
other than ``report_data`` and ``crl_checked`` are pure functions of the body and the
endorsements, so a body already seen with a verified signature skips them; a body enters the
cache only after its report's signature verified. Every cached result is a pure function of its
key's bytes. On every call, whatever the cache holds: the size, the validity times (10), the
CRLs (11), the ECDSA P-384 signature over the exact 672 signed bytes (16), the HCL binding
(17), and fresh claims objects. ``benchmarks/bench_snp.py`` measures the steady state.

Does not: decide whether authentic evidence is acceptable (``debug``, minimum TCB, measurements:
that is :mod:`donjon.attestation.policy`), fetch VCEKs or CRLs, or read the clock.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.x509.oid import NameOID

from donjon.attestation.result import Endorsements, Platform, VerifiedEvidence
from donjon.attestation.snp.certs import (
    AmdCertExtensions,
    Collateral,
    SnpKeyType,
    check_certificate_fields,
    load_certificates,
    load_collateral,
    parse_amd_extensions,
)
from donjon.attestation.snp.hcl import HclReport, is_hcl_report, parse_hcl_report
from donjon.attestation.snp.report import (
    REPORT_SIZE,
    SIGNED_SIZE,
    GuestPolicy,
    PlatformInfo,
    SigningKey,
    SnpReport,
    parse_report,
)
from donjon.attestation.snp.tcb import ProductFamily, TcbVersion, tcb_fields
from donjon.crypto.snp import (
    ReportSigningKey,
    der_bytes,
    spki_sha256,
    verify_amd_certificate_signature,
    verify_amd_crl_signature,
)
from donjon.errors import (
    ChainError,
    ConfigError,
    FreshnessError,
    SignatureError,
)

__all__ = [
    "APPRAISAL_CACHE_ENTRIES",
    "CACHE_MAX_ENTRIES",
    "EMBEDDED_ROOT_FILES",
    "KDS_URL",
    "MAX_COLLATERAL_ITEMS",
    "MAX_ENDORSEMENT_ITEMS",
    "SnpEndorsementMismatchError",
    "SnpVerifier",
    "VerifiedSnpChain",
]

KDS_URL = "https://kdsintf.amd.com"
EMBEDDED_ROOT_FILES = (
    "milan-vcek-ask-ark.pem",
    "milan-vlek-ask-ark.pem",
    "genoa-vcek-ask-ark.pem",
    "genoa-vlek-ask-ark.pem",
    "turin-vcek-ask-ark.pem",
    "turin-vlek-ask-ark.pem",
)
"""Package data in ``donjon/attestation/snp/roots/``: each holds the ASK (or ASVK) then the ARK."""

# Entries per cache, and the largest inputs that are cached at all (bytes): a chain entry holds
# three parsed certificates (~5 KiB) and an endorsement entry its input bytes, so a full verifier
# holds at most ~20 MiB, however many distinct hostile inputs it is fed. Real endorsements (a
# VCEK and an ASK/ARK bundle) are under 8 KiB; larger ones are verified but not cached.
CACHE_MAX_ENTRIES = 256
APPRAISAL_CACHE_ENTRIES = 1024
"""Report bodies remembered as appraised (count): one per guest (and VMPL) in the steady state.
An entry holds the body (1 KiB) and a claims template (~6 KiB): at most ~7 MiB in all."""
_CACHEABLE_ITEM_BYTES = 16 * 1024
_CACHEABLE_ENDORSEMENTS_BYTES = 64 * 1024
# Items per Endorsements field: a VCEK, an ASK/ARK bundle and a few CRLs is the normal case.
MAX_ENDORSEMENT_ITEMS = 32
MAX_COLLATERAL_ITEMS = 32

_HW_ID_BYTES = {ProductFamily.TURIN: 8}  # bytes of hwID per family; 64 for the others
_CHIP_ID_BYTES = 64
_ZERO_CHIP_ID = bytes(_CHIP_ID_BYTES)
_ZERO_DIGEST = bytes(48)  # bytes of ID_KEY_DIGEST (SHA-384)

# The report body (see the module docstring): all but REPORT_DATA and the signature's R and S.
_REPORT_DATA = slice(0x050, 0x090)
_SIGNATURE_R = slice(SIGNED_SIZE, 0x2E8)
_SIGNATURE_S = slice(0x2E8, 0x330)
_BEFORE_REPORT_DATA = slice(0, _REPORT_DATA.start)
_AFTER_REPORT_DATA = slice(_REPORT_DATA.stop, SIGNED_SIZE)
_AFTER_SIGNATURE = slice(_SIGNATURE_S.stop, REPORT_SIZE)
# Claims whose values are mutable containers: each result gets its own copy.
_NESTED_CLAIMS = (
    "platform_info_fields",
    "reported_tcb_fields",
    "current_tcb_fields",
    "committed_tcb_fields",
    "launch_tcb_fields",
)

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class SnpEndorsementMismatchError(ChainError):
    """An AMD-issued VCEK/VLEK that is not the key of this report (checks 12-15).

    Attributes:
        field: what disagrees: ``"signing_key"``, ``"family"``, ``"chip_id"`` or
            ``"reported_tcb"``.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class _BoundedCache(Generic[_K, _V]):
    """A map that forgets everything when full: bounded memory, O(1), no lock.

    Single dict operations are atomic under the GIL, so threads may share it; two threads may
    both compute a missing entry, which is harmless because entries are pure functions of their
    keys. Verification results only, never secrets.
    """

    def __init__(self, max_entries: int) -> None:
        self._data: dict[_K, _V] = {}
        self._max = max_entries
        self.get = self._data.get

    def put(self, key: _K, value: _V) -> None:
        if len(self._data) >= self._max:
            self._data.clear()
        self._data[key] = value

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


def _common_name(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    except ValueError as e:
        raise ChainError(f"certificate {cert.subject.rfc4514_string()}: bad extensions: {e}") from e
    return bc.ca


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _utc(now: datetime) -> datetime:
    # A naive datetime is read as UTC, as cryptography's own validity properties are.
    if now.tzinfo is UTC:
        return now
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class _Cert:
    """A parsed certificate with what the hot path asks of it, computed once."""

    cert: x509.Certificate
    der: bytes
    is_ca: bool

    @classmethod
    def of(cls, cert: x509.Certificate, *, checked: bool = True) -> _Cert:
        """Wrap *cert*; ``checked=False`` means the caller built it and it is parsed here."""
        if not checked:
            check_certificate_fields(cert, what="certificate")
        return cls(cert=cert, der=der_bytes(cert), is_ca=_is_ca(cert))


@dataclass(frozen=True, slots=True)
class _CollateralItem:
    """One collateral item: CRLs (with their DER) and certificates."""

    crls: tuple[tuple[x509.CertificateRevocationList, bytes], ...]
    certs: tuple[_Cert, ...]


@dataclass(frozen=True, slots=True)
class _Resolved:
    """One Endorsements value, parsed: every certificate, and the CRLs of the collateral."""

    certs: tuple[_Cert, ...]
    crls: tuple[tuple[x509.CertificateRevocationList, bytes], ...]


@dataclass(frozen=True, slots=True)
class _Appraisal:
    """A report body that passed checks 1-9 and 12-15 under one ``Endorsements`` value.

    ``claims`` is a template: per report, ``report_data`` and ``crl_checked`` are set and the
    nested dicts copied, so no two results share a mutable object.
    """

    chain: VerifiedSnpChain
    crls: tuple[tuple[x509.CertificateRevocationList, bytes], ...]
    measurement: bytes
    debug: bool
    claims: dict[str, Any]


def _body(report: bytes) -> bytes:
    """The report without REPORT_DATA and the signature: the appraisal cache key."""
    return report[_BEFORE_REPORT_DATA] + report[_AFTER_REPORT_DATA] + report[_AFTER_SIGNATURE]


@dataclass(frozen=True, slots=True)
class _Anchor:
    """A trusted ARK, pinned by its public key."""

    cert: x509.Certificate
    family: ProductFamily
    spki_sha256: bytes


@dataclass(frozen=True, slots=True)
class _Intermediate:
    """An ASK or ASVK whose signature by a trusted ARK has been checked."""

    cert: x509.Certificate
    der: bytes
    anchor: _Anchor
    key_type: SnpKeyType


@dataclass(frozen=True, slots=True, eq=False)
class VerifiedSnpChain:
    """A VCEK/VLEK whose chain to a trusted AMD root verified (checks 8-9; 10 at each use).

    Compared by identity: the verifier hands out one object per cached chain.

    Attributes:
        leaf: the VCEK or VLEK.
        intermediate: the ASK (VCEK) or ASVK (VLEK) that signed it.
        root: the embedded ARK.
        family: the product line of the root.
        key_type: VCEK or VLEK.
        tcb: the TCB_VERSION the leaf was issued for (from its SPL extensions).
        hw_id: the VCEK's hwID (64 bytes, 8 on Turin); None for a VLEK.
        csp_id: the VLEK's cloud-provider id; None for a VCEK.
        product_name: the leaf's productName extension, if present.
        root_spki_sha256: SHA-256 of the root's SubjectPublicKeyInfo.
        report_key: the leaf's P-384 key for report signatures.
        validity: (role, subject CN, not before, not after) for leaf, intermediate and root.
        issuer_name: the leaf's issuer as ``CN=...`` (``CN=SEV-Milan``, ``CN=SEV-VLEK-Milan``).
        claims: what the chain contributes to a report's claims (``family``, ``product_name``,
            ``signing_key``, ``signing_key_issuer``, ``root_spki_sha256``, ``vlek_csp_id``).
    """

    leaf: x509.Certificate
    intermediate: x509.Certificate
    root: x509.Certificate
    family: ProductFamily
    key_type: SnpKeyType
    tcb: TcbVersion
    hw_id: bytes | None
    csp_id: str | None
    product_name: str | None
    root_spki_sha256: bytes
    report_key: ReportSigningKey
    validity: tuple[tuple[str, str, datetime, datetime], ...]
    issuer_name: str
    claims: Mapping[str, Any]

    _valid_from: datetime = field(init=False, repr=False)
    _valid_until: datetime = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Check 10 runs on every report: two comparisons on the common path, not six.
        object.__setattr__(self, "_valid_from", max(v[2] for v in self.validity))
        object.__setattr__(self, "_valid_until", min(v[3] for v in self.validity))

    @property
    def valid_from(self) -> datetime:
        """When every certificate of the chain is valid from."""
        return self._valid_from

    @property
    def valid_until(self) -> datetime:
        """When the first certificate of the chain expires."""
        return self._valid_until

    def check_validity(self, now: datetime) -> None:
        """Check 10: every certificate is valid at *now*.

        Raises:
            FreshnessError: one is expired or not yet valid; the message names it.
        """
        now = _utc(now)
        if self._valid_from <= now <= self._valid_until:
            return
        for role, name, not_before, not_after in self.validity:
            if now < not_before:
                raise FreshnessError(
                    f"the {role} certificate CN={name} is not valid before "
                    f"{not_before.isoformat()} (checked at {now.isoformat()}): check the clock "
                    "or the --at time"
                )
            if now > not_after:
                raise FreshnessError(
                    f"the {role} certificate CN={name} expired at {not_after.isoformat()} "
                    f"(checked at {now.isoformat()}): fetch a current one from AMD KDS "
                    "(a VLEK from the cloud provider)"
                )


@functools.cache
def _embedded_root_certs() -> tuple[x509.Certificate, ...]:
    folder = resources.files("donjon.attestation.snp") / "roots"
    seen: dict[bytes, x509.Certificate] = {}
    for name in EMBEDDED_ROOT_FILES:
        for cert in load_certificates((folder / name).read_bytes(), what=f"embedded {name}"):
            seen.setdefault(der_bytes(cert), cert)
    return tuple(seen.values())


class SnpVerifier:
    """Verifies SEV-SNP reports (raw or inside an Azure HCL report) against AMD's roots.

    Implements :class:`donjon.attestation.result.EvidenceVerifier`. Instances are safe to share
    between threads. They cache chain validations and the appraisal of report bodies (see the
    module docstring), never the signature, time or CRL checks of a report.

    Args:
        roots: trusted AMD certificates: self-signed ARKs (trust anchors, pinned by public key)
            and, optionally, ASKs/ASVKs signed by one of them.

    Raises:
        ConfigError: no ARK, a certificate that is not an AMD ARK/ASK/ASVK, or one whose
            signature does not verify.
    """

    platform = Platform.SEV_SNP

    def __init__(self, *, roots: Sequence[x509.Certificate]) -> None:
        anchors: dict[x509.Name, _Anchor] = {}
        pending: list[x509.Certificate] = []
        for cert in roots:
            try:
                check_certificate_fields(cert, what="trusted root")
            except ChainError as e:
                raise ConfigError(e.message) from e
            if cert.subject != cert.issuer:
                pending.append(cert)
                continue
            anchor = self._anchor(cert)
            existing = anchors.get(cert.subject)
            if existing is not None and existing.spki_sha256 != anchor.spki_sha256:
                raise ConfigError(
                    f"two trusted roots are named {cert.subject.rfc4514_string()} with "
                    "different keys; trust only AMD's ARK"
                )
            anchors[cert.subject] = anchor
        if not anchors:
            raise ConfigError("SnpVerifier needs at least one self-signed AMD ARK among its roots")
        self._anchors = anchors
        self._intermediates: dict[x509.Name, list[_Intermediate]] = {}
        for cert in pending:
            issuer = anchors.get(cert.issuer)
            if issuer is None:
                raise ConfigError(
                    f"trusted certificate {cert.subject.rfc4514_string()} is issued by "
                    f"{cert.issuer.rfc4514_string()}, which is not among the trusted ARKs"
                )
            try:
                intermediate = self._admit_intermediate(cert, issuer)
            except ChainError as e:
                raise ConfigError(f"trusted certificate rejected: {e.message}") from e
            known = self._intermediates.setdefault(cert.subject, [])
            if all(i.der != intermediate.der for i in known):
                known.append(intermediate)
        self._chains: _BoundedCache[tuple[bytes, tuple[bytes, ...]], VerifiedSnpChain]
        self._chains = _BoundedCache(CACHE_MAX_ENTRIES)
        self._cert_items: _BoundedCache[bytes, tuple[_Cert, ...]]
        self._cert_items = _BoundedCache(CACHE_MAX_ENTRIES)
        self._collateral_items: _BoundedCache[bytes, _CollateralItem]
        self._collateral_items = _BoundedCache(CACHE_MAX_ENTRIES)
        self._crl_signatures: _BoundedCache[tuple[bytes, bytes], bool]
        self._crl_signatures = _BoundedCache(CACHE_MAX_ENTRIES)
        self._endorsements: _BoundedCache[Endorsements, _Resolved]
        self._endorsements = _BoundedCache(CACHE_MAX_ENTRIES)
        self._appraisals: _BoundedCache[
            tuple[tuple[bytes, ...], tuple[bytes, ...], bytes], _Appraisal
        ]
        self._appraisals = _BoundedCache(APPRAISAL_CACHE_ENTRIES)

    def clear_caches(self) -> None:
        """Forget every cached chain validation and parse (the next calls redo them).

        Never needed for correctness: cached results are pure functions of certificate bytes,
        and times and CRLs are checked on every call.
        """
        for cache in (
            self._chains,
            self._cert_items,
            self._collateral_items,
            self._crl_signatures,
            self._endorsements,
            self._appraisals,
        ):
            cache.clear()

    @classmethod
    def from_embedded_roots(cls) -> SnpVerifier:
        """A verifier trusting AMD's ARKs (and their ASKs/ASVKs) for Milan, Genoa and Turin,
        shipped as package data (see ``roots/PROVENANCE.md``)."""
        return cls(roots=_embedded_root_certs())

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The trusted ARKs."""
        return tuple(a.cert for a in self._anchors.values())

    # -- trust set ------------------------------------------------------------------------

    @staticmethod
    def _anchor(cert: x509.Certificate) -> _Anchor:
        cn = _common_name(cert.subject) or ""
        family = (
            ProductFamily.from_product_name(cn.removeprefix("ARK-"))
            if cn.startswith("ARK-")
            else None
        )
        if family is None:
            raise ConfigError(
                f"trusted root {cert.subject.rfc4514_string()} is not an AMD ARK "
                "(CN=ARK-Milan, ARK-Genoa or ARK-Turin)"
            )
        try:
            verify_amd_certificate_signature(cert, cert, what=f"root CN={cn}")
        except (SignatureError, ChainError) as e:
            raise ConfigError(f"trusted root CN={cn} is not validly self-signed: {e}") from e
        if not _is_ca(cert):
            raise ConfigError(f"trusted root CN={cn} is not a CA certificate")
        return _Anchor(cert=cert, family=family, spki_sha256=spki_sha256(cert))

    @staticmethod
    def _admit_intermediate(cert: x509.Certificate, anchor: _Anchor) -> _Intermediate:
        """Check an ASK/ASVK against a trusted ARK (check 8, middle link)."""
        cn = _common_name(cert.subject) or ""
        family = anchor.family.value
        if cn == f"SEV-{family}":
            key_type = SnpKeyType.VCEK
        elif cn == f"SEV-VLEK-{family}":
            key_type = SnpKeyType.VLEK
        else:
            raise ChainError(
                f"certificate CN={cn} under ARK-{family} is not an AMD ASK (CN=SEV-{family}) "
                f"or ASVK (CN=SEV-VLEK-{family})"
            )
        try:
            verify_amd_certificate_signature(cert, anchor.cert, what=f"CN={cn}")
        except SignatureError as e:
            raise ChainError(
                f"the intermediate CN={cn} is not signed by the embedded AMD ARK-{family} "
                f"(RSA-PSS): a look-alike or altered certificate ({e.message})"
            ) from e
        if not _is_ca(cert):
            raise ChainError(f"the intermediate CN={cn} is not a CA certificate")
        usage = _key_usage(cert)
        if usage is not None and not usage.key_cert_sign:
            raise ChainError(f"the intermediate CN={cn} may not sign certificates (keyUsage)")
        return _Intermediate(cert=cert, der=der_bytes(cert), anchor=anchor, key_type=key_type)

    # -- chains -----------------------------------------------------------------------------

    def verify_vcek_chain(
        self,
        cert: x509.Certificate | bytes,
        *,
        now: datetime,
        intermediates: Sequence[x509.Certificate | bytes] = (),
        crls: Sequence[bytes] = (),
    ) -> VerifiedSnpChain:
        """Verify a VCEK or VLEK without a report (checks 8-11).

        Args:
            cert: the VCEK/VLEK (object, DER or PEM).
            now: the verification time (UTC; a naive datetime is read as UTC).
            intermediates: optional ASK/ASVK/ARK certificates (objects, DER, or PEM bundles);
                only ones signed by an embedded ARK are used, and a supplied ARK is never
                trusted.
            crls: optional DER/PEM CRLs (check 11).

        Raises:
            ChainError: the chain does not verify, or a CRL revokes it.
            FreshnessError: a certificate or CRL is not valid at *now*.
        """
        leaf = self._single_cert(cert, "VCEK/VLEK")
        supplied: list[_Cert] = []
        for index, item in enumerate(intermediates):
            if isinstance(item, x509.Certificate):
                supplied.append(_Cert.of(item, checked=False))
            else:
                supplied.extend(self._load_item(item, f"intermediate item {index}"))
        chain = self._chain(leaf, tuple(supplied))
        chain.check_validity(now)
        if len(crls) > MAX_COLLATERAL_ITEMS:
            raise ChainError(f"{len(crls)} CRL items, more than {MAX_COLLATERAL_ITEMS}")
        parsed = [crl for i, item in enumerate(crls) for crl in self._collateral(item, i).crls]
        self._check_crls(chain, parsed, _utc(now))
        return chain

    def _single_cert(self, cert: x509.Certificate | bytes, what: str) -> _Cert:
        if isinstance(cert, x509.Certificate):
            return _Cert.of(cert, checked=False)
        certs = self._load_item(cert, what)
        if len(certs) != 1:
            raise ChainError(f"{what}: expected one certificate, got {len(certs)}")
        return certs[0]

    def _load_item(self, item: bytes, what: str) -> tuple[_Cert, ...]:
        cached = self._cert_items.get(item)
        if cached is None:
            cached = tuple(_Cert.of(c) for c in load_certificates(item, what=what))
            if len(item) <= _CACHEABLE_ITEM_BYTES:
                self._cert_items.put(item, cached)
        return cached

    def _chain(self, leaf: _Cert, supplied: tuple[_Cert, ...]) -> VerifiedSnpChain:
        others = tuple(c for c in supplied if c.der != leaf.der)
        key = (leaf.der, tuple(c.der for c in others))
        chain = self._chains.get(key)
        if chain is None:
            chain = self._build_chain(leaf.cert, [c.cert for c in others])
            self._chains.put(key, chain)
        return chain

    def _build_chain(
        self, leaf: x509.Certificate, supplied: Sequence[x509.Certificate]
    ) -> VerifiedSnpChain:
        """Checks 8 and 9 (uncached)."""
        kind = "VLEK" if _common_name(leaf.subject) == "SEV-VLEK" else "VCEK"
        what = f"{kind} CN={_common_name(leaf.subject)}"
        if _is_ca(leaf):
            raise ChainError(f"{what} is a CA certificate, not a VCEK/VLEK")
        # Check 8: the leaf is signed by a trusted intermediate (embedded first, then supplied
        # ones that an embedded ARK signed).
        candidates = list(self._intermediates.get(leaf.issuer, ()))
        for cert in supplied:
            if cert.subject != leaf.issuer:
                continue
            if any(c.der == der_bytes(cert) for c in candidates):
                continue
            anchor = self._anchors.get(cert.issuer)
            if anchor is None:
                continue
            try:
                candidates.append(self._admit_intermediate(cert, anchor))
            except ChainError:
                continue
        for intermediate in candidates:
            try:
                verify_amd_certificate_signature(leaf, intermediate.cert, what=what)
            except SignatureError:
                continue
            return self._finish_chain(leaf, intermediate, what)
        raise self._chain_failure(leaf, supplied, what, tried=bool(candidates))

    def _chain_failure(
        self,
        leaf: x509.Certificate,
        supplied: Sequence[x509.Certificate],
        what: str,
        *,
        tried: bool,
    ) -> ChainError:
        for cert in supplied:
            anchor = self._anchors.get(cert.subject)
            if cert.subject == cert.issuer and anchor is not None:
                fingerprint = spki_sha256(cert)
                if fingerprint != anchor.spki_sha256:
                    return ChainError(
                        f"{what}: the supplied chain ends in a look-alike root "
                        f"{cert.subject.rfc4514_string()}: its key (SPKI SHA-256 "
                        f"{fingerprint.hex()}) is not AMD's ({anchor.spki_sha256.hex()}); "
                        "the certificates were not issued by AMD"
                    )
        for cert in supplied:
            anchor = self._anchors.get(cert.issuer)
            if cert.subject == leaf.issuer and anchor is not None:
                try:
                    self._admit_intermediate(cert, anchor)
                except ChainError as e:
                    return ChainError(f"{what}: {e.message}")
        if tried:
            return ChainError(
                f"{what}: its signature does not verify under AMD's CN="
                f"{_common_name(leaf.issuer)} (RSA-PSS SHA-384): the certificate was not issued "
                "by AMD or was altered"
            )
        known = ", ".join(sorted(f"CN={_common_name(n)}" for n in self._intermediates))
        return ChainError(
            f"{what}: its issuer {leaf.issuer.rfc4514_string()} is not an AMD SEV CA this "
            f"verifier trusts (trusted: {known}); pass a VCEK/VLEK issued by AMD KDS"
        )

    def _finish_chain(
        self, leaf: x509.Certificate, intermediate: _Intermediate, what: str
    ) -> VerifiedSnpChain:
        """Check 9: the leaf is a well-formed VCEK/VLEK of the chain's family."""
        family = intermediate.anchor.family
        ext: AmdCertExtensions = parse_amd_extensions(leaf, what=what)
        if ext.product_name is not None and ext.product_family is not family:
            raise ChainError(
                f"{what}: productName {ext.product_name!r} is not a {family} product, yet it "
                f"chains to ARK-{family}"
            )
        if intermediate.key_type is SnpKeyType.VCEK:
            if ext.hw_id is None:
                raise ChainError(f"{what}: a VCEK must carry a hwID extension")
            expected = _HW_ID_BYTES.get(family, _CHIP_ID_BYTES)
            if len(ext.hw_id) != expected:
                raise ChainError(
                    f"{what}: hwID is {len(ext.hw_id)} bytes, a {family} VCEK has {expected}"
                )
        elif ext.csp_id is None:
            raise ChainError(f"{what}: a VLEK must carry a cspID extension")
        tcb = ext.tcb(family, what=what)
        report_key = ReportSigningKey.from_certificate(leaf, what=what)
        root = intermediate.anchor.cert
        validity = tuple(
            (
                role,
                _common_name(cert.subject) or "?",
                cert.not_valid_before_utc,
                cert.not_valid_after_utc,
            )
            for role, cert in (
                (intermediate.key_type.value.upper(), leaf),
                ("ASVK" if intermediate.key_type is SnpKeyType.VLEK else "ASK", intermediate.cert),
                ("ARK", root),
            )
        )
        issuer_name = f"CN={_common_name(intermediate.cert.subject)}"
        claims: dict[str, Any] = {
            "family": family.value,
            "product_name": ext.product_name,
            "signing_key": intermediate.key_type.value,
            "signing_key_issuer": issuer_name,
            "root_spki_sha256": intermediate.anchor.spki_sha256.hex(),
        }
        if intermediate.key_type is SnpKeyType.VLEK:
            claims["vlek_csp_id"] = ext.csp_id
        return VerifiedSnpChain(
            leaf=leaf,
            intermediate=intermediate.cert,
            root=root,
            family=family,
            key_type=intermediate.key_type,
            tcb=tcb,
            hw_id=ext.hw_id if intermediate.key_type is SnpKeyType.VCEK else None,
            csp_id=ext.csp_id if intermediate.key_type is SnpKeyType.VLEK else None,
            product_name=ext.product_name,
            root_spki_sha256=intermediate.anchor.spki_sha256,
            report_key=report_key,
            validity=validity,
            issuer_name=issuer_name,
            claims=MappingProxyType(claims),
        )

    # -- CRLs ------------------------------------------------------------------------------

    def _collateral(self, item: bytes, index: int) -> _CollateralItem:
        cached = self._collateral_items.get(item)
        if cached is None:
            loaded: Collateral = load_collateral(item, what=f"collateral item {index}")
            cached = _CollateralItem(
                crls=loaded.crls, certs=tuple(_Cert.of(c) for c, _ in loaded.certs)
            )
            if len(item) <= _CACHEABLE_ITEM_BYTES:
                self._collateral_items.put(item, cached)
        return cached

    def _check_crls(
        self,
        chain: VerifiedSnpChain,
        crls: Sequence[tuple[x509.CertificateRevocationList, bytes]],
        now: datetime,
    ) -> bool:
        """Check 11. Returns whether at least one CRL applied to the chain."""
        checked = False
        for crl, crl_der in crls:
            if crl.issuer == chain.root.subject:
                issuer, subject, role = chain.root, chain.intermediate, chain.validity[1][0]
            elif crl.issuer == chain.intermediate.subject:
                issuer, subject, role = chain.intermediate, chain.leaf, chain.key_type.name
            else:
                continue  # a CRL of another AMD CA or product line
            name = f"the CRL of CN={_common_name(crl.issuer)}"
            usage = _key_usage(issuer)
            if usage is not None and not usage.crl_sign:
                # AMD's ARKs may sign CRLs, its ASKs may not (RFC 5280 §6.3.3).
                raise ChainError(f"{name}: CN={_common_name(issuer.subject)} may not sign CRLs")
            key = (crl_der, der_bytes(issuer))
            if self._crl_signatures.get(key) is None:
                try:
                    verify_amd_crl_signature(crl, issuer, what=name)
                except SignatureError as e:
                    raise ChainError(
                        f"{name} is not signed by CN={_common_name(issuer.subject)}, whose "
                        f"name it bears: a forged or corrupted CRL ({e.message})"
                    ) from e
                self._crl_signatures.put(key, True)
            if now < crl.last_update_utc:
                raise FreshnessError(
                    f"{name} is not valid before {crl.last_update_utc.isoformat()} "
                    f"(checked at {now.isoformat()})"
                )
            next_update = crl.next_update_utc
            if next_update is None or now > next_update:
                when = (
                    "has no nextUpdate"
                    if next_update is None
                    else f"expired at {next_update.isoformat()}"
                )
                raise FreshnessError(
                    f"{name} {when} (checked at {now.isoformat()}): fetch a current CRL "
                    f"from {KDS_URL}/vcek/v1/{chain.family}/crl"
                )
            if crl.get_revoked_certificate_by_serial_number(subject.serial_number) is not None:
                raise ChainError(
                    f"the {role} certificate CN={_common_name(subject.subject)} (serial "
                    f"{subject.serial_number}) is revoked by {name}"
                )
            checked = True
        return checked

    # -- evidence --------------------------------------------------------------------------

    def verify(
        self, evidence: bytes, *, endorsements: Endorsements, now: datetime
    ) -> VerifiedEvidence:
        """Verify an SNP report (or an Azure HCL report holding one) at time *now*.

        Args:
            evidence: a 1184-byte SNP ATTESTATION_REPORT, or an Azure HCL report (detected by
                its ``HCLA`` header).
            endorsements: ``certs`` holds the VCEK or VLEK (DER or PEM) and optionally ASK/ARK
                PEM bundles; ``collateral`` optionally holds ARK/ASK-signed CRLs (DER or PEM).
            now: the verification time (UTC; a naive datetime is read as UTC).

        Returns:
            The claims of authentic evidence; ``debug`` is the guest policy's DEBUG bit.

        Raises:
            EvidenceFormatError: checks 1-6 (and a malformed HCL report).
            SignatureError: checks 7 and 16.
            ChainError: checks 8, 9 and 11; SnpEndorsementMismatchError for 12-15.
            FreshnessError: checks 10 and 11.
            MeasurementError: check 17.
        """
        now = _utc(now)
        hcl: HclReport | None = None
        if is_hcl_report(evidence):
            hcl = parse_hcl_report(evidence)
            data = hcl.snp_report
        else:
            data = bytes(evidence)
        key: tuple[tuple[bytes, ...], tuple[bytes, ...], bytes] | None = None
        appraisal: _Appraisal | None = None
        if len(data) == REPORT_SIZE:  # check 1; any other size fails in parse_report
            # The fields, not the Endorsements value: a tuple hashes and compares in C.
            key = (endorsements.certs, endorsements.collateral, _body(data))
            try:
                appraisal = self._appraisals.get(key)
            except TypeError:  # pragma: no cover - a caller passed lists instead of tuples
                key = None
        if appraisal is None:
            appraisal, crl_checked = self._appraise(data, endorsements, now)  # checks 1-15
            remember = key is not None
        else:
            # The body passed checks 1-9 and 12-15 with these endorsements before; what depends
            # on the time is checked again.
            appraisal.chain.check_validity(now)  # check 10
            crl_checked = self._check_crls(appraisal.chain, appraisal.crls, now)  # check 11
            remember = False
        # Check 16: the report signature, over the exact signed bytes.
        appraisal.chain.report_key.verify_report(
            data[:SIGNED_SIZE], data[_SIGNATURE_R], data[_SIGNATURE_S], what="SNP report"
        )
        if remember and key is not None:
            # Only bodies of genuine reports are remembered.
            self._appraisals.put(key, appraisal)
        report_data = data[_REPORT_DATA]
        claims = appraisal.claims.copy()
        for name in _NESTED_CLAIMS:
            claims[name] = claims[name].copy()
        claims["report_data"] = report_data.hex()
        claims["crl_checked"] = crl_checked
        if hcl is not None:
            hcl.check_binding(report_data)  # check 17
            runtime = hcl.runtime_claims()
            claims["hcl_runtime_data_bound"] = True
            claims["hcl_runtime_data"] = runtime
            user_data = runtime.get("user-data")
            claims["hcl_user_data"] = user_data if isinstance(user_data, str) else None
        return VerifiedEvidence(
            platform=Platform.SEV_SNP,
            measurement=appraisal.measurement,
            report_data=report_data,
            debug=appraisal.debug,
            claims=MappingProxyType(claims),
        )

    def _appraise(
        self, data: bytes, endorsements: Endorsements, now: datetime
    ) -> tuple[_Appraisal, bool]:
        """Checks 1-15 on a report body not seen before, in the documented order.

        Returns:
            The appraisal, and whether a CRL applied (check 11).
        """
        report = parse_report(data)  # checks 1-6
        # Check 7: there is a signature to check.
        if report.signing_key is SigningKey.NONE or report.mask_chip_key:
            raise SignatureError(
                "SNP report is not signed (SIGNING_KEY = none or MASK_CHIP_KEY set): request "
                "the report without masking the chip key"
            )
        resolved = self._resolve(endorsements)
        leaf = self._select_leaf(report, resolved.certs)
        chain = self._chain(leaf, resolved.certs)  # checks 8, 9
        chain.check_validity(now)  # check 10
        crl_checked = self._check_crls(chain, resolved.crls, now)  # check 11
        _check_report_matches_chain(report, chain)  # checks 12-15
        appraisal = _Appraisal(
            chain=chain,
            crls=resolved.crls,
            measurement=report.measurement,
            debug=report.policy.debug,
            claims=_claims(report, chain, crl_checked=crl_checked),
        )
        return appraisal, crl_checked

    def _resolve(self, endorsements: Endorsements) -> _Resolved:
        # Endorsements is a frozen value of bytes tuples: the usual caller passes the same one
        # (or an equal one) for every report of a platform, so one lookup finds everything.
        try:
            resolved = self._endorsements.get(endorsements)
        except TypeError:  # pragma: no cover - a caller passed lists instead of tuples
            resolved = None
        if resolved is not None:
            return resolved
        if len(endorsements.certs) > MAX_ENDORSEMENT_ITEMS:
            raise ChainError(
                f"{len(endorsements.certs)} certificate items, more than {MAX_ENDORSEMENT_ITEMS}"
            )
        if len(endorsements.collateral) > MAX_COLLATERAL_ITEMS:
            raise ChainError(
                f"{len(endorsements.collateral)} collateral items, more than {MAX_COLLATERAL_ITEMS}"
            )
        certs: list[_Cert] = []
        crls: list[tuple[x509.CertificateRevocationList, bytes]] = []
        for index, item in enumerate(endorsements.certs):
            certs.extend(self._load_item(item, f"certificate item {index}"))
        for index, item in enumerate(endorsements.collateral):
            parsed = self._collateral(item, index)
            certs.extend(parsed.certs)
            crls.extend(parsed.crls)
        resolved = _Resolved(certs=tuple(certs), crls=tuple(crls))
        size = sum(map(len, endorsements.certs)) + sum(map(len, endorsements.collateral))
        if size <= _CACHEABLE_ENDORSEMENTS_BYTES:
            try:
                self._endorsements.put(endorsements, resolved)
            except TypeError:  # pragma: no cover - unhashable fields, see above
                pass
        return resolved

    def _select_leaf(self, report: SnpReport, supplied: Sequence[_Cert]) -> _Cert:
        leaves = [c for c in supplied if not c.is_ca]
        if not leaves:
            raise ChainError(f"no VCEK/VLEK certificate was given: {_kds_hint(report)}")
        if len(leaves) == 1:
            return leaves[0]
        # Several: prefer one whose kind and hwID fit the report; checks 12-15 explain the rest.
        want = "SEV-VLEK" if report.signing_key is SigningKey.VLEK else "SEV-VCEK"
        fitting = [c for c in leaves if _common_name(c.cert.subject) == want] or leaves
        for candidate in fitting:
            try:
                ext = parse_amd_extensions(candidate.cert, what="candidate VCEK")
            except ChainError:
                continue
            if ext.hw_id is not None and report.chip_id.startswith(ext.hw_id):
                return candidate
        return fitting[0]


def _check_report_matches_chain(report: SnpReport, chain: VerifiedSnpChain) -> None:
    """Checks 12-15: the verified certificate is the key of this report."""
    # Check 12: SIGNING_KEY vs the certificate type.
    wanted = SnpKeyType.VLEK if report.signing_key is SigningKey.VLEK else SnpKeyType.VCEK
    if wanted is not chain.key_type:
        raise SnpEndorsementMismatchError(
            f"the report says it is signed by a {wanted.value.upper()} (SIGNING_KEY "
            f"{report.signing_key.value}), but the certificate given is a "
            f"{chain.key_type.value.upper()} ({chain.issuer_name})",
            field="signing_key",
        )
    # Check 13: CPUID family/model (version 3+) vs the chain's product line.
    cpu_family = report.cpu_family
    if cpu_family is not None and cpu_family is not chain.family:
        raise SnpEndorsementMismatchError(
            f"the report comes from a {cpu_family} CPU (CPUID {report.cpuid_fam_mod_step.hex()}), "
            f"but the {chain.key_type.value.upper()} chains to ARK-{chain.family}",
            field="family",
        )
    # Check 14: CHIP_ID vs hwID.
    if chain.hw_id is not None and not report.chip_id_masked:
        if report.chip_id != chain.hw_id.ljust(_CHIP_ID_BYTES, b"\0"):
            raise SnpEndorsementMismatchError(
                f"the VCEK belongs to another chip: hwID {chain.hw_id.hex()[:16]}… is not the "
                f"report's CHIP_ID {report.chip_id.hex()[:16]}…; "
                f"{_kds_hint(report, chain.family)}",
                field="chip_id",
            )
    # Check 15: REPORTED_TCB vs the certificate's TCB, in the family's layout.
    reported = TcbVersion(chain.family, report.reported_tcb)
    if reported.raw != chain.tcb.raw:
        raise SnpEndorsementMismatchError(
            f"the {chain.key_type.value.upper()} was issued for TCB {chain.tcb}, but the report's "
            f"REPORTED_TCB is {reported}: fetch the certificate for the reported TCB "
            f"({_kds_hint(report, chain.family)})",
            field="reported_tcb",
        )


def _kds_hint(report: SnpReport, family: ProductFamily | None = None) -> str:
    if report.signing_key is SigningKey.VLEK:
        return (
            "a VLEK comes from the cloud provider (the certificate table of the extended "
            "report, or the provider's metadata service)"
        )
    family = family or report.cpu_family
    if family is None:
        return (
            f"fetch the VCEK from {KDS_URL}/vcek/v1/{{Milan|Genoa|Turin}}/"
            f"{report.chip_id.hex()}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=.. with the "
            "REPORTED_TCB's components"
        )
    tcb = TcbVersion(family, report.reported_tcb)
    hw_id = report.chip_id[: _HW_ID_BYTES.get(family, _CHIP_ID_BYTES)].hex()
    query = "&".join(f"{name}SPL={value:02d}" for name, value in tcb.fields().items())
    return f"fetch the VCEK from {KDS_URL}/vcek/v1/{family}/{hw_id}?{query}"


# Values that repeat from report to report of one platform (TCBs, policy, platform info,
# firmware versions) are decoded once: the claims are built on every verification, right after
# an ECDSA verification has evicted the interpreter's working set from the CPU caches.
_DECODE_CACHE_ENTRIES = 1024


@functools.lru_cache(maxsize=_DECODE_CACHE_ENTRIES)
def _tcb_claims(family: ProductFamily, raw: int) -> tuple[str, tuple[tuple[str, int], ...]]:
    return f"0x{raw:016x}", tuple(tcb_fields(family, raw).items())


@functools.lru_cache(maxsize=_DECODE_CACHE_ENTRIES)
def _policy_claims(raw: int) -> tuple[tuple[str, Any], ...]:
    policy = GuestPolicy(raw)
    return (
        ("policy", hex(raw)),
        ("abi_major", policy.abi_major),
        ("abi_minor", policy.abi_minor),
        *policy.flags().items(),
        ("policy_unknown_bits", hex(policy.unknown_bits)),
    )


@functools.lru_cache(maxsize=_DECODE_CACHE_ENTRIES)
def _platform_claims(raw: int) -> tuple[str, tuple[tuple[str, bool], ...]]:
    return hex(raw), tuple(PlatformInfo(raw).flags().items())


@functools.lru_cache(maxsize=_DECODE_CACHE_ENTRIES)
def _firmware_version(raw: bytes) -> str:
    return f"{raw[2]}.{raw[1]}.{raw[0]}"


def _claims(report: SnpReport, chain: VerifiedSnpChain, *, crl_checked: bool) -> dict[str, Any]:
    family = chain.family
    raw = report.raw
    reported, reported_fields = _tcb_claims(family, report.reported_tcb)
    current, current_fields = _tcb_claims(family, report.current_tcb)
    committed, committed_fields = _tcb_claims(family, report.committed_tcb)
    launch, launch_fields = _tcb_claims(family, report.launch_tcb)
    platform_info, platform_fields = _platform_claims(report.platform_info.raw)
    claims: dict[str, Any] = dict(chain.claims)
    claims["report_version"] = report.version
    claims["guest_svn"] = report.guest_svn
    claims.update(_policy_claims(report.policy.raw))
    claims.update(
        {
            "family_id": raw[0x010:0x020].hex(),
            "image_id": raw[0x020:0x030].hex(),
            "vmpl": report.vmpl,
            "signature_algo": report.signature_algo,
            "platform_info": platform_info,
            "platform_info_fields": dict(platform_fields),
            "report_flags": hex(report.flags),
            "author_key_en": report.author_key_en,
            "report_data": raw[0x050:0x090].hex(),
            "measurement": raw[0x090:0x0C0].hex(),
            "host_data": raw[0x0C0:0x0E0].hex(),
            "id_key_digest": raw[0x0E0:0x110].hex(),
            "id_key_digest_nonzero": raw[0x0E0:0x110] != _ZERO_DIGEST,
            "author_key_digest": raw[0x110:0x140].hex(),
            "report_id": raw[0x140:0x160].hex(),
            "report_id_ma": raw[0x160:0x180].hex(),
            "chip_id": raw[0x1A0:0x1E0].hex(),
            "chip_id_masked": raw[0x1A0:0x1E0] == _ZERO_CHIP_ID,
            "reported_tcb": reported,
            "reported_tcb_fields": dict(reported_fields),
            "current_tcb": current,
            "current_tcb_fields": dict(current_fields),
            "committed_tcb": committed,
            "committed_tcb_fields": dict(committed_fields),
            "launch_tcb": launch,
            "launch_tcb_fields": dict(launch_fields),
            "current_version": _firmware_version(raw[0x1E8:0x1EB]),
            "committed_version": _firmware_version(raw[0x1EC:0x1EF]),
            "cpuid_fam_mod_step": report.cpuid_fam_mod_step.hex(),
            "crl_checked": crl_checked,
        }
    )
    if report.launch_mit_vector is not None and report.current_mit_vector is not None:
        claims["launch_mit_vector"] = hex(report.launch_mit_vector)
        claims["current_mit_vector"] = hex(report.current_mit_vector)
    return claims
