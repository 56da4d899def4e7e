"""Arm CCA attestation token: a pure, bounded parser (no cryptography, no I/O).

A CCA token holds two COSE_Sign1 messages, each wrapped in a byte string, in one of two
framings (the inner messages are the same bytes in both)::

    399({ 44234: bstr .cbor COSE_Sign1 (platform token),        ; EAT collection: RMM 1.0,
          44241: bstr .cbor COSE_Sign1 (realm token) })         ; draft-ffm-rats-cca-token-00

    907({ 44234: [263, bstr .cbor COSE_Sign1] (platform token), ; CMW collection: RMM 2.0
          44241: [263, bstr .cbor COSE_Sign1] (realm token) })  ; A7.2.3, later draft-ffm

In the CMW collection (RATS CMW, draft-ietf-rats-msg-wrap) each value is a CMW record
``[type, value]`` whose type is CoAP content-format 263 (``application/eat+cwt``).

Rule 1: every byte is hostile. Sizes are bounded, every claim is type- and size-checked, and the
only exception that leaves this module is ``EvidenceFormatError``.
Rule 2: claims are parsed, never trusted: nothing here checks a signature. The verifier
(``donjon.attestation.cca.verifier``) verifies both COSE_Sign1 over their exact received bytes.
Rule 3: unknown claims are skipped, as EAT (RFC 9711) requires; unknown collection entries
and profiles are refused, because they change what the known claims mean. Both collections are
closed maps in their CDDL; the one optional CMW entry, RMM 2.0's unsigned device token (44258),
is refused too: it lists devices the realm trusts, which donjon does not appraise.

Two profile generations are recognised:

* legacy (TF-M/TF-RMM, RMM spec 1.0): platform profile ``http://arm.com/CCA-SSD/1.0.0``, realm
  token without a profile, realm public key as a raw 97-byte P-384 point;
* draft-ffm-rats-cca-token-00: platform ``tag:arm.com,2023:cca_platform#1.0.0``, realm
  ``tag:arm.com,2023:realm#1.0.0`` with the realm public key as a COSE_Key.

The platform and realm profiles are independent (different firmware produces them), so the realm
key format follows the *realm* profile alone, as in veraison/rust-ccatoken.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import cbor2

from donjon.errors import DecodeError, EvidenceFormatError
from donjon.wire.cbor import decode
from donjon.wire.cose import CoseSign1, decode_sign1

# --- limits (bytes or counts) ---------------------------------------------------------------
MAX_TOKEN_BYTES = 64 * 1024
"""Largest CCA token accepted (bytes). Real tokens are 1-3 KiB; bounds memory for hostile input."""
MAX_SW_COMPONENTS = 128
"""Most platform software components accepted; an RSE-booted FVP reports 13."""
MAX_TEXT_CHARS = 1024
"""Longest text claim (profile, version, verification-service URL) accepted, in characters."""
MAX_PLATFORM_CONFIG_BYTES = 4096
"""Longest platform configuration claim accepted (bytes); real tokens carry 4 to 33 bytes."""
MAX_REALM_KEY_BYTES = 1024
"""Longest realm public key claim accepted (bytes): a P-384 point is 97, a COSE_Key about 110."""
_MAX_QUOTED_CHARS = 80
"""Longest piece of a hostile value quoted in an error message (characters)."""

# --- CBOR tags and labels (draft-ffm-rats-cca-token; RMM spec A7) ---------------
COLLECTION_TAG = 399
"""CBOR tag of the EAT token collection (RMM 1.0, draft-ffm-00)."""
CMW_COLLECTION_TAG = 907
"""CBOR tag of the CMW collection (RMM 2.0 A7.2.3 ``cca-token``; later draft-ffm revisions)."""
PLATFORM_TOKEN_KEY = 44234
REALM_TOKEN_KEY = 44241
DEVICE_TOKEN_KEY = 44258
"""RMM 2.0's optional, unsigned device token (``[601, bstr]``): recognised and refused."""
EAT_CWT_CONTENT_FORMAT = 263
"""CoAP content-format of ``application/eat+cwt``: the type of both CMW records."""
CMW_RECORD_ITEMS = 2
"""A CCA CMW record is exactly ``[type, value]`` (RMM 2.0 ``CMW-CWT-element``): no indicator."""

