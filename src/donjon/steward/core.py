"""Steward's core: attestation requests in, certificates and signed results out. No I/O.

Rule 1 (order of checks, cheapest and most decisive first): the request decodes; the CSR
decodes and its self-signature verifies; the nonce's MAC and expiry check out and it is consumed
(single use); the evidence verifies at ``now`` against the vendor roots; the verified report data
binds the CSR key and the nonce; the attestation policy accepts the claims; the workload identity
and DNS names are allowed by the Steward policy. Only then is anything signed.
Rule 2: nothing a client sends reaches a certificate unchecked. The subject is Steward's own
name for the Keep; DNS SANs are only those the policy allows; the workload URI is the one the
key-bound CSR claims (written by the measured keep runtime) or one derived from the measurement.
Rule 3: every failure is a ``donjon.errors`` subclass whose message is the explanation a client
sees; :func:`status_for` maps it to an HTTP status.
Rule 4: the clock is an injected :class:`Clock`. The CLI always passes :class:`SystemClock`;
tests pin time by passing their own. The key/nonce :class:`KeyBinding` is injected the same way:
production uses :data:`STRICT_BINDING`; nothing in ``src/`` offers another, and the CLI has no
option for one (tests that replay real vectors, whose report data binds nothing of ours, bring
their own).
Rule 5: endorsements a Keep did not send (a VCEK, Intel collateral) come from an injected
:class:`EndorsementSource` (``donjon.endorse``), and only for a request whose nonce checks out.
The core never waits on it itself: :meth:`StewardCore.endorse_without_io` answers from memory or
says that I/O is needed, and the caller runs the blocking :meth:`StewardCore.endorse` off its
event loop. Without a source (the default) nothing is ever fetched.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography import x509

from donjon.attestation.dispatch import verify_evidence, verify_with
from donjon.attestation.nil import NilVerifier
from donjon.attestation.policy import Verdict, evaluate
from donjon.attestation.result import Endorsements, Platform, VerifiedEvidence
from donjon.crypto.binding import binds
from donjon.crypto.ca import (
    BACKDATE,
    CertificateAuthority,
    CertificateRequest,
    LeafProfile,
    certificate_der,
    is_dns_name,
    parse_csr,
)
from donjon.crypto.enarx import decode_enarx_sgx, decode_enarx_snp, enarx_report_data
from donjon.crypto.oids import (
    DONJON_ATTESTATION_RESULT,
    DONJON_EVIDENCE,
    ENARX_KVM,
    ENARX_SGX,
    ENARX_SNP,
)
from donjon.crypto.sealing import seal_secret
from donjon.errors import (
    ConfigError,
    DecodeError,
    EvidenceFormatError,
    MeasurementError,
    PolicyError,
    TransportError,
    VerificationError,
    WireError,
)
from donjon.errors import Error as DonjonError
from donjon.steward.config import (
    DEFAULT_CERT_LIFETIME,
    MEASUREMENT_URI,
    PUBLISHER_URI,
    WORKLOAD_URI,
    StewardPolicy,
)
from donjon.steward.messages import (
    AttestRequest,
    AttestResponse,
    CsrEvidence,
    NonceResponse,
    ResultClaims,
    SecretsRequest,
    SecretsResponse,
)
from donjon.steward.nonce import (
    DEFAULT_NONCE_LIFETIME,
    MAX_TRACKED_NONCES,
    NONCE_KEY_INFO,
    NonceBook,
    NonceCapacityError,
    ReplayCache,
)

_logger = logging.getLogger(__name__)

MAX_AUDIT_REASON_CHARS = 1000
"""Longest refusal reason recorded in the audit log (characters)."""

KEEP_DOMAIN = "keep.donjon.invalid"
"""Keeps are named ``<first 16 bytes of SHA-256(SPKI), hex>.keep.donjon.invalid`` (RFC 6761
``.invalid``: never resolvable, so the name identifies a key and can never be confused with a
real host)."""


class Clock(Protocol):
    """Where Steward gets the time."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


@dataclass(frozen=True, slots=True)
class SystemClock:
    """The real clock. The only clock the CLI ever uses."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class AuditSink(Protocol):
    """Where decisions are recorded (``donjon.steward.audit.AuditLog``)."""

    def record(self, fields: Mapping[str, Any]) -> None:
        """Append one decision."""


class SecretSource(Protocol):
    """Where released secrets' values come from (``donjon.steward.secrets.SecretStore``)."""

    def get(self, name: str) -> bytes | None:
        """The value of secret *name*, or None if there is none."""


