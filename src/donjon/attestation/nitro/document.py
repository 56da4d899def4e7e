"""AWS Nitro Enclaves attestation document: a pure, bounded parser (no cryptography, no I/O).

The Nitro Secure Module (NSM) returns a COSE_Sign1 (RFC 9052 §4.2), untagged, signed with ES384,
whose payload is a CBOR map (AWS Nitro Enclaves User Guide, "Attestation document"; NSM API
``AttestationDocument`` CDDL)::

    { module_id: tstr, digest: "SHA384", timestamp: uint (ms since the Unix epoch),
      pcrs: { + uint(0..31) => bstr .size 32/48/64 }, certificate: bstr (leaf DER),
      cabundle: [ + bstr (DER) ]  ; root first, then intermediates toward the leaf
      ? public_key: bstr / nil, ? user_data: bstr / nil, ? nonce: bstr / nil }

Rule 1: every byte is hostile; sizes follow AWS's "syntactical validation" table
(https://docs.aws.amazon.com/enclaves/latest/user/verify-root.html) and the only exception that
leaves this module is ``EvidenceFormatError``.
Rule 2: nothing here is trusted: the verifier validates the certificate chain and the signature.
Rule 3: unknown payload keys are skipped, never interpreted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from donjon.errors import DecodeError, EvidenceFormatError
from donjon.wire.cbor import decode
from donjon.wire.cose import ALG_ES384, HEADER_ALG, CoseSign1, decode_sign1

MAX_DOCUMENT_BYTES = 64 * 1024
"""Largest attestation document accepted (bytes). Real ones are 4-8 KiB; the largest the limits
below allow is about 25 KiB."""
MAX_CERT_BYTES = 1024
"""Largest certificate in ``certificate``/``cabundle`` (bytes), per AWS's validation table."""
MAX_CABUNDLE_CERTS = 16
"""Most certificates in ``cabundle``; AWS chains have 4 (root, regional, zonal, instance)."""
MAX_USER_FIELD_BYTES = 1024
"""Largest ``public_key``, ``user_data`` or ``nonce`` (bytes): the NSM's current limit (the
vectors carry 1024-byte fields; older AWS documentation said 512 for user_data and nonce)."""
MAX_MODULE_ID_CHARS = 256
"""Longest ``module_id`` accepted (characters); real ones are ``i-<17 hex>-enc<16 hex>``."""
MAX_PCRS = 32
"""PCR indexes are 0..31 (NSM API)."""
PCR_BYTES = 48
"""Size of a PCR for the only digest the NSM uses, SHA-384."""
DIGEST = "SHA384"

_MANDATORY = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")


@dataclass(frozen=True, slots=True)
class AttestationDocument:
    """The payload of a Nitro attestation document.

    Attributes:
        module_id: the enclave's ID (``i-<instance>-enc<enclave>``).
        digest: the PCR digest algorithm; always "SHA384".
        timestamp_ms: when the NSM produced the document, in ms since the Unix epoch (UTC).
        pcrs: PCR index → value (48 bytes each), read-only.
        certificate: the leaf certificate (DER) whose key signed the document.
        cabundle: root first, then intermediates toward the leaf (DER each).
        public_key: an optional key chosen by the enclave, or None.
        user_data: optional data chosen by the enclave, or None.
        nonce: an optional nonce chosen by the enclave (usually from the verifier), or None.
    """

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None

    @property
    def timestamp(self) -> datetime:
        """The document time as an aware UTC datetime (millisecond precision)."""
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=self.timestamp_ms)


@dataclass(frozen=True, slots=True)
class NitroEvidence:
    """The COSE_Sign1 envelope (with its exact protected bytes) and the parsed document."""

    message: CoseSign1
    document: AttestationDocument