_EAT_NONCE = 10
_EAT_PROFILE = 265
_EAT_UEID = 256

_PLAT_LIFECYCLE = 2395
_PLAT_IMPLEMENTATION_ID = 2396
_PLAT_SW_COMPONENTS = 2399
_PLAT_VERIFICATION_SERVICE = 2400
_PLAT_CONFIG = 2401
_PLAT_HASH_ALGO = 2402

_REALM_PERSONALIZATION = 44235
_REALM_MEASUREMENT_HASH_ALGO = 44236
_REALM_PUBLIC_KEY = 44237
_REALM_RIM = 44238
_REALM_REM = 44239
_REALM_PUBLIC_KEY_HASH_ALGO = 44240

_SWC_TYPE = 1
_SWC_VALUE = 2
_SWC_VERSION = 4
_SWC_SIGNER_ID = 5
_SWC_HASH_ALGO = 6

HASH_SIZES: dict[str, int] = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
"""IANA hash names (Named Information Hash Algorithm Registry) CCA uses, with digest sizes."""

_MEASUREMENT_SIZES = frozenset(HASH_SIZES.values())
IMPLEMENTATION_ID_BYTES = 32
INSTANCE_ID_BYTES = 33
"""A UEID of type RAND (0x01) followed by 32 bytes (draft-ffm-00, "Instance ID")."""
UEID_TYPE_RAND = 0x01
REALM_CHALLENGE_BYTES = 64
REALM_PERSONALIZATION_BYTES = 64
REM_COUNT = 4


class PlatformProfile(enum.StrEnum):
    """Platform token profiles donjon verifies."""

    LEGACY = "http://arm.com/CCA-SSD/1.0.0"
    DRAFT_FFM_00 = "tag:arm.com,2023:cca_platform#1.0.0"


class RealmProfile(enum.StrEnum):
    """Realm token profiles donjon verifies; a legacy realm token carries no profile claim."""

    DRAFT_FFM_00 = "tag:arm.com,2023:realm#1.0.0"


class Lifecycle(enum.StrEnum):
    """Security lifecycle states (draft-ffm-00, "Security Lifecycle"; PSA Security Model).

    Each state is a range ``0xN000..0xN0FF``; the low byte is implementation defined.
    """

    UNKNOWN = "unknown"
    ASSEMBLY_AND_TEST = "assembly-and-test"
    ROT_PROVISIONING = "cca-platform-rot-provisioning"
    SECURED = "secured"
    NON_CCA_PLATFORM_DEBUG = "non-cca-platform-debug"
    RECOVERABLE_CCA_PLATFORM_DEBUG = "recoverable-cca-platform-debug"
    DECOMMISSIONED = "decommissioned"


_LIFECYCLE_BY_HIGH_BYTE = {
    0x00: Lifecycle.UNKNOWN,
    0x10: Lifecycle.ASSEMBLY_AND_TEST,
    0x20: Lifecycle.ROT_PROVISIONING,
    0x30: Lifecycle.SECURED,
    0x40: Lifecycle.NON_CCA_PLATFORM_DEBUG,
    0x50: Lifecycle.RECOVERABLE_CCA_PLATFORM_DEBUG,
    0x60: Lifecycle.DECOMMISSIONED,
}

TRUSTWORTHY_LIFECYCLES = frozenset({Lifecycle.SECURED, Lifecycle.NON_CCA_PLATFORM_DEBUG})
"""States in which the CCA platform RoT cannot be debugged, so realm memory stays opaque.

In ``non-cca-platform-debug`` only components *outside* the CCA platform (e.g. the normal world)
may be debugged; Veraison's arm-cca scheme treats it as trustworthy too. Every other state lets
the host see or alter the platform (or is not a production state), so donjon reports ``debug``.
"""


