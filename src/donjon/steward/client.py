"""A small Steward client (httpx): get a nonce, attest, and check what comes back.

Used by the keep runtime (to get its certificate) and by tests and benchmarks. It checks the
answer before returning it: the chain has the leaf and the CA, the leaf certifies the CSR's key
and was signed by the CA, the attestation result is signed by the CA and names this key and this
nonce, and the certificate's result extension carries the same claims. With ``ca=`` given, the
CA must be that certificate (a pinned trust anchor); without it, the CA the Steward presents is
taken as is, which is fine for a Keep fetching its own certificate but not for a relying party.

Errors: a rejection raises the ``donjon.errors`` class the Steward named (``PolicyError``,
``FreshnessError``, ...) with its reason; an unreachable Steward ``ConnectError`` or
``TransportTimeoutError``; a malformed answer ``RemoteProtocolError``.

Example::

    with StewardClient("http://127.0.0.1:8443", ca=ca_pem) as steward:
        nonce = steward.nonce()
        issued = steward.attest(csr_der, evidence, "nil", Endorsements(), nonce)
        issued.claims.workload
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509

import donjon.errors as errors
from donjon._closing import Closing
from donjon.attestation.result import Endorsements, Platform
from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import (
    KeyPair,
    certificate_der,
    certificate_spki,
    load_certificate,
    parse_csr,
    verify_issued,
    verify_signed_result,
)
from donjon.crypto.jws import verify_jwt
from donjon.crypto.oids import DONJON_ATTESTATION_RESULT
from donjon.crypto.sealing import SealError, open_secret
from donjon.errors import (
    ConnectError,
    DecodeError,
    Error,
    RemoteProtocolError,
    SignatureError,
    TransportError,
    TransportTimeoutError,
)
from donjon.steward.messages import (
    CONTENT_TYPE,
    AttestRequest,
    AttestResponse,
    ErrorBody,
    NonceResponse,
    ResultClaims,
    SecretsRequest,
    SecretsResponse,
    claims_of,
)

DEFAULT_TIMEOUT_SECONDS = 30.0
"""Per-request timeout: verification of Intel quotes with collateral takes tens of ms; 30 s
covers a loaded Steward without hanging a Keep forever."""

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest Steward answer read (bytes): two certificates and a result are ~3 KiB; a secrets
answer may add up to 64 sealed secrets of 64 KiB."""

_NO_ENDORSEMENTS = Endorsements()

# Error classes a Steward may name; anything else becomes RemoteProtocolError.
_NAMED_ERRORS: dict[str, type[Error]] = {
    cls.__name__: cls
    for cls in (
        errors.DecodeError,
        errors.EvidenceFormatError,
        errors.ChainError,
        errors.SignatureError,
        errors.MeasurementError,
        errors.TcbStatusError,
        errors.FreshnessError,
        errors.PolicyError,
        errors.ConfigError,
    )
}


class StewardRejectedError(errors.RemoteProtocolError):
    """The Steward answered with an error whose class this client does not know."""


class StewardBusyError(TransportError):
    """The Steward is overloaded (HTTP 503); retry after a few seconds."""