def parse_document(data: bytes) -> NitroEvidence:
    """Parse a Nitro attestation document (COSE_Sign1, tagged or not) and check its syntax.

    Args:
        data: the document bytes as received.

    Returns:
        The parsed, unverified document.

    Raises:
        EvidenceFormatError: anything that does not follow the NSM ``AttestationDocument``
            format and AWS's syntactical validation rules.
    """
    what = "Nitro attestation document"
    try:
        # The NSM emits the untagged form; some SDKs add tag 18. Both carry the same signature.
        message = decode_sign1(data, what=what, max_bytes=MAX_DOCUMENT_BYTES)
        payload = decode(message.payload, what=f"{what} payload", max_bytes=MAX_DOCUMENT_BYTES)
    except DecodeError as e:
        raise EvidenceFormatError(e.message) from e
    except BytesWarning as e:
        # cbor2 compares colliding map keys; under ``python -bb`` "k" vs b"k" raises this.
        raise EvidenceFormatError(f"{what}: a CBOR map mixes text and byte-string keys") from e
    if message.alg != ALG_ES384:
        raise EvidenceFormatError(
            f"{what}: protected header alg is {message.protected.get(HEADER_ALG)!r}; "
            f"the NSM signs with ES384 ({ALG_ES384})"
        )
    if not isinstance(payload, dict):
        raise EvidenceFormatError(f"{what}: the payload must be a CBOR map")
    # Only text keys are defined; dropping the others first also keeps lookups below from
    # comparing "k" with b"k" (equal hashes), which raises BytesWarning under ``python -bb``.
    payload = {k: v for k, v in payload.items() if type(k) is str}
    for key in _MANDATORY:
        if key not in payload:
            raise EvidenceFormatError(f"{what}: mandatory field {key!r} is missing")
    return NitroEvidence(message=message, document=_document(payload, what=what))


def _document(p: dict[Any, Any], *, what: str) -> AttestationDocument:
    module_id = p["module_id"]
    if not isinstance(module_id, str) or not 0 < len(module_id) <= MAX_MODULE_ID_CHARS:
        raise EvidenceFormatError(
            f"{what}: module_id must be a text string of 1 to {MAX_MODULE_ID_CHARS} characters"
        )
    if not isinstance(p["digest"], str) or p["digest"] != DIGEST:
        raise EvidenceFormatError(f"{what}: digest is {p['digest']!r}; the NSM uses {DIGEST!r}")
    timestamp = p["timestamp"]
    if type(timestamp) is not int or not 0 < timestamp < 2**63:
        raise EvidenceFormatError(f"{what}: timestamp must be a positive integer (ms)")
    return AttestationDocument(
        module_id=module_id,
        digest=DIGEST,
        timestamp_ms=timestamp,
        pcrs=_pcrs(p["pcrs"], what=what),
        certificate=_cert(p["certificate"], "certificate", what=what),
        cabundle=_cabundle(p["cabundle"], what=what),
        public_key=_optional(p.get("public_key"), "public_key", minimum=1, what=what),
        user_data=_optional(p.get("user_data"), "user_data", minimum=0, what=what),
        nonce=_optional(p.get("nonce"), "nonce", minimum=0, what=what),
    )


def _pcrs(value: Any, *, what: str) -> Mapping[int, bytes]:
    if not isinstance(value, dict) or not 0 < len(value) <= MAX_PCRS:
        raise EvidenceFormatError(f"{what}: pcrs must be a map of 1 to {MAX_PCRS} entries")
    out: dict[int, bytes] = {}
    for index, pcr in value.items():
        if type(index) is not int or not 0 <= index < MAX_PCRS:
            raise EvidenceFormatError(f"{what}: PCR index {index!r} is not in 0..{MAX_PCRS - 1}")
        if not isinstance(pcr, bytes) or len(pcr) != PCR_BYTES:
            raise EvidenceFormatError(
                f"{what}: PCR{index} must be {PCR_BYTES} bytes ({DIGEST}), "
                f"got {len(pcr) if isinstance(pcr, bytes) else type(pcr).__name__}"
            )
        out[index] = pcr
    return MappingProxyType(dict(sorted(out.items())))


def _cert(value: Any, name: str, *, what: str) -> bytes:
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_CERT_BYTES:
        raise EvidenceFormatError(
            f"{what}: {name} must be a DER certificate of 1 to {MAX_CERT_BYTES} bytes"
        )
    return value


def _cabundle(value: Any, *, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_CABUNDLE_CERTS:
        raise EvidenceFormatError(
            f"{what}: cabundle must be an array of 1 to {MAX_CABUNDLE_CERTS} certificates"
        )
    return tuple(_cert(c, f"cabundle[{i}]", what=what) for i, c in enumerate(value))


def _optional(value: Any, name: str, *, minimum: int, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes) or not minimum <= len(value) <= MAX_USER_FIELD_BYTES:
        raise EvidenceFormatError(
            f"{what}: {name} must be null or a byte string of {minimum} to "
            f"{MAX_USER_FIELD_BYTES} bytes"
        )
    return value


__all__ = [
    "DIGEST",
    "MAX_CABUNDLE_CERTS",
    "MAX_CERT_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_USER_FIELD_BYTES",
    "PCR_BYTES",
    "AttestationDocument",
    "NitroEvidence",
    "parse_document",
]
