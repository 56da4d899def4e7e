"""AMD SEV-SNP signature primitives: RSA-PSS on AMD's certificates, ECDSA P-384 on reports.

.. warning:: This module wraps ``cryptography.hazmat``. It exists so that
   ``donjon.attestation.snp`` can check AMD's signatures without importing primitives itself.

Does: verify the RSASSA-PSS signatures (SHA-384, MGF1-SHA-384, 48-byte salt) that AMD's Key
Distribution Service puts on ARK, ASK/ASVK, VCEK/VLEK certificates and CRLs; load and check a
VCEK/VLEK P-384 key; verify a report signature whose R and S are 72-byte little-endian fields;
fingerprint public keys.
Does not: decide which certificate to trust, parse reports, or read the clock
(``donjon.attestation.snp`` does that).

Why not ``cryptography.x509.verification.PolicyBuilder``: it was tried on the real AMD chains
(cryptography 50) and refuses them with "Forbidden signature algorithm" for AMD's RSA-PSS
parameters, and its CA/EE profiles are the Web PKI's. AMD's hierarchy is fixed (ARK → ASK → VCEK,
three certificates), so the checks are done explicitly here and in ``donjon.attestation.snp``.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import SignatureAlgorithmOID

from donjon.crypto.signatures import spki_der, verify_rsa_pss
from donjon.errors import ChainError, SignatureError

AMD_PSS_SALT_BYTES = 48  # bytes: AMD signs with a salt as long as the SHA-384 digest
REPORT_SIGNATURE_COMPONENT_BYTES = 72  # bytes per R and per S, little-endian, zero-extended
_P384_ORDER_BYTES = 48  # bytes: the P-384 group order fits in 384 bits
_HIGH_ZEROS = bytes(REPORT_SIGNATURE_COMPONENT_BYTES - _P384_ORDER_BYTES)
_DER_BIT_STRING = 0x03
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())

__all__ = [
    "AMD_PSS_SALT_BYTES",
    "REPORT_SIGNATURE_COMPONENT_BYTES",
    "ReportSigningKey",
    "der_bytes",
    "spki_sha256",
    "verify_amd_certificate_signature",
    "verify_amd_crl_signature",
]


def _check_amd_pss(
    oid: x509.ObjectIdentifier, hash_algorithm: hashes.HashAlgorithm | None, what: str
) -> None:
    if oid != SignatureAlgorithmOID.RSASSA_PSS or not isinstance(hash_algorithm, hashes.SHA384):
        raise SignatureError(
            f"{what}: signed with {oid.dotted_string}, not RSASSA-PSS with SHA-384 as AMD signs"
        )


def _rsa_key(issuer: x509.Certificate, what: str) -> rsa.RSAPublicKey:
    try:
        key = issuer.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ChainError(f"{what}: the issuer's public key cannot be loaded: {e}") from e
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChainError(f"{what}: the issuer's key is not an RSA key, as AMD's ARK and ASK are")
    return key


def _signature_hash(
    obj: x509.Certificate | x509.CertificateRevocationList,
) -> hashes.HashAlgorithm | None:
    try:
        return obj.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content offset, end offset) of the DER element at *offset*."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or start + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("DER element overruns its container")
    return tag, start, start + length


def _outer_fields_sound(der: bytes, *, skip_tags: tuple[int, ...]) -> bool:
    """Whether the unsigned parts of a certificate or CRL are the canonical ones.

    The outer AlgorithmIdentifier must equal the signed one inside the TBS (RFC 5280 §4.1.1.2
    for certificates, §5.1.1.2 for CRLs), and the signature BIT STRING must have no unused
    bits; ``cryptography`` checks neither, so without this a signed object would have several
    encodings. *skip_tags* are the TBS fields before ``signature``: [0] version and the serial
    number for certificates, the version for CRLs.
    """
    _, body, end = _tlv(der, 0)
    _, tbs_body, tbs_end = _tlv(der, body)
    _, _, outer_end = _tlv(der, tbs_end)
    bit_tag, bits, bits_end = _tlv(der, outer_end)
    if bits_end != end or bit_tag != _DER_BIT_STRING or bits == bits_end or der[bits] != 0:
        return False
    offset = tbs_body
    for tag in skip_tags:
        found, _, after = _tlv(der, offset)
        if found == tag:
            offset = after
    _, _, inner_end = _tlv(der, offset)
    return der[offset:inner_end] == der[tbs_end:outer_end]


def _check_outer_fields(obj: x509.Certificate | x509.CertificateRevocationList, what: str) -> None:
    der = obj.public_bytes(Encoding.DER)
    skip = (0xA0, 0x02) if isinstance(obj, x509.Certificate) else (0x02,)
    try:
        sound = _outer_fields_sound(der, skip_tags=skip)
    except ValueError as e:
        raise SignatureError(f"{what}: malformed DER: {e}") from None
    if not sound:
        raise SignatureError(
            f"{what}: the unsigned signatureAlgorithm or signature encoding is not the canonical "
            "one (RFC 5280); the certificate was altered"
        )


def verify_amd_certificate_signature(
    cert: x509.Certificate, issuer: x509.Certificate, *, what: str
) -> None:
    """Verify that *issuer* signed *cert* with AMD's RSASSA-PSS SHA-384 / 48-byte salt.

    The salt length is fixed rather than read from the certificate, so a certificate re-signed
    with other PSS parameters does not verify; the unsigned outer algorithm field must repeat
    the signed one byte for byte.

    Raises:
        SignatureError: another algorithm, differing algorithm fields, or a signature that does
            not verify.
        ChainError: *issuer* has no RSA key.
    """
    _check_amd_pss(cert.signature_algorithm_oid, _signature_hash(cert), what)
    _check_outer_fields(cert, what)
    verify_rsa_pss(
        _rsa_key(issuer, what),
        cert.signature,
        cert.tbs_certificate_bytes,
        hash_name="sha384",
        salt_length=AMD_PSS_SALT_BYTES,
        what=what,
    )


def verify_amd_crl_signature(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, *, what: str
) -> None:
    """Verify that *issuer* (an ARK or ASK) signed *crl* with AMD's RSASSA-PSS parameters.

    Raises:
        SignatureError: another algorithm, or a signature that does not verify.
        ChainError: *issuer* has no RSA key.
    """
    _check_amd_pss(crl.signature_algorithm_oid, _signature_hash(crl), what)
    _check_outer_fields(crl, what)
    verify_rsa_pss(
        _rsa_key(issuer, what),
        crl.signature,
        crl.tbs_certlist_bytes,
        hash_name="sha384",
        salt_length=AMD_PSS_SALT_BYTES,
        what=what,
    )


def der_bytes(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """The DER encoding of a certificate or CRL (cache keys, pinning)."""
    return obj.public_bytes(Encoding.DER)


def spki_sha256(cert: x509.Certificate) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo of *cert*: how roots are pinned.

    Raises:
        ChainError: the public key cannot be loaded.
    """
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ChainError(f"certificate {cert.subject.rfc4514_string()}: bad public key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ChainError(
            f"certificate {cert.subject.rfc4514_string()}: key type {type(key).__name__} "
            "is not used in AMD's PKI"
        )
    return hashlib.sha256(spki_der(key)).digest()


