"""Steward over HTTP: a Starlette ASGI app around :class:`~donjon.steward.core.StewardCore`,
and the uvicorn server that runs it.

Endpoints (normative description: ``docs/protocol.md``)::

    GET  /v1/nonce    -> 200 application/cbor NonceResponse
    POST /v1/attest   application/cbor AttestRequest -> 200 application/cbor AttestResponse
    POST /            application/pkcs10 (Enarx) -> 200 application/pkix-pkipath [CA, leaf]
    GET  /v1/ca       -> 200 CA certificate, PEM (default) or DER (Accept: application/pkix-cert)
    GET  /            -> 200 (Enarx's health check)
    GET  /healthz     -> 200 "ok" (503 when the CA is not valid now)
    GET  /metrics     -> 200 Prometheus text

Rule 1: every error body says what was wrong: CBOR ``{"error": class, "reason": text}``
(``text/plain`` on the Enarx endpoint ``POST /``, whose clients do not read CBOR).
Rule 2: bodies are bounded before they are read (Content-Length, then while streaming): 413.
Rule 3: request handling runs in the event loop: it is CPU-bound and short (~2 ms of ECDSA);
parallelism comes from worker processes (``--workers``), one per core.
Rule 4: no handler writes anything to disk; a rejected request changes nothing but the metrics
and the nonce replay cache.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from donjon.errors import ConfigError, DecodeError, Error
from donjon.steward.config import StewardSettings
from donjon.steward.core import Clock, StewardCore, SystemClock, status_for
from donjon.steward.messages import CONTENT_TYPE, MAX_REQUEST_BYTES, AttestRequest, ErrorBody
from donjon.steward.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from donjon.steward.state import init_state

_logger = logging.getLogger(__name__)

PKCS10_CONTENT_TYPE = "application/pkcs10"
PKIPATH_CONTENT_TYPE = "application/pkix-pkipath"
"""RFC 6066 §10.1: DER ``SEQUENCE OF Certificate``, trust anchor first (what Enarx returns)."""
DER_CERT_CONTENT_TYPE = "application/pkix-cert"
PEM_CONTENT_TYPE = "application/x-pem-file"

BODY_READ_SECONDS = 10.0
"""How long a client may take to send its body (seconds): a trickling client holds a worker's
connection slot, so it is cut off (408) instead of waited for."""

GRACEFUL_SHUTDOWN_SECONDS = 10
"""How long in-flight requests may finish after SIGTERM/SIGINT before connections are closed."""

_ENDPOINTS = frozenset({"/v1/nonce", "/v1/attest", "/", "/v1/ca", "/healthz", "/metrics"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLargeError(Exception):
    pass


class _BodyTimeoutError(Exception):
    pass


class _WrongContentTypeError(Exception):
    def __init__(self, got: str, expected: str) -> None:
        super().__init__(got)
        self.got = got
        self.expected = expected


def _cbor(body: bytes, status: int = 200) -> Response:
    return Response(
        body, status_code=status, media_type=CONTENT_TYPE, headers={"cache-control": "no-store"}
    )


def _error(status: int, error: str, reason: str, *, text: bool = False) -> Response:
    if text:
        return Response(f"{error}: {reason}\n", status_code=status, media_type="text/plain")
    return _cbor(ErrorBody(error=error, reason=reason).encode(), status)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_body(request: Request, *, expected_type: str, limit: int, seconds: float) -> bytes:
    got = _media_type(request)
    if got != expected_type:
        raise _WrongContentTypeError(got, expected_type)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise DecodeError("Content-Length is not a number")
        if int(declared) > limit:
            raise _BodyTooLargeError
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _BodyTooLargeError
    except TimeoutError:
        raise _BodyTimeoutError from None
    return bytes(body)


class StewardApp:
    """The HTTP face of a :class:`StewardCore`.

    Args:
        core: the decisions.
        metrics: where to count (a fresh :class:`Metrics` by default).
        max_body_bytes: request body limit (413 above it).
        body_read_seconds: how long a body may take to arrive (408 after).
    """

    def __init__(
        self,
        core: StewardCore,
        *,
        metrics: Metrics | None = None,
        max_body_bytes: int = MAX_REQUEST_BYTES,
        body_read_seconds: float = BODY_READ_SECONDS,
    ) -> None:
        self.core = core
        self.body_read_seconds = body_read_seconds
        self.metrics = metrics or Metrics(replay_cache_size=lambda: len(core.nonces))
        self.max_body_bytes = max_body_bytes
        self._starlette = Starlette(
            routes=[
                Route("/v1/nonce", self.nonce, methods=["GET"]),
                Route("/v1/attest", self.attest, methods=["POST"]),
                Route("/", self.enarx_attest, methods=["POST"]),
                Route("/", self.health, methods=["GET"]),
                Route("/v1/ca", self.ca, methods=["GET"]),
                Route("/healthz", self.health, methods=["GET"]),
                Route("/metrics", self.render_metrics, methods=["GET"]),
            ],
            exception_handlers={404: self._not_found, 405: self._not_allowed},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._starlette(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in _ENDPOINTS else "other"
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._starlette(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(endpoint, status, time.perf_counter() - start)

    # -- handlers ---------------------------------------------------------------------------

    async def nonce(self, request: Request) -> Response:
        self.metrics.observe_nonce()
        return _cbor(self.core.nonce().encode())

    async def attest(self, request: Request) -> Response:
        try:
            body = await _read_body(
                request,
                expected_type=CONTENT_TYPE,
                limit=self.max_body_bytes,
                seconds=self.body_read_seconds,
            )
            response = self.core.attest_response(AttestRequest.decode(body))
        except (_BodyTooLargeError, _BodyTimeoutError, _WrongContentTypeError, Error) as e:
            return self._rejection(e, text=False)
        except Exception:
            return self._internal_error(text=False)
        self.metrics.observe_verdict(accepted=True, reason="accepted")
        return _cbor(response.encode())

    async def enarx_attest(self, request: Request) -> Response:
        try:
            body = await _read_body(
                request,
                expected_type=PKCS10_CONTENT_TYPE,
                limit=self.max_body_bytes,
                seconds=self.body_read_seconds,
            )
            issued = self.core.attest_pkcs10(body)
        except (_BodyTooLargeError, _BodyTimeoutError, _WrongContentTypeError, Error) as e:
            return self._rejection(e, text=True)
        except Exception:
            return self._internal_error(text=True)
        self.metrics.observe_verdict(accepted=True, reason="accepted")
        return Response(
            self.core.pkix_path(issued),
            media_type=PKIPATH_CONTENT_TYPE,
            headers={"cache-control": "no-store"},
        )

    async def ca(self, request: Request) -> Response:
        accept = request.headers.get("accept", "")
        if DER_CERT_CONTENT_TYPE in accept:
            return Response(self.core.ca.certificate_der, media_type=DER_CERT_CONTENT_TYPE)
        return Response(self.core.ca.certificate_pem, media_type=PEM_CONTENT_TYPE)

    async def health(self, request: Request) -> Response:
        if not self.core.ca.valid_at(self.core.clock.now()):
            return Response("CA certificate not valid now\n", 503, media_type="text/plain")
        return Response("ok\n", media_type="text/plain")

    async def render_metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return _error(
            404, "NotFound", f"no endpoint {request.url.path[:100]}; see docs/protocol.md"
        )

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return _error(
            405,
            "MethodNotAllowed",
            f"{request.method} is not allowed on {request.url.path[:100]}; see docs/protocol.md",
        )

    def _internal_error(self, *, text: bool) -> Response:
        # A bug, not bad input: keep the traceback in the log, give the client a clean body.
        _logger.exception("internal error while handling an attestation")
        self.metrics.observe_verdict(accepted=False, reason="InternalError")
        return _error(500, "InternalError", "Steward failed internally; see its log", text=text)

    def _rejection(self, e: Exception, *, text: bool) -> Response:
        if isinstance(e, _BodyTooLargeError):
            self.metrics.observe_verdict(accepted=False, reason="BodyTooLarge")
            return _error(
                413,
                "BodyTooLarge",
                f"request body is over {self.max_body_bytes} bytes; nothing was read past it",
                text=text,
            )
        if isinstance(e, _BodyTimeoutError):
            self.metrics.observe_verdict(accepted=False, reason="RequestTimeout")
            return _error(
                408,
                "RequestTimeout",
                f"the request body did not arrive within {self.body_read_seconds:g} s",
                text=text,
            )
        if isinstance(e, _WrongContentTypeError):
            self.metrics.observe_verdict(accepted=False, reason="UnsupportedMediaType")
            return _error(
                415,
                "UnsupportedMediaType",
                f"Content-Type is {e.got or 'missing'!r}; this endpoint takes {e.expected}",
                text=text,
            )
        if not isinstance(e, Error):  # pragma: no cover - the caller only passes these
            raise e
        status = status_for(e)
        name = type(e).__name__
        self.metrics.observe_verdict(accepted=False, reason=name)
        if status >= 500:
            _logger.error("request failed: %s: %s", name, e.diagnostics())
        else:
            _logger.info("rejected (%d %s): %s", status, name, e.diagnostics())
        response = _error(status, name, e.diagnostics(), text=text)
        if status == 503:
            response.headers["retry-after"] = "5"
        return response


# ---------------------------------------------------------------------------------------------
# Serving


@dataclass(frozen=True, slots=True)
class Listening:
    """Where a started Steward listens."""

    url: str
    host: str
    port: int


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port.

    Raises:
        ConfigError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then,
    # and without it Nagle + delayed ACKs add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.set_inheritable(True)
    return sock


def listening(sock: socket.socket, *, tls: bool) -> Listening:
    """The URL clients use for a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return Listening(f"{'https' if tls else 'http'}://{shown}:{port}", host, port)


