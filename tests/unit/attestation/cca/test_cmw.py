"""The tag-907 CMW collection (RMM 2.0 A7.2.3): a real sample, its shape, hostile records."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from donjon.attestation import Endorsements
from donjon.attestation.cca import CcaVerifier, Framing, parse_token
from donjon.attestation.cca.token import (
    CMW_COLLECTION_TAG,
    COLLECTION_TAG,
    EAT_CWT_CONTENT_FORMAT,
    parse_collection,
    split_collection,
)
from donjon.errors import EvidenceFormatError, VerificationError
from tests.conftest import VECTORS
from tests.vectors_gen.cca_gen import DEVICE, PLATFORM, REALM, UCCS, cmw_collection

NOW = datetime(2025, 9, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[4]
SAMPLE_DIR = REPO / "tests/vectors/extra/cca/cmw-tfrmm"
SAMPLE = (SAMPLE_DIR / "token.cbor").read_bytes()
SAMPLE_CPAK = (SAMPLE_DIR / "cpak.pub.pem").read_bytes()
LEGACY = (VECTORS / "cca/tfrmm-legacy/token.cbor").read_bytes()
LEGACY_CPAK = (VECTORS / "cca/tfrmm-legacy/cpak.pub.pem").read_bytes()
LP, LR = cbor2.loads(LEGACY).value[PLATFORM], cbor2.loads(LEGACY).value[REALM]


def test_the_real_sample_is_the_legacy_token_reframed() -> None:
    # The generator's encoding reproduces the luxfi/cc sample byte for byte, so the negative
    # variants below differ from a real token only in the defect they name.
    assert cmw_collection(LP, LR) == SAMPLE
    collection = parse_collection(SAMPLE)
    assert collection.framing is Framing.CMW_COLLECTION
    assert (collection.platform, collection.realm) == (LP, LR)
    assert split_collection(SAMPLE) == split_collection(LEGACY)
    assert parse_collection(LEGACY).framing is Framing.EAT_COLLECTION


def test_the_real_sample_verifies_with_the_legacy_claims() -> None:
    endorsements = Endorsements(certs=(SAMPLE_CPAK,))
    cmw = CcaVerifier().verify(SAMPLE, endorsements=endorsements, now=NOW)
    legacy = CcaVerifier().verify(LEGACY, endorsements=Endorsements(certs=(LEGACY_CPAK,)), now=NOW)
    assert cmw.claims["collection_tag"] == CMW_COLLECTION_TAG
    assert legacy.claims["collection_tag"] == COLLECTION_TAG
    assert {k: v for k, v in cmw.claims.items() if k != "collection_tag"} == {
        k: v for k, v in legacy.claims.items() if k != "collection_tag"
    }
    assert cmw.measurement == bytes(32)
    assert cmw.report_data == b"\xab" * 64
    assert cmw.debug is False


def test_parse_token_reports_the_framing() -> None:
    token = parse_token(SAMPLE)
    assert token.framing is Framing.CMW_COLLECTION
    assert token.realm.claims == parse_token(LEGACY).realm.claims
    assert parse_token(LEGACY).framing is Framing.EAT_COLLECTION


def test_one_verifier_caches_the_platform_across_framings() -> None:
    # The platform cache is keyed by the platform token's exact bytes, which both framings share.
    verifier = CcaVerifier(trusted_cpaks=[LEGACY_CPAK])
    first = verifier.verify(LEGACY, endorsements=Endorsements(), now=NOW)
    second = verifier.verify(SAMPLE, endorsements=Endorsements(), now=NOW)
    assert first.measurement == second.measurement


def _cmw(body: object, tag: int = CMW_COLLECTION_TAG) -> bytes:
    return bytes(cbor2.dumps(cbor2.CBORTag(tag, body)))


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (cmw_collection(LP, LR, realm_type=264), "realm token's CMW type is 264"),
        (cmw_collection(LP, LR, platform_type="application/eat+cwt"), "content-format 263"),
        (cmw_collection(LP, LR, platform_type=263.0), "CMW type is 263.0"),
        (cmw_collection(LP, LR, realm_type=True), "CMW type is True"),
        (_cmw({PLATFORM: [263, LP, 4], REALM: [263, LR]}), "got list of 3 items"),
        (_cmw({PLATFORM: [263], REALM: [263, LR]}), "got list of 1 items"),
        (_cmw({PLATFORM: {263: LP}, REALM: [263, LR]}), "got dict"),
        (_cmw({PLATFORM: LP, REALM: LR}), "bare byte string"),
        (_cmw({PLATFORM: [263, LP], REALM: [263, "text"]}), "CMW value must be a byte string"),
        (_cmw({PLATFORM: [263, LP]}), "realm token (44241) is missing"),
        (_cmw({REALM: [263, LR]}), "platform token (44234) is missing"),
        (cmw_collection(LP, LR, extra={DEVICE: [UCCS, b"\xa0"]}), "device token (44258"),
        (cmw_collection(LP, LR, extra={44251: [263, LR]}), "unexpected collection entries [44251]"),
        (cmw_collection(LP, LR, extra={"__cmwc_t": "x"}), "unexpected collection entries"),
        (cmw_collection(LP, LR, extra={b"k" * 500: 1}), "..."),
        (_cmw([[263, LP], [263, LR]]), "must be a CBOR map"),
        (cmw_collection(LP, LR, tag=COLLECTION_TAG), "belongs in a tag-907 collection"),
        (cmw_collection(LP, LR, tag=908), "CBOR tag 908, expected 399"),
    ],
    ids=lambda x: x[:24] if isinstance(x, str) else None,
)
def test_malformed_cmw_collections_say_what_is_wrong(token: bytes, message: str) -> None:
    with pytest.raises(EvidenceFormatError) as info:
        parse_token(token)
    assert message in info.value.message
    # Messages quote hostile values only briefly.
    assert len(info.value.message) < 400


def test_the_content_format_is_the_eat_cwt_one() -> None:
    assert EAT_CWT_CONTENT_FORMAT == 263
    assert {record[0] for record in cbor2.loads(SAMPLE).value.values()} == {263}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, 2048), st.integers(0, 255)), min_size=1, max_size=3),
    cut=st.one_of(st.none(), st.integers(0, 2048)),
)
def test_mutated_cmw_tokens_are_rejected_or_unchanged(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(SAMPLE)
    for at, value in edits:
        data[at % len(data)] = value
    mutated = bytes(data[:cut] if cut is not None else data)
    verifier = CcaVerifier(trusted_cpaks=[SAMPLE_CPAK])
    try:
        result = verifier.verify(mutated, endorsements=Endorsements(), now=NOW)
    except VerificationError:
        return
    genuine = verifier.verify(SAMPLE, endorsements=Endorsements(), now=NOW)
    assert result.claims == genuine.claims
