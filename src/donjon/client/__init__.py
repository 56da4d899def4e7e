"""The deploy client: asks a keep manager for a Keep, verifies it, then sends the workload.

``deploy`` (the flow), ``attested`` (what is checked), ``channel`` (TLS over the relay),
``host_api`` (the keep manager's API).
"""

from __future__ import annotations

from donjon._lazy import lazy_exports

_EXPORTS = {
    "deploy": "deploy",
    "DeployOptions": "deploy",
    "Workload": "deploy",
    "DeployResult": "deploy",
    "RegistryWorkload": "deploy",
    "resolve_registry_workload": "deploy",
    "KeepIdentity": "attested",
    "verify_keep_certificate": "attested",
    "HostClient": "host_api",
    "KeepInfo": "host_api",
    "KeepChannel": "channel",
    "ChannelError": "channel",
    "RelayRefusedError": "channel",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
