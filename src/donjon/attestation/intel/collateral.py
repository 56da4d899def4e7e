"""Intel DCAP collateral: every accepted format parsed into one :class:`Collateral` value.

Accepted, each detected by content (no file names or flags needed):

- Intel PCS responses: TCB info ``{"tcbInfo": {...}, "signature": "<hex r||s>"}`` (v2 and v3, SGX
  and TDX) and QE identity ``{"enclaveIdentity": {...}, "signature": "..."}``. The signature covers
  the inner object's **exact bytes as they appear in the file**; they are kept verbatim.
- dcap-qvl ``QuoteCollateralV3`` JSON (``tcb_info`` and ``qe_identity`` as JSON strings with hex
  signatures, CRLs as hex DER, issuer chains as PEM). The signatures cover the exact strings.
- CRLs as DER, PEM (``X509 CRL``) or hex text of the DER.
- Certificates (issuer chains, the TCB Signing certificate) as PEM (several per item) or DER.

Rule 1: signed JSON is interpreted only from the exact bytes the signature covers, and duplicate
keys are refused, so what is checked is what is signed. Nothing here verifies a signature.
Rule 2: :func:`parse_collateral` raises only ``EvidenceFormatError``.
"""

from __future__ import annotations

import binascii
import enum
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from donjon.errors import EvidenceFormatError

MAX_COLLATERAL_ITEM_BYTES = 1024 * 1024  # bytes. Real TCB info is 2-30 KiB; a cap bounds parsing.
MAX_COLLATERAL_ITEMS = 64  # items per verification; a full set is 3-8
MAX_TCB_LEVELS = 512  # per TCB info or identity; Intel publishes a few dozen
MAX_TDX_MODULE_IDENTITIES = 64
MAX_ADVISORY_IDS = 256  # per TCB level

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n]*?-----END \1-----")
_PEM_BEGIN = b"-----BEGIN "
_HEX = re.compile(rb"\A\s*(?:[0-9A-Fa-f]{2})+\s*\Z")
# What cryptography raises on malformed certificates and CRLs, at load or on first access.
_X509_ERRORS = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
)


class TcbStatus(enum.StrEnum):
    """TCB status values of Intel's TCB info and identities (PCS API v4), and the QVL's results."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"
    # Only computed for TDX 1.5 (TD report 1.5), never published in a TCB level.
    TD_RELAUNCH_ADVISED = "TDRelaunchAdvised"
    TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED = "TDRelaunchAdvisedConfigurationNeeded"


_PLATFORM_STATUSES = frozenset(TcbStatus) - {
    TcbStatus.TD_RELAUNCH_ADVISED,
    TcbStatus.TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
}
_IDENTITY_STATUSES = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.OUT_OF_DATE, TcbStatus.REVOKED})


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """A JSON document and Intel's signature over its exact bytes.

    Attributes:
        body: the exact signed bytes (the ``tcbInfo``/``enclaveIdentity`` value as in the file).
        signature: ECDSA P-256 signature, raw ``r || s`` (64 bytes).
    """

    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One platform TCB level of a TCB info.

    Attributes:
        sgx_components: the 16 SGX component SVNs.
        pce_svn: the PCE SVN.
        tdx_components: the 16 TDX component SVNs (TDX TCB info), else None.
        tcb_date: the level's TCB date.
        status: the level's TCB status.
        advisory_ids: Intel security advisories that apply at this level.
    """

    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...] | None
    tcb_date: datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IdentityTcbLevel:
    """One TCB level of an enclave identity or TDX module identity, keyed by ISV SVN."""

    isv_svn: int
    tcb_date: datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TdxModule:
    """The expected signer and attributes of the TDX module (TCB info v3 ``tdxModule``)."""

    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes


@dataclass(frozen=True, slots=True)
class TdxModuleIdentity:
    """A TDX module identity (``TDX_01``, ``TDX_03``, ...) with its own TCB levels."""

    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    tcb_levels: tuple[IdentityTcbLevel, ...]


