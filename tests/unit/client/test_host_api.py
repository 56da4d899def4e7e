"""HostClient against a real tiny HTTP server on 127.0.0.1 (stdlib ``http.server``, port 0).

The server records each request and answers from a script, so the tests check both what the
client sends (method, path, token, CBOR body) and how it treats every kind of answer as hostile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from donjon.client.host_api import (
    MAX_RESPONSE_BYTES,
    HostClient,
    HostRefusedError,
    KeepInfo,
)
from donjon.errors import (
    ConnectError,
    Error,
    NotFoundError,
    RemoteProtocolError,
    UsageError,
)
from donjon.wire.cbor import decode, encode

TOKEN = "5ec7e7" * 10 + "abcd"
KEEP = {
    "id": "0123456789abcdef",
    "owner": "alice",
    "backend": "nil",
    "state": "running",
    "created_at": 1700000000.5,
    "exit_code": None,
    "detail": None,
    "loader_pid": 4242,  # extra fields of the record are ignored
    "limits": {},
}


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = "application/cbor"
    declared_length: int | None = None


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    answer: Callable[[Request], Answer] = lambda r: Answer(200, encode({}))
    requests: list[Request] = field(default_factory=list)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            req = Request(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
            )
            script.requests.append(req)
            answer = script.answer(req)
            self.send_response(answer.status)
            self.send_header("content-type", answer.content_type)
            self.send_header("content-length", str(answer.declared_length or len(answer.body)))
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(answer.body)
            self.close_connection = True

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def url(script: Script) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _client(url: str) -> HostClient:
    return HostClient(url, token=TOKEN, timeout=5.0)


# -- what the client sends -------------------------------------------------------------------


def test_create_keep_sends_cbor_with_the_token(url: str, script: Script) -> None:
    script.answer = lambda r: Answer(201, encode({"keep": KEEP}))
    with _client(url) as client:
        info = client.create_keep(
            backend="nil",
            nonce=b"n" * 32,
            steward="http://steward",
            steward_ca_pem=b"PEM",
            limits={"timeout_s": 2},
        )
    assert info == KeepInfo(
        id="0123456789abcdef",
        owner="alice",
        backend="nil",
        state="running",
        created_at=1700000000.5,
        exit_code=None,
        detail=None,
    )
    [req] = script.requests
    assert (req.method, req.path) == ("POST", "/v1/keeps")
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["content-type"] == "application/cbor"
    assert decode(req.body) == {
        "backend": "nil",
        "nonce": b"n" * 32,
        "steward": "http://steward",
        "steward_ca_pem": b"PEM",
        "limits": {"timeout_s": 2},
    }
    assert req.body == encode(decode(req.body))  # deterministic CBOR


def test_create_keep_without_steward_omits_it(url: str, script: Script) -> None:
    script.answer = lambda r: Answer(201, encode({"keep": KEEP}))
    with _client(url) as client:
        client.create_keep(backend="nil", nonce=b"n" * 32)
    assert decode(script.requests[0].body) == {"backend": "nil", "nonce": b"n" * 32, "limits": {}}


def test_list_get_stop(url: str, script: Script) -> None:
    other = KEEP | {"id": "fedcba9876543210", "state": "exited", "exit_code": 3}

    def answer(r: Request) -> Answer:
        if r.path == "/v1/keeps":
            return Answer(200, encode({"keeps": [KEEP, other]}))
        return Answer(200, encode({"keep": other | {"state": "stopped"}}))

    script.answer = answer
    with _client(url) as client:
        keeps = client.list_keeps()
        assert [(k.id, k.state, k.exit_code) for k in keeps] == [
            ("0123456789abcdef", "running", None),
            ("fedcba9876543210", "exited", 3),
        ]
        assert client.get_keep("fedcba9876543210").state == "stopped"
        assert client.stop_keep("fedcba9876543210").state == "stopped"
    assert [(r.method, r.path) for r in script.requests] == [
        ("GET", "/v1/keeps"),
        ("GET", "/v1/keeps/fedcba9876543210"),
        ("DELETE", "/v1/keeps/fedcba9876543210"),
    ]
    assert all(r.body == b"" for r in script.requests)


@pytest.mark.parametrize(
    ("base", "relay"),
    [
        ("http://h:1", "ws://h:1/v1/keeps/0123456789abcdef/relay"),
        ("https://h:1/", "wss://h:1/v1/keeps/0123456789abcdef/relay"),
        ("http://h:1/prefix", "ws://h:1/prefix/v1/keeps/0123456789abcdef/relay"),
    ],
)
def test_relay_url(base: str, relay: str) -> None:
    with HostClient(base, token=TOKEN) as client:
        assert client.relay_url("0123456789abcdef") == relay


@pytest.mark.parametrize("bad", ["ftp://h", "h:80", "", "http://", "ws://h:1"])
def test_bad_urls_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="--host must be an http"):
        HostClient(bad, token=TOKEN)


# -- how the client treats answers ---------------------------------------------------------


BAD_ANSWERS: dict[str, tuple[Answer, type[Error], str]] = {
    "garbage": (Answer(201, b"\xff\xfe"), RemoteProtocolError, "not valid CBOR"),
    "html": (
        Answer(502, b"<h1>Bad Gateway</h1>", "text/html"),
        RemoteProtocolError,
        "answered HTTP 502 with a body that is not valid CBOR",
    ),
    "empty": (Answer(201, b""), RemoteProtocolError, "is empty"),
    "truncated": (Answer(201, encode({"keep": KEEP})[:-3]), RemoteProtocolError, "not valid"),
    "oversized": (
        Answer(201, encode({"keep": KEEP, "x": bytes(MAX_RESPONSE_BYTES)})),
        RemoteProtocolError,
        f"exceeds {MAX_RESPONSE_BYTES} bytes",
    ),
    "short-body": (
        Answer(201, encode({"keep": KEEP})[:10], declared_length=500),
        ConnectError,
        "cannot reach the keep manager",
    ),
    "no-keep": (Answer(201, encode({"kept": KEEP})), RemoteProtocolError, "has no 'keep'"),
    "keep-list": (Answer(201, encode({"keep": [KEEP]})), RemoteProtocolError, "not a map"),
    "bad-id": (
        Answer(201, encode({"keep": KEEP | {"id": "A" * 40}})),
        RemoteProtocolError,
        "bad Keep id",
    ),
    "missing-field": (
        Answer(201, encode({"keep": {"id": KEEP["id"]}})),
        RemoteProtocolError,
        "malformed Keep",
    ),
    "bad-float": (
        Answer(201, encode({"keep": KEEP | {"created_at": [1]}})),
        RemoteProtocolError,
        "malformed Keep",
    ),
    "status-200": (Answer(200, encode({"keep": KEEP})), HostRefusedError, "(HTTP 200)"),
    "401": (
        Answer(401, encode({"error": "AuthenticationError", "reason": "unknown token"})),
        HostRefusedError,
        "refused the token: unknown token",
    ),
    "404": (
        Answer(404, encode({"error": "NotFoundError", "reason": "no Keep x"})),
        NotFoundError,
        "the keep manager says: no Keep x",
    ),
    "409-long-reason": (
        Answer(409, encode({"error": "ConfigError", "reason": "r" * 10_000})),
        HostRefusedError,
        "refused (HTTP 409): " + "r" * 500,
    ),
    "500-no-reason": (
        Answer(500, encode({"oops": 1})),
        HostRefusedError,
        "refused (HTTP 500): HTTP 500",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_hostile_answers_become_clear_errors(url: str, script: Script, case: str) -> None:
    answer, expected, fragment = BAD_ANSWERS[case]
    script.answer = lambda r: answer
    with _client(url) as client, pytest.raises(expected) as caught:
        client.create_keep(backend="nil", nonce=b"n" * 32)
    message = caught.value.diagnostics()
    assert fragment in message
    assert len(message) < 1200
    assert TOKEN not in message


def test_keep_list_that_is_not_a_list(url: str, script: Script) -> None:
    script.answer = lambda r: Answer(200, encode({"keeps": {"a": KEEP}}))
    with _client(url) as client, pytest.raises(RemoteProtocolError, match="not a list"):
        client.list_keeps()


def test_one_bad_keep_spoils_the_list(url: str, script: Script) -> None:
    script.answer = lambda r: Answer(200, encode({"keeps": [KEEP, KEEP | {"id": "../x"}]}))
    with _client(url) as client, pytest.raises(RemoteProtocolError, match="bad Keep id"):
        client.list_keeps()


def test_non_integer_exit_codes_and_details_are_dropped(url: str, script: Script) -> None:
    script.answer = lambda r: Answer(
        200, encode({"keep": KEEP | {"exit_code": True, "detail": b"bytes"}})
    )
    with _client(url) as client:
        info = client.get_keep("0123456789abcdef")
    assert (info.exit_code, info.detail) == (None, None)


def test_nobody_listening(url: str) -> None:
    closed = url.rsplit(":", 1)[0] + ":9"  # discard port: nothing listens on loopback
    with HostClient(closed, token=TOKEN) as client, pytest.raises(ConnectError) as e:
        client.list_keeps()
    assert "cannot reach the keep manager at http://127.0.0.1:9" in e.value.diagnostics()
