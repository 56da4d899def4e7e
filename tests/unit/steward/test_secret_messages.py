"""``POST /v1/secrets`` messages: exact bytes both ways, hostile bodies refused with a message
that names the field, and fuzzing that finds nothing but ``DecodeError``."""

from __future__ import annotations

import sys
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.errors import DecodeError
from donjon.steward.messages import (
    MAX_SEALED_SECRET_BYTES,
    MAX_SECRETS_PER_REQUEST,
    MAX_TEXT_CHARS,
    AttestRequest,
    SecretsRequest,
    SecretsResponse,
)

ATTEST = AttestRequest(csr=b"\x30", platform="nil", evidence=b"\xee", nonce=b"\x01")

# (message, exact deterministic CBOR, written out by hand from RFC 8949 §4.2.1: keys sorted by
# their encoded bytes, so shorter text keys first)
CODEC_TABLE: list[tuple[SecretsRequest | SecretsResponse, str]] = [
    (
        SecretsRequest(attest=ATTEST, names=("db",)),
        "a6"
        "6176" "01"  # "v": 1
        "63637372" "4130"  # "csr": h'30'
        "656e616d6573" "81" "626462"  # "names": ["db"]
        "656e6f6e6365" "4101"  # "nonce": h'01'
        "6865766964656e6365" "41ee"  # "evidence": h'ee'
        "68706c6174666f726d" "636e696c",  # "platform": "nil"
    ),
    (
        SecretsRequest(attest=ATTEST, names=("db", "api")),
        "a6"
        "6176" "01"
        "63637372" "4130"
        "656e616d6573" "82" "626462" "63617069"  # "names": ["db", "api"]: the order asked
        "656e6f6e6365" "4101"
        "6865766964656e6365" "41ee"
        "68706c6174666f726d" "636e696c",
    ),
    (
        SecretsResponse(chain=(b"\x01", b"\x02"), result=b"\x03", sealed={"db": b"\x04"}),
        "a4"
        "6176" "01"  # "v": 1
        "65636861696e" "82" "4101" "4102"  # "chain": [h'01', h'02']
        "66726573756c74" "4103"  # "result": h'03'
        "6773656372657473" "a1" "626462" "4104",  # "secrets": {"db": h'04'}
    ),
    (
        SecretsResponse(
            chain=(b"\x01", b"\x02"), result=b"\x03", sealed={"db": b"\x04", "a": b"\x05"}
        ),
        "a4"
        "6176" "01"
        "65636861696e" "82" "4101" "4102"
        "66726573756c74" "4103"
        "6773656372657473" "a2" "6161" "4105" "626462" "4104",  # {"a": .., "db": ..}: sorted
    ),
]  # fmt: skip


@pytest.mark.parametrize(("message", "wire"), CODEC_TABLE)
def test_codec_table_both_ways(message: SecretsRequest | SecretsResponse, wire: str) -> None:
    data = bytes.fromhex(wire)
    assert message.encode() == data
    decoded = type(message).decode(data)
    assert decoded == message
    assert decoded.encode() == data


def test_a_full_request_round_trips() -> None:
    attest = AttestRequest(
        csr=b"\x30" * 300,
        platform="sev-snp",
        evidence=b"\xee" * 1184,
        nonce=b"\x01" * 32,
        certs=(b"vcek", b"ask"),
        collateral=(b"crl",),
        client_nonce=b"\xcc" * 16,
    )
    names = tuple(f"s{i}" for i in range(MAX_SECRETS_PER_REQUEST))
    request = SecretsRequest(attest=attest, names=names)
    data = request.encode()
    decoded = SecretsRequest.decode(data)
    assert decoded == request
    assert decoded.names == names  # the order asked is kept
    assert decoded.encode() == data


