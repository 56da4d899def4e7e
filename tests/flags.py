"""Marks for tests whose subject exists only under the interpreter flags scripts/check uses."""

from __future__ import annotations

import sys

import pytest

under_bb = pytest.mark.skipif(
    not sys.flags.bytes_warning,
    reason="a map holding both 'k' and b'k' is refused through the BytesWarning that cbor2's key "
    "comparison raises under python -b/-bb, as scripts/check runs pytest; without the flag the "
    "keys do not compare and decoding succeeds",
)
