"""Steward over HTTP: a plain ASGI app around :class:`~donjon.steward.core.StewardCore`, and
the uvicorn server that runs it.

Endpoints (normative description: ``docs/protocol.md``)::

    GET  /v1/nonce    -> 200 application/cbor NonceResponse
    POST /v1/attest   application/cbor AttestRequest -> 200 application/cbor AttestResponse
    POST /v1/secrets  application/cbor SecretsRequest -> 200 application/cbor SecretsResponse
    POST /            application/pkcs10 (Enarx) -> 200 application/pkix-pkipath [CA, leaf]
    GET  /v1/ca       -> 200 CA certificate, PEM (default) or DER (Accept: application/pkix-cert)
    GET  /            -> 200 (Enarx's health check)
    GET  /healthz     -> 200 "ok" (503 when the CA is not valid now)
    GET  /metrics     -> 200 Prometheus text

(``HEAD`` is answered wherever ``GET`` is.)

Rule 1: every error body says what was wrong: CBOR ``{"error": class, "reason": text}``
(``text/plain`` on the Enarx endpoint ``POST /``, whose clients do not read CBOR).
Rule 2: bodies are bounded before they are read (Content-Length, then while streaming): 413.
Rule 3: request handling runs in the event loop: it is CPU-bound and short (~3 ms, mostly four
P-384 operations); parallelism comes from worker processes (``--workers``). The one exception is
fetching endorsements a Keep did not send (``--fetch-endorsements``): when they are not already
in memory, that runs in a thread (``asyncio.to_thread``), so a slow AMD KDS or Intel PCS never
stalls the loop; requests that need nothing fetched never leave it.
Rule 4: no handler writes anything to disk but the audit log (``--audit-log``: one line per
decision); a rejected request changes nothing else but the metrics and the nonce replay cache.
``/v1/secrets`` reads the released secrets from the state directory's secret store (small
files, read whole).

Eight fixed routes need no framework: a dict from path to method to handler, and one response
shape. Against Starlette's routing, request and response objects this saves ~70,000 instructions
per request (``docs/performance.md``), on a path every Keep takes twice per certificate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from donjon.errors import ConfigError, DecodeError, Error
from donjon.steward._http import bind_sockets, http_protocol, loop_name
from donjon.steward.audit import AuditLog
from donjon.steward.config import StewardPolicy, StewardSettings
from donjon.steward.core import Clock, EndorsementSource, StewardCore, SystemClock, status_for
from donjon.steward.messages import (
    CONTENT_TYPE,
    MAX_REQUEST_BYTES,
    AttestRequest,
    ErrorBody,
    SecretsRequest,
)
from donjon.steward.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from donjon.steward.nonce import SharedReplayCache
from donjon.steward.secrets import SecretStore
from donjon.steward.state import StewardState, init_state
from donjon.steward.tenants import TenantRouter, find_tenants

AUDIT_FILE = "audit.jsonl"
"""A tenant's audit log in its state directory (with ``--audit-log``)."""

_logger = logging.getLogger(__name__)

PKCS10_CONTENT_TYPE = "application/pkcs10"
PKIPATH_CONTENT_TYPE = "application/pkix-pkipath"
"""RFC 6066 §10.1: DER ``SEQUENCE OF Certificate``, trust anchor first (what Enarx returns)."""
DER_CERT_CONTENT_TYPE = "application/pkix-cert"
PEM_CONTENT_TYPE = "application/x-pem-file"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

BODY_READ_SECONDS = 10.0
"""How long a client may take to send its body (seconds): a trickling client holds a worker's
connection slot, so it is cut off (408) instead of waited for."""

GRACEFUL_SHUTDOWN_SECONDS = 10
"""How long in-flight requests may finish after SIGTERM/SIGINT before connections are closed."""

MAX_SHOWN_PATH_CHARS = 100
"""Longest request path quoted back in a 404/405 explanation (characters)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLargeError(Exception):
    pass


class _BodyTimeoutError(Exception):
    pass


class _DisconnectedError(Exception):
    """The client went away before its body arrived: nothing to answer."""


class _WrongContentTypeError(Exception):
    def __init__(self, got: str, expected: str) -> None:
        super().__init__(got)
        self.got = got
        self.expected = expected


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    content_type: str
    body: bytes
    no_store: bool = False
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _cbor(body: bytes, status: int = 200) -> _Reply:
    return _Reply(status, CONTENT_TYPE, body, no_store=True)


def _error(status: int, error: str, reason: str, *, text: bool = False) -> _Reply:
    if text:
        return _Reply(status, TEXT_CONTENT_TYPE, f"{error}: {reason}\n".encode())
    return _cbor(ErrorBody(error=error, reason=reason).encode(), status)


def _header(scope: Scope, name: bytes) -> str:
    """The first value of header *name* (lowercase bytes), or ""."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _media_type(scope: Scope) -> str:
    return _header(scope, b"content-type").split(";", 1)[0].strip().lower()


