"""Package signatures: a COSE_Sign1 over a package's manifest digest, stored beside it.

A signature is an OCI artifact whose ``subject`` is the package manifest, so it lives in the same
repository and is found through the referrers API (distribution spec v1.1) or, on registries
without that API (distribution 2.8, which Debian ships), through the referrers tag schema: an
image index tagged ``sha256-<hex of the package digest>`` that lists the package's referrers.
Any OCI tool sees it for what it is (``oras discover`` lists it)::

    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.donjon.signature.v1+cose",
     "config": <the empty descriptor>,
     "layers": [{"mediaType": "application/cose", "digest": ..., "size": ...}],
     "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": <package digest>, "size": ...},
     "annotations": {"dev.donjon.signature.key": "sha256:<publisher key fingerprint>"}}

The layer is a tagged COSE_Sign1 (RFC 9052), ES256 or ES384, whose protected header holds the
algorithm, the content type ``application/vnd.donjon.package-signature.v1+cbor`` and the key
id (SHA-256 of the publisher's SubjectPublicKeyInfo), and whose payload is the deterministic
CBOR statement::

    {"v": 1, "purpose": "donjon package",
     "digest": "sha256:...", "size": N,
     "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.donjon.workload.v1+json",
     "name": "REGISTRY/REPOSITORY"}

Rule 1: the signature is checked over the exact bytes received; the statement is decoded only
after the signature verified (STYLE 19).
Rule 2: the statement must name exactly the manifest being checked (digest, size, media and
artifact type). ``name`` records where the publisher pushed it; it is reported, and checked
only if the caller asks, so a package can be mirrored to another registry.
Rule 3: annotations and referrers lists are untrusted hints that order the work; the work is
bounded (:data:`MAX_SIGNATURES_CHECKED`) and only a verified COSE signature counts.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from donjon.crypto.publisher import PublisherKey, PublisherPublicKey
from donjon.errors import DecodeError, NotFoundError, SignatureError
from donjon.registry.client import RegistryClient
from donjon.registry.errors import (
    DigestMismatchError,
    PackageFormatError,
    RegistryResponseError,
    SizeLimitError,
    UnsignedPackageError,
)
from donjon.registry.oci import (
    EMPTY_CONFIG,
    EMPTY_JSON,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_IMAGE_INDEX,
    MEDIA_TYPE_IMAGE_MANIFEST,
    Descriptor,
    Digest,
    annotations_field,
    build_image_index,
    canonical_json,
    load_json_object,
    media_type_field,
    parse_image_index,
)
from donjon.registry.package import (
    ARTIFACT_TYPE_WORKLOAD,
    MAX_MANIFEST_BYTES,
    parse_package_manifest,
)
from donjon.registry.reference import Reference
from donjon.wire.cbor import decode, encode
from donjon.wire.cose import decode_sign1

__all__ = [
    "ANNOTATION_SIGNATURE_KEY",
    "ARTIFACT_TYPE_SIGNATURE",
    "MAX_REFERRERS_INDEX_BYTES",
    "MAX_SIGNATURES_CHECKED",
    "MAX_SIGNATURE_BYTES",
    "MAX_SIGNATURE_MANIFEST_BYTES",
    "MEDIA_TYPE_COSE",
    "PAYLOAD_CONTENT_TYPE",
    "SignatureArtifact",
    "VerifiedSignature",
    "attach_signature",
    "build_signature_artifact",
    "create_signature",
    "find_signatures",
    "parse_signature_manifest",
    "sign_package",
    "signature_statement",
    "verify_package_signature",
    "verify_signature",
]

_logger = logging.getLogger(__name__)

ARTIFACT_TYPE_SIGNATURE = "application/vnd.donjon.signature.v1+cose"
MEDIA_TYPE_COSE = "application/cose"  # RFC 9052 §11.2; notation stores its COSE envelopes so too
PAYLOAD_CONTENT_TYPE = "application/vnd.donjon.package-signature.v1+cbor"
ANNOTATION_SIGNATURE_KEY = "dev.donjon.signature.key"
"""Annotation naming the signer's key fingerprint, so a verifier fetches the right one first."""