class StewardUpstreamError(TransportError):
    """Steward could not reach a service it needed, such as AMD KDS (HTTP 502); not a verdict."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """What Steward issued, checked.

    Attributes:
        chain: the leaf, then the CA.
        chain_der: the same, DER.
        result: the COSE_Sign1 attestation result, as received.
        claims: its verified claims.
        ear: the EAR claims-set, its signature verified with the CA's key, if one was asked.
    """

    chain: tuple[x509.Certificate, ...]
    chain_der: tuple[bytes, ...]
    result: bytes
    claims: ResultClaims
    ear: dict[str, Any] | None = None

    @property
    def certificate(self) -> x509.Certificate:
        """The issued leaf."""
        return self.chain[0]

    @property
    def ca(self) -> x509.Certificate:
        """The Steward CA that signed it."""
        return self.chain[-1]


def check_issued(
    response: AttestResponse,
    *,
    spki_der: bytes,
    nonce: bytes | None,
    ca: x509.Certificate | None,
    client_nonce: bytes | None = None,
) -> IssuedCertificate:
    """Check an attest response against the request it answers.

    Raises:
        RemoteProtocolError: a chain that is not (leaf, CA), or claims that do not match.
        SignatureError: a leaf or result not signed by the CA, or another CA than *ca*.
    """
    if len(response.chain) != 2:
        raise RemoteProtocolError(f"Steward returned {len(response.chain)} certificates, not 2")
    try:
        leaf = load_certificate(response.chain[0], what="issued certificate")
        issuer = load_certificate(response.chain[1], what="Steward CA certificate")
    except DecodeError as e:
        raise RemoteProtocolError(e.message) from e
    if ca is not None and certificate_der(issuer) != certificate_der(ca):
        raise SignatureError(
            "Steward answered with a CA certificate other than the pinned one; is this the right "
            "Steward?"
        )
    verify_issued(leaf, issuer)
    if not hmac.compare_digest(certificate_spki(leaf), spki_der):
        raise RemoteProtocolError("the issued certificate is for another key than the CSR's")
    try:
        payload = verify_signed_result(response.result, issuer)
        claims = ResultClaims.decode(payload)
    except DecodeError as e:
        raise RemoteProtocolError(f"attestation result: {e.message}") from e
    if not hmac.compare_digest(claims.key_sha256, hashlib.sha256(spki_der).digest()):
        raise RemoteProtocolError("the attestation result names another key than the CSR's")
    if nonce is not None and (claims.nonce is None or not hmac.compare_digest(claims.nonce, nonce)):
        raise RemoteProtocolError("the attestation result names another nonce than ours")
    if (claims.client_nonce is None) != (client_nonce is None) or (
        claims.client_nonce is not None
        and client_nonce is not None
        and not hmac.compare_digest(claims.client_nonce, client_nonce)
    ):
        raise RemoteProtocolError("the attestation result names another client nonce than ours")
    try:
        ext = leaf.extensions.get_extension_for_oid(DONJON_ATTESTATION_RESULT).value
    except x509.ExtensionNotFound as e:
        raise RemoteProtocolError(
            "the issued certificate has no attestation-result extension"
        ) from e
    if not isinstance(ext, x509.UnrecognizedExtension) or ext.value != payload:
        raise RemoteProtocolError("the certificate's result extension differs from the result")
    ear = None
    if response.ear is not None:
        try:
            ear = verify_jwt(response.ear, issuer)
        except DecodeError as e:
            raise RemoteProtocolError(f"Steward's EAR: {e.message}") from e
        submods = ear.get("submods")
        submod = submods.get(claims.platform) if isinstance(submods, dict) else None
        attested = submod.get("ear.veraison.key-attestation") if isinstance(submod, dict) else None
        if not isinstance(attested, dict) or attested.get("akpub") != _b64url(spki_der):
            raise RemoteProtocolError("Steward's EAR attests another key than the CSR's")
    return IssuedCertificate(
        chain=(leaf, issuer),
        chain_der=response.chain,
        result=response.result,
        claims=claims,
        ear=ear,
    )


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class StewardClient(Closing):
    """Talks to one Steward.

    Args:
        url: the Steward's base URL (``http://host:port`` or ``https://...``).
        ca: the Steward CA to pin (PEM or DER bytes, or a certificate); None trusts the CA the
            Steward presents (see the module docstring).
        tls: for ``https`` URLs, an ``ssl.SSLContext`` or a CA bundle path (default: system).
        timeout: seconds per request.
        transport: an httpx transport (tests may pass one; default: real sockets).
    """

    def __init__(
        self,
        url: str,
        *,
        ca: bytes | x509.Certificate | None = None,
        tls: ssl.SSLContext | str | bool = True,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._ca = ca if isinstance(ca, x509.Certificate) or ca is None else load_certificate(ca)
        self._http = httpx.Client(
            base_url=self.url,
            verify=default_tls_context() if tls is True else tls,
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def nonce(self) -> bytes:
        """A fresh nonce to bind into evidence (with the key, see ``donjon.crypto.binding``)."""
        response = self._request("GET", "/v1/nonce")
        answer: NonceResponse = _decode(NonceResponse.decode, response.content)
        return answer.nonce

    def ca_certificate(self) -> x509.Certificate:
        """The Steward's CA certificate, as it serves it (not a trust decision)."""
        response = self._request("GET", "/v1/ca", headers={"accept": "application/pkix-cert"})
        try:
            return load_certificate(response.content, what="Steward CA certificate")
        except DecodeError as e:
            raise RemoteProtocolError(e.message) from e

    def attest(
        self,
        csr_der: bytes,
        evidence: bytes,
        platform: Platform | str,
        endorsements: Endorsements,
        nonce: bytes,
        *,
        client_nonce: bytes | None = None,
        want_ear: bool = False,
    ) -> IssuedCertificate:
        """Send a CSR with evidence binding its key and *nonce*; return the checked answer.

        With *want_ear*, Steward also answers with the appraisal as an EAR (a JWT signed by its
        CA key, checked here: ``IssuedCertificate.ear``).

        With *client_nonce* (a relying party's challenge, 1 to 64 bytes) the evidence must bind
        ``nonce + client_nonce`` and the certificate certifies it (``claims.client_nonce``).

        Raises:
            VerificationError: the Steward rejected the evidence (its class and reason).
            DecodeError: the Steward found the request malformed.
            TransportError: the Steward could not be reached, or is overloaded (503).
            RemoteProtocolError: an answer that does not check out.
        """
        request = AttestRequest(
            csr=csr_der,
            platform=str(platform),
            evidence=evidence,
            nonce=nonce,
            certs=endorsements.certs,
            collateral=endorsements.collateral,
            client_nonce=client_nonce,
            want_ear=want_ear,
        )
        response = self._request(
            "POST",
            "/v1/attest",
            content=request.encode(),
            headers={"content-type": CONTENT_TYPE},
        )
        answer: AttestResponse = _decode(AttestResponse.decode, response.content)
        spki = parse_csr(csr_der).spki_der
        return check_issued(
            answer, spki_der=spki, nonce=nonce, ca=self._ca, client_nonce=client_nonce
        )

    def secrets(
        self,
        key: KeyPair,
        workload: str,
        names: Sequence[str],
        *,
        evidence: Callable[[bytes], bytes],
        platform: Platform | str,
        endorsements: Endorsements = _NO_ENDORSEMENTS,
        publisher: str | None = None,
    ) -> dict[str, bytes]:
        """Ask for secrets released to *workload*: attest *key* (a fresh nonce, a CSR naming
        the workload, evidence from *evidence(report_data)*) and open what Steward seals to it.
        *publisher* (``donjon:publisher:sha256:<hex>``) is named too when the Keep verified the
        package's signature by that key, for rules that release to a publisher's workloads.

        Returns:
            The secrets' values by name: exactly *names*.

        Raises:
            PolicyError: Steward does not release a secret to this workload (its reason).
            VerificationError: Steward rejected the evidence.
            SignatureError, RemoteProtocolError: an answer that does not check out (another CA
                than the pinned one, another key, nonce or workload, missing or extra secrets,
                a sealed value that does not open with *key*).
            TransportError: Steward could not be reached.
        """
        nonce = self.nonce()
        csr = key.csr(uris=[workload] if publisher is None else [workload, publisher])
        request = SecretsRequest(
            attest=AttestRequest(
                csr=csr,
                platform=str(platform),
                evidence=evidence(report_data_for(key.spki_der, nonce)),
                nonce=nonce,
                certs=endorsements.certs,
                collateral=endorsements.collateral,
            ),
            names=tuple(names),
        )
        response = self._request(
            "POST", "/v1/secrets", content=request.encode(), headers={"content-type": CONTENT_TYPE}
        )
        answer: SecretsResponse = _decode(SecretsResponse.decode, response.content)
        issued = check_issued(
            AttestResponse(chain=answer.chain, result=answer.result),
            spki_der=key.spki_der,
            nonce=nonce,
            ca=self._ca,
        )
        if issued.claims.workload != workload:
            raise RemoteProtocolError(
                f"Steward released secrets to workload {issued.claims.workload}, not ours"
            )
        if set(answer.sealed) != set(names):
            raise RemoteProtocolError("Steward released other secrets than the ones asked for")
        key_pem = key.private_key_pem()
        try:
            return {
                name: open_secret(answer.sealed[name], key_pem, name=name, nonce=nonce)
                for name in names
            }
        except (SealError, DecodeError) as e:
            raise RemoteProtocolError(f"Steward answer: {e.message}") from e

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as e:
            raise TransportTimeoutError(f"Steward at {self.url} did not answer in time") from e
        except httpx.TransportError as e:
            raise ConnectError(f"cannot reach Steward at {self.url}: {e}") from e
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise RemoteProtocolError(f"Steward answer is over {MAX_RESPONSE_BYTES} bytes")
        if response.status_code == 200:
            return response
        raise _error_from(response)


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """httpx's default context (Mozilla's anchors via certifi), made once per process: making
    it costs ~50 ms, and a Keep talks to Steward up to three times (certificate, secrets,
    renewals)."""
    return httpx.create_ssl_context()


def _decode(decoder: Any, content: bytes) -> Any:
    try:
        return decoder(content)
    except DecodeError as e:
        raise RemoteProtocolError(f"Steward answer: {e.message}") from e


def _error_from(response: httpx.Response) -> Error:
    status = response.status_code
    try:
        body = ErrorBody.decode(response.content)
    except DecodeError:
        text = response.text[:200] if response.content else ""
        return RemoteProtocolError(f"Steward answered HTTP {status} {text}".rstrip())
    if status == 503:
        return StewardBusyError(f"Steward is overloaded: {body.reason}")
    if status == 502:  # a service Steward needed failed (e.g. AMD KDS): not a verdict on us
        return StewardUpstreamError(
            f"Steward could not fetch what it needed to verify the evidence: {body.reason}"
        )
    cls = _NAMED_ERRORS.get(body.error)
    if cls is None:
        return StewardRejectedError(f"Steward answered HTTP {status} {body.error}: {body.reason}")
    return cls(f"Steward: {body.reason}")


__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "IssuedCertificate",
    "StewardBusyError",
    "StewardClient",
    "StewardRejectedError",
    "StewardUpstreamError",
    "check_issued",
    "claims_of",
    "default_tls_context",
]
