"""Steward as a real service: uvicorn on 127.0.0.1 port 0, real HTTP through httpx.

Two ways of running it:
- in-process (uvicorn in a thread) with a pinned clock and, for real vectors, a test-only key
  binding: every rejection reason, the Enarx endpoint, the SEV-SNP vector, metrics;
- ``donjon steward serve`` as a subprocess with the real clock: startup on port 0, the happy
  path, SIGTERM, CA persistence across restarts, key mode, TLS, hostile input writing nothing.
"""

from __future__ import annotations

import base64
import importlib.util
import ipaddress
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from donjon.attestation.result import Endorsements
from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import KeyPair, load_certificate, verify_issued
from donjon.crypto.enarx import encode_enarx_snp
from donjon.crypto.jws import verify_jwt
from donjon.crypto.oids import ENARX_KVM, ENARX_SNP
from donjon.errors import FreshnessError, MeasurementError, PolicyError, SignatureError
from donjon.steward.audit import verify_log
from donjon.steward.client import StewardClient, claims_of
from donjon.steward.config import DEV_POLICY_TOML, StewardPolicy
from donjon.steward.core import StewardCore
from donjon.steward.messages import AttestRequest, ErrorBody
from tests.unit.steward._support import (
    SNP_VERIFY_TIME,
    Keep,
    PinnedClock,
    running,
    shared_ca,
    snp_vector,
    vector_core,
)

pytestmark = pytest.mark.integration

CBOR = {"content-type": "application/cbor"}


@pytest.fixture
def clock() -> PinnedClock:
    return PinnedClock()


@pytest.fixture
def keep(tmp_path: Path) -> Keep:
    return Keep(tmp_path)


@pytest.fixture
def dev_url(clock: PinnedClock) -> Iterator[str]:
    with running(StewardCore(shared_ca(), StewardPolicy.dev(), clock=clock)) as url:
        yield url


def _error(response: httpx.Response) -> ErrorBody:
    assert response.headers["content-type"] == "application/cbor"
    return ErrorBody.decode(response.content)


def _nonce(url: str) -> bytes:
    response = httpx.get(f"{url}/v1/nonce")
    assert response.status_code == 200
    nonce: bytes = cbor2.loads(response.content)["nonce"]
    return nonce


# -- in-process service, pinned clock ----------------------------------------------------------


def test_happy_path_through_the_client(dev_url: str, keep: Keep, clock: PinnedClock) -> None:
    ca = shared_ca()
    with StewardClient(dev_url, ca=ca.certificate_pem) as client:
        assert client.ca_certificate() == ca.certificate
        nonce = client.nonce()
        issued = client.attest(keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce)
    verify_issued(issued.certificate, ca.certificate)
    assert issued.claims.nonce == nonce
    assert issued.claims.platform == "nil" and issued.claims.insecure
    assert claims_of(issued.certificate) == issued.claims
    assert issued.certificate.not_valid_after_utc == clock.t + timedelta(hours=24)


def test_client_nonce_through_the_client(dev_url: str, keep: Keep) -> None:
    client_nonce = b"\x07" * 32
    with StewardClient(dev_url, ca=shared_ca().certificate) as client:
        nonce = client.nonce()
        evidence = keep.provider.evidence(report_data_for(keep.key.spki_der, nonce + client_nonce))
        issued = client.attest(
            keep.csr(), evidence, "nil", Endorsements(), nonce, client_nonce=client_nonce
        )
    assert issued.claims.client_nonce == client_nonce
    assert claims_of(issued.certificate).client_nonce == client_nonce