MAX_SIGNATURE_BYTES = 16 * 1024  # bytes; an ES384 COSE_Sign1 with our statement is ~400 bytes
MAX_SIGNATURE_MANIFEST_BYTES = 64 * 1024  # bytes; ours are ~800 bytes
MAX_REFERRERS_INDEX_BYTES = 4 * 1024 * 1024  # bytes; matches the client's index bound
MAX_REFERRERS = 10_000  # entries in a referrers index we accept
MAX_SIGNATURES_CHECKED = 16
"""Signatures fetched and checked per verification at most: bounds the work a registry full of
junk signatures can cause (each costs two requests and one ECDSA verification)."""

_PURPOSE = "donjon package"  # domain separation: this key's signatures mean only this
_STATEMENT_VERSION = 1
_HEADER_CONTENT_TYPE = 3  # RFC 9052 §3.1
_HEADER_KID = 4
_STATEMENT_KEYS = frozenset({"v", "purpose", "digest", "size", "mediaType", "artifactType", "name"})


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """A signature that verified with a required key over the manifest it was checked against.

    Attributes:
        key: the publisher key that signed.
        manifest_digest: the package manifest digest the statement names.
        name: ``REGISTRY/REPOSITORY`` the publisher signed it for.
        signature_digest: the digest of the signature artifact's manifest.
    """

    key: PublisherPublicKey
    manifest_digest: Digest
    name: str
    signature_digest: Digest | None = None


@dataclass(frozen=True, slots=True)
class SignatureArtifact:
    """A signature ready to push: its manifest, the COSE blob, and its index entry.

    Attributes:
        manifest_bytes: canonical manifest bytes.
        digest: their digest.
        cose: the COSE_Sign1 bytes (the single layer).
        descriptor: how a referrers index lists it (with ``artifactType`` and annotations).
        subject: the digest of the package manifest it signs.
    """

    manifest_bytes: bytes
    digest: Digest
    cose: bytes
    descriptor: Descriptor
    subject: Digest


# -- pure ------------------------------------------------------------------------------------


def signature_statement(subject: Descriptor, *, name: str) -> bytes:
    """The deterministic CBOR statement a publisher signs for a package manifest."""
    return encode(
        {
            "v": _STATEMENT_VERSION,
            "purpose": _PURPOSE,
            "digest": str(subject.digest),
            "size": subject.size,
            "mediaType": subject.media_type,
            "artifactType": subject.artifact_type or ARTIFACT_TYPE_WORKLOAD,
            "name": name,
        }
    )


def create_signature(key: PublisherKey, subject: Descriptor, *, name: str) -> bytes:
    """A tagged COSE_Sign1 by *key* over the statement for *subject*."""
    return key.sign1(
        signature_statement(subject, name=name),
        protected={_HEADER_CONTENT_TYPE: PAYLOAD_CONTENT_TYPE, _HEADER_KID: key.public.key_id},
    )


def verify_signature(
    cose: bytes,
    *,
    subject: Descriptor,
    keys: Sequence[PublisherPublicKey],
    name: str | None = None,
) -> VerifiedSignature:
    """Verify a COSE signature over *subject* with one of *keys*.

    Args:
        cose: the COSE_Sign1 bytes, exactly as received.
        subject: the package manifest's descriptor (computed here from verified bytes).
        keys: the accepted publisher keys; at least one.
        name: if given, the statement's ``name`` must equal it.

    Returns:
        The verified signature.

    Raises:
        UnsignedPackageError: signed by a key that is not in *keys*.
        SignatureError: not a COSE_Sign1, a bad signature, or a statement about another
            manifest or name.
    """
    if not keys:
        raise ValueError("verify_signature needs at least one accepted key")
    if len(cose) > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"signature is {len(cose)} bytes; the limit is {MAX_SIGNATURE_BYTES}")
    try:
        message = decode_sign1(cose, what="package signature", max_bytes=MAX_SIGNATURE_BYTES)
    except DecodeError as e:
        raise SignatureError(f"package signature is not a COSE_Sign1: {e.message}") from e
    if message.protected.get(_HEADER_CONTENT_TYPE) != PAYLOAD_CONTENT_TYPE:
        raise SignatureError(
            f"package signature has content type "
            f"{message.protected.get(_HEADER_CONTENT_TYPE)!r}, not {PAYLOAD_CONTENT_TYPE!r}"
        )
    kid = message.protected.get(_HEADER_KID)
    key = next((k for k in keys if k.key_id == kid), None)
    if key is None:
        shown = f"sha256:{kid.hex()}" if isinstance(kid, bytes) and len(kid) == 32 else "unknown"
        raise UnsignedPackageError(
            f"the package signature is by key {shown}, which is not a required publisher key "
            f"({', '.join(k.fingerprint for k in keys)})",
            signers=(shown,),
        )
    key.verify(message, what=f"package signature by {key.fingerprint}")
    # Rule 1: only now is the payload decoded.
    statement = _statement(message.payload)
    expected = {
        "digest": str(subject.digest),
        "size": subject.size,
        "mediaType": subject.media_type,
        "artifactType": subject.artifact_type or ARTIFACT_TYPE_WORKLOAD,
    }
    for field, value in expected.items():
        if statement[field] != value:
            raise SignatureError(
                f"the signature by {key.fingerprint} is for {field} {statement[field]!r}, "
                f"not {value!r}: it signs another package"
            )
    signed_name = statement["name"]
    if name is not None and signed_name != name:
        raise SignatureError(
            f"the signature by {key.fingerprint} was made for {signed_name!r}, not {name!r}"
        )
    return VerifiedSignature(key=key, manifest_digest=subject.digest, name=signed_name)