@dataclass(frozen=True, slots=True)
class TcbInfo:
    """Intel TCB info for one FMSPC (PCS ``/tcb``), SGX or TDX.

    Attributes:
        id: "SGX" or "TDX".
        version: 2 or 3.
        issue_date: when Intel issued it.
        next_update: when it stops being fresh.
        fmspc: the platform family (6 bytes).
        pce_id: 2 bytes.
        tcb_type: 0 (the only defined type).
        tcb_evaluation_data_number: Intel's TCB recovery counter.
        tcb_levels: platform TCB levels, in the document's (descending) order.
        tdx_module: TDX only: the expected TDX module signer and attributes.
        tdx_module_identities: TDX only (v3): per-major-version module identities.
        signed: the exact signed bytes and signature.
    """

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tcb_levels: tuple[TcbLevel, ...]
    tdx_module: TdxModule | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]
    signed: SignedDocument


@dataclass(frozen=True, slots=True)
class QeIdentity:
    """Intel's identity of a quoting enclave (PCS ``/qe/identity``): "QE" (SGX) or "TD_QE" (TDX).

    Attributes:
        id: "QE", "TD_QE" or "QVE".
        version: 2.
        issue_date: when Intel issued it.
        next_update: when it stops being fresh.
        tcb_evaluation_data_number: Intel's TCB recovery counter.
        miscselect: expected MISCSELECT after masking (u32).
        miscselect_mask: mask applied to the report's MISCSELECT.
        attributes: expected ATTRIBUTES after masking (16 bytes).
        attributes_mask: mask applied to the report's ATTRIBUTES.
        mrsigner: expected MRSIGNER of the QE.
        isv_prod_id: expected ISVPRODID.
        tcb_levels: levels by ISV SVN.
        signed: the exact signed bytes and signature.
    """

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    tcb_levels: tuple[IdentityTcbLevel, ...]
    signed: SignedDocument