def test_every_rejection_reason_over_http(dev_url: str, keep: Keep, clock: PinnedClock) -> None:
    def post(request: AttestRequest) -> httpx.Response:
        return httpx.post(f"{dev_url}/v1/attest", content=request.encode(), headers=CBOR)

    # Replay: the same request twice.
    request = keep.request(_nonce(dev_url))
    assert post(request).status_code == 200
    replay = post(request)
    assert replay.status_code == 403
    assert _error(replay) == ErrorBody(
        "FreshnessError",
        "nonce was already used (a replayed request or evidence); get a fresh one from "
        "GET /v1/nonce for every attestation",
    )
    # Expired nonce (the pinned clock moves on).
    request = keep.request(_nonce(dev_url))
    clock.advance(seconds=90)
    expired = post(request)
    assert expired.status_code == 403 and _error(expired).error == "FreshnessError"
    assert "expired" in _error(expired).reason
    # Forged nonce.
    forged = keep.request(bytes(57))
    assert post(forged).status_code == 403
    # Evidence binding another key.
    nonce = _nonce(dev_url)
    other = KeyPair.generate()
    bad_key = AttestRequest(keep.csr(), "nil", keep.evidence(nonce, spki=other.spki_der), nonce)
    response = post(bad_key)
    assert response.status_code == 403 and _error(response).error == "MeasurementError"
    # Evidence binding another nonce.
    first, second = _nonce(dev_url), _nonce(dev_url)
    response = post(AttestRequest(keep.csr(), "nil", keep.evidence(first), second))
    assert response.status_code == 403 and _error(response).error == "MeasurementError"
    # A tampered evidence signature.
    nonce = _nonce(dev_url)
    evidence = bytearray(keep.evidence(nonce))
    evidence[-1] ^= 1
    response = post(AttestRequest(keep.csr(), "nil", bytes(evidence), nonce))
    assert response.status_code == 403 and _error(response).error == "SignatureError"
    # Evidence that is not evidence.
    response = post(AttestRequest(keep.csr(), "nil", b"\x00" * 10, _nonce(dev_url)))
    assert response.status_code == 422 and _error(response).error == "EvidenceFormatError"
    # A CSR that is not one; an unknown platform; a DNS name the policy does not allow.
    response = post(keep.request(_nonce(dev_url), csr=b"\x30\x00"))
    assert response.status_code == 400 and _error(response).error == "DecodeError"
    response = post(AttestRequest(keep.csr(), "tpm", b"x", _nonce(dev_url)))
    assert response.status_code == 400 and "unknown platform" in _error(response).reason
    response = post(keep.request(_nonce(dev_url), csr=keep.csr(dns_names=["bank.example"])))
    assert response.status_code == 403 and _error(response).error == "PolicyError"
    # Metrics saw every verdict by its reason.
    metrics = httpx.get(f"{dev_url}/metrics").text
    for reason in ("FreshnessError", "MeasurementError", "SignatureError", "DecodeError"):
        assert f'donjon_steward_verdicts_total{{verdict="reject",reason="{reason}"}}' in metrics
    assert 'donjon_steward_verdicts_total{verdict="accept",reason="accepted"} 1' in metrics


def test_production_policy_refuses_nil_and_the_client_raises_its_reason(
    keep: Keep, clock: PinnedClock
) -> None:
    core = StewardCore(shared_ca(), StewardPolicy.production(), clock=clock)
    with running(core) as url, StewardClient(url) as client:
        nonce = client.nonce()
        with pytest.raises(PolicyError, match="insecure evidence without a TEE") as info:
            client.attest(keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce)
        assert "policy 'production'" in info.value.message
        with pytest.raises(FreshnessError, match="already used"):
            client.attest(keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce)


def test_hostile_http_input(dev_url: str, keep: Keep) -> None:
    url = f"{dev_url}/v1/attest"
    good = keep.request(_nonce(dev_url)).encode()
    wrong_type = httpx.post(url, content=good, headers={"content-type": "application/json"})
    assert wrong_type.status_code == 415
    assert _error(wrong_type).error == "UnsupportedMediaType"
    assert httpx.post(url, content=good).status_code == 415  # no content type at all
    not_cbor = httpx.post(url, content=b"\xff\x00garbage", headers=CBOR)
    assert not_cbor.status_code == 400 and _error(not_cbor).error == "DecodeError"
    unknown = cbor2.loads(good)
    unknown["admin"] = True
    response = httpx.post(url, content=cbor2.dumps(unknown), headers=CBOR)
    assert response.status_code == 400 and "unknown field(s) 'admin'" in _error(response).reason
    huge = httpx.post(url, content=b"\x00" * (1024 * 1024 + 1), headers=CBOR)
    assert huge.status_code == 413 and _error(huge).error == "BodyTooLarge"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(20):
            yield b"\x00" * 65536

    streamed = httpx.post(url, content=chunks(), headers=CBOR)
    assert streamed.status_code == 413
    assert httpx.get(url).status_code == 405
    missing = httpx.get(f"{dev_url}/v2/attest")
    assert missing.status_code == 404 and _error(missing).error == "NotFound"
    # Still serving, and the good request still works.
    assert httpx.post(url, content=good, headers=CBOR).status_code == 200
    assert httpx.get(f"{dev_url}/healthz").text == "ok\n"


