"""Real services for the registry tests and benchmark: the CNCF distribution registry
(Debian's ``docker-registry``), a hostile proxy in front of it, and a token server.

Everything listens on 127.0.0.1 on a port the kernel picked; nothing here fakes the registry.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import datetime as dt
import hashlib
import http.client
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BIN = Path("/usr/bin/docker-registry")
_START_TIMEOUT_S = 15.0
_PORT_ATTEMPTS = 5


class RegistryUnavailableError(RuntimeError):
    """The registry binary is missing or would not start."""


def require_registry_binary() -> Path:
    """The registry binary, or a clear failure naming the fix."""
    if not REGISTRY_BIN.is_file():
        raise RegistryUnavailableError(
            f"{REGISTRY_BIN} is missing: the registry tests need the CNCF distribution registry. "
            "Install it with scripts/ensure-registry (as root: apt-get install -y docker-registry)"
        )
    return REGISTRY_BIN


def free_port() -> int:
    """A port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RegistryServer:
    """A running ``docker-registry serve`` process."""

    process: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_registry(root: Path, *, auth: str = "") -> RegistryServer:
    """Start a registry storing into *root*; *auth* is the YAML ``auth:`` section (or empty).

    The port is picked by binding port 0; if the registry loses the race for it, another is
    tried.
    """
    binary = require_registry_binary()
    root.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(_PORT_ATTEMPTS):
        port = free_port()
        config = root / f"config-{attempt}.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n" + auth
        )
        log = root / f"registry-{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(binary), "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        server = RegistryServer(process=process, port=port, root=root, log=log)
        if _wait_ready(server):
            return server
        server.stop()
        last = server.log_tail()
        if "address already in use" not in last:
            break
    raise RegistryUnavailableError(f"docker-registry did not start; its log ends:\n{last}")


def _wait_ready(server: RegistryServer) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1)
            conn.request("GET", "/v2/")
            status = conn.getresponse().status
            conn.close()
            if status in (200, 401):
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


# -- htpasswd ----------------------------------------------------------------------------------


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line, which is what distribution accepts.

    Uses ``htpasswd -nbB`` (apache2-utils) if present, else the C library's crypt(3) with a
    ``$2b$`` salt (libxcrypt on Debian). The password is passed on a command line only here, in
    a test, for a throwaway account.
    """
    tool = shutil.which("htpasswd")
    if tool is not None:
        out = subprocess.run(
            [tool, "-nbB", "-C", "5", user, password], check=True, capture_output=True, text=True
        ).stdout.strip()
        return out
    name = ctypes.util.find_library("crypt")
    if name is None:
        raise RegistryUnavailableError("no htpasswd and no libcrypt: run scripts/ensure-registry")
    libcrypt = ctypes.CDLL(name)
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    salt = "$2b$05$" + "".join(secrets.choice(alphabet) for _ in range(22))
    hashed = libcrypt.crypt(password.encode(), salt.encode())
    if not hashed or not hashed.startswith(b"$2"):
        raise RegistryUnavailableError("libcrypt has no bcrypt: run scripts/ensure-registry")
    return f"{user}:{hashed.decode()}"


def htpasswd_auth(root: Path, users: dict[str, str]) -> str:
    """The ``auth:`` YAML for htpasswd auth with *users*."""
    path = root / "htpasswd"
    path.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in users.items()))
    return f"auth:\n  htpasswd:\n    realm: donjon-test\n    path: {path}\n"


# -- hostile proxy -----------------------------------------------------------------------------

Rule = Callable[["Exchange"], None]


@dataclass
class Exchange:
    """One request and the registry's answer, which a rule may rewrite before it is sent."""

    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stream: Iterator[bytes] | None = None  # replaces body, sent without Content-Length

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_header(self, name: str, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        self.headers.append((name, value))


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


@dataclass
class HostileProxy:
    """A real HTTP server on 127.0.0.1 that forwards to the registry and can alter answers."""

    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HostileProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one exchange per connection: simple and enough

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                exchange = Exchange(
                    method=self.command,
                    path=urllib.parse.urlsplit(self.path).path,
                    status=resp.status,
                    headers=[(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP],
                    body=resp.read(),
                )
                conn.close()
                proxy.seen.append((self.command, exchange.path))
                for rule in list(proxy.rules):
                    rule(exchange)
                self.send_response(exchange.status)
                for k, v in exchange.headers:
                    self.send_header(k, v)
                if exchange.stream is None:
                    self.send_header("Content-Length", str(len(exchange.body)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                try:
                    if exchange.stream is None:
                        self.wfile.write(exchange.body)
                    else:
                        for piece in exchange.stream:
                            self.wfile.write(piece)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what a careful client does

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- token server ------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class TokenServer:
    """A distribution token server (the ``realm``): Basic-authenticates and signs ES256 JWTs.

    Grants ``pull`` on ``public/*`` to anyone, and the requested actions to *users*.
    """

    users: dict[str, str]
    service: str = "donjon-test-registry"
    issuer: str = "donjon-test-issuer"
    requests: list[dict[str, str | bool]] = field(default_factory=list)
    _key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    _cert: x509.Certificate | None = None
    _server: http.server.ThreadingHTTPServer | None = None

    def certificate_pem(self) -> bytes:
        if self._cert is None:
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "donjon test token issuer")])
            now = dt.datetime.now(dt.UTC)
            self._cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(self._key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(hours=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256())
            )
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def realm(self) -> str:
        if self._server is None:
            raise RuntimeError("token server not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def auth_yaml(self, root: Path) -> str:
        bundle = root / "token-issuer.pem"
        bundle.write_bytes(self.certificate_pem())
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {self.service}\n"
            f"    issuer: {self.issuer}\n    rootcertbundle: {bundle}\n"
        )

    def start(self) -> TokenServer:
        tokens = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = tokens._user(self.headers.get("Authorization"))
                tokens.requests.append(
                    {
                        "scope": ",".join(query.get("scope", [])),
                        "service": ",".join(query.get("service", [])),
                        "user": user or "",
                        "sent_credentials": self.headers.get("Authorization") is not None,
                    }
                )
                if user is False:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                access: list[dict[str, object]] = []
                for scope in query.get("scope", []):
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    wanted = [a for a in actions.split(",") if a]
                    if user:
                        granted = wanted
                    else:
                        granted = [a for a in wanted if a == "pull" and name.startswith("public/")]
                    access.append({"type": kind, "name": name, "actions": granted})
                body = json.dumps(
                    {
                        "token": tokens._jwt(user if isinstance(user, str) else "", access),
                        "expires_in": 300,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _user(self, header: str | None) -> str | bool | None:
        """The authenticated user, None for anonymous, False for bad credentials."""
        if header is None:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        with contextlib.suppress(ValueError):
            user, _, password = base64.b64decode(value).decode().partition(":")
            expected = self.users.get(user)
            if expected is not None and secrets.compare_digest(expected, password):
                return user
        return False

    def _jwt(self, subject: str, access: list[dict[str, object]]) -> str:
        self.certificate_pem()
        if self._cert is None:  # pragma: no cover
            raise RuntimeError("no certificate")
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def env_without_donjon() -> dict[str, str]:
    """The current environment without DONJON_* settings, for subprocess tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DONJON_")}