def test_a_full_response_round_trips_and_its_repr_hides_the_sealed_values() -> None:
    sealed = {f"s{i}": bytes([i]) * MAX_SEALED_SECRET_BYTES for i in range(4)}
    response = SecretsResponse(chain=(b"leaf", b"ca"), result=b"cose", sealed=sealed)
    data = response.encode()
    assert SecretsResponse.decode(data) == response
    assert SecretsResponse.decode(data).encode() == data
    shown = repr(SecretsResponse(chain=(b"leaf", b"ca"), result=b"cose", sealed={"db": b"PW"}))
    assert "PW" not in shown and "db" not in shown


# -- hostile requests ------------------------------------------------------------------------------


def _edited(body: dict[str, Any], changes: dict[str, Any]) -> bytes:
    """*body* with *changes* applied (a value of ``...`` removes the key), as CBOR."""
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return bytes(cbor2.dumps(body))


def _request_body(**changes: Any) -> bytes:
    """A valid request's CBOR map with *changes* applied (a value of ``...`` removes the key)."""
    body: dict[str, Any] = {
        "v": 1,
        "csr": b"\x30",
        "platform": "nil",
        "evidence": b"\xee",
        "nonce": b"\x01",
        "names": ["db"],
    }
    return _edited(body, changes)


def test_the_request_body_helper_is_valid() -> None:
    assert SecretsRequest.decode(_request_body()) == SecretsRequest(attest=ATTEST, names=("db",))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"names": ...}, r"^secrets request: missing field 'names'$"),
        ({"names": []}, r"^secrets request: field 'names' is empty; name the secrets to release$"),
        ({"names": ["db", "api", "db"]}, r"^secrets request: a secret is named twice in 'names'$"),
        (
            {"names": [f"s{i}" for i in range(MAX_SECRETS_PER_REQUEST + 1)]},
            r"^secrets request: field 'names' has 65 items; the limit is 64$",
        ),
        ({"names": [1]}, r"^secrets request: names\[0\] must be a short text string$"),
        ({"names": ["db", b"api"]}, r"^secrets request: names\[1\] must be a short text string$"),
        ({"names": ["db", None]}, r"names\[1\] must be a short text string"),
        ({"names": [["db"]]}, r"names\[0\] must be a short text string"),
        ({"names": ["x" * (MAX_TEXT_CHARS + 1)]}, r"names\[0\] must be a short text string"),
        ({"names": "db"}, r"^secrets request: field 'names' must be an array, got a text string$"),
        ({"names": {"db": 1}}, r"field 'names' must be an array, got a map"),
        ({"names": None}, r"field 'names' must be an array, got null"),
        ({"extra": 1}, r"^secrets request: unknown field\(s\) 'extra'; .* protocol v1"),
        ({"secrets": {}}, r"unknown field\(s\) 'secrets'"),
        ({"v": 2}, r"^secrets request: protocol version 2 is not supported; .* v1$"),
        ({"v": True}, r"protocol version True is not supported"),
        ({"v": ...}, r"^secrets request: missing field 'v' \(protocol version\)$"),
        ({"csr": ...}, r"^secrets request: missing field 'csr'$"),
        ({"nonce": "01"}, r"field 'nonce' must be a byte string, got a text string"),
        ({"client_nonce": b""}, r"field 'client_nonce' is empty; omit it instead"),
    ],
    ids=lambda v: next(iter(v)) + "=" + repr(v[next(iter(v))])[:20] if isinstance(v, dict) else "",
)
def test_hostile_requests_are_decode_errors_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        SecretsRequest.decode(_request_body(**changes))


