"""``nil`` evidence: the development format, signed by a per-machine key, that protects nothing.

A ``nil`` Keep is an ordinary host process. Its evidence lets the whole flow (keep runtime →
Steward → client) run without TEE hardware, and it is honest about what it is: every result
carries ``insecure: true`` and ``debug: true``, and policies must opt in (``allow_insecure``) to
accept it.

Wire format (``donjon-nil/v1``), a tagged COSE_Sign1 (RFC 9052 §4.2), ES384::

    protected   = { 1: -35,                      ; alg: ES384
                    4: bstr .size 32,            ; kid: SHA-256 of the signer's SPKI
                    "spki": bstr }               ; DER SubjectPublicKeyInfo (P-384)
    unprotected = {}
    payload     = deterministic CBOR of
                  { "format": "donjon-nil/v1",
                    "report_data": bstr .size 64,   ; the Keep's key + nonce binding
                    "measurement": bstr .size 48,   ; SHA-384 of the keep runtime
                    "debug": true,                  ; the host can always inspect a nil Keep
                    "hostname": tstr,               ; at most 255 bytes
                    "version": tstr }               ; donjon version, at most 64 bytes

Rule 1: the signature is checked over the exact bytes received, before the payload is decoded.
Rule 2: unknown header labels or claims are refused, not ignored: the format is ours and versioned.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cbor2

from donjon.attestation.result import Endorsements, Platform, VerifiedEvidence
from donjon.crypto.devkey import load_p384_spki, spki_sha256, verify_sign1_with_spki
from donjon.errors import ConfigError, DecodeError, EvidenceFormatError, SignatureError
from donjon.wire.cbor import decode, encode
from donjon.wire.cose import ALG_ES384, COSE_SIGN1_TAG, HEADER_ALG, HEADER_KID, decode_sign1

_logger = logging.getLogger(__name__)

NIL_FORMAT = "donjon-nil/v1"
"""The ``format`` claim of this version of nil evidence."""

HEADER_SPKI = "spki"
"""Protected-header label carrying the signer's DER SPKI (a text label: no IANA label fits)."""

REPORT_DATA_BYTES = 64
"""Attester-chosen data, as in every TEE report (see ``donjon.crypto.binding``)."""

MEASUREMENT_BYTES = 48
"""SHA-384 digest size."""

MAX_NIL_EVIDENCE_BYTES = 4096
"""Largest nil evidence accepted (bytes); real evidence is about 700 bytes. Bounds hostile input."""

MAX_HOSTNAME_BYTES = 255
"""Longest hostname claim (bytes, UTF-8): the POSIX HOST_NAME_MAX and DNS name limits."""

MAX_VERSION_BYTES = 64
"""Longest version claim (bytes, UTF-8)."""

_CLAIM_KEYS = frozenset({"format", "report_data", "measurement", "debug", "hostname", "version"})
_HEADER_KEYS = frozenset({HEADER_ALG, HEADER_KID, HEADER_SPKI})
_WHAT = "nil evidence"


@dataclass(frozen=True, slots=True)
class NilClaims:
    """The signed claims of nil evidence.

    Attributes:
        report_data: 64 bytes chosen by the Keep (key + nonce binding).
        measurement: 48-byte SHA-384 over the keep runtime (see
            ``donjon.backends.nil_evidence.runtime_measurement``).
        hostname: the machine that ran the Keep, informational.
        version: the donjon version of the keep runtime.
    """

    report_data: bytes
    measurement: bytes
    hostname: str
    version: str

    def __post_init__(self) -> None:
        _check_claims(self.report_data, self.measurement, self.hostname, self.version)

    def encode(self) -> bytes:
        """Deterministic CBOR (RFC 8949 §4.2) of the claims: the COSE_Sign1 payload."""
        return encode(
            {
                "format": NIL_FORMAT,
                "report_data": self.report_data,
                "measurement": self.measurement,
                "debug": True,
                "hostname": self.hostname,
                "version": self.version,
            }
        )


