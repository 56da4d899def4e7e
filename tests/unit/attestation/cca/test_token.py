"""The CCA token parser: real tokens, lifecycle states, hostile bytes (documented errors only)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from donjon.attestation import Endorsements
from donjon.attestation.cca import (
    CcaVerifier,
    Lifecycle,
    PlatformProfile,
    RealmProfile,
    parse_token,
)
from donjon.attestation.cca.token import TRUSTWORTHY_LIFECYCLES, classify_lifecycle
from donjon.errors import EvidenceFormatError, VerificationError
from tests.conftest import VECTORS
from tests.flags import under_bb
from tests.vectors_gen.cca_gen import GEN_RAK, collection, sign1

NOW = datetime(2025, 9, 1, tzinfo=UTC)
LEGACY = (VECTORS / "cca/tfrmm-legacy/token.cbor").read_bytes()
LEGACY_CPAK = (VECTORS / "cca/tfrmm-legacy/cpak.pub.pem").read_bytes()
FFM = (VECTORS / "cca/draft-ffm-00/token.cbor").read_bytes()


def test_legacy_token_claims() -> None:
    token = parse_token(LEGACY)
    p, r = token.platform.claims, token.realm.claims
    assert p.profile is PlatformProfile.LEGACY
    assert r.profile is None
    assert [c.measurement_type for c in p.sw_components] == ["BL", "M1", "M2", "M3"]
    assert p.sw_components[0].version == "3.4.2"
    assert p.verification_service == "whatever.com"
    assert p.lifecycle == 0x3003
    assert p.lifecycle_state is Lifecycle.SECURED
    assert len(r.public_key) == 97 and r.public_key[0] == 4
    assert len(r.rems) == 4
    assert token.platform.message.alg == -35 and token.realm.message.alg == -35


def test_draft_ffm_00_token_claims() -> None:
    token = parse_token(FFM)
    assert token.platform.claims.profile is PlatformProfile.DRAFT_FFM_00
    assert token.realm.claims.profile is RealmProfile.DRAFT_FFM_00
    assert len(token.platform.claims.sw_components) == 13
    assert token.realm.claims.public_key[:1] == b"\xa4"  # a COSE_Key map of 4 entries


@pytest.mark.parametrize(
    ("value", "state"),
    [
        (0x0000, Lifecycle.UNKNOWN),
        (0x00FF, Lifecycle.UNKNOWN),
        (0x1000, Lifecycle.ASSEMBLY_AND_TEST),
        (0x20FF, Lifecycle.ROT_PROVISIONING),
        (0x3000, Lifecycle.SECURED),
        (0x3003, Lifecycle.SECURED),
        (0x4001, Lifecycle.NON_CCA_PLATFORM_DEBUG),
        (0x5000, Lifecycle.RECOVERABLE_CCA_PLATFORM_DEBUG),
        (0x60FF, Lifecycle.DECOMMISSIONED),
    ],
)
def test_lifecycle_ranges(value: int, state: Lifecycle) -> None:
    assert classify_lifecycle(value) is state


@pytest.mark.parametrize("value", [-1, 0x0100, 0x0FFF, 0x3100, 0x7000, 0x10000])
def test_lifecycle_outside_ranges(value: int) -> None:
    with pytest.raises(EvidenceFormatError, match="outside every defined range"):
        classify_lifecycle(value)


def test_only_secured_and_non_cca_debug_are_trustworthy() -> None:
    assert TRUSTWORTHY_LIFECYCLES == {Lifecycle.SECURED, Lifecycle.NON_CCA_PLATFORM_DEBUG}


@under_bb
def test_mixed_text_and_byte_keys_are_a_format_error() -> None:
    # {"a": 1, h'61': 1} inside the tag: equal hashes make cbor2 compare str with bytes.
    data = bytes.fromhex("d9018f") + bytes.fromhex("a2616101416101")
    with pytest.raises(EvidenceFormatError, match="mixes text and byte"):
        parse_token(data)


def test_unknown_claims_are_skipped() -> None:
    platform, realm = cbor2.loads(LEGACY).value.values()
    claims: dict[Any, Any] = cbor2.loads(cbor2.loads(realm).value[2])
    claims[99999] = "ignored"
    claims["text-key"] = b"ignored"
    token = collection(platform, sign1(GEN_RAK, bytes(cbor2.dumps(claims))))
    assert parse_token(token).realm.claims.challenge == claims[10]


# --- hostile bytes ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_raise_format_errors(data: bytes) -> None:
    with pytest.raises(EvidenceFormatError):
        parse_token(data)


def _mutate(base: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(base)
    for at, value in edits:
        out[at % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([LEGACY, FFM]),
    edits=st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 4096)),
)
def test_mutated_tokens_are_rejected_or_unchanged(
    base: bytes, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = _mutate(base, edits, cut)
    verifier = CcaVerifier(trusted_cpaks=[LEGACY_CPAK])
    try:
        result = verifier.verify(data, endorsements=Endorsements(), now=NOW)
    except VerificationError:
        return
    # Only bytes outside what is signed may change (e.g. the unprotected header): the
    # accepted claims are then exactly the genuine token's.
    genuine = verifier.verify(base, endorsements=Endorsements(), now=NOW)
    assert result.claims == genuine.claims


# Under ``python -bb`` Hypothesis's own cache compares choices with equal hashes, and b"" and ""
# hash like 0: draw only non-empty bytes and text, and add the empty values as constants.
_cbor_leaf = st.one_of(
    st.integers(-(2**64), 2**64),
    st.binary(min_size=1, max_size=100),
    st.text(min_size=1, max_size=20),
    st.sampled_from([b"", "", None, True, False]),
    st.floats(allow_nan=False),
)
_map_keys = st.integers(-5, 50000) | st.text(min_size=1, max_size=5)
_cbor = st.recursive(
    _cbor_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_map_keys, inner, max_size=5),
    max_leaves=6,
)
_claim_keys = st.sampled_from(
    [10, 256, 265, 2395, 2396, 2399, 2400, 2401, 2402, 44235, 44236, 44237, 44238, 44239, 44240]
)


def _unsigned(claims: dict[int, Any]) -> bytes:
    # Parsing never looks at the signature, so a dummy one reaches every claim check quickly.
    protected = bytes(cbor2.dumps({1: -35}))
    return bytes(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, cbor2.dumps(claims), bytes(96)])))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    platform=st.dictionaries(_claim_keys, _cbor, max_size=8),
    realm=st.dictionaries(_claim_keys, _cbor, max_size=8),
)
def test_structured_garbage_claims_only_raise_format_errors(
    platform: dict[int, Any], realm: dict[int, Any]
) -> None:
    try:
        parse_token(collection(_unsigned(platform), _unsigned(realm)))
    except EvidenceFormatError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=_claim_keys,
    value=_cbor,
    which=st.sampled_from(["platform", "realm"]),
)
def test_one_bad_claim_in_a_genuine_token_is_a_format_error(
    key: int, value: Any, which: str
) -> None:
    platform, realm = cbor2.loads(LEGACY).value.values()
    claims = {
        "platform": cbor2.loads(cbor2.loads(platform).value[2]),
        "realm": cbor2.loads(cbor2.loads(realm).value[2]),
    }
    claims[which][key] = value
    try:
        token = parse_token(collection(_unsigned(claims["platform"]), _unsigned(claims["realm"])))
    except EvidenceFormatError:
        return
    # Accepted only when the replaced claim kept a valid shape (same type and size rules).
    assert token.realm.claims.challenge is not None


def test_vectors_dir_fixture_points_at_the_same_files(vectors_dir: Path) -> None:
    assert (vectors_dir / "cca/tfrmm-legacy/token.cbor").read_bytes() == LEGACY