# Under ``python -b``/``-bb`` (as scripts/check runs pytest) the CBOR decoder already notices
# "v" beside b"v"; without the flag the keys do not compare, and the message layer refuses the
# byte-string key. Refused either way, each with its own exact message.
_MIXED_KEYS = (
    r"mixes text and byte-string keys"
    if sys.flags.bytes_warning
    else r"map keys must be text strings, got b'v'"
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", r"secrets request is empty"),
        (b"\xa0", r"missing field 'v'"),
        (bytes(cbor2.dumps(["db"])), r"secrets request must be a CBOR map, got list"),
        (bytes(cbor2.dumps({1: 1})), r"map keys must be text strings"),
        # {"v": 1, h'76': 1}: built from hex, as a Python dict of both warns under -bb
        (bytes.fromhex("a2617601417601"), _MIXED_KEYS),
        (_request_body() + b"\x00", r"1 trailing bytes"),
        (_request_body()[:-1], r"is not valid CBOR"),
    ],
    ids=["empty", "empty-map", "array", "int-key", "mixed-keys", "trailing", "truncated"],
)
def test_malformed_request_bodies_are_decode_errors(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        SecretsRequest.decode(body)


def test_the_most_names_a_request_may_carry_is_accepted() -> None:
    names = [f"s{i}" for i in range(MAX_SECRETS_PER_REQUEST)]
    assert SecretsRequest.decode(_request_body(names=names)).names == tuple(names)


# -- hostile responses -----------------------------------------------------------------------------


def _response_body(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "v": 1,
        "chain": [b"leaf", b"ca"],
        "result": b"cose",
        "secrets": {"db": b"sealed"},
    }
    return _edited(body, changes)


def test_the_response_body_helper_is_valid() -> None:
    assert SecretsResponse.decode(_response_body()).sealed == {"db": b"sealed"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"secrets": {"db": "sealed"}},
            rf"^secrets response: secret 'db' must be a byte string of at most "
            rf"{MAX_SEALED_SECRET_BYTES} bytes$",
        ),
        ({"secrets": {"db": None}}, r"secret 'db' must be a byte string"),
        ({"secrets": {"db": [b"x"]}}, r"secret 'db' must be a byte string"),
        (
            {"secrets": {"db": b"\x00" * (MAX_SEALED_SECRET_BYTES + 1)}},
            rf"secret 'db' must be a byte string of at most {MAX_SEALED_SECRET_BYTES} bytes",
        ),
        (
            {"secrets": {f"s{i}": b"x" for i in range(MAX_SECRETS_PER_REQUEST + 1)}},
            rf"^secrets response: {MAX_SECRETS_PER_REQUEST + 1} secrets; at most "
            rf"{MAX_SECRETS_PER_REQUEST}$",
        ),
        ({"secrets": {1: b"x"}}, r"^secrets response: secret names must be short text strings$"),
        ({"secrets": {b"db": b"x"}}, r"secret names must be short text strings"),
        (
            {"secrets": {"x" * (MAX_TEXT_CHARS + 1): b"x"}},
            r"secret names must be short text strings",
        ),
        ({"secrets": [b"x"]}, r"field 'secrets' must be a map, got an array"),
        ({"secrets": ...}, r"^secrets response: missing field 'secrets'$"),
        ({"chain": [b"leaf"]}, r"^secrets response: field 'chain' needs at least 2 item\(s\)$"),
        ({"chain": []}, r"field 'chain' needs at least 2 item\(s\)"),
        ({"chain": [b"leaf", "ca"]}, r"chain\[1\] must be a byte string"),
        ({"result": "cose"}, r"field 'result' must be a byte string, got a text string"),
        ({"v": 0}, r"protocol version 0 is not supported"),
        ({"extra": b""}, r"unknown field\(s\) 'extra'"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else "",
)
def test_hostile_responses_are_decode_errors_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        SecretsResponse.decode(_response_body(**changes))


def test_a_long_secret_name_is_cut_in_the_message() -> None:
    name = "n" * 1000
    with pytest.raises(DecodeError) as info:
        SecretsResponse.decode(_response_body(secrets={name: "not bytes"}))
    assert repr("n" * 64) in str(info.value)
    assert "n" * 65 not in str(info.value)


def test_the_most_secrets_a_response_may_carry_is_accepted() -> None:
    secrets = {f"s{i}": b"x" for i in range(MAX_SECRETS_PER_REQUEST)}
    assert len(SecretsResponse.decode(_response_body(secrets=secrets)).sealed) == len(secrets)
    largest = {"db": b"\x00" * MAX_SEALED_SECRET_BYTES}
    assert SecretsResponse.decode(_response_body(secrets=largest)).sealed == largest


