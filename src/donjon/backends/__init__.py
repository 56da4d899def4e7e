"""Backends: where a Keep runs. Host-side platform probes and keep launchers; guest-side evidence
providers. Does not verify evidence (``donjon.attestation``) or run Wasm (``donjon.keep``)."""

from __future__ import annotations