class CompletedEndorsements(Protocol):
    """What :meth:`EndorsementSource.complete` returns (``donjon.endorse.Completion``)."""

    @property
    def endorsements(self) -> Endorsements:
        """The client's endorsements with what was missing added."""
        ...


class EndorsementSource(Protocol):
    """Completes the endorsements a client sent (``donjon.endorse.EndorsementFetcher``)."""

    def complete_without_io(
        self, platform: Platform, evidence: bytes, endorsements: Endorsements, *, now: datetime
    ) -> Endorsements | None:
        """The completed endorsements when no I/O is needed (nothing missing, or all of it in
        memory), else None."""
        ...

    def complete(
        self, platform: Platform, evidence: bytes, endorsements: Endorsements, *, now: datetime
    ) -> CompletedEndorsements:
        """Fetch what is missing (blocks on disk and network)."""
        ...


class BindingScheme(enum.Enum):
    """How evidence binds the CSR key (and nonce) into its report data."""

    DONJON = "donjon"
    """``report_data == donjon.crypto.binding.report_data_for(spki, nonce)`` (key + nonce)."""
    ENARX_SHA384 = "enarx-sha384"
    """Enarx SEV-SNP: ``report_data == SHA-384(spki) || zeros`` (key only, no nonce)."""
    ENARX_SHA256 = "enarx-sha256"
    """Enarx SGX: ``report_data == SHA-256(spki) || zeros`` (key only, no nonce)."""


class KeyBinding(Protocol):
    """Checks that verified report data binds the CSR key (and the nonce)."""

    def check(
        self,
        evidence: VerifiedEvidence,
        *,
        spki_der: bytes,
        nonce: bytes | None,
        scheme: BindingScheme,
    ) -> None:
        """Raise ``MeasurementError`` if the report data does not bind them."""
        ...


@dataclass(frozen=True, slots=True)
class _StrictBinding:
    def check(
        self,
        evidence: VerifiedEvidence,
        *,
        spki_der: bytes,
        nonce: bytes | None,
        scheme: BindingScheme,
    ) -> None:
        if scheme is BindingScheme.DONJON:
            if nonce is None:  # pragma: no cover - every donjon path carries a nonce
                raise MeasurementError("donjon evidence must bind a nonce")
            if binds(evidence.report_data, spki_der, nonce):
                return
            raise MeasurementError(
                "the evidence's report data does not bind the CSR's public key and the nonce "
                "(followed by the client nonce, if one is sent; see docs/protocol.md): evidence "
                "made for another key or nonce, or replayed"
            )
        hash_name = "sha384" if scheme is BindingScheme.ENARX_SHA384 else "sha256"
        expected = enarx_report_data(spki_der, hash_name=hash_name)
        if not hmac.compare_digest(evidence.report_data, expected):
            raise MeasurementError(
                f"the evidence's report data is not {hash_name.upper()} of the CSR's public key "
                "followed by zeros (Enarx binding): the evidence was made for another key"
            )


STRICT_BINDING: KeyBinding = _StrictBinding()
"""The only binding production uses."""


@dataclass(frozen=True, slots=True)
class Issued:
    """One successful attestation.

    Attributes:
        certificate: the issued leaf.
        chain: DER certificates, leaf first, then the CA.
        result: the COSE_Sign1 attestation result.
        claims: the claims it carries (also in the certificate's result extension).
        verdict: the attestation-policy verdict, every check included.
        spki_der: the certified key (the CSR's), DER SubjectPublicKeyInfo.
        publisher: the publisher URI the CSR named beside its workload, if any.
    """

    certificate: x509.Certificate
    chain: tuple[bytes, ...]
    result: bytes
    claims: ResultClaims
    verdict: Verdict
    spki_der: bytes
    publisher: str | None = None


def status_for(error: DonjonError) -> int:
    """The HTTP status for an error raised while handling a request.

    ==========================================  ======
    error                                       status
    ==========================================  ======
    ``DecodeError`` and other ``WireError``      400   (the request is malformed)
    ``EvidenceFormatError``                      422   (well-formed request, unparseable evidence)
    ``SignatureError``, ``ChainError``,          403   (authenticity, freshness, binding or
    ``FreshnessError``, ``MeasurementError``,           policy rejection)
    ``TcbStatusError``, ``PolicyError``, other
    ``VerificationError``
    ``NonceCapacityError``                       503   (retry later)
    other ``TransportError`` (an endorsement     502   (an upstream service failed)
    that could not be fetched)
    anything else (``ConfigError``, ...)         500   (Steward's own problem)
    ==========================================  ======
    """
    if isinstance(error, WireError):
        return 400
    if isinstance(error, EvidenceFormatError):
        return 422
    if isinstance(error, VerificationError):
        return 403
    if isinstance(error, NonceCapacityError):
        return 503
    if isinstance(error, TransportError):
        return 502
    return 500