@dataclass(frozen=True, slots=True)
class Collateral:
    """Everything found in a set of collateral items (nothing verified yet).

    Attributes:
        tcb_infos: TCB info documents.
        qe_identities: QE identity documents.
        crls: CRLs (root CA CRL, PCK CA CRLs).
        certificates: certificates (issuer chains, TCB Signing certificate, PCK CA).
    """

    tcb_infos: tuple[TcbInfo, ...] = ()
    qe_identities: tuple[QeIdentity, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    certificates: tuple[x509.Certificate, ...] = ()

    def merged(self, other: Collateral) -> Collateral:
        """This collateral and *other* together."""
        return Collateral(
            tcb_infos=self.tcb_infos + other.tcb_infos,
            qe_identities=self.qe_identities + other.qe_identities,
            crls=self.crls + other.crls,
            certificates=self.certificates + other.certificates,
        )


# ----------------------------------------------------------------------------------------- JSON


def _bad(what: str) -> EvidenceFormatError:
    return EvidenceFormatError(f"collateral: {what}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            # Two values for one key would let the signed bytes and the parsed value differ.
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
_WS = " \t\n\r"


def _loads(text: str, what: str) -> Any:
    try:
        value, end = _DECODER.raw_decode(text, _skip_ws(text, 0))
    except (ValueError, RecursionError) as e:
        raise _bad(f"{what} is not valid JSON: {e}") from None
    if _skip_ws(text, end) != len(text):
        raise _bad(f"{what} has data after its JSON value")
    return value


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _member_spans(text: str, what: str) -> dict[str, tuple[int, int]]:
    """The exact span of each member value of the top-level JSON object in *text*."""
    spans: dict[str, tuple[int, int]] = {}
    i = _skip_ws(text, 0)
    if not text.startswith("{", i):
        raise _bad(f"{what} is not a JSON object")
    i = _skip_ws(text, i + 1)
    if text.startswith("}", i):
        if _skip_ws(text, i + 1) != len(text):
            raise _bad(f"{what} has data after its JSON value")
        return spans
    try:
        while True:
            if not text.startswith('"', i):
                raise ValueError("expected a member name")
            key, i = _DECODER.raw_decode(text, i)
            i = _skip_ws(text, i)
            if not text.startswith(":", i):
                raise ValueError("expected ':'")
            start = _skip_ws(text, i + 1)
            _, end = _DECODER.raw_decode(text, start)
            if key in spans:
                raise ValueError(f"duplicate key {key!r}")
            spans[key] = (start, end)
            i = _skip_ws(text, end)
            if text.startswith(",", i):
                i = _skip_ws(text, i + 1)
                continue
            if text.startswith("}", i):
                break
            raise ValueError("expected ',' or '}'")
    except (ValueError, RecursionError) as e:
        raise _bad(f"{what} is not valid JSON: {e}") from None
    if _skip_ws(text, i + 1) != len(text):
        raise _bad(f"{what} has data after its JSON value")
    return spans


# ------------------------------------------------------------------------------- typed fields


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(f"{what} is not a JSON object")
    return v


def _list(v: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(v, list):
        raise _bad(f"{what} is not a JSON array")
    if len(v) > limit:
        raise _bad(f"{what} has {len(v)} entries, more than {limit}")
    return v


def _field(d: dict[str, Any], key: str, what: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise _bad(f"{what} has no {key!r}") from None


def _int(d: dict[str, Any], key: str, what: str, maximum: int) -> int:
    v = _field(d, key, what)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= maximum:
        raise _bad(f"{what}.{key} must be an integer 0..{maximum}, got {v!r}")
    return v


def _str(d: dict[str, Any], key: str, what: str) -> str:
    v = _field(d, key, what)
    if not isinstance(v, str):
        raise _bad(f"{what}.{key} must be a string")
    return v


def _hex(d: dict[str, Any], key: str, what: str, size: int) -> bytes:
    v = _str(d, key, what)
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise _bad(f"{what}.{key} is not hex") from None
    if len(raw) != size or len(v) != 2 * size:
        raise _bad(f"{what}.{key} must be {size} bytes of hex")
    return raw


def _time(d: dict[str, Any], key: str, what: str) -> datetime:
    v = _str(d, key, what)
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise _bad(f"{what}.{key} is not an ISO 8601 date-time: {v!r}") from None
    if t.tzinfo is None:
        raise _bad(f"{what}.{key} has no time zone: {v!r}")
    return t.astimezone(UTC)


def _status(d: dict[str, Any], what: str, allowed: frozenset[TcbStatus]) -> TcbStatus:
    v = _str(d, "tcbStatus", what)
    try:
        status = TcbStatus(v)
    except ValueError:
        status = None
    if status is None or status not in allowed:
        raise _bad(f"{what}.tcbStatus {v!r} is not a recognized TCB status")
    return status


def _advisories(d: dict[str, Any], what: str) -> tuple[str, ...]:
    raw = d.get("advisoryIDs", [])
    items = _list(raw, f"{what}.advisoryIDs", MAX_ADVISORY_IDS)
    if not all(isinstance(a, str) for a in items):
        raise _bad(f"{what}.advisoryIDs must be strings")
    return tuple(items)


def _svn_list(v: Any, what: str) -> tuple[int, ...]:
    items = _list(v, what, 16)
    if len(items) != 16:
        raise _bad(f"{what} must have 16 components, has {len(items)}")
    return tuple(_int(_obj(c, what), "svn", what, 0xFF) for c in items)


def _identity_levels(v: Any, what: str) -> tuple[IdentityTcbLevel, ...]:
    out = []
    for raw in _list(v, what, MAX_TCB_LEVELS):
        level = _obj(raw, what)
        out.append(
            IdentityTcbLevel(
                isv_svn=_int(_obj(_field(level, "tcb", what), what), "isvsvn", what, 0xFFFF),
                tcb_date=_time(level, "tcbDate", what),
                status=_status(level, what, _IDENTITY_STATUSES),
                advisory_ids=_advisories(level, what),
            )
        )
    return tuple(out)


def _platform_level(raw: Any, version: int, tdx: bool, what: str) -> TcbLevel:
    level = _obj(raw, what)
    tcb = _obj(_field(level, "tcb", what), f"{what}.tcb")
    tdx_components: tuple[int, ...] | None = None
    if version >= 3:
        sgx = _svn_list(_field(tcb, "sgxtcbcomponents", what), f"{what}.sgxtcbcomponents")
        if tdx:
            tdx_components = _svn_list(
                _field(tcb, "tdxtcbcomponents", what), f"{what}.tdxtcbcomponents"
            )
    else:
        sgx = tuple(_int(tcb, f"sgxtcbcomp{i:02d}svn", what, 0xFF) for i in range(1, 17))
    return TcbLevel(
        sgx_components=sgx,
        pce_svn=_int(tcb, "pcesvn", what, 0xFFFF),
        tdx_components=tdx_components,
        tcb_date=_time(level, "tcbDate", what),
        status=_status(level, what, _PLATFORM_STATUSES),
        advisory_ids=_advisories(level, what),
    )


def _tdx_module(raw: Any, what: str) -> TdxModule:
    d = _obj(raw, what)
    return TdxModule(
        mrsigner=_hex(d, "mrsigner", what, 48),
        attributes=_hex(d, "attributes", what, 8),
        attributes_mask=_hex(d, "attributesMask", what, 8),
    )


def parse_tcb_info(signed: SignedDocument) -> TcbInfo:
    """Interpret the exact signed bytes of a TCB info (``tcbInfo`` object, v2 or v3).

    Raises:
        EvidenceFormatError: not a well-formed TCB info.
    """
    what = "tcbInfo"
    d = _obj(_loads(_text(signed.body, what), what), what)
    version = _int(d, "version", what, 0xFFFF)
    if version not in (2, 3):
        raise _bad(f"TCB info version {version} is not supported (2 or 3)")
    tcb_id = _str(d, "id", what) if version >= 3 else "SGX"
    if tcb_id not in ("SGX", "TDX"):
        raise _bad(f"TCB info id {tcb_id!r} is neither 'SGX' nor 'TDX'")
    tdx = tcb_id == "TDX"
    levels = tuple(
        _platform_level(raw, version, tdx, f"{what}.tcbLevels[{i}]")
        for i, raw in enumerate(_list(_field(d, "tcbLevels", what), "tcbLevels", MAX_TCB_LEVELS))
    )
    identities: list[TdxModuleIdentity] = []
    raw_identities = d.get("tdxModuleIdentities", [])
    for i, raw in enumerate(
        _list(raw_identities, "tdxModuleIdentities", MAX_TDX_MODULE_IDENTITIES)
    ):
        w = f"{what}.tdxModuleIdentities[{i}]"
        ident = _obj(raw, w)
        module = _tdx_module(ident, w)
        identities.append(
            TdxModuleIdentity(
                id=_str(ident, "id", w),
                mrsigner=module.mrsigner,
                attributes=module.attributes,
                attributes_mask=module.attributes_mask,
                tcb_levels=_identity_levels(_field(ident, "tcbLevels", w), f"{w}.tcbLevels"),
            )
        )
    return TcbInfo(
        id=tcb_id,
        version=version,
        issue_date=_time(d, "issueDate", what),
        next_update=_time(d, "nextUpdate", what),
        fmspc=_hex(d, "fmspc", what, 6),
        pce_id=_hex(d, "pceId", what, 2),
        tcb_type=_int(d, "tcbType", what, 0xFFFF),
        tcb_evaluation_data_number=_int(d, "tcbEvaluationDataNumber", what, 0xFFFFFFFF),
        tcb_levels=levels,
        tdx_module=_tdx_module(d["tdxModule"], f"{what}.tdxModule") if "tdxModule" in d else None,
        tdx_module_identities=tuple(identities),
        signed=signed,
    )


def parse_qe_identity(signed: SignedDocument) -> QeIdentity:
    """Interpret the exact signed bytes of a QE identity (``enclaveIdentity`` object, v2).

    Raises:
        EvidenceFormatError: not a well-formed enclave identity.
    """
    what = "enclaveIdentity"
    d = _obj(_loads(_text(signed.body, what), what), what)
    version = _int(d, "version", what, 0xFFFF)
    if version != 2:
        raise _bad(f"enclave identity version {version} is not supported (2)")
    return QeIdentity(
        id=_str(d, "id", what),
        version=version,
        issue_date=_time(d, "issueDate", what),
        next_update=_time(d, "nextUpdate", what),
        tcb_evaluation_data_number=_int(d, "tcbEvaluationDataNumber", what, 0xFFFFFFFF),
        miscselect=int.from_bytes(_hex(d, "miscselect", what, 4), "little"),
        miscselect_mask=int.from_bytes(_hex(d, "miscselectMask", what, 4), "little"),
        attributes=_hex(d, "attributes", what, 16),
        attributes_mask=_hex(d, "attributesMask", what, 16),
        mrsigner=_hex(d, "mrsigner", what, 32),
        isv_prod_id=_int(d, "isvprodid", what, 0xFFFF),
        tcb_levels=_identity_levels(_field(d, "tcbLevels", what), f"{what}.tcbLevels"),
        signed=signed,
    )


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"{what} is not UTF-8 text") from None


def _signature_hex(v: Any, what: str) -> bytes:
    if not isinstance(v, str):
        raise _bad(f"{what} must be a hex string")
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise _bad(f"{what} is not hex") from None
    if len(raw) != 64:
        raise _bad(f"{what} must be 64 bytes (r || s), got {len(raw)}")
    return raw


# ------------------------------------------------------------------------- items by content


def _pcs_document(text: str, key: str, what: str) -> SignedDocument:
    spans = _member_spans(text, what)
    if set(spans) != {key, "signature"}:
        raise _bad(f"{what} must have exactly the members {key!r} and 'signature'")
    start, end = spans[key]
    s_start, s_end = spans["signature"]
    return SignedDocument(
        body=text[start:end].encode("utf-8"),
        signature=_signature_hex(_loads(text[s_start:s_end], what), f"{what} signature"),
    )


def _dcap_qvl(doc: dict[str, Any], what: str) -> Collateral:
    def signed(body_key: str, sig_key: str) -> SignedDocument:
        body = _field(doc, body_key, what)
        if not isinstance(body, str):
            raise _bad(f"{what}.{body_key} must be a JSON string")
        return SignedDocument(
            body=body.encode("utf-8"),
            signature=_signature_hex(_field(doc, sig_key, what), f"{what}.{sig_key}"),
        )

    crls: list[x509.CertificateRevocationList] = []
    certs: list[x509.Certificate] = []
    for key in ("root_ca_crl", "pck_crl"):
        if doc.get(key) is not None:
            value = doc[key]
            if not isinstance(value, str):
                raise _bad(f"{what}.{key} must be a hex string")
            crls.append(_load_crl(_hexdecode(value.encode(), f"{what}.{key}"), f"{what}.{key}"))
    for key in (
        "tcb_info_issuer_chain",
        "qe_identity_issuer_chain",
        "pck_crl_issuer_chain",
        "pck_certificate_chain",
    ):
        if doc.get(key) is not None:
            value = doc[key]
            if not isinstance(value, str):
                raise _bad(f"{what}.{key} must be a PEM string")
            found = _pem_items(value.encode(), f"{what}.{key}")
            certs.extend(c for c in found if isinstance(c, x509.Certificate))
    return Collateral(
        tcb_infos=(parse_tcb_info(signed("tcb_info", "tcb_info_signature")),),
        qe_identities=(parse_qe_identity(signed("qe_identity", "qe_identity_signature")),),
        crls=tuple(crls),
        certificates=tuple(certs),
    )


def _hexdecode(data: bytes, what: str) -> bytes:
    try:
        return binascii.unhexlify(b"".join(data.split()))
    except (binascii.Error, ValueError):
        raise _bad(f"{what} is not hex") from None


def _checked_certificate(cert: x509.Certificate, what: str) -> x509.Certificate:
    """Touch every part of *cert* the verifier reads, so malformed parts fail here, once."""
    try:
        _ = (cert.subject, cert.issuer, cert.serial_number, cert.extensions, cert.public_key())
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_algorithm_oid)
    except _X509_ERRORS as e:
        raise _bad(f"a certificate in {what} is malformed: {e}") from None
    return cert


def _checked_crl(crl: x509.CertificateRevocationList, what: str) -> x509.CertificateRevocationList:
    """Touch every part of *crl* the verifier reads, so malformed parts fail here, once."""
    try:
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.signature_algorithm_oid)
        _ = [(r.serial_number, r.revocation_date_utc) for r in crl]
    except _X509_ERRORS as e:
        raise _bad(f"{what} is a malformed CRL: {e}") from None
    return crl


def _load_crl(der: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_der_x509_crl(der)
    except _X509_ERRORS as e:
        raise _bad(f"{what} is not a DER CRL: {e}") from None
    return _checked_crl(crl, what)


def _pem_blocks(data: bytes, what: str, *, only_blocks: bool) -> list[tuple[bytes, bytes]]:
    """Split PEM text into (label, block) pairs.

    Every ``-----BEGIN`` must open a well-formed block: a damaged block is an error, never
    silently skipped. With *only_blocks*, nothing but whitespace and NULs may surround them.
    """
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    while (start := data.find(_PEM_BEGIN, pos)) != -1:
        m = _PEM_BLOCK.match(data, start)
        if m is None:
            raise _bad(f"{what} has a malformed PEM block at offset {start}")
        if only_blocks and data[pos:start].strip(b" \t\r\n\0"):
            raise _bad(f"{what} has data outside its PEM blocks (offset {pos})")
        out.append((m.group(1), m.group(0)))
        pos = m.end()
    if only_blocks and data[pos:].strip(b" \t\r\n\0"):
        raise _bad(f"{what} has data after its last PEM block")
    return out


def _pem_items(
    data: bytes, what: str, *, only_blocks: bool = False
) -> list[x509.Certificate | x509.CertificateRevocationList]:
    out: list[x509.Certificate | x509.CertificateRevocationList] = []
    for label, block in _pem_blocks(data, what, only_blocks=only_blocks):
        try:
            if label == b"CERTIFICATE":
                out.append(_checked_certificate(x509.load_pem_x509_certificate(block), what))
            elif label == b"X509 CRL":
                out.append(_checked_crl(x509.load_pem_x509_crl(block), what))
            # Other PEM blocks (keys, ...) are not collateral and are skipped, never interpreted.
        except _X509_ERRORS as e:
            raise _bad(f"a PEM {label.decode()} in {what} does not parse: {e}") from None
    return out


def load_certificates(
    data: bytes, what: str, *, only_blocks: bool = False
) -> tuple[x509.Certificate, ...]:
    """Certificates from PEM (one or more ``CERTIFICATE`` blocks) or one DER certificate.

    Args:
        data: PEM text or DER.
        what: names the input in error messages.
        only_blocks: refuse anything but PEM blocks, whitespace and NULs (a quote's PCK chain).

    Raises:
        EvidenceFormatError: nothing found, a malformed block, or a certificate that does not
            parse.
    """
    if _PEM_BEGIN in data:
        items = _pem_items(data, what, only_blocks=only_blocks)
        if only_blocks and len(items) != data.count(_PEM_BEGIN):
            raise _bad(f"{what} holds PEM blocks other than certificates")
        certs = tuple(i for i in items if isinstance(i, x509.Certificate))
    else:
        try:
            certs = (_checked_certificate(x509.load_der_x509_certificate(data), what),)
        except _X509_ERRORS as e:
            raise _bad(f"{what} is not a PEM or DER certificate: {e}") from None
    if not certs:
        raise _bad(f"{what} holds no certificate (expected PEM or DER)")
    return certs


def parse_collateral_item(data: bytes, *, index: int = 0) -> Collateral:
    """Parse one collateral item, detecting its format by content.

    Args:
        data: the item's raw bytes.
        index: its position, for error messages.

    Raises:
        EvidenceFormatError: unrecognized or malformed.
    """
    what = f"collateral item {index}"
    if len(data) > MAX_COLLATERAL_ITEM_BYTES:
        raise _bad(f"{what} is {len(data)} bytes, more than {MAX_COLLATERAL_ITEM_BYTES}")
    stripped = data.lstrip()
    if stripped.startswith(b"{"):
        text = _text(data, what)
        spans = _member_spans(text, what)
        if "tcbInfo" in spans:
            doc = _pcs_document(text, "tcbInfo", f"{what} (PCS TCB info)")
            return Collateral(tcb_infos=(parse_tcb_info(doc),))
        if "enclaveIdentity" in spans:
            doc = _pcs_document(text, "enclaveIdentity", f"{what} (PCS QE identity)")
            return Collateral(qe_identities=(parse_qe_identity(doc),))
        if "tcb_info" in spans and "qe_identity" in spans:
            return _dcap_qvl(_obj(_loads(text, what), what), f"{what} (dcap-qvl collateral)")
        raise _bad(
            f"{what} is JSON but neither Intel PCS TCB info / QE identity nor dcap-qvl "
            f"collateral (members: {', '.join(sorted(spans)[:8])})"
        )
    if stripped.startswith(b"-----BEGIN"):
        items = _pem_items(data, what)
        if not items:
            raise _bad(f"{what} is PEM without a CERTIFICATE or X509 CRL block")
        return Collateral(
            crls=tuple(i for i in items if isinstance(i, x509.CertificateRevocationList)),
            certificates=tuple(i for i in items if isinstance(i, x509.Certificate)),
        )
    der = _hexdecode(data, what) if _HEX.match(data) else data
    if der[:1] == b"\x30":
        try:
            crl = x509.load_der_x509_crl(der)
        except _X509_ERRORS:
            pass
        else:
            return Collateral(crls=(_checked_crl(crl, what),))
        try:
            cert = x509.load_der_x509_certificate(der)
        except _X509_ERRORS:
            pass
        else:
            return Collateral(certificates=(_checked_certificate(cert, what),))
    raise _bad(
        f"{what} is not a recognized format (PCS TCB info or QE identity JSON, dcap-qvl "
        "collateral JSON, a CRL in DER, PEM or hex, or certificates in PEM or DER)"
    )


def parse_collateral(items: Iterable[bytes]) -> Collateral:
    """Parse a set of collateral items of any accepted formats into one :class:`Collateral`.

    Raises:
        EvidenceFormatError: too many items, or an item that is unrecognized or malformed.
    """
    out = Collateral()
    for i, item in enumerate(items):
        if i >= MAX_COLLATERAL_ITEMS:
            raise _bad(f"more than {MAX_COLLATERAL_ITEMS} collateral items")
        out = out.merged(parse_collateral_item(item, index=i))
    return out


__all__ = [
    "MAX_COLLATERAL_ITEMS",
    "MAX_COLLATERAL_ITEM_BYTES",
    "Collateral",
    "IdentityTcbLevel",
    "QeIdentity",
    "SignedDocument",
    "TcbInfo",
    "TcbLevel",
    "TcbStatus",
    "TdxModule",
    "TdxModuleIdentity",
    "load_certificates",
    "parse_collateral",
    "parse_collateral_item",
    "parse_qe_identity",
    "parse_tcb_info",
]