def test_a_trickling_body_is_cut_off(keep: Keep, clock: PinnedClock) -> None:
    core = StewardCore(shared_ca(), StewardPolicy.dev(), clock=clock)
    with running(core, body_read_seconds=0.3) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/attest HTTP/1.1\r\nHost: x\r\nContent-Type: application/cbor\r\n"
                b"Content-Length: 100\r\n\r\n\xa1"
            )
            answer = b""
            while b"RequestTimeout" not in answer and (chunk := sock.recv(4096)):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"RequestTimeout" in answer
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_ca_endpoint_pem_and_der(dev_url: str) -> None:
    ca = shared_ca()
    pem = httpx.get(f"{dev_url}/v1/ca")
    assert pem.headers["content-type"] == "application/x-pem-file"
    assert pem.content == ca.certificate_pem
    der = httpx.get(f"{dev_url}/v1/ca", headers={"accept": "application/pkix-cert"})
    assert der.headers["content-type"] == "application/pkix-cert"
    assert der.content == ca.certificate_der
    assert httpx.get(f"{dev_url}/").status_code == 200  # Enarx's health check


def _pkix_path(body: bytes) -> list[x509.Certificate]:
    """Split a DER SEQUENCE OF Certificate (lengths < 64 KiB)."""
    assert body[0] == 0x30
    n = body[1] & 0x7F if body[1] & 0x80 else 0
    pos = 2 + n
    certs = []
    while pos < len(body):
        assert body[pos] == 0x30 and body[pos + 1] == 0x82
        size = 4 + int.from_bytes(body[pos + 2 : pos + 4], "big")
        certs.append(x509.load_der_x509_certificate(body[pos : pos + size]))
        pos += size
    return certs


def test_enarx_endpoint_kvm_and_rejections(dev_url: str, keep: Keep, clock: PinnedClock) -> None:
    pkcs10 = {"content-type": "application/pkcs10"}
    csr = keep.csr(extensions=[(ENARX_KVM, b"")])
    response = httpx.post(f"{dev_url}/", content=csr, headers=pkcs10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pkix-pkipath"
    ca_cert, leaf = _pkix_path(response.content)
    assert ca_cert == shared_ca().certificate
    verify_issued(leaf, ca_cert)
    assert claims_of(leaf).insecure is True
    # Wrong type, garbage, no evidence: plain-text reasons for Enarx clients and curl.
    assert httpx.post(f"{dev_url}/", content=csr, headers=CBOR).status_code == 415
    garbage = httpx.post(f"{dev_url}/", content=b"\x30\x00", headers=pkcs10)
    assert garbage.status_code == 400
    assert garbage.headers["content-type"].startswith("text/plain")
    assert garbage.text.startswith("DecodeError: CSR is not a DER PKCS#10")
    bare = httpx.post(f"{dev_url}/", content=keep.csr(), headers=pkcs10)
    assert bare.status_code == 400 and "no evidence extension" in bare.text
    core = StewardCore(shared_ca(), StewardPolicy.production(), clock=clock)
    with running(core) as url:
        refused = httpx.post(f"{url}/", content=csr, headers=pkcs10)
        assert refused.status_code == 403 and refused.text.startswith("PolicyError: rejected")


def test_real_snp_vector_through_the_service(keep: Keep) -> None:
    vector = snp_vector()
    clock = PinnedClock(SNP_VERIFY_TIME)
    strict = StewardCore(shared_ca(), StewardPolicy.production(), clock=clock)
    bound = vector_core(vector)
    with running(strict) as url, StewardClient(url, ca=shared_ca().certificate) as client:
        nonce = client.nonce()
        with pytest.raises(MeasurementError, match="does not bind"):
            client.attest(keep.csr(), vector.report, "sev-snp", Endorsements((vector.vcek,)), nonce)
    with running(bound) as url, StewardClient(url, ca=shared_ca().certificate) as client:
        nonce = client.nonce()
        issued = client.attest(
            keep.csr(), vector.report, "sev-snp", Endorsements((vector.vcek,)), nonce
        )
        assert issued.claims.platform == "sev-snp"
        assert issued.claims.measurement == vector.measurement
        assert issued.claims.policy == "production" and not issued.claims.insecure
        # Enarx's format of the same vector on POST /.
        enarx_csr = keep.csr(extensions=[(ENARX_SNP, encode_enarx_snp(vector.report, vector.vcek))])
        response = httpx.post(
            f"{url}/", content=enarx_csr, headers={"content-type": "application/pkcs10"}
        )
        assert response.status_code == 200
        _, leaf = _pkix_path(response.content)
        assert claims_of(leaf).measurement == vector.measurement


# -- donjon steward serve, a real process ------------------------------------------------------


class _Serve:
    def __init__(self, state_dir: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "donjon", "steward", "serve", "--listen", "127.0.0.1:0",
             "--state-dir", str(state_dir), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("DONJON_")},
        )  # fmt: skip
        assert self.process.stdout is not None
        self.lines: list[str] = []
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("listening on "):
                self.url = line.split()[-1]
                return
        raise AssertionError(f"steward did not start: {self.process.stderr.read()}")  # type: ignore[union-attr]

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=20)
        return self.process.returncode, out + err


