"""AMD VCEK/VLEK certificate extensions, and loading certificates and CRLs from bytes.

AMD's Key Distribution Service (KDS) puts the identity of the key into non-critical
extensions under AMD's arc ``1.3.6.1.4.1.3704.1`` (AMD KDS interface specification, #57230,
"VCEK Certificate Extensions"; VLEKs: AMD's VLEK certificate definition):

=====================  ============  ======================================================
OID                    name          value
=====================  ============  ======================================================
``.1.1``               structVersion INTEGER
``.1.2``               productName   IA5String: "Milan-B0", "Genoa", "Turin", ...
``.1.3.1``             blSPL         INTEGER: boot loader SPL
``.1.3.2``             teeSPL        INTEGER: PSP OS SPL
``.1.3.3``             snpSPL        INTEGER: SNP firmware SPL
``.1.3.4``-``.1.3.7``  spl_4..spl_7  INTEGER: reserved, zero
``.1.3.8``             ucodeSPL      INTEGER: microcode SPL
``.1.3.9``             fmcSPL        INTEGER: FMC SPL (Turin and later)
``.1.4``               hwID          64 bytes (8 on Turin): the CHIP_ID (VCEK only)
``.1.5``               cspID         IA5String: the cloud provider a VLEK was issued to
=====================  ============  ======================================================

KDS writes the hwID bytes directly as the extension value; some test certificates wrap them in
a DER OCTET STRING, which is accepted too.

Does: parse those extensions into :class:`AmdCertExtensions`; load DER/PEM certificates and CRLs.
Does not: decide whether a certificate is trusted (that is :mod:`donjon.attestation.snp.verifier`).
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from donjon.attestation.snp.tcb import ProductFamily, TcbVersion
from donjon.crypto.snp import der_bytes
from donjon.errors import ChainError

__all__ = [
    "AMD_ARC",
    "MAX_CERTS_PER_ITEM",
    "MAX_ENDORSEMENT_ITEM_BYTES",
    "AmdCertExtensions",
    "Collateral",
    "SnpKeyType",
    "check_certificate_fields",
    "load_certificates",
    "load_collateral",
    "load_crls",
    "parse_amd_extensions",
]

AMD_ARC = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{AMD_ARC}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{AMD_ARC}.2")
OID_HW_ID = x509.ObjectIdentifier(f"{AMD_ARC}.4")
OID_CSP_ID = x509.ObjectIdentifier(f"{AMD_ARC}.5")
_SPL_PREFIX = f"{AMD_ARC}.3."

# SPL extension number → TCB component (4-7 are reserved SPLs that must be zero).
_SPL_COMPONENTS: Mapping[int, str] = {1: "bl", 2: "tee", 3: "snp", 8: "ucode", 9: "fmc"}
_RESERVED_SPLS = frozenset({4, 5, 6, 7})
_HW_ID_SIZES = frozenset({8, 64})  # bytes: Turin's VCEK carries 8, earlier families 64

# A VCEK+ASK+ARK PEM bundle is about 6.5 KiB; 256 KiB bounds the parse of a hostile item.
MAX_ENDORSEMENT_ITEM_BYTES = 256 * 1024
# A chain is three certificates; a few more allows bundles with both VCEK and VLEK chains.
MAX_CERTS_PER_ITEM = 16
# An ARK-signed KDS CRL is under 2 KiB; 1 MiB leaves room for large revocation lists.
MAX_CRL_BYTES = 1024 * 1024

# What cryptography raises for malformed certificates and CRLs (not all are ValueErrors), and
# the warnings _warnings_as_errors() turns into errors.
_PARSE_ERRORS = (
    Warning,
    ValueError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_DER_INTEGER = 0x02
_DER_OCTET_STRING = 0x04
_DER_IA5STRING = 0x16
_SPL_MAX = 0xFF  # an SPL is one byte of TCB_VERSION


class SnpKeyType(enum.StrEnum):
    """Which kind of key signed a report: a chip's VCEK or a cloud provider's VLEK."""

    VCEK = "vcek"
    VLEK = "vlek"


def _der_value(data: bytes, tag: int, what: str) -> bytes:
    """Content of a single DER TLV of *tag* spanning all of *data* (definite length only)."""
    if len(data) < 2 or data[0] != tag:
        raise ChainError(f"{what}: expected DER tag {tag:#04x}")
    length = data[1]
    offset = 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 2 or len(data) < 2 + count:
            raise ChainError(f"{what}: bad DER length")
        length = int.from_bytes(data[2 : 2 + count], "big")
        offset += count
    if offset + length != len(data):
        raise ChainError(f"{what}: DER length {length} does not match the {len(data)}-byte value")
    return data[offset:]


def _der_uint(data: bytes, what: str) -> int:
    content = _der_value(data, _DER_INTEGER, what)
    if not content:
        raise ChainError(f"{what}: empty DER INTEGER")
    value = int.from_bytes(content, "big", signed=True)
    if value < 0:
        raise ChainError(f"{what}: negative value {value}")
    return value


def _der_ia5(data: bytes, what: str) -> str:
    content = _der_value(data, _DER_IA5STRING, what)
    try:
        return content.decode("ascii")
    except UnicodeDecodeError:
        raise ChainError(f"{what}: not an IA5 (ASCII) string") from None


def _hw_id(data: bytes, what: str) -> bytes:
    if len(data) in _HW_ID_SIZES:
        return data
    if len(data) - 2 in _HW_ID_SIZES and data[0] == _DER_OCTET_STRING:
        return _der_value(data, _DER_OCTET_STRING, what)
    raise ChainError(f"{what}: hwID is {len(data)} bytes, expected 64 (8 on Turin)")


@dataclass(frozen=True, slots=True)
class AmdCertExtensions:
    """AMD's extensions of a VCEK or VLEK certificate.

    Attributes:
        struct_version: structVersion, if present.
        product_name: productName ("Milan-B0", "Genoa", "Turin", ...), if present.
        spls: (SPL extension number, value) pairs, sorted: 1 bl, 2 tee, 3 snp, 4-7 reserved,
            8 ucode, 9 fmc.
        hw_id: hwID (VCEK), None when absent.
        csp_id: cspID (VLEK), None when absent.
    """

    struct_version: int | None
    product_name: str | None
    spls: tuple[tuple[int, int], ...]
    hw_id: bytes | None
    csp_id: str | None

    @property
    def product_family(self) -> ProductFamily | None:
        """The product line productName names, or None."""
        if self.product_name is None:
            return None
        return ProductFamily.from_product_name(self.product_name)

    def tcb(self, family: ProductFamily, *, what: str) -> TcbVersion:
        """The TCB_VERSION the certificate was issued for, in *family*'s layout.

        Raises:
            ChainError: a component the family needs is missing, a component it lacks is
                present, or a reserved SPL is not zero.
        """
        fields: dict[str, int] = {}
        for number, value in self.spls:
            if number in _RESERVED_SPLS:
                if value:
                    raise ChainError(f"{what}: reserved SPL {number} is {value}, expected 0")
                continue
            name = _SPL_COMPONENTS[number]
            if name not in family.components:
                raise ChainError(f"{what}: has a {name}SPL extension, which {family} lacks")
            fields[name] = value
        missing = [c for c in family.components if c not in fields]
        if missing:
            raise ChainError(
                f"{what}: no {', '.join(c + 'SPL' for c in missing)} extension; "
                f"a {family} VCEK/VLEK must carry every TCB component"
            )
        return TcbVersion.from_fields(family, fields)


def parse_amd_extensions(cert: x509.Certificate, *, what: str) -> AmdCertExtensions:
    """Read AMD's extensions from a VCEK or VLEK certificate.

    Raises:
        ChainError: an AMD extension is malformed or repeated, or has an unknown SPL number.
    """
    struct_version: int | None = None
    product_name: str | None = None
    hw_id: bytes | None = None
    csp_id: str | None = None
    spls: dict[int, int] = {}
    try:
        extensions = list(cert.extensions)
    except _PARSE_ERRORS as e:
        raise ChainError(f"{what}: extensions do not parse: {e}") from e
    for ext in extensions:
        dotted = ext.oid.dotted_string
        if not dotted.startswith(AMD_ARC + "."):
            continue
        value = ext.value
        if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - AMD's arc
            continue
        raw = value.value
        label = f"{what}: extension {dotted}"
        if ext.oid == OID_STRUCT_VERSION:
            struct_version = _der_uint(raw, label)
        elif ext.oid == OID_PRODUCT_NAME:
            product_name = _der_ia5(raw, label)
        elif ext.oid == OID_HW_ID:
            hw_id = _hw_id(raw, label)
        elif ext.oid == OID_CSP_ID:
            csp_id = _der_ia5(raw, label)
        elif dotted.startswith(_SPL_PREFIX):
            suffix = dotted[len(_SPL_PREFIX) :]
            number = int(suffix) if suffix.isdigit() else -1
            if number not in _SPL_COMPONENTS and number not in _RESERVED_SPLS:
                raise ChainError(f"{label}: unknown TCB component; update donjon")
            spl = _der_uint(raw, label)
            if spl > _SPL_MAX:
                raise ChainError(f"{label}: SPL {spl} does not fit in one byte")
            spls[number] = spl
    return AmdCertExtensions(
        struct_version=struct_version,
        product_name=product_name,
        spls=tuple(sorted(spls.items())),
        hw_id=hw_id,
        csp_id=csp_id,
    )


def _bounded(blob: bytes, limit: int, what: str) -> None:
    if len(blob) > limit:
        raise ChainError(f"{what}: {len(blob)} bytes, more than the {limit}-byte limit")


def _warnings_as_errors() -> None:
    # Inside catch_warnings(): cryptography's complaints about a malformed certificate (a
    # country name of the wrong length, ...) become errors, except the deprecation warning
    # that every AMD VCEK triggers with its serial number 0.
    warnings.simplefilter("error")
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)


def _touch_certificate(cert: x509.Certificate) -> None:
    # cryptography parses names, extensions and times lazily; reading them once here turns a
    # malformed field into one ChainError at load time instead of a ValueError deep inside the
    # verifier.
    _ = (cert.subject, cert.issuer, cert.serial_number, cert.signature_algorithm_oid)
    _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, list(cert.extensions))


def check_certificate_fields(cert: x509.Certificate, *, what: str) -> None:
    """Parse every field the verifier reads from a certificate object a caller built.

    Raises:
        ChainError: a malformed name, time or extension.
    """
    try:
        with warnings.catch_warnings():
            _warnings_as_errors()
            _touch_certificate(cert)
    except _PARSE_ERRORS as e:
        raise ChainError(f"{what}: malformed certificate: {e}") from e


def _touch_crl(crl: x509.CertificateRevocationList) -> None:
    _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.signature_algorithm_oid)
    for revoked in crl:
        _ = (revoked.serial_number, revoked.revocation_date_utc, list(revoked.extensions))


def load_certificates(blob: bytes, *, what: str) -> tuple[x509.Certificate, ...]:
    """Certificates from DER (one) or PEM (one or more ``CERTIFICATE`` blocks).

    AMD VCEKs carry serial number 0, which ``cryptography`` deprecates with a warning; its
    deprecation warnings are silenced while loading, and nowhere else. Every field the
    verifier reads is parsed here, so a malformed certificate fails now, with a ChainError.

    Raises:
        ChainError: too large, not a certificate, or more than ``MAX_CERTS_PER_ITEM``.
    """
    _bounded(blob, MAX_ENDORSEMENT_ITEM_BYTES, what)
    try:
        with warnings.catch_warnings():
            _warnings_as_errors()
            if b"-----BEGIN" in blob:
                certs = tuple(x509.load_pem_x509_certificates(blob))
            else:
                certs = (x509.load_der_x509_certificate(blob),)
            if len(certs) > MAX_CERTS_PER_ITEM:
                raise ChainError(
                    f"{what}: {len(certs)} certificates, more than {MAX_CERTS_PER_ITEM}"
                )
            for cert in certs:
                _touch_certificate(cert)
    except _PARSE_ERRORS as e:
        raise ChainError(
            f"{what}: not a DER or PEM X.509 certificate ({e}); pass the VCEK/VLEK from AMD KDS "
            "and, optionally, the ASK/ARK PEM bundle"
        ) from e
    return certs


def _pem_blocks(blob: bytes, label: bytes) -> list[bytes]:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    blocks = []
    for part in blob.split(begin)[1:]:
        stop = part.find(end)
        if stop < 0:
            raise ValueError(f"unterminated PEM {label.decode()} block")
        blocks.append(begin + part[: stop + len(end)] + b"\n")
    return blocks


def load_crls(blob: bytes, *, what: str) -> tuple[x509.CertificateRevocationList, ...]:
    """CRLs from DER (one) or PEM (one or more ``X509 CRL`` blocks).

    Raises:
        ChainError: too large, or not a CRL.
    """
    _bounded(blob, MAX_CRL_BYTES, what)
    try:
        with warnings.catch_warnings():
            _warnings_as_errors()
            if b"-----BEGIN" in blob:
                crls = tuple(x509.load_pem_x509_crl(b) for b in _pem_blocks(blob, b"X509 CRL"))
                if not crls:
                    raise ValueError("no X509 CRL PEM block")
            else:
                crls = (x509.load_der_x509_crl(blob),)
            for crl in crls:
                _touch_crl(crl)
        return crls
    except _PARSE_ERRORS as e:
        raise ChainError(
            f"{what}: not a DER or PEM CRL ({e}); AMD serves them at "
            "https://kdsintf.amd.com/vcek/v1/{Milan,Genoa,Turin}/crl"
        ) from e


@dataclass(frozen=True, slots=True)
class Collateral:
    """What one collateral item held: CRLs and, for convenience, certificates (ASK/ARK).

    Each entry pairs the parsed object with its DER encoding.
    """

    crls: tuple[tuple[x509.CertificateRevocationList, bytes], ...]
    certs: tuple[tuple[x509.Certificate, bytes], ...]


def load_collateral(blob: bytes, *, what: str) -> Collateral:
    """Read one collateral item: DER or PEM CRLs, or certificates passed as collateral.

    Raises:
        ChainError: neither a CRL nor a certificate.
    """
    _bounded(blob, MAX_CRL_BYTES, what)
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    certs: tuple[x509.Certificate, ...] = ()
    if b"-----BEGIN" in blob:
        if b"-----BEGIN X509 CRL-----" in blob:
            crls = load_crls(blob, what=what)
        if b"-----BEGIN CERTIFICATE-----" in blob:
            certs = load_certificates(blob, what=what)
        if not crls and not certs:
            raise ChainError(f"{what}: a PEM file with neither an X509 CRL nor a CERTIFICATE")
    else:
        try:
            crls = load_crls(blob, what=what)
        except ChainError as crl_error:
            try:
                certs = load_certificates(blob, what=what)
            except ChainError:
                raise crl_error from None
    return Collateral(
        crls=tuple((c, der_bytes(c)) for c in crls),
        certs=tuple((c, der_bytes(c)) for c in certs),
    )
