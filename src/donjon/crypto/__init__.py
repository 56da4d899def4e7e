"""Keys, signatures, COSE signing, certificates and CSRs.

.. warning:: This is the only package that imports ``cryptography.hazmat``. Its functions take and
   return bytes and ``cryptography.x509`` objects so the rest of donjon never touches primitives.

Does: generate and load keys, sign and verify (ECDSA, RSA-PSS, COSE_Sign1), build certificates.
Does not: decide what to trust (that is ``donjon.attestation`` and its policies) or do I/O.
"""

from __future__ import annotations
