"""AWS Nitro Enclaves attestation document verification.

Rule 1: the only trust anchor is the pinned AWS Nitro Enclaves Root-G1 (package data, checked
against AWS's published fingerprint when loaded). ``cabundle[0]`` must be that exact certificate;
a certificate with the same name and another key is a look-alike and is refused.
Rule 2: the chain is validated at the caller's ``now``. Nitro leaf certificates live about three
hours, so old documents are verified at their own time (``now`` = the document's timestamp).
Rule 3: the document signature is checked over the exact bytes received (RFC 9052 §4.4).

Steps of :meth:`NitroVerifier.verify` (numbered in the code and in docs/attestation/nitro.md):

1. parse the COSE_Sign1 and the document, with AWS's syntactical validation (bounded);
2. ``cabundle[0]`` is the pinned root (same DER; a same-name look-alike is named as such);
3. the path leaf → cabundle intermediates → root validates (signatures, CA constraints, path
   length, key usage) with ``cryptography.x509.verification``, using every cabundle certificate;
4. every certificate of that path is valid at ``now``;
5. the document's COSE_Sign1 (ES384) verifies under the leaf's P-384 key;
6. the document timestamp is not after ``now`` (beyond a small clock skew);
7. the result: measurement = PCR0, report data = ``user_data``, debug = PCR0..2 all zero.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from importlib import resources
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from donjon.attestation.nitro.document import AttestationDocument, NitroEvidence, parse_document
from donjon.attestation.result import Endorsements, Platform, VerifiedEvidence
from donjon.crypto.cose import verify_sign1
from donjon.crypto.keyformats import (
    EcPublicKey,
    KeyFormatError,
    certificate_der,
    certificate_public_key,
    curve_name,
    public_key_der,
)
from donjon.errors import ChainError, EvidenceFormatError, FreshnessError

_logger = logging.getLogger(__name__)

ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
"""SHA-256 of the DER of AWS Nitro Enclaves Root-G1, as AWS publishes it
(https://docs.aws.amazon.com/enclaves/latest/user/verify-root.html); see roots/PROVENANCE.md."""
ROOT_G1_RESOURCE = "aws-nitro-enclaves-root-g1.pem"
MAX_CHAIN_DEPTH = 8
"""Longest path accepted (certificates below the root); AWS paths have 4."""
MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far the document timestamp may lie after ``now``: NSM and verifier clocks differ a little."""
CHAIN_CACHE_ENTRIES = 1024
"""Validated chains remembered (count), keyed by their exact DER bytes (see _validated_window)."""
LEAF_CURVE = "P-384"
"""The NSM signs with ES384, so the leaf key is P-384 (NSM API)."""


@dataclass(frozen=True, slots=True)
class _Window:
    """When a validated chain is usable: the intersection of its certificates' validity."""

    not_before: datetime
    not_after: datetime


class NitroVerifier:
    """Verifies AWS Nitro Enclaves attestation documents.

    Example:
        >>> from datetime import UTC, datetime
        >>> verifier = NitroVerifier.from_embedded_roots()
        >>> result = verifier.verify(doc, endorsements=Endorsements(), now=datetime.now(UTC))
        ... # doctest: +SKIP
        >>> result.claims["pcr0"]  # doctest: +SKIP

    Args:
        root: the trust anchor. Production code uses :meth:`from_embedded_roots`; tests may
            pass their own root to verify documents from a test PKI.

    Raises:
        ChainError: *root* is not a self-signed CA certificate with a P-384 key.
    """

    platform: Platform = Platform.NITRO

    def __init__(self, *, root: x509.Certificate) -> None:
        try:
            key = certificate_public_key(root, what="Nitro root")
            root.verify_directly_issued_by(root)
        except (KeyFormatError, InvalidSignature, *_X509_ERRORS) as e:
            raise ChainError(f"Nitro root {root.subject.rfc4514_string()}: not usable: {e}") from e
        if curve_name(key) != LEAF_CURVE:
            raise ChainError("Nitro root: expected a P-384 key (AWS Nitro Enclaves Root-G1)")
        self._root = root
        self._root_der = certificate_der(root)
        self._root_spki = public_key_der(key)

    @classmethod
    def from_embedded_roots(cls) -> NitroVerifier:
        """A verifier anchored at the embedded AWS Nitro Enclaves Root-G1.

        Raises:
            ChainError: the packaged root does not match AWS's published fingerprint.
        """
        return cls(root=embedded_root())

    @property
    def root(self) -> x509.Certificate:
        """The trust anchor."""
        return self._root

    def verify(
        self, evidence: bytes, *, endorsements: Endorsements, now: datetime
    ) -> VerifiedEvidence:
        """Verify a Nitro attestation document at time *now*.

        Args:
            evidence: the document (COSE_Sign1, untagged or tag 18) as received.
            endorsements: not used: the document carries its whole chain.
            now: the verification time (aware UTC). Leaf certificates live ~3 hours.
                A naive datetime is a programming error (``TypeError``).

        Returns:
            The authentic document's claims.

        Raises:
            EvidenceFormatError: malformed document, or certificates that do not parse.
            ChainError: ``cabundle[0]`` is not the pinned root, or the path does not validate.
            FreshnessError: a certificate is expired or not yet valid at *now*, or the document
                is dated after *now*.
            SignatureError: the document signature does not verify under the leaf key.
        """
        del endorsements  # the document carries its chain; there is nothing to add
        if now.tzinfo is None:
            raise TypeError("now must be an aware datetime (UTC), not a naive one")
        # (1) Parse with AWS's syntactical validation.
        parsed = parse_document(evidence)
        doc = parsed.document

        # (2) cabundle[0] is the pinned root, byte for byte.
        if not hmac.compare_digest(doc.cabundle[0], self._root_der):
            raise ChainError(self._describe_foreign_root(doc.cabundle[0]))

        # (3) The path validates. The result is cached by the exact DER bytes, with the window
        # in which all its certificates are valid (see _validated_window).
        window = _validated_window(self._root_der, doc.certificate, doc.cabundle[1:])
        # (4) `now` lies inside that window (RFC 5280 §4.1.2.5 for each certificate).
        if not window.not_before <= now <= window.not_after:
            raise FreshnessError(_describe_validity(doc, now))

        # (5) The document signature under the leaf key (ES384).
        verify_sign1(parsed.message, _leaf_key(doc.certificate), what="Nitro attestation document")

        # (6) Not from the future.
        if doc.timestamp > now + MAX_CLOCK_SKEW:
            raise FreshnessError(
                f"Nitro attestation document is dated {doc.timestamp.isoformat()}, after the "
                f"verification time {now.isoformat()} (+{MAX_CLOCK_SKEW}); check the clock or --at"
            )

        # (7) The result.
        _logger.debug("Nitro document verified: module %s", doc.module_id)
        return _result(parsed)

    def _describe_foreign_root(self, der: bytes) -> str:
        pinned = self._root.subject.rfc4514_string()
        try:
            cert = _load_cert(der, "cabundle[0]")
            subject = cert.subject.rfc4514_string()
            same_name = cert.subject == self._root.subject
            spki = public_key_der(certificate_public_key(cert, what="cabundle[0]"))
        except EvidenceFormatError as e:  # KeyFormatError included
            return f"Nitro cabundle[0] is not the pinned root {pinned}: {e.message}"
        except _X509_ERRORS as e:  # lazily parsed fields
            return f"Nitro cabundle[0] is not the pinned root {pinned}: unreadable: {e}"
        if same_name:
            what = "another key" if spki != self._root_spki else "the same key"
            return (
                f"Nitro cabundle[0] is a look-alike root: it is named {subject} like the pinned "
                f"AWS Nitro Enclaves Root-G1 but is a different certificate with {what} "
                f"(SHA-256 {hashlib.sha256(der).hexdigest()}, pinned {ROOT_G1_SHA256}); "
                "the document does not chain to AWS"
            )
        return (
            f"Nitro cabundle[0] is {subject}, not the pinned root {pinned}; "
            "the document does not chain to it"
        )


def embedded_root() -> x509.Certificate:
    """The packaged AWS Nitro Enclaves Root-G1, checked against its published fingerprint.

    Raises:
        ChainError: the packaged file is missing or differs from AWS's published root.
    """
    return _embedded_root()


@lru_cache(maxsize=1)
def _embedded_root() -> x509.Certificate:
    try:
        pem = resources.files(__package__).joinpath("roots", ROOT_G1_RESOURCE).read_bytes()
        root = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as e:
        raise ChainError(f"the embedded AWS Nitro root cannot be read: {e}") from e
    fingerprint = hashlib.sha256(certificate_der(root)).hexdigest()
    if not hmac.compare_digest(fingerprint, ROOT_G1_SHA256):
        raise ChainError(
            f"the embedded AWS Nitro root has SHA-256 {fingerprint}, not AWS's published "
            f"{ROOT_G1_SHA256}; the package is damaged or was tampered with"
        )
    return root


# --- chain validation ------------------------------------------------------------------------


_X509_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    # A warning for hostile input (e.g. a non-positive serial); an exception when warnings are
    # errors (``-W error``, pytest's filterwarnings), and then it must not escape.
    CryptographyDeprecationWarning,
)
"""What ``cryptography`` raises for malformed certificates, some of it only when a field is read."""