def decode_claims(payload: bytes) -> NilClaims:
    """Decode and check the claims map of nil evidence.

    Raises:
        EvidenceFormatError: not CBOR, not a map with exactly the documented keys and types.
    """
    try:
        item = decode(payload, what=f"{_WHAT} payload", max_bytes=MAX_NIL_EVIDENCE_BYTES)
    except DecodeError as e:
        raise EvidenceFormatError(e.message) from e
    if not isinstance(item, dict):
        raise EvidenceFormatError(f"{_WHAT}: payload must be a CBOR map of claims")
    keys = set(item)
    if keys != _CLAIM_KEYS:
        unknown = sorted(map(repr, keys - _CLAIM_KEYS))
        missing = sorted(_CLAIM_KEYS - keys)
        raise EvidenceFormatError(
            f"{_WHAT}: claims must be exactly {sorted(_CLAIM_KEYS)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    if type(item["format"]) is not str or item["format"] != NIL_FORMAT:
        raise EvidenceFormatError(
            f"{_WHAT}: format is {item['format']!r}; this verifier reads {NIL_FORMAT!r} only"
        )
    if item["debug"] is not True:
        raise EvidenceFormatError(
            f"{_WHAT}: debug must be true (the host can always inspect a nil Keep), "
            f"got {item['debug']!r}"
        )
    report_data, measurement = item["report_data"], item["measurement"]
    hostname, version = item["hostname"], item["version"]
    for name, value, typ in (
        ("report_data", report_data, bytes),
        ("measurement", measurement, bytes),
        ("hostname", hostname, str),
        ("version", version, str),
    ):
        if type(value) is not typ:
            raise EvidenceFormatError(
                f"{_WHAT}: claim {name!r} must be a {typ.__name__}, got {type(value).__name__}"
            )
    return NilClaims(report_data, measurement, hostname, version)


def _check_claims(report_data: bytes, measurement: bytes, hostname: str, version: str) -> None:
    if len(report_data) != REPORT_DATA_BYTES:
        raise EvidenceFormatError(
            f"{_WHAT}: report_data is {len(report_data)} bytes, expected {REPORT_DATA_BYTES}"
        )
    if len(measurement) != MEASUREMENT_BYTES:
        raise EvidenceFormatError(
            f"{_WHAT}: measurement is {len(measurement)} bytes, expected {MEASUREMENT_BYTES}"
        )
    for name, text, limit in (
        ("hostname", hostname, MAX_HOSTNAME_BYTES),
        ("version", version, MAX_VERSION_BYTES),
    ):
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise EvidenceFormatError(f"{_WHAT}: {name} is not valid UTF-8 text") from None
        if size > limit:
            raise EvidenceFormatError(f"{_WHAT}: {name} is {size} bytes; the limit is {limit}")
        if not text.isprintable():
            raise EvidenceFormatError(f"{_WHAT}: {name} holds control characters")


def nil_protected_header(spki: bytes) -> dict[Any, Any]:
    """The protected-header entries (besides ``alg``) that name the signer of nil evidence."""
    return {HEADER_KID: hashlib.sha256(spki).digest(), HEADER_SPKI: spki}


class NilVerifier:
    """Verifies ``donjon-nil/v1`` evidence. Authentic means only "signed by this dev key".

    Args:
        trusted_keys: DER SubjectPublicKeyInfos of the development keys to accept. ``None``
            accepts any development key and reports its fingerprint (``dev_key_sha256``) so a
            policy can decide; an empty sequence is refused (it would accept nothing).

    Raises:
        ConfigError: a trusted key that is not a canonical P-384 SPKI, or an empty list.

    Example:
        >>> from datetime import UTC, datetime
        >>> from donjon.attestation.result import Endorsements
        >>> verifier = NilVerifier()
        >>> now = datetime.now(UTC)
        >>> verifier.verify(b"\\xa0", endorsements=Endorsements(), now=now)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        donjon.errors.EvidenceFormatError: nil evidence: expected a tagged COSE_Sign1 ...
    """

    platform: Platform

    def __init__(self, *, trusted_keys: Sequence[bytes] | None = None) -> None:
        self.platform = Platform.NIL
        self._trusted: Mapping[str, bytes] | None = None
        if trusted_keys is not None:
            keys: Sequence[object] = trusted_keys  # a lone bytes object is a common mistake
            if isinstance(keys, bytes | bytearray) or len(keys) == 0:
                raise ConfigError(
                    "trusted_keys must be a non-empty sequence of DER SPKIs "
                    "(pass None to accept any development key)"
                )
            trusted: dict[str, bytes] = {}
            for i, spki in enumerate(trusted_keys):
                try:
                    load_p384_spki(bytes(spki), what=f"trusted key #{i}")
                except EvidenceFormatError as e:
                    raise ConfigError(e.message) from e
                trusted[spki_sha256(bytes(spki))] = bytes(spki)
            self._trusted = trusted

    def verify(
        self, evidence: bytes, *, endorsements: Endorsements, now: datetime
    ) -> VerifiedEvidence:
        """Verify nil evidence; *endorsements* and *now* are unused (nil has no chain or expiry).

        Returns:
            The claims, with ``debug`` true and the extra claims ``insecure`` (always true),
            ``dev_key_sha256``, ``dev_key_trusted``, ``hostname``, ``version`` and ``format``.

        Raises:
            EvidenceFormatError: malformed, oversized, or not exactly the documented format.
            SignatureError: signed by a key not in ``trusted_keys``, or a bad signature.
        """
        del endorsements, now
        # (1) Bound the input before parsing it.
        if len(evidence) > MAX_NIL_EVIDENCE_BYTES:
            raise EvidenceFormatError(
                f"{_WHAT} is {len(evidence)} bytes; the limit is {MAX_NIL_EVIDENCE_BYTES}"
            )
        # (2) A tagged COSE_Sign1 (RFC 9052 §4.2) with the exact nil header.
        try:
            item = decode(bytes(evidence), what=_WHAT, max_bytes=MAX_NIL_EVIDENCE_BYTES)
            if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
                raise EvidenceFormatError(
                    f"{_WHAT}: expected a tagged COSE_Sign1 (CBOR tag {COSE_SIGN1_TAG}); "
                    "is this evidence from another platform?"
                )
            message = decode_sign1(item, what=_WHAT)
        except DecodeError as e:
            raise EvidenceFormatError(e.message) from e
        if message.unprotected:
            raise EvidenceFormatError(f"{_WHAT}: unprotected header must be empty")
        if set(message.protected) != _HEADER_KEYS:
            raise EvidenceFormatError(
                f"{_WHAT}: protected header labels must be exactly alg, kid and "
                f"{HEADER_SPKI!r}, got {sorted(map(repr, message.protected))}"
            )
        if type(message.protected[HEADER_ALG]) is not int or message.alg != ALG_ES384:
            raise EvidenceFormatError(f"{_WHAT}: algorithm must be ES384 ({ALG_ES384})")
        spki, kid = message.protected[HEADER_SPKI], message.protected[HEADER_KID]
        if type(spki) is not bytes or type(kid) is not bytes:
            raise EvidenceFormatError(f"{_WHAT}: kid and {HEADER_SPKI!r} must be byte strings")
        # (3) The kid names the key it travels with, so a policy can log one stable fingerprint.
        if not hmac.compare_digest(kid, hashlib.sha256(spki).digest()):
            raise EvidenceFormatError(f"{_WHAT}: kid is not the SHA-256 of the signer's SPKI")
        fingerprint = spki_sha256(spki)
        # (4) Trust: the signer must be one of the configured development keys, if any.
        if self._trusted is not None:
            known = self._trusted.get(fingerprint)
            if known is None or not hmac.compare_digest(known, spki):
                raise SignatureError(
                    f"{_WHAT} is signed by development key sha256:{fingerprint}, which is not "
                    f"trusted (trusted: {', '.join('sha256:' + f for f in sorted(self._trusted))});"
                    " add its public key to the policy's trusted dev keys, or check which machine"
                    " produced the evidence (`donjon platform dev-key` shows a machine's key)"
                )
        # (5) The signature over the exact received bytes, then the payload.
        verify_sign1_with_spki(message, spki, what=_WHAT)
        claims = decode_claims(message.payload)
        _logger.debug("nil evidence verified, dev key sha256:%s", fingerprint)
        return VerifiedEvidence(
            platform=Platform.NIL,
            measurement=claims.measurement,
            report_data=claims.report_data,
            debug=True,
            tcb_status=None,
            claims={
                "insecure": True,
                "format": NIL_FORMAT,
                "dev_key_sha256": fingerprint,
                "dev_key_trusted": self._trusted is not None,
                "hostname": claims.hostname,
                "version": claims.version,
            },
        )
