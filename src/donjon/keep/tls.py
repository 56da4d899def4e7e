"""TLS contexts for the Keep's server side, with the private key never written to a filesystem.

The key and chain are written into an anonymous memory file (``memfd_create``) that
``load_cert_chain`` reads through ``/proc/self/fd``; the fd is closed at once (TOOLING.md §3.6).
"""

from __future__ import annotations

import os
import ssl


def server_context(key_pem: bytes, chain_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.3-only server context presenting *chain_pem* (leaf first) with *key_pem*."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    fd = os.memfd_create("donjon-keep-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, key_pem + chain_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx
