"""Deterministic AWS Nitro test vectors derived from the real documents in ../shared/vectors/nitro.

Each variant is one real attestation document with one defect (flipped signature, PCR, user data
or nonce byte; a look-alike root; a leaf from another document; an expired or not-yet-valid leaf
by ``now``; bad fields; truncation ...), or a document from this generator's own test PKI that
mirrors AWS's (root → regional → zonal → instance → leaf, ES384) to reach checks the real
documents cannot: debug PCRs, a leaf that is a CA, a bundle with an extra certificate, a
document dated in the future. Every variant names the error class the verifier must raise, or
"accept", and the root to verify against ("aws" = the embedded Root-G1, "generator" = the test
PKI's root).

Determinism: keys come from fixed labels, certificates and COSE signatures use RFC 6979, and all
times are fixed, so the output is byte-identical on every run:

    python tests/vectors_gen/nitro_gen.py --out build/vectors/nitro
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
REAL = ("blocky-prod-2024", "evervault-prod-2022", "evervault-debug-2022")
AWS_ROOT_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "AWS"),
        x509.NameAttribute(NameOID.COMMON_NAME, "aws.nitro-enclaves"),
    ]
)
T0 = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)
"""When the synthetic leaf certificates start to be valid."""
DOC_TIME = T0 + timedelta(seconds=3)
VERIFY_TIME = T0 + timedelta(seconds=10)


@dataclass(frozen=True)
class Variant:
    """One generated vector.

    Attributes:
        name: a stable identifier (file name stem).
        document: the evidence bytes.
        root: "aws" (embedded Root-G1) or "generator" (this module's test root).
        now: the verification time.
        expected: "accept" or the name of the error class the verifier must raise.
        why: what was changed and which check must catch it.
        debug: for accepted variants, the expected ``debug`` flag.
        claims: for accepted variants, claims the result must carry.
    """

    name: str
    document: bytes
    root: str
    now: datetime
    expected: str
    why: str
    debug: bool | None = None
    claims: dict[str, Any] = field(default_factory=dict)


# --- deterministic keys, certificates and COSE -----------------------------------------------


def derive_key(label: str, curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A private key derived from *label* (test keys only)."""
    crv = curve or ec.SECP384R1()
    seed = int.from_bytes(hashlib.sha512(f"donjon-test-vectors/{label}".encode()).digest(), "big")
    return ec.derive_private_key(1 + seed % 2 ** (crv.key_size - 1), crv)


def _serial(label: str) -> int:
    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:16], "big") >> 1


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "donjon test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ski(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def make_cert(
    *,
    label: str,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    path_length: int | None = None,
) -> x509.Certificate:
    """A certificate shaped like AWS's Nitro PKI (ES384, deterministic signature)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(_serial(label))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=ca,
        )
    )
    if ca:
        builder = builder.add_extension(_ski(key), critical=False)
    if issuer is not None and ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer_key)),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA384(), ecdsa_deterministic=True)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Pki:
    """A root → regional → zonal → instance chain and the leaf key, like AWS's."""

    root: x509.Certificate
    cabundle: tuple[bytes, ...]
    leaf_issuer: x509.Certificate
    leaf_issuer_key: ec.EllipticCurvePrivateKey


def make_pki(label: str, root_name: x509.Name) -> Pki:
    root_key = derive_key(f"nitro/{label}/root")
    root = make_cert(
        label=f"{label}/root",
        subject=root_name,
        key=root_key,
        issuer=None,
        issuer_key=root_key,
        not_before=datetime(2019, 10, 28, tzinfo=UTC),
        not_after=datetime(2049, 10, 28, tzinfo=UTC),
        ca=True,
    )
    chain = [root]
    keys = [root_key]
    spans = [(timedelta(days=9), timedelta(days=20)), (timedelta(days=1), timedelta(days=5))]
    spans.append((timedelta(hours=1), timedelta(days=1)))
    for depth, (cn, (before, after)) in enumerate(
        zip(("regional", "zonal", "instance"), spans, strict=True)
    ):
        key = derive_key(f"nitro/{label}/{cn}")
        chain.append(
            make_cert(
                label=f"{label}/{cn}",
                subject=_name(f"{label}.{cn}.nitro-enclaves.test"),
                key=key,
                issuer=chain[-1],
                issuer_key=keys[-1],
                not_before=T0 - before,
                not_after=T0 + after,
                ca=True,
                path_length=2 - depth,
            )
        )
        keys.append(key)
    return Pki(
        root=root,
        cabundle=tuple(der(c) for c in chain),
        leaf_issuer=chain[-1],
        leaf_issuer_key=keys[-1],
    )


