"""Intel DCAP quote parser (SGX quote v3/v4/v5, TDX quote v4/v5): bytes in, frozen values out.

Layouts follow the Intel SGX ECDSA Quote Library API (Appendix A, "Quote Format", v3) and the
Intel TDX DCAP Quoting Library API (Appendix A, "Version 4 Quote Format" and "Version 5 Quote
Format"). All integers are little-endian.

Rule 1: parsing is by declared lengths. Bytes after the signed structure (several real quotes
carry zero padding or text there) are not interpreted; ``Quote.bytes_used`` says where it ended.
Rule 2: nothing here checks a signature or trusts a value. :func:`parse_quote` raises only
``EvidenceFormatError``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from donjon.errors import EvidenceFormatError

MAX_QUOTE_BYTES = 64 * 1024  # bytes. A real quote is about 5 KiB (three PEM certificates); the
# cap leaves room for padding and longer chains while bounding the work hostile input can cause.

HEADER_BYTES = 48
SGX_REPORT_BYTES = 384  # the SGX REPORTBODY, also the QE report
TD10_REPORT_BYTES = 584  # TDX 1.0 TD report body
TD15_REPORT_BYTES = 648  # TDX 1.5: TD 1.0 body + TEE_TCB_SVN2 (16) + MRSERVICETD (48)
BODY_DESCRIPTOR_BYTES = 6  # v5: body type (u16) + body size (u32)
ECDSA_SIGNATURE_BYTES = 64
ECDSA_KEY_BYTES = 64

ATTESTATION_KEY_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

CERT_DATA_PCK_CERT_CHAIN = 5  # concatenated PEM: PCK leaf, PCK CA, Root CA
CERT_DATA_QE_REPORT = 6  # QE report certification data (v4/v5), wraps types 1..5

_SGX_ATTRIBUTES_DEBUG = 0x02  # SECS.ATTRIBUTES.DEBUG, bit 1 of the flags
_TD_ATTRIBUTES_DEBUG = 0x01  # TD_ATTRIBUTES.TUD.DEBUG, bit 0


class TeeType(enum.IntEnum):
    """The header's TEE type."""

    SGX = 0x00000000
    TDX = 0x00000081


class BodyType(enum.IntEnum):
    """The kind of report the quote carries (v5 names it; v3/v4 imply it from the TEE type)."""

    SGX_ENCLAVE_REPORT = 1
    TD_REPORT_10 = 2
    TD_REPORT_15 = 3


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header.

    Attributes:
        version: 3, 4 or 5.
        attestation_key_type: 2 (ECDSA-256 with P-256) is the only one in use.
        tee_type: SGX or TDX.
        qe_svn: QE SVN as the header reports it (v3; reserved, usually 0, in v4/v5).
        pce_svn: PCE SVN as the header reports it (v3; reserved in v4/v5).
        qe_vendor_id: identifies the quoting enclave's vendor (Intel's is fixed).
        user_data: 20 bytes; Intel's QE puts the platform's QE ID in the first 16.
    """

    version: int
    attestation_key_type: int
    tee_type: TeeType
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """An SGX REPORTBODY (384 bytes): the enclave's report in an SGX quote, and the QE report.

    Attributes:
        raw: the exact 384 bytes (the QE report signature covers them).
        cpu_svn: the platform's CPUSVN as the enclave saw it.
        misc_select: MISCSELECT (u32).
        isv_ext_prod_id: ISVEXTPRODID.
        attributes: the 16-byte ATTRIBUTES (flags u64 then XFRM u64).
        mr_enclave: MRENCLAVE, the measurement of the enclave.
        mr_signer: MRSIGNER, the hash of the enclave signer's key.
        config_id: CONFIGID.
        isv_prod_id: ISVPRODID.
        isv_svn: ISVSVN.
        config_svn: CONFIGSVN.
        isv_family_id: ISVFAMILYID.
        report_data: the 64 bytes the enclave bound into the report.
    """

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        """Whether ATTRIBUTES.DEBUG is set: the host can read the enclave's memory."""
        return bool(self.attributes[0] & _SGX_ATTRIBUTES_DEBUG)