@lru_cache(maxsize=4 * CHAIN_CACHE_ENTRIES)
def _load_cert(der: bytes, name: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except _X509_ERRORS as e:
        raise EvidenceFormatError(f"Nitro {name}: not a DER X.509 certificate: {e}") from e


def _ee_basic_constraints(_policy: Policy, _cert: x509.Certificate, ext: Any) -> None:
    if not isinstance(ext, x509.BasicConstraints) or ext.ca:
        raise ValueError("the Nitro leaf must not be a CA (basicConstraints cA=FALSE)")


def _ee_key_usage(_policy: Policy, _cert: x509.Certificate, ext: Any) -> None:
    if not isinstance(ext, x509.KeyUsage) or not ext.digital_signature:
        raise ValueError("the Nitro leaf key must allow digitalSignature")


def _ee_policy() -> ExtensionPolicy:
    # The web-PKI end-entity profile requires an authorityKeyIdentifier (and, for servers, a
    # SAN); AWS's Nitro leaf certificates have neither, and the PolicyBuilder rejected the real
    # chains with "missing required extension: 2.5.29.35". So the leaf gets its own policy:
    # anything may be present (the leaf is the NSM's), but it must be a non-CA certificate
    # whose key may sign. CA certificates keep the stock web-PKI CA policy, which the AWS
    # intermediates satisfy (basicConstraints, keyUsage keyCertSign, AKI/SKI).
    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _ee_basic_constraints)
        .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _ee_key_usage)
    )


