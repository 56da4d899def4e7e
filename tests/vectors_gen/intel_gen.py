"""Deterministic Intel SGX/TDX DCAP test vectors derived from the real quotes in ../shared/vectors.

Two families:

- **Real, with one defect**: a real quote and its real collateral with one thing wrong: a flipped
  quote signature, report data, MRENCLAVE or MRTD byte; a flipped QE report or attestation key;
  another platform's PCK chain; collateral of another FMSPC; ``now`` after the collateral expired
  or before it was issued; a stale PCK CRL; TCB info re-serialized with other whitespace (same
  content, so the signature must fail); a look-alike root in the chain; truncated and oversized
  quotes; wrong versions, key types, TEE types and QE vendors; missing CRLs or signer.
- **Generator PKI**: a PKI that mirrors Intel's (Root CA → PCK Platform CA → PCK certificate; Root
  CA → TCB Signing) with the *same names* as Intel's, used to re-sign real quote bodies and
  collateral so that checks the real data cannot reach are exercised: every TCB status and its
  convergence with the QE and TDX module statuses, the TDX 1.5 relaunch advice, revoked
  certificates, a QE or TDX module that does not match its identity, expired and not-yet-valid
  certificates. Verified against the generator's root they must pass (a control); against
  Intel's root, the look-alike chain must fail.

Each variant names the error class the verifier must raise, or "accept" with the TCB status it
must report, and the root to use ("intel" = the embedded Intel SGX Root CA, "generator" = this
module's root). Expected statuses come from a table written here from Intel's rules, not from
donjon's code.

Determinism: keys come from fixed labels, signatures use RFC 6979, times are fixed, so the output
is byte-identical on every run:

    python tests/vectors_gen/intel_gen.py --out build/vectors/intel
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from donjon.attestation.intel.pck import pck_extensions
from donjon.attestation.intel.quote import MAX_QUOTE_BYTES, Quote, TdReport, parse_quote

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SGX_EXT = x509.ObjectIdentifier("1.2.840.113741.1.13.1")

GEN_NOW = datetime(2025, 7, 4, tzinfo=UTC)
"""The verification time of every generator-PKI variant."""
_ISSUE = datetime(2025, 7, 1, tzinfo=UTC)
_NEXT = datetime(2025, 7, 31, tzinfo=UTC)


@dataclass(frozen=True)
class Variant:
    """One generated vector.

    Attributes:
        name: a stable identifier (file name stem).
        platform: "sgx" or "tdx": the verifier to use.
        quote: the evidence bytes.
        collateral: collateral items (raw bytes of each file).
        now: the verification time.
        expect: "accept" or the name of the ``donjon.errors`` (or intel) error class.
        status: for "accept", the final TCB status; for TcbLevelError, its ``status``.
        root: "intel" or "generator".
        certs: certificate items (PEM/DER) passed as ``Endorsements.certs``.
        note: what is wrong, in a few words.
    """

    name: str
    platform: str
    quote: bytes
    collateral: tuple[bytes, ...]
    now: datetime
    expect: str
    status: str | None = None
    root: str = "intel"
    certs: tuple[bytes, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ primitives


def derive_key(label: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 key that depends only on *label*."""
    digest = hashlib.sha256(b"donjon/intel-gen/" + label.encode()).digest()
    return ec.derive_private_key(
        int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1, ec.SECP256R1()
    )


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """Deterministic (RFC 6979) ECDSA-P256-SHA256 as raw ``r || s``."""
    r, s = decode_dss_signature(
        key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    )
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The 64-byte ``x || y`` form of the public key, as quotes carry it."""
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )[1:]


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    """*data* with the byte at *index* XORed with *mask*."""
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def _serial(label: str) -> int:
    return int.from_bytes(hashlib.sha256(b"serial/" + label.encode()).digest()[:16], "big") >> 1


# ------------------------------------------------------------------------------ quote assembly


def assemble(
    q: Quote,
    *,
    signed_bytes: bytes | None = None,
    signature: bytes | None = None,
    attestation_key: bytes | None = None,
    qe_report: bytes | None = None,
    qe_report_signature: bytes | None = None,
    cert_data: bytes | None = None,
    cert_type: int | None = None,
) -> bytes:
    """Re-serialize a parsed quote with some parts replaced (sizes recomputed)."""
    signed = q.signed_bytes if signed_bytes is None else signed_bytes
    auth = q.qe_auth_data
    cert = q.certification_data.data if cert_data is None else cert_data
    inner = (
        (q.qe_report.raw if qe_report is None else qe_report)
        + (q.qe_report_signature if qe_report_signature is None else qe_report_signature)
        + struct.pack("<H", len(auth))
        + auth
        + struct.pack(
            "<HI", q.certification_data.type if cert_type is None else cert_type, len(cert)
        )
        + cert
    )
    if q.header.version > 3:
        inner = struct.pack("<HI", 6, len(inner)) + inner
    sig_data = (
        (q.signature if signature is None else signature)
        + (q.attestation_key if attestation_key is None else attestation_key)
        + inner
    )
    return signed + struct.pack("<I", len(sig_data)) + sig_data


def set_version(quote: bytes, version: int) -> bytes:
    return struct.pack("<H", version) + quote[2:]


# ------------------------------------------------------------------------------ generator PKI


@dataclass(frozen=True)
class Pki:
    """A PKI with Intel's names: root, PCK Platform CA, TCB Signing (keys from *label*)."""

    label: str
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    tcb: x509.Certificate