def classify_lifecycle(value: int) -> Lifecycle:
    """The lifecycle state a raw ``cca-platform-lifecycle`` value falls in.

    Raises:
        EvidenceFormatError: the value is outside every defined range.
    """
    if 0 <= value <= 0xFFFF and (value >> 8) in _LIFECYCLE_BY_HIGH_BYTE:
        return _LIFECYCLE_BY_HIGH_BYTE[value >> 8]
    raise EvidenceFormatError(
        f"CCA platform lifecycle {value:#x} is outside every defined range "
        "(0x0000-0x00ff, 0x1000-0x10ff, ..., 0x6000-0x60ff)"
    )


@dataclass(frozen=True, slots=True)
class SwComponent:
    """One measured platform software component (draft-ffm-00, "Software Components")."""

    measurement_type: str | None
    measurement_value: bytes
    version: str | None
    signer_id: bytes
    hash_algorithm: str | None


@dataclass(frozen=True, slots=True)
class PlatformClaims:
    """Claims of the platform token (draft-ffm-00, "Platform Claims")."""

    profile: PlatformProfile
    challenge: bytes
    implementation_id: bytes
    instance_id: bytes
    config: bytes
    lifecycle: int
    hash_algorithm: str
    sw_components: tuple[SwComponent, ...]
    verification_service: str | None

    @property
    def lifecycle_state(self) -> Lifecycle:
        return classify_lifecycle(self.lifecycle)


@dataclass(frozen=True, slots=True)
class RealmClaims:
    """Claims of the realm token (draft-ffm-00, "Realm Claims"; RMM spec A7).

    ``public_key`` holds the claim's exact bytes (a raw point or an encoded COSE_Key): the
    platform challenge binds those bytes, so they are never re-encoded.
    """

    profile: RealmProfile | None
    challenge: bytes
    personalization: bytes
    measurement_hash_algorithm: str
    public_key: bytes
    public_key_hash_algorithm: str
    rim: bytes
    rems: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PlatformToken:
    """The platform COSE_Sign1 and its claims."""

    message: CoseSign1
    claims: PlatformClaims


@dataclass(frozen=True, slots=True)
class RealmToken:
    """The realm COSE_Sign1 and its claims."""

    message: CoseSign1
    claims: RealmClaims


class Framing(enum.IntEnum):
    """How the two tokens are packed: the CBOR tag of the collection."""

    EAT_COLLECTION = COLLECTION_TAG
    """Tag 399, values are the wrapped COSE_Sign1 (RMM 1.0, draft-ffm-00)."""
    CMW_COLLECTION = CMW_COLLECTION_TAG
    """Tag 907, values are CMW records ``[263, bstr]`` (RMM 2.0, later draft-ffm)."""


@dataclass(frozen=True, slots=True)
class TokenCollection:
    """The collection unpacked, not parsed further: the exact bytes of both COSE_Sign1."""

    framing: Framing
    platform: bytes
    realm: bytes


@dataclass(frozen=True, slots=True)
class CcaToken:
    """A parsed (not yet verified) CCA token."""

    platform: PlatformToken
    realm: RealmToken
    framing: Framing = Framing.EAT_COLLECTION


# --- collection ------------------------------------------------------------------------------

_TOKEN_NAMES = {PLATFORM_TOKEN_KEY: "platform", REALM_TOKEN_KEY: "realm"}
_FRAMING_NAMES = {
    Framing.EAT_COLLECTION: f"tag-{COLLECTION_TAG} EAT collection",
    Framing.CMW_COLLECTION: f"tag-{CMW_COLLECTION_TAG} CMW collection",
}