class ReportSigningKey:
    """The ECDSA P-384 public key of a VCEK or VLEK, ready to check report signatures.

    Built once per certificate and cached by the verifier, so that a report costs one ECDSA
    verification and nothing more.
    """

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self._key = key

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, *, what: str) -> ReportSigningKey:
        """The P-384 key of a VCEK/VLEK certificate.

        Raises:
            ChainError: the key is not an EC key on P-384 (SNP ABI: reports are signed with
                ECDSA P-384 SHA-384).
        """
        try:
            key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm) as e:
            raise ChainError(f"{what}: the public key cannot be loaded: {e}") from e
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP384R1
        ):
            raise ChainError(f"{what}: the key is not ECDSA P-384, as every VCEK and VLEK is")
        return cls(key)

    def verify_report(self, signed: bytes, r_le: bytes, s_le: bytes, *, what: str) -> None:
        """Verify an SNP report signature over exactly *signed* (report bytes 0x000-0x29F).

        Args:
            signed: the signed part of the report.
            r_le: the 72-byte little-endian R field.
            s_le: the 72-byte little-endian S field.
            what: names the report in error messages.

        Raises:
            SignatureError: wrong field sizes, R or S out of range, or no match.
        """
        if len(r_le) != REPORT_SIGNATURE_COMPONENT_BYTES or len(s_le) != len(r_le):
            raise SignatureError(
                f"{what}: R and S must be {REPORT_SIGNATURE_COMPONENT_BYTES} bytes"
            )
        # Bytes past the 48th can only be zero for a genuine P-384 signature; refusing them here
        # keeps the one signature from having many byte encodings.
        # Compared with zeros rather than any(), which walks the bytes one by one.
        if r_le[_P384_ORDER_BYTES:] != _HIGH_ZEROS or s_le[_P384_ORDER_BYTES:] != _HIGH_ZEROS:
            raise SignatureError(f"{what}: R or S exceeds 384 bits; the signature is not genuine")
        r = int.from_bytes(r_le, "little")
        s = int.from_bytes(s_le, "little")
        if not r or not s:
            raise SignatureError(f"{what}: the signature is all zeros (R or S is zero)")
        try:
            # The algorithm object is built once: constructing ec.ECDSA costs a few percent of
            # the verification itself, and this is the one per-report cryptographic operation.
            self._key.verify(encode_dss_signature(r, s), signed, _ECDSA_SHA384)
        except InvalidSignature:
            raise SignatureError(f"{what}: ECDSA signature does not verify") from None