def uvicorn_server(app: ASGIApp, *, tls_cert: str | None = None, tls_key: str | None = None) -> Any:
    """A uvicorn Server for *app* (h11, no lifespan, no access log: metrics count requests)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        http="h11",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )
    return uvicorn.Server(config)


def serve(
    settings: StewardSettings,
    *,
    clock: Clock | None = None,
    announce: Callable[[Listening], None] | None = None,
) -> None:
    """Run Steward until SIGTERM or SIGINT, then finish in-flight requests and return.

    Creates the CA in ``settings.state_dir`` on first start. Binds first, then calls *announce*
    (the CLI prints ``listening on <url>``), so ``port = 0`` works. With ``workers > 1`` the
    socket is shared by forked worker processes; each has its own replay cache and metrics.

    Args:
        settings: validated settings.
        clock: :class:`SystemClock` unless given (the CLI never gives one).
        announce: called once the socket listens.
    """
    clock = clock or SystemClock()
    state = init_state(settings.state_dir, now=clock.now())
    sock = bind_socket(settings.host, settings.port)
    tls = settings.tls_cert is not None
    where = listening(sock, tls=tls)
    tls_cert = str(settings.tls_cert) if settings.tls_cert else None
    tls_key = str(settings.tls_key) if settings.tls_key else None

    def run_one() -> None:
        core = StewardCore(
            state.ca, settings.policy, clock=clock, cert_lifetime=settings.cert_lifetime
        )
        server = uvicorn_server(StewardApp(core), tls_cert=tls_cert, tls_key=tls_key)
        # uvicorn re-raises the signal it caught once it has shut down; a no-op handler turns
        # that into a clean return instead of a kill or a KeyboardInterrupt.
        previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.run(sockets=[sock])
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    if announce is not None:
        announce(where)
    if settings.workers == 1:
        run_one()
    else:
        _run_workers(run_one, settings.workers)
    sock.close()


def _run_workers(run_one: Callable[[], None], workers: int) -> None:
    """Fork *workers* children that each run *run_one*; forward SIGTERM/SIGINT; reap them."""
    children: list[int] = []
    # Buffered output would be written once by each child as well.
    sys.stdout.flush()
    sys.stderr.flush()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                run_one()
            except BaseException:
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            while True:
                try:
                    os.waitpid(child, 0)
                    break
                except ChildProcessError:
                    break
                except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                    continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


__all__ = [
    "GRACEFUL_SHUTDOWN_SECONDS",
    "PKCS10_CONTENT_TYPE",
    "PKIPATH_CONTENT_TYPE",
    "Listening",
    "StewardApp",
    "bind_socket",
    "listening",
    "serve",
    "uvicorn_server",
]
