"""AWS Nitro Enclaves: parse and verify NSM attestation documents.

Does: parse the COSE_Sign1 attestation document with AWS's syntactical validation, validate its
certificate chain at a given ``now`` to the embedded AWS Nitro Enclaves Root-G1, verify the ES384
signature, and report the PCRs, ``user_data``, ``nonce`` and ``public_key``.
Does not: decide whether the PCRs are acceptable or the document is fresh enough (policy),
check CRLs (AWS's guidance has no revocation step), or read the clock.

Example::

    from datetime import UTC, datetime
    from donjon.attestation import Endorsements
    from donjon.attestation.nitro import NitroVerifier

    verifier = NitroVerifier.from_embedded_roots()
    result = verifier.verify(document, endorsements=Endorsements(), now=datetime.now(UTC))
    print(result.claims["pcr0"], result.debug)
"""

from __future__ import annotations

from donjon.attestation.nitro.document import AttestationDocument, NitroEvidence, parse_document
from donjon.attestation.nitro.verifier import ROOT_G1_SHA256, NitroVerifier, embedded_root

__all__ = [
    "ROOT_G1_SHA256",
    "AttestationDocument",
    "NitroEvidence",
    "NitroVerifier",
    "embedded_root",
    "parse_document",
]
