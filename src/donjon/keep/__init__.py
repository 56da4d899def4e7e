"""The keep runtime: workload configuration (``config``), the wasmtime executor (``executor``,
``plan``, ``cache``), the library API (``api``), the nil keep process (``process``) and the agent
that runs inside a deployed Keep (``agent``).

Does not verify evidence or serve the keep manager's API. Exports are lazy, so importing the
config never imports wasmtime.
"""

from __future__ import annotations

from donjon._lazy import lazy_exports

_EXPORTS = {
    "WorkloadConfig": "config",
    "load_config": "config",
    "parse_config": "config",
    "KeepRuntime": "executor",
    "RunResult": "api",
    "run_module": "api",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
