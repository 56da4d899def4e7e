"""The KeepTls seam: real contexts, real handshakes in memory, real certificates."""

from __future__ import annotations

import hashlib
import logging
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from donjon.keep.errors import UnsupportedConfigError
from donjon.keep.sockets.tls import EPHEMERAL_LIFETIME, IdentityTls, UnsafeEphemeralTls
from tests.unit.keep.sockets._pki import TestCA, client_ctx, server_ctx

NOW = datetime.now(UTC).replace(microsecond=0)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str = "localhost") -> None:
    """Run a TLS handshake between two contexts in memory; raise what either side raises."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_side=False, server_hostname=host)
    done = [False, False]
    for _ in range(20):
        for i, (obj, out, peer_in) in enumerate(((c, c_out, s_in), (s, s_out, c_in))):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            if out.pending:
                peer_in.write(out.read())
        if all(done):
            # TLS 1.3: the server checks a client certificate on the client's last flight;
            # a failure reaches the client with its first read.
            try:
                c.read(1)
            except ssl.SSLWantReadError:
                pass
            return
    raise AssertionError("handshake did not finish")


def test_ephemeral_certificate_and_its_fingerprint() -> None:
    tls = UnsafeEphemeralTls.generate(now=NOW)
    cert = x509.load_pem_x509_certificate(tls.certificate_pem)
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest().upper()
    assert tls.fingerprint_sha256 == ":".join(digest[i : i + 2] for i in range(0, 64, 2))
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.not_valid_after_utc == NOW + EPHEMERAL_LIFETIME
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert "PRIVATE" not in repr(tls) and tls.fingerprint_sha256 in repr(tls)
    assert tls.fingerprint_sha256 in tls.describe() and "not attested" in tls.describe()


def test_ephemeral_tls_serves_a_pinned_client_and_warns_on_every_use(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls = UnsafeEphemeralTls.generate(now=NOW)
    with caplog.at_level(logging.WARNING, logger="donjon.keep.sockets.tls"):
        server = tls.server_context(client_ca=None)
        tls.client_context(server_ca=TestCA().pem)
    warnings = [r for r in caplog.records if tls.fingerprint_sha256 in r.getMessage()]
    assert len(warnings) == 2
    assert server.minimum_version is ssl.TLSVersion.TLSv1_3
    handshake(server, client_ctx(tls.certificate_pem))


def test_identity_tls_requires_client_certificates_from_client_ca() -> None:
    ca, clients = TestCA(), TestCA("clients")
    leaf = ca.issue("keep")
    identity = IdentityTls(leaf.key_pem, leaf.cert_pem)
    assert "BEGIN" not in repr(identity)
    open_server = identity.server_context(client_ca=None)
    assert open_server.verify_mode is ssl.CERT_NONE
    handshake(open_server, client_ctx(ca.pem))
    strict = identity.server_context(client_ca=clients.pem)
    assert strict.verify_mode is ssl.CERT_REQUIRED
    handshake(strict, client_ctx(ca.pem, cert=clients.issue("alice", client=True)))
    with pytest.raises(ssl.SSLError):
        handshake(strict, client_ctx(ca.pem))  # no certificate
    with pytest.raises(ssl.SSLError):
        handshake(strict, client_ctx(ca.pem, cert=TestCA("x").issue("mallory", client=True)))


def test_identity_tls_verifies_servers_against_server_ca_and_the_host_name() -> None:
    ca = TestCA()
    keep_leaf = TestCA("keeps").issue("keep", client=True)
    identity = IdentityTls(keep_leaf.key_pem, keep_leaf.cert_pem)
    good = server_ctx(ca.issue("db", dns=("db.internal",), ips=()))
    client = identity.client_context(server_ca=ca.pem)
    assert client.minimum_version is ssl.TLSVersion.TLSv1_3
    handshake(good, client, host="db.internal")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(good, identity.client_context(server_ca=ca.pem), host="other.internal")
    stranger = server_ctx(TestCA("stranger").issue("db", dns=("db.internal",)))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(stranger, identity.client_context(server_ca=ca.pem), host="db.internal")


def test_an_intermediate_can_be_the_anchor() -> None:
    ca = TestCA()
    leaf = ca.issue("k")
    identity = IdentityTls(leaf.key_pem, leaf.cert_pem)
    client = identity.client_context(server_ca=ca.pem)
    assert client.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN


def test_without_server_ca_the_runtime_anchors_are_used_not_the_hosts() -> None:
    leaf = TestCA().issue("k")
    ctx = IdentityTls(leaf.key_pem, leaf.cert_pem).client_context(server_ca=None)
    import certifi

    bundled = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    assert ctx.cert_store_stats()["x509_ca"] == bundled > 100


def test_bad_anchor_text_is_a_config_error() -> None:
    leaf = TestCA().issue("k")
    with pytest.raises(UnsupportedConfigError, match="trust anchors cannot be loaded"):
        IdentityTls(leaf.key_pem, leaf.cert_pem).server_context(
            client_ca="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
