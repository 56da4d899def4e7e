"""Sans-I/O wire formats: deterministic CBOR and COSE_Sign1 structures.

Does: encode and decode bytes, with size bounds and clear errors.
Does not: open sockets or files, read the clock, or do cryptography (see ``donjon.crypto``).
"""

from __future__ import annotations

from donjon.wire.cbor import MAX_MESSAGE_BYTES, decode, encode
from donjon.wire.cose import CoseSign1, decode_sign1, encode_sign1, sig_structure

__all__ = [
    "MAX_MESSAGE_BYTES",
    "CoseSign1",
    "decode",
    "decode_sign1",
    "encode",
    "encode_sign1",
    "sig_structure",
]