def keep_name(spki_der: bytes) -> str:
    """Steward's DNS-style name for the Keep holding this key."""
    return f"{hashlib.sha256(spki_der).digest()[:16].hex()}.{KEEP_DOMAIN}"


def parse_platform(name: str) -> Platform:
    """The platform named *name*.

    Raises:
        DecodeError: not a platform donjon knows.
    """
    try:
        return Platform(name)
    except ValueError:
        known = ", ".join(str(p) for p in Platform)
        raise DecodeError(f"unknown platform {name[:40]!r}; expected one of {known}") from None


def publisher_identity(csr: CertificateRequest) -> str | None:
    """The ``donjon:publisher:sha256:<hex>`` URI a CSR names beside its workload, if any: the
    keep runtime's statement that it verified the package's signature by that key."""
    return next((u for u in csr.uris if PUBLISHER_URI.fullmatch(u)), None)


def workload_identity(csr: CertificateRequest, evidence: VerifiedEvidence) -> str:
    """The workload identity URI to certify.

    A CSR may claim one ``donjon:workload:sha256:<hex>`` URI: the CSR is signed by the key the
    evidence binds, which never leaves the measured keep runtime, so the claim is the runtime's
    own statement of which workload it will run. Without one, the identity is derived from the
    launch measurement: ``donjon:measurement:<platform>:<hex>``.

    Raises:
        DecodeError: more than one URI, or a URI of another form.
    """
    workloads = [u for u in csr.uris if not PUBLISHER_URI.fullmatch(u)]
    publishers = len(csr.uris) - len(workloads)
    if len(workloads) > 1 or publishers > 1:
        raise DecodeError(
            "the CSR requests more than one workload identity or publisher; request one of each"
        )
    if publishers and not workloads:
        raise DecodeError("the CSR names a publisher but no workload; name the workload too")
    if workloads:
        uri = workloads[0]
        if not WORKLOAD_URI.fullmatch(uri):
            raise DecodeError(
                f"CSR URI SAN {uri[:100]!r} is not a workload identity; the URIs Steward "
                "certifies are donjon:workload:sha256:<64 lowercase hex> and, beside it, "
                "donjon:publisher:sha256:<64 lowercase hex>"
            )
        return uri
    derived = f"donjon:measurement:{evidence.platform}:{evidence.measurement.hex()}"
    if not MEASUREMENT_URI.fullmatch(derived):
        raise EvidenceFormatError("the evidence's measurement cannot name a workload identity")
    return derived


