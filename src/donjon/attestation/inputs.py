"""Evidence, certificates and collateral as users hand them over: detection and bounded reads.

Does: turn what a user or a relying party saved to disk into the bytes a verifier expects, and
refuse what cannot be used with a message that names the file and what to do.

- Evidence: raw bytes, hex text or base64 text, detected (see :func:`decode_evidence`).
- Certificates (``--cert``): DER (one or several concatenated certificates), PEM (any number of
  ``CERTIFICATE`` / ``PUBLIC KEY`` blocks), or a JSON key document (a JWK, a JWK set, or a trust
  anchor file such as Veraison's ``ta-tfa.json``) passed through unchanged for the verifier.
- Collateral (``--collateral``): JSON documents, DER or PEM CRLs and certificates; checked to be
  one of those kinds and passed through unchanged, since its meaning is the verifier's business.

Does not: verify anything, or interpret collateral. The only I/O in ``donjon.attestation`` is
here and in :meth:`donjon.attestation.policy.Policy.load`: reading files that a user named, each
read bounded by a limit below so a wrong path (``/dev/zero``, a disk image) fails fast.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from donjon.attestation.result import Endorsements
from donjon.errors import UsageError

# An evidence file is at most a few KiB (an SNP report is 1184 bytes, a padded TDX quote 8000);
# 4 MiB leaves room for hex text of 1 MiB of evidence with line breaks, and no more.
MAX_EVIDENCE_FILE_BYTES = 4 * 1024 * 1024
# A certificate bundle or key file: a chain of a few certificates (AMD ASK+ARK are 3 KiB each).
MAX_CERT_FILE_BYTES = 1 * 1024 * 1024
# Collateral: Intel TCB info is ~10-30 KiB, CRLs of a busy CA can reach a few MiB.
MAX_COLLATERAL_FILE_BYTES = 8 * 1024 * 1024
# How many --cert / --collateral files one verification may take.
MAX_ENDORSEMENT_FILES = 32

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", flags=re.DOTALL)
_CERT_PEM_LABELS = frozenset({"CERTIFICATE", "PUBLIC KEY", "TRUSTED CERTIFICATE"})
_COLLATERAL_PEM_LABELS = frozenset({"X509 CRL", "CERTIFICATE"})
_WHITESPACE = re.compile(rb"\s+")
_HEX_DIGITS = re.compile(rb"[0-9a-fA-F]*")
_BASE64_STD = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_BASE64_URL = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
_DER_SEQUENCE = 0x30
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\r\x0b\x0c"


class InputError(UsageError):
    """A file that cannot be used as evidence, certificate or collateral (exit code 2)."""


class EvidenceEncoding(enum.StrEnum):
    """How an evidence file was encoded."""

    RAW = "raw"
    HEX = "hex"
    BASE64 = "base64"


class EndorsementKind(enum.StrEnum):
    """What kind of document a certificate or collateral file holds."""

    DER = "der"
    PEM = "pem"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class DecodedEvidence:
    """Evidence bytes and the encoding they were found in.

    Attributes:
        data: the evidence as the verifier reads it.
        encoding: how the input carried it.
    """

    data: bytes
    encoding: EvidenceEncoding


def decode_evidence(data: bytes, *, what: str = "evidence") -> DecodedEvidence:
    """Detect and undo a text encoding of evidence.

    The rule, in order (ASCII whitespace anywhere in text input is ignored):

    1. Input that is not ASCII text (any byte outside printable ASCII and whitespace): raw bytes.
    2. Only hex digits, optionally after ``0x``: hex. An odd number of digits is an error.
    3. Only base64 characters (standard ``+/`` or URL-safe ``-_`` alphabet), with ``=`` padding
       only at the end and a length that base64 allows: base64.
    4. Any other text (JSON, for example): raw bytes, as given.

    Hex wins over base64 because every hex string is also base64; real evidence in base64 is
    never made only of hex digits (the chance for 100 characters is below 1e-46).

    Raises:
        InputError: the input is empty, or looks like hex but has an odd number of digits.
    """
    if not data:
        raise InputError(f"{what} is empty; pass the file the TEE produced")
    if not _is_ascii_text(data):
        return DecodedEvidence(data, EvidenceEncoding.RAW)
    text = _WHITESPACE.sub(b"", data)
    if not text:
        raise InputError(f"{what} holds only whitespace; pass the file the TEE produced")
    hex_text = text[2:] if text[:2] in (b"0x", b"0X") else text
    if hex_text and _HEX_DIGITS.fullmatch(hex_text):
        if len(hex_text) % 2:
            raise InputError(
                f"{what} looks like hex but has an odd number of digits ({len(hex_text)}); "
                "check that the file was not truncated"
            )
        return DecodedEvidence(bytes.fromhex(hex_text.decode("ascii")), EvidenceEncoding.HEX)
    decoded = _decode_base64(text)
    if decoded is not None:
        return DecodedEvidence(decoded, EvidenceEncoding.BASE64)
    return DecodedEvidence(data, EvidenceEncoding.RAW)


def classify_cert_file(data: bytes, *, what: str = "certificate file") -> EndorsementKind:
    """Check that *data* is something a verifier can take as a certificate or key.

    Accepted: one DER certificate or several concatenated (a DER SEQUENCE each, with nothing
    after the last), PEM with at least one ``CERTIFICATE`` or ``PUBLIC KEY`` block, or a JSON
    object (a JWK such as an Arm CPAK, a JWK set, or a trust-anchor document).

    Raises:
        InputError: none of those.
    """
    kind = _classify(data, what=what, pem_labels=_CERT_PEM_LABELS)
    if kind is EndorsementKind.DER:
        _split_der(data, what=what)
    return kind


def classify_collateral_file(data: bytes, *, what: str = "collateral file") -> EndorsementKind:
    """Check that *data* is collateral: JSON, a DER structure (CRL), or PEM CRLs/certificates.

    Raises:
        InputError: none of those.
    """
    kind = _classify(data, what=what, pem_labels=_COLLATERAL_PEM_LABELS)
    if kind is EndorsementKind.DER:
        _split_der(data, what=what)
    return kind


def split_der_items(data: bytes, *, what: str = "DER file") -> tuple[bytes, ...]:
    """Split concatenated DER structures (e.g. several certificates in one ``.der`` file).

    Raises:
        InputError: a length that runs past the end, or bytes that are not a DER SEQUENCE.
    """
    return _split_der(data, what=what)


def read_bounded(path: Path, *, max_bytes: int, what: str) -> bytes:
    """Read a regular file of at most *max_bytes* bytes.

    Raises:
        InputError: the file is missing, unreadable, not a regular file, or too large.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {path} is not a regular file")
    if st.st_size > max_bytes:
        raise InputError(
            f"{what} {path} is {st.st_size} bytes, more than the {max_bytes}-byte limit; "
            "is this the right file?"
        )
    try:
        with path.open("rb") as f:
            # Read one byte past the limit: the file may have grown since stat().
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise InputError(f"{what} {path} is larger than the {max_bytes}-byte limit")
    return data