def test_serve_subprocess_lifecycle(tmp_path: Path, keep: Keep) -> None:
    state = tmp_path / "state"
    server = _Serve(state, "--policy", "dev", "--cert-lifetime", "30m")
    try:
        assert server.lines[0].startswith("policy dev sha256:")
        assert server.url.startswith("http://127.0.0.1:")
        key_mode = stat.S_IMODE((state / "ca.key").stat().st_mode)
        assert key_mode == 0o600
        with StewardClient(server.url) as client:
            first_ca = client.ca_certificate()
            nonce = client.nonce()
            issued = client.attest(keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce)
        lifetime = issued.certificate.not_valid_after_utc - issued.certificate.not_valid_before_utc
        assert lifetime == timedelta(minutes=35)  # 30 min plus the 5 min backdating
        before = sorted((p.name, p.stat().st_mtime_ns) for p in state.iterdir())
        # Hostile input writes nothing.
        for body, headers in (
            (b"\x00" * 5000, CBOR),
            (b"junk", {"content-type": "application/pkcs10"}),
            (os.urandom(2000), CBOR),
        ):
            assert (
                httpx.post(f"{server.url}/v1/attest", content=body, headers=headers).status_code
                >= 400
            )
        assert sorted((p.name, p.stat().st_mtime_ns) for p in state.iterdir()) == before
    finally:
        code, output = server.stop()
    assert code == 0, output
    assert "stopped" in output
    assert "Traceback" not in output
    assert "PRIVATE KEY" not in output
    # Restart: the same CA, from the same state directory.
    again = _Serve(state, "--policy", "dev")
    try:
        with StewardClient(again.url, ca=first_ca) as client:
            assert client.ca_certificate() == first_ca
            nonce = client.nonce()
            client.attest(keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce)
    finally:
        code, _ = again.stop()
    assert code == 0


def _tls_files(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, pem


def test_serve_over_tls_with_two_workers(tmp_path: Path, keep: Keep) -> None:
    cert_path, key_path, pem = _tls_files(tmp_path)
    server = _Serve(
        tmp_path / "state",
        "--policy", "dev", "--tls-cert", str(cert_path), "--tls-key", str(key_path),
        "--workers", "2",
    )  # fmt: skip
    try:
        assert server.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cadata=pem.decode())
        with StewardClient(server.url, tls=context) as client:
            for _ in range(4):
                nonce = client.nonce()
                issued = client.attest(
                    keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce
                )
                assert load_certificate(issued.chain_der[1]) == issued.ca
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{server.url}/healthz", verify=ssl.create_default_context())
    finally:
        code, output = server.stop()
    assert code == 0, output


# -- HTTP stacks, request heads, workers -------------------------------------------------------