@cache
def generator_pki() -> Pki:
    """The test PKI whose root tests pass as ``NitroVerifier(root=...)``."""
    return make_pki("gen", _name("donjon test nitro root"))


@cache
def lookalike_pki() -> Pki:
    """A PKI whose root copies AWS Root-G1's name (not its key)."""
    return make_pki("lookalike", AWS_ROOT_NAME)


def make_leaf(
    pki: Pki,
    label: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = False,
    not_before: datetime = T0,
    lifetime: timedelta = timedelta(hours=3),
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    leaf_key = key or derive_key(f"nitro/{label}/leaf")
    cert = make_cert(
        label=f"{label}/leaf",
        subject=_name(f"{label}.enclave.test"),
        key=leaf_key,
        issuer=pki.leaf_issuer,
        issuer_key=pki.leaf_issuer_key,
        not_before=not_before,
        not_after=not_before + lifetime,
        ca=ca,
        path_length=0 if ca else None,
    )
    return der(cert), leaf_key


def sign_document(
    key: ec.EllipticCurvePrivateKey, payload: bytes, *, alg: int = -35, tagged: bool = False
) -> bytes:
    """An NSM-style COSE_Sign1 (untagged unless asked) with a deterministic signature."""
    protected = bytes(cbor2.dumps({1: alg}))
    tbs = bytes(cbor2.dumps(["Signature1", protected, b"", payload]))
    halg: hashes.HashAlgorithm = hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA256()
    r, s = decode_dss_signature(key.sign(tbs, ec.ECDSA(halg, deterministic_signing=True)))
    n = (key.curve.key_size + 7) // 8
    body = [protected, {}, payload, r.to_bytes(n, "big") + s.to_bytes(n, "big")]
    return bytes(cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body))


def payload(
    *,
    leaf: bytes,
    cabundle: tuple[bytes, ...],
    pcrs: dict[int, bytes],
    timestamp: datetime = DOC_TIME,
    module_id: str = "i-0123456789abcdef0-enc0123456789abcdef",
    extra: dict[str, Any] | None = None,
) -> bytes:
    """An attestation document payload in the NSM's field order."""
    doc: dict[str, Any] = {
        "module_id": module_id,
        "digest": "SHA384",
        "timestamp": int(timestamp.timestamp() * 1000),
        "pcrs": pcrs,
        "certificate": leaf,
        "cabundle": list(cabundle),
    }
    doc.update(extra or {})
    return bytes(cbor2.dumps(doc))


def sample_pcrs(*, debug: bool = False) -> dict[int, bytes]:
    pcrs = {i: hashlib.sha384(f"pcr{i}".encode()).digest() for i in range(16)}
    if debug:
        pcrs.update({0: bytes(48), 1: bytes(48), 2: bytes(48)})
    for i in (3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15):
        pcrs[i] = bytes(48)
    return pcrs


# --- real-document editing -------------------------------------------------------------------


def real(vectors: Path, name: str) -> bytes:
    return (vectors / "nitro" / name / "attestation.cbor").read_bytes()


def real_time(vectors: Path, name: str) -> datetime:
    manifest = json.loads((vectors / "manifest.json").read_text())
    for v in manifest["vectors"]:
        if v["id"] == f"nitro-{name}":
            return datetime.fromisoformat(v["verify_time"])
    raise KeyError(name)


def outer(document: bytes) -> list[Any]:
    body: list[Any] = cbor2.loads(document)
    return body


