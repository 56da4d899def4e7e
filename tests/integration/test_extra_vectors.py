"""Real evidence the verifiers were not written against: ``tests/vectors/extra/manifest.json``.

Issue 3 asks the verifiers to agree with the shared vectors *and* with other real samples of the
same formats. These samples come from other public repositories (see the folder's PROVENANCE.md).
Each one goes through ``donjon attest verify --json`` (a real subprocess) and through the library,
under ``permissive`` and ``production``, at its pinned ``verify_time``, and must reach the expected
verdict with the expected claims. The expected field values are checked three ways: the manifest,
an independent parse of the bytes in this file (fixed ABI offsets, plain CBOR, ``cryptography``;
no donjon code), and donjon's claims must all agree.

The source repositories' own negative tests are replayed on the real bytes (``mutations``), and
validity windows are probed on both sides (``time_checks``).

What each manifest ``result`` means (as in the shared manifest):

- ``accept``: authentic, and acceptable under both built-in policies.
- ``accept-with-tcb-status``: authentic with an Intel TCB status; ``permissive`` accepts,
  ``production`` accepts only UpToDate and SWHardeningNeeded (or what ``production_policy`` says).
- ``reject-debug``: authentic, ``debug`` true; ``permissive`` accepts, ``production`` rejects.
- ``reject``: not verified, under any policy, with the manifest's ``error`` class.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import load_pem_public_key

import donjon.errors
from donjon.attestation.dispatch import verify_evidence
from donjon.attestation.inputs import load_endorsements
from donjon.attestation.policy import PRODUCTION_TCB_STATUSES, Policy, evaluate
from donjon.attestation.result import Platform, VerifiedEvidence
from donjon.errors import VerificationError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXTRA = REPO / "tests" / "vectors" / "extra"
SHARED = REPO.parent / "shared" / "vectors"

# The limits the brief sets for this folder.
MAX_FILE_BYTES = 200 * 1024
MAX_TOTAL_BYTES = 5 * 1024 * 1024

ROLE_OPTION: dict[str, str] = {
    "report": "--evidence",
    "quote": "--evidence",
    "token": "--evidence",
    "document": "--evidence",
    "vcek": "--cert",
    "vlek": "--cert",
    "cpak": "--cert",
    "tcb_signing_chain": "--cert",
    "pck_crl_issuer_chain": "--cert",
    "collateral": "--collateral",
    "tcb_info": "--collateral",
    "qe_identity": "--collateral",
    "pck_crl": "--collateral",
    "root_ca_crl": "--collateral",
}
RESULTS = {"accept", "accept-with-tcb-status", "reject-debug", "reject"}
# CCA has no certificates, so no time; any fixed instant will do.
TIMELESS = "2026-01-01T00:00:00Z"
# Intel SGX PCK certificate extension (Intel PCK Certificate and CRL Profile).
SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"

# Manifest fields -> the claim that carries them, where the names differ.
CLAIM_FOR_FIELD = {"advisories": "advisory_ids"}
# Fields compared against the independent parse of the evidence bytes.
PARSED_FIELDS = {
    "sev-snp": (
        "report_version",
        "guest_svn",
        "policy",
        "vmpl",
        "report_data",
        "measurement",
        "host_data",
        "reported_tcb",
        "chip_id",
        "signing_key",
        "debug",
        "cpuid_fam_mod_step",
    ),
    "sgx": ("quote_version", "mrenclave", "mrsigner", "isvprodid", "isvsvn", "report_data"),
    "tdx": ("quote_version", "tee_tcb_svn", "td_attributes", "mrtd", "report_data"),
    "nitro": ("module_id", "timestamp_ms", "user_data", "nonce", "pcr0", "pcr1", "pcr2", "pcr8"),
}


@dataclass(frozen=True)
class Vector:
    id: str
    platform: Platform
    dir: Path
    files: dict[str, str]
    verify_time: str | None
    expected: dict[str, Any]
    raw: dict[str, Any]

    @property
    def result(self) -> str:
        return str(self.expected["result"])

    @property
    def at(self) -> str:
        return self.verify_time or TIMELESS

    def paths(self, option: str) -> list[Path]:
        return [(self.dir / n).resolve() for r, n in self.files.items() if ROLE_OPTION[r] == option]

    def evidence(self) -> bytes:
        (path,) = self.paths("--evidence")
        return path.read_bytes()


@cache
def _manifest() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EXTRA / "manifest.json").read_text())
    return doc


@cache
def _vectors() -> tuple[Vector, ...]:
    return tuple(
        Vector(
            id=v["id"],
            platform=Platform(v["type"]),
            dir=EXTRA / v["dir"],
            files=dict(v["files"]),
            verify_time=v.get("verify_time"),
            expected=dict(v["expected"]),
            raw=v,
        )
        for v in _manifest()["vectors"]
    )


def _by_id(vector_id: str) -> Vector:
    (v,) = [v for v in _vectors() if v.id == vector_id]
    return v


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _verify(v: Vector, evidence: bytes | None = None, *, at: str | None = None) -> VerifiedEvidence:
    endorsements = load_endorsements(v.paths("--cert"), v.paths("--collateral"))
    data = v.evidence() if evidence is None else evidence
    return verify_evidence(v.platform, data, endorsements=endorsements, now=_time(at or v.at))


def _error_class(name: str) -> type[VerificationError]:
    cls: object = getattr(donjon.errors, name)
    assert isinstance(cls, type), name
    assert issubclass(cls, VerificationError), name
    return cls


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: val for k, val in os.environ.items() if not k.startswith("DONJON_")}
    return subprocess.run(
        [sys.executable, "-bb", "-m", "donjon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def command(v: Vector, policy: str) -> list[str]:
    (evidence,) = v.paths("--evidence")
    args = ["attest", "verify", "--platform", str(v.platform), "--evidence", str(evidence)]
    for option in ("--cert", "--collateral"):
        for p in v.paths(option):
            args += [option, str(p)]
    return [*args, "--at", v.at, "--policy", policy, "--json"]


def expected_verdict(v: Vector, policy: str) -> str:
    """ "accept", "reject" (policy rejects authentic evidence) or "fail" (not authentic)."""
    if v.result == "reject":
        return "fail"
    if policy == "permissive":
        return "accept"
    if v.result == "reject-debug" or v.expected.get("production_policy") == "reject":
        return "reject"
    if v.result == "accept-with-tcb-status":
        status = v.expected["platform_tcb_status"]
        return "accept" if status in PRODUCTION_TCB_STATUSES else "reject"
    return "accept"


# --- an independent reading of the evidence bytes (no donjon code) ---------------------------


def parse_snp(report: bytes) -> dict[str, Any]:
    """Fields of an SEV-SNP ATTESTATION_REPORT at their ABI offsets (AMD #56860)."""
    version, guest_svn, policy = struct.unpack_from("<IIQ", report, 0)
    (vmpl,) = struct.unpack_from("<I", report, 0x30)
    (flags,) = struct.unpack_from("<I", report, 0x48)
    (reported_tcb,) = struct.unpack_from("<Q", report, 0x180)
    return {
        "report_version": version,
        "guest_svn": guest_svn,
        "policy": hex(policy),
        "vmpl": vmpl,
        "report_data": report[0x50:0x90].hex(),
        "measurement": report[0x90:0xC0].hex(),
        "host_data": report[0xC0:0xE0].hex(),
        "reported_tcb": f"0x{reported_tcb:016x}",
        "chip_id": report[0x1A0:0x1E0].hex(),
        "signing_key": {0: "vcek", 1: "vlek"}[(flags >> 2) & 7],
        "debug": bool(policy >> 19 & 1),
        "cpuid_fam_mod_step": report[0x188:0x18B].hex() if version >= 3 else "000000",
    }


def parse_quote(quote: bytes) -> dict[str, Any]:
    """Report-body fields of a DCAP quote (Intel DCAP quote library spec, v3/v4/v5)."""
    version, _, tee_type = struct.unpack_from("<HHI", quote, 0)
    if tee_type == 0:  # SGX enclave report after the 48-byte header
        body = 48
        return {
            "quote_version": version,
            "mrenclave": quote[body + 64 : body + 96].hex(),
            "mrsigner": quote[body + 128 : body + 160].hex(),
            "isvprodid": struct.unpack_from("<H", quote, body + 256)[0],
            "isvsvn": struct.unpack_from("<H", quote, body + 258)[0],
            "report_data": quote[body + 320 : body + 384].hex(),
        }
    body = 48 if version == 4 else 48 + 6  # v5: body type (2) and size (4) come first
    return {
        "quote_version": version,
        "tee_tcb_svn": quote[body : body + 16].hex(),
        "td_attributes": quote[body + 120 : body + 128].hex(),
        "mrtd": quote[body + 136 : body + 184].hex(),
        "report_data": quote[body + 520 : body + 584].hex(),
    }


def parse_nitro(document: bytes) -> dict[str, Any]:
    """The attestation document's payload map (AWS Nitro Enclaves NSM API)."""
    payload = cbor2.loads(cbor2.loads(document)[2])
    out: dict[str, Any] = {
        "module_id": payload["module_id"],
        "timestamp_ms": payload["timestamp"],
        "user_data": payload["user_data"].hex() if payload.get("user_data") else None,
        "nonce": payload["nonce"].hex() if payload.get("nonce") else None,
    }
    for i in (0, 1, 2, 3, 4, 8):
        out[f"pcr{i}"] = payload["pcrs"][i].hex()
    return out


def parse_evidence(v: Vector) -> dict[str, Any]:
    data = v.evidence()
    if v.platform is Platform.SEV_SNP:
        return parse_snp(data)
    if v.platform in (Platform.SGX, Platform.TDX):
        return parse_quote(data)
    if v.platform is Platform.NITRO:
        return parse_nitro(data)
    return {}


def _norm(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def check_claims(v: Vector, claims: dict[str, Any]) -> None:
    """The claims agree with the manifest and the manifest with the bytes."""
    e = v.expected
    parsed = parse_evidence(v)
    for name in PARSED_FIELDS.get(str(v.platform), ()):
        assert parsed[name] == e[name], f"manifest {name} disagrees with the evidence bytes"
    skip = {"result", "reason", "production_policy", "production_reason", "debug"}
    mismatched = {}
    for name, want in e.items():
        claim = CLAIM_FOR_FIELD.get(name, name)
        if name in skip or claim not in claims:
            continue
        got = claims[claim]
        if isinstance(want, list):
            got, want = sorted(got), sorted(want)
        if _norm(got) != _norm(want):
            mismatched[name] = (want, got)
    assert not mismatched, f"claims differ from the manifest: {mismatched}"
    assert claims["debug"] is (v.result == "reject-debug")
    if v.platform is Platform.NITRO:
        assert claims["measurement"] == e["pcr0"]
        for i in (0, 1, 2, 3, 4, 8):
            assert claims["pcrs"][str(i)] == e[f"pcr{i}"]
        assert claims["report_data"] == (e["user_data"] or "")
    if v.platform is Platform.SGX:
        assert claims["measurement"] == e["mrenclave"]
    if v.platform is Platform.TDX:
        assert claims["measurement"] == e["mrtd"]
    if v.platform in (Platform.SGX, Platform.TDX):
        assert claims["tcb_status"] == e["platform_tcb_status"]


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of consecutive DER items; enough for Intel's SGX extension."""
    items, i = [], 0
    while i < len(data):
        tag, length = data[i], data[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7F
            length, i = int.from_bytes(data[i : i + n], "big"), i + n
        items.append((tag, data[i : i + length]))
        i += length
    return items


def _oid_last_arc(der: bytes) -> int:
    arcs, value = [], 0
    for byte in der[1:]:  # the first byte holds the first two arcs
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return arcs[-1]


def pck_tcb(quote: bytes) -> tuple[str, list[int], int]:
    """FMSPC, the 16 SGX TCB components and PCESVN from the PCK leaf's SGX extension."""
    pems = re.findall(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", quote, re.S)
    leaf = x509.load_pem_x509_certificate(pems[0])
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    components: dict[int, int] = {}
    fmspc = ""
    for _, entry in _der_items(_der_items(ext.value.value)[0][1]):
        (_, oid), (value_tag, value) = _der_items(entry)
        arc = _oid_last_arc(oid)
        if arc == 2:  # TCB: SEQUENCE of (component OID, INTEGER)
            for _, component in _der_items(value):
                (_, c_oid), (_, c_value) = _der_items(component)
                components[_oid_last_arc(c_oid)] = int.from_bytes(c_value, "big")
        elif arc == 4 and value_tag == 0x04:  # FMSPC
            fmspc = value.hex()
    return fmspc, [components[i] for i in range(1, 17)], components[17]


def intel_tcb_status(quote: bytes, tcb_info: dict[str, Any]) -> tuple[str, list[str]]:
    """Intel's rule: the first TCB level the platform meets (SGX components, PCESVN and, for TDX,
    the TDX components, counted from index 2 when TEE_TCB_SVN[1] > 0). The TDX module identity,
    which donjon appraises separately, is not recomputed here."""
    fmspc, cpusvn, pcesvn = pck_tcb(quote)
    assert tcb_info["fmspc"].lower() == fmspc
    version, _, tee_type = struct.unpack_from("<HHI", quote, 0)
    body = 48 if version in (3, 4) else 48 + 6
    tee_tcb_svn = list(quote[body : body + 16]) if tee_type else None
    first = 2 if tee_tcb_svn and tee_tcb_svn[1] else 0
    for level in tcb_info["tcbLevels"]:
        tcb = level["tcb"]
        if pcesvn < tcb["pcesvn"] or any(
            have < c["svn"] for have, c in zip(cpusvn, tcb["sgxtcbcomponents"], strict=True)
        ):
            continue
        if tee_tcb_svn is not None and any(
            tee_tcb_svn[i] < tcb["tdxtcbcomponents"][i]["svn"] for i in range(first, 16)
        ):
            continue
        return level["tcbStatus"], sorted(level.get("advisoryIDs", []))
    return "NoMatchingLevel", []


def _tcb_info(v: Vector) -> dict[str, Any]:
    if "collateral" in v.files:  # dcap-qvl QuoteCollateralV3: the TCB info as a JSON string
        collateral = json.loads((v.dir / v.files["collateral"]).read_text())
        info: dict[str, Any] = json.loads(collateral["tcb_info"])
        return info
    wrapped: dict[str, Any] = json.loads((v.dir / v.files["tcb_info"]).read_text())
    return dict(wrapped["tcbInfo"])


# --- the manifest itself ---------------------------------------------------------------------


def test_manifest_is_complete_and_files_match_their_recorded_hashes() -> None:
    ids = [v.id for v in _vectors()]
    assert len(ids) == len(set(ids)) >= 12
    assert {v.result for v in _vectors()} <= RESULTS
    platforms = {v.platform for v in _vectors()}
    assert platforms == {Platform.SEV_SNP, Platform.SGX, Platform.TDX, Platform.CCA, Platform.NITRO}
    recorded: dict[Path, str] = {}
    for v in _vectors():
        assert v.raw["upstream"], v.id
        for role, name in v.files.items():
            assert role in ROLE_OPTION, f"{v.id}: role {role!r}"
            assert (v.dir / name).is_file(), f"{v.id}: {name} missing"
        for s in v.raw["source"]:
            assert {"file", "repo", "path", "commit", "transform", "licence", "sha256"} <= set(s)
            recorded[(EXTRA / s["file"]).resolve()] = s["sha256"]
    every_file = [p for p in EXTRA.rglob("*") if p.is_file() and p.suffix != ".md"]
    every_file.remove(EXTRA / "manifest.json")
    for path in every_file:
        assert path.resolve() in recorded, f"{path} has no provenance entry"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[path.resolve()], path
        assert path.stat().st_size <= MAX_FILE_BYTES, path
    assert sum(p.stat().st_size for p in EXTRA.rglob("*") if p.is_file()) <= MAX_TOTAL_BYTES


def test_provenance_names_every_sample() -> None:
    text = (EXTRA / "PROVENANCE.md").read_text()
    for v in _vectors():
        assert f"`{v.id}`" in text, v.id
        for s in v.raw["source"]:
            assert s["sha256"] in text, s["file"]


# --- every sample through the CLI and the library --------------------------------------------


def library_verdict(v: Vector, policy: str) -> dict[str, Any]:
    try:
        verified = _verify(v)
    except VerificationError as err:
        return {"verdict": "fail", "error": type(err).__name__, "exception": err}
    return evaluate(Policy.named(policy), verified).to_json()


@pytest.mark.parametrize("policy", ["permissive", "production"])
@pytest.mark.parametrize("v", _vectors(), ids=lambda v: v.id)
def test_sample_through_cli_and_library(v: Vector, policy: str) -> None:
    want = expected_verdict(v, policy)
    proc = run_cli(command(v, policy))
    assert proc.stdout, f"no JSON on stdout; stderr: {proc.stderr}"
    out = json.loads(proc.stdout)
    lib = library_verdict(v, policy)
    assert out["platform"] == str(v.platform)
    assert out["policy"] == policy
    assert _time(out.pop("verified_at")) == _time(v.at)

    if want == "fail":
        assert (proc.returncode, out["verdict"], out["claims"]) == (1, "reject", {}), proc.stderr
        assert out["reason"].startswith("verification failed: ")
        assert lib["verdict"] == "fail"
        assert out["error"] == lib["error"]
        assert isinstance(lib["exception"], _error_class(v.expected["error"])), lib["exception"]
        if "error_contains" in v.expected:
            assert v.expected["error_contains"] in out["reason"]
        return

    assert lib["verdict"] != "fail", f"library failed: {lib.get('exception')}"
    assert out == json.loads(json.dumps(lib)), "CLI and library disagree"
    check_claims(v, out["claims"])
    if want == "accept":
        assert (proc.returncode, out["verdict"]) == (0, "accept"), out["reason"]
        assert out["reason"] is None
        return
    assert (proc.returncode, out["verdict"]) == (1, "reject"), out["reason"]
    assert out["reason"].startswith("rejected: ")
    if v.result == "reject-debug":
        assert out["reason"].startswith("rejected: debug enabled (")
    if "production_reason" in v.expected:
        assert v.expected["production_reason"] in out["reason"]


# --- validity windows, the sources' own negative tests, variants ----------------------------


def _case_id(value: object) -> str:
    if isinstance(value, Vector):
        return value.id
    assert isinstance(value, dict)
    return str(value["at"]) if "at" in value else f"offset-{value['offset']}"


def _time_checks() -> list[tuple[Vector, dict[str, Any]]]:
    return [(v, c) for v in _vectors() for c in v.raw.get("time_checks", [])]


@pytest.mark.parametrize(("v", "check"), _time_checks(), ids=_case_id)
def test_validity_windows(v: Vector, check: dict[str, Any]) -> None:
    if check["result"] == "fail":
        with pytest.raises(_error_class(check["error"])):
            _verify(v, at=check["at"])
        return
    verified = _verify(v, at=check["at"])
    assert verified.debug is (check["result"] == "reject-debug")
    assert verified.measurement.hex() == _verify(v).measurement.hex()


def _mutations() -> list[tuple[Vector, dict[str, Any]]]:
    return [(v, m) for v in _vectors() for m in v.raw.get("mutations", [])]


@pytest.mark.parametrize(("v", "mutation"), _mutations(), ids=_case_id)
def test_the_sources_own_negative_tests(v: Vector, mutation: dict[str, Any]) -> None:
    data = bytearray(v.evidence())
    data[mutation["offset"]] ^= mutation["xor"]
    with pytest.raises(_error_class(mutation["error"])):
        _verify(v, bytes(data))


@pytest.mark.parametrize(
    "v", [v for v in _vectors() if "platform_tcb_status" in v.expected], ids=lambda v: v.id
)
def test_intel_tcb_status_recomputed_independently(v: Vector) -> None:
    """The platform TCB status and advisories follow from the PCK and TCB info by Intel's rule."""
    status, advisories = intel_tcb_status(v.evidence(), _tcb_info(v))
    assert status == v.expected["platform_tcb_status"]
    assert advisories == sorted(v.expected["advisories"])


def test_padded_tdx_original_is_upstreams_input_and_verifies_the_same() -> None:
    v = _by_id("tdx-ata-v4-2026")
    (variant,) = v.raw["variants"]
    padded = v.evidence() + bytes(variant["append_zero_bytes"])
    assert hashlib.sha256(padded).hexdigest() == variant["sha256"]
    assert _verify(v, padded).claims == _verify(v).claims


def test_cmw_collection_wraps_the_shared_tfrmm_tokens() -> None:
    """Only the framing is new: the two CMW records hold the shared tag-399 token's messages."""
    v = _by_id("cca-cmw-tfrmm")
    item = cbor2.loads(v.evidence())
    assert item.tag == 907
    assert sorted(item.value) == [44234, 44241]
    records = dict(item.value)
    assert {r[0] for r in records.values()} == {v.expected["cmw_content_format"]}
    shared_token = SHARED / v.expected["inner_tokens_equal_shared"]
    if not shared_token.is_file():
        pytest.skip("shared vectors not present")
    legacy = cbor2.loads(shared_token.read_bytes())
    assert legacy.tag == 399
    assert {k: r[1] for k, r in records.items()} == legacy.value
    cpak = (v.dir / v.files["cpak"]).read_bytes()
    assert cpak == (shared_token.parent / "cpak.pub.pem").read_bytes()


def _cose_verify(message: list[Any], public_key: ec.EllipticCurvePublicKey, alg: int) -> None:
    digest = {-7: hashes.SHA256(), -35: hashes.SHA384(), -36: hashes.SHA512()}[alg]
    size = len(message[3]) // 2
    signature = utils.encode_dss_signature(
        int.from_bytes(message[3][:size], "big"), int.from_bytes(message[3][size:], "big")
    )
    to_be_signed = cbor2.dumps(["Signature1", message[0], b"", message[2]])
    public_key.verify(signature, to_be_signed, ec.ECDSA(digest))


def _sign1(data: bytes) -> list[Any]:
    item = cbor2.loads(data)
    message: list[Any] = item.value if isinstance(item, cbor2.CBORTag) else item
    return message


def test_veraison_good_token_is_signed_but_its_realm_claims_are_inconsistent() -> None:
    """Both signatures and the binding hold; donjon refuses the 64-byte RIM labelled sha-256."""
    v = _by_id("cca-veraison-good-es256")
    facts = v.expected["independent"]
    token = cbor2.loads(v.evidence())
    platform, realm = _sign1(token.value[44234]), _sign1(token.value[44241])
    platform_claims, realm_claims = cbor2.loads(platform[2]), cbor2.loads(realm[2])
    assert cbor2.loads(platform[0])[1] == facts["platform_alg"]
    assert cbor2.loads(realm[0])[1] == facts["realm_alg"]

    iak = load_pem_public_key((v.dir / v.files["cpak"]).read_bytes())
    assert isinstance(iak, ec.EllipticCurvePublicKey)
    _cose_verify(platform, iak, facts["platform_alg"])
    rak_key = cbor2.loads(realm_claims[44237])  # COSE_Key: kty 2, crv 2 (P-384), x, y
    rak = ec.EllipticCurvePublicNumbers(
        int.from_bytes(rak_key[-2], "big"), int.from_bytes(rak_key[-3], "big"), ec.SECP384R1()
    ).public_key()
    _cose_verify(realm, rak, facts["realm_alg"])
    with pytest.raises(InvalidSignature):
        _cose_verify([realm[0], realm[1], realm[2] + b"\0", realm[3]], rak, facts["realm_alg"])

    assert realm_claims[44240] == facts["rak_hash"]
    assert hashlib.sha512(realm_claims[44237]).digest() == platform_claims[10]
    assert realm_claims[265] == facts["realm_profile"]
    assert realm_claims[44238].hex() == facts["rim"]
    assert realm_claims[44236] == "sha-256"  # so the 64-byte RIM cannot be its digest
    with pytest.raises(_error_class(v.expected["error"]), match="64 bytes; expected 32"):
        _verify(v)
