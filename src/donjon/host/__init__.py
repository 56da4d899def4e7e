"""The keep manager (host agent) and the keep loader: untrusted host-side processes."""

from __future__ import annotations
