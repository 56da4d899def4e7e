"""Enarx evidence extensions: decode (and, for tests and compatible clients, encode) the DER
values Enarx's keep puts in its CSR (enarx.md §4.2).

ASN.1 (enarx/steward ``crates/attestation/src/{snp/mod.rs,sgx/mod.rs,crypto/crl.rs}``)::

    CrlList      ::= SEQUENCE { crls SEQUENCE OF SEQUENCE { url UTF8String, crl CertificateList } }
    SnpEvidence  ::= SEQUENCE { crts SEQUENCE { vcek Certificate, crl CrlList },
                                report OCTET STRING }                   -- 1.3.6.1.4.1.58270.1.3
    SgxEvidence  ::= SEQUENCE { quote OCTET STRING, crl CrlList,
                                tcb SEQUENCE { crts SEQUENCE OF Certificate,
                                               report OCTET STRING } }  -- 1.3.6.1.4.1.58270.1.2

Enarx binds the CSR key, not a nonce: SNP ``REPORT_DATA[0:48] = SHA-384(SPKI DER)``, SGX
``REPORTDATA[0:32] = SHA-256(SPKI DER)``, the rest zero (:func:`enarx_report_data`).

Rule 1: a strict, bounded DER reader: definite minimal lengths only, no trailing bytes, nesting
known in advance; any deviation is a ``DecodeError`` naming the field. Certificates and CRLs are
returned as their exact DER bytes; checking them is the verifier's job.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from donjon.errors import DecodeError

MAX_ENARX_EVIDENCE_BYTES = 256 * 1024
"""Largest Enarx evidence extension accepted (bytes); an SGX quote + collateral is ~20 KiB."""

MAX_ENARX_ITEMS = 16
"""Most CRLs or certificates accepted in one list (Enarx sends 2-3)."""

_SEQUENCE = 0x30
_OCTET_STRING = 0x04
_UTF8_STRING = 0x0C


@dataclass(frozen=True, slots=True)
class EnarxSnpEvidence:
    """Decoded ``1.3.6.1.4.1.58270.1.3`` evidence: report, VCEK and CRLs, as raw bytes."""

    report: bytes
    vcek: bytes
    crls: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class EnarxSgxEvidence:
    """Decoded ``1.3.6.1.4.1.58270.1.2`` evidence: quote, CRLs, TCB-info certs and JSON."""

    quote: bytes
    crls: tuple[bytes, ...]
    tcb_certs: tuple[bytes, ...]
    tcb_info: bytes


def _read_tlv(data: bytes, pos: int, *, what: str) -> tuple[int, int, int, int]:
    """Read one TLV at *pos*; return (tag, value_start, value_end, next_pos)."""
    if pos + 2 > len(data):
        raise DecodeError(f"{what}: truncated DER (no tag/length)")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DecodeError(f"{what}: multi-byte DER tags are not expected here")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0:
            raise DecodeError(f"{what}: indefinite length is not DER")
        if n > 4 or pos + n > len(data):
            raise DecodeError(f"{what}: DER length field too long or truncated")
        length = int.from_bytes(data[pos : pos + n], "big")
        if data[pos] == 0 or length < 0x80:
            raise DecodeError(f"{what}: DER length is not minimally encoded")
        pos += n
    end = pos + length
    if end > len(data):
        raise DecodeError(f"{what}: DER value runs past the end ({length} bytes declared)")
    return tag, pos, end, end


def _expect(data: bytes, pos: int, tag: int, *, what: str) -> tuple[bytes, int]:
    """Read a TLV of *tag* at *pos*; return (value bytes, next_pos)."""
    got, start, end, nxt = _read_tlv(data, pos, what=what)
    if got != tag:
        raise DecodeError(f"{what}: DER tag 0x{got:02x}, expected 0x{tag:02x}")
    return data[start:end], nxt


def _expect_tlv(data: bytes, pos: int, tag: int, *, what: str) -> tuple[bytes, int]:
    """Like :func:`_expect` but return the whole TLV (for certificates and CRLs)."""
    got, _start, end, nxt = _read_tlv(data, pos, what=what)
    if got != tag:
        raise DecodeError(f"{what}: DER tag 0x{got:02x}, expected 0x{tag:02x}")
    return data[pos:end], nxt


def _sequence_items(body: bytes, *, what: str) -> list[tuple[int, int]]:
    """(start, end) offsets of every TLV directly inside a SEQUENCE body."""
    items: list[tuple[int, int]] = []
    pos = 0
    while pos < len(body):
        if len(items) >= MAX_ENARX_ITEMS:
            raise DecodeError(f"{what}: more than {MAX_ENARX_ITEMS} items")
        _tag, _s, _e, nxt = _read_tlv(body, pos, what=what)
        items.append((pos, nxt))
        pos = nxt
    return items


def _decode_crl_list(body: bytes, *, what: str) -> tuple[bytes, ...]:
    inner, end = _expect(body, 0, _SEQUENCE, what=f"{what} crls")
    if end != len(body):
        raise DecodeError(f"{what}: trailing bytes after crls")
    crls: list[bytes] = []
    for start, stop in _sequence_items(inner, what=f"{what} crls"):
        entry, _ = _expect(inner[start:stop], 0, _SEQUENCE, what=f"{what} entry")
        url, pos = _expect(entry, 0, _UTF8_STRING, what=f"{what} url")
        try:
            url.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(f"{what}: url is not UTF-8") from e
        crl, pos = _expect_tlv(entry, pos, _SEQUENCE, what=f"{what} crl")
        if pos != len(entry):
            raise DecodeError(f"{what}: trailing bytes in a CRL entry")
        crls.append(crl)
    return tuple(crls)


def _outer(value: bytes, *, what: str) -> bytes:
    if len(value) > MAX_ENARX_EVIDENCE_BYTES:
        raise DecodeError(
            f"{what} is {len(value)} bytes; the limit is {MAX_ENARX_EVIDENCE_BYTES} bytes"
        )
    body, end = _expect(value, 0, _SEQUENCE, what=what)
    if end != len(value):
        raise DecodeError(f"{what}: {len(value) - end} trailing bytes after the evidence")
    return body


def decode_enarx_snp(value: bytes) -> EnarxSnpEvidence:
    """Decode an Enarx SEV-SNP evidence extension value.

    Raises:
        DecodeError: not the structure above.
    """
    what = "Enarx SNP evidence"
    body = _outer(value, what=what)
    crts, pos = _expect(body, 0, _SEQUENCE, what=f"{what} crts")
    report, pos = _expect(body, pos, _OCTET_STRING, what=f"{what} report")
    if pos != len(body):
        raise DecodeError(f"{what}: unexpected fields after report")
    vcek, cpos = _expect_tlv(crts, 0, _SEQUENCE, what=f"{what} vcek")
    crl_list, cpos = _expect_tlv(crts, cpos, _SEQUENCE, what=f"{what} crl")
    if cpos != len(crts):
        raise DecodeError(f"{what}: unexpected fields after crl")
    crl_body, _ = _expect(crl_list, 0, _SEQUENCE, what=f"{what} crl")
    return EnarxSnpEvidence(report=report, vcek=vcek, crls=_decode_crl_list(crl_body, what=what))


def decode_enarx_sgx(value: bytes) -> EnarxSgxEvidence:
    """Decode an Enarx SGX evidence extension value.

    Raises:
        DecodeError: not the structure above.
    """
    what = "Enarx SGX evidence"
    body = _outer(value, what=what)
    quote, pos = _expect(body, 0, _OCTET_STRING, what=f"{what} quote")
    crl_body, pos = _expect(body, pos, _SEQUENCE, what=f"{what} crl")
    tcb, pos = _expect(body, pos, _SEQUENCE, what=f"{what} tcb")
    if pos != len(body):
        raise DecodeError(f"{what}: unexpected fields after tcb")
    crts, tpos = _expect(tcb, 0, _SEQUENCE, what=f"{what} tcb crts")
    tcb_info, tpos = _expect(tcb, tpos, _OCTET_STRING, what=f"{what} tcb report")
    if tpos != len(tcb):
        raise DecodeError(f"{what}: unexpected fields after the TCB report")
    certs = tuple(crts[s:e] for s, e in _sequence_items(crts, what=f"{what} tcb crts"))
    for cert in certs:
        if not cert or cert[0] != _SEQUENCE:
            raise DecodeError(f"{what}: a TCB certificate is not a DER SEQUENCE")
    return EnarxSgxEvidence(
        quote=quote,
        crls=_decode_crl_list(crl_body, what=what),
        tcb_certs=certs,
        tcb_info=tcb_info,
    )


def _der(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + value


def _encode_crl_list(crls: tuple[tuple[str, bytes], ...]) -> bytes:
    entries = b"".join(_der(_SEQUENCE, _der(_UTF8_STRING, url.encode()) + crl) for url, crl in crls)
    return _der(_SEQUENCE, _der(_SEQUENCE, entries))


def encode_enarx_snp(
    report: bytes, vcek_der: bytes, crls: tuple[tuple[str, bytes], ...] = ()
) -> bytes:
    """Encode SEV-SNP evidence as Enarx's keep does (crls: (url, CRL DER) pairs)."""
    crts = _der(_SEQUENCE, vcek_der + _encode_crl_list(crls))
    return _der(_SEQUENCE, crts + _der(_OCTET_STRING, report))


