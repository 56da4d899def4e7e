"""The verifier dispatcher: platform lookup, shared verifiers, and the Rule 2 guard."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from donjon.attestation import dispatch
from donjon.attestation.dispatch import (
    MAX_EVIDENCE_BYTES,
    InternalVerifierError,
    UnsupportedPlatformError,
    parse_platform,
    verifier_for,
    verify_evidence,
    verify_with,
)
from donjon.attestation.nil import NilClaims, nil_protected_header
from donjon.attestation.result import Endorsements, EvidenceVerifier, Platform, VerifiedEvidence
from donjon.crypto.devkey import DevSigningKey, generate_dev_key_pem
from donjon.errors import (
    DecodeError,
    EvidenceFormatError,
    SignatureError,
    UsageError,
    VerificationError,
)

AT_2025 = datetime(2025, 9, 1, tzinfo=UTC)
NO_ENDORSEMENTS = Endorsements()


# --- platform names and shared verifiers ------------------------------------------------------


@pytest.mark.parametrize("platform", list(Platform))
def test_every_platform_has_a_shared_verifier(platform: Platform) -> None:
    verifier = verifier_for(platform)
    assert verifier.platform is platform
    assert verifier_for(str(platform)) is verifier  # built once, shared
    assert callable(verifier.verify)


def test_sgx_and_tdx_are_distinct_verifiers() -> None:
    assert verifier_for(Platform.SGX) is not verifier_for(Platform.TDX)


@pytest.mark.parametrize(
    ("name", "platform"), [("SEV-SNP", Platform.SEV_SNP), (" tdx ", Platform.TDX)]
)
def test_platform_names_are_forgiving_about_case_and_space(name: str, platform: Platform) -> None:
    assert parse_platform(name) is platform


@pytest.mark.parametrize("name", ["sev", "snp", "", "keystone"])
def test_unknown_platform_is_a_usage_error(name: str) -> None:
    with pytest.raises(UnsupportedPlatformError, match="expected one of sev-snp, tdx, sgx"):
        verifier_for(name)
    assert issubclass(UnsupportedPlatformError, UsageError)


def test_a_verifier_that_cannot_be_imported_is_reported_as_such(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The wiring table is the seam: point CCA at a module that does not exist.
    monkeypatch.setitem(
        dispatch._FACTORIES, Platform.CCA, ("donjon.attestation.no_such_module", lambda: None)
    )
    monkeypatch.delitem(dispatch._verifiers, Platform.CCA, raising=False)
    with pytest.raises(UnsupportedPlatformError, match="no cca verifier in this installation"):
        verifier_for(Platform.CCA)


# --- the Rule 2 guard, with verifiers that implement the real protocol -------------------------


@dataclass
class _Raising:
    error: BaseException
    platform: Platform = Platform.SEV_SNP
    calls: int = 0

    def verify(
        self, evidence: bytes, *, endorsements: Endorsements, now: datetime
    ) -> VerifiedEvidence:
        self.calls += 1
        raise self.error


@dataclass
class _Returning:
    result: object
    platform: Platform = Platform.SEV_SNP

    def verify(
        self, evidence: bytes, *, endorsements: Endorsements, now: datetime
    ) -> VerifiedEvidence:
        return self.result  # type: ignore[return-value]


def _as_verifier(v: object) -> EvidenceVerifier:
    assert isinstance(v, _Raising | _Returning)
    return v


def test_a_bug_in_a_verifier_becomes_a_verification_error() -> None:
    bug = _Raising(IndexError("list index out of range"))
    with pytest.raises(InternalVerifierError, match="IndexError: list index out of range") as info:
        verify_with(_as_verifier(bug), b"x", endorsements=NO_ENDORSEMENTS, now=AT_2025)
    assert isinstance(info.value, VerificationError)
    assert isinstance(info.value.__cause__, IndexError)


def test_verification_errors_pass_through_unchanged() -> None:
    error = SignatureError("report signature does not verify")
    with pytest.raises(SignatureError) as info:
        verify_with(_as_verifier(_Raising(error)), b"x", endorsements=NO_ENDORSEMENTS, now=AT_2025)
    assert info.value is error


def test_other_donjon_errors_count_as_not_verified() -> None:
    raising = _Raising(DecodeError("truncated CBOR"))
    with pytest.raises(EvidenceFormatError, match="sev-snp evidence: truncated CBOR"):
        verify_with(_as_verifier(raising), b"x", endorsements=NO_ENDORSEMENTS, now=AT_2025)


def test_keyboard_interrupt_is_not_swallowed() -> None:
    raising = _Raising(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        verify_with(_as_verifier(raising), b"x", endorsements=NO_ENDORSEMENTS, now=AT_2025)


@pytest.mark.parametrize(
    "result",
    [
        None,
        {"measurement": "00"},
        VerifiedEvidence(platform=Platform.TDX, measurement=b"", report_data=b"", debug=False),
    ],
)
def test_a_result_of_the_wrong_type_or_platform_is_refused(result: object) -> None:
    with pytest.raises(InternalVerifierError, match="the evidence was not verified"):
        verify_with(
            _as_verifier(_Returning(result)), b"x", endorsements=NO_ENDORSEMENTS, now=AT_2025
        )


def test_oversized_evidence_is_refused_before_the_verifier_runs() -> None:
    bug = _Raising(AssertionError("must not be called"))
    with pytest.raises(EvidenceFormatError, match="more than the 1048576-byte limit"):
        verify_with(
            _as_verifier(bug),
            bytes(MAX_EVIDENCE_BYTES + 1),
            endorsements=NO_ENDORSEMENTS,
            now=AT_2025,
        )
    assert bug.calls == 0


def test_naive_now_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="timezone-aware"):
        verify_evidence(Platform.NIL, b"x", endorsements=NO_ENDORSEMENTS, now=datetime(2025, 9, 1))


# --- real evidence through the dispatcher -----------------------------------------------------


def test_real_snp_report(vectors_dir: Path) -> None:
    d = vectors_dir / "sev-snp"
    report = (d / "milan-trustee/report.bin").read_bytes()
    endorsements = Endorsements(
        certs=(
            (d / "milan-trustee/vcek.der").read_bytes(),
            (d / "roots/milan-vcek-ask-ark.pem").read_bytes(),
        )
    )
    verified = verify_evidence("sev-snp", report, endorsements=endorsements, now=AT_2025)
    assert verified.platform is Platform.SEV_SNP
    assert verified.measurement.hex().startswith("a1f3930413247bb3")
    assert not verified.debug
    tampered = report[:0x90] + bytes([report[0x90] ^ 1]) + report[0x91:]  # a MEASUREMENT byte
    with pytest.raises(SignatureError):
        verify_evidence("sev-snp", tampered, endorsements=endorsements, now=AT_2025)


def test_real_nitro_document_needs_no_endorsements(vectors_dir: Path) -> None:
    doc = (vectors_dir / "nitro/evervault-prod-2022/attestation.cbor").read_bytes()
    at = datetime(2022, 10, 13, 8, 58, 2, tzinfo=UTC)
    verified = verify_evidence(Platform.NITRO, doc, endorsements=NO_ENDORSEMENTS, now=at)
    assert verified.measurement.hex().startswith("f4d48b81a460c991")


@pytest.mark.parametrize("platform", list(Platform))
def test_garbage_is_a_verification_error_on_every_platform(platform: Platform) -> None:
    for garbage in (b"", b"\x00" * 100, b"\xd9\x01\x8f\xa0", b"not evidence"):
        with pytest.raises(VerificationError):
            verify_evidence(platform, garbage, endorsements=NO_ENDORSEMENTS, now=AT_2025)


def test_nil_evidence_round_trip() -> None:
    key = DevSigningKey.from_pem(generate_dev_key_pem(), source="test key")
    claims = NilClaims(
        report_data=bytes(range(64)),
        measurement=b"\x42" * 48,
        hostname=socket.gethostname()[:255] or "localhost",
        version="0.0.0",
    )
    evidence = key.sign1(claims.encode(), protected=nil_protected_header(key.spki))
    verified = verify_evidence("nil", evidence, endorsements=NO_ENDORSEMENTS, now=AT_2025)
    assert verified.platform is Platform.NIL
    assert verified.report_data == bytes(range(64))
    assert verified.claims["insecure"] is True
