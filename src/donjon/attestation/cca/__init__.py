"""Arm CCA: parse and verify CCA attestation tokens (platform + realm COSE_Sign1 and binding).

Does: parse the token collection, tag 399 or the tag-907 CMW collection of RMM 2.0 (legacy
CCA-SSD/1.0.0 and draft-ffm-rats-cca-token-00 profiles), verify the platform token under a
trusted CPAK, the realm token under its RAK, and the binding between them; report the realm's
measurements and the platform's claims.
Does not: decide whether the measurements are acceptable (that is a policy), fetch CPAKs or
reference values, or read the clock.

Example::

    from datetime import UTC, datetime
    from donjon.attestation import Endorsements
    from donjon.attestation.cca import CcaVerifier

    verifier = CcaVerifier(trusted_cpaks=[open("cpak.pub.pem", "rb").read()])
    result = verifier.verify(token_bytes, endorsements=Endorsements(), now=datetime.now(UTC))
    print(result.claims["rim"], result.report_data.hex(), result.debug)
"""

from __future__ import annotations

from donjon.attestation.cca.cpak import Cpak, CpakError, load_cpaks
from donjon.attestation.cca.token import (
    CcaToken,
    Framing,
    Lifecycle,
    PlatformClaims,
    PlatformProfile,
    RealmClaims,
    RealmProfile,
    SwComponent,
    parse_token,
)
from donjon.attestation.cca.verifier import CcaVerifier

__all__ = [
    "CcaToken",
    "CcaVerifier",
    "Cpak",
    "CpakError",
    "Framing",
    "Lifecycle",
    "PlatformClaims",
    "PlatformProfile",
    "RealmClaims",
    "RealmProfile",
    "SwComponent",
    "load_cpaks",
    "parse_token",
]