def _intel_name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def make_cert(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    path_length: int | None = None,
    sgx_extension: bytes | None = None,
) -> x509.Certificate:
    """A certificate shaped like Intel's (critical BasicConstraints and KeyUsage, SKI, AKI)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), True)
    )
    if sgx_extension is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(_SGX_EXT, sgx_extension), False)
    return builder.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)


@cache
def make_pki(label: str) -> Pki:
    root_name = _intel_name("Intel SGX Root CA")
    root_key = derive_key(f"{label}/root")
    t0, t1 = datetime(2018, 5, 21, tzinfo=UTC), datetime(2049, 12, 31, tzinfo=UTC)
    root = make_cert(
        subject=root_name,
        key=root_key,
        issuer=root_name,
        issuer_key=root_key,
        serial=_serial(f"{label}/root"),
        not_before=t0,
        not_after=t1,
        ca=True,
        path_length=1,
    )
    ca_key = derive_key(f"{label}/pck-ca")
    ca = make_cert(
        subject=_intel_name("Intel SGX PCK Platform CA"),
        key=ca_key,
        issuer=root_name,
        issuer_key=root_key,
        serial=_serial(f"{label}/pck-ca"),
        not_before=t0,
        not_after=datetime(2033, 5, 21, tzinfo=UTC),
        ca=True,
        path_length=0,
    )
    tcb_key = derive_key(f"{label}/tcb-signing")
    tcb = make_cert(
        subject=_intel_name("Intel SGX TCB Signing"),
        key=tcb_key,
        issuer=root_name,
        issuer_key=root_key,
        serial=_serial(f"{label}/tcb-signing"),
        not_before=t0,
        not_after=datetime(2032, 5, 6, tzinfo=UTC),
        ca=False,
    )
    return Pki(label, root_key, root, ca_key, ca, tcb_key, tcb)


def generator_pki() -> Pki:
    """The PKI of the generator's control vectors."""
    return make_pki("generator")


def lookalike_pki() -> Pki:
    """Another PKI with the same names: its root is a look-alike of the generator's and Intel's."""
    return make_pki("lookalike")


def make_crl(
    pki: Pki,
    *,
    issuer: str,
    revoked: tuple[int, ...] = (),
    last: datetime = _ISSUE,
    next_: datetime = _NEXT,
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """A DER CRL issued by the root ("root") or the PCK CA ("ca")."""
    cert, key = (pki.root, pki.root_key) if issuer == "root" else (pki.ca, pki.ca_key)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(last)
        .next_update(next_)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
        )
    crl = builder.sign(signer or key, hashes.SHA256(), ecdsa_deterministic=True)
    return crl.public_bytes(serialization.Encoding.DER)


