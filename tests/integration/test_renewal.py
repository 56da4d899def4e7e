"""A deployed Keep that serves TLS renews its Steward certificate before it expires.

Steward issues certificates that live 12 s here; the echo server in a nil Keep serves two
connections, one before and one after the renewal, and each presents a certificate that chains to
Steward's CA, for the same key and the same Keep name, the second one issued later from fresh
evidence. A Steward that stops accepting the Keep leaves the certificate to expire, and the
workload's stderr says so.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from donjon.client.attested import KeepIdentity
from donjon.client.deploy import DeployOptions, DeployResult, Workload, deploy
from donjon.client.host_api import KeepInfo
from donjon.crypto.ca import certificate_spki, verify_issued
from donjon.crypto.ratls import certificate_pem
from donjon.steward.config import StewardPolicy
from tests.integration.deploy_support import (
    ECHO_TLS_CONFIG,
    EXAMPLES,
    LISTEN_WAIT_S,
    LISTENING,
    ManagerHandle,
    StewardHandle,
    WatchedStream,
    echo_once,
    running_steward,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("dev_key")]

LIFETIME = timedelta(seconds=12)
RENEWED = re.compile(rb"donjon: renewed the Keep's certificate from Steward \(fresh evidence\)")


class _Deployed:
    """The echo server deployed in a thread, its stderr watched."""

    def __init__(self, host: ManagerHandle, steward: StewardHandle, tmp_path: Path, n: int) -> None:
        config = tmp_path / "Enarx.toml"
        config.write_text(ECHO_TLS_CONFIG)
        self.workload = Workload.load(
            EXAMPLES / "echo_server.wasm", config_path=config, args=["-c", str(n)]
        )
        self.options = DeployOptions(
            host=host.url,
            token=host.token,
            steward=steward.url,
            steward_ca=steward.ca,
            insecure=True,
        )
        self.stdout, self.stderr = WatchedStream(), WatchedStream()
        self.verified: list[KeepIdentity] = []
        self.outcome: list[DeployResult | BaseException] = []
        self.ca = steward.ca
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.port = int(self.stderr.wait_for(LISTENING, LISTEN_WAIT_S).group(1))

    def _run(self) -> None:
        def on_verified(_keep: KeepInfo, identity: KeepIdentity) -> None:
            self.verified.append(identity)

        try:
            self.outcome.append(
                deploy(
                    self.workload,
                    self.options,
                    stdout=self.stdout,  # type: ignore[arg-type]
                    stderr=self.stderr,  # type: ignore[arg-type]
                    on_verified=on_verified,
                )
            )
        except BaseException as e:  # reported by the assertions
            self.outcome.append(e)

    def connect(self) -> x509.Certificate:
        """One TLS connection as a client that trusts only Steward's CA; the leaf it saw."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False  # the Keep's name is compared below
        ctx.load_verify_locations(cadata=certificate_pem(self.ca).decode())
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=30)) as c:
            der = c.getpeercert(binary_form=True)
            assert der is not None
            assert echo_once(c, b"renewed?") == b"renewed?"
        return x509.load_der_x509_certificate(der)

    def finish(self) -> DeployResult:
        self.thread.join(LISTEN_WAIT_S)
        assert not self.thread.is_alive(), "deploy did not return"
        result = self.outcome[0]
        assert isinstance(result, DeployResult), result
        return result


def _dns(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.DNSName)


def test_a_serving_keep_presents_a_renewed_certificate_before_the_first_expires(
    host: ManagerHandle, tmp_path: Path
) -> None:
    with running_steward(cert_lifetime=LIFETIME) as steward:
        keep = _Deployed(host, steward, tmp_path, n=2)
        first = keep.connect()
        verified = x509.load_der_x509_certificate(keep.verified[0].certificate_der)
        assert certificate_spki(first) == certificate_spki(verified)
        uris = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [keep.workload.identity]
        keep.stderr.wait_for(RENEWED, LIFETIME.total_seconds() + 10)
        second = keep.connect()
        result = keep.finish()
    assert result.exit_code == 0, bytes(keep.stderr.data)
    assert second.serial_number != first.serial_number
    verify_issued(second, steward.ca)
    assert certificate_spki(second) == certificate_spki(first)  # the same key: it never left
    assert _dns(second) == _dns(first)  # the same Keep name, and the same workload
    renewed = second.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert renewed.get_values_for_type(x509.UniformResourceIdentifier) == [keep.workload.identity]
    assert second.not_valid_after_utc > first.not_valid_after_utc
    # Renewed before the first expired, so no client ever met an expired certificate.
    assert second.not_valid_before_utc < first.not_valid_after_utc
    assert bytes(keep.stdout.data) == b"echo_server: served 2 connections, 16 bytes\n"


def test_a_keep_steward_no_longer_accepts_keeps_its_certificate_until_it_expires(
    host: ManagerHandle, tmp_path: Path
) -> None:
    with running_steward(cert_lifetime=LIFETIME) as steward:
        keep = _Deployed(host, steward, tmp_path, n=1)
        # Steward stops accepting this Keep, as after a TCB revocation or a policy change.
        steward.core.policy = StewardPolicy.production()
        failed = keep.stderr.wait_for(
            re.compile(rb"renewing the Keep's certificate failed \(([^)]*)"),
            LIFETIME.total_seconds() + 10,
        )
        assert b"PolicyError" in failed.group(1) or b"rejected" in failed.group(1), failed
        keep.stderr.wait_for(
            re.compile(rb"the Keep's certificate expired at [0-9T:+-]+: TLS peers refuse it"),
            LIFETIME.total_seconds() + 10,
        )
        with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
            keep.connect()
        # The workload itself runs on: a client that does not check could still connect.
        assert keep.thread.is_alive()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", keep.port), timeout=30)) as c:
            assert echo_once(c, b"late") == b"late"
        assert keep.finish().exit_code == 0
