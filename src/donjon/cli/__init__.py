"""The ``donjon`` command line: parses, calls the public API, renders. No logic of its own."""

from __future__ import annotations