def pcs_document(member: str, body: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """An Intel PCS response: ``{"<member>":<body>,"signature":"<hex>"}`` signed over *body*."""
    signature = sign_raw(key, body).hex()
    return b'{"' + member.encode() + b'":' + body + b',"signature":"' + signature.encode() + b'"}'


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------ real data


def real_quote(vectors: Path, rel: str) -> bytes:
    return (vectors / rel).read_bytes()


def manifest_entry(vectors: Path, vector_id: str) -> dict[str, Any]:
    data = json.loads((vectors / "manifest.json").read_text())
    entry: dict[str, Any] = next(v for v in data["vectors"] if v["id"] == vector_id)
    return entry


def real_set(vectors: Path, vector_id: str) -> tuple[bytes, tuple[bytes, ...], datetime, str]:
    """(quote, collateral items, verify_time, platform) of a manifest vector."""
    entry = manifest_entry(vectors, vector_id)
    base = vectors / entry["dir"]
    files = entry["files"]
    items = tuple(
        (base / path).resolve().read_bytes()
        for role, path in files.items()
        if role not in ("quote", "root_ca", "alt_tcb_info")
    )
    now = datetime.fromisoformat(entry["verify_time"].replace("Z", "+00:00"))
    return (base / files["quote"]).read_bytes(), items, now, entry["type"]


def body_offset(q: Quote) -> int:
    return 48 + (6 if q.header.version == 5 else 0)


def resign_quote(
    real: bytes,
    pki: Pki,
    *,
    label: str,
    leaf_not_before: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    leaf_not_after: datetime = datetime(2031, 1, 1, tzinfo=UTC),
    sgx_extension: bool = True,
    qe_report_edit: Callable[[bytearray], None] | None = None,
    body_edit: Callable[[bytearray], None] | None = None,
    ppid_only: bool = False,
) -> tuple[bytes, x509.Certificate]:
    """A real quote's body and QE report, re-certified and re-signed under *pki*.

    Returns:
        (the quote, its new PCK certificate).
    """
    q = parse_quote(real)
    old_leaf = x509.load_pem_x509_certificates(q.certification_data.data.rstrip(b"\0"))[0]
    ext: bytes | None = None
    if sgx_extension:
        raw = old_leaf.extensions.get_extension_for_oid(_SGX_EXT).value
        assert isinstance(raw, x509.UnrecognizedExtension)
        ext = raw.value
    leaf_key = derive_key(f"{pki.label}/{label}/pck")
    leaf = make_cert(
        subject=_intel_name("Intel SGX PCK Certificate"),
        key=leaf_key,
        issuer=pki.ca.subject,
        issuer_key=pki.ca_key,
        serial=_serial(f"{pki.label}/{label}/pck"),
        not_before=leaf_not_before,
        not_after=leaf_not_after,
        ca=False,
        sgx_extension=ext,
    )
    att_key = derive_key(f"{pki.label}/{label}/attestation")
    att = raw_point(att_key)
    qe = bytearray(q.qe_report.raw)
    qe[320:384] = hashlib.sha256(att + q.qe_auth_data).digest() + bytes(32)
    if qe_report_edit is not None:
        qe_report_edit(qe)
    signed = bytearray(q.signed_bytes)
    if body_edit is not None:
        body_edit(signed)
    chain = pem(leaf) + pem(pki.ca) + pem(pki.root)
    # Type 3: "PPID encrypted with RSA-3072" (384 bytes) + CPUSVN + PCESVN + PCE ID; the verifier
    # then needs the PCK chain from the endorsements.
    ppid = hashlib.sha256(label.encode()).digest() * 12 + bytes(16 + 2 + 2)
    quote = assemble(
        q,
        signed_bytes=bytes(signed),
        signature=sign_raw(att_key, bytes(signed)),
        attestation_key=att,
        qe_report=bytes(qe),
        qe_report_signature=sign_raw(leaf_key, bytes(qe)),
        cert_data=ppid if ppid_only else chain,
        cert_type=3 if ppid_only else 5,
    )
    return quote, leaf


def _level(
    sgx: list[int], pcesvn: int, status: str, tdx: list[int] | None = None, date: str = "2025-01-01"
) -> dict[str, Any]:
    tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": s} for s in sgx], "pcesvn": pcesvn}
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": s} for s in tdx]
    level: dict[str, Any] = {"tcb": tcb, "tcbDate": f"{date}T00:00:00Z", "tcbStatus": status}
    if status != "UpToDate":
        level["advisoryIDs"] = [f"INTEL-SA-GEN-{status}"]
    return level


def _identity_level(isvsvn: int, status: str) -> dict[str, Any]:
    level: dict[str, Any] = {
        "tcb": {"isvsvn": isvsvn},
        "tcbDate": "2025-01-01T00:00:00Z",
        "tcbStatus": status,
    }
    if status != "UpToDate":
        level["advisoryIDs"] = [f"INTEL-SA-QE-{status}"]
    return level


def _bump(values: list[int], index: int) -> list[int]:
    out = list(values)
    out[index] = min(out[index] + 1, 255)
    return out


@dataclass(frozen=True)
class _Platform:
    """What the generator needs to know about a real quote to craft collateral for it."""

    platform: str
    fmspc: str
    pce_id: str
    sgx: list[int]
    pcesvn: int
    qe_svn: int
    qe_mrsigner: str
    qe_prodid: int
    tee_tcb_svn: bytes | None


def _describe(real: bytes) -> _Platform:
    q = parse_quote(real)
    leaf = x509.load_pem_x509_certificates(q.certification_data.data.rstrip(b"\0"))[0]
    ext = pck_extensions(leaf)
    body = q.body
    return _Platform(
        platform="tdx" if isinstance(body, TdReport) else "sgx",
        fmspc=ext.fmspc.hex(),
        pce_id=ext.pce_id.hex(),
        sgx=list(ext.tcb.sgx_components),
        pcesvn=ext.tcb.pce_svn,
        qe_svn=q.qe_report.isv_svn,
        qe_mrsigner=q.qe_report.mr_signer.hex(),
        qe_prodid=q.qe_report.isv_prod_id,
        tee_tcb_svn=body.tee_tcb_svn if isinstance(body, TdReport) else None,
    )


def tcb_info_body(
    p: _Platform,
    levels: list[dict[str, Any]],
    *,
    module_levels: list[dict[str, Any]] | None = None,
    module_mrsigner: str = "00" * 48,
    issue: datetime = _ISSUE,
    next_: datetime = _NEXT,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": p.platform.upper(),
        "version": 3,
        "issueDate": issue.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nextUpdate": next_.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fmspc": p.fmspc.upper(),
        "pceId": p.pce_id.upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
    }
    if p.platform == "tdx":
        body["tdxModule"] = {
            "mrsigner": module_mrsigner,
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        }
        assert p.tee_tcb_svn is not None
        body["tdxModuleIdentities"] = [
            {
                "id": f"TDX_{p.tee_tcb_svn[1]:02X}",
                "mrsigner": module_mrsigner,
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
                "tcbLevels": module_levels or [_identity_level(p.tee_tcb_svn[0], "UpToDate")],
            }
        ]
    body["tcbLevels"] = levels
    return body


def qe_identity_body(
    p: _Platform,
    levels: list[dict[str, Any]] | None = None,
    *,
    mrsigner: str | None = None,
    issue: datetime = _ISSUE,
    next_: datetime = _NEXT,
) -> dict[str, Any]:
    return {
        "id": "TD_QE" if p.platform == "tdx" else "QE",
        "version": 2,
        "issueDate": issue.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nextUpdate": next_.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": (mrsigner or p.qe_mrsigner).upper(),
        "isvprodid": p.qe_prodid,
        "tcbLevels": levels or [_identity_level(p.qe_svn, "UpToDate")],
    }


def generator_collateral(
    pki: Pki,
    tcb_info: dict[str, Any],
    qe_identity: dict[str, Any],
    *,
    root_crl: bytes | None = None,
    pck_crl: bytes | None = None,
    tcb_signer: x509.Certificate | None = None,
) -> tuple[bytes, ...]:
    """Collateral in Intel PCS form, signed by *pki*."""
    return (
        pcs_document("tcbInfo", compact(tcb_info), pki.tcb_key),
        pcs_document("enclaveIdentity", compact(qe_identity), pki.tcb_key),
        root_crl if root_crl is not None else make_crl(pki, issuer="root"),
        pck_crl if pck_crl is not None else make_crl(pki, issuer="ca"),
        pem(tcb_signer or pki.tcb) + pem(pki.root),
    )


# ------------------------------------------------------------------------------ expectations

_QE_OUT_OF_DATE = {
    "UpToDate": "OutOfDate",
    "SWHardeningNeeded": "OutOfDate",
    "ConfigurationNeeded": "OutOfDateConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded": "OutOfDateConfigurationNeeded",
}
"""Intel QVL convergence: an OutOfDate QE (or TDX module) makes these platform statuses worse."""

PLATFORM_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)


def expected_status(platform: str, qe: str) -> str:
    """The converged status Intel's QVL reports for a platform status and a QE status."""
    if platform == "Revoked" or qe == "Revoked":
        return "Revoked"
    if qe == "OutOfDate":
        return _QE_OUT_OF_DATE.get(platform, platform)
    return platform


def _expect(status: str) -> tuple[str, str]:
    return ("TcbLevelError", status) if status == "Revoked" else ("accept", status)


