"""Every case of tests/vectors_gen/snp_gen.py: rejected with its specific error, or accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from donjon.attestation.result import Endorsements
from donjon.attestation.snp import SnpEndorsementMismatchError, SnpVerifier
from tests.vectors_gen.snp_gen import CASE_NAMES, Context, build_case


@pytest.fixture(scope="module")
def embedded() -> SnpVerifier:
    return SnpVerifier.from_embedded_roots()


@pytest.fixture(scope="module")
def context() -> Context:
    # The shared vectors sit beside the checkout (tests/conftest.py checks it for each test).
    return Context(Path(__file__).resolve().parents[5] / "shared" / "vectors")


def test_there_are_many_cases() -> None:
    assert len(CASE_NAMES) > 250
    assert len(set(CASE_NAMES)) == len(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case(name: str, context: Context, embedded: SnpVerifier, vectors_dir: Path) -> None:
    assert context.root == vectors_dir / "sev-snp"
    case = build_case(name, context)
    verifier = embedded if case.roots is None else SnpVerifier(roots=case.roots)
    endorsements = Endorsements(certs=case.certs, collateral=case.collateral)
    if case.error is None:
        verified = verifier.verify(case.evidence, endorsements=endorsements, now=case.now)
        assert verified.claims["signing_key"] == "vcek"
        assert verified.claims["crl_checked"] is bool(case.collateral)
        return
    with pytest.raises(case.error) as info:
        verifier.verify(case.evidence, endorsements=endorsements, now=case.now)
    # The specific class, not a subclass of it (a mismatch must not pass for a generic
    # ChainError case, nor the reverse).
    assert type(info.value) is case.error
    assert case.message in info.value.message
    if case.field is not None:
        assert isinstance(info.value, SnpEndorsementMismatchError)
        assert info.value.field == case.field
    # Never a traceback for a user: one or a few lines of diagnostics.
    assert "\n" not in info.value.diagnostics()
