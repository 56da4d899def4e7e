"""The Intel SGX extensions of a PCK certificate (OID 1.2.840.113741.1.13.1).

``cryptography.x509`` hands unknown extensions over as raw DER; this module walks that DER
(a SEQUENCE of ``SEQUENCE { OID, value }``) with a small strict TLV reader. Layout: Intel SGX PCK
Certificate and Certificate Revocation List Profile Specification, "Intel SGX Extensions".

Rule 1: only definite-length DER is accepted; lengths are checked against what encloses them.
Rule 2: unknown entries are skipped by length and never interpreted; the ones verification needs
(PPID, TCB, PCE-ID, FMSPC, SGX type) must be present exactly once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography import x509

from donjon.errors import EvidenceFormatError

SGX_EXTENSIONS_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX = "1.2.840.113741.1.13.1"
_PPID = _SGX + ".1"
_TCB = _SGX + ".2"
_PCEID = _SGX + ".3"
_FMSPC = _SGX + ".4"
_SGX_TYPE = _SGX + ".5"
_PLATFORM_INSTANCE_ID = _SGX + ".6"
_CONFIGURATION = _SGX + ".7"
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"

_TCB_COMPONENTS = 16

_TAG_BOOLEAN = 0x01
_TAG_INTEGER = 0x02
_TAG_OCTET_STRING = 0x04
_TAG_OID = 0x06
_TAG_ENUMERATED = 0x0A
_TAG_SEQUENCE = 0x30


class SgxType(enum.IntEnum):
    """The platform's SGX type, from the PCK certificate."""

    STANDARD = 0
    SCALABLE = 1
    SCALABLE_WITH_INTEGRITY = 2


@dataclass(frozen=True, slots=True)
class PckTcb:
    """The platform TCB that the PCK certificate certifies.

    Attributes:
        sgx_components: the 16 SGX TCB component SVNs (``sgxtcbcomponents`` in TCB info).
        pce_svn: the PCE SVN.
        cpu_svn: the raw 16-byte CPUSVN.
    """

    sgx_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes


@dataclass(frozen=True, slots=True)
class PckExtensions:
    """The SGX extensions of a PCK certificate.

    Attributes:
        ppid: the platform provisioning ID (16 bytes).
        tcb: the certified TCB.
        pce_id: the PCE ID (2 bytes).
        fmspc: the FMSPC (6 bytes): the platform family the TCB info is published for.
        sgx_type: Standard, Scalable or Scalable with integrity.
        platform_instance_id: 16 bytes, only in certificates from the Platform CA.
        dynamic_platform: configuration flag (Platform CA certificates), else None.
        cached_keys: configuration flag (Platform CA certificates), else None.
        smt_enabled: configuration flag (Platform CA certificates), else None.
    """

    ppid: bytes
    tcb: PckTcb
    pce_id: bytes
    fmspc: bytes
    sgx_type: SgxType
    platform_instance_id: bytes | None = None
    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class _Tlv:
    tag: int
    value: bytes


def _bad(what: str) -> EvidenceFormatError:
    return EvidenceFormatError(f"PCK certificate SGX extension: {what}")


def _read_tlvs(data: bytes) -> list[_Tlv]:
    """Split *data* into consecutive DER TLVs that cover it exactly."""
    out: list[_Tlv] = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 2:
            raise _bad("truncated element header")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise _bad("multi-byte tags are not used by this extension")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            # Indefinite lengths (0x80) are BER, not DER; 4 length bytes exceed any sane size.
            if count == 0 or count > 4 or n - pos < count:
                raise _bad("bad length encoding")
            length = int.from_bytes(data[pos : pos + count], "big")
            if length < 0x80 or data[pos] == 0:
                raise _bad("non-minimal length encoding")
            pos += count
        if length > n - pos:
            raise _bad("element longer than its container")
        out.append(_Tlv(tag, data[pos : pos + length]))
        pos += length
    return out


