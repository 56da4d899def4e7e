"""Steward CBOR messages: exact bytes both ways, named invalid inputs, and fuzzing."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.errors import DecodeError
from donjon.steward.messages import (
    MAX_LIST_ITEMS,
    AttestRequest,
    AttestResponse,
    CsrEvidence,
    ErrorBody,
    NonceResponse,
    ResultClaims,
)

# (message, exact deterministic CBOR, written out by hand from RFC 8949 §4.2.1)
CODEC_TABLE: list[tuple[Any, str]] = [
    (
        NonceResponse(nonce=b"\x01\x02", expires_at=1000),
        "a3617601656e6f6e63654201026a657870697265735f61741903e8",
    ),
    (
        ErrorBody(error="DecodeError", reason="bad"),
        "a2656572726f726b4465636f64654572726f7266726561736f6e63626164",
    ),
    (
        AttestRequest(csr=b"\x30", platform="nil", evidence=b"\xee", nonce=b"\x01"),
        "a5617601636373724130656e6f6e636541016865766964656e636541ee68706c6174666f726d636e696c",
    ),
    (
        AttestRequest(
            csr=b"\x30", platform="nil", evidence=b"\xee", nonce=b"\x01", certs=(b"\xc1",)
        ),
        "a6"
        "6176"
        "01"
        "63637372"
        "4130"
        "6563657274738141c1"
        "656e6f6e6365"
        "4101"
        "6865766964656e6365"
        "41ee"
        "68706c6174666f726d"
        "636e696c",
    ),
    (
        AttestRequest(
            csr=b"\x30", platform="nil", evidence=b"\xee", nonce=b"\x01", client_nonce=b"\xcc"
        ),
        "a6"
        "6176"
        "01"
        "63637372"
        "4130"
        "656e6f6e6365"
        "4101"
        "6865766964656e6365"
        "41ee"
        "68706c6174666f726d"
        "636e696c"
        "6c636c69656e745f6e6f6e6365"
        "41cc",
    ),
    (
        AttestResponse(chain=(b"\x01", b"\x02"), result=b"\x03"),
        "a361760165636861696e824101410266726573756c744103",
    ),
]


@pytest.mark.parametrize(("message", "wire"), CODEC_TABLE)
def test_codec_table_both_ways(message: Any, wire: str) -> None:
    data = bytes.fromhex(wire)
    assert message.encode() == data
    decoded = type(message).decode(data)
    assert decoded == message
    assert decoded.encode() == data


def _claims(**overrides: Any) -> ResultClaims:
    base: dict[str, Any] = {
        "platform": "nil",
        "measurement": bytes(48),
        "tcb_status": None,
        "advisory_ids": (),
        "debug": True,
        "insecure": True,
        "workload": "donjon:workload:sha256:" + "ab" * 32,
        "policy": "dev",
        "policy_digest": bytes(32),
        "issued_at": 1,
        "expires_at": 2,
        "nonce": b"n",
        "key_sha256": bytes(32),
        "evidence_sha256": bytes(32),
    }
    return ResultClaims(**{**base, **overrides})


@pytest.mark.parametrize(
    "claims",
    [
        _claims(),
        _claims(tcb_status="UpToDate", advisory_ids=("INTEL-SA-00615",), nonce=None),
        _claims(client_nonce=b"c" * 32),
    ],
)
def test_result_claims_round_trip(claims: ResultClaims) -> None:
    data = claims.encode()
    assert ResultClaims.decode(data) == claims
    assert ResultClaims.decode(data).encode() == data
    assert claims.to_json()["measurement"] == "00" * 48


def test_csr_evidence_round_trip() -> None:
    msg = CsrEvidence(platform="nil", evidence=b"e", nonce=b"n", collateral=(b"c",))
    assert CsrEvidence.decode(msg.encode()) == msg


def _req(**fields: Any) -> bytes:
    body: dict[str, Any] = {
        "v": 1,
        "csr": b"\x30",
        "platform": "nil",
        "evidence": b"e",
        "nonce": b"n",
    }
    body.update(fields)
    return cbor2.dumps({k: v for k, v in body.items() if v is not _DROP})


_DROP = object()

INVALID_REQUESTS: dict[str, tuple[bytes, str]] = {
    "not-cbor": (b"\x1c", "not valid CBOR"),
    "empty": (b"", "empty"),
    "array": (cbor2.dumps([1, 2]), "must be a CBOR map"),
    "trailing-bytes": (_req() + b"\x00", "trailing"),
    "missing-version": (_req(v=_DROP), "missing field 'v'"),
    "version-2": (_req(v=2), "version 2 is not supported"),
    "version-bool": (_req(v=True), "version True is not supported"),
    "missing-csr": (_req(csr=_DROP), "missing field 'csr'"),
    "csr-as-text": (_req(csr="MIIB"), "'csr' must be a byte string, got a text string"),
    "platform-as-bytes": (_req(platform=b"nil"), "'platform' must be a text string"),
    "unknown-field": (_req(extra=1), "unknown field(s) 'extra'"),
    "integer-key": (cbor2.dumps({1: 2}), "map keys must be text strings"),
    "certs-not-list": (_req(certs=b"x"), "'certs' must be an array"),
    "certs-item-text": (_req(certs=["x"]), "certs[0] must be a byte string"),
    "too-many-certs": (_req(certs=[b"x"] * (MAX_LIST_ITEMS + 1)), "the limit is 16"),
    "nonce-too-long": (_req(nonce=b"n" * 1025), "'nonce' is 1025 bytes"),
    "client-nonce-empty": (_req(client_nonce=b""), "'client_nonce' is empty"),
    "client-nonce-too-long": (_req(client_nonce=b"c" * 65), "'client_nonce' is 65 bytes"),
    "client-nonce-text": (_req(client_nonce="c"), "'client_nonce' must be a byte string"),
}


@pytest.mark.parametrize("name", sorted(INVALID_REQUESTS))
def test_invalid_attest_requests(name: str) -> None:
    data, expected = INVALID_REQUESTS[name]
    with pytest.raises(DecodeError) as info:
        AttestRequest.decode(data)
    assert expected in info.value.message


def test_attest_response_needs_leaf_and_ca() -> None:
    with pytest.raises(DecodeError, match="at least 2"):
        AttestResponse.decode(cbor2.dumps({"v": 1, "chain": [b"x"], "result": b"r"}))


def test_error_body_has_no_version_and_refuses_extras() -> None:
    with pytest.raises(DecodeError, match="unknown field"):
        ErrorBody.decode(cbor2.dumps({"error": "X", "reason": "y", "v": 1}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoders_raise_only_decode_error(data: bytes) -> None:
    for decoder in (
        AttestRequest.decode,
        AttestResponse.decode,
        NonceResponse.decode,
        ErrorBody.decode,
        ResultClaims.decode,
        CsrEvidence.decode,
    ):
        try:
            decoder(data)
        except DecodeError:
            pass


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=8) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=4,
)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "csr", "platform", "evidence", "nonce", "certs"]), _values
    )
)
def test_structured_garbage_raises_only_decode_error(fields: dict[str, Any]) -> None:
    try:
        msg = AttestRequest.decode(cbor2.dumps(fields))
    except DecodeError:
        return
    assert msg.encode() == cbor2.dumps(fields, canonical=True)


def test_an_ear_is_asked_with_true_and_answered_as_text() -> None:
    asked = AttestRequest(csr=b"c", platform="nil", evidence=b"e", nonce=b"n", want_ear=True)
    assert AttestRequest.decode(asked.encode()) == asked
    plain = AttestRequest(csr=b"c", platform="nil", evidence=b"e", nonce=b"n")
    assert b"ear" not in plain.encode()  # absent unless asked: older Stewards still answer
    body = cbor2.loads(plain.encode())
    for bad in (False, 1, "yes"):
        with pytest.raises(DecodeError, match="field 'ear' must be true, or absent"):
            AttestRequest.decode(cbor2.dumps({**body, "ear": bad}, canonical=True))
    answer = AttestResponse(chain=(b"leaf", b"ca"), result=b"r", ear="a.b.c")
    assert AttestResponse.decode(answer.encode()) == answer
    with pytest.raises(DecodeError, match="field 'ear' must be a text string"):
        AttestResponse.decode(
            cbor2.dumps({**cbor2.loads(answer.encode()), "ear": b"a.b.c"}, canonical=True)
        )