async def _read_body(
    scope: Scope, receive: Receive, *, expected_type: str, limit: int, seconds: float
) -> bytes:
    got = _media_type(scope)
    if got != expected_type:
        raise _WrongContentTypeError(got, expected_type)
    declared = _header(scope, b"content-length")
    if declared:
        if not declared.isdigit():
            raise DecodeError("Content-Length is not a number")
        if int(declared) > limit:
            raise _BodyTooLargeError
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _DisconnectedError
                body += message.get("body", b"")
                if len(body) > limit:
                    raise _BodyTooLargeError
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise _BodyTimeoutError from None
    return bytes(body)


Handler = Callable[[Scope, Receive], Awaitable[_Reply]]


class StewardApp:
    """The HTTP face of a :class:`StewardCore` (an ASGI 3 application).

    Args:
        core: the decisions.
        metrics: where to count (a fresh :class:`Metrics` by default).
        max_body_bytes: request body limit (413 above it).
        body_read_seconds: how long a body may take to arrive (408 after).
        on_close: called by :meth:`close` (``serve`` passes the audit log's ``close``).
        policy_loader: reads the policy again for :meth:`reload`; None: no reloading.
    """

    def __init__(
        self,
        core: StewardCore,
        *,
        metrics: Metrics | None = None,
        max_body_bytes: int = MAX_REQUEST_BYTES,
        body_read_seconds: float = BODY_READ_SECONDS,
        on_close: Callable[[], None] | None = None,
        policy_loader: Callable[[], StewardPolicy] | None = None,
    ) -> None:
        self.core = core
        self._on_close = on_close
        self._policy_loader = policy_loader
        self.body_read_seconds = body_read_seconds
        self.metrics = metrics or Metrics(
            replay_cache_size=lambda: len(core.nonces),
            endorsement_fetches=core.endorsement_outcomes if core.fetches_endorsements else None,
        )
        self.max_body_bytes = max_body_bytes
        self._routes: dict[str, dict[str, Handler]] = {
            "/v1/nonce": {"GET": self.nonce},
            "/v1/attest": {"POST": self.attest},
            "/v1/secrets": {"POST": self.secrets},
            "/": {"POST": self.enarx_attest, "GET": self.health},
            "/v1/ca": {"GET": self.ca},
            "/healthz": {"GET": self.health},
            "/metrics": {"GET": self.render_metrics},
        }

    def close(self) -> None:
        """Release what the app holds once serving has stopped (the audit log, if any)."""
        if self._on_close is not None:
            self._on_close()

    def reload(self) -> None:
        """Read the policy again (``serve`` calls this on SIGHUP). A policy that does not load
        leaves the current one in force, and the log says why."""
        if self._policy_loader is None:
            return
        try:
            policy = self._policy_loader()
        except Error as e:
            _logger.error("policy reload failed, '%s' stays in force: %s", self.core.policy.name, e)
            return
        self.core.set_policy(policy)
        _logger.warning("policy reloaded: '%s' sha256:%s", policy.name, policy.digest.hex())
        if policy.allow_insecure:
            _logger.warning(
                "policy '%s' accepts insecure evidence (nil: no TEE); use it for development only",
                policy.name,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":  # not offered: the server answers 403
                await send({"type": "websocket.close", "code": 1008})
            return
        start = time.perf_counter()
        path: str = scope["path"]
        methods = self._routes.get(path)
        endpoint = path if methods is not None else "other"
        try:
            reply = await self._dispatch(scope, receive, path, methods)
        except _DisconnectedError:
            self.metrics.observe_request(endpoint, 499, time.perf_counter() - start)
            return
        headers = [
            (b"content-type", reply.content_type.encode("latin-1")),
            (b"content-length", str(len(reply.body)).encode("ascii")),
        ]
        if reply.no_store:
            headers.append((b"cache-control", b"no-store"))
        headers.extend(reply.headers)
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        self.metrics.observe_request(endpoint, reply.status, time.perf_counter() - start)

    async def _dispatch(
        self, scope: Scope, receive: Receive, path: str, methods: dict[str, Handler] | None
    ) -> _Reply:
        shown = path[:MAX_SHOWN_PATH_CHARS]
        if methods is None:
            return _error(404, "NotFound", f"no endpoint {shown}; see docs/protocol.md")
        method: str = scope["method"]
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            allowed = sorted({*methods, "HEAD"} if "GET" in methods else methods)
            reply = _error(
                405,
                "MethodNotAllowed",
                f"{method[:16]} is not allowed on {shown}; see docs/protocol.md",
            )
            allow = (b"allow", ", ".join(allowed).encode("ascii"))
            return _Reply(reply.status, reply.content_type, reply.body, True, (allow,))
        try:
            return await handler(scope, receive)
        except _DisconnectedError:
            raise
        except Exception:
            # A bug, not bad input: keep the traceback in the log, give the client a clean body.
            _logger.exception("internal error while handling %s %s", method[:16], shown)
            return _error(500, "InternalError", "Steward failed internally; see its log")

    # -- handlers ---------------------------------------------------------------------------

    async def nonce(self, scope: Scope, receive: Receive) -> _Reply:
        self.metrics.observe_nonce()
        return _cbor(self.core.nonce().encode())

    async def attest(self, scope: Scope, receive: Receive) -> _Reply:
        async def handle(body: bytes) -> bytes:
            request = AttestRequest.decode(body)
            if self.core.fetches_endorsements:
                request = await self._endorse(request)
            return self.core.attest_response(request).encode()

        return await self._cbor_post(scope, receive, handle)

    async def secrets(self, scope: Scope, receive: Receive) -> _Reply:
        async def handle(body: bytes) -> bytes:
            request = SecretsRequest.decode(body)
            if self.core.fetches_endorsements:
                attest = await self._endorse(request.attest)
                request = dataclasses.replace(request, attest=attest)
            return self.core.release(request).encode()

        return await self._cbor_post(scope, receive, handle)

    async def _cbor_post(
        self, scope: Scope, receive: Receive, handle: Callable[[bytes], Awaitable[bytes]]
    ) -> _Reply:
        """A CBOR request in, a CBOR answer out: the body bounded, every refusal explained."""
        try:
            body = await _read_body(
                scope,
                receive,
                expected_type=CONTENT_TYPE,
                limit=self.max_body_bytes,
                seconds=self.body_read_seconds,
            )
            answer = await handle(body)
        except (_BodyTooLargeError, _BodyTimeoutError, _WrongContentTypeError, Error) as e:
            return self._rejection(e, text=False)
        except _DisconnectedError:
            raise
        except Exception:
            return self._internal_error(text=False)
        self.metrics.observe_verdict(accepted=True, reason="accepted")
        return _cbor(answer)

    async def _endorse(self, request: AttestRequest) -> AttestRequest:
        """Complete the request's endorsements: in the loop from memory, else in a thread."""
        ready = self.core.endorse_without_io(request)
        if ready is None:
            ready = await asyncio.to_thread(self.core.endorse, request)
        return ready

    async def enarx_attest(self, scope: Scope, receive: Receive) -> _Reply:
        try:
            body = await _read_body(
                scope,
                receive,
                expected_type=PKCS10_CONTENT_TYPE,
                limit=self.max_body_bytes,
                seconds=self.body_read_seconds,
            )
            issued = self.core.attest_pkcs10(body)
        except (_BodyTooLargeError, _BodyTimeoutError, _WrongContentTypeError, Error) as e:
            return self._rejection(e, text=True)
        except _DisconnectedError:
            raise
        except Exception:
            return self._internal_error(text=True)
        self.metrics.observe_verdict(accepted=True, reason="accepted")
        return _Reply(200, PKIPATH_CONTENT_TYPE, self.core.pkix_path(issued), no_store=True)

    async def ca(self, scope: Scope, receive: Receive) -> _Reply:
        if DER_CERT_CONTENT_TYPE in _header(scope, b"accept"):
            return _Reply(200, DER_CERT_CONTENT_TYPE, self.core.ca.certificate_der)
        return _Reply(200, PEM_CONTENT_TYPE, self.core.ca.certificate_pem)

    async def health(self, scope: Scope, receive: Receive) -> _Reply:
        if not self.core.ca.valid_at(self.core.clock.now()):
            return _Reply(503, TEXT_CONTENT_TYPE, b"CA certificate not valid now\n")
        return _Reply(200, TEXT_CONTENT_TYPE, b"ok\n")

    async def render_metrics(self, scope: Scope, receive: Receive) -> _Reply:
        return _Reply(200, PROMETHEUS_CONTENT_TYPE, self.metrics.render().encode())

    def _internal_error(self, *, text: bool) -> _Reply:
        # A bug, not bad input: keep the traceback in the log, give the client a clean body.
        _logger.exception("internal error while handling an attestation")
        self.metrics.observe_verdict(accepted=False, reason="InternalError")
        return _error(500, "InternalError", "Steward failed internally; see its log", text=text)

    def _rejection(self, e: Exception, *, text: bool) -> _Reply:
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
        if status >= 500 and getattr(e, "retry_in", None) is None:
            _logger.error("request failed: %s: %s", name, e.diagnostics())
        elif status >= 500:
            # A remembered endorsement failure, a paused service or a spent fetch budget: no
            # upstream request was made, and a client must not be able to flood the log with them.
            _logger.info("refused without fetching (%d %s): %s", status, name, e.diagnostics())
        else:
            _logger.info("rejected (%d %s): %s", status, name, e.diagnostics())
        reply = _error(status, name, e.diagnostics(), text=text)
        if status == 503:
            retry = ((b"retry-after", b"5"),)
            return _Reply(reply.status, reply.content_type, reply.body, reply.no_store, retry)
        return reply


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
    return bind_sockets(host, port, 1)[0]


def listening(sock: socket.socket, *, tls: bool) -> Listening:
    """The URL clients use for a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return Listening(f"{'https' if tls else 'http'}://{shown}:{port}", host, port)


def uvicorn_server(
    app: ASGIApp,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    http: str | None = None,
    loop: str | None = None,
) -> Any:
    """A uvicorn Server for *app*: no lifespan, no access log (metrics count requests).

    Args:
        app: the ASGI application.
        tls_cert, tls_key: PEM files to serve HTTPS with.
        http: ``"h11"`` or ``"httptools"``; default: httptools when installed (head-bounded,
            see ``donjon.steward._http``), else h11.
        loop: ``"asyncio"`` or ``"uvloop"``; default: uvloop when installed, else asyncio.
    """
    import uvicorn

    protocol: str | type[asyncio.Protocol]
    if http is None:
        protocol = http_protocol()
    elif http == "httptools":
        protocol = http_protocol()
        if protocol == "h11":
            raise ConfigError("httptools is not installed; pip install httptools, or use h11")
    elif http == "h11":
        protocol = "h11"
    else:
        raise ConfigError(f"unknown HTTP implementation {http!r}; use h11 or httptools")
    config = uvicorn.Config(
        app,
        http=protocol,
        loop=loop or loop_name(),
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


def run_workers(
    make_app: Callable[[], Any],
    sockets: Sequence[socket.socket],
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    http: str | None = None,
    loop: str | None = None,
) -> None:
    """Serve ``make_app()`` on *sockets* until SIGTERM or SIGINT, then return.

    One socket: in this process. Several (from :func:`bind_sockets`): one forked worker process
    per socket, each with its own app (built after the fork) and event loop; this process
    forwards SIGTERM/SIGINT to them and waits. Each worker closes the other workers' sockets and
    this process closes them all, so a worker that dies takes its socket out of the kernel's
    ``SO_REUSEPORT`` group instead of leaving connections queued where nobody accepts them.
    *http* and *loop* are as for :func:`uvicorn_server`.
    """

    def run_one(sock: socket.socket) -> None:
        app = make_app()
        server = uvicorn_server(app, tls_cert=tls_cert, tls_key=tls_key, http=http, loop=loop)
        # uvicorn re-raises the signal it caught once it has shut down; a no-op handler turns
        # that into a clean return instead of a kill or a KeyboardInterrupt.
        previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
        reload = getattr(app, "reload", None)
        if callable(reload):
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: reload())
        try:
            server.run(sockets=[sock])
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            close = getattr(app, "close", None)
            if callable(close):
                close()  # e.g. the audit log's last checkpoint

    if len(sockets) == 1:
        run_one(sockets[0])
    else:
        _fork_workers(run_one, sockets)


def serve(
    settings: StewardSettings,
    *,
    clock: Clock | None = None,
    announce: Callable[[Listening], None] | None = None,
    http: str | None = None,
    loop: str | None = None,
) -> None:
    """Run Steward until SIGTERM or SIGINT, then finish in-flight requests and return.

    Creates the CA in ``settings.state_dir`` on first start. Binds first, then calls *announce*
    (the CLI prints ``listening on <url>``), so ``port = 0`` works. With ``workers > 1`` each
    forked worker accepts on its own ``SO_REUSEPORT`` socket and has its own metrics; the nonce
    replay cache is shared by all of them (in shared memory), so a nonce is single-use on this
    host whichever worker a request reaches.

    Args:
        settings: validated settings.
        clock: :class:`SystemClock` unless given (the CLI never gives one).
        announce: called once the socket listens.
        http, loop: the HTTP parser and event loop (:func:`uvicorn_server`); by default the
            fastest installed.
    """
    clock = clock or SystemClock()
    state = init_state(settings.state_dir, now=clock.now())
    sockets = bind_sockets(settings.host, settings.port, settings.workers)
    tls = settings.tls_cert is not None
    where = listening(sockets[0], tls=tls)
    tls_cert = str(settings.tls_cert) if settings.tls_cert else None
    tls_key = str(settings.tls_key) if settings.tls_key else None
    replay_cache = SharedReplayCache() if settings.workers > 1 else None

    tenants = find_tenants(settings.tenants_dir) if settings.tenants_dir is not None else []
    # Each tenant is a Steward of its own (own CA, policy, secrets): created before the fork.
    tenant_states = {
        t.name: (t, init_state(t.state_dir, now=clock.now()), StewardPolicy.load(t.policy_file))
        for t in tenants
    }

    def one_app(
        ca_state: StewardState,
        policy: StewardPolicy,
        state_dir: Path,
        audit_path: Path | None,
        source: str | None,
    ) -> StewardApp:
        audit = AuditLog(audit_path, ca_state.ca.sign_result) if audit_path is not None else None
        core = StewardCore(
            ca_state.ca,
            policy,
            clock=clock,
            cert_lifetime=settings.cert_lifetime,
            replay_cache=replay_cache,
            endorsements=_endorsement_source(settings, clock),
            secrets=SecretStore(state_dir),
            audit=audit,
        )
        return StewardApp(
            core,
            on_close=audit.close if audit is not None else None,
            policy_loader=(lambda: StewardPolicy.named(source)) if source is not None else None,
        )

    def make_app() -> StewardApp | TenantRouter:
        own = one_app(
            state, settings.policy, settings.state_dir, settings.audit_log, settings.policy_source
        )
        if not tenant_states:
            return own
        apps = {
            name: one_app(
                tenant_state,
                policy,
                tenant.state_dir,
                tenant.state_dir / AUDIT_FILE if settings.audit_log is not None else None,
                str(tenant.policy_file),
            )
            for name, (tenant, tenant_state, policy) in tenant_states.items()
        }
        return TenantRouter(own, apps)

    if announce is not None:
        announce(where)
    try:
        run_workers(make_app, sockets, tls_cert=tls_cert, tls_key=tls_key, http=http, loop=loop)
    finally:
        for sock in sockets:
            sock.close()


def _endorsement_source(settings: StewardSettings, clock: Clock) -> EndorsementSource | None:
    """The fetcher ``--fetch-endorsements`` asks for: one per worker, built after the fork (each
    worker has its own connection pool and memory; they share the disk cache)."""
    if settings.endorsements is None:
        return None
    from donjon.endorse.fetcher import EndorsementFetcher

    return EndorsementFetcher(settings.endorsements, clock=clock.now)


def _fork_workers(
    run_one: Callable[[socket.socket], None], sockets: Sequence[socket.socket]
) -> None:
    """Fork one child per socket that runs *run_one* on it; forward SIGTERM/SIGINT (as SIGTERM)
    and SIGHUP (as SIGHUP); reap them."""
    children: list[int] = []
    # Buffered output would be written once by each child as well.
    sys.stdout.flush()
    sys.stderr.flush()
    for mine in sockets:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                for other in sockets:
                    if other is not mine:
                        other.close()
                run_one(mine)
            except BaseException:
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.append(pid)
    for sock in sockets:
        sock.close()

    def forward(signum: int, _frame: object) -> None:
        passed = signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM
        for child in children:
            try:
                os.kill(child, passed)
            except ProcessLookupError:
                pass

    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in forwarded}
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
    "bind_sockets",
    "listening",
    "run_workers",
    "serve",
    "uvicorn_server",
]