def build_signature_artifact(
    cose: bytes, subject: Descriptor, *, key: PublisherPublicKey
) -> SignatureArtifact:
    """The OCI artifact manifest that stores *cose* with *subject* as its ``subject``."""
    layer = Descriptor.for_content(MEDIA_TYPE_COSE, cose)
    annotations = {ANNOTATION_SIGNATURE_KEY: key.fingerprint}
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_MANIFEST,
        "artifactType": ARTIFACT_TYPE_SIGNATURE,
        "config": EMPTY_CONFIG.to_json(),
        "layers": [layer.to_json()],
        "subject": Descriptor(
            media_type=subject.media_type, digest=subject.digest, size=subject.size
        ).to_json(),
        "annotations": annotations,
    }
    raw = canonical_json(doc)
    descriptor = Descriptor.for_content(
        MEDIA_TYPE_IMAGE_MANIFEST,
        raw,
        annotations=annotations,
        artifact_type=ARTIFACT_TYPE_SIGNATURE,
    )
    return SignatureArtifact(
        manifest_bytes=raw,
        digest=descriptor.digest,
        cose=cose,
        descriptor=descriptor,
        subject=subject.digest,
    )


def parse_signature_manifest(data: bytes, *, digest: Digest, subject: Digest) -> Descriptor:
    """Check a signature artifact manifest and return its COSE layer's descriptor.

    Raises:
        DigestMismatchError: *data* is not the manifest *digest* names.
        PackageFormatError: not a donjon signature artifact, or one about another manifest.
    """
    what = f"signature manifest {digest}"
    if not digest.matches(data):
        raise DigestMismatchError(
            f"{what}: the bytes received hash to something else",
            expected=str(digest),
            actual=str(Digest.of(data, digest.algorithm)),
        )
    doc = load_json_object(data, what=what, max_bytes=MAX_SIGNATURE_MANIFEST_BYTES)
    if doc.get("mediaType") != MEDIA_TYPE_IMAGE_MANIFEST:
        raise PackageFormatError(f"{what}: not an OCI image manifest")
    if "artifactType" not in doc or media_type_field(doc, "artifactType", what) != (
        ARTIFACT_TYPE_SIGNATURE
    ):
        raise PackageFormatError(f"{what}: 'artifactType' is not {ARTIFACT_TYPE_SIGNATURE!r}")
    config = Descriptor.from_json(doc.get("config"), what=f"{what} config")
    if config.media_type != MEDIA_TYPE_EMPTY:
        raise PackageFormatError(f"{what}: 'config' must be the empty descriptor")
    ref = Descriptor.from_json(doc.get("subject"), what=f"{what} subject")
    if ref.digest != subject:
        raise PackageFormatError(f"{what}: its subject is {ref.digest}, not {subject}")
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise PackageFormatError(f"{what}: expected exactly one layer (the COSE_Sign1)")
    layer = Descriptor.from_json(layers[0], what=f"{what} layer")
    if layer.media_type != MEDIA_TYPE_COSE:
        raise PackageFormatError(f"{what}: the layer is {layer.media_type!r}, not COSE")
    if layer.size > MAX_SIGNATURE_BYTES:
        raise PackageFormatError(
            f"{what}: the signature is {layer.size} bytes; the limit is {MAX_SIGNATURE_BYTES}"
        )
    annotations_field(doc, what)  # bounded and well-typed, even though only a hint
    return layer


