"""The keep manager (host agent) and the keep loader: untrusted host-side processes.

``core`` (Keeps, owners, reconciliation), ``store`` (durable records), ``auth`` (tokens),
``app`` (HTTP API and relay), ``launcher``/``loader`` (one process per Keep), ``pool`` (the
policy of the warm spare loaders), ``serve``.
"""

from __future__ import annotations

from donjon._lazy import lazy_exports

_EXPORTS = {
    "KeepManager": "core",
    "CreateKeep": "core",
    "KeepStore": "store",
    "TokenStore": "auth",
    "create_app": "app",
    "ProcessLauncher": "launcher",
    "SparePool": "pool",
    "PoolStatus": "pool",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