def _oid(tlv: _Tlv) -> str:
    if tlv.tag != _TAG_OID or not tlv.value or tlv.value[-1] & 0x80:
        raise _bad("expected an OBJECT IDENTIFIER")
    arcs: list[int] = []
    acc = 0
    for i, b in enumerate(tlv.value):
        if acc == 0 and b == 0x80:
            raise _bad("non-minimal OBJECT IDENTIFIER arc")
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            if not arcs:
                first = min(acc // 40, 2)
                arcs.extend((first, acc - 40 * first))
            else:
                arcs.append(acc)
            acc = 0
        elif i == len(tlv.value) - 1:  # pragma: no cover - excluded by the check above
            raise _bad("truncated OBJECT IDENTIFIER")
    return ".".join(map(str, arcs))


def _uint(tlv: _Tlv, *, tag: int, maximum: int, what: str) -> int:
    v = tlv.value
    if tlv.tag != tag or not v:
        raise _bad(f"{what} is not an INTEGER")
    if v[0] & 0x80:
        raise _bad(f"{what} is negative")
    if len(v) > 1 and v[0] == 0 and not v[1] & 0x80:
        raise _bad(f"{what} has a non-minimal encoding")
    value = int.from_bytes(v, "big")
    if value > maximum:
        raise _bad(f"{what} is {value}, more than {maximum}")
    return value


def _octets(tlv: _Tlv, *, size: int, what: str) -> bytes:
    if tlv.tag != _TAG_OCTET_STRING or len(tlv.value) != size:
        raise _bad(f"{what} is not a {size}-byte OCTET STRING")
    return tlv.value


def _boolean(tlv: _Tlv, what: str) -> bool:
    if tlv.tag != _TAG_BOOLEAN or len(tlv.value) != 1 or tlv.value[0] not in (0x00, 0xFF):
        raise _bad(f"{what} is not a DER BOOLEAN")
    return tlv.value[0] == 0xFF


def _entries(tlv: _Tlv, what: str) -> dict[str, _Tlv]:
    """Parse ``SEQUENCE OF SEQUENCE { OID, value }`` into {oid: value}, refusing duplicates."""
    if tlv.tag != _TAG_SEQUENCE:
        raise _bad(f"{what} is not a SEQUENCE")
    out: dict[str, _Tlv] = {}
    for item in _read_tlvs(tlv.value):
        if item.tag != _TAG_SEQUENCE:
            raise _bad(f"an entry of {what} is not a SEQUENCE")
        parts = _read_tlvs(item.value)
        if len(parts) != 2:
            raise _bad(f"an entry of {what} is not an (OID, value) pair")
        oid = _oid(parts[0])
        if oid in out:
            raise _bad(f"{oid} appears twice in {what}")
        out[oid] = parts[1]
    return out


def _require(entries: dict[str, _Tlv], oid: str, what: str) -> _Tlv:
    try:
        return entries[oid]
    except KeyError:
        raise _bad(f"{what} ({oid}) is missing") from None


def parse_sgx_extensions(der: bytes) -> PckExtensions:
    """Parse the DER value of the SGX extensions (OID 1.2.840.113741.1.13.1).

    Raises:
        EvidenceFormatError: malformed DER, or a required entry missing or of the wrong shape.
    """
    outer = _read_tlvs(der)
    if len(outer) != 1:
        raise _bad("not exactly one DER element")
    top = _entries(outer[0], "the SGX extensions")
    tcb_entries = _entries(_require(top, _TCB, "TCB"), "the TCB")
    components = tuple(
        _uint(
            _require(tcb_entries, f"{_TCB}.{i}", f"TCB component {i}"),
            tag=_TAG_INTEGER,
            maximum=0xFF,
            what=f"TCB component {i}",
        )
        for i in range(1, _TCB_COMPONENTS + 1)
    )
    pce_svn = _uint(
        _require(tcb_entries, _PCESVN, "PCESVN"), tag=_TAG_INTEGER, maximum=0xFFFF, what="PCESVN"
    )
    cpu_svn = _octets(_require(tcb_entries, _CPUSVN, "CPUSVN"), size=16, what="CPUSVN")
    raw_type = _uint(
        _require(top, _SGX_TYPE, "SGX type"), tag=_TAG_ENUMERATED, maximum=0xFF, what="SGX type"
    )
    try:
        sgx_type = SgxType(raw_type)
    except ValueError:
        raise _bad(f"unknown SGX type {raw_type}") from None
    instance = top.get(_PLATFORM_INSTANCE_ID)
    flags: dict[str, bool] = {}
    config = top.get(_CONFIGURATION)
    if config is not None:
        names = {
            f"{_CONFIGURATION}.1": "dynamic_platform",
            f"{_CONFIGURATION}.2": "cached_keys",
            f"{_CONFIGURATION}.3": "smt_enabled",
        }
        for oid, tlv in _entries(config, "configuration").items():
            if oid in names:
                flags[names[oid]] = _boolean(tlv, names[oid])
    return PckExtensions(
        ppid=_octets(_require(top, _PPID, "PPID"), size=16, what="PPID"),
        tcb=PckTcb(sgx_components=components, pce_svn=pce_svn, cpu_svn=cpu_svn),
        pce_id=_octets(_require(top, _PCEID, "PCE-ID"), size=2, what="PCE-ID"),
        fmspc=_octets(_require(top, _FMSPC, "FMSPC"), size=6, what="FMSPC"),
        sgx_type=sgx_type,
        platform_instance_id=(
            _octets(instance, size=16, what="platform instance ID") if instance else None
        ),
        dynamic_platform=flags.get("dynamic_platform"),
        cached_keys=flags.get("cached_keys"),
        smt_enabled=flags.get("smt_enabled"),
    )


def pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """The SGX extensions of a PCK certificate.

    Raises:
        EvidenceFormatError: the certificate has no (or a malformed) SGX extension.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSIONS_OID)
    except x509.ExtensionNotFound:
        raise EvidenceFormatError(
            "the PCK certificate has no Intel SGX extension (1.2.840.113741.1.13.1); "
            "it is not a PCK certificate"
        ) from None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as e:
        # A duplicate or malformed extension elsewhere in the certificate.
        raise EvidenceFormatError(f"the PCK certificate's extensions do not parse: {e}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise _bad("unexpected decoded form")
    return parse_sgx_extensions(value.value)


__all__ = [
    "SGX_EXTENSIONS_OID",
    "PckExtensions",
    "PckTcb",
    "SgxType",
    "parse_sgx_extensions",
    "pck_extensions",
]