def load_evidence(path: Path) -> DecodedEvidence:
    """Read and decode an evidence file (raw, hex or base64; see :func:`decode_evidence`)."""
    data = read_bounded(path, max_bytes=MAX_EVIDENCE_FILE_BYTES, what="evidence file")
    return decode_evidence(data, what=f"evidence file {path}")


def load_cert_file(path: Path) -> bytes:
    """Read a certificate or key file and check its kind; the bytes are returned unchanged."""
    data = read_bounded(path, max_bytes=MAX_CERT_FILE_BYTES, what="certificate file")
    classify_cert_file(data, what=f"certificate file {path}")
    return data


def load_collateral_file(path: Path) -> bytes:
    """Read a collateral file and check its kind; the bytes are returned unchanged."""
    data = read_bounded(path, max_bytes=MAX_COLLATERAL_FILE_BYTES, what="collateral file")
    classify_collateral_file(data, what=f"collateral file {path}")
    return data


def load_endorsements(
    certs: tuple[Path, ...] | list[Path] = (), collateral: tuple[Path, ...] | list[Path] = ()
) -> Endorsements:
    """Read ``--cert`` and ``--collateral`` files into :class:`Endorsements`, order kept.

    Raises:
        InputError: more than :data:`MAX_ENDORSEMENT_FILES` files, or any file unusable.
    """
    if len(certs) + len(collateral) > MAX_ENDORSEMENT_FILES:
        raise InputError(
            f"{len(certs) + len(collateral)} certificate and collateral files given; "
            f"at most {MAX_ENDORSEMENT_FILES} are accepted"
        )
    return Endorsements(
        certs=tuple(load_cert_file(p) for p in certs),
        collateral=tuple(load_collateral_file(p) for p in collateral),
    )


