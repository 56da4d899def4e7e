"""Deterministic Arm CCA test vectors derived from the real tokens in ../shared/vectors/cca.

Each variant is one real token with one defect (a flipped signature or claim byte, a swapped
CPAK, a substituted RAK, a spliced token, a wrong tag, a truncation, ...), or a synthetic token
signed by this generator's own keys to reach checks the real tokens cannot (unknown profiles,
other hash algorithms, debug lifecycles). Every variant names the exact error class the verifier
must raise, or "accept".

Determinism: keys are derived from fixed labels, signatures use RFC 6979 (deterministic ECDSA),
and CBOR is encoded in a fixed order, so the same inputs always give the same bytes. CI re-runs
this and diffs the output:

    python tests/vectors_gen/cca_gen.py --out build/vectors/cca
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"

COLLECTION_TAG = 399
CMW_COLLECTION_TAG = 907
PLATFORM = 44234
REALM = 44241
DEVICE = 44258
EAT_CWT = 263
UCCS = 601
_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm, int, int]] = {
    "P-256": (ec.SECP256R1(), hashes.SHA256(), -7, 32),
    "P-384": (ec.SECP384R1(), hashes.SHA384(), -35, 48),
}


@dataclass(frozen=True)
class Variant:
    """One generated vector.

    Attributes:
        name: a stable identifier (file name stem).
        token: the evidence bytes.
        cpaks: endorsement files (PEM or JSON) passed as ``Endorsements.certs``.
        expected: "accept" or the name of the error class the verifier must raise.
        why: what was changed and which check must catch it.
        debug: for accepted variants, the expected ``debug`` flag.
    """

    name: str
    token: bytes
    cpaks: tuple[bytes, ...]
    expected: str
    why: str
    debug: bool | None = None


# --- deterministic keys and COSE -------------------------------------------------------------


def derive_key(label: str, curve: str = "P-384") -> ec.EllipticCurvePrivateKey:
    """A private key derived from *label* (test keys only: never use this scheme for real keys)."""
    crv = _CURVES[curve][0]
    seed = int.from_bytes(hashlib.sha512(f"donjon-test-vectors/{label}".encode()).digest(), "big")
    # Any scalar in [1, 2^(bits-1)] is below the group order of P-256 and P-384.
    return ec.derive_private_key(1 + seed % 2 ** (crv.key_size - 1), crv)


def pem_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def cose_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The COSE_Key encoding TF-RMM uses for the RAK: {1: 2, -1: crv, -2: x, -3: y}."""
    point = raw_point(key)
    n = (len(point) - 1) // 2
    crv = {32: 1, 48: 2}[n]
    return bytes(cbor2.dumps({1: 2, -1: crv, -2: point[1 : 1 + n], -3: point[1 + n :]}))


def sign1(key: ec.EllipticCurvePrivateKey, payload: bytes, *, alg: int | None = None) -> bytes:
    """A tagged COSE_Sign1 with a deterministic (RFC 6979) ECDSA signature."""
    name = {256: "P-256", 384: "P-384"}[key.curve.key_size]
    _, halg, default_alg, n = _CURVES[name]
    protected = bytes(cbor2.dumps({1: default_alg if alg is None else alg}))
    tbs = bytes(cbor2.dumps(["Signature1", protected, b"", payload]))
    der = key.sign(tbs, ec.ECDSA(halg, deterministic_signing=True))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(n, "big") + s.to_bytes(n, "big")
    return bytes(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig])))


def collection(platform: bytes, realm: bytes, *, tag: int = COLLECTION_TAG) -> bytes:
    return bytes(cbor2.dumps(cbor2.CBORTag(tag, {PLATFORM: platform, REALM: realm})))


def cmw_collection(
    platform: bytes,
    realm: bytes,
    *,
    tag: int = CMW_COLLECTION_TAG,
    platform_type: Any = EAT_CWT,
    realm_type: Any = EAT_CWT,
    extra: dict[Any, Any] | None = None,
) -> bytes:
    """The RMM 2.0 framing: ``907({44234: [263, platform], 44241: [263, realm]})``.

    The luxfi/cc sample (tests/vectors/extra/cca/cmw-tfrmm) is exactly this encoding of the
    shared tfrmm-legacy token's two messages, byte for byte.
    """
    body: dict[Any, Any] = {PLATFORM: [platform_type, platform], REALM: [realm_type, realm]}
    body.update(extra or {})
    return bytes(cbor2.dumps(cbor2.CBORTag(tag, body)))