_STACKS = [
    pytest.param(http, loop, id=f"{http}+{loop}", marks=_needs)
    for http, loop, _needs in (
        ("h11", "asyncio", ()),
        (
            "httptools",
            "uvloop",
            pytest.mark.skipif(
                not all(importlib.util.find_spec(m) for m in ("httptools", "uvloop")),
                reason="httptools and uvloop are optional",
            ),
        ),
    )
]


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send *request*, read until the peer closes or a whole response is in (short reads)."""
    sock.sendall(request)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
        head, sep, body = answer.partition(b"\r\n\r\n")
        if sep and b"content-length: " in head.lower():
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    return answer


def _head_refused(address: tuple[str, int], writes: list[bytes]) -> bool:
    """Whether the server refuses a request head sent as *writes* (never ended by CRLF CRLF):
    a 400 answer, or the connection closed under the sender before the last write."""
    with socket.create_connection(address, timeout=10) as sock:
        try:
            for chunk in writes:
                sock.sendall(chunk)
            answer = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            return True
        return answer.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(("http", "loop"), _STACKS)
def test_every_stack_issues_and_bounds_the_request_head(
    http: str, loop: str, keep: Keep, clock: PinnedClock
) -> None:
    core = StewardCore(shared_ca(), StewardPolicy.dev(), clock=clock)
    with running(core, http=http, loop=loop) as url:
        with StewardClient(url, ca=shared_ca().certificate) as client:
            nonce = client.nonce()
            client.attest(keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce)
        host, port = url.removeprefix("http://").split(":")
        # A head of 15 KiB, trickled in 1 KiB writes, is fine...
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            for i in range(15):
                sock.sendall(b"X-Pad-%02d: " % i + b"a" * 1000 + b"\r\n")
            assert _exchange(sock, b"\r\n").startswith(b"HTTP/1.1 200 ")
        # ...one of 64 KiB is refused (400, connection closed) long before it ends, whether it
        # trickles in or arrives in a single read together with its request line.
        pads = [b"X-Pad-%02d: " % i + b"a" * 1000 + b"\r\n" for i in range(64)]
        request_line = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        assert _head_refused((host, int(port)), [request_line, *pads])
        assert _head_refused((host, int(port)), [request_line + b"".join(pads)])
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_head_allow_and_a_client_that_leaves(dev_url: str) -> None:
    head = httpx.head(f"{dev_url}/healthz")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "3"
    wrong = httpx.delete(f"{dev_url}/v1/nonce")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD"
    assert _error(wrong).error == "MethodNotAllowed"
    assert httpx.get(f"{dev_url}/v1/attest").headers["allow"] == "POST"
    # A client that sends half a body and goes away gets no answer and is no internal error.
    host, port = dev_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/attest HTTP/1.1\r\nHost: x\r\nContent-Type: application/cbor\r\n"
            b"Content-Length: 100\r\n\r\n\xa1"
        )
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    metrics = ""
    while 'endpoint="/v1/attest",status="499"' not in metrics and datetime.now(UTC) < deadline:
        metrics = httpx.get(f"{dev_url}/metrics").text
    assert 'donjon_steward_requests_total{endpoint="/v1/attest",status="499"} 1' in metrics
    assert "InternalError" not in metrics


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                children.append(int(entry))
    return children


def _connections_of(pid: int, port: int) -> int:
    """How many established TCP connections to local *port* process *pid* holds (/proc)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            # local address "0100007F:1F90", state "01" = ESTABLISHED, inode (proc(5))
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
                inodes.add(f"socket:[{fields[9]}]")
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
        except OSError:
            continue
    return count


def test_two_workers_share_connections_and_the_replay_cache(tmp_path: Path, keep: Keep) -> None:
    audit = tmp_path / "audit.jsonl"
    server = _Serve(
        tmp_path / "state", "--policy", "dev", "--workers", "2", "--audit-log", str(audit)
    )
    connections: list[socket.socket] = []
    try:
        host, port = server.url.removeprefix("http://").split(":")
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while len(workers := _children(server.process.pid)) < 2:
            assert datetime.now(UTC) < deadline, "the workers did not start"
        # Each worker accepts on its own SO_REUSEPORT socket: 16 connections reach both.
        for _ in range(16):
            connections.append(socket.create_connection((host, int(port)), timeout=10))
        for sock in connections:
            assert _exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"ok\n")
        held = [_connections_of(pid, int(port)) for pid in workers]
        assert sum(held) == 16 and min(held) > 0, held  # all on one: p = 2 / 2**16
        # A request accepted by one worker is a replay for both.
        body = keep.request(_nonce(server.url)).encode()
        post = b"POST /v1/attest HTTP/1.1\r\nHost: x\r\nContent-Type: application/cbor\r\n"
        post += b"Content-Length: %d\r\n\r\n" % len(body) + body
        answers = [_exchange(sock, post) for sock in connections]
        assert sum(a.startswith(b"HTTP/1.1 200 ") for a in answers) == 1
        assert sum(a.startswith(b"HTTP/1.1 403 ") and b"already used" in a for a in answers) == 15
    finally:
        for sock in connections:
            sock.close()
        code, output = server.stop()
    assert code == 0, output
    # Both workers wrote to one audit log, one chain; each signed a checkpoint as it stopped.
    ca = x509.load_pem_x509_certificate((tmp_path / "state" / "ca.crt").read_bytes())
    report = verify_log(audit.read_bytes(), ca)
    assert report.intact, report.problems
    assert report.events == {"issued": 1, "refused": 15}
    assert report.unsigned_tail == 0 and report.checkpoints >= 1