def fields(document: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = cbor2.loads(outer(document)[2])
    return doc


def with_payload(document: bytes, new_payload: dict[str, Any]) -> bytes:
    body = outer(document)
    body[2] = bytes(cbor2.dumps(new_payload))
    return bytes(cbor2.dumps(body))


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def flip_inside(data: bytes, needle: bytes) -> bytes:
    return flip(data, data.index(needle) + len(needle) // 2)


def leaf_validity(document: bytes) -> tuple[datetime, datetime]:
    cert = x509.load_der_x509_certificate(fields(document)["certificate"])
    return cert.not_valid_before_utc, cert.not_valid_after_utc


# --- the variants ----------------------------------------------------------------------------


def variants(vectors: Path = VECTORS) -> list[Variant]:
    """Every Nitro variant, in a fixed order."""
    blocky, prod, debug = (real(vectors, n) for n in REAL)
    t_blocky, t_prod = real_time(vectors, REAL[0]), real_time(vectors, REAL[1])
    out: list[Variant] = []

    def add(
        name: str,
        document: bytes,
        root: str,
        now: datetime,
        expected: str,
        why: str,
        debug: bool | None = None,
        claims: dict[str, Any] | None = None,
    ) -> None:
        out.append(Variant(name, document, root, now, expected, why, debug, claims or {}))

    # Real documents, one defect each (verified against the embedded AWS root).
    add(
        "signature-flipped",
        flip(blocky, len(blocky) - 1),
        "aws",
        t_blocky,
        "SignatureError",
        "last signature byte flipped: step 5",
    )
    add(
        "pcr0-flipped",
        flip_inside(blocky, fields(blocky)["pcrs"][0]),
        "aws",
        t_blocky,
        "SignatureError",
        "a PCR0 byte flipped inside the signed payload: step 5",
    )
    add(
        "user-data-flipped",
        flip(blocky, blocky.index(b"user_data") + 20),
        "aws",
        t_blocky,
        "SignatureError",
        "a user_data byte (the report data) flipped: step 5",
    )
    add(
        "nonce-flipped",
        flip_inside(prod, fields(prod)["nonce"]),
        "aws",
        t_prod,
        "SignatureError",
        "a nonce byte flipped: step 5",
    )
    start, end = leaf_validity(blocky)
    add(
        "expired-at-now",
        blocky,
        "aws",
        end + timedelta(seconds=1),
        "FreshnessError",
        "genuine document verified one second after its leaf expired: step 4",
    )
    add(
        "not-yet-valid-at-now",
        blocky,
        "aws",
        start - timedelta(seconds=1),
        "FreshnessError",
        "genuine document verified one second before its leaf became valid: step 4",
    )
    add(
        "far-future-now",
        prod,
        "aws",
        datetime(2026, 11, 27, tzinfo=UTC),
        "FreshnessError",
        "a 2022 document verified in 2026 (its ~3-hour leaf long expired): step 4",
    )
    lookalike = lookalike_pki()
    doc = fields(blocky)
    doc["cabundle"] = [lookalike.cabundle[0], *doc["cabundle"][1:]]
    add(
        "cabundle-root-lookalike",
        with_payload(blocky, doc),
        "aws",
        t_blocky,
        "ChainError",
        "cabundle[0] replaced by a root with AWS's name and another key: step 2",
    )
    doc = fields(blocky)
    doc["certificate"] = fields(prod)["certificate"]
    add(
        "leaf-from-other-document",
        with_payload(blocky, doc),
        "aws",
        t_blocky,
        "ChainError",
        "the leaf of a 2022 document in a 2024 bundle: no path (and no common validity): step 3",
    )
    doc = fields(blocky)
    doc["digest"] = "SHA256"
    add(
        "digest-sha256",
        with_payload(blocky, doc),
        "aws",
        t_blocky,
        "EvidenceFormatError",
        "digest is not SHA384: step 1",
    )
    doc = fields(blocky)
    doc["pcrs"] = {**doc["pcrs"], 4: doc["pcrs"][4][:32]}
    add(
        "pcr-short",
        with_payload(blocky, doc),
        "aws",
        t_blocky,
        "EvidenceFormatError",
        "PCR4 is 32 bytes under SHA384: step 1",
    )
    doc = fields(blocky)
    del doc["certificate"]
    add(
        "missing-certificate",
        with_payload(blocky, doc),
        "aws",
        t_blocky,
        "EvidenceFormatError",
        "no leaf certificate: step 1",
    )
    doc = fields(blocky)
    doc["user_data"] = bytes(1025)
    add(
        "user-data-too-long",
        with_payload(blocky, doc),
        "aws",
        t_blocky,
        "EvidenceFormatError",
        "user_data of 1025 bytes: step 1",
    )
    body = outer(blocky)
    body[0] = bytes(cbor2.dumps({1: -7}))
    add(
        "protected-alg-es256",
        bytes(cbor2.dumps(body)),
        "aws",
        t_blocky,
        "EvidenceFormatError",
        "protected header says ES256: the NSM signs with ES384: step 1",
    )
    add(
        "truncated",
        blocky[: len(blocky) // 2],
        "aws",
        t_blocky,
        "EvidenceFormatError",
        "document cut in half",
    )
    add(
        "trailing-bytes",
        blocky + b"\x00",
        "aws",
        t_blocky,
        "EvidenceFormatError",
        "a byte after the document",
    )
    add(
        "oversized",
        blocky + bytes(64 * 1024),
        "aws",
        t_blocky,
        "EvidenceFormatError",
        "over MAX_DOCUMENT_BYTES",
    )
    add("empty", b"", "aws", t_blocky, "EvidenceFormatError", "no bytes at all")
    add(
        "tagged-18",
        bytes(cbor2.dumps(cbor2.CBORTag(18, outer(blocky)))),
        "aws",
        t_blocky,
        "accept",
        "the genuine document with COSE tag 18 added (the tag is not signed; both forms occur)",
        debug=False,
    )
    body = outer(debug)
    body[1] = {4: b"relay-added"}
    add(
        "unprotected-header-added",
        bytes(cbor2.dumps(body)),
        "aws",
        real_time(vectors, REAL[2]),
        "accept",
        "an unprotected header added by a relay: not signed, not used, still authentic",
        debug=True,
    )

    # The generator's PKI (verified against its own root unless stated).
    gen = generator_pki()
    leaf, leaf_key = make_leaf(gen, "prod")
    prod_doc = sign_document(
        leaf_key,
        payload(
            leaf=leaf,
            cabundle=gen.cabundle,
            pcrs=sample_pcrs(),
            extra={"public_key": None, "user_data": bytes(range(64)), "nonce": b"n" * 32},
        ),
    )
    add(
        "synthetic-prod",
        prod_doc,
        "generator",
        VERIFY_TIME,
        "accept",
        "a document from a test PKI shaped like AWS's: the verifier is not tied to the vectors",
        debug=False,
        claims={"user_data": bytes(range(64)).hex(), "nonce": (b"n" * 32).hex(), "pcr3": "00" * 48},
    )
    add(
        "synthetic-prod-under-aws-root",
        prod_doc,
        "aws",
        VERIFY_TIME,
        "ChainError",
        "the same document checked against the real AWS root: cabundle[0] is not it: step 2",
    )
    leaf, leaf_key = make_leaf(gen, "debug")
    add(
        "synthetic-debug",
        sign_document(
            leaf_key, payload(leaf=leaf, cabundle=gen.cabundle, pcrs=sample_pcrs(debug=True))
        ),
        "generator",
        VERIFY_TIME,
        "accept",
        "PCR0..2 all zero (debug mode); no public_key/user_data/nonce fields at all",
        debug=True,
        claims={"user_data": None, "nonce": None, "public_key": None},
    )
    leaf, leaf_key = make_leaf(lookalike, "lookalike")
    add(
        "lookalike-root",
        sign_document(
            leaf_key, payload(leaf=leaf, cabundle=lookalike.cabundle, pcrs=sample_pcrs())
        ),
        "aws",
        VERIFY_TIME,
        "ChainError",
        "a whole chain under a root named like AWS Root-G1 with another key: step 2",
    )
    aws_root_der = x509.load_pem_x509_certificate(
        (vectors / "nitro/roots/aws-nitro-enclaves-root-g1.pem").read_bytes()
    ).public_bytes(serialization.Encoding.DER)
    add(
        "lookalike-chain-under-real-root",
        sign_document(
            leaf_key,
            payload(
                leaf=leaf, cabundle=(aws_root_der, *lookalike.cabundle[1:]), pcrs=sample_pcrs()
            ),
        ),
        "aws",
        VERIFY_TIME,
        "ChainError",
        "cabundle[0] is the genuine AWS root but the intermediates hang off a look-alike: "
        "the path does not validate: step 3",
    )
    leaf, leaf_key = make_leaf(gen, "leaf-ca", ca=True)
    add(
        "synthetic-leaf-is-ca",
        sign_document(leaf_key, payload(leaf=leaf, cabundle=gen.cabundle, pcrs=sample_pcrs())),
        "generator",
        VERIFY_TIME,
        "ChainError",
        "the signing leaf is a CA certificate (basicConstraints cA=TRUE): step 3",
    )
    stray = make_cert(
        label="gen/stray",
        subject=_name("stray.nitro-enclaves.test"),
        key=derive_key("nitro/gen/stray"),
        issuer=gen.root,
        issuer_key=derive_key("nitro/gen/root"),
        not_before=T0 - timedelta(days=1),
        not_after=T0 + timedelta(days=1),
        ca=True,
        path_length=0,
    )
    leaf, leaf_key = make_leaf(gen, "stray")
    add(
        "synthetic-extra-cabundle-cert",
        sign_document(
            leaf_key,
            payload(leaf=leaf, cabundle=(*gen.cabundle, der(stray)), pcrs=sample_pcrs()),
        ),
        "generator",
        VERIFY_TIME,
        "ChainError",
        "cabundle carries a valid but unused CA certificate: the bundle must be the path: step 3",
    )
    leaf, leaf_key = make_leaf(gen, "future")
    add(
        "synthetic-future-timestamp",
        sign_document(
            leaf_key,
            payload(
                leaf=leaf,
                cabundle=gen.cabundle,
                pcrs=sample_pcrs(),
                timestamp=T0 + timedelta(hours=2),
            ),
        ),
        "generator",
        VERIFY_TIME,
        "FreshnessError",
        "document dated 2 hours after `now` while the leaf is valid: step 6",
    )
    leaf, leaf_key = make_leaf(gen, "p256", key=derive_key("nitro/gen/p256", ec.SECP256R1()))
    add(
        "synthetic-leaf-p256",
        sign_document(
            leaf_key, payload(leaf=leaf, cabundle=gen.cabundle, pcrs=sample_pcrs()), alg=-35
        ),
        "generator",
        VERIFY_TIME,
        "ChainError",
        "the leaf key is P-256: the NSM signs with P-384: step 5",
    )
    leaf, leaf_key = make_leaf(gen, "late", not_before=T0 + timedelta(days=2))
    add(
        "synthetic-leaf-outlives-issuer",
        sign_document(
            leaf_key,
            payload(
                leaf=leaf,
                cabundle=gen.cabundle,
                pcrs=sample_pcrs(),
                timestamp=T0 + timedelta(days=2, seconds=3),
            ),
        ),
        "generator",
        T0 + timedelta(days=2, seconds=10),
        "ChainError",
        "the leaf is valid only after its issuer expired: no instant when the chain is valid: "
        "step 3",
    )
    return out


def write(out_dir: Path, vectors: Path = VECTORS) -> list[Path]:
    """Write every variant, the generator root and a manifest.json into *out_dir*."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir / "generator-root.pem"
    root.write_bytes(generator_pki().root.public_bytes(serialization.Encoding.PEM))
    written = [root]
    manifest: list[dict[str, Any]] = []
    for v in variants(vectors):
        path = out_dir / f"{v.name}.cbor"
        path.write_bytes(v.document)
        written.append(path)
        manifest.append(
            {
                "name": v.name,
                "document": path.name,
                "root": v.root,
                "verify_time": v.now.isoformat(),
                "expected": v.expected,
                "debug": v.debug,
                "claims": v.claims,
                "why": v.why,
                "sha256": hashlib.sha256(v.document).hexdigest(),
            }
        )
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--vectors", type=Path, default=VECTORS, help="shared vectors directory")
    args = parser.parse_args(argv)
    files = write(args.out, args.vectors)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