# ------------------------------------------------------------------------------ variants


def _real_variants(vectors: Path) -> list[Variant]:
    out: list[Variant] = []
    sgx_q, sgx_c, sgx_now, _ = real_set(vectors, "sgx-dcapqvl")
    tdx_q, tdx_c, tdx_now, _ = real_set(vectors, "tdx-dcapqvl-v4")
    v5_q, v5_c, v5_now, _ = real_set(vectors, "tdx-gotdx-v5")
    oak_q, oak_c, _, _ = real_set(vectors, "tdx-oak-v4")
    occ_q, occ_c, occ_now, _ = real_set(vectors, "sgx-occlum")
    sgx, tdx, v5 = parse_quote(sgx_q), parse_quote(tdx_q), parse_quote(v5_q)

    def add(
        name: str,
        platform: str,
        quote: bytes,
        coll: tuple[bytes, ...],
        now: datetime,
        expect: str,
        note: str,
        **kw: Any,
    ) -> None:
        out.append(Variant(name, platform, quote, coll, now, expect, note=note, **kw))

    # Controls: the real sets verify, with padding too.
    add(
        "real-sgx-control",
        "sgx",
        sgx_q,
        sgx_c,
        sgx_now,
        "accept",
        "unchanged",
        status="ConfigurationAndSWHardeningNeeded",
    )
    add("real-tdx-control", "tdx", tdx_q, tdx_c, tdx_now, "accept", "unchanged", status="UpToDate")
    add(
        "real-sgx-padded",
        "sgx",
        sgx_q + bytes(1000),
        sgx_c,
        sgx_now,
        "accept",
        "1000 zero bytes appended",
        status="ConfigurationAndSWHardeningNeeded",
    )

    # Flipped bytes in what the attestation key signs, and in the signature itself.
    sig_at = len(sgx.signed_bytes) + 4  # after the signed part and the u32 signature length
    add(
        "sgx-flip-quote-signature",
        "sgx",
        flip(sgx_q, sig_at + 10),
        sgx_c,
        sgx_now,
        "SignatureError",
        "quote signature byte flipped",
    )
    add(
        "sgx-flip-report-data",
        "sgx",
        flip(sgx_q, 48 + 320),
        sgx_c,
        sgx_now,
        "SignatureError",
        "REPORTDATA byte flipped",
    )
    add(
        "sgx-flip-mrenclave",
        "sgx",
        flip(sgx_q, 48 + 64),
        sgx_c,
        sgx_now,
        "SignatureError",
        "MRENCLAVE byte flipped",
    )
    add(
        "tdx-flip-mrtd",
        "tdx",
        flip(tdx_q, 48 + 136),
        tdx_c,
        tdx_now,
        "SignatureError",
        "MRTD byte flipped",
    )
    add(
        "tdx-flip-report-data",
        "tdx",
        flip(tdx_q, 48 + 520 + 5),
        tdx_c,
        tdx_now,
        "SignatureError",
        "REPORTDATA byte flipped",
    )
    add(
        "tdx-v5-flip-rtmr0",
        "tdx",
        flip(v5_q, body_offset(v5) + 328),
        v5_c,
        v5_now,
        "SignatureError",
        "RTMR0 byte flipped (v5, TD 1.5 body)",
    )
    add(
        "tdx-v5-flip-body-descriptor",
        "tdx",
        flip(v5_q, 48, 0x02),
        v5_c,
        v5_now,
        "EvidenceFormatError",
        "v5 body type 3 -> 1 (SGX body in a TDX quote)",
    )
    qe_sig = assemble(tdx, qe_report_signature=flip(tdx.qe_report_signature, 3))
    add(
        "tdx-flip-qe-report-signature",
        "tdx",
        qe_sig,
        tdx_c,
        tdx_now,
        "SignatureError",
        "QE report signature byte flipped",
    )
    qe_rep = assemble(tdx, qe_report=flip(tdx.qe_report.raw, 64))
    add(
        "tdx-flip-qe-report",
        "tdx",
        qe_rep,
        tdx_c,
        tdx_now,
        "SignatureError",
        "QE report MRENCLAVE byte flipped",
    )
    other_key = raw_point(derive_key("other-attestation-key"))
    add(
        "sgx-swap-attestation-key",
        "sgx",
        assemble(sgx, attestation_key=other_key),
        sgx_c,
        sgx_now,
        "MeasurementError",
        "attestation key replaced: the QE did not certify it",
    )

    # Swapped PCK chain and collateral.
    oak = parse_quote(oak_q)
    add(
        "tdx-swap-pck-chain",
        "tdx",
        assemble(tdx, cert_data=oak.certification_data.data),
        tdx_c,
        tdx_now,
        "SignatureError",
        "PCK chain of another platform (Oak)",
    )
    add(
        "sgx-swap-collateral",
        "sgx",
        sgx_q,
        occ_c,
        sgx_now,
        "EvidenceFormatError",
        "collateral of another FMSPC and PCK CA",
    )
    tdx_tcb = json.loads(tdx_c[0])
    oak_tcb_only = tuple(c for c in oak_c if b'"tcbInfo"' in c)
    swapped = (
        *oak_tcb_only,
        pcs_like_qe(tdx_tcb),
        *crls_and_chains(tdx_tcb),
    )
    add(
        "tdx-swap-tcb-info",
        "tdx",
        tdx_q,
        swapped,
        tdx_now,
        "EvidenceFormatError",
        "TCB info of FMSPC 00806f050000 for a b0c06f000000 platform",
    )
    add(
        "sgx-quote-to-tdx-verifier",
        "tdx",
        sgx_q,
        sgx_c,
        sgx_now,
        "EvidenceFormatError",
        "SGX quote given to the TDX verifier",
    )

    # Time: collateral expired, not yet valid; stale CRL (real, MobileCoin).
    add(
        "sgx-collateral-expired",
        "sgx",
        sgx_q,
        sgx_c,
        datetime(2025, 7, 20, tzinfo=UTC),
        "FreshnessError",
        "now after the QE identity's nextUpdate",
    )
    add(
        "sgx-collateral-not-yet-valid",
        "sgx",
        sgx_q,
        sgx_c,
        datetime(2025, 6, 1, tzinfo=UTC),
        "FreshnessError",
        "now before the TCB info was issued",
    )
    add(
        "tdx-years-later",
        "tdx",
        tdx_q,
        tdx_c,
        datetime(2035, 1, 1, tzinfo=UTC),
        "FreshnessError",
        "now after the PCK certificate expired",
    )
    mc_q, mc_c, mc_now, _ = real_set(vectors, "sgx-mobilecoin-stale-crl")
    add(
        "sgx-stale-pck-crl",
        "sgx",
        mc_q,
        mc_c,
        mc_now,
        "FreshnessError",
        "real PCK CRL expired before the TCB info was issued",
    )

    # Re-serialized TCB JSON: same content, other whitespace.
    coll = json.loads(tdx_c[0])
    for key in ("tcb_info", "qe_identity"):
        changed = dict(coll)
        changed[key] = json.dumps(json.loads(coll[key]), indent=1)
        add(
            f"tdx-reserialized-{key.replace('_', '-')}",
            "tdx",
            tdx_q,
            (compact(changed),),
            tdx_now,
            "SignatureError",
            f"{key} re-serialized with indentation",
        )
    pcs_tcb = next(c for c in occ_c if c.lstrip().startswith(b'{"tcbInfo"'))
    inner = json.loads(pcs_tcb)
    spaced = json.dumps(inner, indent=2).encode()
    add(
        "sgx-reserialized-pcs-tcb-info",
        "sgx",
        occ_q,
        tuple(spaced if c is pcs_tcb else c for c in occ_c),
        occ_now,
        "SignatureError",
        "PCS tcbinfo.json pretty-printed",
    )
    add(
        "sgx-pcs-whitespace-outside-signed-object",
        "sgx",
        occ_q,
        tuple(
            b"  \n" + c.replace(b'},"signature"', b'} ,\n "signature"') + b"\n"
            if c is pcs_tcb
            else c
            for c in occ_c
        ),
        occ_now,
        "accept",
        "whitespace outside the signed object only",
        status="OutOfDate",
    )
    sig_flip = bytearray(pcs_tcb)
    at = sig_flip.rindex(b'"signature":"') + 14
    sig_flip[at] = ord("0") if sig_flip[at] != ord("0") else ord("1")
    add(
        "sgx-flip-tcb-info-signature",
        "sgx",
        occ_q,
        tuple(bytes(sig_flip) if c is pcs_tcb else c for c in occ_c),
        occ_now,
        "SignatureError",
        "TCB info signature hex digit changed",
    )
    dup = pcs_tcb.replace(b'{"tcbInfo":', b'{"tcbInfo":{"id":"SGX"},"tcbInfo":', 1)
    add(
        "sgx-duplicate-tcb-info-member",
        "sgx",
        occ_q,
        tuple(dup if c is pcs_tcb else c for c in occ_c),
        occ_now,
        "EvidenceFormatError",
        "two tcbInfo members (parser-differential bait)",
    )

    # Missing pieces.
    no_root_crl = tuple(c for c in occ_c if not _is_root_crl(c))
    add(
        "sgx-missing-root-crl",
        "sgx",
        occ_q,
        no_root_crl,
        occ_now,
        "EvidenceFormatError",
        "no root CA CRL",
    )
    no_signer = tuple(c for c in occ_c if b"BEGIN CERTIFICATE" not in c)
    add(
        "sgx-missing-tcb-signer",
        "sgx",
        occ_q,
        no_signer,
        occ_now,
        "EvidenceFormatError",
        "no TCB Signing certificate",
    )

    # Look-alike root (same name, other key) inside the real chain.
    look = lookalike_pki()
    certs = x509.load_pem_x509_certificates(tdx.certification_data.data.rstrip(b"\0"))
    add(
        "tdx-lookalike-root-in-chain",
        "tdx",
        assemble(tdx, cert_data=pem(certs[0]) + pem(certs[1]) + pem(look.root)),
        tdx_c,
        tdx_now,
        "ChainError",
        "the chain's root replaced by a look-alike",
    )
    add(
        "tdx-pck-ca-from-lookalike",
        "tdx",
        assemble(tdx, cert_data=pem(certs[0]) + pem(look.ca) + pem(look.root)),
        tdx_c,
        tdx_now,
        "ChainError",
        "a look-alike PCK CA and root",
    )

    # Truncated, oversized, wrong versions and types.
    for cut in (0, 47, 48 + 100, len(sgx.signed_bytes) + 2, sgx.bytes_used - 1):
        add(
            f"sgx-truncated-{cut}",
            "sgx",
            sgx_q[:cut],
            sgx_c,
            sgx_now,
            "EvidenceFormatError",
            f"quote cut to {cut} bytes",
        )
    add(
        "sgx-oversized",
        "sgx",
        sgx_q + bytes(MAX_QUOTE_BYTES),
        sgx_c,
        sgx_now,
        "EvidenceFormatError",
        "more than MAX_QUOTE_BYTES",
    )
    for version in (1, 2, 6, 0xFFFF):
        add(
            f"sgx-version-{version}",
            "sgx",
            set_version(sgx_q, version),
            sgx_c,
            sgx_now,
            "EvidenceFormatError",
            f"header version {version}",
        )
    add(
        "tdx-as-version-3",
        "tdx",
        set_version(tdx_q, 3),
        tdx_c,
        tdx_now,
        "EvidenceFormatError",
        "a TDX quote declaring version 3",
    )
    add(
        "sgx-as-version-4",
        "sgx",
        set_version(sgx_q, 4),
        sgx_c,
        sgx_now,
        "EvidenceFormatError",
        "a v3 layout declaring version 4",
    )
    add(
        "sgx-key-type-3",
        "sgx",
        sgx_q[:2] + b"\x03\x00" + sgx_q[4:],
        sgx_c,
        sgx_now,
        "EvidenceFormatError",
        "attestation key type 3 (P-384)",
    )
    add(
        "sgx-tee-type-0x81",
        "sgx",
        sgx_q[:4] + b"\x81" + sgx_q[5:],
        sgx_c,
        sgx_now,
        "EvidenceFormatError",
        "v3 quote claiming TEE type TDX",
    )
    add(
        "sgx-qe-vendor",
        "sgx",
        flip(sgx_q, 12),
        sgx_c,
        sgx_now,
        "EvidenceFormatError",
        "QE vendor ID changed",
    )
    big = struct.pack("<I", 0xFFFFFFFF)
    at = len(sgx.signed_bytes)
    add(
        "sgx-signature-length-huge",
        "sgx",
        sgx_q[:at] + big + sgx_q[at + 4 :],
        sgx_c,
        sgx_now,
        "EvidenceFormatError",
        "declared signature data length 2^32-1",
    )
    return out


