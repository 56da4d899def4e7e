"""Deterministic CBOR (RFC 8949 §4.2) encoding and bounded, defensive decoding."""

from __future__ import annotations

import warnings
from typing import Any

import cbor2

from donjon.errors import DecodeError, EncodeError

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest CBOR message any component accepts (bytes): bounds memory for hostile input."""


def encode(value: Any) -> bytes:
    """Encode *value* as deterministic CBOR (canonical: sorted map keys, shortest forms).

    Raises:
        EncodeError: the value holds a type CBOR cannot carry.
    """
    try:
        return bytes(cbor2.dumps(value, canonical=True))
    except (cbor2.CBOREncodeError, TypeError, ValueError) as e:
        raise EncodeError(f"cannot encode value as CBOR: {e}") from e


def decode(data: bytes, *, what: str = "message", max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Decode exactly one CBOR item from *data*.

    Args:
        data: the bytes received.
        what: names the input in error messages ("attest request", "CCA token", ...).
        max_bytes: refuse inputs larger than this.

    Raises:
        DecodeError: too large, not CBOR, or trailing bytes after the item.
    """
    if len(data) > max_bytes:
        raise DecodeError(f"{what} is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise DecodeError(f"{what} is empty; expected a CBOR item")
    try:
        # cbor2 bounds its own recursion; any failure below is the input's fault. BytesWarning:
        # under ``python -bb`` a map holding both "k" and b"k" keys compares them and warns.
        with warnings.catch_warnings():
            warnings.simplefilter("error", BytesWarning)
            value, end = _loads_with_end(bytes(data))
    except (
        cbor2.CBORDecodeError,
        ValueError,
        TypeError,
        OverflowError,
        RecursionError,
        MemoryError,
        IndexError,
        KeyError,
        EOFError,
    ) as e:
        raise DecodeError(f"{what} is not valid CBOR: {e}") from e
    except BytesWarning as e:
        raise DecodeError(f"{what}: a CBOR map mixes text and byte-string keys") from e
    if value is getattr(cbor2, "break_marker", None):  # cbor2 exports it untyped
        raise DecodeError(f"{what} is not valid CBOR: a lone 'break' byte (0xff)")
    if end != len(data):
        raise DecodeError(f"{what} has {len(data) - end} trailing bytes after the CBOR item")
    return value


def _loads_with_end(data: bytes) -> tuple[Any, int]:
    import io

    fp = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(fp)
    value = decoder.decode()
    return value, fp.tell()
