"""The keep manager's HTTP API (Starlette; CBOR bodies under ``/v1``) and its byte relay.

Endpoints (documented in docs/protocol.md):
    POST   /v1/keeps              create a Keep            201 {keep}
    GET    /v1/keeps              the caller's Keeps       200 {keeps: [...]}
    GET    /v1/keeps/{id}         one Keep                 200 {keep}
    DELETE /v1/keeps/{id}         stop it                  200 {keep}
    WS     /v1/keeps/{id}/relay   carries the client's TLS bytes to the keep runtime and back
    GET    /healthz               200 "ok"

Every ``/v1`` request carries ``Authorization: Bearer <token>``. The relay sees only ciphertext:
TLS runs from the client to the keep runtime inside the Keep. A relay that cannot be opened is
refused before the WebSocket is accepted, with an HTTP status and a CBOR ``ErrorBody`` that also
carries the WebSocket close code it stands for (``RELAY_REFUSALS``), so the client can say why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from donjon._unixpath import unix_socket_path
from donjon.errors import (
    ConfigError,
    DecodeError,
    Error,
    KeepLaunchError,
    NotFoundError,
)
from donjon.host.auth import AuthenticationError, Principal, TokenStore, bearer_token
from donjon.host.core import CreateKeep, KeepManager
from donjon.host.store import KeepRecord
from donjon.wire.cbor import decode, encode

_logger = logging.getLogger(__name__)

CBOR = "application/cbor"
MAX_REQUEST_BYTES = 256 * 1024
"""Largest API request body (bytes): create requests are small."""
RELAY_CHUNK_BYTES = 64 * 1024
SOCKET_WAIT_S = 15.0
"""How long the relay waits for a new Keep's runtime to listen (seconds)."""
ENDED_CHECK_S = 0.25
"""While waiting, how often the relay checks whether the Keep has ended instead (seconds)."""
SOCKET_POLL_S = 0.005
"""While waiting, how often the relay tries the Keep's socket (seconds): a failed connect to a
unix socket costs microseconds, and a warm Keep listens within tens of milliseconds."""

RELAY_REFUSALS: dict[int, tuple[int, str]] = {
    4401: (401, "AuthenticationError"),
    4404: (404, "NotFoundError"),
    4410: (410, "KeepFinished"),
    4503: (503, "KeepNotListening"),
}
"""WebSocket close code -> (HTTP status of the refusal, ``error`` in its body)."""


class RelayTap(Protocol):
    """Sees (and may alter) every chunk the relay carries: the seam a hostile-host test uses."""

    def __call__(self, direction: str, chunk: bytes) -> bytes | None:
        """Return the bytes to forward, or None to drop the chunk."""
        ...


def _status_for(e: Error) -> int:
    if isinstance(e, AuthenticationError):
        return 401
    if isinstance(e, NotFoundError):
        return 404
    if isinstance(e, DecodeError):
        return 400
    if isinstance(e, KeepLaunchError):
        return 500
    if isinstance(e, ConfigError):
        return 409
    return 400


def _cbor(body: Any, status: int = 200) -> Response:
    return Response(encode(body), status_code=status, media_type=CBOR)


def _error(e: Error) -> Response:
    return _cbor({"error": type(e).__name__, "reason": e.diagnostics()}, _status_for(e))


def _keep_view(record: KeepRecord) -> dict[str, Any]:
    return record.to_dict()