@lru_cache(maxsize=CHAIN_CACHE_ENTRIES)
def _validated_window(
    root_der: bytes, leaf_der: bytes, intermediates: tuple[bytes, ...]
) -> _Window:
    """Validate leaf → intermediates → root and return when the result holds.

    Path validation depends on time only through each certificate's validity period (no CRL
    or OCSP is consulted), so a path that validates at one instant of the intersection of
    those periods validates at every instant of it. That makes the result safe to cache by the
    exact DER bytes, with the caller checking its own ``now`` against the window. Failures are
    not cached (``lru_cache`` does not store exceptions).

    Raises:
        EvidenceFormatError: a certificate does not parse.
        ChainError: the path does not validate, or no instant exists when all are valid.
    """
    root = _load_cert(root_der, "root")
    leaf = _load_cert(leaf_der, "certificate")
    chain = [_load_cert(d, f"cabundle[{i + 1}]") for i, d in enumerate(intermediates)]
    certs = [root, *chain, leaf]
    try:
        window = _Window(
            not_before=max(c.not_valid_before_utc for c in certs),
            not_after=min(c.not_valid_after_utc for c in certs),
        )
    except _X509_ERRORS as e:  # parsed lazily by cryptography
        raise EvidenceFormatError(f"Nitro certificate validity cannot be read: {e}") from e
    if window.not_before > window.not_after:
        raise ChainError(
            "Nitro certificate chain: its certificates are never valid at the same time"
        )
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(window.not_before)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_ee_policy())
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, chain)
    except (VerificationError, *_X509_ERRORS) as e:
        raise ChainError(
            f"Nitro certificate chain does not validate to the pinned root: {e}"
        ) from e
    # The builder may pick any path through the pool; AWS's cabundle *is* the path, so insist
    # that every certificate in it was used (nothing unexplained rides along).
    if len(verified.chain) != len(certs):
        raise ChainError(
            f"Nitro cabundle holds {len(intermediates)} intermediates but the validated path "
            f"uses {len(verified.chain) - 2}; the bundle must be exactly the path"
        )
    return window