def encode_enarx_sgx(
    quote: bytes,
    *,
    crls: tuple[tuple[str, bytes], ...] = (),
    tcb_certs: tuple[bytes, ...] = (),
    tcb_info: bytes = b"",
) -> bytes:
    """Encode SGX evidence as Enarx's keep does."""
    tcb = _der(_SEQUENCE, _der(_SEQUENCE, b"".join(tcb_certs)) + _der(_OCTET_STRING, tcb_info))
    return _der(_SEQUENCE, _der(_OCTET_STRING, quote) + _encode_crl_list(crls) + tcb)


def enarx_report_data(spki_der: bytes, *, hash_name: str) -> bytes:
    """The 64 report-data bytes Enarx's keep writes: ``H(SPKI)`` then zeros.

    Args:
        spki_der: the CSR's DER SubjectPublicKeyInfo.
        hash_name: "sha384" (SEV-SNP) or "sha256" (SGX).
    """
    digest = hashlib.new(hash_name, spki_der).digest()
    return digest + bytes(64 - len(digest))


__all__ = [
    "MAX_ENARX_EVIDENCE_BYTES",
    "EnarxSgxEvidence",
    "EnarxSnpEvidence",
    "decode_enarx_sgx",
    "decode_enarx_snp",
    "enarx_report_data",
    "encode_enarx_sgx",
    "encode_enarx_snp",
]
