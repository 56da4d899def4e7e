"""The ``donjon`` executable.

For ``donjon run`` it starts the keep process before it imports the CLI framework, so the keep
loads wasmtime while this process loads click: the two biggest costs of a run's start overlap.
Everything else goes straight to :func:`donjon.cli.main.main`.
"""

from __future__ import annotations

import os
import sys

from donjon.backends.nil import KeepProcess, prestart


def _plain_nil_run(argv: list[str]) -> bool:
    """``donjon run ...`` on the nil backend, not asking for help."""
    if not argv or argv[0] != "run":
        return False
    options = argv[: argv.index("--")] if "--" in argv else argv
    if "-h" in options or "--help" in options:
        return False
    backend = os.environ.get("DONJON_BACKEND", "nil")
    for i, arg in enumerate(options):
        if arg == "--backend" and i + 1 < len(options):
            backend = options[i + 1]
        elif arg.startswith("--backend="):
            backend = arg.split("=", 1)[1]
    return backend == "nil"


def main() -> None:
    keep: KeepProcess | None = prestart() if _plain_nil_run(sys.argv[1:]) else None
    try:
        from donjon.cli.main import main as cli_main

        cli_main()
    finally:
        if keep is not None and keep.waiting:  # the run never got as far as its request
            keep.cancel()


if __name__ == "__main__":  # pragma: no cover
    main()