# -- with a registry ---------------------------------------------------------------------------


def sign_package(client: RegistryClient, ref: Reference, key: PublisherKey) -> SignatureArtifact:
    """Sign the package *ref* names and store the signature beside it.

    The manifest is fetched and checked to be a donjon package first: a key signs only what
    it was meant to sign.

    Raises:
        NotFoundError: no such package.
        PackageFormatError: *ref* is not a donjon package.
        RegistryError: the registry refused the upload.
    """
    fetched = client.get_manifest(
        ref.repository,
        ref.digest if ref.digest is not None else ref.manifest_reference,
        max_bytes=MAX_MANIFEST_BYTES,
    )
    manifest = parse_package_manifest(fetched.raw, digest=fetched.digest)
    subject = manifest.descriptor
    artifact = build_signature_artifact(
        create_signature(key, subject, name=ref.name), subject, key=key.public
    )
    attach_signature(client, ref.repository, artifact)
    return artifact


def attach_signature(client: RegistryClient, repository: str, artifact: SignatureArtifact) -> None:
    """Push a signature artifact and make it discoverable from *subject*.

    If the registry indexes the ``subject`` itself (it answers ``OCI-Subject``), that is all;
    otherwise the referrers tag schema index ``sha256-<hex>`` is updated (read, add, write).
    Two publishers signing the same package at the same moment can lose one entry there; the
    distribution spec accepts this for the fallback, and signing again restores it.
    """
    client.push_blob(repository, EMPTY_CONFIG, EMPTY_JSON)
    layer = Descriptor.for_content(MEDIA_TYPE_COSE, artifact.cose)
    client.push_blob(repository, layer, artifact.cose)
    result = client.put_manifest(
        repository, artifact.digest, artifact.manifest_bytes, MEDIA_TYPE_IMAGE_MANIFEST
    )
    if result.subject is not None:
        return
    tag = artifact.subject.tag_form()
    try:
        current = client.get_manifest(repository, tag, max_bytes=MAX_REFERRERS_INDEX_BYTES)
        entries = parse_image_index(
            current.raw,
            what=f"referrers index {repository}:{tag}",
            max_bytes=MAX_REFERRERS_INDEX_BYTES,
            max_entries=MAX_REFERRERS,
        )
    except NotFoundError:
        entries = ()
    if any(e.digest == artifact.digest for e in entries):
        return
    index = build_image_index((*entries, artifact.descriptor))
    client.put_manifest(repository, tag, index, MEDIA_TYPE_IMAGE_INDEX)


def find_signatures(
    client: RegistryClient, repository: str, subject: Digest
) -> tuple[Descriptor, ...]:
    """Descriptors of the signature artifacts listed for *subject* (unverified hints).

    Uses the referrers API, or the referrers tag schema when the registry has no such API.
    """
    found = client.referrers(repository, subject, artifact_type=ARTIFACT_TYPE_SIGNATURE)
    if found is None:
        tag = subject.tag_form()
        try:
            index = client.get_manifest(repository, tag, max_bytes=MAX_REFERRERS_INDEX_BYTES)
        except NotFoundError:
            return ()
        entries = parse_image_index(
            index.raw,
            what=f"referrers index {repository}:{tag}",
            max_bytes=MAX_REFERRERS_INDEX_BYTES,
            max_entries=MAX_REFERRERS,
        )
        found = tuple(e for e in entries if e.artifact_type == ARTIFACT_TYPE_SIGNATURE)
    return found


