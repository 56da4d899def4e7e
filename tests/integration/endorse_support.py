"""A small AMD KDS + Intel PCS emulator for tests: real HTTP on 127.0.0.1 (port 0) serving the
real files of ``shared/vectors`` at the paths those services use, recording every request.

The routes are derived from the vectors themselves, not from ``donjon.endorse``: a VCEK is served
at the path and query named by its own AMD extensions (productName, hwID, SPLs), so a fetcher that
builds a wrong URL gets a 404. Queries match as a real server reads them: parameter order and
zero padding do not matter.

Misbehaviour on demand (:meth:`Emulator.misbehave`): another status, a garbage or oversized body,
a delay before answering, a trickled body, extra headers, or a sequence of answers.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"

_AMD = "1.3.6.1.4.1.3704.1"
_SPL_NAMES = {1: "bl", 2: "tee", 3: "snp", 8: "ucode", 9: "fmc"}


@dataclass
class Answer:
    """How the emulator answers one path."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    trickle: float = 0.0  # seconds between 1-byte chunks of the body (0: all at once)
    chunked: bool = False  # no Content-Length: the body ends when the connection closes


def _normalize(path_query: str) -> str:
    """Path plus a canonical query: sorted, SPL values as plain integers, FMSPC upper-case."""
    parts = urlsplit(path_query)
    pairs = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.endswith("SPL") and value.isdigit():
            value = str(int(value))
        elif name == "fmspc":
            value = value.upper()
        pairs.append((name, value))
    query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    return f"{parts.path}?{query}" if query else parts.path


def _der_int(raw: bytes) -> int:
    assert raw[0] == 0x02 and raw[1] == len(raw) - 2, "not a short DER INTEGER"
    return int.from_bytes(raw[2:], "big")


def vcek_path(vcek_der: bytes) -> str:
    """The KDS path and query at which AMD serves *vcek_der*, read from its own extensions."""
    with warnings.catch_warnings():
        # AMD VCEKs carry serial number 0, which cryptography deprecates (TOOLING.md P11).
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        cert = x509.load_der_x509_certificate(vcek_der)
    product = hw_id = None
    spls: dict[str, int] = {}
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        value = ext.value
        if not oid.startswith(_AMD) or not isinstance(value, x509.UnrecognizedExtension):
            continue
        raw = value.value
        if oid == f"{_AMD}.2":
            product = raw[2:].decode("ascii").split("-")[0]  # IA5String "Milan-B0" -> "Milan"
        elif oid == f"{_AMD}.4":
            hw_id = raw
        elif oid.startswith(f"{_AMD}.3."):
            number = int(oid.rsplit(".", 1)[1])
            if number in _SPL_NAMES:
                spls[_SPL_NAMES[number]] = _der_int(raw)
    assert product and hw_id, "not a VCEK"
    query = "&".join(f"{name}SPL={value}" for name, value in spls.items())
    return _normalize(f"/vcek/v1/{product}/{hw_id.hex()}?{query}")


def kds_routes(*vector_dirs: str) -> dict[str, Answer]:
    """The VCEK of each ``sev-snp/<dir>``, and the ASK/ARK chain of each product line."""
    routes: dict[str, Answer] = {}
    for name in vector_dirs:
        vcek = (VECTORS / "sev-snp" / name / "vcek.der").read_bytes()
        routes[vcek_path(vcek)] = Answer(vcek)
    for product in ("Milan", "Genoa", "Turin"):
        chain = (VECTORS / "sev-snp" / "roots" / f"{product.lower()}-vcek-ask-ark.pem").read_bytes()
        routes[f"/vcek/v1/{product}/cert_chain"] = Answer(chain)
    return routes


def _chain_header(path: Path) -> str:
    # Intel sends the issuer chain as URL-encoded PEM (PCS API v4).
    return quote(path.read_bytes().decode("ascii"), safe="")


def pcs_routes(collateral: str, *, tee: str, fmspc: str) -> dict[str, Answer]:
    """Intel PCS (PCCS paths) for one collateral directory of the vectors (``sgx/...`` or
    ``tdx/...``): TCB info, QE identity, the platform CA CRL, and the root CA CRL."""
    folder = VECTORS / collateral
    roots = VECTORS / tee / "roots"
    tcb_chain = _chain_header(roots / "intel-tcb-signing-chain-2025.pem")
    base = f"/{tee}/certification/v4"
    return {
        _normalize(f"{base}/tcb?fmspc={fmspc}"): Answer(
            (folder / "tcbinfo.json").read_bytes(), headers={"TCB-Info-Issuer-Chain": tcb_chain}
        ),
        f"{base}/qe/identity": Answer(
            (folder / "qe-identity.json").read_bytes(),
            headers={"SGX-Enclave-Identity-Issuer-Chain": tcb_chain},
        ),
        _normalize("/sgx/certification/v4/pckcrl?ca=platform&encoding=der"): Answer(
            (folder / "pck-crl-platform.der").read_bytes(),
            headers={
                "SGX-PCK-CRL-Issuer-Chain": _chain_header(roots / "intel-pck-platform-ca-chain.pem")
            },
        ),
        "/sgx/certification/v4/rootcacrl": Answer(
            (roots / "intel-root-ca-crl-2025-03-20.der").read_bytes()
        ),
    }


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that drops the connection (as ours does on an oversized or slow answer)
        # is expected here, not an error worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Seen:
    """One request the emulator received."""

    path: str  # path and query as sent
    headers: dict[str, str]


class Emulator:
    """KDS and PCS on one loopback port. Use as a context manager."""

    def __init__(self, routes: dict[str, Answer]) -> None:
        self.routes = dict(routes)
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._sequences: dict[str, list[Answer]] = {}
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                emulator._serve(self)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Emulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def paths(self) -> list[str]:
        """The paths (with queries) requested so far, in order."""
        with self._lock:
            return [s.path for s in self.requests]

    def misbehave(self, prefix: str, *answers: Answer) -> None:
        """Answer requests whose path starts with *prefix* with *answers*, in turn (the last
        one repeats)."""
        with self._lock:
            self._sequences[prefix] = list(answers)

    def _answer_for(self, path: str) -> Answer | None:
        with self._lock:
            for prefix, answers in self._sequences.items():
                if path.startswith(prefix):
                    return answers.pop(0) if len(answers) > 1 else answers[0]
        return self.routes.get(_normalize(path))

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append(Seen(handler.path, dict(handler.headers.items())))
        answer = self._answer_for(handler.path)
        if answer is None:
            answer = Answer(b"not found\n", status=404)
        if answer.delay:
            time.sleep(answer.delay)
        try:
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            if answer.chunked:
                handler.send_header("Connection", "close")
                handler.close_connection = True
            else:
                handler.send_header("Content-Length", str(len(answer.body)))
            handler.end_headers()
            if answer.trickle:
                for i in range(len(answer.body)):
                    handler.wfile.write(answer.body[i : i + 1])
                    handler.wfile.flush()
                    time.sleep(answer.trickle)
            else:
                handler.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should on a slow or oversized answer


@contextmanager
def emulator(routes: dict[str, Answer]) -> Iterator[Emulator]:
    """An :class:`Emulator` serving *routes*, stopped afterwards."""
    with Emulator(routes) as e:
        yield e
