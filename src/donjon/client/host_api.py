"""A client for the keep manager's API (CBOR over HTTP), treating every answer as untrusted."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from donjon import errors
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


class HostClient:
    """Talks to one keep manager.

    Args:
        url: ``http://host:port`` or ``https://...``.
        token: the bearer token the keep manager's operator gave you.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise errors.UsageError(f"--host must be an http(s):// URL, not {url!r}")
        self.url = url.rstrip("/")
        self._token = token
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            transport=transport,
            headers={"authorization": f"Bearer {token}"},
            # httpx parses certifi's whole CA bundle when a client is made (~50 ms on every
            # deploy); plain HTTP has no TLS to verify, and redirects are not followed.
            verify=parts.scheme == "https",
        )

    def __enter__(self) -> HostClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

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

    def stop_keep(self, keep_id: str) -> KeepInfo:
        return KeepInfo.from_dict(_field(self._call("DELETE", f"/v1/keeps/{keep_id}"), "keep"))

    def _call(self, method: str, path: str, *, body: Any = None, expect: int = 200) -> Any:
        headers = {"content-type": CBOR} if body is not None else {}
        try:
            with self._http.stream(
                method,
                path,
                content=encode(body) if body is not None else None,
                headers=headers,
            ) as response:
                content = bytearray()
                for chunk in response.iter_bytes():
                    content += chunk
                    if len(content) > MAX_RESPONSE_BYTES:
                        raise RemoteProtocolError(
                            f"the keep manager's answer exceeds {MAX_RESPONSE_BYTES} bytes"
                        )
        except httpx.TimeoutException as e:
            raise TransportTimeoutError(f"the keep manager at {self.url} did not answer") from e
        except httpx.TransportError as e:
            raise ConnectError(f"cannot reach the keep manager at {self.url}: {e}") from e
        try:
            answer = decode(
                bytes(content), what="keep manager answer", max_bytes=MAX_RESPONSE_BYTES
            )
        except DecodeError as e:
            raise RemoteProtocolError(
                f"the keep manager answered HTTP {response.status_code} with a body that is not "
                f"valid CBOR ({e.message})"
            ) from e
        if response.status_code != expect:
            raise _refusal(response.status_code, answer)
        return answer


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
