"""Shared fixtures: a clean environment and paths to the shared vectors and built examples."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO.parent / "shared" / "vectors"
EXAMPLES = REPO / "build" / "examples"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DONJON_* setting from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("DONJON_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def vectors_dir() -> Path:
    if not VECTORS.is_dir():
        pytest.fail(f"shared vectors not found at {VECTORS}; the checkout must sit beside shared/")
    return VECTORS


@pytest.fixture
def examples_dir() -> Path:
    if not EXAMPLES.is_dir():
        pytest.fail(f"examples not built at {EXAMPLES}; run scripts/setup")
    return EXAMPLES