def split(token: bytes) -> tuple[bytes, bytes]:
    body = cbor2.loads(token).value
    return body[PLATFORM], body[REALM]


def claims_of(cose: bytes) -> dict[int, Any]:
    claims: dict[int, Any] = cbor2.loads(cbor2.loads(cose).value[2])
    return claims


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def flip_inside(data: bytes, needle: bytes) -> bytes:
    at = data.index(needle)
    return flip(data, at + len(needle) // 2)


# --- synthetic tokens ------------------------------------------------------------------------

GEN_CPAK = derive_key("cca/cpak")
GEN_RAK = derive_key("cca/rak")
OTHER_KEY = derive_key("cca/other")


def synthetic(
    template: dict[int, Any],
    realm_template: dict[int, Any],
    *,
    rak: ec.EllipticCurvePrivateKey = GEN_RAK,
    rak_format: str = "raw",
    binding_alg: str = "sha-256",
    declared_alg: str | None = None,
    platform_edit: dict[int, Any] | None = None,
    realm_edit: dict[int, Any] | None = None,
    cpak: ec.EllipticCurvePrivateKey = GEN_CPAK,
) -> bytes:
    """A token built from real claims, with *rak* as RAK, signed by the generator's keys."""
    rak_bytes = raw_point(rak) if rak_format == "raw" else cose_key(rak)
    realm_claims = dict(realm_template)
    realm_claims[44237] = rak_bytes
    realm_claims[44240] = declared_alg or binding_alg
    realm_claims.update(realm_edit or {})
    platform_claims = dict(template)
    platform_claims[10] = hashlib.new(binding_alg.replace("-", ""), rak_bytes).digest()
    platform_claims.update(platform_edit or {})
    realm = sign1(rak, bytes(cbor2.dumps(realm_claims)))
    platform = sign1(cpak, bytes(cbor2.dumps(platform_claims)))
    return collection(platform, realm)


# --- the variants ----------------------------------------------------------------------------


def variants(vectors: Path = VECTORS) -> list[Variant]:
    """Every CCA variant, in a fixed order."""
    legacy = (vectors / "cca/tfrmm-legacy/token.cbor").read_bytes()
    legacy_cpak = (vectors / "cca/tfrmm-legacy/cpak.pub.pem").read_bytes()
    ffm = (vectors / "cca/draft-ffm-00/token.cbor").read_bytes()
    ffm_ta = (vectors / "cca/draft-ffm-00/ta-tfa.json").read_bytes()
    lp, lr = split(legacy)
    fp, fr = split(ffm)
    lpc, lrc, frc = claims_of(lp), claims_of(lr), claims_of(fr)
    gen = (pem_public(GEN_CPAK),)
    out: list[Variant] = []

    def add(
        name: str,
        token: bytes,
        cpaks: tuple[bytes, ...],
        expected: str,
        why: str,
        debug: bool | None = None,
    ) -> None:
        out.append(Variant(name, token, cpaks, expected, why, debug))

    # Real tokens, one defect each.
    add(
        "platform-signature-flipped",
        collection(flip(lp, len(lp) - 1), lr),
        (legacy_cpak,),
        "SignatureError",
        "last byte of the platform signature flipped: step 3 (platform COSE_Sign1)",
    )
    add(
        "realm-signature-flipped",
        collection(lp, flip(lr, len(lr) - 1)),
        (legacy_cpak,),
        "SignatureError",
        "last byte of the realm signature flipped: step 5 (realm COSE_Sign1)",
    )
    add(
        "platform-claim-flipped",
        collection(flip_inside(lp, lpc[2396]), lr),
        (legacy_cpak,),
        "SignatureError",
        "a byte of the implementation ID flipped: the platform signature no longer covers it",
    )
    add(
        "realm-challenge-flipped",
        collection(lp, flip_inside(lr, lrc[10])),
        (legacy_cpak,),
        "SignatureError",
        "a byte of the realm challenge (report data) flipped: step 5",
    )
    add(
        "realm-rim-flipped",
        collection(fp, flip_inside(fr, frc[44238])),
        (ffm_ta,),
        "SignatureError",
        "a byte of the RIM (the measurement) flipped in the draft-ffm-00 token",
    )
    add(
        "cpak-swapped",
        legacy,
        (pem_public(OTHER_KEY),),
        "SignatureError",
        "a genuine token endorsed with another P-384 key: no CPAK verifies it (step 3)",
    )
    other_instance = json.dumps(
        [
            {
                **json.loads(ffm_ta)[0],
                "instance-id": "01" + "ee" * 32,
            }
        ]
    ).encode()
    add(
        "cpak-for-other-instance",
        ffm,
        (other_instance,),
        "CpakError",
        "the right key, but the trust anchor is restricted to another instance ID (step 2)",
    )
    add("no-cpak", legacy, (), "CpakError", "no CPAK at all: step 2 names the key needed")
    add(
        "platform-of-other-token",
        collection(fp, lr),
        (legacy_cpak,),
        "MeasurementError",
        "platform token of draft-ffm-00 spliced with the legacy realm token: both signatures are "
        "genuine (same TF-A key) but the challenge is not the hash of this RAK (step 6)",
    )
    realm_other_rak = dict(lrc)
    realm_other_rak[44237] = raw_point(OTHER_KEY)
    add(
        "rak-substituted",
        collection(lp, sign1(OTHER_KEY, bytes(cbor2.dumps(realm_other_rak)))),
        (legacy_cpak,),
        "MeasurementError",
        "realm token re-signed by a substituted RAK (raw point): realm signature valid, binding "
        "to the genuine platform token fails (step 6)",
    )
    ffm_other_rak = dict(frc)
    ffm_other_rak[44237] = cose_key(OTHER_KEY)
    add(
        "rak-substituted-cose-key",
        collection(fp, sign1(OTHER_KEY, bytes(cbor2.dumps(ffm_other_rak)))),
        (ffm_ta,),
        "MeasurementError",
        "draft-ffm-00 realm token re-signed by a substituted RAK (COSE_Key): binding fails",
    )
    realm_hdr = cbor2.loads(lr)
    realm_hdr.value[0] = bytes(cbor2.dumps({1: -7}))
    add(
        "realm-alg-es256",
        collection(lp, bytes(cbor2.dumps(realm_hdr))),
        (legacy_cpak,),
        "SignatureError",
        "realm protected header claims ES256: does not match the P-384 RAK (step 5)",
    )
    add(
        "wrong-collection-tag",
        collection(lp, lr, tag=400),
        (legacy_cpak,),
        "EvidenceFormatError",
        "collection tag 400 instead of 399 (step 1)",
    )
    add(
        "cmw-collection-tag",
        collection(lp, lr, tag=CMW_COLLECTION_TAG),
        (legacy_cpak,),
        "EvidenceFormatError",
        "tag 907 over bare byte strings: a CMW collection holds [263, bstr] records (step 1)",
    )
    _cmw_variants(add, lp, lr, fp, legacy_cpak)
    add(
        "missing-realm",
        bytes(cbor2.dumps(cbor2.CBORTag(COLLECTION_TAG, {PLATFORM: lp}))),
        (legacy_cpak,),
        "EvidenceFormatError",
        "the collection lacks the realm token (step 1)",
    )
    add(
        "extra-collection-entry",
        bytes(cbor2.dumps(cbor2.CBORTag(COLLECTION_TAG, {PLATFORM: lp, REALM: lr, 44242: b""}))),
        (legacy_cpak,),
        "EvidenceFormatError",
        "an undefined collection entry (step 1)",
    )
    add(
        "realm-not-wrapped",
        bytes(cbor2.dumps(cbor2.CBORTag(COLLECTION_TAG, {PLATFORM: lp, REALM: cbor2.loads(lr)}))),
        (legacy_cpak,),
        "EvidenceFormatError",
        "realm COSE_Sign1 embedded as an item, not wrapped in a byte string (step 1)",
    )
    add(
        "truncated",
        legacy[: len(legacy) // 2],
        (legacy_cpak,),
        "EvidenceFormatError",
        "token cut in half (step 1)",
    )
    add(
        "trailing-bytes",
        legacy + b"\x00",
        (legacy_cpak,),
        "EvidenceFormatError",
        "a byte after the collection (step 1)",
    )
    add(
        "oversized",
        legacy + bytes(64 * 1024),
        (legacy_cpak,),
        "EvidenceFormatError",
        "over MAX_TOKEN_BYTES (step 1, before decoding)",
    )
    add("empty", b"", (legacy_cpak,), "EvidenceFormatError", "no bytes at all (step 1)")

    # Synthetic tokens, signed by the generator's CPAK and RAK.
    add(
        "synthetic-legacy",
        synthetic(lpc, lrc),
        gen,
        "accept",
        "legacy claims, generator CPAK and RAK (raw point): the verifier is not tied to the "
        "vectors' keys",
        debug=False,
    )
    add(
        "synthetic-ffm-sha512-binding",
        synthetic(claims_of(fp), frc, rak_format="cose", binding_alg="sha-512"),
        gen,
        "accept",
        "draft-ffm-00 claims, RAK as COSE_Key, RAK hash algorithm sha-512 (64-byte challenge)",
        debug=False,
    )
    add(
        "synthetic-sha384-binding",
        synthetic(lpc, lrc, binding_alg="sha-384"),
        gen,
        "accept",
        "RAK hash algorithm sha-384 (48-byte challenge)",
        debug=False,
    )
    add(
        "synthetic-declared-alg-mismatch",
        synthetic(lpc, lrc, binding_alg="sha-512", declared_alg="sha-256"),
        gen,
        "MeasurementError",
        "challenge is sha-512(RAK) but claim 44240 says sha-256: the binding is checked with "
        "the declared algorithm and fails (step 6)",
    )
    add(
        "synthetic-binding-wrong-alg",
        synthetic(lpc, lrc, binding_alg="sha-384", declared_alg="sha-256"),
        gen,
        "MeasurementError",
        "challenge is sha-384(RAK) but claim 44240 says sha-256: binding fails (step 6)",
    )
    add(
        "synthetic-lifecycle-recoverable-debug",
        synthetic(lpc, lrc, platform_edit={2395: 0x5001}),
        gen,
        "accept",
        "lifecycle 0x5001 (recoverable CCA platform debug): authentic, debug = true",
        debug=True,
    )
    add(
        "synthetic-lifecycle-non-cca-debug",
        synthetic(lpc, lrc, platform_edit={2395: 0x4000}),
        gen,
        "accept",
        "lifecycle 0x4000 (non-CCA-platform debug): the CCA platform RoT stays locked",
        debug=False,
    )
    add(
        "synthetic-lifecycle-undefined",
        synthetic(lpc, lrc, platform_edit={2395: 0x7000}),
        gen,
        "EvidenceFormatError",
        "lifecycle 0x7000 lies outside every defined range (step 1)",
    )
    add(
        "synthetic-unknown-platform-profile",
        synthetic(lpc, lrc, platform_edit={265: "http://arm.com/CCA-SSD/2.0.0"}),
        gen,
        "EvidenceFormatError",
        "a platform profile donjon does not know (step 1)",
    )
    add(
        "synthetic-unknown-realm-profile",
        synthetic(lpc, lrc, realm_edit={265: "tag:arm.com,2025:realm#9.9.9"}),
        gen,
        "EvidenceFormatError",
        "a realm profile donjon does not know (step 1)",
    )
    add(
        "synthetic-rak-p256",
        synthetic(claims_of(fp), frc, rak=derive_key("cca/rak-p256", "P-256"), rak_format="cose"),
        gen,
        "EvidenceFormatError",
        "a P-256 RAK as COSE_Key: CCA realms use P-384 (step 4)",
    )
    add(
        "synthetic-raw-rak-in-ffm-profile",
        synthetic(claims_of(fp), frc, rak_format="raw"),
        gen,
        "EvidenceFormatError",
        "draft-ffm-00 realm profile with a raw point where a COSE_Key belongs (step 4)",
    )
    add(
        "synthetic-rim-wrong-size",
        synthetic(lpc, lrc, realm_edit={44238: bytes(48)}),
        gen,
        "EvidenceFormatError",
        "a 48-byte RIM with measurement hash sha-256 (step 1)",
    )
    add(
        "synthetic-instance-id-not-rand",
        synthetic(lpc, lrc, platform_edit={256: b"\x02" + bytes(32)}),
        gen,
        "EvidenceFormatError",
        "instance ID is not a UEID of type RAND (step 1)",
    )
    add(
        "synthetic-missing-rak-hash-alg",
        _without(synthetic(lpc, lrc), realm_key=44240),
        gen,
        "EvidenceFormatError",
        "realm claim 44240 removed (and re-signed): mandatory (step 1)",
    )
    return out


def _cmw_variants(add: Any, lp: bytes, lr: bytes, fp: bytes, legacy_cpak: bytes) -> None:
    """The tag-907 CMW collection (RMM 2.0 A7.2.3): the real legacy messages, reframed."""
    cpaks = (legacy_cpak,)
    add(
        "cmw-legacy",
        cmw_collection(lp, lr),
        cpaks,
        "accept",
        "the shared legacy token's two messages as [263, bstr] CMW records under tag 907 (the "
        "luxfi/cc sample's exact bytes): same claims as tag 399",
        debug=False,
    )
    add(
        "cmw-platform-signature-flipped",
        cmw_collection(flip(lp, len(lp) - 1), lr),
        cpaks,
        "SignatureError",
        "CMW framing, platform signature flipped: the framing changes no check (step 3)",
    )
    add(
        "cmw-spliced",
        cmw_collection(fp, lr),
        cpaks,
        "MeasurementError",
        "CMW framing, draft-ffm-00 platform token with the legacy realm token (step 6)",
    )
    add(
        "cmw-wrong-content-format",
        cmw_collection(lp, lr, realm_type=264),
        cpaks,
        "EvidenceFormatError",
        "realm record type 264 instead of 263 (application/eat+cwt) (step 1)",
    )
    add(
        "cmw-media-type-text",
        cmw_collection(lp, lr, platform_type="application/eat+cwt"),
        cpaks,
        "EvidenceFormatError",
        "record type as a media-type string: the CCA CDDL fixes content-format 263 (step 1)",
    )
    add(
        "cmw-record-with-indicator",
        bytes(
            cbor2.dumps(
                cbor2.CBORTag(
                    CMW_COLLECTION_TAG, {PLATFORM: [EAT_CWT, lp, 4], REALM: [EAT_CWT, lr]}
                )
            )
        ),
        cpaks,
        "EvidenceFormatError",
        "a 3-item record [263, bstr, 4]: a CCA record is exactly [type, value] (step 1)",
    )
    add(
        "cmw-record-value-not-bytes",
        bytes(
            cbor2.dumps(
                cbor2.CBORTag(
                    CMW_COLLECTION_TAG,
                    {PLATFORM: [EAT_CWT, lp], REALM: [EAT_CWT, cbor2.loads(lr)]},
                )
            )
        ),
        cpaks,
        "EvidenceFormatError",
        "the realm COSE_Sign1 embedded as an item inside its record, not wrapped (step 1)",
    )
    add(
        "cmw-missing-realm",
        bytes(cbor2.dumps(cbor2.CBORTag(CMW_COLLECTION_TAG, {PLATFORM: [EAT_CWT, lp]}))),
        cpaks,
        "EvidenceFormatError",
        "a CMW collection without the realm record (step 1)",
    )
    add(
        "cmw-device-token",
        cmw_collection(lp, lr, extra={DEVICE: [UCCS, bytes(cbor2.dumps({}))]}),
        cpaks,
        "EvidenceFormatError",
        "RMM 2.0's optional device token (44258, [601, bstr]): assigned devices are not "
        "appraised, so the realm is refused (step 1)",
    )
    add(
        "cmw-extra-entry",
        cmw_collection(lp, lr, extra={44251: [EAT_CWT, lr]}),
        cpaks,
        "EvidenceFormatError",
        "an entry under the RMM 2.0 placeholder label 44251 (realm direct token) (step 1)",
    )
    add(
        "cmw-collection-type-label",
        cmw_collection(lp, lr, extra={"__cmwc_t": "tag:example.com,2025:cca"}),
        cpaks,
        "EvidenceFormatError",
        "a text-labelled CMW collection-type entry: the CCA collection is a closed map (step 1)",
    )
    add(
        "cmw-records-under-tag-399",
        cmw_collection(lp, lr, tag=COLLECTION_TAG),
        cpaks,
        "EvidenceFormatError",
        "CMW records inside a tag-399 collection, whose values are bare byte strings (step 1)",
    )
    add(
        "cmw-wrong-tag",
        cmw_collection(lp, lr, tag=908),
        cpaks,
        "EvidenceFormatError",
        "the CMW collection under tag 908 (step 1)",
    )


def _without(token: bytes, *, realm_key: int) -> bytes:
    platform, realm = split(token)
    claims = claims_of(realm)
    del claims[realm_key]
    return collection(platform, sign1(GEN_RAK, bytes(cbor2.dumps(claims))))


def write(out_dir: Path, vectors: Path = VECTORS) -> list[Path]:
    """Write every variant (token, CPAK files) and a manifest.json into *out_dir*."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: list[dict[str, Any]] = []
    written: list[Path] = []
    for v in variants(vectors):
        token = out_dir / f"{v.name}.token.cbor"
        token.write_bytes(v.token)
        cpaks = []
        for i, cpak in enumerate(v.cpaks):
            path = out_dir / f"{v.name}.cpak{i}"
            path.write_bytes(cpak)
            cpaks.append(path.name)
            written.append(path)
        written.append(token)
        manifest.append(
            {
                "name": v.name,
                "token": token.name,
                "cpaks": cpaks,
                "expected": v.expected,
                "debug": v.debug,
                "why": v.why,
                "sha256": hashlib.sha256(v.token).hexdigest(),
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