def verify_package_signature(
    client: RegistryClient,
    repository: str,
    subject: Descriptor,
    keys: Sequence[PublisherPublicKey],
    *,
    name: str | None = None,
) -> VerifiedSignature:
    """Find a signature of *subject* by one of *keys* in the registry and verify it.

    Args:
        client: the registry.
        repository: the package's repository.
        subject: the package manifest's descriptor, computed from verified bytes.
        keys: the accepted publisher keys (at least one).
        name: if given, the signed ``name`` must equal it.

    Returns:
        The first signature that verifies.

    Raises:
        UnsignedPackageError: no signature at all, or none by a required key.
        SignatureError: a signature by a required key that does not verify (and no other did).
    """
    if not keys:
        raise ValueError("verify_package_signature needs at least one accepted key")
    candidates = find_signatures(client, repository, subject.digest)
    if not candidates:
        raise UnsignedPackageError(
            f"{client.registry}/{repository}@{subject.digest} has no signature; "
            "the publisher must run `donjon package sign`"
        )
    wanted = {k.fingerprint for k in keys}
    # Rule 3: annotated-as-ours first; the annotation is only an ordering hint.
    ordered = sorted(candidates, key=lambda d: d.annotation(ANNOTATION_SIGNATURE_KEY) not in wanted)
    problems: list[str] = []
    signers: list[str] = []
    failure: SignatureError | None = None
    for desc in ordered[:MAX_SIGNATURES_CHECKED]:
        try:
            fetched = client.get_manifest(
                repository, desc.digest, max_bytes=MAX_SIGNATURE_MANIFEST_BYTES
            )
            layer = parse_signature_manifest(
                fetched.raw, digest=desc.digest, subject=subject.digest
            )
            sink = io.BytesIO()
            client.fetch_blob(repository, layer, sink, max_bytes=MAX_SIGNATURE_BYTES)
            verified = verify_signature(sink.getvalue(), subject=subject, keys=keys, name=name)
        except UnsignedPackageError as e:
            signers.extend(s for s in e.signers if s not in signers)
        except SignatureError as e:
            failure = e
            problems.append(e.message)
        except (
            NotFoundError,
            PackageFormatError,
            DigestMismatchError,
            SizeLimitError,
            RegistryResponseError,
        ) as e:
            # One broken or junk entry must not hide a good signature listed after it.
            _logger.info("skipping signature artifact %s: %s", desc.digest, e.message)
            problems.append(f"signature artifact {desc.digest}: {e.message}")
        else:
            return VerifiedSignature(
                key=verified.key,
                manifest_digest=verified.manifest_digest,
                name=verified.name,
                signature_digest=desc.digest,
            )
    if failure is not None:
        raise SignatureError(f"{failure.message} ({len(candidates)} signature(s) checked)")
    where = f"{client.registry}/{repository}@{subject.digest}"
    required = ", ".join(sorted(wanted))
    if signers and not problems:
        raise UnsignedPackageError(
            f"{where} is signed only by other keys ({', '.join(signers)}), "
            f"not by a required publisher key ({required})",
            signers=tuple(signers),
        )
    raise UnsignedPackageError(
        f"no signature of {where} by a required publisher key ({required}) verified: "
        + "; ".join(problems[:3] or [f"signed only by {', '.join(signers)}"]),
        signers=tuple(signers),
    )


def _statement(payload: bytes) -> dict[str, Any]:
    try:
        value = decode(payload, what="signature statement", max_bytes=MAX_SIGNATURE_BYTES)
    except DecodeError as e:
        raise SignatureError(f"signed statement is not CBOR: {e.message}") from e
    if not isinstance(value, dict) or set(value) != _STATEMENT_KEYS:
        raise SignatureError(
            "signed statement does not have exactly the fields "
            f"{', '.join(sorted(_STATEMENT_KEYS))}"
        )
    if value["v"] != _STATEMENT_VERSION or value["purpose"] != _PURPOSE:
        raise SignatureError(
            f"signed statement is version {value['v']!r} for {value['purpose']!r}; "
            f"donjon checks version {_STATEMENT_VERSION} for {_PURPOSE!r}"
        )
    for field in ("digest", "mediaType", "artifactType", "name"):
        if not isinstance(value[field], str):
            raise SignatureError(f"signed statement: {field!r} must be a string")
    if not isinstance(value["size"], int) or isinstance(value["size"], bool):
        raise SignatureError("signed statement: 'size' must be an integer")
    return value
