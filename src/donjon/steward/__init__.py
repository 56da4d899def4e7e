"""Steward: the attestation service that turns verified evidence into certificates.

``core`` is pure (requests in, responses out); ``app`` does HTTP; ``client`` talks to a Steward;
``messages`` are the CBOR messages of protocol v1 (``docs/protocol.md``).
"""

from __future__ import annotations

from donjon._lazy import lazy_exports

_EXPORTS = {
    "StewardClient": "client",
    "IssuedCertificate": "client",
    "StewardCore": "core",
    "StewardApp": "app",
    "serve": "app",
    "StewardPolicy": "config",
    "StewardSettings": "config",
    "ResultClaims": "messages",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