def test_sighup_reloads_the_policy_in_every_worker(tmp_path: Path, keep: Keep) -> None:
    policy = tmp_path / "team.toml"
    policy.write_text(DEV_POLICY_TOML.replace('name = "dev"', 'name = "team"'))
    server = _Serve(tmp_path / "state", "--policy", str(policy), "--workers", "2")

    def attest_all(n: int) -> set[str]:
        """*n* attestations on fresh connections (so both workers answer): their outcomes."""
        outcomes = set()
        for _ in range(n):
            with StewardClient(server.url) as client:
                nonce = client.nonce()
                try:
                    client.attest(keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce)
                    outcomes.add("issued")
                except PolicyError as e:
                    outcomes.add(str(e))
        return outcomes

    try:
        assert attest_all(8) == {"issued"}
        # The operator tightens the policy: nil evidence is no longer accepted.
        policy.write_text('name = "team"\n')
        server.process.send_signal(signal.SIGHUP)
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while len(outcomes := attest_all(8)) != 1 or "issued" in outcomes:
            assert datetime.now(UTC) < deadline, outcomes  # both workers reload
        [refused] = outcomes
        assert "insecure" in refused
        # A broken policy file leaves the last good policy in force.
        policy.write_text("name = [\n")
        server.process.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert attest_all(8) == {refused}
    finally:
        code, output = server.stop()
    assert code == 0, output
    assert output.count("policy reloaded: 'team' sha256:") == 2  # once per worker
    assert output.count("policy reload failed, 'team' stays in force") == 2


def test_an_ear_on_request_signed_by_the_ca(dev_url: str, keep: Keep) -> None:
    with StewardClient(dev_url) as client:
        nonce = client.nonce()
        plain = client.attest(keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce)
        nonce = client.nonce()
        issued = client.attest(
            keep.csr(), keep.evidence(nonce), "nil", Endorsements(), nonce, want_ear=True
        )
    assert plain.ear is None  # only on request: a client that does not ask gets v1 as before
    ear = issued.ear
    assert ear is not None  # and its signature was verified with the CA key by the client
    assert ear["eat_profile"] == "tag:github.com,2023:veraison/ear"
    assert ear["iat"] == issued.claims.issued_at
    submod = ear["submods"]["nil"]
    assert submod["ear.status"] == "contraindicated"  # nil: memory visible to the host
    assert submod["ear.trustworthiness-vector"]["runtime-opaque"] == 96
    claims = submod["ear.veraison.policy-claims"]
    assert claims["workload"] == issued.claims.workload
    assert claims["certificate_serial"] == f"{issued.certificate.serial_number:x}"
    expected = base64.urlsafe_b64encode(nonce).rstrip(b"=").decode()
    assert ear["eat_nonce"] == expected
    # The JWT verifies with the CA certificate alone, as any relying party would check it.
    body = httpx.post(
        f"{dev_url}/v1/attest",
        content=keep.request(_nonce(dev_url), want_ear=True).encode(),
        headers={"content-type": "application/cbor"},
    )
    token = cbor2.loads(body.content)["ear"]
    ca = load_certificate(httpx.get(f"{dev_url}/v1/ca").content)
    assert verify_jwt(token, ca)["submods"]["nil"]["ear.status"] == "contraindicated"
    with pytest.raises(SignatureError):
        verify_jwt(token, ec.generate_private_key(ec.SECP384R1()).public_key())
