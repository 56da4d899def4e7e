"""The Nitro document parser on real documents and hostile bytes (only documented errors)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from donjon.attestation import Endorsements
from donjon.attestation.nitro import NitroVerifier, parse_document
from donjon.errors import EvidenceFormatError, VerificationError
from tests.conftest import VECTORS
from tests.flags import under_bb

BLOCKY = (VECTORS / "nitro/blocky-prod-2024/attestation.cbor").read_bytes()
DEBUG = (VECTORS / "nitro/evervault-debug-2022/attestation.cbor").read_bytes()
BLOCKY_TIME = datetime(2024, 9, 7, 14, 37, 39, tzinfo=UTC)
VERIFIER = NitroVerifier.from_embedded_roots()


def test_real_document_fields() -> None:
    parsed = parse_document(BLOCKY)
    doc = parsed.document
    assert doc.module_id == "i-0a22e5c5f24d22174-enc0191cceb4289903f"
    assert doc.timestamp.isoformat() == "2024-09-07T14:37:39.545000+00:00"
    assert sorted(doc.pcrs) == list(range(16))
    assert len(doc.cabundle) == 4
    assert doc.public_key == doc.user_data == doc.nonce == b"\x01" * 1024
    assert parsed.message.alg == -35
    with pytest.raises(TypeError):
        doc.pcrs[0] = b""  # type: ignore[index]


def test_null_optional_fields_are_none() -> None:
    doc = parse_document(DEBUG).document
    assert doc.nonce is None
    assert doc.user_data == b"hello, world!"


def _with(**fields: Any) -> bytes:
    body = cbor2.loads(BLOCKY)
    payload = cbor2.loads(body[2])
    for k, v in fields.items():
        if v is ...:
            del payload[k]
        else:
            payload[k] = v
    body[2] = cbor2.dumps(payload)
    return bytes(cbor2.dumps(body))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_with(module_id=""), "module_id"),
        (_with(module_id=b"i-0"), "module_id"),
        (_with(digest=b"SHA384"), "digest"),
        (_with(timestamp=0), "timestamp"),
        (_with(timestamp=True), "timestamp"),
        (_with(timestamp=1.5), "timestamp"),
        (_with(pcrs={}), "pcrs"),
        (_with(pcrs={32: bytes(48)}), "PCR index"),
        (_with(pcrs={"0": bytes(48)}), "PCR index"),
        (_with(pcrs={0: "x" * 48}), "PCR0"),
        (_with(certificate=b""), "certificate"),
        (_with(certificate=bytes(1025)), "certificate"),
        (_with(cabundle=[]), "cabundle"),
        (_with(cabundle=[b"x"] * 17), "cabundle"),
        (_with(cabundle=[b"x", 5]), r"cabundle\[1\]"),
        (_with(public_key=b""), "public_key"),
        (_with(nonce="text"), "nonce"),
        (_with(nonce=bytes(1025)), "nonce"),
        (_with(pcrs=...), "pcrs"),
        (cbor2.dumps(["x", {}, b"", b""]), "protected header must be a byte string"),
        (cbor2.dumps([cbor2.dumps({1: -35}), {}, cbor2.dumps([1]), b""]), "must be a CBOR map"),
        (cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"", b""])), "expected 18"),
        # {"a": 1, h'61': 1} as the payload: equal hashes make cbor2 compare str with bytes.
        pytest.param(
            cbor2.dumps([cbor2.dumps({1: -35}), {}, bytes.fromhex("a2616101416101"), b""]),
            "mixes text and byte",
            marks=under_bb,
        ),
    ],
)
def test_malformed_fields(data: bytes, match: str) -> None:
    with pytest.raises(EvidenceFormatError, match=match):
        parse_document(bytes(data))


def test_byte_string_keys_are_ignored_not_compared() -> None:
    # A payload key b"module_id" hashes like "module_id"; it must be skipped, not crash -bb.
    body = cbor2.loads(BLOCKY)
    payload = cbor2.loads(body[2])
    del payload["nonce"]
    payload[b"nonce"] = b"ignored"
    body[2] = cbor2.dumps(payload)
    assert parse_document(bytes(cbor2.dumps(body))).document.nonce is None


def test_a_cabundle_certificate_that_does_not_parse_is_a_format_error() -> None:
    body = cbor2.loads(BLOCKY)
    payload = cbor2.loads(body[2])
    payload["cabundle"] = [payload["cabundle"][0], b"\x30\x03\x02\x01\x01"]
    body[2] = cbor2.dumps(payload)
    with pytest.raises(EvidenceFormatError, match=r"not a DER X\.509"):
        VERIFIER.verify(bytes(cbor2.dumps(body)), endorsements=Endorsements(), now=BLOCKY_TIME)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_raise_format_errors(data: bytes) -> None:
    with pytest.raises(EvidenceFormatError):
        parse_document(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, 8192), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 8192)),
)
def test_mutated_documents_are_rejected_or_unchanged(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    out = bytearray(BLOCKY)
    for at, value in edits:
        out[at % len(out)] = value
    data = bytes(out[:cut] if cut is not None else out)
    try:
        result = VERIFIER.verify(data, endorsements=Endorsements(), now=BLOCKY_TIME)
    except VerificationError:
        return
    genuine = VERIFIER.verify(BLOCKY, endorsements=Endorsements(), now=BLOCKY_TIME)
    assert result.claims == genuine.claims


# Under ``python -bb`` Hypothesis's own cache compares choices with equal hashes, and b"" and ""
# hash like 0: draw only non-empty bytes and text, and add the empty values as constants.
_value = st.one_of(
    st.integers(-(2**64), 2**64),
    st.binary(min_size=1, max_size=64),
    st.text(min_size=1, max_size=10),
    st.sampled_from([b"", "", None, True, False]),
    st.lists(st.binary(min_size=1, max_size=8), max_size=3),
    st.dictionaries(st.integers(-2, 40), st.binary(min_size=1, max_size=50), max_size=3),
)
_keys = st.sampled_from(
    [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
        "public_key",
        "user_data",
        "nonce",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.dictionaries(_keys, _value, min_size=1, max_size=4))
def test_field_garbage_only_raises_verification_errors(edits: dict[str, Any]) -> None:
    try:
        VERIFIER.verify(_with(**edits), endorsements=Endorsements(), now=BLOCKY_TIME)
    except VerificationError:
        return
    raise AssertionError("an edited payload must never verify")
