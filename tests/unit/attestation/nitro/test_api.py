"""The public API of donjon.attestation.nitro: exactly what __all__ lists."""

from __future__ import annotations

import pytest

import donjon.attestation.nitro as nitro
from donjon.attestation.nitro import NitroVerifier


def test_all_is_exact_and_importable() -> None:
    assert sorted(nitro.__all__) == [
        "AttestationDocument",
        "NitroEvidence",
        "NitroVerifier",
        "ROOT_G1_SHA256",
        "embedded_root",
        "parse_document",
    ]
    for name in nitro.__all__:
        assert getattr(nitro, name) is not None


def test_root_is_keyword_only_and_embedded_root_is_exposed() -> None:
    root = nitro.embedded_root()
    with pytest.raises(TypeError):
        NitroVerifier(root)  # type: ignore[call-arg]
    assert NitroVerifier.from_embedded_roots().root == root