def parse_collection(data: bytes) -> TokenCollection:
    """Unpack a tag-399 or tag-907 collection into the platform and realm token bytes.

    Raises:
        EvidenceFormatError: not a CCA token collection of either framing.
    """
    item = _decode(data, what="CCA token", max_bytes=MAX_TOKEN_BYTES)
    if not isinstance(item, cbor2.CBORTag):
        raise EvidenceFormatError(
            f"CCA token: expected CBOR tag {COLLECTION_TAG} or {CMW_COLLECTION_TAG} "
            f"(CCA token collection), got {type(item).__name__}"
        )
    if item.tag not in (COLLECTION_TAG, CMW_COLLECTION_TAG):
        raise EvidenceFormatError(
            f"CCA token: CBOR tag {item.tag}, expected {COLLECTION_TAG} (EAT collection) or "
            f"{CMW_COLLECTION_TAG} (CMW collection)"
        )
    framing = Framing(item.tag)
    what = f"CCA token ({_FRAMING_NAMES[framing]})"
    body = item.value
    if not isinstance(body, dict):
        raise EvidenceFormatError(f"{what}: the collection must be a CBOR map")
    _refuse_unknown_entries(body, framing, what=what)
    tokens: dict[int, bytes] = {}
    for key, name in _TOKEN_NAMES.items():
        if key not in body:
            raise EvidenceFormatError(f"{what}: the {name} token ({key}) is missing")
        value = body[key]
        if framing is Framing.CMW_COLLECTION:
            value = _cmw_record_value(value, name=name, key=key, what=what)
        elif not isinstance(value, bytes):
            hint = (
                " (a CMW record belongs in a tag-907 collection)" if isinstance(value, list) else ""
            )
            raise EvidenceFormatError(
                f"{what}: the {name} token ({key}) must be a byte string wrapping a "
                f"COSE_Sign1{hint}"
            )
        tokens[key] = value
    return TokenCollection(
        framing=framing, platform=tokens[PLATFORM_TOKEN_KEY], realm=tokens[REALM_TOKEN_KEY]
    )


def _refuse_unknown_entries(body: dict[Any, Any], framing: Framing, *, what: str) -> None:
    # Type first: under ``python -bb`` comparing a bytes key with an int raises BytesWarning.
    unknown = [k for k in body if type(k) is not int or k not in _TOKEN_NAMES]
    if not unknown:
        return
    if framing is Framing.CMW_COLLECTION and any(
        type(k) is int and k == DEVICE_TOKEN_KEY for k in unknown
    ):
        raise EvidenceFormatError(
            f"{what}: the realm has a device token ({DEVICE_TOKEN_KEY}, RMM 2.0 device "
            "assignment); donjon does not appraise assigned devices, so it cannot vouch for "
            "this realm. Attest the realm before devices are assigned to it"
        )
    raise EvidenceFormatError(
        f"{what}: unexpected collection entries {_brief(unknown[:4])}; only {PLATFORM_TOKEN_KEY} "
        f"(platform) and {REALM_TOKEN_KEY} (realm) are defined"
    )


def _cmw_record_value(record: Any, *, name: str, key: int, what: str) -> bytes:
    """The value of a CCA CMW record ``[263, bstr]`` (RMM 2.0 ``CMW-CWT-element``)."""
    shape = f"a CMW record [{EAT_CWT_CONTENT_FORMAT}, bstr .cbor COSE_Sign1]"
    if isinstance(record, bytes):
        raise EvidenceFormatError(
            f"{what}: the {name} token ({key}) is a bare byte string; a tag-{CMW_COLLECTION_TAG} "
            f"collection holds {shape} (bare byte strings belong in tag {COLLECTION_TAG})"
        )
    if not isinstance(record, list) or len(record) != CMW_RECORD_ITEMS:
        size = f" of {len(record)} items" if isinstance(record, list) else ""
        raise EvidenceFormatError(
            f"{what}: the {name} token ({key}) must be {shape}, got {type(record).__name__}{size}"
        )
    content_type, value = record
    if type(content_type) is not int or content_type != EAT_CWT_CONTENT_FORMAT:
        raise EvidenceFormatError(
            f"{what}: the {name} token's CMW type is {_brief(content_type)}; a CCA token carries "
            f"CoAP content-format {EAT_CWT_CONTENT_FORMAT} (application/eat+cwt) here"
        )
    if not isinstance(value, bytes):
        raise EvidenceFormatError(
            f"{what}: the {name} token's CMW value must be a byte string wrapping a COSE_Sign1"
        )
    return value


def _brief(value: Any) -> str:
    # Hostile keys and types can be long byte strings: quote only their start.
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED_CHARS else text[: _MAX_QUOTED_CHARS - 3] + "..."


