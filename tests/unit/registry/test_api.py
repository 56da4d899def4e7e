"""The public API of donjon.registry is exactly its __all__."""

from __future__ import annotations

import donjon.registry as registry


def test_exported_members() -> None:
    exported = {name for name in dir(registry) if not name.startswith("_")}
    modules = {
        "cache",
        "client",
        "credentials",
        "errors",
        "fetch",
        "layout",
        "oci",
        "package",
        "reference",
        "signing",
        "transfer",
        "annotations",
    }
    assert set(registry.__all__) == exported - modules
    for name in registry.__all__:
        assert name.isupper() or getattr(registry, name).__module__.startswith("donjon.registry")