# -- fuzzing: success or DecodeError, nothing else ------------------------------------------------

_FIELDS = ["v", "csr", "platform", "evidence", "nonce", "names", "client_nonce", "certs"]
_FIELDS += ["collateral", "chain", "result", "secrets"]


def _bytes(max_size: int) -> st.SearchStrategy[bytes]:
    # Under -bb, Hypothesis's own cache of choice sequences warns when it compares b"" with 0 or
    # "" (equal hashes) drawn at the same position by different branches of a one_of. The empty
    # value is therefore a constant here (no choice drawn), and text is drawn as bytes.
    return st.just(b"") | st.binary(min_size=1, max_size=max_size)


def _text(max_size: int) -> st.SearchStrategy[str]:
    return _bytes(max_size).map(lambda b: b.decode("latin-1"))


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | _bytes(40)
    | _text(20)
    | st.sampled_from([1, "db", b"db", "nil", *_FIELDS])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(_text(8) | st.sampled_from(_FIELDS), inner, max_size=6)
        | st.dictionaries(_bytes(4) | st.integers(), inner, max_size=3)
    ),
    max_leaves=10,
)
# Maps whose keys are mostly the real field names, so the decoders get past the first checks.
_MAPS = st.dictionaries(st.sampled_from(_FIELDS) | _text(6), _VALUES, max_size=7)


def _decoders_say_decode_error_or_succeed(data: bytes) -> None:
    for decoder in (SecretsRequest.decode, SecretsResponse.decode):
        try:
            message = decoder(data)
        except DecodeError:
            continue
        # What decodes re-encodes to the same bytes (canonical input) or at least decodes again.
        assert type(message).decode(message.encode()) == message


@settings(max_examples=100, deadline=None)
@given(_MAPS)
def test_arbitrary_cbor_maps_decode_or_raise_decode_error(value: dict[Any, Any]) -> None:
    _decoders_say_decode_error_or_succeed(bytes(cbor2.dumps(value)))


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(_SCALARS, max_size=8) | st.lists(_VALUES, max_size=3),
    # Keys of one kind per map: a Python dict holding both "k" and b"k" warns under -bb.
    secrets=st.dictionaries(_text(70) | st.integers() | st.none(), _VALUES, max_size=6)
    | st.dictionaries(_bytes(8), _VALUES, max_size=4),
    v=st.sampled_from([1, 1, 1, 2, True, None]),
)
def test_near_valid_bodies_decode_or_raise_decode_error(
    names: list[Any], secrets: dict[Any, Any], v: Any
) -> None:
    request = {
        "v": v,
        "csr": b"0",
        "platform": "nil",
        "evidence": b"",
        "nonce": b"",
        "names": names,
    }
    response = {"v": v, "chain": [b"a", b"b"], "result": b"", "secrets": secrets}
    for body in (request, response):
        try:
            data = bytes(cbor2.dumps(body))
        except (cbor2.CBOREncodeError, TypeError, ValueError):
            continue  # a key cbor2 cannot encode is not an input a peer can send
        _decoders_say_decode_error_or_succeed(data)


def test_every_prefix_of_valid_bodies_is_a_decode_error() -> None:
    full = SecretsRequest(
        attest=AttestRequest(csr=b"\x30", platform="nil", evidence=b"\xee", nonce=b"\x01"),
        names=("db", "api"),
    ).encode()
    answer = SecretsResponse(chain=(b"a", b"b"), result=b"r", sealed={"db": b"\x04"}).encode()
    for data in (full, answer):
        for end in range(len(data)):
            with pytest.raises(DecodeError):
                SecretsRequest.decode(data[:end])
            with pytest.raises(DecodeError):
                SecretsResponse.decode(data[:end])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    _decoders_say_decode_error_or_succeed(data)