def split_collection(data: bytes) -> tuple[bytes, bytes]:
    """Split a collection (either framing) into the platform and realm token bytes.

    Raises:
        EvidenceFormatError: not a CCA token collection.
    """
    collection = parse_collection(data)
    return collection.platform, collection.realm


def parse_token(data: bytes) -> CcaToken:
    """Parse a CCA token collection into its platform and realm tokens.

    Args:
        data: the token bytes as received (tag 399 EAT collection or tag 907 CMW collection).

    Returns:
        The parsed, unverified token.

    Raises:
        EvidenceFormatError: anything that is not a well-formed token of a known profile.
    """
    collection = parse_collection(data)
    return CcaToken(
        platform=parse_platform_token(collection.platform),
        realm=parse_realm_token(collection.realm),
        framing=collection.framing,
    )


def _sign1(data: bytes, *, what: str) -> CoseSign1:
    try:
        return decode_sign1(data, what=what, max_bytes=MAX_TOKEN_BYTES)
    except DecodeError as e:
        raise EvidenceFormatError(e.message) from e
    except BytesWarning as e:
        raise EvidenceFormatError(f"{what}: a CBOR map mixes text and byte-string keys") from e


def _decode(data: bytes, *, what: str, max_bytes: int = MAX_TOKEN_BYTES) -> Any:
    try:
        return decode(data, what=what, max_bytes=max_bytes)
    except DecodeError as e:
        raise EvidenceFormatError(e.message) from e
    except BytesWarning as e:
        # cbor2 compares colliding map keys; under ``python -bb`` "k" vs b"k" raises this.
        raise EvidenceFormatError(f"{what}: a CBOR map mixes text and byte-string keys") from e


def _claims_map(message: CoseSign1, *, what: str) -> dict[Any, Any]:
    claims = _decode(message.payload, what=f"{what} claims")
    if not isinstance(claims, dict):
        raise EvidenceFormatError(f"{what}: the payload must be a CBOR map of claims")
    return claims


# --- claim readers ---------------------------------------------------------------------------


def _require(claims: dict[Any, Any], key: int, name: str, *, what: str) -> Any:
    if key not in claims:
        raise EvidenceFormatError(f"{what}: mandatory claim {name} ({key}) is missing")
    return claims[key]


def _bytes(value: Any, name: str, *, what: str, sizes: frozenset[int] | None = None) -> bytes:
    if not isinstance(value, bytes):
        raise EvidenceFormatError(f"{what}: claim {name} must be a byte string")
    if sizes is not None and len(value) not in sizes:
        allowed = "/".join(str(s) for s in sorted(sizes))
        raise EvidenceFormatError(
            f"{what}: claim {name} is {len(value)} bytes; expected {allowed} bytes"
        )
    return value


def _text(value: Any, name: str, *, what: str) -> str:
    if not isinstance(value, str):
        raise EvidenceFormatError(f"{what}: claim {name} must be a text string")
    if len(value) > MAX_TEXT_CHARS:
        raise EvidenceFormatError(
            f"{what}: claim {name} is {len(value)} characters; the limit is {MAX_TEXT_CHARS}"
        )
    return value


def _hash_name(value: Any, name: str, *, what: str) -> str:
    text = _text(value, name, what=what)
    if text not in HASH_SIZES:
        raise EvidenceFormatError(
            f"{what}: claim {name} names hash {text!r}; supported: {', '.join(HASH_SIZES)}"
        )
    return text


# --- platform token --------------------------------------------------------------------------


