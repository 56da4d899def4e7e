"""``python -m donjon`` runs the CLI."""

from __future__ import annotations

from donjon.cli.main import main

main()
