"""How a Keep binds its public key and a verifier's nonce into the 64-byte report data.

Every TEE format donjon uses carries 64 bytes of attester-chosen data (SNP REPORT_DATA, SGX/TDX
REPORTDATA, CCA realm challenge, nil report_data). donjon fills them with::

    SHA-512( "donjon/report-data/v1" || 0x00
             || u16be(len(spki)) || spki || u16be(len(nonce)) || nonce )

so a verifier that knows the certificate's (or CSR's) key and the nonce it issued recomputes them
exactly. Length prefixes keep (spki, nonce) pairs from colliding.
"""

from __future__ import annotations

import hashlib
import hmac

REPORT_DATA_BYTES = 64
MAX_NONCE_BYTES = 1024
_DOMAIN = b"donjon/report-data/v1\x00"


def report_data_for(spki_der: bytes, nonce: bytes) -> bytes:
    """The 64 report-data bytes that bind *spki_der* (DER SubjectPublicKeyInfo) and *nonce*."""
    if len(spki_der) > 0xFFFF or len(nonce) > MAX_NONCE_BYTES:
        raise ValueError("key or nonce too long to bind")
    h = hashlib.sha512()
    h.update(_DOMAIN)
    h.update(len(spki_der).to_bytes(2, "big") + spki_der)
    h.update(len(nonce).to_bytes(2, "big") + nonce)
    return h.digest()


def binds(report_data: bytes, spki_der: bytes, nonce: bytes) -> bool:
    """Whether *report_data* is exactly the binding of *spki_der* and *nonce* (constant time)."""
    if len(report_data) != REPORT_DATA_BYTES:
        return False
    return hmac.compare_digest(report_data, report_data_for(spki_der, nonce))
