"""A client for the keep manager's API (CBOR over HTTP), treating every answer as untrusted.

It speaks HTTP/1.1 with the standard library's ``http.client`` (one kept-alive connection per
client): a handful of small requests needs nothing more, and ``donjon deploy`` and
``donjon keep`` do not pay for importing an HTTP framework on every run (~90 ms here,
``benchmarks/bench_deploy.py``).
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from donjon import errors
from donjon._closing import Closing
from donjon.errors import (
    ConnectError,
    DecodeError,
    Error,
    RemoteProtocolError,
    TransportTimeoutError,
)
from donjon.wire.cbor import decode, encode

CBOR = "application/cbor"
MAX_RESPONSE_BYTES = 1024 * 1024
"""Largest keep-manager answer read (bytes)."""
DEFAULT_TIMEOUT_S = 30.0
_READ_BYTES = 64 * 1024


class HostRefusedError(errors.ConfigError):
    """The keep manager refused a request (its reason is in the message)."""


@dataclass(frozen=True, slots=True)
class KeepInfo:
    """A Keep as the (untrusted) keep manager describes it."""

    id: str
    owner: str
    backend: str
    state: str
    created_at: float
    exit_code: int | None
    detail: str | None

    @classmethod
    def from_dict(cls, d: Any) -> KeepInfo:
        if not isinstance(d, dict):
            raise RemoteProtocolError("the keep manager sent a Keep that is not a map")
        try:
            code = d.get("exit_code")
            detail = d.get("detail")
            info = cls(
                id=str(d["id"]),
                owner=str(d["owner"]),
                backend=str(d["backend"]),
                state=str(d["state"]),
                created_at=float(d["created_at"]),
                exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                detail=detail if isinstance(detail, str) else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RemoteProtocolError(f"the keep manager sent a malformed Keep: {e}") from e
        if len(info.id) != 16 or any(c not in "0123456789abcdef" for c in info.id):
            raise RemoteProtocolError(f"the keep manager sent a bad Keep id {info.id[:40]!r}")
        return info


class HostClient(Closing):
    """Talks to one keep manager.

    Args:
        url: ``http://host:port`` or ``https://...`` (verified against the system's CAs).
        token: the bearer token the keep manager's operator gave you.
        timeout: seconds to wait for the connection and for each read.
    """

    def __init__(self, url: str, *, token: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or not parts.hostname:
            raise errors.UsageError(f"--host must be an http(s):// URL, not {url!r}")
        try:
            port = parts.port
        except ValueError as e:
            raise errors.UsageError(f"--host has a bad port: {url!r}") from e
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._base_path = parts.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def token(self) -> str:
        return self._token

    def relay_url(self, keep_id: str) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, f"{parts.path}/v1/keeps/{keep_id}/relay", "", ""))

    def create_keep(
        self,
        *,
        backend: str,
        nonce: bytes,
        steward: str | None = None,
        steward_ca_pem: bytes | None = None,
        limits: dict[str, Any] | None = None,
    ) -> KeepInfo:
        body: dict[str, Any] = {"backend": backend, "nonce": nonce, "limits": limits or {}}
        if steward is not None:
            body["steward"] = steward
        if steward_ca_pem is not None:
            body["steward_ca_pem"] = steward_ca_pem
        answer = self._call("POST", "/v1/keeps", body=body, expect=201)
        return KeepInfo.from_dict(_field(answer, "keep"))

    def list_keeps(self) -> list[KeepInfo]:
        answer = self._call("GET", "/v1/keeps")
        keeps = _field(answer, "keeps")
        if not isinstance(keeps, list):
            raise RemoteProtocolError("the keep manager sent a Keep list that is not a list")
        return [KeepInfo.from_dict(k) for k in keeps]

    def get_keep(self, keep_id: str) -> KeepInfo:
        return KeepInfo.from_dict(_field(self._call("GET", f"/v1/keeps/{keep_id}"), "keep"))

    def stop_keep(self, keep_id: str, *, timeout: float | None = None) -> KeepInfo:
        """Stop a Keep; *timeout* (seconds) overrides the client's for this call."""
        answer = self._call("DELETE", f"/v1/keeps/{keep_id}", timeout=timeout)
        return KeepInfo.from_dict(_field(answer, "keep"))

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        expect: int = 200,
        timeout: float | None = None,
    ) -> Any:
        headers = {"authorization": f"Bearer {self._token}", "accept": CBOR}
        payload = None
        if body is not None:
            payload = encode(body)
            headers["content-type"] = CBOR
        try:
            status, content = self._exchange(
                method, self._base_path + path, payload, headers, timeout or self._timeout
            )
        except TimeoutError as e:
            self.close()
            raise TransportTimeoutError(f"the keep manager at {self.url} did not answer") from e
        except (OSError, http.client.IncompleteRead) as e:
            self.close()
            raise ConnectError(f"cannot reach the keep manager at {self.url}: {e}") from e
        except http.client.HTTPException as e:
            self.close()
            raise RemoteProtocolError(
                f"the keep manager at {self.url} sent a malformed HTTP answer: {type(e).__name__}"
            ) from e
        try:
            answer = decode(content, what="keep manager answer", max_bytes=MAX_RESPONSE_BYTES)
        except DecodeError as e:
            raise RemoteProtocolError(
                f"the keep manager answered HTTP {status} with a body that is not "
                f"valid CBOR ({e.message})"
            ) from e
        if status != expect:
            raise _refusal(status, answer)
        return answer

    def _exchange(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        headers: dict[str, str],
        timeout: float,
    ) -> tuple[int, bytes]:
        reused = self._conn is not None
        try:
            return self._exchange_once(method, path, payload, headers, timeout)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # A kept-alive connection that the server closed while idle fails on its next
            # request: that request is sent once more, on a new connection. A first request on
            # a new connection is never repeated (a create could then make two Keeps).
            self.close()
            if not reused:
                raise
            return self._exchange_once(method, path, payload, headers, timeout)

    def _exchange_once(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        headers: dict[str, str],
        timeout: float,
    ) -> tuple[int, bytes]:
        conn = self._connection(timeout)
        conn.request(method, path, body=payload, headers=headers)
        with conn.getresponse() as response:  # closed whatever happens: it may own the socket
            content = bytearray()
            while chunk := response.read(min(_READ_BYTES, MAX_RESPONSE_BYTES + 1 - len(content))):
                content += chunk
                if len(content) > MAX_RESPONSE_BYTES:
                    self.close()
                    raise RemoteProtocolError(
                        f"the keep manager's answer exceeds {MAX_RESPONSE_BYTES} bytes"
                    )
            if response.length:  # Content-Length promised more than the connection carried
                self.close()
                raise http.client.IncompleteRead(bytes(content), response.length)
            if response.will_close:
                self.close()
            status = response.status
        return status, bytes(content)


def _field(answer: Any, name: str) -> Any:
    if not isinstance(answer, dict) or name not in answer:
        raise RemoteProtocolError(f"the keep manager's answer has no '{name}'")
    return answer[name]


def _refusal(status: int, answer: Any) -> Error:
    reason = answer.get("reason") if isinstance(answer, dict) else None
    text = str(reason)[:500] if reason else f"HTTP {status}"
    if status == 401:
        return HostRefusedError(f"the keep manager refused the token: {text}")
    if status == 404:
        return errors.NotFoundError(f"the keep manager says: {text}")
    return HostRefusedError(f"the keep manager refused (HTTP {status}): {text}")
