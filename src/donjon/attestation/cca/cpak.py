"""CCA Platform Attestation Keys (CPAKs): the trust anchors of CCA platform tokens.

CCA has no vendor root certificate: each platform's CPAK is endorsed out of band by the platform
vendor (or, for the FVP, published with TF-A/TF-M as a test key). A relying party therefore
pins CPAKs it obtained from a source it trusts. This module reads the formats in use:

* PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo), one or more blocks, or DER SPKI
  (TF-M ``cca_platform.pub``);
* a JWK object, a JWK Set ``{"keys": [...]}``, or a list of JWKs (trustee ``cpak-pub.json``);
* Veraison trust-anchor entries ``{"pkey": JWK, "implementation-id": hex, "instance-id": hex}``,
  alone or in a list (rust-ccatoken ``ta-tfa.json``). The IDs, when present, restrict the key to
  that platform.

Errors are ``CpakError`` (a ``ChainError``): a CPAK that cannot be read is a trust-anchor problem.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from donjon.crypto.keyformats import (
    EcPublicKey,
    KeyFormatError,
    ec_public_key_from_jwk,
    ec_public_key_from_spki,
    public_key_der,
)
from donjon.errors import ChainError

MAX_CPAK_BYTES = 64 * 1024
"""Largest CPAK file accepted (bytes); a trust-anchor list of 100 JWKs is about 40 KiB."""
MAX_CPAK_ENTRIES = 256
"""Most keys read from one CPAK file."""

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


class CpakError(ChainError):
    """A CPAK that cannot be read, or none that applies to the token."""


@dataclass(frozen=True, slots=True)
class Cpak:
    """One CCA platform attestation public key and the platform it is restricted to (if any).

    Attributes:
        key: the EC public key.
        spki_der: DER SubjectPublicKeyInfo of the key (its identity for comparison and caching).
        implementation_id: the 32-byte implementation ID the key is endorsed for, or None.
        instance_id: the 33-byte instance ID (UEID) the key is endorsed for, or None.
    """

    key: EcPublicKey
    spki_der: bytes
    implementation_id: bytes | None = None
    instance_id: bytes | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the SubjectPublicKeyInfo, lowercase hex."""
        return hashlib.sha256(self.spki_der).hexdigest()

    def applies_to(self, *, implementation_id: bytes, instance_id: bytes) -> bool:
        """Whether this key may verify a token from the given platform."""
        if self.implementation_id is not None and self.implementation_id != implementation_id:
            return False
        return self.instance_id is None or self.instance_id == instance_id


def load_cpaks(data: bytes, *, what: str = "CPAK") -> tuple[Cpak, ...]:
    """Read every CPAK in *data* (PEM, DER, JWK, JWK Set or Veraison trust-anchor JSON).

    Args:
        data: the file's bytes.
        what: names the input in error messages.

    Returns:
        At least one key.

    Raises:
        CpakError: the bytes hold no CPAK in a known format, or a malformed one.
    """
    if len(data) > MAX_CPAK_BYTES:
        raise CpakError(f"{what}: {len(data)} bytes; the limit is {MAX_CPAK_BYTES} bytes")
    stripped = data.strip()
    if not stripped:
        raise CpakError(f"{what}: empty; expected a PEM public key or a JWK")
    try:
        if stripped.startswith(b"-----BEGIN"):
            cpaks = _from_pem(stripped, what=what)
        elif stripped[:1] in (b"{", b"["):
            cpaks = _from_json(stripped, what=what)
        else:
            cpaks = (_cpak(ec_public_key_from_spki(stripped, what=what)),)
    except KeyFormatError as e:
        raise CpakError(f"{e.message}; a CPAK is a PEM/DER public key or a JWK") from e
    if not cpaks:
        raise CpakError(f"{what}: no public key found")
    if len(cpaks) > MAX_CPAK_ENTRIES:
        raise CpakError(f"{what}: {len(cpaks)} keys; the limit is {MAX_CPAK_ENTRIES}")
    return cpaks


def _cpak(
    key: EcPublicKey, implementation_id: bytes | None = None, instance_id: bytes | None = None
) -> Cpak:
    return Cpak(
        key=key,
        spki_der=public_key_der(key),
        implementation_id=implementation_id,
        instance_id=instance_id,
    )


def _from_pem(data: bytes, *, what: str) -> tuple[Cpak, ...]:
    out: list[Cpak] = []
    for n, match in enumerate(_PEM_BLOCK.finditer(data)):
        if n >= MAX_CPAK_ENTRIES:
            raise CpakError(f"{what}: more than {MAX_CPAK_ENTRIES} PEM blocks")
        label = match.group(1).decode("ascii")
        if label != "PUBLIC KEY":
            raise CpakError(
                f"{what}: PEM block {label!r}; a CPAK is a 'PUBLIC KEY' (SubjectPublicKeyInfo)"
            )
        out.append(_cpak(ec_public_key_from_spki(match.group(0), what=what)))
    return tuple(out)


def _from_json(data: bytes, *, what: str) -> tuple[Cpak, ...]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CpakError(f"{what}: not valid JSON: {e}") from e
    if isinstance(doc, Mapping) and isinstance(doc.get("keys"), list):
        entries: list[Any] = doc["keys"]
    elif isinstance(doc, list):
        entries = doc
    else:
        entries = [doc]
    if len(entries) > MAX_CPAK_ENTRIES:
        raise CpakError(f"{what}: {len(entries)} keys; the limit is {MAX_CPAK_ENTRIES}")
    return tuple(_from_json_entry(e, what=f"{what}[{i}]") for i, e in enumerate(entries))


def _from_json_entry(entry: Any, *, what: str) -> Cpak:
    if not isinstance(entry, Mapping):
        raise CpakError(f"{what}: expected a JWK or a trust-anchor object")
    if "pkey" in entry:
        jwk = entry["pkey"]
        if not isinstance(jwk, Mapping):
            raise CpakError(f"{what}: 'pkey' must be a JWK object")
        return _cpak(
            ec_public_key_from_jwk(jwk, what=what),
            implementation_id=_hex_id(entry.get("implementation-id"), 32, what=what),
            instance_id=_hex_id(entry.get("instance-id"), 33, what=what),
        )
    return _cpak(ec_public_key_from_jwk(entry, what=what))


def _hex_id(value: Any, size: int, *, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CpakError(f"{what}: platform IDs must be hex strings")
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError) as e:
        raise CpakError(f"{what}: platform ID is not hex: {e}") from e
    if len(raw) != size:
        raise CpakError(f"{what}: platform ID is {len(raw)} bytes, expected {size}")
    return raw


__all__ = ["MAX_CPAK_BYTES", "MAX_CPAK_ENTRIES", "Cpak", "CpakError", "load_cpaks"]
