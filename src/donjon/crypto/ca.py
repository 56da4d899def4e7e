"""Steward's certificate authority: CA keys and certificates, CSRs, and leaf issuance.

.. warning:: This module holds private keys. It never logs them, never puts them in a
   ``repr``, and hands them out only as PEM through :meth:`CertificateAuthority.private_key_pem`
   and :meth:`KeyPair.private_key_pem`, for the caller to store (mode 0600) or load into TLS.

Rule 1: a CSR is parsed whole and checked (signature, key type, attributes, extensions) before
any of its content is used; what it asks for is only a request, never copied blindly into a
certificate (the subject is not copied; SANs are copied only as the caller decides).
Rule 2: no clock: every function that needs the time takes ``now`` (UTC).
Rule 3: errors are ``donjon.errors`` subclasses: ``DecodeError`` for bytes that are not a CSR,
``SignatureError`` for a CSR whose signature fails, ``ConfigError`` for an unusable CA.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from donjon.crypto.cose import sign1, verify_sign1
from donjon.crypto.oids import EXTENSION_REQUEST
from donjon.crypto.signatures import spki_der
from donjon.errors import ConfigError, DecodeError, SignatureError
from donjon.wire.cose import HEADER_KID, decode_sign1

MAX_CSR_BYTES = 256 * 1024
"""Largest CSR accepted (bytes). An SGX quote with its collateral in an Enarx CSR is ~20 KiB."""

MAX_DNS_NAME_CHARS = 253
"""RFC 1035 §2.3.4: the longest DNS name, in characters."""

CA_LIFETIME = timedelta(days=5 * 365)
"""Validity of a newly created Steward CA certificate. Rotation is manual (``steward init``)."""

BACKDATE = timedelta(minutes=5)
"""How far ``notBefore`` is set before ``now`` on issued certificates: absorbs relying parties'
clock skew so a fresh certificate is not "not yet valid" on a slightly slow client."""

_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_SIGNATURE_HASHES = frozenset({"sha256", "sha384", "sha512"})
_ECDSA_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_HKDF_SALT = b"donjon/steward/hkdf-salt/v1"


def _curve_name(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    return _CURVE_NAMES.get(key.curve.name, key.curve.name)


def _hash_for(key: ec.EllipticCurvePrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    # Match the hash strength to the curve (RFC 5480 §4; CNSA: P-384 with SHA-384).
    size = key.curve.key_size
    if size <= 256:
        return hashes.SHA256()
    if size <= 384:
        return hashes.SHA384()
    return hashes.SHA512()


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now.astimezone(UTC)


def is_dns_name(name: str) -> bool:
    """Whether *name* is a syntactically valid lowercase DNS host name (LDH labels, no wildcard)."""
    if not name or len(name) > MAX_DNS_NAME_CHARS or name.endswith("."):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return False
    return all(_DNS_LABEL.match(label) for label in name.split("."))


# ---------------------------------------------------------------------------------------------
# Key pairs (for Keeps and clients that need a CSR)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An EC key pair. The private half stays inside; ``repr`` never shows it."""

    _key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls, curve: str = "P-384") -> KeyPair:
        """A fresh key on *curve* ("P-256", "P-384" or "P-521")."""
        try:
            return cls(ec.generate_private_key(_CURVES[curve]))
        except KeyError:
            raise ConfigError(f"unsupported curve {curve!r}; use P-256, P-384 or P-521") from None

    @classmethod
    def from_pem(cls, pem: bytes, *, what: str = "private key") -> KeyPair:
        """Load an unencrypted PKCS#8 or SEC1 PEM EC private key.

        Raises:
            ConfigError: not an EC private key PEM.
        """
        key = _load_ec_private_key(pem, what=what)
        return cls(key)

    @property
    def curve(self) -> str:
        """The curve name ("P-384", ...)."""
        return _curve_name(self._key)

    @property
    def spki_der(self) -> bytes:
        """DER SubjectPublicKeyInfo of the public half."""
        return spki_der(self._key.public_key())

    def private_key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM, for the caller to protect."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def csr(
        self,
        *,
        dns_names: Sequence[str] = (),
        uris: Sequence[str] = (),
        extensions: Sequence[tuple[x509.ObjectIdentifier, bytes]] = (),
    ) -> bytes:
        """A DER PKCS#10 CSR for this key, empty subject, with optional SANs and raw extensions.

        Args:
            dns_names: DNS SANs to request.
            uris: URI SANs to request (e.g. ``donjon:workload:sha256:<hex>``).
            extensions: (OID, DER value) pairs added as non-critical extensions, e.g. evidence.
        """
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        for oid, value in extensions:
            builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
        csr = builder.sign(self._key, _hash_for(self._key))
        return csr.public_bytes(serialization.Encoding.DER)