class StewardCore:
    """Steward's decisions, with no I/O: what to answer to each request.

    Args:
        ca: the signing CA.
        policy: the Steward policy.
        clock: where the time comes from (tests pin it; the CLI passes :class:`SystemClock`).
        cert_lifetime: lifetime of issued certificates.
        nonce_lifetime: lifetime of issued nonces.
        max_tracked_nonces: replay-cache capacity (without *replay_cache*).
        binding: the key/nonce binding check (:data:`STRICT_BINDING` in production).
        replay_cache: where used nonces are remembered; this process's memory unless given
            (``serve`` gives its workers one :class:`~donjon.steward.nonce.SharedReplayCache`).
        endorsements: where endorsements a client did not send come from (rule 5); None:
            verify only what the client sent.
        secrets: where the values of secrets released under ``[steward.secrets]`` come from;
            None: this Steward releases none.
        audit: where each decision is recorded (certificate issued or refused, secrets
            released or withheld); None: only the log says.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        policy: StewardPolicy,
        *,
        clock: Clock,
        cert_lifetime: timedelta = DEFAULT_CERT_LIFETIME,
        nonce_lifetime: timedelta = DEFAULT_NONCE_LIFETIME,
        max_tracked_nonces: int = MAX_TRACKED_NONCES,
        binding: KeyBinding = STRICT_BINDING,
        replay_cache: ReplayCache | None = None,
        endorsements: EndorsementSource | None = None,
        secrets: SecretSource | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.ca = ca
        self._secrets = secrets
        self._audit = audit
        self.policy = policy
        self.clock = clock
        self.cert_lifetime = cert_lifetime
        self.nonces = NonceBook(
            ca.derive_secret(NONCE_KEY_INFO),
            lifetime=nonce_lifetime,
            max_tracked=max_tracked_nonces,
            replay_cache=replay_cache,
        )
        self._binding = binding
        self._endorsements = endorsements
        # nil evidence is checked against the policy's pinned development keys, if any.
        self._nil_verifier = _nil_verifier_for(policy)
        self._ca_der = ca.certificate_der

    def set_policy(self, policy: StewardPolicy) -> None:
        """Decide by *policy* from the next request on (``serve`` does on SIGHUP)."""
        verifier = _nil_verifier_for(policy)
        self.policy, self._nil_verifier = policy, verifier

    # -- nonces -----------------------------------------------------------------------------

    def nonce(self) -> NonceResponse:
        """A fresh nonce (``GET /v1/nonce``)."""
        issued = self.nonces.issue(self._now())
        return NonceResponse(nonce=issued.value, expires_at=issued.expires_at)

    # -- donjon protocol --------------------------------------------------------------------

    def attest(self, request: AttestRequest) -> Issued:
        """Handle ``POST /v1/attest`` (and record the decision, see :meth:`_attest`)."""
        try:
            issued = self._attest(request)
        except DonjonError as e:
            self._record_refusal("/v1/attest", request.platform, e)
            raise
        self._record("issued", "/v1/attest", issued)
        return issued

    def _attest(self, request: AttestRequest) -> Issued:
        """Handle ``POST /v1/attest``.

        Raises:
            DecodeError: malformed CSR, platform or SANs.
            SignatureError: the CSR's signature does not verify.
            FreshnessError: bad, expired or replayed nonce.
            VerificationError: the evidence does not verify, or does not bind key and nonce.
            PolicyError: the policy rejects the claims, the workload or a DNS name.
            NonceCapacityError: the replay cache is full.
        """
        now = self._now()
        csr = parse_csr(request.csr)  # (1) CSR: structure and proof of possession
        for ext in csr.extensions:
            # Nothing but SANs is ever taken from a CSR, and what is not understood is refused.
            raise DecodeError(
                f"CSR extension {ext.oid} is not supported on /v1/attest; request SANs only "
                "(the evidence goes in the request body)"
            )
        platform = parse_platform(request.platform)
        self.nonces.consume(request.nonce, now)  # (2) nonce: MAC, expiry, single use
        endorsements = Endorsements(certs=request.certs, collateral=request.collateral)
        return self._decide(
            csr,
            platform,
            request.evidence,
            endorsements,
            now=now,
            nonce=request.nonce,
            scheme=BindingScheme.DONJON,
            client_nonce=request.client_nonce,
        )

    def attest_response(self, request: AttestRequest) -> AttestResponse:
        """:meth:`attest`, shaped as the wire response (with an EAR if the request asks)."""
        issued = self.attest(request)
        ear = self._ear(issued, request) if request.want_ear else None
        return AttestResponse(chain=issued.chain, result=issued.result, ear=ear)

    def _ear(self, issued: Issued, request: AttestRequest) -> str:
        """The appraisal as an EAR JWT signed by the CA key (``donjon.attestation.ear``): the
        platform's submodule, whose key attestation is the certified key, and Steward's own
        decisions (workload, Keep name, certificate) as policy claims."""
        from donjon import __version__
        from donjon.attestation.ear import appraisal, ear_claims

        submod = appraisal(issued.verdict, key_spki=issued.spki_der)
        submod["ear.veraison.policy-claims"] = {
            "workload": issued.claims.workload,
            "keep": issued.certificate.subject.rfc4514_string(),
            "certificate_serial": f"{issued.certificate.serial_number:x}",
            "steward_policy": self.policy.name,
            "steward_policy_digest": self.policy.digest.hex(),
        }
        claims = ear_claims(
            {issued.claims.platform: submod},
            iat=issued.claims.issued_at,
            verifier_build=f"donjon-steward {__version__}",
            nonce=request.nonce + (request.client_nonce or b""),
        )
        return self.ca.sign_jwt(claims)

    # -- secrets -----------------------------------------------------------------------------

    def release(self, request: SecretsRequest) -> SecretsResponse:
        """Handle ``POST /v1/secrets``: attest exactly as :meth:`attest`, then release each
        secret named, sealed to the CSR's key, if a rule names the CSR's workload for it.

        All or nothing: one secret not released refuses the request, so a workload never starts
        with half its secrets. The refusal does not say whether the secret exists (a workload
        no rule names learns nothing about the store); Steward's log says which it was.

        Raises:
            everything :meth:`attest` raises, and
            PolicyError: the CSR names no workload, or a secret is not released to it.
        """
        try:
            issued = self._attest(request.attest)
        except DonjonError as e:
            self._record_refusal("/v1/secrets", request.attest.platform, e)
            raise
        response = self._release(request, issued)
        self._record("released", "/v1/secrets", issued, request.names)
        return response

    def _release(self, request: SecretsRequest, issued: Issued) -> SecretsResponse:
        workload = issued.claims.workload
        if not WORKLOAD_URI.fullmatch(workload):
            error = PolicyError(
                "a Keep asking for secrets must name its workload: put its "
                "donjon:workload:sha256:<hex> identity in the CSR as a URI SAN (the keep runtime "
                "does this once it has the workload)"
            )
            self._record("withheld", "/v1/secrets", issued, request.names, error)
            raise error
        key_id = issued.claims.key_sha256.hex()[:16]
        names = {workload} | ({issued.publisher} if issued.publisher is not None else set())
        sealed: dict[str, bytes] = {}
        for name in request.names:
            allowed = bool(names & self.policy.secret_readers(name))
            value = self._secrets.get(name) if allowed and self._secrets is not None else None
            if value is None:
                if not allowed:
                    why = "no release rule names this workload"
                elif self._secrets is None:
                    why = "this Steward has no secret store"
                else:
                    why = "it is not stored"
                _logger.warning(
                    "refused secret %s to workload %s (key %s): %s", name, workload, key_id, why
                )
                error = PolicyError(
                    f"secret {name!r} is not released to workload {workload} by policy "
                    f"'{self.policy.name}': its owner must store it (`donjon steward secret set "
                    f"{name}`) and name this workload in a release rule ([steward.secrets] "
                    f'{name} = ["{workload}"])'
                )
                # The audit log is the operator's: it says which it was, as the log does.
                self._record("withheld", "/v1/secrets", issued, request.names, error, why=why)
                raise error
            sealed[name] = seal_secret(
                value, issued.spki_der, name=name, nonce=request.attest.nonce
            )
        _logger.info(
            "released %d secret(s) %s to workload %s (key %s, policy %s)",
            len(sealed),
            ", ".join(sorted(sealed)),
            workload,
            key_id,
            self.policy.name,
        )
        return SecretsResponse(chain=issued.chain, result=issued.result, sealed=sealed)

    # -- endorsements a client did not send (rule 5) -----------------------------------------

    @property
    def fetches_endorsements(self) -> bool:
        """Whether this core completes clients' endorsements (an :class:`EndorsementSource`)."""
        return self._endorsements is not None

    def endorsement_outcomes(self) -> dict[str, int]:
        """How the endorsement documents asked of the source ended, by outcome, for the metrics
        (``donjon.endorse.FetchOutcome``); empty without a source or one that does not count."""
        outcomes = getattr(self._endorsements, "outcomes", None)
        if not callable(outcomes):
            return {}
        return {str(outcome): int(n) for outcome, n in outcomes().items()}

    def endorse_without_io(self, request: AttestRequest) -> AttestRequest | None:
        """*request* with its endorsements completed, if that needs no I/O; else None.

        Returns *request* unchanged when no source is configured, nothing is missing, or the
        request will be refused anyway (unknown platform, bad or expired nonce: :meth:`attest`
        says so, and nothing is fetched for it).

        Raises:
            EndorsementUnavailableError: the evidence lacks what no service serves (a VLEK).
        """
        source = self._endorsements
        if source is None:
            return request
        given = self._endorsement_input(request)
        if given is None:
            return request
        platform, endorsements, now = given
        done = source.complete_without_io(platform, request.evidence, endorsements, now=now)
        return None if done is None else _with_endorsements(request, done)

    def endorse(self, request: AttestRequest) -> AttestRequest:
        """*request* with its endorsements completed; blocks on disk and network (run it off
        the event loop).

        Raises:
            EndorsementFetchError: a missing document could not be fetched (HTTP 502).
            EndorsementUnavailableError: the evidence lacks what no service serves (403).
        """
        source = self._endorsements
        given = self._endorsement_input(request) if source is not None else None
        if source is None or given is None:
            return request
        platform, endorsements, now = given
        done = source.complete(platform, request.evidence, endorsements, now=now)
        return _with_endorsements(request, done.endorsements)

    def _endorsement_input(
        self, request: AttestRequest
    ) -> tuple[Platform, Endorsements, datetime] | None:
        now = self._now()
        try:
            platform = parse_platform(request.platform)
            # Only a request with a nonce this Steward issued, still valid, may cost a fetch.
            self.nonces.check(request.nonce, now)
        except DonjonError:
            return None
        return platform, Endorsements(certs=request.certs, collateral=request.collateral), now

    # -- Enarx-compatible protocol ----------------------------------------------------------

    def attest_pkcs10(self, csr_der: bytes) -> Issued:
        """Handle ``POST /`` (and record the decision, see :meth:`_attest_pkcs10`)."""
        try:
            issued = self._attest_pkcs10(csr_der)
        except DonjonError as e:
            self._record_refusal("/", None, e)
            raise
        self._record("issued", "/", issued)
        return issued

    def _attest_pkcs10(self, csr_der: bytes) -> Issued:
        """Handle ``POST /`` with an ``application/pkcs10`` body (Enarx's protocol).

        The CSR carries its evidence in exactly one non-critical extension: Enarx's KVM, SGX or
        SNP OID, or ``DONJON_EVIDENCE`` (CBOR :class:`CsrEvidence`, nonce-bound like
        ``/v1/attest``). Enarx evidence binds the key but no nonce (see docs/protocol.md).

        Raises:
            the same errors as :meth:`attest`.
        """
        now = self._now()
        csr = parse_csr(csr_der)
        known = {DONJON_EVIDENCE, ENARX_KVM, ENARX_SGX, ENARX_SNP}
        known_dotted = {oid.dotted_string for oid in known}
        evidence_exts = [e for e in csr.extensions if e.oid in known_dotted]
        for ext in csr.extensions:
            if ext.oid not in known_dotted:
                raise DecodeError(
                    f"CSR extension {ext.oid} is not supported; Steward accepts subjectAltName "
                    "and one evidence extension"
                )
        if not evidence_exts:
            raise DecodeError(
                "the CSR carries no evidence extension (Enarx 1.3.6.1.4.1.58270.1.{1,2,3} or "
                f"donjon {DONJON_EVIDENCE.dotted_string}); it cannot be attested"
            )
        if len(evidence_exts) > 1:
            raise DecodeError("the CSR carries more than one evidence extension; send one")
        ext = evidence_exts[0]
        if ext.critical:
            raise DecodeError(f"evidence extension {ext.oid} must be non-critical (as in Enarx)")
        if ext.oid == DONJON_EVIDENCE.dotted_string:
            carried = CsrEvidence.decode(ext.value)
            platform = parse_platform(carried.platform)
            self.nonces.consume(carried.nonce, now)
            endorsements = Endorsements(certs=carried.certs, collateral=carried.collateral)
            return self._decide(
                csr,
                platform,
                carried.evidence,
                endorsements,
                now=now,
                nonce=carried.nonce,
                scheme=BindingScheme.DONJON,
                client_nonce=carried.client_nonce,
            )
        if not self.policy.enarx:
            raise PolicyError(
                f"Enarx evidence is not accepted by policy '{self.policy.name}' "
                "([steward] enarx = false)"
            )
        if ext.oid == ENARX_KVM.dotted_string:
            return self._enarx_kvm(csr, ext.value, now=now)
        if ext.oid == ENARX_SNP.dotted_string:
            snp = decode_enarx_snp(ext.value)
            # As Enarx: the CSR key must be the VCEK's type, so no weaker key rides on the
            # chain (enarx/steward crates/attestation/src/snp/mod.rs).
            if csr.curve != "P-384":
                raise DecodeError(
                    f"an SEV-SNP CSR key must be P-384 like the VCEK, not {csr.curve}"
                )
            return self._decide(
                csr,
                Platform.SEV_SNP,
                snp.report,
                Endorsements(certs=(snp.vcek,), collateral=snp.crls),
                now=now,
                nonce=None,
                scheme=BindingScheme.ENARX_SHA384,
            )
        sgx = decode_enarx_sgx(ext.value)
        if csr.curve != "P-256":
            raise DecodeError(f"an SGX CSR key must be P-256 like the PCK, not {csr.curve}")
        collateral = (*sgx.crls, sgx.tcb_info) if sgx.tcb_info else sgx.crls
        return self._decide(
            csr,
            Platform.SGX,
            sgx.quote,
            Endorsements(certs=sgx.tcb_certs, collateral=collateral),
            now=now,
            nonce=None,
            scheme=BindingScheme.ENARX_SHA256,
        )

    def pkix_path(self, issued: Issued) -> bytes:
        """Enarx's response body: DER ``SEQUENCE OF Certificate`` ordered CA first, then the
        leaf (a PkiPath, as Enarx's Steward returns)."""
        body = self._ca_der + issued.chain[0]
        return _der_sequence(body)

    def _enarx_kvm(self, csr: CertificateRequest, value: bytes, *, now: datetime) -> Issued:
        if value:
            raise DecodeError("an Enarx KVM evidence extension must be empty")
        # No hardware evidence at all: the policy sees it as insecure nil evidence, which only
        # an allow_insecure policy accepts (Enarx: only in debug mode). Nothing was measured:
        # the measurement is 48 zero bytes, which no real SHA-384 produces.
        evidence = VerifiedEvidence(
            platform=Platform.NIL,
            measurement=bytes(48),
            report_data=bytes(64),
            debug=True,
            claims={"insecure": True, "format": "enarx-kvm"},
        )
        return self._issue(csr, evidence, now=now, nonce=None, evidence_bytes=b"")

    # -- the decision -----------------------------------------------------------------------

    def _decide(
        self,
        csr: CertificateRequest,
        platform: Platform,
        evidence: bytes,
        endorsements: Endorsements,
        *,
        now: datetime,
        nonce: bytes | None,
        scheme: BindingScheme,
        client_nonce: bytes | None = None,
    ) -> Issued:
        # (3) Authenticity at `now`: signatures, chains to vendor roots, collateral.
        if platform is Platform.NIL and self._nil_verifier is not None:
            verified = verify_with(self._nil_verifier, evidence, endorsements=endorsements, now=now)
        else:
            verified = verify_evidence(platform, evidence, endorsements=endorsements, now=now)
        # (4) The verified report data binds this CSR's key (and our nonce, followed by the
        # relying party's if there is one: our nonce has a fixed length, so the split is unique).
        bound = nonce if nonce is None or client_nonce is None else nonce + client_nonce
        self._binding.check(verified, spki_der=csr.spki_der, nonce=bound, scheme=scheme)
        return self._issue(
            csr,
            verified,
            now=now,
            nonce=nonce,
            evidence_bytes=evidence,
            client_nonce=client_nonce,
        )

    def _issue(
        self,
        csr: CertificateRequest,
        evidence: VerifiedEvidence,
        *,
        now: datetime,
        nonce: bytes | None,
        evidence_bytes: bytes,
        client_nonce: bytes | None = None,
    ) -> Issued:
        # (5) The attestation policy on the claims.
        verdict = evaluate(self.policy.attestation, evidence)
        if not verdict.accepted:
            raise PolicyError(verdict.reason or f"rejected by policy '{self.policy.name}'")
        # (6) Steward's own rules: workload identity, DNS names.
        workload = workload_identity(csr, evidence)
        publisher = publisher_identity(csr)
        if self.policy.workloads and workload not in self.policy.workloads:
            raise PolicyError(
                f"rejected: workload identity {workload} not among the "
                f"{len(self.policy.workloads)} accepted by policy '{self.policy.name}'"
            )
        name = keep_name(csr.spki_der)
        dns_names = [name]
        for requested in csr.dns_names:
            if not is_dns_name(requested):
                raise DecodeError(f"CSR DNS SAN {requested[:80]!r} is not a valid DNS name")
            if not self.policy.allows_dns_name(requested):
                allowed = ", ".join(self.policy.dns_names) or "none"
                raise PolicyError(
                    f"rejected: DNS name {requested} not allowed by policy "
                    f"'{self.policy.name}' (allowed: {allowed}; set [steward] dns_names)"
                )
            if requested not in dns_names:
                dns_names.append(requested)
        # (7) Sign: certificate, then the result over the same claims.
        not_after = now + self.cert_lifetime
        if not self.ca.valid_at(now):
            raise ConfigError(
                "the Steward CA certificate is expired or not yet valid; rotate it with "
                "`donjon steward init --force`"
            )
        not_after = min(not_after, self.ca.not_valid_after)
        claims = ResultClaims(
            platform=str(evidence.platform),
            measurement=evidence.measurement,
            tcb_status=evidence.tcb_status,
            advisory_ids=tuple(evidence.advisory_ids),
            debug=evidence.debug,
            insecure=evidence.platform is Platform.NIL or evidence.claims.get("insecure") is True,
            workload=workload,
            policy=self.policy.name,
            policy_digest=self.policy.digest,
            issued_at=int(now.timestamp()),
            expires_at=int(not_after.timestamp()),
            nonce=nonce,
            key_sha256=hashlib.sha256(csr.spki_der).digest(),
            evidence_sha256=hashlib.sha256(evidence_bytes).digest(),
            client_nonce=client_nonce,
        )
        payload = claims.encode()
        leaf = self.ca.issue(
            LeafProfile(
                spki_der=csr.spki_der,
                common_name=name,
                dns_names=tuple(dns_names),
                uris=(workload,) if publisher is None else (workload, publisher),
                not_before=now - BACKDATE,
                not_after=not_after,
                extensions=((DONJON_ATTESTATION_RESULT, payload),),
                public_key=csr.public_key,
            )
        )
        result = self.ca.sign_result(payload)
        if _logger.isEnabledFor(logging.INFO):  # the serial is decoded only when logged
            _logger.info(
                "issued certificate serial %x to %s (%s, workload %s, policy %s)",
                leaf.serial_number,
                name,
                claims.platform,
                workload,
                self.policy.name,
            )
        chain = (certificate_der(leaf), self._ca_der)
        return Issued(
            certificate=leaf,
            chain=chain,
            result=result,
            claims=claims,
            verdict=verdict,
            spki_der=csr.spki_der,
            publisher=publisher,
        )

    # -- the audit log -----------------------------------------------------------------------

    def _record(
        self,
        event: str,
        endpoint: str,
        issued: Issued,
        secrets: tuple[str, ...] = (),
        error: DonjonError | None = None,
        *,
        why: str | None = None,
    ) -> None:
        if self._audit is None:
            return
        claims = issued.claims
        fields: dict[str, Any] = {
            "event": event,
            "endpoint": endpoint,
            "platform": claims.platform,
            "insecure": claims.insecure,
            "workload": claims.workload,
            "key": claims.key_sha256.hex(),
            "policy": claims.policy,
            "policy_digest": claims.policy_digest.hex(),
            "serial": f"{issued.certificate.serial_number:x}",
        }
        if secrets:
            fields["secrets"] = list(secrets)
        if error is not None:
            fields["error"] = type(error).__name__
            reason = error.diagnostics() if why is None else f"{why}: {error.diagnostics()}"
            fields["reason"] = reason[:MAX_AUDIT_REASON_CHARS]
        self._audit.record(fields)

    def _record_refusal(self, endpoint: str, platform: str | None, error: DonjonError) -> None:
        if self._audit is None:
            return
        self._audit.record(
            {
                "event": "refused",
                "endpoint": endpoint,
                "platform": None if platform is None else platform[:40],
                "error": type(error).__name__,
                "reason": error.diagnostics()[:MAX_AUDIT_REASON_CHARS],
            }
        )

    def _now(self) -> datetime:
        now = self.clock.now()
        if now.tzinfo is None:
            raise ConfigError("the Steward clock returned a naive datetime; it must be UTC-aware")
        return now.astimezone(UTC)


def _nil_verifier_for(policy: StewardPolicy) -> NilVerifier | None:
    """nil evidence is checked against the policy's pinned development keys, if any."""
    return NilVerifier(trusted_keys=sorted(policy.dev_keys)) if policy.dev_keys else None


def _with_endorsements(request: AttestRequest, done: Endorsements) -> AttestRequest:
    if done.certs == request.certs and done.collateral == request.collateral:
        return request
    return dataclasses.replace(request, certs=done.certs, collateral=done.collateral)


def _der_sequence(body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([0x30, n]) + body
    size = (n.bit_length() + 7) // 8
    return bytes([0x30, 0x80 | size]) + n.to_bytes(size, "big") + body


__all__ = [
    "KEEP_DOMAIN",
    "STRICT_BINDING",
    "AuditSink",
    "BindingScheme",
    "Clock",
    "CompletedEndorsements",
    "EndorsementSource",
    "Issued",
    "KeyBinding",
    "SecretSource",
    "StewardCore",
    "SystemClock",
    "keep_name",
    "parse_platform",
    "publisher_identity",
    "status_for",
    "workload_identity",
]