def _is_ascii_text(data: bytes) -> bool:
    # translate() deletes the text bytes in C; anything left over is binary.
    return not data.translate(None, _TEXT_BYTES)


def _decode_base64(text: bytes) -> bytes | None:
    if len(text) % 4 == 1:
        return None
    if _BASE64_STD.fullmatch(text):
        altchars = b"+/"
    elif _BASE64_URL.fullmatch(text):
        altchars = b"-_"
    else:
        return None
    padded = text + b"=" * (-len(text) % 4)
    try:
        out = base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
    return out or None


def _classify(data: bytes, *, what: str, pem_labels: frozenset[str]) -> EndorsementKind:
    if not data.strip():
        raise InputError(f"{what} is empty")
    if data[0] == _DER_SEQUENCE:
        return EndorsementKind.DER
    stripped = data.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            json.loads(data)
        except (UnicodeDecodeError, ValueError) as e:
            raise InputError(f"{what} starts like JSON but does not parse: {e}") from e
        return EndorsementKind.JSON
    labels = {m.group(1).decode("ascii") for m in _PEM_BLOCK.finditer(data)}
    if labels & pem_labels:
        return EndorsementKind.PEM
    accepted = ", ".join(sorted(pem_labels))
    if labels:
        raise InputError(
            f"{what} is PEM but holds only {', '.join(sorted(labels))}; expected {accepted}"
        )
    raise InputError(f"{what} is neither DER, PEM ({accepted}) nor JSON")


def _split_der(data: bytes, *, what: str) -> tuple[bytes, ...]:
    items: list[bytes] = []
    pos = 0
    while pos < len(data):
        if data[pos] != _DER_SEQUENCE:
            raise InputError(
                f"{what}: byte {pos} is 0x{data[pos]:02x}, not the start of a DER structure"
            )
        end = pos + _der_length(data, pos, what=what)
        items.append(data[pos:end])
        pos = end
    if not items:
        raise InputError(f"{what} is empty")
    return tuple(items)


def _der_length(data: bytes, pos: int, *, what: str) -> int:
    """Total length (header + content) of the DER element starting at *pos*."""
    if pos + 2 > len(data):
        raise InputError(f"{what}: truncated DER header at byte {pos}")
    first = data[pos + 1]
    if first < 0x80:
        header, length = 2, first
    else:
        n = first & 0x7F
        # Lengths of 1..4 bytes cover every structure below 4 GiB; 0x80 (indefinite) is BER.
        if not 1 <= n <= 4 or pos + 2 + n > len(data):
            raise InputError(f"{what}: invalid DER length at byte {pos}")
        header, length = 2 + n, int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
    if pos + header + length > len(data):
        raise InputError(
            f"{what}: DER structure at byte {pos} declares {length} bytes but the file ends "
            "earlier; the file is truncated"
        )
    return header + length


__all__ = [
    "MAX_CERT_FILE_BYTES",
    "MAX_COLLATERAL_FILE_BYTES",
    "MAX_ENDORSEMENT_FILES",
    "MAX_EVIDENCE_FILE_BYTES",
    "DecodedEvidence",
    "EndorsementKind",
    "EvidenceEncoding",
    "InputError",
    "classify_cert_file",
    "classify_collateral_file",
    "decode_evidence",
    "load_cert_file",
    "load_collateral_file",
    "load_endorsements",
    "load_evidence",
    "read_bounded",
    "split_der_items",
]
