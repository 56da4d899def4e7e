"""Every package's ``__all__`` is its API: each name resolves, and nothing private leaks in."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "donjon",
    "donjon.wire",
    "donjon.attestation",
    "donjon.backends",
    "donjon.keep",
    "donjon.steward",
    "donjon.registry",
    "donjon.host",
    "donjon.client",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_resolve(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported, f"{name} exports nothing"
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert not attr.startswith("_") or attr == "__version__"
        assert getattr(module, attr) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    keep = importlib.import_module("donjon.keep")
    with pytest.raises(AttributeError):
        keep.no_such_thing  # noqa: B018
