"""The appraisal cache: a report body seen before skips checks 1-9 and 12-15, never 10, 11, 16, 17.

Reports of one guest differ only in REPORT_DATA and the signature, so these tests make such
reports: the real milan-trustee report with other REPORT_DATA values, re-signed under the
look-alike hierarchy of ``tests/vectors_gen/snp_gen.py`` (trusted explicitly here).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from donjon.attestation.result import Endorsements
from donjon.attestation.snp import SnpVerifier
from donjon.errors import FreshnessError, SignatureError
from tests.vectors_gen.snp_gen import (
    _TRUSTEE_SPLS,
    CHIP_ID,
    SIG_R,
    VERIFY_TIME,
    Context,
    LookAlike,
    der,
    flip,
    look_alike,
    sign_report,
)

REPORT_DATA = slice(0x50, 0x90)


@pytest.fixture(scope="module")
def context() -> Context:
    return Context(Path(__file__).resolve().parents[5] / "shared" / "vectors")


@pytest.fixture(scope="module")
def la() -> LookAlike:
    return look_alike()


def _report(context: Context, la: LookAlike, report_data: bytes) -> bytes:
    report = bytearray(context.samples["milan-trustee"].report)
    report[REPORT_DATA] = report_data
    return sign_report(bytes(report), la.vcek_key)


def _endorsements(context: Context, la: LookAlike, *crls: bytes) -> Endorsements:
    chip = context.samples["milan-trustee"].report[CHIP_ID : CHIP_ID + 64]
    vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS)
    return Endorsements(certs=(der(vcek),), collateral=crls)


def _verifier(la: LookAlike) -> SnpVerifier:
    return SnpVerifier(roots=(la.ark, la.ask))


def test_reports_of_one_guest_share_one_appraisal(context: Context, la: LookAlike) -> None:
    verifier = _verifier(la)
    endorsements = _endorsements(context, la)
    nonces = [bytes([i]) * 64 for i in range(1, 4)]
    results = [
        verifier.verify(_report(context, la, n), endorsements=endorsements, now=VERIFY_TIME)
        for n in nonces
    ]
    assert len(verifier._appraisals) == 1
    for nonce, result in zip(nonces, results, strict=True):
        assert result.report_data == nonce
        assert result.claims["report_data"] == nonce.hex()
    # Apart from REPORT_DATA, the cached results are the uncached one, in the same order.
    first, *others = (dict(r.claims) for r in results)
    for other in others:
        assert list(other) == list(first)
        assert {k: v for k, v in other.items() if k != "report_data"} == {
            k: v for k, v in first.items() if k != "report_data"
        }
    assert results[1].measurement == results[0].measurement
    assert results[1].debug is results[0].debug


def test_a_hit_still_checks_the_signature(context: Context, la: LookAlike) -> None:
    verifier = _verifier(la)
    endorsements = _endorsements(context, la)
    genuine = _report(context, la, bytes(64))
    verifier.verify(genuine, endorsements=endorsements, now=VERIFY_TIME)
    # Same body, other REPORT_DATA, the old signature: a replay with a swapped nonce.
    swapped = bytearray(genuine)
    swapped[REPORT_DATA] = b"\xff" * 64
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(bytes(swapped), endorsements=endorsements, now=VERIFY_TIME)
    with pytest.raises(SignatureError):
        verifier.verify(flip(genuine, SIG_R), endorsements=endorsements, now=VERIFY_TIME)
    assert len(verifier._appraisals) == 1


def test_only_genuine_reports_are_remembered(context: Context, la: LookAlike) -> None:
    verifier = _verifier(la)
    endorsements = _endorsements(context, la)
    forged = flip(_report(context, la, bytes(64)), SIG_R)
    with pytest.raises(SignatureError):
        verifier.verify(forged, endorsements=endorsements, now=VERIFY_TIME)
    assert len(verifier._appraisals) == 0


def test_a_hit_still_checks_times_and_crls(context: Context, la: LookAlike) -> None:
    verifier = _verifier(la)
    crl = la.crl(issuer=la.ask, key=la.ask_key)  # next update 2025-09-20
    endorsements = _endorsements(context, la, crl)
    report = _report(context, la, bytes(64))
    assert verifier.verify(report, endorsements=endorsements, now=VERIFY_TIME).claims["crl_checked"]
    with pytest.raises(FreshnessError, match="expired"):
        verifier.verify(report, endorsements=endorsements, now=datetime(2025, 9, 25, tzinfo=UTC))
    with pytest.raises(FreshnessError, match="not valid before"):
        verifier.verify(report, endorsements=endorsements, now=datetime(2020, 1, 1, tzinfo=UTC))
    assert len(verifier._appraisals) == 1


def test_crl_checked_is_per_call_and_per_endorsements(context: Context, la: LookAlike) -> None:
    verifier = _verifier(la)
    report = _report(context, la, bytes(64))
    plain = _endorsements(context, la)
    with_crl = _endorsements(context, la, la.crl(issuer=la.ask, key=la.ask_key))
    assert verifier.verify(report, endorsements=plain, now=VERIFY_TIME).claims["crl_checked"] is (
        False
    )
    assert verifier.verify(report, endorsements=with_crl, now=VERIFY_TIME).claims["crl_checked"]
    assert len(verifier._appraisals) == 2


def test_results_share_no_mutable_claim(context: Context, la: LookAlike) -> None:
    verifier = _verifier(la)
    endorsements = _endorsements(context, la)
    report = _report(context, la, bytes(64))
    first = verifier.verify(report, endorsements=endorsements, now=VERIFY_TIME)
    for name, value in first.claims.items():
        if isinstance(value, dict):
            value["bl"] = -1  # a caller scribbling on its own result
            value.clear()
            assert name
    second = verifier.verify(report, endorsements=endorsements, now=VERIFY_TIME)
    assert second.claims["reported_tcb_fields"]["bl"] == 3
    assert second.claims["platform_info_fields"]
    assert not any(isinstance(v, list) for v in second.claims.values())


def test_another_body_is_appraised_again(context: Context, la: LookAlike) -> None:
    verifier = _verifier(la)
    endorsements = _endorsements(context, la)
    report = _report(context, la, bytes(64))
    verifier.verify(report, endorsements=endorsements, now=VERIFY_TIME)
    other = bytearray(report)
    other[0x004] ^= 1  # GUEST_SVN
    result = verifier.verify(
        sign_report(bytes(other), la.vcek_key), endorsements=endorsements, now=VERIFY_TIME
    )
    assert result.claims["guest_svn"] == report[4] ^ 1
    assert len(verifier._appraisals) == 2
    verifier.clear_caches()
    assert len(verifier._appraisals) == 0


def test_real_samples_verify_the_same_warm_and_cold(vectors_dir: Path) -> None:
    folder = vectors_dir / "sev-snp"
    hcl = (folder / "azure-milan-hcl" / "hcl-report.bin").read_bytes()
    hcl_certs = Endorsements(certs=((folder / "azure-milan-hcl" / "vcek-chain.pem").read_bytes(),))
    milan = (folder / "milan-trustee" / "report.bin").read_bytes()
    milan_certs = Endorsements(certs=((folder / "milan-trustee" / "vcek.der").read_bytes(),))
    verifier = SnpVerifier.from_embedded_roots()
    for evidence, endorsements in ((hcl, hcl_certs), (milan, milan_certs)):
        cold = verifier.verify(evidence, endorsements=endorsements, now=VERIFY_TIME)
        warm = verifier.verify(evidence, endorsements=endorsements, now=VERIFY_TIME)
        assert warm == cold
        assert list(warm.claims) == list(cold.claims)
        assert warm.claims is not cold.claims