def pcs_like_qe(coll: dict[str, Any]) -> bytes:
    """The QE identity of a dcap-qvl collateral JSON, in PCS form (same signed bytes)."""
    body: str = coll["qe_identity"]
    signature: str = coll["qe_identity_signature"]
    return b'{"enclaveIdentity":' + body.encode() + b',"signature":"' + signature.encode() + b'"}'


def crls_and_chains(coll: dict[str, Any]) -> tuple[bytes, ...]:
    """The CRLs (hex) and issuer chains (PEM) of a dcap-qvl collateral JSON, as separate items."""
    return (
        str(coll["root_ca_crl"]).encode(),
        str(coll["pck_crl"]).encode(),
        str(coll["tcb_info_issuer_chain"]).encode(),
    )


def _is_root_crl(item: bytes) -> bool:
    try:
        crl = x509.load_der_x509_crl(item)
    except ValueError:
        return False
    return "Root CA" in crl.issuer.rfc4514_string()


def _gen_variants(vectors: Path) -> list[Variant]:
    out: list[Variant] = []
    pki = generator_pki()
    sgx_real = real_quote(vectors, "sgx/dcapqvl/quote.bin")
    tdx_real = real_quote(vectors, "tdx/dcapqvl-v4/quote.bin")
    v5_real = real_quote(vectors, "tdx/gotdx-v5/quote.bin")

    def gen(
        name: str,
        platform: str,
        quote: bytes,
        coll: tuple[bytes, ...],
        expect: str,
        status: str | None,
        note: str,
        root: str = "generator",
        **kw: Any,
    ) -> None:
        out.append(
            Variant(name, platform, quote, coll, GEN_NOW, expect, status, root, note=note, **kw)
        )

    # SGX: every platform status x every QE status, converged as Intel's QVL does.
    sgx_quote, sgx_leaf = resign_quote(sgx_real, pki, label="sgx")
    p = _describe(sgx_real)
    for platform_status in PLATFORM_STATUSES:
        for qe_status in ("UpToDate", "OutOfDate", "Revoked"):
            levels = [
                _level(_bump(p.sgx, 0), p.pcesvn, "UpToDate"),
                _level(p.sgx, p.pcesvn, platform_status),
            ]
            qe_levels = [
                _identity_level(p.qe_svn + 1, "UpToDate"),
                _identity_level(p.qe_svn, qe_status),
            ]
            coll = generator_collateral(
                pki, tcb_info_body(p, levels), qe_identity_body(p, qe_levels)
            )
            expect, status = _expect(expected_status(platform_status, qe_status))
            gen(
                f"gen-sgx-{platform_status}-qe-{qe_status}",
                "sgx",
                sgx_quote,
                coll,
                expect,
                status,
                f"platform {platform_status}, QE {qe_status}",
                extra={"platform_tcb_status": platform_status, "qe_tcb_status": qe_status},
            )

    good_levels = [_level(p.sgx, p.pcesvn, "UpToDate")]
    good = generator_collateral(pki, tcb_info_body(p, good_levels), qe_identity_body(p))
    gen("gen-sgx-control", "sgx", sgx_quote, good, "accept", "UpToDate", "generator PKI control")
    ppid_quote, ppid_leaf = resign_quote(sgx_real, pki, label="sgx-ppid", ppid_only=True)
    gen(
        "gen-sgx-ppid-with-pck-chain-given",
        "sgx",
        ppid_quote,
        good,
        "accept",
        "UpToDate",
        "certification data type 3 (encrypted PPID); the PCK chain comes as certificates",
        certs=(pem(ppid_leaf) + pem(pki.ca),),
    )
    gen(
        "gen-sgx-ppid-without-pck-chain",
        "sgx",
        ppid_quote,
        good,
        "EvidenceFormatError",
        None,
        "certification data type 3 and no PCK certificate given",
    )
    gen(
        "gen-sgx-under-intel-root",
        "sgx",
        sgx_quote,
        good,
        "ChainError",
        None,
        "a consistent chain from a look-alike root, verified against Intel's",
        root="intel",
    )
    gen(
        "gen-sgx-no-level",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki,
            tcb_info_body(p, [_level(_bump(p.sgx, 3), p.pcesvn, "UpToDate")]),
            qe_identity_body(p),
        ),
        "TcbLevelError",
        "TCB_NOT_SUPPORTED",
        "every level needs a higher component 4",
    )
    gen(
        "gen-sgx-pcesvn-too-low",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki, tcb_info_body(p, [_level(p.sgx, p.pcesvn + 1, "UpToDate")]), qe_identity_body(p)
        ),
        "TcbLevelError",
        "TCB_NOT_SUPPORTED",
        "every level needs a higher PCESVN",
    )
    gen(
        "gen-sgx-qe-no-level",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki,
            tcb_info_body(p, good_levels),
            qe_identity_body(p, [_identity_level(p.qe_svn + 1, "UpToDate")]),
        ),
        "TcbLevelError",
        "TCB_NOT_SUPPORTED",
        "QE ISVSVN below every QE identity level",
    )
    gen(
        "gen-sgx-qe-mrsigner",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki, tcb_info_body(p, good_levels), qe_identity_body(p, mrsigner="ab" * 32)
        ),
        "MeasurementError",
        None,
        "QE identity names another MRSIGNER",
    )
    debug_qe, _ = resign_quote(
        sgx_real,
        pki,
        label="sgx-debug-qe",
        qe_report_edit=lambda r: r.__setitem__(48, r[48] | 0x02),
    )
    gen(
        "gen-sgx-qe-debug-attributes",
        "sgx",
        debug_qe,
        good,
        "MeasurementError",
        None,
        "a debug quoting enclave: ATTRIBUTES do not match the QE identity",
    )

    # Revocation.
    gen(
        "gen-sgx-pck-revoked",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki,
            tcb_info_body(p, good_levels),
            qe_identity_body(p),
            pck_crl=make_crl(pki, issuer="ca", revoked=(sgx_leaf.serial_number,)),
        ),
        "ChainError",
        None,
        "PCK certificate on the PCK CA CRL",
    )
    gen(
        "gen-sgx-pck-ca-revoked",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki,
            tcb_info_body(p, good_levels),
            qe_identity_body(p),
            root_crl=make_crl(pki, issuer="root", revoked=(pki.ca.serial_number,)),
        ),
        "ChainError",
        None,
        "PCK CA on the root CA CRL",
    )
    gen(
        "gen-sgx-tcb-signer-revoked",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki,
            tcb_info_body(p, good_levels),
            qe_identity_body(p),
            root_crl=make_crl(pki, issuer="root", revoked=(pki.tcb.serial_number,)),
        ),
        "ChainError",
        None,
        "TCB Signing certificate on the root CA CRL",
    )
    gen(
        "gen-sgx-crl-wrong-signer",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki,
            tcb_info_body(p, good_levels),
            qe_identity_body(p),
            pck_crl=make_crl(pki, issuer="ca", signer=derive_key("not-the-ca")),
        ),
        "ChainError",
        None,
        "PCK CA CRL signed by another key",
    )
    gen(
        "gen-sgx-stale-crl",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki,
            tcb_info_body(p, good_levels),
            qe_identity_body(p),
            pck_crl=make_crl(
                pki,
                issuer="ca",
                last=datetime(2025, 5, 1, tzinfo=UTC),
                next_=datetime(2025, 6, 1, tzinfo=UTC),
            ),
        ),
        "FreshnessError",
        None,
        "PCK CRL expired a month before now",
    )
    gen(
        "gen-sgx-stale-and-fresh-crl",
        "sgx",
        sgx_quote,
        (
            *good,
            make_crl(
                pki,
                issuer="ca",
                last=datetime(2025, 5, 1, tzinfo=UTC),
                next_=datetime(2025, 6, 1, tzinfo=UTC),
            ),
        ),
        "accept",
        "UpToDate",
        "an old CRL next to a current one: the current one is used",
    )
    gen(
        "gen-sgx-tcb-info-not-yet-valid",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki,
            tcb_info_body(
                p,
                good_levels,
                issue=GEN_NOW + timedelta(days=1),
                next_=GEN_NOW + timedelta(days=30),
            ),
            qe_identity_body(p),
        ),
        "FreshnessError",
        None,
        "TCB info issued after now",
    )
    gen(
        "gen-sgx-qe-identity-expired",
        "sgx",
        sgx_quote,
        generator_collateral(
            pki,
            tcb_info_body(p, good_levels),
            qe_identity_body(
                p, issue=GEN_NOW - timedelta(days=40), next_=GEN_NOW - timedelta(days=10)
            ),
        ),
        "FreshnessError",
        None,
        "QE identity past its nextUpdate",
    )

    # Certificates out of their validity, and a leaf without SGX extensions.
    expired, _ = resign_quote(
        sgx_real, pki, label="sgx-expired", leaf_not_after=GEN_NOW - timedelta(days=1)
    )
    gen(
        "gen-sgx-pck-expired",
        "sgx",
        expired,
        good,
        "FreshnessError",
        None,
        "PCK certificate expired yesterday",
    )
    future, _ = resign_quote(
        sgx_real, pki, label="sgx-future", leaf_not_before=GEN_NOW + timedelta(days=1)
    )
    gen(
        "gen-sgx-pck-not-yet-valid",
        "sgx",
        future,
        good,
        "FreshnessError",
        None,
        "PCK certificate valid from tomorrow",
    )
    no_ext, _ = resign_quote(sgx_real, pki, label="sgx-no-ext", sgx_extension=False)
    gen(
        "gen-sgx-pck-without-extension",
        "sgx",
        no_ext,
        good,
        "EvidenceFormatError",
        None,
        "PCK certificate without the SGX extension",
    )
    debug, _ = resign_quote(
        sgx_real,
        pki,
        label="sgx-debug",
        body_edit=lambda b: b.__setitem__(48 + 48, b[48 + 48] | 0x02),
    )
    gen(
        "gen-sgx-debug-enclave",
        "sgx",
        debug,
        good,
        "accept",
        "UpToDate",
        "ATTRIBUTES.DEBUG set: authentic, debug reported",
        extra={"debug": True},
    )

    # TDX 1.0: platform x TDX module statuses.
    tdx_quote, _ = resign_quote(tdx_real, pki, label="tdx")
    t = _describe(tdx_real)
    assert t.tee_tcb_svn is not None
    svn = list(t.tee_tcb_svn)
    for module_status in ("UpToDate", "OutOfDate", "Revoked"):
        for platform_status in ("UpToDate", "ConfigurationNeeded", "OutOfDate"):
            levels = [_level(t.sgx, t.pcesvn, platform_status, svn)]
            module = [
                _identity_level(svn[0] + 1, "UpToDate"),
                _identity_level(svn[0], module_status),
            ]
            coll = generator_collateral(
                pki, tcb_info_body(t, levels, module_levels=module), qe_identity_body(t)
            )
            expect, status = _expect(expected_status(platform_status, module_status))
            gen(
                f"gen-tdx-{platform_status}-module-{module_status}",
                "tdx",
                tdx_quote,
                coll,
                expect,
                status,
                f"platform {platform_status}, TDX module {module_status}",
                extra={"tdx_module_status": module_status},
            )
    tdx_good = generator_collateral(
        pki, tcb_info_body(t, [_level(t.sgx, t.pcesvn, "UpToDate", svn)]), qe_identity_body(t)
    )
    gen("gen-tdx-control", "tdx", tdx_quote, tdx_good, "accept", "UpToDate", "control")
    higher = _bump(svn, 2)
    gen(
        "gen-tdx-no-tdx-level",
        "tdx",
        tdx_quote,
        generator_collateral(
            pki,
            tcb_info_body(t, [_level(t.sgx, t.pcesvn, "UpToDate", higher)]),
            qe_identity_body(t),
        ),
        "TcbLevelError",
        "TCB_NOT_SUPPORTED",
        "TEE_TCB_SVN[2] below every level",
    )
    ignored = list(svn)
    ignored[0] = 255  # index 0 and 1 are judged by the module identity when [1] > 0
    gen(
        "gen-tdx-module-svn-not-in-platform-level",
        "tdx",
        tdx_quote,
        generator_collateral(
            pki,
            tcb_info_body(t, [_level(t.sgx, t.pcesvn, "UpToDate", ignored)]),
            qe_identity_body(t),
        ),
        "accept",
        "UpToDate",
        "TDX components 0-1 are not compared when the module version is non-zero",
    )
    gen(
        "gen-tdx-module-mrsigner",
        "tdx",
        tdx_quote,
        generator_collateral(
            pki,
            tcb_info_body(t, [_level(t.sgx, t.pcesvn, "UpToDate", svn)], module_mrsigner="11" * 48),
            qe_identity_body(t),
        ),
        "MeasurementError",
        None,
        "TDX module identity names another MRSIGNERSEAM",
    )
    gen(
        "gen-tdx-sgx-identity",
        "tdx",
        tdx_quote,
        generator_collateral(
            pki,
            tcb_info_body(t, [_level(t.sgx, t.pcesvn, "UpToDate", svn)]),
            {**qe_identity_body(t), "id": "QE"},
        ),
        "EvidenceFormatError",
        None,
        "an SGX QE identity for a TDX quote",
    )

    # TDX 1.5 (quote v5): the relaunch advice.
    v5_quote, _ = resign_quote(v5_real, pki, label="tdx-v5")
    f = _describe(v5_real)
    assert f.tee_tcb_svn is not None
    s5 = list(f.tee_tcb_svn)
    latest = list(s5)
    latest[3] = s5[3] + 1  # the running TD is below the latest level only in component 3
    levels = [
        _level(f.sgx, f.pcesvn, "UpToDate", latest),
        _level(f.sgx, f.pcesvn, "OutOfDate", s5),
    ]
    module = [_identity_level(0x0D, "UpToDate"), _identity_level(s5[0], "OutOfDate")]
    gen(
        "gen-tdx15-relaunch-advised",
        "tdx",
        v5_quote,
        generator_collateral(
            pki, tcb_info_body(f, levels, module_levels=module), qe_identity_body(f)
        ),
        "accept",
        "TDRelaunchAdvised",
        "TD 1.5: the platform is current, only the running TD predates the module update",
    )
    gen(
        "gen-tdx15-control",
        "tdx",
        v5_quote,
        generator_collateral(
            pki, tcb_info_body(f, [_level(f.sgx, f.pcesvn, "UpToDate", s5)]), qe_identity_body(f)
        ),
        "accept",
        "UpToDate",
        "control",
    )
    return out


