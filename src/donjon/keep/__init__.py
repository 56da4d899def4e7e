"""The keep runtime: workload configuration, the wasmtime executor, and the Keep's identity.
Does not verify evidence or talk to the keep manager's API."""

from __future__ import annotations