@lru_cache(maxsize=CHAIN_CACHE_ENTRIES)
def _leaf_key(der: bytes) -> EcPublicKey:
    # Cached by exact DER: a key object is immutable, and reusing it spares OpenSSL a key
    # import per document.
    key = certificate_public_key(_load_cert(der, "certificate"), what="Nitro leaf certificate")
    if curve_name(key) != LEAF_CURVE:
        raise ChainError(f"Nitro leaf certificate: a {curve_name(key)} key, not {LEAF_CURVE}")
    return key


@lru_cache(maxsize=CHAIN_CACHE_ENTRIES)
def _subject(der: bytes) -> str:
    # Only called for a certificate that validated, so its name parses.
    return _load_cert(der, "certificate").subject.rfc4514_string()


def _describe_validity(doc: AttestationDocument, now: datetime) -> str:
    named = [("certificate (leaf)", doc.certificate)] + [
        (f"cabundle[{i}]", d) for i, d in enumerate(doc.cabundle)
    ]
    for name, der in named:
        cert = _load_cert(der, name)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if now < start or now > end:
            state = "not yet valid" if now < start else "expired"
            return (
                f"Nitro {name} {cert.subject.rfc4514_string()} is {state} at {now.isoformat()} "
                f"(valid {start.isoformat()} to {end.isoformat()}); Nitro leaf certificates "
                "live about 3 hours: verify at the document's time "
                f"({doc.timestamp.isoformat()}, e.g. --at) or request a fresh document"
            )
    return f"Nitro certificate chain is not valid at {now.isoformat()}"


# --- result ----------------------------------------------------------------------------------


def _hex_or_none(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _result(parsed: NitroEvidence) -> VerifiedEvidence:
    doc = parsed.document
    if 0 not in doc.pcrs:
        raise EvidenceFormatError(
            "Nitro attestation document: PCR0 (the image measurement) is missing"
        )
    zero = bytes(len(doc.pcrs[0]))
    # Enclaves started in debug mode get attestation documents whose PCRs are all zeros (AWS
    # Nitro Enclaves User Guide, debug mode); PCR0..2 are the image, kernel and application.
    debug = all(doc.pcrs.get(i, zero) == zero for i in (0, 1, 2))
    claims: dict[str, Any] = {
        "module_id": doc.module_id,
        "timestamp": doc.timestamp.isoformat(),
        "timestamp_ms": doc.timestamp_ms,
        "digest": doc.digest,
        "pcrs": {str(i): v.hex() for i, v in doc.pcrs.items()},
        **{f"pcr{i}": _hex_or_none(doc.pcrs.get(i)) for i in (0, 1, 2, 3, 4, 8)},
        "nonce": _hex_or_none(doc.nonce),
        "user_data": _hex_or_none(doc.user_data),
        "public_key": _hex_or_none(doc.public_key),
        "cabundle_len": len(doc.cabundle),
        "certificate_subject": _subject(doc.certificate),
    }
    return VerifiedEvidence(
        platform=Platform.NITRO,
        measurement=doc.pcrs[0],
        report_data=doc.user_data or b"",
        debug=debug,
        claims=claims,
    )


__all__ = [
    "CHAIN_CACHE_ENTRIES",
    "MAX_CLOCK_SKEW",
    "ROOT_G1_SHA256",
    "NitroVerifier",
    "embedded_root",
]