def parse_platform_token(data: bytes) -> PlatformToken:
    """Parse the platform COSE_Sign1 and its claims (draft-ffm-00, "Platform Claims").

    Raises:
        EvidenceFormatError: malformed message or claims, or an unknown profile.
    """
    what = "CCA platform token"
    message = _sign1(data, what=what)
    claims = _claims_map(message, what=what)

    profile_text = _text(_require(claims, _EAT_PROFILE, "profile", what=what), "profile", what=what)
    try:
        profile = PlatformProfile(profile_text)
    except ValueError:
        raise EvidenceFormatError(
            f"{what}: unsupported profile {profile_text!r}; donjon verifies "
            + " and ".join(repr(p.value) for p in PlatformProfile)
        ) from None

    challenge = _bytes(
        _require(claims, _EAT_NONCE, "challenge", what=what),
        "challenge",
        what=what,
        sizes=_MEASUREMENT_SIZES,
    )
    implementation_id = _bytes(
        _require(claims, _PLAT_IMPLEMENTATION_ID, "implementation-id", what=what),
        "implementation-id",
        what=what,
        sizes=frozenset({IMPLEMENTATION_ID_BYTES}),
    )
    instance_id = _bytes(
        _require(claims, _EAT_UEID, "instance-id", what=what),
        "instance-id",
        what=what,
        sizes=frozenset({INSTANCE_ID_BYTES}),
    )
    if instance_id[0] != UEID_TYPE_RAND:
        raise EvidenceFormatError(
            f"{what}: instance-id must be a UEID of type RAND (first byte 0x01), "
            f"got type {instance_id[0]:#04x}"
        )
    config = _bytes(_require(claims, _PLAT_CONFIG, "config", what=what), "config", what=what)
    if len(config) > MAX_PLATFORM_CONFIG_BYTES:
        raise EvidenceFormatError(
            f"{what}: config is {len(config)} bytes; the limit is {MAX_PLATFORM_CONFIG_BYTES}"
        )
    lifecycle = _require(claims, _PLAT_LIFECYCLE, "lifecycle", what=what)
    if type(lifecycle) is not int:
        raise EvidenceFormatError(f"{what}: claim lifecycle must be an unsigned integer")
    classify_lifecycle(lifecycle)
    hash_algorithm = _hash_name(
        _require(claims, _PLAT_HASH_ALGO, "hash-algo-id", what=what), "hash-algo-id", what=what
    )
    sw_components = _sw_components(
        _require(claims, _PLAT_SW_COMPONENTS, "sw-components", what=what), what=what
    )
    service = claims.get(_PLAT_VERIFICATION_SERVICE)
    verification_service = (
        None if service is None else _text(service, "verification-service", what=what)
    )
    return PlatformToken(
        message=message,
        claims=PlatformClaims(
            profile=profile,
            challenge=challenge,
            implementation_id=implementation_id,
            instance_id=instance_id,
            config=config,
            lifecycle=lifecycle,
            hash_algorithm=hash_algorithm,
            sw_components=sw_components,
            verification_service=verification_service,
        ),
    )


def _sw_components(value: Any, *, what: str) -> tuple[SwComponent, ...]:
    if not isinstance(value, list):
        raise EvidenceFormatError(f"{what}: claim sw-components must be an array")
    if not value:
        raise EvidenceFormatError(f"{what}: claim sw-components must not be empty")
    if len(value) > MAX_SW_COMPONENTS:
        raise EvidenceFormatError(
            f"{what}: {len(value)} software components; the limit is {MAX_SW_COMPONENTS}"
        )
    out: list[SwComponent] = []
    for i, entry in enumerate(value):
        where = f"{what} sw-component[{i}]"
        if not isinstance(entry, dict):
            raise EvidenceFormatError(f"{where}: must be a map")
        mtype = entry.get(_SWC_TYPE)
        version = entry.get(_SWC_VERSION)
        halg = entry.get(_SWC_HASH_ALGO)
        out.append(
            SwComponent(
                measurement_type=None if mtype is None else _text(mtype, "type", what=where),
                measurement_value=_bytes(
                    _require(entry, _SWC_VALUE, "measurement-value", what=where),
                    "measurement-value",
                    what=where,
                    sizes=_MEASUREMENT_SIZES,
                ),
                version=None if version is None else _text(version, "version", what=where),
                signer_id=_bytes(
                    _require(entry, _SWC_SIGNER_ID, "signer-id", what=where),
                    "signer-id",
                    what=where,
                    sizes=_MEASUREMENT_SIZES,
                ),
                hash_algorithm=None if halg is None else _text(halg, "hash-algo-id", what=where),
            )
        )
    return tuple(out)


# --- realm token -----------------------------------------------------------------------------


