"""donjon: run WebAssembly workloads in attested Keeps.

Subpackages (dependencies point one way, top to bottom):

- ``donjon.wire``: sans-I/O CBOR messages and COSE structures (no sockets, files or clock).
- ``donjon.crypto``: keys, CSRs, certificates, signatures; the only user of ``cryptography.hazmat``.
- ``donjon.attestation``: evidence verifiers per platform, policies, the platform-neutral result.
- ``donjon.backends``: platform probes, keep launchers, and in-Keep evidence providers.
- ``donjon.keep``: the keep runtime: workload config, the wasmtime executor, identity.
- ``donjon.registry``: workload packages in OCI registries.
- ``donjon.steward``, ``donjon.host``, ``donjon.client``: the attestation service, the keep
  manager and loader, and the deploy client.
- ``donjon.cli``: the ``donjon`` command.

This module holds only the version.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