def create_app(
    manager: KeepManager,
    tokens: TokenStore,
    *,
    relay_tap: RelayTap | None = None,
) -> Starlette:
    """The ASGI app of a keep manager."""

    def principal_of(headers: Any) -> Principal:
        return tokens.authenticate(bearer_token(headers.get("authorization")))

    def api(
        handler: Callable[[Request, Principal], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, principal_of(request.headers))
            except Error as e:
                _logger.info("%s %s -> %s", request.method, request.url.path, type(e).__name__)
                return _error(e)

        return endpoint

    async def read_cbor(request: Request) -> Any:
        if request.headers.get("content-type", "").split(";")[0].strip() != CBOR:
            raise DecodeError(f"send the request body as {CBOR}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST_BYTES:
                raise DecodeError(f"request body exceeds {MAX_REQUEST_BYTES} bytes")
        return decode(bytes(body), what="request body", max_bytes=MAX_REQUEST_BYTES)

    async def create(request: Request, principal: Principal) -> Response:
        req = CreateKeep.from_dict(await read_cbor(request))
        record = await asyncio.to_thread(manager.create, principal, req)
        return _cbor({"keep": _keep_view(record)}, 201)

    async def list_keeps(request: Request, principal: Principal) -> Response:
        records = await asyncio.to_thread(manager.list_keeps, principal)
        return _cbor({"keeps": [_keep_view(r) for r in records]})

    async def one(request: Request, principal: Principal) -> Response:
        keep_id = request.path_params["keep_id"]
        if request.method == "DELETE":
            record = await asyncio.to_thread(manager.stop, principal, keep_id)
        else:
            record = await asyncio.to_thread(manager.get, principal, keep_id)
        return _cbor({"keep": _keep_view(record)})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def relay(ws: WebSocket) -> None:
        try:
            principal = principal_of(ws.headers)
            record = manager.get(principal, ws.path_params["keep_id"])
        except Error as e:
            if isinstance(e, AuthenticationError):
                await _refuse(ws, 4401, e.diagnostics())
            else:
                await _refuse(ws, 4404, e.diagnostics())
            return
        if record.state.finished:
            detail = f" ({record.state}: {record.detail})" if record.detail else ""
            await _refuse(ws, 4410, f"the Keep {record.id} has finished{detail}")
            return
        sock_path = manager.keep_dir(record.id) / "keep.sock"

        def ended() -> bool:
            try:
                return manager.get(principal, record.id).state.finished
            except Error:
                return True  # its record is gone or damaged: nothing to wait for

        reader_writer = await _connect_when_ready(sock_path, ended)
        if reader_writer is None:
            await _refuse(ws, 4503, f"the Keep {record.id} is not listening")
            return
        await ws.accept()
        reader, writer = reader_writer
        await _pump(ws, reader, writer, relay_tap)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/v1/keeps", api(create), methods=["POST"]),
            Route("/v1/keeps", api(list_keeps), methods=["GET"]),
            Route("/v1/keeps/{keep_id}", api(one), methods=["GET", "DELETE"]),
            WebSocketRoute("/v1/keeps/{keep_id}/relay", relay),
        ]
    )
    return app


async def _refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Refuse the relay before accepting it: an HTTP denial (status + CBOR body) where the
    server supports it (the ASGI ``websocket.http.response`` extension), else a bare close."""
    status, error = RELAY_REFUSALS[code]
    reason = reason[:MAX_REFUSAL_REASON_CHARS]
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        body = {"error": error, "reason": reason, "close_code": code}
        await ws.send_denial_response(Response(encode(body), status_code=status, media_type=CBOR))
    else:
        await ws.close(code=code, reason=reason[: MAX_CLOSE_REASON_BYTES // 4])


MAX_REFUSAL_REASON_CHARS = 500
MAX_CLOSE_REASON_BYTES = 123
"""A WebSocket close reason fits in 123 bytes (RFC 6455 §5.5: control frames carry <= 125)."""


async def _connect_when_ready(
    path: Path, ended: Callable[[], bool]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connect to a Keep's socket once it listens; None if it ends first or takes too long."""
    deadline = time.monotonic() + SOCKET_WAIT_S
    next_check = time.monotonic() + ENDED_CHECK_S
    while time.monotonic() < deadline:
        try:
            with unix_socket_path(path) as connect_path:
                return await asyncio.open_unix_connection(connect_path)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() >= next_check:
                if ended():  # e.g. Steward refused it: do not make the client wait 15 s
                    return None
                next_check = time.monotonic() + ENDED_CHECK_S
            await asyncio.sleep(SOCKET_POLL_S)
        except OSError:
            return None
    return None


async def _pump(
    ws: WebSocket,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tap: RelayTap | None,
) -> None:
    async def client_to_keep() -> None:
        try:
            while True:
                chunk = await ws.receive_bytes()
                if tap is not None:
                    tapped = tap("to-keep", chunk)
                    if tapped is None:
                        continue
                    chunk = tapped
                writer.write(chunk)
                await writer.drain()
        except (WebSocketDisconnect, ConnectionError, KeyError, RuntimeError):
            pass
        finally:
            if writer.can_write_eof():
                try:
                    writer.write_eof()
                except OSError:
                    pass

    async def keep_to_client() -> None:
        try:
            while chunk := await reader.read(RELAY_CHUNK_BYTES):
                if tap is not None:
                    tapped = tap("to-client", chunk)
                    if tapped is None:
                        continue
                    chunk = tapped
                await ws.send_bytes(chunk)
        except (WebSocketDisconnect, ConnectionError, RuntimeError):
            pass

    up = asyncio.create_task(client_to_keep())
    down = asyncio.create_task(keep_to_client())
    await down
    up.cancel()
    try:
        await up
    except asyncio.CancelledError:
        pass
    writer.close()
    try:
        await ws.close()
    except (RuntimeError, WebSocketDisconnect):
        pass  # the client left first (the usual end of a session): nothing to close