def variants(vectors: Path = VECTORS) -> list[Variant]:
    """Every generated variant, in a stable order."""
    return _real_variants(vectors) + _gen_variants(vectors)


def generator_root() -> x509.Certificate:
    """The root certificate the "generator" variants chain to."""
    return generator_pki().root


def write(out_dir: Path, vectors: Path = VECTORS) -> list[Path]:
    """Write every variant (quote, collateral, manifest) under *out_dir*."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index: list[dict[str, Any]] = []
    (out_dir / "generator-root.pem").write_bytes(pem(generator_root()))
    for v in variants(vectors):
        d = out_dir / v.name
        d.mkdir(exist_ok=True)
        (d / "quote.bin").write_bytes(v.quote)
        written.append(d / "quote.bin")
        for kind, items in (("collateral", v.collateral), ("cert", v.certs)):
            for i, item in enumerate(items):
                path = d / f"{kind}-{i}.bin"
                path.write_bytes(item)
                written.append(path)
        index.append(
            {
                "name": v.name,
                "platform": v.platform,
                "now": v.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "expect": v.expect,
                "status": v.status,
                "root": v.root,
                "note": v.note,
                "quote_sha256": hashlib.sha256(v.quote).hexdigest(),
            }
        )
    manifest = out_dir / "manifest.json"
    manifest.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    written.append(manifest)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--vectors", type=Path, default=VECTORS, help="shared/vectors directory")
    args = parser.parse_args(argv)
    files = write(args.out, args.vectors)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


__all__ = ["Variant", "generator_root", "variants", "write"]

if __name__ == "__main__":
    sys.exit(main())
