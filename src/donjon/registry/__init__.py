"""Workload packages (Wasm module + config) as OCI artifacts: format, signing, OCI client."""

from __future__ import annotations
