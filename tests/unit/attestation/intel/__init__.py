"""Tests of the Intel SGX/TDX DCAP verifier (donjon.attestation.intel)."""

from __future__ import annotations
