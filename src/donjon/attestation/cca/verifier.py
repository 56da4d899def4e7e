"""Arm CCA token verification: platform and realm COSE_Sign1, and their binding.

Rule 1: the platform token is trusted only through a CPAK the relying party trusts (pinned at
construction, or passed as an endorsement when nothing is pinned). CCA has no vendor root.
Rule 2: the realm token is trusted only through the RAK it carries, and the RAK only because the
platform token's challenge is the hash of that exact claim (the binding).
Rule 3: signatures are checked over the exact bytes received (RFC 9052 §4.4); nothing is
re-encoded.

Steps of :meth:`CcaVerifier.verify` (the numbers appear in the code and in docs/attestation/cca.md):

1. unpack the collection (tag 399, or the tag-907 CMW collection of RMM 2.0) and parse both
   tokens, bounded (draft-ffm-rats-cca-token; RMM spec A7.2.3);
2. select the CPAKs that may sign this platform (pinned or endorsed; instance/implementation ID);
3. verify the platform COSE_Sign1 under one of them (RFC 9052 §4.4; ES256/384/512 by the key);
4. load the RAK from realm claim 44237: a raw P-384 point (legacy) or a COSE_Key (draft-ffm-00);
5. verify the realm COSE_Sign1 (ES384) under the RAK;
6. check the binding: platform challenge (claim 10) == H(RAK claim bytes), H named by realm
   claim 44240 (not 44236, which names the measurement hash);
7. build the result: measurement = RIM, report data = realm challenge, debug from the platform
   security lifecycle.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from donjon.attestation.cca.cpak import Cpak, CpakError, load_cpaks
from donjon.attestation.cca.token import (
    TRUSTWORTHY_LIFECYCLES,
    CcaToken,
    PlatformToken,
    RealmProfile,
    RealmToken,
    parse_collection,
    parse_platform_token,
    parse_realm_token,
)
from donjon.attestation.result import Endorsements, Platform, VerifiedEvidence
from donjon.crypto.cose import verify_sign1
from donjon.crypto.keyformats import (
    EcPublicKey,
    curve_name,
    ec_public_key_from_cose_key,
    ec_public_key_from_raw_point,
)
from donjon.errors import EvidenceFormatError, MeasurementError, SignatureError

_logger = logging.getLogger(__name__)

RAK_CURVE = "P-384"
"""The realm attestation key is an ECC P-384 key (RMM spec A7; draft-ffm-00, "Realm Public Key")."""
PLATFORM_CACHE_ENTRIES = 512
"""Platform tokens remembered as verified (count). A realm's platform token is the same for every
realm token until the platform reboots (its challenge is the hash of the per-boot RAK), so this
saves one ECDSA verification per token. At ~2 KiB each this is at most ~1 MiB."""
PARSE_CACHE_ENTRIES = 512
"""Parsed platform tokens and CPAK files remembered (count); parsing is pure, so this is safe."""

_ALG_NAMES = {-7: "ES256", -35: "ES384", -36: "ES512"}
_HASHLIB_NAMES = {"sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}


class CcaVerifier:
    """Verifies Arm CCA attestation tokens (CCA-SSD/1.0.0, draft-ffm-00; tag 399 or 907).

    Example:
        >>> from datetime import UTC, datetime
        >>> verifier = CcaVerifier(trusted_cpaks=[cpak_pem])  # doctest: +SKIP
        >>> result = verifier.verify(token, endorsements=Endorsements(), now=datetime.now(UTC))
        ... # doctest: +SKIP
        >>> result.claims["rim"]  # doctest: +SKIP

    Args:
        trusted_cpaks: CPAK files (PEM/DER public key, JWK, JWK Set or Veraison trust-anchor
            JSON) to pin. When given, a token must verify under one of them, and CPAKs in
            ``endorsements`` must be among them. When empty, the CPAKs in ``endorsements.certs``
            are the trust anchors: pass only keys obtained from a source you trust.

    Raises:
        CpakError: a pinned CPAK cannot be read.
        TypeError: *trusted_cpaks* is a single ``bytes`` rather than a sequence of files.
    """

    platform: Platform = Platform.CCA

    def __init__(self, *, trusted_cpaks: Sequence[bytes] = ()) -> None:
        given: object = trusted_cpaks  # the type says Sequence[bytes]; callers slip
        if isinstance(given, bytes | bytearray | str):
            raise TypeError("trusted_cpaks is a sequence of CPAK files; wrap one file in a list")
        pinned: list[Cpak] = []
        for i, data in enumerate(trusted_cpaks):
            pinned.extend(load_cpaks(data, what=f"trusted CPAK #{i}"))
        self._pinned: tuple[Cpak, ...] = tuple(pinned)
        self._pinned_ders = frozenset(c.spki_der for c in self._pinned)
        self._verified_platforms = _BoundedSet(PLATFORM_CACHE_ENTRIES)

    def verify(
        self, evidence: bytes, *, endorsements: Endorsements, now: datetime
    ) -> VerifiedEvidence:
        """Verify a CCA token.

        Args:
            evidence: the token as received: a CBOR tag-399 collection, or a tag-907 CMW
                collection of ``[263, bstr]`` records.
            endorsements: ``certs`` may carry CPAKs (see the class docstring); ``collateral``
                is not used.
            now: accepted for the common verifier interface; a CCA token carries no
                certificate or timestamp, so nothing here depends on time (freshness comes
                from the realm challenge, which a policy compares with the nonce it issued).

        Returns:
            The authentic token's claims.

        Raises:
            EvidenceFormatError: the token is malformed, of an unknown profile, or its RAK is
                not a P-384 key in the profile's format.
            CpakError: no CPAK given, none applies to this platform, or one cannot be read
                (a ``ChainError``).
            SignatureError: the platform token does not verify under any applicable CPAK, or
                the realm token does not verify under its RAK.
            MeasurementError: the platform challenge is not the hash of the RAK (the realm is
                not bound to this platform).
        """
        del now  # no time-dependent check in CCA (see Args)
        # (1) Parse, bounded. The platform part is cached by its exact bytes: parsing is pure.
        collection = parse_collection(evidence)
        platform_bytes = collection.platform
        platform = _parse_platform_cached(platform_bytes)
        realm = parse_realm_token(collection.realm)
        token = CcaToken(platform=platform, realm=realm, framing=collection.framing)
        pclaims = platform.claims

        # (2) Which CPAKs may speak for this platform.
        candidates = self._candidates(endorsements, platform)

        # (3) Platform COSE_Sign1 (RFC 9052 §4.4) under one of them.
        cpak = self._verify_platform(platform_bytes, platform, candidates)

        # (4) The RAK, in the realm profile's format.
        rak = _realm_key(realm)

        # (5) Realm COSE_Sign1 under the RAK (ES384, since the RAK is P-384).
        verify_sign1(realm.message, rak, what="CCA realm token (signed by the RAK)")

        # (6) Binding: platform challenge == H(RAK claim bytes), H from realm claim 44240.
        rclaims = realm.claims
        digest = hashlib.new(
            _HASHLIB_NAMES[rclaims.public_key_hash_algorithm], rclaims.public_key
        ).digest()
        if not hmac.compare_digest(digest, pclaims.challenge):
            raise MeasurementError(
                "CCA token: the platform challenge is not the "
                f"{rclaims.public_key_hash_algorithm} hash of the realm public key (RAK), so the "
                "realm token is not bound to this platform token; the two tokens do not belong "
                "together (a substituted RAK or a spliced token)"
            )

        # (7) The result.
        _logger.debug(
            "CCA token verified: instance %s, CPAK %s",
            pclaims.instance_id.hex(),
            cpak.fingerprint[:16],
        )
        return _result(token, cpak)

    def _candidates(self, endorsements: Endorsements, platform: PlatformToken) -> list[Cpak]:
        endorsed: list[Cpak] = []
        for i, data in enumerate(endorsements.certs):
            endorsed.extend(_load_cpaks_cached(data, f"endorsement #{i}"))
        if self._pinned:
            for cpak in endorsed:
                if cpak.spki_der not in self._pinned_ders:
                    raise CpakError(
                        f"the endorsed CPAK with SHA-256 {cpak.fingerprint} is not among the "
                        f"{len(self._pinned)} pinned CPAKs; pin it, or do not pass it"
                    )
            pool = list(self._pinned)
        else:
            pool = endorsed
        claims = platform.claims
        ids = (
            f"implementation ID {claims.implementation_id.hex()}, "
            f"instance ID {claims.instance_id.hex()}"
        )
        if not pool:
            raise CpakError(
                f"CCA platform token ({ids}): no CPAK given. CCA has no vendor root: the "
                "platform's CPAK (CCA platform attestation public key, from its vendor's "
                "endorsements) is needed; pass it as a PEM public key or JWK "
                "(e.g. --cert cpak.pem) or pin it with CcaVerifier(trusted_cpaks=...)"
            )
        applicable = [
            c
            for c in pool
            if c.applies_to(
                implementation_id=claims.implementation_id, instance_id=claims.instance_id
            )
        ]
        if not applicable:
            raise CpakError(
                f"CCA platform token ({ids}): none of the {len(pool)} CPAKs is endorsed for "
                "this platform (their implementation/instance IDs differ); pass this "
                "platform's CPAK"
            )
        return applicable

    def _verify_platform(
        self, platform_bytes: bytes, platform: PlatformToken, candidates: list[Cpak]
    ) -> Cpak:
        for cpak in candidates:
            if (platform_bytes, cpak.spki_der) in self._verified_platforms:
                return cpak
        for cpak in candidates:
            try:
                verify_sign1(platform.message, cpak.key, what="CCA platform token")
            except SignatureError:
                continue
            self._verified_platforms.add((platform_bytes, cpak.spki_der))
            return cpak
        prints = ", ".join(c.fingerprint[:16] for c in candidates[:4])
        alg = _ALG_NAMES.get(platform.message.alg or 0, repr(platform.message.alg))
        raise SignatureError(
            f"CCA platform token: the {alg} signature does not verify "
            f"under any of the {len(candidates)} applicable CPAKs (SHA-256 {prints}...): "
            "the token was altered, or these CPAKs are not this platform's"
        )


def _realm_key(realm: RealmToken) -> EcPublicKey:
    return _load_realm_key(realm.claims.profile, realm.claims.public_key)


@lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def _load_realm_key(profile: RealmProfile | None, raw: bytes) -> EcPublicKey:
    # Cached by (profile, exact claim bytes): the RAK is the same for every token of a realm,
    # and loading is pure.
    what = "CCA realm token public-key (44237)"
    if profile is None:
        # Legacy (RMM 1.0 / CCA-SSD 1.0.0): the claim is the uncompressed SEC1 point.
        return ec_public_key_from_raw_point(RAK_CURVE, raw, what=what)
    if profile is RealmProfile.DRAFT_FFM_00:
        key = ec_public_key_from_cose_key(raw, what=what)
        if curve_name(key) != RAK_CURVE:
            raise EvidenceFormatError(
                f"{what}: the RAK is a {curve_name(key)} key; CCA realms use P-384"
            )
        return key
    raise EvidenceFormatError(f"{what}: no key format known for profile {profile}")


def _result(token: CcaToken, cpak: Cpak) -> VerifiedEvidence:
    p, r = token.platform.claims, token.realm.claims
    state = p.lifecycle_state
    claims: dict[str, Any] = {
        "profile": str(p.profile),
        "platform_challenge": p.challenge.hex(),
        "implementation_id": p.implementation_id.hex(),
        "instance_id": p.instance_id.hex(),
        "lifecycle": p.lifecycle,
        "lifecycle_state": str(state),
        "platform_config": p.config.hex(),
        "platform_hash_alg": p.hash_algorithm,
        "sw_components": [c.measurement_type for c in p.sw_components],
        "sw_component_details": [
            {
                "type": c.measurement_type,
                "measurement": c.measurement_value.hex(),
                "version": c.version,
                "signer_id": c.signer_id.hex(),
                "hash_alg": c.hash_algorithm,
            }
            for c in p.sw_components
        ],
        "verification_service": p.verification_service,
        "realm_profile": None if r.profile is None else str(r.profile),
        "realm_challenge": r.challenge.hex(),
        "realm_personalization": r.personalization.hex(),
        "rak_hash_alg": r.public_key_hash_algorithm,
        "measurement_hash_alg": r.measurement_hash_algorithm,
        "rim": r.rim.hex(),
        "rem": [m.hex() for m in r.rems],
        "realm_pubkey": r.public_key.hex(),
        "binding_ok": True,
        "cpak_sha256": cpak.fingerprint,
        "collection_tag": int(token.framing),
    }
    return VerifiedEvidence(
        platform=Platform.CCA,
        measurement=r.rim,
        report_data=r.challenge,
        debug=state not in TRUSTWORTHY_LIFECYCLES,
        claims=claims,
    )


@lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def _parse_platform_cached(data: bytes) -> PlatformToken:
    return parse_platform_token(data)


@lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def _load_cpaks_cached(data: bytes, what: str) -> tuple[Cpak, ...]:
    return load_cpaks(data, what=what)


class _BoundedSet:
    """A thread-safe set that forgets its oldest entries beyond *size* (an LRU of keys)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[bytes, bytes]) -> bool:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return True
            return False

    def add(self, key: tuple[bytes, bytes]) -> None:
        with self._lock:
            self._items[key] = None
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


__all__ = ["PLATFORM_CACHE_ENTRIES", "RAK_CURVE", "CcaVerifier"]