@dataclass(frozen=True, slots=True)
class TdReport:
    """A TD report body: TDX 1.0 (584 bytes) or TDX 1.5 (648 bytes).

    Attributes:
        raw: the exact body bytes.
        tee_tcb_svn: TEE_TCB_SVN (16 bytes): [0] TDX module SVN, [1] module major version, ...
        mr_seam: MRSEAM, the TDX module's measurement.
        mr_signer_seam: MRSIGNERSEAM (zero for Intel's modules).
        seam_attributes: SEAMATTRIBUTES (8 bytes).
        td_attributes: TD_ATTRIBUTES (8 bytes): bit 0 DEBUG, bit 28 SEPT_VE_DISABLE, ...
        xfam: XFAM (8 bytes).
        mr_td: MRTD, the measurement of the TD's initial contents.
        mr_config_id: MRCONFIGID.
        mr_owner: MROWNER.
        mr_owner_config: MROWNERCONFIG.
        rtmrs: RTMR0..RTMR3.
        report_data: the 64 bytes the TD bound into the report.
        tee_tcb_svn2: TEE_TCB_SVN2 (TDX 1.5 only, else None).
        mr_service_td: MRSERVICETD (TDX 1.5 only, else None).
    """

    raw: bytes
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None
    mr_service_td: bytes | None

    @property
    def debug(self) -> bool:
        """Whether TD_ATTRIBUTES.DEBUG is set: the host can inspect the TD."""
        return bool(self.td_attributes[0] & _TD_ATTRIBUTES_DEBUG)


@dataclass(frozen=True, slots=True)
class CertificationData:
    """A certification data block: how to find the PCK certificate.

    Attributes:
        type: 1-3 PPID forms, 4 PCK leaf only, 5 PEM PCK chain, 6 QE report certification data.
        data: the block's bytes, not interpreted here.
    """

    type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Quote:
    """A parsed DCAP quote. Nothing in it is verified yet.

    Attributes:
        header: the quote header.
        body_type: which report the body holds.
        body: the enclave report (SGX) or TD report (TDX).
        signed_bytes: exactly what the attestation key signed (header, v5 descriptor, body).
        signature: the quote signature, raw ``r || s``.
        attestation_key: the ECDSA attestation key, raw ``x || y``.
        qe_report: the quoting enclave's report; its report data binds the attestation key.
        qe_report_signature: the PCK key's signature over ``qe_report.raw``, raw ``r || s``.
        qe_auth_data: QE authentication data (hashed into the QE report data).
        certification_data: the PCK certification data (type 5: a PEM PCK chain).
        bytes_used: length of the quote structure; bytes after it are ignored.
    """

    header: QuoteHeader
    body_type: BodyType
    body: EnclaveReport | TdReport
    signed_bytes: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData
    bytes_used: int

    @property
    def tee_type(self) -> TeeType:
        """SGX or TDX."""
        return self.header.tee_type


