"""Certificate renewal in a serving Keep: the schedule (pure), the listener contexts that switch
to a renewed chain (real TLS over a socket pair), and the renewer thread with a real CA."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from donjon.crypto.ca import CertificateAuthority, KeyPair, LeafProfile
from donjon.crypto.ratls import certificate_pem
from donjon.errors import PolicyError
from donjon.keep.renewal import (
    MAX_RETRY_S,
    MIN_RETRY_S,
    CertificateRenewer,
    leaf_validity,
    renewal_due,
    retry_delay,
)
from donjon.keep.sockets.tls import IdentityTls

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


# -- the schedule -------------------------------------------------------------------------------


def test_renewal_is_due_two_thirds_of_the_way_from_receipt_to_expiry() -> None:
    assert renewal_due(T0, T0 + timedelta(hours=24)) == T0 + timedelta(hours=16)
    assert renewal_due(T0, T0 + timedelta(seconds=12)) == T0 + timedelta(seconds=8)


def test_a_nearly_expired_certificate_is_not_renewed_at_once_over_and_over() -> None:
    assert renewal_due(T0, T0 + timedelta(milliseconds=30)) == T0 + timedelta(seconds=MIN_RETRY_S)
    assert renewal_due(T0, T0 - timedelta(hours=1)) == T0 + timedelta(seconds=MIN_RETRY_S)


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (timedelta(hours=8), MAX_RETRY_S),
        (timedelta(seconds=80), 10.0),
        (timedelta(seconds=2), MIN_RETRY_S),
        (timedelta(seconds=-30), MIN_RETRY_S),
    ],
)
def test_retry_delay_is_an_eighth_of_what_is_left_within_bounds(
    left: timedelta, expected: float
) -> None:
    assert retry_delay(T0 + left, T0) == expected


# -- real certificates ---------------------------------------------------------------------------


def _issuer() -> CertificateAuthority:
    return CertificateAuthority.create(now=datetime.now(UTC) - timedelta(minutes=1))


def _chain(ca: CertificateAuthority, key: KeyPair, lifetime: timedelta) -> bytes:
    now = datetime.now(UTC)
    leaf = ca.issue(
        LeafProfile(
            spki_der=key.spki_der,
            common_name="k.keep.donjon.invalid",
            dns_names=("k.keep.donjon.invalid",),
            uris=(),
            not_before=now - timedelta(seconds=1),
            not_after=now + lifetime,
        )
    )
    return certificate_pem(leaf) + ca.certificate_pem


def _handshake(ctx: ssl.SSLContext) -> x509.Certificate:
    """One TLS 1.3 handshake against *ctx* over a socket pair; the leaf the client saw."""
    server_sock, client_sock = socket.socketpair()
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    done: list[BaseException] = []

    def serve() -> None:
        try:
            with ctx.wrap_socket(server_sock, server_side=True) as tls:
                tls.recv(1)
        except BaseException as e:  # reported below
            done.append(e)

    thread = threading.Thread(target=serve)
    thread.start()
    with client_ctx.wrap_socket(client_sock) as tls:
        der = tls.getpeercert(binary_form=True)
        tls.sendall(b"x")
    thread.join(10)
    assert not done, done
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_listeners_switch_to_a_renewed_chain_for_new_handshakes() -> None:
    ca, key = _issuer(), KeyPair.generate("P-384")
    first, second = _chain(ca, key, timedelta(hours=1)), _chain(ca, key, timedelta(hours=2))
    tls = IdentityTls(key.private_key_pem(), first)
    plain = tls.server_context(client_ca=None)
    mutual = tls.server_context(client_ca=ca.certificate_pem.decode())
    before = _handshake(plain)
    tls.renew(second)
    after = _handshake(plain)
    assert tls.chain_pem == second
    assert after.serial_number != before.serial_number
    assert after.not_valid_after_utc > before.not_valid_after_utc
    # A listener with client certificates keeps requiring them after the switch.
    assert mutual.verify_mode is ssl.CERT_REQUIRED
    assert tls._current_context(ca.certificate_pem.decode()).verify_mode is ssl.CERT_REQUIRED


def test_a_chain_for_another_key_is_refused_and_changes_nothing() -> None:
    ca, key = _issuer(), KeyPair.generate("P-384")
    first = _chain(ca, key, timedelta(hours=1))
    tls = IdentityTls(key.private_key_pem(), first)
    with pytest.raises(ssl.SSLError):
        tls.renew(_chain(ca, KeyPair.generate("P-384"), timedelta(hours=1)))
    assert tls.chain_pem == first
    assert _handshake(tls.server_context(client_ca=None)).serial_number == (
        x509.load_pem_x509_certificate(first).serial_number
    )


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_the_renewer_renews_before_expiry_and_says_so() -> None:
    ca, key = _issuer(), KeyPair.generate("P-384")
    tls = IdentityTls(key.private_key_pem(), _chain(ca, key, timedelta(seconds=3)))
    notices: list[str] = []
    calls: list[float] = []

    def recertify() -> bytes:
        calls.append(time.monotonic())
        return _chain(ca, key, timedelta(hours=1))

    renewer = CertificateRenewer(tls, recertify, notices.append)
    started = time.monotonic()
    renewer.start()
    try:
        _wait(lambda: bool(notices), 10)
    finally:
        renewer.stop()
    assert len(calls) == 1
    # Two thirds of 2-3 s (X.509 times are whole seconds; the exact schedule is renewal_due's
    # test); generous above, as a loaded machine may wake the thread late.
    assert 1.0 <= calls[0] - started < 5.0
    _, not_after = leaf_validity(tls.chain_pem)
    assert not_after > datetime.now(UTC) + timedelta(minutes=50)
    assert notices == [
        "renewed the Keep's certificate from Steward (fresh evidence); valid until "
        + not_after.isoformat(timespec="seconds")
    ]


def test_a_refused_renewal_is_retried_and_the_expiry_is_told_once() -> None:
    ca, key = _issuer(), KeyPair.generate("P-384")
    chain = _chain(ca, key, timedelta(seconds=2))
    tls = IdentityTls(key.private_key_pem(), chain)
    notices: list[str] = []

    def refuse() -> bytes:
        raise PolicyError("rejected: the TCB is out of date")

    renewer = CertificateRenewer(tls, refuse, notices.append)
    renewer.start()
    try:
        _wait(lambda: any("expired" in n for n in notices), 10)
        time.sleep(1.5)  # at least one more retry after the expiry
    finally:
        renewer.stop()
    failures = [n for n in notices if n.startswith("renewing the Keep's certificate failed")]
    assert len(failures) >= 2
    assert "rejected: the TCB is out of date" in failures[0]
    assert sum("expired" in n for n in notices) == 1
    assert tls.chain_pem == chain  # nothing replaced it


def test_stop_returns_promptly_while_waiting() -> None:
    ca, key = _issuer(), KeyPair.generate("P-384")
    tls = IdentityTls(key.private_key_pem(), _chain(ca, key, timedelta(hours=24)))
    renewer = CertificateRenewer(tls, lambda: b"", lambda _text: None)
    renewer.start()
    started = time.monotonic()
    renewer.stop()
    assert time.monotonic() - started < 2.0
