"""Steward: the attestation service that turns verified evidence into certificates.
``core`` is pure (requests in, responses out); ``app`` does HTTP."""

from __future__ import annotations
