"""Fixtures for the Intel DCAP tests: manifest vectors as ready-to-verify cases, and verifiers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from donjon.attestation import Endorsements, Platform
from donjon.attestation.intel import DcapVerifier

# The same place tests/conftest.py looks: the shared folder beside the checkout.
VECTORS = Path(__file__).resolve().parents[5] / "shared" / "vectors"


@dataclass(frozen=True)
class Case:
    """One sgx/tdx manifest vector, loaded."""

    id: str
    platform: Platform
    quote: bytes
    collateral: tuple[bytes, ...]
    now: datetime
    expected: dict[str, Any]
    dir: Path
    files: dict[str, str]

    @property
    def endorsements(self) -> Endorsements:
        return Endorsements(collateral=self.collateral)


def load_cases(vectors: Path = VECTORS) -> list[Case]:
    manifest = json.loads((vectors / "manifest.json").read_text())
    cases = []
    for entry in manifest["vectors"]:
        if entry["type"] not in ("sgx", "tdx"):
            continue
        base = vectors / entry["dir"]
        files: dict[str, str] = entry["files"]
        collateral = tuple(
            (base / path).resolve().read_bytes()
            for role, path in files.items()
            if role not in ("quote", "root_ca", "alt_tcb_info")
        )
        cases.append(
            Case(
                id=entry["id"],
                platform=Platform(entry["type"]),
                quote=(base / files["quote"]).read_bytes(),
                collateral=collateral,
                now=datetime.fromisoformat(entry["verify_time"].replace("Z", "+00:00")),
                expected=entry["expected"],
                dir=base,
                files=files,
            )
        )
    return cases


# Loaded at import so tests are parametrized by vector; a missing folder fails collection loudly.
CASES = load_cases()


def case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


@pytest.fixture(scope="module")
def sgx_verifier() -> DcapVerifier:
    return DcapVerifier.from_embedded_roots(platform=Platform.SGX)


@pytest.fixture(scope="module")
def tdx_verifier() -> DcapVerifier:
    return DcapVerifier.from_embedded_roots(platform=Platform.TDX)


@pytest.fixture(scope="module")
def verifiers(sgx_verifier: DcapVerifier, tdx_verifier: DcapVerifier) -> dict[Platform, Any]:
    return {Platform.SGX: sgx_verifier, Platform.TDX: tdx_verifier}