def _load_ec_private_key(pem: bytes, *, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ConfigError(f"{what} is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{what} is a {type(key).__name__}, expected an EC private key")
    return key


# ---------------------------------------------------------------------------------------------
# CSRs


@dataclass(frozen=True, slots=True)
class RequestedExtension:
    """An extension a CSR asked for, other than subjectAltName, as raw DER."""

    oid: str
    critical: bool
    value: bytes


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """A parsed PKCS#10 CSR whose signature has been verified.

    Attributes:
        der: the CSR bytes as received.
        spki_der: DER SubjectPublicKeyInfo of the requesting key (what evidence must bind).
        curve: the key's curve ("P-256", "P-384", "P-521").
        dns_names: DNS SANs requested, lowercased, in order.
        uris: URI SANs requested, in order.
        extensions: every other requested extension, in order.
        public_key: the loaded key (opaque outside ``donjon.crypto``; saves re-parsing the SPKI).
    """

    der: bytes
    spki_der: bytes
    curve: str
    dns_names: tuple[str, ...]
    uris: tuple[str, ...]
    extensions: tuple[RequestedExtension, ...]
    public_key: ec.EllipticCurvePublicKey = field(repr=False, compare=False)

    def extension(self, oid: str) -> RequestedExtension | None:
        """The requested extension with this dotted OID, if any."""
        for ext in self.extensions:
            if ext.oid == oid:
                return ext
        return None


def parse_csr(der: bytes, *, max_bytes: int = MAX_CSR_BYTES) -> CertificateRequest:
    """Parse and check a DER PKCS#10 CSR.

    Checks, in order: size; DER structure; signature algorithm (ECDSA with SHA-2) and the
    self-signature over the exact bytes (RFC 2986 §3: proof of possession of the key); key type
    (EC P-256/384/521); only the ``extensionRequest`` attribute; no duplicate extensions.

    Raises:
        DecodeError: not a well-formed CSR, or one outside these rules.
        SignatureError: the CSR's signature does not verify with its own key.
    """
    if len(der) > max_bytes:
        raise DecodeError(f"CSR is {len(der)} bytes; the limit is {max_bytes} bytes")
    try:
        csr = x509.load_der_x509_csr(der)
    except (ValueError, x509.InvalidVersion) as e:
        raise DecodeError(f"CSR is not a DER PKCS#10 certification request: {e}") from e
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise DecodeError(f"CSR public key cannot be loaded: {e}") from e
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise DecodeError(
            f"CSR key is {type(public_key).__name__}; Steward issues only for EC keys "
            "(P-256, P-384, P-521)"
        )
    curve = _curve_name(public_key)
    if curve not in _CURVES:
        raise DecodeError(f"CSR key is on {curve}; use P-256, P-384 or P-521")
    try:
        hash_alg = csr.signature_hash_algorithm
    except UnsupportedAlgorithm as e:
        raise DecodeError(f"CSR signature algorithm is not supported: {e}") from e
    if hash_alg is None or hash_alg.name not in _SIGNATURE_HASHES:
        name = None if hash_alg is None else hash_alg.name
        raise DecodeError(f"CSR is signed with hash {name!r}; use SHA-256, SHA-384 or SHA-512")
    if csr.signature_algorithm_oid not in _ECDSA_SIGNATURES:
        raise DecodeError(
            f"CSR signature algorithm {csr.signature_algorithm_oid.dotted_string} is not ECDSA "
            "with SHA-2, which an EC key needs"
        )
    # RFC 2986 §3: the signature over the exact CertificationRequestInfo bytes, with the key
    # loaded above (``is_signature_valid`` would load it a second time).
    tbs = csr.tbs_certrequest_bytes
    try:
        public_key.verify(csr.signature, tbs, ec.ECDSA(hash_alg))
    except InvalidSignature:
        raise SignatureError(
            "CSR signature does not verify with the CSR's own key (the request was altered, or "
            "signed with another key)"
        ) from None
    try:
        attributes = list(csr.attributes)
        extensions = list(csr.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as e:
        raise DecodeError(f"CSR attributes or extensions are malformed: {e}") from e
    for attribute in attributes:
        if attribute.oid != EXTENSION_REQUEST:
            raise DecodeError(
                f"CSR attribute {attribute.oid.dotted_string} is not allowed; only "
                "extensionRequest (1.2.840.113549.1.9.14) may appear"
            )
    dns_names: list[str] = []
    uris: list[str] = []
    others: list[RequestedExtension] = []
    for ext in extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName):
            for name in ext.value:
                if isinstance(name, x509.DNSName):
                    dns_names.append(name.value.lower())
                elif isinstance(name, x509.UniformResourceIdentifier):
                    uris.append(name.value)
                else:
                    raise DecodeError(
                        f"CSR subjectAltName of type {type(name).__name__} is not supported; "
                        "request DNS names and URIs only"
                    )
        else:
            others.append(
                RequestedExtension(ext.oid.dotted_string, ext.critical, ext.value.public_bytes())
            )
    return CertificateRequest(
        der=bytes(der),
        spki_der=_canonical_spki(tbs, public_key),
        curve=curve,
        dns_names=tuple(dns_names),
        uris=tuple(uris),
        extensions=tuple(others),
        public_key=public_key,
    )


def _der_element(data: bytes, pos: int) -> tuple[int, int, int]:
    """The DER element at *pos*: (tag, content start, content end). ValueError if malformed."""
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        if not 1 <= size <= 4 or pos + size > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    if pos + length > len(data):
        raise ValueError("truncated")
    return tag, pos, pos + length


def _spki_in_request_info(tbs: bytes) -> bytes:
    """The subjectPKInfo element of a DER CertificationRequestInfo (RFC 2986 §4.1)::

    CertificationRequestInfo ::= SEQUENCE { version INTEGER, subject Name,
                                            subjectPKInfo SubjectPublicKeyInfo, attributes [0] }
    """
    tag, pos, end = _der_element(tbs, 0)
    if tag != 0x30:
        raise ValueError("not a SEQUENCE")
    tag, _, pos = _der_element(tbs, pos)  # version
    if tag != 0x02:
        raise ValueError("no version")
    tag, _, pos = _der_element(tbs, pos)  # subject
    if tag != 0x30:
        raise ValueError("no subject")
    tag, _, spki_end = _der_element(tbs, pos)
    if tag != 0x30 or spki_end > end:
        raise ValueError("no subjectPKInfo")
    return tbs[pos:spki_end]


_SPKI_PREFIXES: dict[str, bytes] = {}


def _canonical_spki(tbs: bytes, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """``spki_der(public_key)`` without asking OpenSSL to encode the key (~50 µs, most of a
    CSR's cost after its signature): the CSR's own SPKI bytes, when they are exactly the
    canonical encoding (named curve, uncompressed point). Anything else is re-encoded."""
    n = (public_key.curve.key_size + 7) // 8
    prefix = _SPKI_PREFIXES.get(public_key.curve.name)
    if prefix is None:
        canonical = spki_der(public_key)
        # The fixed part: SEQUENCE and AlgorithmIdentifier headers, BIT STRING header, 0x04.
        _SPKI_PREFIXES[public_key.curve.name] = canonical[: -2 * n]
        return canonical
    try:
        raw = _spki_in_request_info(tbs)
    except ValueError:
        return spki_der(public_key)
    # The prefix fixes the curve and the uncompressed form; DER then leaves one encoding of the
    # point the key was loaded from, so these bytes are what spki_der(public_key) would give.
    if len(raw) == len(prefix) + 2 * n and raw.startswith(prefix):
        return raw
    return spki_der(public_key)


# ---------------------------------------------------------------------------------------------
# The CA


@dataclass(frozen=True, slots=True)
class LeafProfile:
    """What goes into one issued certificate, decided by Steward's core (never by the client).

    Attributes:
        spki_der: the Keep's public key (from the verified CSR).
        common_name: the subject CN (a DNS-style Keep name).
        dns_names: DNS SANs, already checked against policy.
        uris: URI SANs (the workload identity).
        not_before, not_after: validity (UTC).
        extensions: (OID, DER value) non-critical extensions, e.g. the attestation result.
        public_key: the loaded form of ``spki_der`` if the caller has it (a
            ``CertificateRequest.public_key``); it must be the same key.
    """

    spki_der: bytes
    common_name: str
    dns_names: tuple[str, ...]
    uris: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    extensions: tuple[tuple[x509.ObjectIdentifier, bytes], ...] = ()
    public_key: ec.EllipticCurvePublicKey | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """Steward's signing CA: a P-384 key and its self-signed certificate.

    Build with :meth:`create` or :meth:`load`; ``repr`` shows only the certificate subject.
    """

    certificate: x509.Certificate
    _key: ec.EllipticCurvePrivateKey = field(repr=False)
    _aki: x509.AuthorityKeyIdentifier = field(init=False, repr=False, compare=False)
    _key_id: bytes = field(init=False, repr=False, compare=False)
    _not_valid_before: datetime = field(init=False, repr=False, compare=False)
    _not_valid_after: datetime = field(init=False, repr=False, compare=False)
    _subject: x509.Name = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once, not per certificate: every issued certificate carries the AKI, every
        # result the key id (encoding a key costs OpenSSL ~50 µs), and issuance reads the
        # validity twice.
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        object.__setattr__(
            self, "_aki", x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        )
        object.__setattr__(self, "_key_id", hashlib.sha256(_cert_spki(self.certificate)).digest())
        object.__setattr__(self, "_not_valid_before", self.certificate.not_valid_before_utc)
        object.__setattr__(self, "_not_valid_after", self.certificate.not_valid_after_utc)
        object.__setattr__(self, "_subject", self.certificate.subject)

    @classmethod
    def create(
        cls,
        *,
        now: datetime,
        common_name: str = "donjon Steward CA",
        lifetime: timedelta = CA_LIFETIME,
    ) -> CertificateAuthority:
        """A new P-384 key and self-signed CA certificate valid from *now* for *lifetime*.

        The CA may sign end-entity certificates only (pathLenConstraint 0).
        """
        now = _utc(now)
        key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "donjon"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, hashes.SHA384())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, key_pem: bytes, cert_pem: bytes) -> CertificateAuthority:
        """Load a CA from PEM key and certificate.

        Raises:
            ConfigError: unreadable PEM, a non-EC key, a certificate that is not a CA, or a key
                that does not match the certificate.
        """
        key = _load_ec_private_key(key_pem, what="CA key")
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except (ValueError, x509.InvalidVersion) as e:
            raise ConfigError(f"CA certificate is not a PEM X.509 certificate: {e}") from e
        if spki_der(key.public_key()) != _cert_spki(cert):
            raise ConfigError("CA key does not match the CA certificate's public key")
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (x509.ExtensionNotFound, ValueError) as e:
            raise ConfigError("CA certificate has no basicConstraints extension") from e
        if not bc.ca:
            raise ConfigError("CA certificate has basicConstraints CA:FALSE; it cannot issue")
        return cls(cert, key)

    @property
    def certificate_der(self) -> bytes:
        """The CA certificate, DER."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_id(self) -> bytes:
        """SHA-256 of the CA's SubjectPublicKeyInfo: the COSE ``kid`` of results it signs."""
        return self._key_id

    @property
    def self_signed(self) -> bool:
        """Whether the CA certificate is its own issuer (a root), as in Enarx's debug mode."""
        return self.certificate.issuer == self.certificate.subject

    def private_key_pem(self) -> bytes:
        """The CA key as unencrypted PKCS#8 PEM, for the caller to store with mode 0600."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def derive_secret(self, info: bytes, length: int = 32) -> bytes:
        """A secret derived from the CA key with HKDF-SHA384 (RFC 5869), separated by *info*.

        Replicas that share the CA key derive the same secret, so they need no other shared
        state (Steward's nonce MAC key comes from here).
        """
        scalar = self._key.private_numbers().private_value
        ikm = scalar.to_bytes((self._key.curve.key_size + 7) // 8, "big")
        return HKDF(algorithm=hashes.SHA384(), length=length, salt=_HKDF_SALT, info=info).derive(
            ikm
        )

    def valid_at(self, now: datetime) -> bool:
        """Whether the CA certificate is within its validity period at *now*."""
        now = _utc(now)
        return self._not_valid_before <= now <= self._not_valid_after

    @property
    def not_valid_after(self) -> datetime:
        """The CA certificate's ``notAfter`` (UTC): no issued certificate outlives it."""
        return self._not_valid_after

    def issue(self, profile: LeafProfile) -> x509.Certificate:
        """Sign an end-entity certificate for *profile*.

        The result is a TLS server and client certificate (EKU serverAuth + clientAuth; key usage
        digitalSignature), with a random 159-bit serial (RFC 5280 §4.1.2.2: ≤ 20 octets,
        positive) and ``notAfter`` clamped to the CA's own ``notAfter``.

        Raises:
            ConfigError: the CA certificate does not cover ``not_before``.
            DecodeError: the SPKI in the profile does not load.
        """
        public_key = profile.public_key or _load_ec_public_key(profile.spki_der)
        not_before = _utc(profile.not_before)
        not_after = min(_utc(profile.not_after), self._not_valid_after)
        if not_before < self._not_valid_before - BACKDATE or not_after <= not_before:
            raise ConfigError(
                "the Steward CA certificate is not valid for the requested period (expired or "
                "not yet valid); create a new CA with `donjon steward init --force`"
            )
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in profile.dns_names]
        names += [x509.UniformResourceIdentifier(u) for u in profile.uris]
        builder = (
            tls_leaf_builder(
                common_name=profile.common_name,
                issuer=self._subject,
                public_key=public_key,
                not_before=not_before,
                not_after=not_after,
            )
            .add_extension(_subject_key_identifier(profile.spki_der, public_key), critical=False)
            .add_extension(self._aki, critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        for oid, value in profile.extensions:
            builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
        return builder.sign(self._key, hashes.SHA384())

    def sign_result(self, payload: bytes) -> bytes:
        """A tagged COSE_Sign1 (ES384) over *payload*, ``kid`` = :attr:`key_id` (protected)."""
        return sign1(self._key, payload, protected={HEADER_KID: self._key_id})

    def sign_jwt(self, claims: Mapping[str, Any]) -> str:
        """A compact JWS (ES384) over *claims* (e.g. an EAR), ``kid`` = :attr:`key_id` (hex)."""
        from donjon.crypto.jws import sign_jwt

        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return sign_jwt(claims, pem, kid=self._key_id.hex())


def tls_leaf_builder(
    *,
    common_name: str,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """A certificate builder for a TLS server + client leaf: random serial, not a CA, key usage
    digitalSignature, EKU serverAuth + clientAuth. Callers add names and their own extensions."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_LEAF_BASIC_CONSTRAINTS, critical=True)
        .add_extension(_LEAF_KEY_USAGE, critical=True)
        .add_extension(_LEAF_EKU, critical=False)
    )


# Immutable extension values shared by every leaf (built once, not per certificate).
_LEAF_BASIC_CONSTRAINTS = x509.BasicConstraints(ca=False, path_length=None)
_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_EKU = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)


def _load_ec_public_key(spki: bytes) -> ec.EllipticCurvePublicKey:
    try:
        public_key = serialization.load_der_public_key(spki)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise DecodeError(f"public key cannot be loaded: {e}") from e
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise DecodeError("only EC public keys are certified")
    return public_key


def _subject_key_identifier(
    spki: bytes, public_key: ec.EllipticCurvePublicKey
) -> x509.SubjectKeyIdentifier:
    """RFC 5280 §4.2.1.2 method 1 (SHA-1 of the subjectPublicKey bits), from the SPKI DER we
    already hold: for an uncompressed EC point those bits are the SPKI's last 1 + 2n bytes."""
    point = 1 + 2 * ((public_key.curve.key_size + 7) // 8)
    digest = hashlib.sha1(spki[-point:], usedforsecurity=False).digest()
    return x509.SubjectKeyIdentifier(digest)


def _cert_spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificate_der(cert: x509.Certificate) -> bytes:
    """*cert* as DER."""
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_spki(cert: x509.Certificate) -> bytes:
    """DER SubjectPublicKeyInfo of *cert*'s key."""
    return _cert_spki(cert)


def verify_signed_result(data: bytes, ca_certificate: x509.Certificate) -> bytes:
    """Verify a Steward attestation result (COSE_Sign1) with the CA certificate's key.

    Returns:
        The payload bytes (deterministic CBOR claims) after the signature checked out.

    Raises:
        DecodeError: not a COSE_Sign1.
        SignatureError: wrong key, wrong algorithm or a bad signature.
    """
    message = decode_sign1(data, what="attestation result")
    public_key = ca_certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SignatureError("attestation result: the CA key is not an EC key")
    verify_sign1(message, public_key, what="attestation result")
    return message.payload


def verify_issued(leaf: x509.Certificate, ca_certificate: x509.Certificate) -> None:
    """Check that *leaf* was signed by *ca_certificate*'s key.

    Raises:
        SignatureError: it was not.
    """
    try:
        leaf.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SignatureError(f"certificate was not issued by this CA: {e}") from e
    except InvalidSignature as e:
        raise SignatureError("certificate signature does not verify with the CA key") from e


def load_certificate(data: bytes, *, what: str = "certificate") -> x509.Certificate:
    """Load one certificate, DER or PEM.

    Raises:
        DecodeError: neither.
    """
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as e:
        raise DecodeError(f"{what} is not a DER or PEM X.509 certificate: {e}") from e


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """A JSON-friendly summary of a certificate (subject, serial, validity, SANs)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in san]
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "san": names,
    }


__all__ = [
    "BACKDATE",
    "CA_LIFETIME",
    "MAX_CSR_BYTES",
    "CertificateAuthority",
    "CertificateRequest",
    "KeyPair",
    "LeafProfile",
    "RequestedExtension",
    "certificate_der",
    "certificate_spki",
    "describe",
    "is_dns_name",
    "load_certificate",
    "parse_csr",
    "verify_issued",
    "verify_signed_result",
]
