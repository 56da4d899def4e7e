"""Steward's CBOR messages (protocol v1): dataclasses and their exact encodings. Sans-I/O.

Every message is a CBOR map with text keys and a version field ``"v": 1``, encoded
deterministically (RFC 8949 §4.2.1: sorted keys, shortest forms), so decode → encode gives the
same bytes. Decoding is strict: missing keys, wrong types, unknown keys, other versions, or values
over their size limits raise ``DecodeError`` naming the field. ``docs/protocol.md`` is the
normative description; this module is its implementation::

    ; GET /v1/nonce
    NonceResponse   = {"v": 1, "nonce": bstr, "expires_at": uint}
    ; POST /v1/attest, and its 200 answer
    AttestRequest   = {"v": 1, "csr": bstr, "platform": tstr, "evidence": bstr,
                       "nonce": bstr, ? "client_nonce": bstr,
                       ? "certs": [* bstr], ? "collateral": [* bstr]}
    AttestResponse  = {"v": 1, "chain": [+ bstr], "result": bstr}
    ; every 4xx/5xx
    ErrorBody       = {"error": tstr, "reason": tstr}
    ResultClaims    = {"v": 1, "platform": tstr, "measurement": bstr, "tcb_status": tstr / null,
                       "advisory_ids": [* tstr], "debug": bool, "insecure": bool,
                       "workload": tstr, "policy": tstr, "policy_digest": bstr,
                       "issued_at": uint, "expires_at": uint, "nonce": bstr / null,
                       "client_nonce": bstr / null,
                       "key_sha256": bstr, "evidence_sha256": bstr}
    ; the value of CSR extension DONJON_EVIDENCE (POST /)
    CsrEvidence     = {"v": 1, "platform": tstr, "evidence": bstr, "nonce": bstr,
                       ? "client_nonce": bstr,
                       ? "certs": [* bstr], ? "collateral": [* bstr]}

Times are POSIX seconds (UTC). ``ResultClaims`` is both the payload of the COSE_Sign1 attestation
result and the value of the ``DONJON_ATTESTATION_RESULT`` certificate extension.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from donjon.crypto.sealing import MAX_SEALED_BYTES
from donjon.errors import DecodeError
from donjon.wire.cbor import decode, encode

if TYPE_CHECKING:
    from cryptography import x509

PROTOCOL_VERSION = 1
"""The Steward protocol version this module speaks (the ``"v"`` field and the ``/v1`` prefix)."""

MAX_REQUEST_BYTES = 1024 * 1024
"""Largest request body Steward reads (bytes): evidence + collateral for Intel quotes is ~60 KiB;
one MiB leaves room and bounds memory per request."""

MAX_FIELD_BYTES = 512 * 1024
"""Largest single byte-string field (bytes): one quote, certificate or collateral document."""

MAX_LIST_ITEMS = 16
"""Most certificates or collateral documents in one request (Intel needs ~6)."""

MAX_TEXT_CHARS = 4096
"""Longest text field (characters): platform names, reasons, workload identities."""

MAX_EAR_CHARS = 256 * 1024
"""Longest EAR JWT in an attest response (characters): the annotated evidence is its bulk."""

MAX_CLIENT_NONCE_BYTES = 64
"""Longest relying-party nonce (bytes): 64 bytes is 512 bits, more than any freshness needs."""

CONTENT_TYPE = "application/cbor"
"""Media type of every v1 body (RFC 8949 §9.5)."""

_T = TypeVar("_T")


class _Fields:
    """Strict reader over a decoded CBOR map: each key taken once, leftovers are an error."""

    def __init__(self, value: Any, *, what: str, versioned: bool = True) -> None:
        if not isinstance(value, Mapping):
            raise DecodeError(f"{what} must be a CBOR map, got {type(value).__name__}")
        for key in value:
            if not isinstance(key, str):
                raise DecodeError(f"{what}: map keys must be text strings, got {key!r}")
        self._map: dict[str, Any] = dict(value)
        self._what = what
        if versioned:
            v = self._map.pop("v", None)
            if v is None:
                raise DecodeError(f"{what}: missing field 'v' (protocol version)")
            if type(v) is not int or v != PROTOCOL_VERSION:
                raise DecodeError(
                    f"{what}: protocol version {v!r} is not supported; this Steward speaks "
                    f"v{PROTOCOL_VERSION}"
                )

    def _take(
        self, key: str, kind: type[_T], *, optional: bool = False, default: Any = None
    ) -> Any:
        if key not in self._map:
            if optional:
                return default
            raise DecodeError(f"{self._what}: missing field {key!r}")
        value = self._map.pop(key)
        # bool is an int subclass in Python; CBOR keeps them apart and so do we.
        if type(value) is not kind:
            raise DecodeError(
                f"{self._what}: field {key!r} must be {_kind_name(kind)}, "
                f"got {_kind_name(type(value))}"
            )
        return value

    def bytes_(self, key: str, *, max_bytes: int = MAX_FIELD_BYTES) -> bytes:
        value: bytes = self._take(key, bytes)
        if len(value) > max_bytes:
            raise DecodeError(
                f"{self._what}: field {key!r} is {len(value)} bytes; the limit is {max_bytes}"
            )
        return value

    def __contains__(self, key: str) -> bool:
        return key in self._map

    def text(self, key: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
        value: str = self._take(key, str)
        if len(value) > max_chars:
            raise DecodeError(f"{self._what}: field {key!r} is longer than {max_chars} chars")
        return value

    def uint(self, key: str) -> int:
        value: int = self._take(key, int)
        if value < 0:
            raise DecodeError(f"{self._what}: field {key!r} must not be negative")
        return value

    def boolean(self, key: str) -> bool:
        value: bool = self._take(key, bool)
        return value

    def optional_flag(self, key: str) -> bool:
        """An optional ``true``; absent means false (``false`` itself is not sent)."""
        if key not in self._map:
            return False
        if self._map[key] is not True:
            raise DecodeError(f"{self._what}: field {key!r} must be true, or absent")
        self._map.pop(key)
        return True

    def optional_text(self, key: str) -> str | None:
        if self._map.get(key, 0) is None:
            self._map.pop(key)
            return None
        return self.text(key)

    def optional_bytes(self, key: str) -> bytes | None:
        if self._map.get(key, 0) is None:
            self._map.pop(key)
            return None
        return self.bytes_(key)

    def client_nonce(self) -> bytes | None:
        if "client_nonce" not in self._map:
            return None
        value = self.bytes_("client_nonce", max_bytes=MAX_CLIENT_NONCE_BYTES)
        if not value:
            raise DecodeError(f"{self._what}: field 'client_nonce' is empty; omit it instead")
        return value

    def bytes_list(
        self, key: str, *, optional: bool = False, min_items: int = 0
    ) -> tuple[bytes, ...]:
        raw = self._take(key, list, optional=optional, default=[])
        if len(raw) > MAX_LIST_ITEMS:
            raise DecodeError(
                f"{self._what}: field {key!r} has {len(raw)} items; the limit is {MAX_LIST_ITEMS}"
            )
        if len(raw) < min_items:
            raise DecodeError(f"{self._what}: field {key!r} needs at least {min_items} item(s)")
        for i, item in enumerate(raw):
            if type(item) is not bytes:
                raise DecodeError(f"{self._what}: {key}[{i}] must be a byte string")
            if len(item) > MAX_FIELD_BYTES:
                raise DecodeError(f"{self._what}: {key}[{i}] is over {MAX_FIELD_BYTES} bytes")
        return tuple(raw)

    def text_list(self, key: str, *, max_items: int = MAX_LIST_ITEMS * 4) -> tuple[str, ...]:
        raw = self._take(key, list)
        if len(raw) > max_items:
            raise DecodeError(
                f"{self._what}: field {key!r} has {len(raw)} items; the limit is {max_items}"
            )
        for i, item in enumerate(raw):
            if type(item) is not str or len(item) > MAX_TEXT_CHARS:
                raise DecodeError(f"{self._what}: {key}[{i}] must be a short text string")
        return tuple(raw)

    def mapping(self, key: str) -> dict[Any, Any]:
        value: dict[Any, Any] = self._take(key, dict)
        return value

    def done(self) -> None:
        if self._map:
            names = ", ".join(repr(k) for k in sorted(self._map))
            raise DecodeError(
                f"{self._what}: unknown field(s) {names}; this Steward speaks protocol "
                f"v{PROTOCOL_VERSION} (see docs/protocol.md)"
            )


def _kind_name(kind: type) -> str:
    return {
        bytes: "a byte string",
        str: "a text string",
        int: "an unsigned integer",
        bool: "a boolean",
        list: "an array",
        dict: "a map",
        type(None): "null",
        float: "a float",
    }.get(kind, kind.__name__)


def _decode_map(data: bytes, *, what: str) -> Any:
    return decode(data, what=what, max_bytes=MAX_REQUEST_BYTES)


@dataclass(frozen=True, slots=True)
class NonceResponse:
    """A fresh challenge from ``GET /v1/nonce``."""

    nonce: bytes
    expires_at: int

    def encode(self) -> bytes:
        return encode({"v": PROTOCOL_VERSION, "nonce": self.nonce, "expires_at": self.expires_at})

    @classmethod
    def decode(cls, data: bytes) -> NonceResponse:
        f = _Fields(_decode_map(data, what="nonce response"), what="nonce response")
        msg = cls(nonce=f.bytes_("nonce", max_bytes=1024), expires_at=f.uint("expires_at"))
        f.done()
        return msg


@dataclass(frozen=True, slots=True)
class AttestRequest:
    """``POST /v1/attest``: a CSR, evidence binding its key and the nonce, and endorsements.

    ``client_nonce`` is a relying party's own challenge, if the Keep was given one: the evidence
    then binds ``nonce || client_nonce`` and the result certifies it, so that relying party can
    tell a certificate made for its session from one replayed from an earlier Keep.
    """

    csr: bytes
    platform: str
    evidence: bytes
    nonce: bytes
    certs: tuple[bytes, ...] = ()
    collateral: tuple[bytes, ...] = ()
    client_nonce: bytes | None = None
    want_ear: bool = False

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "csr": self.csr,
            "platform": self.platform,
            "evidence": self.evidence,
            "nonce": self.nonce,
        }
        if self.client_nonce is not None:
            body["client_nonce"] = self.client_nonce
        if self.want_ear:  # absent unless asked: a Steward that predates EAR still answers
            body["ear"] = True
        # Absent rather than empty, so the common nil request stays small and canonical.
        if self.certs:
            body["certs"] = list(self.certs)
        if self.collateral:
            body["collateral"] = list(self.collateral)
        return encode(body)

    @classmethod
    def decode(cls, data: bytes) -> AttestRequest:
        f = _Fields(_decode_map(data, what="attest request"), what="attest request")
        msg = cls._take(f)
        f.done()
        return msg

    @classmethod
    def _take(cls, f: _Fields) -> AttestRequest:
        return cls(
            csr=f.bytes_("csr"),
            platform=f.text("platform"),
            evidence=f.bytes_("evidence"),
            nonce=f.bytes_("nonce", max_bytes=1024),
            certs=f.bytes_list("certs", optional=True),
            collateral=f.bytes_list("collateral", optional=True),
            client_nonce=f.client_nonce(),
            want_ear=f.optional_flag("ear"),
        )


MAX_SECRETS_PER_REQUEST = 64
"""Most secrets one ``/v1/secrets`` request may name (a workload config's ``[[secrets]]`` limit)."""

MAX_SEALED_SECRET_BYTES = MAX_SEALED_BYTES
"""Largest sealed secret in a response (bytes): the largest secret plus HPKE's overhead."""


@dataclass(frozen=True, slots=True)
class SecretsRequest:
    """``POST /v1/secrets``: an attestation exactly as for ``/v1/attest`` whose CSR names the
    workload (one ``donjon:workload:sha256:`` URI SAN), and the names of the secrets it asks for.
    """

    attest: AttestRequest
    names: tuple[str, ...]

    def encode(self) -> bytes:
        body = decode(self.attest.encode(), what="attest request")
        body["names"] = list(self.names)
        return encode(body)

    @classmethod
    def decode(cls, data: bytes) -> SecretsRequest:
        what = "secrets request"
        f = _Fields(_decode_map(data, what=what), what=what)
        names = f.text_list("names", max_items=MAX_SECRETS_PER_REQUEST)
        if not names:
            raise DecodeError(f"{what}: field 'names' is empty; name the secrets to release")
        if len(set(names)) != len(names):
            raise DecodeError(f"{what}: a secret is named twice in 'names'")
        attest = AttestRequest._take(f)
        f.done()
        return cls(attest=attest, names=names)


@dataclass(frozen=True, slots=True)
class SecretsResponse:
    """Released secrets, each sealed to the CSR's key (:mod:`donjon.crypto.sealing`, HPKE with
    the request's nonce and the secret's name in ``info``), with the certificate chain and the
    signed attestation result naming the workload they were released to (as ``/v1/attest``
    answers, so the Keep checks them the same way)."""

    chain: tuple[bytes, ...]
    result: bytes
    sealed: dict[str, bytes] = field(repr=False)

    def encode(self) -> bytes:
        return encode(
            {
                "v": PROTOCOL_VERSION,
                "chain": list(self.chain),
                "result": self.result,
                "secrets": dict(self.sealed),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> SecretsResponse:
        what = "secrets response"
        f = _Fields(_decode_map(data, what=what), what=what)
        raw = f.mapping("secrets")
        if len(raw) > MAX_SECRETS_PER_REQUEST:
            raise DecodeError(f"{what}: {len(raw)} secrets; at most {MAX_SECRETS_PER_REQUEST}")
        sealed: dict[str, bytes] = {}
        for name, value in raw.items():
            if type(name) is not str or len(name) > MAX_TEXT_CHARS:
                raise DecodeError(f"{what}: secret names must be short text strings")
            if type(value) is not bytes or len(value) > MAX_SEALED_SECRET_BYTES:
                raise DecodeError(
                    f"{what}: secret {name[:64]!r} must be a byte string of at most "
                    f"{MAX_SEALED_SECRET_BYTES} bytes"
                )
            sealed[name] = value
        msg = cls(
            chain=f.bytes_list("chain", min_items=2), result=f.bytes_("result"), sealed=sealed
        )
        f.done()
        return msg


@dataclass(frozen=True, slots=True)
class AttestResponse:
    """A successful attestation: the chain (leaf first, then the CA), the signed result, and,
    when the request asked for it, the same appraisal as an IETF RATS EAR (a JWT signed by
    the CA key)."""

    chain: tuple[bytes, ...]
    result: bytes
    ear: str | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "chain": list(self.chain),
            "result": self.result,
        }
        if self.ear is not None:
            body["ear"] = self.ear
        return encode(body)

    @classmethod
    def decode(cls, data: bytes) -> AttestResponse:
        f = _Fields(_decode_map(data, what="attest response"), what="attest response")
        ear = f.text("ear", max_chars=MAX_EAR_CHARS) if "ear" in f else None
        msg = cls(chain=f.bytes_list("chain", min_items=2), result=f.bytes_("result"), ear=ear)
        f.done()
        return msg


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """Why a request failed: the error class name and the explanation the CLI would print."""

    error: str
    reason: str

    def encode(self) -> bytes:
        return encode({"error": self.error, "reason": self.reason})

    @classmethod
    def decode(cls, data: bytes) -> ErrorBody:
        f = _Fields(_decode_map(data, what="error body"), what="error body", versioned=False)
        msg = cls(error=f.text("error"), reason=f.text("reason"))
        f.done()
        return msg


@dataclass(frozen=True, slots=True)
class ResultClaims:
    """What Steward verified and decided, signed (COSE_Sign1) and embedded in the certificate.

    Attributes:
        platform: the evidence platform ("sev-snp", "nil", ...).
        measurement: the primary launch measurement.
        tcb_status: the TCB status where the platform has one.
        advisory_ids: security advisories that apply to the TCB.
        debug: whether the TEE allowed the host to inspect the Keep.
        insecure: whether the evidence is development-only (nil, Enarx KVM).
        workload: the workload identity URI certified (``donjon:workload:sha256:<hex>`` or
            ``donjon:measurement:<platform>:<hex>``).
        policy: the name of the policy applied.
        policy_digest: SHA-256 of the policy's canonical form.
        issued_at, expires_at: the certificate's validity (POSIX seconds).
        nonce: the Steward nonce the evidence bound (None for Enarx evidence, which has none).
        client_nonce: the relying party's nonce the evidence also bound, if any.
        key_sha256: SHA-256 of the certified key's DER SubjectPublicKeyInfo.
        evidence_sha256: SHA-256 of the evidence bytes verified.
    """

    platform: str
    measurement: bytes
    tcb_status: str | None
    advisory_ids: tuple[str, ...]
    debug: bool
    insecure: bool
    workload: str
    policy: str
    policy_digest: bytes
    issued_at: int
    expires_at: int
    nonce: bytes | None
    key_sha256: bytes
    evidence_sha256: bytes
    client_nonce: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "platform": self.platform,
            "measurement": self.measurement,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "debug": self.debug,
            "insecure": self.insecure,
            "workload": self.workload,
            "policy": self.policy,
            "policy_digest": self.policy_digest,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "nonce": self.nonce,
            "client_nonce": self.client_nonce,
            "key_sha256": self.key_sha256,
            "evidence_sha256": self.evidence_sha256,
        }

    def encode(self) -> bytes:
        return encode(self.to_cbor())

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form (bytes as lowercase hex)."""
        out = self.to_cbor()
        return {k: v.hex() if isinstance(v, bytes) else v for k, v in out.items()}

    @classmethod
    def decode(cls, data: bytes) -> ResultClaims:
        f = _Fields(_decode_map(data, what="attestation result"), what="attestation result")
        msg = cls(
            platform=f.text("platform"),
            measurement=f.bytes_("measurement"),
            tcb_status=f.optional_text("tcb_status"),
            advisory_ids=f.text_list("advisory_ids"),
            debug=f.boolean("debug"),
            insecure=f.boolean("insecure"),
            workload=f.text("workload"),
            policy=f.text("policy"),
            policy_digest=f.bytes_("policy_digest"),
            issued_at=f.uint("issued_at"),
            expires_at=f.uint("expires_at"),
            nonce=f.optional_bytes("nonce"),
            key_sha256=f.bytes_("key_sha256"),
            evidence_sha256=f.bytes_("evidence_sha256"),
            client_nonce=f.optional_bytes("client_nonce"),
        )
        f.done()
        return msg


@dataclass(frozen=True, slots=True)
class CsrEvidence:
    """donjon evidence carried in a CSR extension (``DONJON_EVIDENCE``) for ``POST /``."""

    platform: str
    evidence: bytes
    nonce: bytes
    certs: tuple[bytes, ...] = ()
    collateral: tuple[bytes, ...] = ()
    client_nonce: bytes | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "platform": self.platform,
            "evidence": self.evidence,
            "nonce": self.nonce,
        }
        if self.client_nonce is not None:
            body["client_nonce"] = self.client_nonce
        if self.certs:
            body["certs"] = list(self.certs)
        if self.collateral:
            body["collateral"] = list(self.collateral)
        return encode(body)

    @classmethod
    def decode(cls, data: bytes) -> CsrEvidence:
        f = _Fields(_decode_map(data, what="CSR evidence"), what="CSR evidence")
        msg = cls(
            platform=f.text("platform"),
            evidence=f.bytes_("evidence"),
            nonce=f.bytes_("nonce", max_bytes=1024),
            certs=f.bytes_list("certs", optional=True),
            collateral=f.bytes_list("collateral", optional=True),
            client_nonce=f.client_nonce(),
        )
        f.done()
        return msg


def claims_of(certificate: x509.Certificate) -> ResultClaims:
    """The attestation-result claims inside a Steward-issued certificate.

    Only meaningful once the certificate's chain to a trusted Steward CA has been checked.

    Raises:
        DecodeError: no result extension, or one that does not decode.
    """
    from cryptography import x509

    from donjon.crypto.oids import DONJON_ATTESTATION_RESULT

    try:
        ext = certificate.extensions.get_extension_for_oid(DONJON_ATTESTATION_RESULT).value
    except x509.ExtensionNotFound as e:
        raise DecodeError("certificate carries no donjon attestation-result extension") from e
    if not isinstance(ext, x509.UnrecognizedExtension):  # pragma: no cover - unknown OID
        raise DecodeError("attestation-result extension is not raw bytes")
    return ResultClaims.decode(ext.value)


__all__ = [
    "CONTENT_TYPE",
    "MAX_CLIENT_NONCE_BYTES",
    "MAX_FIELD_BYTES",
    "MAX_LIST_ITEMS",
    "MAX_REQUEST_BYTES",
    "MAX_SEALED_SECRET_BYTES",
    "MAX_SECRETS_PER_REQUEST",
    "PROTOCOL_VERSION",
    "AttestRequest",
    "AttestResponse",
    "CsrEvidence",
    "ErrorBody",
    "NonceResponse",
    "ResultClaims",
    "SecretsRequest",
    "SecretsResponse",
    "claims_of",
]
