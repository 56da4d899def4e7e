"""NilVerifier: donjon-nil/v1 evidence, with real ES384 signatures and hostile variants."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.attestation.nil import (
    MAX_NIL_EVIDENCE_BYTES,
    NIL_FORMAT,
    NilClaims,
    NilVerifier,
    decode_claims,
    nil_protected_header,
)
from donjon.attestation.result import Endorsements, EvidenceVerifier, Platform
from donjon.crypto.cose import sign1
from donjon.crypto.devkey import DevSigningKey, generate_dev_key_pem
from donjon.crypto.signatures import spki_der
from donjon.errors import (
    ConfigError,
    EvidenceFormatError,
    SignatureError,
    VerificationError,
)
from donjon.wire.cbor import encode
from donjon.wire.cose import ALG_ES256, ALG_ES384, HEADER_ALG, HEADER_KID, encode_sign1

NOW = datetime(2025, 6, 1, tzinfo=UTC)
NO_ENDORSEMENTS = Endorsements()
RD = bytes(range(64))
MEASUREMENT = hashlib.sha384(b"keep runtime").digest()


@pytest.fixture(scope="module")
def key() -> DevSigningKey:
    return DevSigningKey.from_pem(generate_dev_key_pem(), source="test")


@pytest.fixture(scope="module")
def other_key() -> DevSigningKey:
    return DevSigningKey.from_pem(generate_dev_key_pem(), source="test")


def claims_map(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "format": NIL_FORMAT,
        "report_data": RD,
        "measurement": MEASUREMENT,
        "debug": True,
        "hostname": "devbox",
        "version": "0.1.0",
    }
    for name, value in changes.items():
        if value is _DROP:
            del claims[name]
        else:
            claims[name] = value
    return claims


_DROP = object()


def evidence(
    key: DevSigningKey, payload: bytes | None = None, header: dict[Any, Any] | None = None
) -> bytes:
    """Correctly signed evidence; *header* adds or replaces protected-header entries."""
    protected = {**nil_protected_header(key.spki), **(header or {})}
    return key.sign1(encode(claims_map()) if payload is None else payload, protected=protected)


def test_valid_evidence(key: DevSigningKey) -> None:
    verifier = NilVerifier()
    result = verifier.verify(evidence(key), endorsements=NO_ENDORSEMENTS, now=NOW)
    assert result.platform is Platform.NIL
    assert (result.report_data, result.measurement, result.debug) == (RD, MEASUREMENT, True)
    assert result.tcb_status is None
    doc = result.to_json()
    assert doc["platform"] == "nil" and doc["insecure"] is True and doc["debug"] is True
    assert doc["dev_key_sha256"] == key.fingerprint
    assert doc["dev_key_trusted"] is False
    assert doc["hostname"] == "devbox" and doc["version"] == "0.1.0"
    assert doc["format"] == NIL_FORMAT


def test_claims_class_encodes_what_the_verifier_reads(key: DevSigningKey) -> None:
    claims = NilClaims(RD, MEASUREMENT, "devbox", "0.1.0")
    assert claims.encode() == encode(claims_map())
    assert decode_claims(claims.encode()) == claims


def test_it_is_an_evidence_verifier() -> None:
    verifier: EvidenceVerifier = NilVerifier()
    assert verifier.platform is Platform.NIL


def test_trusted_key_accepted_and_reported(key: DevSigningKey, other_key: DevSigningKey) -> None:
    verifier = NilVerifier(trusted_keys=[other_key.spki, key.spki])
    result = verifier.verify(evidence(key), endorsements=NO_ENDORSEMENTS, now=NOW)
    assert result.claims["dev_key_trusted"] is True


def test_untrusted_key_names_both_fingerprints(
    key: DevSigningKey, other_key: DevSigningKey
) -> None:
    verifier = NilVerifier(trusted_keys=[other_key.spki])
    with pytest.raises(SignatureError) as info:
        verifier.verify(evidence(key), endorsements=NO_ENDORSEMENTS, now=NOW)
    assert f"sha256:{key.fingerprint}" in info.value.message
    assert f"sha256:{other_key.fingerprint}" in info.value.message
    assert "donjon platform dev-key" in info.value.message


def test_header_naming_a_trusted_key_but_signed_by_another_is_refused(
    key: DevSigningKey, other_key: DevSigningKey
) -> None:
    forged = other_key.sign1(encode(claims_map()), protected=nil_protected_header(key.spki))
    with pytest.raises(SignatureError, match="does not verify"):
        NilVerifier(trusted_keys=[key.spki]).verify(forged, endorsements=NO_ENDORSEMENTS, now=NOW)


def test_every_single_bit_flip_and_truncation_is_refused(key: DevSigningKey) -> None:
    good = evidence(key)
    verifier = NilVerifier()
    for i in range(len(good)):
        flipped = bytearray(good)
        flipped[i] ^= 0x01
        with pytest.raises(VerificationError):
            verifier.verify(bytes(flipped), endorsements=NO_ENDORSEMENTS, now=NOW)
    for n in range(len(good)):
        with pytest.raises(VerificationError):
            verifier.verify(good[:n], endorsements=NO_ENDORSEMENTS, now=NOW)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({HEADER_KID: b"\x00" * 32}, "kid is not the SHA-256"),
        ({"extra": 1}, "labels must be exactly"),
        ({HEADER_ALG: ALG_ES256}, "algorithm must be ES384"),
        ({HEADER_ALG: "ES384"}, "algorithm must be ES384"),
        ({"spki": "text"}, "must be byte strings"),
    ],
)
def test_bad_protected_headers(key: DevSigningKey, header: dict[Any, Any], message: str) -> None:
    with pytest.raises(EvidenceFormatError, match=message):
        NilVerifier().verify(evidence(key, header=header), endorsements=NO_ENDORSEMENTS, now=NOW)


def test_non_empty_unprotected_header_is_refused(key: DevSigningKey) -> None:
    msg = cbor2.loads(evidence(key))
    msg.value[1] = {4: b"kid"}
    with pytest.raises(EvidenceFormatError, match="unprotected header must be empty"):
        NilVerifier().verify(cbor2.dumps(msg), endorsements=NO_ENDORSEMENTS, now=NOW)


def test_untagged_or_other_tag_is_refused(key: DevSigningKey) -> None:
    msg = cbor2.loads(evidence(key))
    for wire in (cbor2.dumps(msg.value), cbor2.dumps(cbor2.CBORTag(399, msg.value))):
        with pytest.raises(EvidenceFormatError, match="tagged COSE_Sign1"):
            NilVerifier().verify(wire, endorsements=NO_ENDORSEMENTS, now=NOW)


def test_a_p256_signer_is_refused() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    spki = spki_der(p256.public_key())
    wire = sign1(p256, encode(claims_map()), protected=nil_protected_header(spki))
    with pytest.raises(EvidenceFormatError):
        NilVerifier().verify(wire, endorsements=NO_ENDORSEMENTS, now=NOW)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"extra": 1}, "unknown: 'extra'"),
        ({"hostname": _DROP}, "missing: hostname"),
        ({"format": "donjon-nil/v2"}, "this verifier reads 'donjon-nil/v1' only"),
        ({"debug": False}, "debug must be true"),
        ({"debug": 1}, "debug must be true"),
        ({"report_data": RD[:63]}, "report_data is 63 bytes"),
        ({"report_data": RD.hex()}, "'report_data' must be a bytes"),
        ({"measurement": MEASUREMENT + b"\0"}, "measurement is 49 bytes"),
        ({"hostname": "h" * 256}, "hostname is 256 bytes"),
        ({"hostname": "evil\nhost"}, "control characters"),
        ({"hostname": b"bytes"}, "'hostname' must be a str"),
        ({"version": 1}, "'version' must be a str"),
    ],
)
def test_bad_claims(key: DevSigningKey, changes: dict[str, Any], message: str) -> None:
    wire = evidence(key, payload=encode(claims_map(**changes)))
    with pytest.raises(EvidenceFormatError, match=message):
        NilVerifier().verify(wire, endorsements=NO_ENDORSEMENTS, now=NOW)


def test_payload_that_is_not_a_map_is_refused(key: DevSigningKey) -> None:
    for payload in (encode([1, 2]), b"\xff\x00"):
        with pytest.raises(EvidenceFormatError):
            NilVerifier().verify(
                evidence(key, payload=payload), endorsements=NO_ENDORSEMENTS, now=NOW
            )


def test_oversized_evidence_is_refused_before_parsing() -> None:
    with pytest.raises(EvidenceFormatError, match=f"limit is {MAX_NIL_EVIDENCE_BYTES}"):
        NilVerifier().verify(
            b"\x00" * (MAX_NIL_EVIDENCE_BYTES + 1), endorsements=NO_ENDORSEMENTS, now=NOW
        )


def test_evidence_of_other_platforms_is_refused_cleanly(vectors_dir: Path) -> None:
    for rel in (
        "nitro/evervault-prod-2022/attestation.cbor",
        "cca/tfrmm-legacy/token.cbor",
        "sev-snp/milan-gsg/report.bin",
    ):
        data = (vectors_dir / rel).read_bytes()
        with pytest.raises(EvidenceFormatError):
            NilVerifier().verify(data, endorsements=NO_ENDORSEMENTS, now=NOW)


def test_misconfigured_trusted_keys(key: DevSigningKey) -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        NilVerifier(trusted_keys=[])
    with pytest.raises(ConfigError, match="non-empty"):
        NilVerifier(trusted_keys=key.spki)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="trusted key #0"):
        NilVerifier(trusted_keys=[b"not a key"])


def test_signature_must_cover_the_exact_protected_bytes(key: DevSigningKey) -> None:
    # Re-encoding the protected header non-canonically (same map, other bytes) breaks the
    # signature: nothing is re-encoded before verifying.
    msg = cbor2.loads(evidence(key))
    header = cbor2.loads(msg.value[0])
    reordered = b"\xa3" + b"".join(
        cbor2.dumps(k) + cbor2.dumps(v) for k, v in reversed(list(header.items()))
    )
    assert cbor2.loads(reordered) == header and reordered != msg.value[0]
    wire = encode_sign1({}, {}, msg.value[2], msg.value[3])
    tampered = cbor2.loads(wire)
    tampered.value[0] = reordered
    with pytest.raises(SignatureError):
        NilVerifier().verify(cbor2.dumps(tampered), endorsements=NO_ENDORSEMENTS, now=NOW)
    assert header[HEADER_ALG] == ALG_ES384


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_verification_errors(data: bytes) -> None:
    try:
        NilVerifier().verify(data, endorsements=NO_ENDORSEMENTS, now=NOW)
    except VerificationError:
        return
    pytest.fail("random bytes verified as nil evidence")


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.one_of(st.text(max_size=12), st.integers()),
        st.one_of(st.binary(max_size=80), st.text(max_size=80), st.booleans(), st.integers()),
        max_size=8,
    )
)
def test_arbitrary_signed_claim_maps_raise_only_evidence_format_errors(
    key: DevSigningKey, claims: dict[Any, Any]
) -> None:
    wire = evidence(key, payload=encode(claims))
    try:
        NilVerifier().verify(wire, endorsements=NO_ENDORSEMENTS, now=NOW)
    except EvidenceFormatError:
        return
    pytest.fail(f"claims {claims!r} verified")
