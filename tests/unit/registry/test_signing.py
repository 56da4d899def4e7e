"""Signatures, offline: the statement, COSE checks, and the signature artifact."""

from __future__ import annotations

import pytest

from donjon.crypto.publisher import PublisherKey, generate_publisher_key_pem
from donjon.errors import SignatureError
from donjon.registry.errors import DigestMismatchError, PackageFormatError, UnsignedPackageError
from donjon.registry.oci import Digest, canonical_json
from donjon.registry.package import build_package
from donjon.registry.signing import (
    ARTIFACT_TYPE_SIGNATURE,
    MAX_SIGNATURE_BYTES,
    build_signature_artifact,
    create_signature,
    parse_signature_manifest,
    signature_statement,
    verify_signature,
)
from donjon.wire.cbor import decode, encode
from donjon.wire.cose import decode_sign1

NAME = "localhost:5000/apps/hello"


@pytest.fixture(scope="module")
def key() -> PublisherKey:
    return PublisherKey.from_pem(generate_publisher_key_pem("P-384"), source="k")


@pytest.fixture(scope="module")
def other() -> PublisherKey:
    return PublisherKey.from_pem(generate_publisher_key_pem(), source="o")


SUBJECT = build_package(b"\0asm\x01\0\0\0", b"").manifest.descriptor
OTHER_SUBJECT = build_package(b"\0asm\x01\0\0\0", b"#\n").manifest.descriptor


def test_statement_is_deterministic_cbor() -> None:
    statement = signature_statement(SUBJECT, name=NAME)
    assert statement == signature_statement(SUBJECT, name=NAME)
    assert decode(statement) == {
        "v": 1,
        "purpose": "donjon package",
        "digest": str(SUBJECT.digest),
        "size": SUBJECT.size,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.donjon.workload.v1+json",
        "name": NAME,
    }


def test_sign_and_verify(key: PublisherKey, other: PublisherKey) -> None:
    cose = create_signature(key, SUBJECT, name=NAME)
    message = decode_sign1(cose)
    assert message.alg == -35  # ES384 for a P-384 key
    assert message.protected[4] == key.public.key_id
    verified = verify_signature(cose, subject=SUBJECT, keys=[other.public, key.public])
    assert verified.key == key.public and verified.name == NAME
    assert verify_signature(cose, subject=SUBJECT, keys=[key.public], name=NAME).name == NAME


def test_refusals(key: PublisherKey, other: PublisherKey) -> None:
    cose = create_signature(key, SUBJECT, name=NAME)
    with pytest.raises(UnsignedPackageError, match="not a required publisher key"):
        verify_signature(cose, subject=SUBJECT, keys=[other.public])
    with pytest.raises(SignatureError, match="signs another package"):
        verify_signature(cose, subject=OTHER_SUBJECT, keys=[key.public])
    with pytest.raises(SignatureError, match="made for"):
        verify_signature(cose, subject=SUBJECT, keys=[key.public], name="evil.io/x")
    tampered = bytearray(cose)
    tampered[-5] ^= 1
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(bytes(tampered), subject=SUBJECT, keys=[key.public])
    with pytest.raises(SignatureError, match="not a COSE_Sign1"):
        verify_signature(b"\xa0", subject=SUBJECT, keys=[key.public])
    with pytest.raises(SignatureError, match="limit"):
        verify_signature(b"\0" * (MAX_SIGNATURE_BYTES + 1), subject=SUBJECT, keys=[key.public])


def test_a_valid_signature_over_another_statement_shape_is_refused(key: PublisherKey) -> None:
    # Signed by the right key, but not a donjon package statement: domain separation holds.
    other_payload = encode({"v": 1, "purpose": "something else"})
    cose = key.sign1(
        other_payload,
        protected={3: "application/vnd.donjon.package-signature.v1+cbor", 4: key.public.key_id},
    )
    with pytest.raises(SignatureError, match="exactly the fields"):
        verify_signature(cose, subject=SUBJECT, keys=[key.public])
    wrong_type = key.sign1(
        signature_statement(SUBJECT, name=NAME), protected={3: "text/plain", 4: key.public.key_id}
    )
    with pytest.raises(SignatureError, match="content type"):
        verify_signature(wrong_type, subject=SUBJECT, keys=[key.public])


def test_signature_artifact(key: PublisherKey) -> None:
    cose = create_signature(key, SUBJECT, name=NAME)
    artifact = build_signature_artifact(cose, SUBJECT, key=key.public)
    assert artifact.descriptor.artifact_type == ARTIFACT_TYPE_SIGNATURE
    assert artifact.subject == SUBJECT.digest
    layer = parse_signature_manifest(
        artifact.manifest_bytes, digest=artifact.digest, subject=SUBJECT.digest
    )
    assert layer.digest == Digest.of(cose) and layer.size == len(cose)
    with pytest.raises(PackageFormatError, match="subject"):
        parse_signature_manifest(
            artifact.manifest_bytes, digest=artifact.digest, subject=OTHER_SUBJECT.digest
        )
    with pytest.raises(DigestMismatchError):
        parse_signature_manifest(
            artifact.manifest_bytes, digest=Digest.of(b"x"), subject=SUBJECT.digest
        )
    package_manifest = build_package(b"\0asm\x01\0\0\0", b"").manifest_bytes
    with pytest.raises(PackageFormatError, match="artifactType"):
        parse_signature_manifest(
            package_manifest, digest=Digest.of(package_manifest), subject=SUBJECT.digest
        )
    import json

    doc = json.loads(artifact.manifest_bytes)
    doc["layers"][0]["size"] = MAX_SIGNATURE_BYTES + 1
    raw = canonical_json(doc)
    with pytest.raises(PackageFormatError, match="limit"):
        parse_signature_manifest(raw, digest=Digest.of(raw), subject=SUBJECT.digest)