class _Reader:
    """Bounds-checked sequential reads; every overrun is an ``EvidenceFormatError``."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self._data = data
        self._pos = pos

    @property
    def pos(self) -> int:
        return self._pos

    def take(self, n: int, what: str) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise EvidenceFormatError(
                f"quote truncated: {what} needs {n} bytes at offset {self._pos}, "
                f"only {max(0, len(self._data) - self._pos)} left; pass the whole quote"
            )
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")


_HEADER = struct.Struct("<HHIHH16s20s")


def parse_header(data: bytes) -> QuoteHeader:
    """Parse and check the 48-byte quote header.

    Raises:
        EvidenceFormatError: too short, an unsupported version, key type or TEE type, or a QE
            vendor other than Intel.
    """
    if len(data) < HEADER_BYTES:
        raise EvidenceFormatError(
            f"not a DCAP quote: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header"
        )
    version, key_type, tee_raw, qe_svn, pce_svn, vendor, user_data = _HEADER.unpack_from(data)
    if version not in (3, 4, 5):
        raise EvidenceFormatError(
            f"unsupported DCAP quote version {version}; donjon verifies versions 3, 4 and 5"
        )
    if key_type != ATTESTATION_KEY_ECDSA_P256:
        raise EvidenceFormatError(
            f"unsupported attestation key type {key_type}; only 2 (ECDSA-256 with P-256) is in use"
        )
    try:
        tee_type = TeeType(tee_raw)
    except ValueError:
        raise EvidenceFormatError(
            f"unknown TEE type 0x{tee_raw:x} in the quote header (0x0 is SGX, 0x81 is TDX)"
        ) from None
    if version == 3 and tee_type is not TeeType.SGX:
        raise EvidenceFormatError("a version 3 quote must be an SGX quote (TEE type 0x0)")
    if vendor != INTEL_QE_VENDOR_ID:
        raise EvidenceFormatError(
            f"QE vendor ID {vendor.hex()} is not Intel's ({INTEL_QE_VENDOR_ID.hex()}); "
            "only quotes from Intel's quoting enclaves are supported"
        )
    return QuoteHeader(
        version=version,
        attestation_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=vendor,
        user_data=user_data,
    )


def parse_enclave_report(raw: bytes) -> EnclaveReport:
    """Parse a 384-byte SGX REPORTBODY.

    Raises:
        EvidenceFormatError: not exactly 384 bytes.
    """
    if len(raw) != SGX_REPORT_BYTES:
        raise EvidenceFormatError(f"an SGX report body is {SGX_REPORT_BYTES} bytes, got {len(raw)}")
    return EnclaveReport(
        raw=raw,
        cpu_svn=raw[0:16],
        misc_select=int.from_bytes(raw[16:20], "little"),
        isv_ext_prod_id=raw[32:48],
        attributes=raw[48:64],
        mr_enclave=raw[64:96],
        mr_signer=raw[128:160],
        config_id=raw[192:256],
        isv_prod_id=int.from_bytes(raw[256:258], "little"),
        isv_svn=int.from_bytes(raw[258:260], "little"),
        config_svn=int.from_bytes(raw[260:262], "little"),
        isv_family_id=raw[304:320],
        report_data=raw[320:384],
    )


def parse_td_report(raw: bytes) -> TdReport:
    """Parse a TD report body of 584 (TDX 1.0) or 648 (TDX 1.5) bytes.

    Raises:
        EvidenceFormatError: any other length.
    """
    if len(raw) not in (TD10_REPORT_BYTES, TD15_REPORT_BYTES):
        raise EvidenceFormatError(
            f"a TD report body is {TD10_REPORT_BYTES} or {TD15_REPORT_BYTES} bytes, got {len(raw)}"
        )
    v15 = len(raw) == TD15_REPORT_BYTES
    return TdReport(
        raw=raw,
        tee_tcb_svn=raw[0:16],
        mr_seam=raw[16:64],
        mr_signer_seam=raw[64:112],
        seam_attributes=raw[112:120],
        td_attributes=raw[120:128],
        xfam=raw[128:136],
        mr_td=raw[136:184],
        mr_config_id=raw[184:232],
        mr_owner=raw[232:280],
        mr_owner_config=raw[280:328],
        rtmrs=(raw[328:376], raw[376:424], raw[424:472], raw[472:520]),
        report_data=raw[520:584],
        tee_tcb_svn2=raw[584:600] if v15 else None,
        mr_service_td=raw[600:648] if v15 else None,
    )


_V5_BODY_SIZES = {
    BodyType.SGX_ENCLAVE_REPORT: SGX_REPORT_BYTES,
    BodyType.TD_REPORT_10: TD10_REPORT_BYTES,
    BodyType.TD_REPORT_15: TD15_REPORT_BYTES,
}


def _parse_body(r: _Reader, header: QuoteHeader) -> tuple[BodyType, EnclaveReport | TdReport]:
    if header.version == 5:
        raw_type = r.u16("body type")
        size = r.u32("body size")
        try:
            body_type = BodyType(raw_type)
        except ValueError:
            raise EvidenceFormatError(
                f"unknown quote body type {raw_type} (1 SGX, 2 TDX 1.0, 3 TDX 1.5)"
            ) from None
        if size != _V5_BODY_SIZES[body_type]:
            raise EvidenceFormatError(
                f"quote body type {body_type.name} must be {_V5_BODY_SIZES[body_type]} bytes, "
                f"the quote declares {size}"
            )
        if (body_type is BodyType.SGX_ENCLAVE_REPORT) != (header.tee_type is TeeType.SGX):
            raise EvidenceFormatError(
                f"quote body type {body_type.name} does not fit TEE type {header.tee_type.name}"
            )
    elif header.tee_type is TeeType.SGX:
        body_type = BodyType.SGX_ENCLAVE_REPORT
    else:
        body_type = BodyType.TD_REPORT_10
    raw = r.take(_V5_BODY_SIZES[body_type], "report body")
    if body_type is BodyType.SGX_ENCLAVE_REPORT:
        return body_type, parse_enclave_report(raw)
    return body_type, parse_td_report(raw)


def _parse_certification_data(r: _Reader, end: int, what: str) -> CertificationData:
    cert_type = r.u16(f"{what} type")
    size = r.u32(f"{what} size")
    if r.pos + size != end:
        raise EvidenceFormatError(
            f"{what} declares {size} bytes but {end - r.pos} remain in its enclosing structure"
        )
    return CertificationData(type=cert_type, data=r.take(size, what))


def parse_quote(data: bytes) -> Quote:
    """Parse a DCAP quote (v3, v4 or v5; SGX or TDX) by its declared lengths.

    Args:
        data: the quote; bytes after its declared end (padding) are allowed and ignored.

    Returns:
        The parsed, unverified quote.

    Raises:
        EvidenceFormatError: the bytes are not a well-formed quote of a supported kind.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EvidenceFormatError(f"a quote is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_QUOTE_BYTES:
        raise EvidenceFormatError(
            f"quote is {len(data)} bytes, more than the {MAX_QUOTE_BYTES}-byte limit"
        )
    header = parse_header(data)
    r = _Reader(data, HEADER_BYTES)
    body_type, body = _parse_body(r, header)
    signed_end = r.pos

    # Quote signature data (v3: "ECDSA 256-bit Quote Signature Data Structure"; v4/v5: the same
    # with the QE report moved into certification data type 6).
    sig_len = r.u32("signature data length")
    sig_end = r.pos + sig_len
    if sig_end > len(data):
        raise EvidenceFormatError(
            f"quote truncated: signature data declares {sig_len} bytes, "
            f"only {len(data) - r.pos} present"
        )
    signature = r.take(ECDSA_SIGNATURE_BYTES, "quote signature")
    attestation_key = r.take(ECDSA_KEY_BYTES, "attestation key")
    if header.version == 3:
        qe_end = sig_end
        qr = r
    else:
        outer = _parse_certification_data(r, sig_end, "certification data")
        if outer.type != CERT_DATA_QE_REPORT:
            raise EvidenceFormatError(
                f"a version {header.version} quote must carry certification data type "
                f"{CERT_DATA_QE_REPORT} (QE report), found type {outer.type}"
            )
        qr = _Reader(outer.data)
        qe_end = len(outer.data)
    qe_report = parse_enclave_report(qr.take(SGX_REPORT_BYTES, "QE report"))
    qe_report_signature = qr.take(ECDSA_SIGNATURE_BYTES, "QE report signature")
    qe_auth_data = qr.take(qr.u16("QE authentication data size"), "QE authentication data")
    cert = _parse_certification_data(qr, qe_end, "QE certification data")
    if not 1 <= cert.type <= CERT_DATA_PCK_CERT_CHAIN:
        raise EvidenceFormatError(
            f"QE certification data type {cert.type} is not one of 1..5 (PPID or PCK forms)"
        )
    return Quote(
        header=header,
        body_type=body_type,
        body=body,
        signed_bytes=data[:signed_end],
        signature=signature,
        attestation_key=attestation_key,
        qe_report=qe_report,
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        certification_data=cert,
        bytes_used=sig_end,
    )


__all__ = [
    "HEADER_BYTES",
    "INTEL_QE_VENDOR_ID",
    "MAX_QUOTE_BYTES",
    "BodyType",
    "CertificationData",
    "EnclaveReport",
    "Quote",
    "QuoteHeader",
    "TdReport",
    "TeeType",
    "parse_enclave_report",
    "parse_header",
    "parse_quote",
    "parse_td_report",
]
