"""The public API of donjon.attestation.cca: exactly what __all__ lists, usable as documented."""

from __future__ import annotations

import pytest

import donjon.attestation.cca as cca
from donjon.attestation.cca import CcaVerifier


def test_all_is_exact_and_importable() -> None:
    assert sorted(cca.__all__) == [
        "CcaToken",
        "CcaVerifier",
        "Cpak",
        "CpakError",
        "Framing",
        "Lifecycle",
        "PlatformClaims",
        "PlatformProfile",
        "RealmClaims",
        "RealmProfile",
        "SwComponent",
        "load_cpaks",
        "parse_token",
    ]
    for name in cca.__all__:
        assert getattr(cca, name) is not None


def test_trust_settings_are_keyword_only_and_a_single_file_is_refused() -> None:
    with pytest.raises(TypeError):
        CcaVerifier([b"x"])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="wrap one file in a list"):
        CcaVerifier(trusted_cpaks=b"-----BEGIN PUBLIC KEY-----")  # type: ignore[arg-type]


def test_a_bad_pinned_cpak_fails_at_construction() -> None:
    with pytest.raises(cca.CpakError, match="trusted CPAK #0"):
        CcaVerifier(trusted_cpaks=[b"{}"])