def parse_realm_token(data: bytes) -> RealmToken:
    """Parse the realm COSE_Sign1 and its claims (draft-ffm-00, "Realm Claims"; RMM spec A7).

    Raises:
        EvidenceFormatError: malformed message or claims, or an unknown profile.
    """
    what = "CCA realm token"
    message = _sign1(data, what=what)
    claims = _claims_map(message, what=what)

    profile: RealmProfile | None = None
    if _EAT_PROFILE in claims:
        text = _text(claims[_EAT_PROFILE], "profile", what=what)
        try:
            profile = RealmProfile(text)
        except ValueError:
            raise EvidenceFormatError(
                f"{what}: unsupported profile {text!r}; donjon verifies legacy realm tokens "
                f"(no profile) and {RealmProfile.DRAFT_FFM_00.value!r}"
            ) from None

    challenge = _bytes(
        _require(claims, _EAT_NONCE, "challenge", what=what),
        "challenge",
        what=what,
        sizes=frozenset({REALM_CHALLENGE_BYTES}),
    )
    personalization = _bytes(
        _require(claims, _REALM_PERSONALIZATION, "personalization-value", what=what),
        "personalization-value",
        what=what,
        sizes=frozenset({REALM_PERSONALIZATION_BYTES}),
    )
    measurement_alg = _hash_name(
        _require(claims, _REALM_MEASUREMENT_HASH_ALGO, "hash-algo-id", what=what),
        "hash-algo-id",
        what=what,
    )
    size = frozenset({HASH_SIZES[measurement_alg]})
    rim = _bytes(
        _require(claims, _REALM_RIM, "initial-measurement", what=what),
        f"initial-measurement ({measurement_alg})",
        what=what,
        sizes=size,
    )
    rem_value = _require(claims, _REALM_REM, "extensible-measurements", what=what)
    if not isinstance(rem_value, list) or len(rem_value) != REM_COUNT:
        raise EvidenceFormatError(
            f"{what}: claim extensible-measurements must be an array of {REM_COUNT} byte strings"
        )
    rems = tuple(
        _bytes(v, f"extensible-measurements[{i}] ({measurement_alg})", what=what, sizes=size)
        for i, v in enumerate(rem_value)
    )
    public_key = _bytes(
        _require(claims, _REALM_PUBLIC_KEY, "public-key", what=what), "public-key", what=what
    )
    if not public_key or len(public_key) > MAX_REALM_KEY_BYTES:
        raise EvidenceFormatError(
            f"{what}: claim public-key is {len(public_key)} bytes; "
            f"expected 1 to {MAX_REALM_KEY_BYTES}"
        )
    key_alg = _hash_name(
        _require(claims, _REALM_PUBLIC_KEY_HASH_ALGO, "public-key-hash-algo-id", what=what),
        "public-key-hash-algo-id",
        what=what,
    )
    return RealmToken(
        message=message,
        claims=RealmClaims(
            profile=profile,
            challenge=challenge,
            personalization=personalization,
            measurement_hash_algorithm=measurement_alg,
            public_key=public_key,
            public_key_hash_algorithm=key_alg,
            rim=rim,
            rems=rems,
        ),
    )


__all__ = [
    "CMW_COLLECTION_TAG",
    "CMW_RECORD_ITEMS",
    "COLLECTION_TAG",
    "DEVICE_TOKEN_KEY",
    "EAT_CWT_CONTENT_FORMAT",
    "HASH_SIZES",
    "MAX_PLATFORM_CONFIG_BYTES",
    "MAX_REALM_KEY_BYTES",
    "MAX_SW_COMPONENTS",
    "MAX_TEXT_CHARS",
    "MAX_TOKEN_BYTES",
    "PLATFORM_TOKEN_KEY",
    "REALM_TOKEN_KEY",
    "TRUSTWORTHY_LIFECYCLES",
    "CcaToken",
    "Framing",
    "Lifecycle",
    "PlatformClaims",
    "PlatformProfile",
    "PlatformToken",
    "RealmClaims",
    "RealmProfile",
    "RealmToken",
    "SwComponent",
    "TokenCollection",
    "classify_lifecycle",
    "parse_collection",
    "parse_platform_token",
    "parse_realm_token",
    "parse_token",
    "split_collection",
]
