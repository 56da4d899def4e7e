"""Object identifiers donjon puts in, or accepts from, CSRs and certificates.

donjon's arc
    donjon has no IANA Private Enterprise Number yet. Its OIDs live under a UUID-based arc
    (ITU-T X.667 / RFC 4122 §4.1: ``2.25.<the UUID as one integer>``), which is globally unique
    without registration, so nothing donjon emits can collide with anyone else's OID::

        DONJON_ARC = 2.25.80901506298258743525833019565025017030
                     (UUID 3cdd1037-e000-4b3e-b822-b12fbcb83cc6, generated once for donjon)

    **Placeholder:** if donjon obtains a PEN, new OIDs move under ``1.3.6.1.4.1.<PEN>`` and
    these stay accepted on input. Assignments under the arc are permanent once released:

    ===========  ===============================  ===============================================
    arc          name                             value (DER extension ``extnValue`` contents)
    ===========  ===============================  ===============================================
    ``.1``       ``DONJON_EVIDENCE``              CBOR map: evidence in a CSR (see
                                                  ``donjon.steward.messages.CsrEvidence``)
    ``.2``       ``DONJON_ATTESTATION_RESULT``    CBOR map: the attestation-result claims Steward
                                                  verified, in every certificate it issues
    ===========  ===============================  ===============================================

Enarx (input only)
    Enarx's keep puts its evidence in one CSR extension under Profian's PEN 58270
    (enarx/enarx ``crates/exec-wasmtime/src/runtime/identity/platform.rs``; enarx/steward
    ``crates/server/src/kvm.rs``, ``crates/attestation/src/{sgx,snp}/mod.rs``):
    ``.1.1`` KVM (empty value), ``.1.2`` SGX, ``.1.3`` SEV-SNP.
"""

from __future__ import annotations

from cryptography import x509

DONJON_ARC = "2.25.80901506298258743525833019565025017030"
"""donjon's UUID-based OID arc (placeholder until a PEN is assigned; see the module docstring)."""

DONJON_EVIDENCE = x509.ObjectIdentifier(f"{DONJON_ARC}.1")
"""CSR extension carrying donjon evidence (CBOR), used by ``POST /`` on Steward."""

DONJON_ATTESTATION_RESULT = x509.ObjectIdentifier(f"{DONJON_ARC}.2")
"""Non-critical certificate extension carrying the verified attestation-result claims (CBOR)."""

ENARX_KVM = x509.ObjectIdentifier("1.3.6.1.4.1.58270.1.1")
"""Enarx KVM/nil "evidence": an empty extension value (no hardware attestation at all)."""

ENARX_SGX = x509.ObjectIdentifier("1.3.6.1.4.1.58270.1.2")
"""Enarx SGX evidence: DER ``SEQUENCE { quote OCTET STRING, crl CrlList, tcb TcbPackage }``."""

ENARX_SNP = x509.ObjectIdentifier("1.3.6.1.4.1.58270.1.3")
"""Enarx SEV-SNP evidence: DER ``SEQUENCE { crts SEQUENCE { vcek, crl CrlList }, report }``."""

ENARX_EVIDENCE = frozenset({ENARX_KVM, ENARX_SGX, ENARX_SNP})
"""Every Enarx evidence OID Steward accepts."""

EXTENSION_REQUEST = x509.ObjectIdentifier("1.2.840.113549.1.9.14")
"""PKCS#9 ``extensionRequest`` CSR attribute (RFC 2985 §5.4.2): the only attribute allowed."""

__all__ = [
    "DONJON_ARC",
    "DONJON_ATTESTATION_RESULT",
    "DONJON_EVIDENCE",
    "ENARX_EVIDENCE",
    "ENARX_KVM",
    "ENARX_SGX",
    "ENARX_SNP",
    "EXTENSION_REQUEST",
]
