"""Client authentication for the keep manager: bearer tokens.

Tokens are 32 random bytes (hex); the manager stores only their SHA-256, one per line
(``name:sha256hex``) in ``STATE/tokens`` (mode 0600). A request's token is hashed and compared in
constant time against every stored hash. A token's *name* is the principal that owns the Keeps it
creates.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from donjon.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TOKEN_CHARS = 256
"""Longest token accepted in a header (characters); ours are 64."""


class AuthenticationError(ConfigError):
    """A request without a valid token."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str


class TokenStore:
    """The token file of a keep manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: list[tuple[str, bytes]] = []
        self._stamp: tuple[int, int, int] | None = None
        self.reload()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self) -> None:
        """Read the token file again (a running manager does so whenever the file changes)."""
        stamp = self._file_stamp()
        entries: list[tuple[str, bytes]] = []
        if self.path.exists():
            for n, line in enumerate(self.path.read_text().splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, _, digest = line.partition(":")
                if not _NAME_RE.match(name) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                    raise ConfigError(f"{self.path}:{n}: expected 'name:sha256hex'")
                entries.append((name, bytes.fromhex(digest)))
        self._entries = entries
        self._stamp = stamp

    def add(self, name: str) -> str:
        """Create a token for *name*; returns the token (shown once, stored only as a hash)."""
        if not _NAME_RE.match(name):
            raise ConfigError(f"token name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
        if any(n == name for n, _ in self._entries):
            raise ConfigError(f"a token named {name!r} exists already")
        token = secrets.token_hex(32)
        line = f"{name}:{hashlib.sha256(token.encode()).hexdigest()}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(line)
        os.chmod(self.path, 0o600)
        self.reload()
        return token

    def authenticate(self, token: str | None) -> Principal:
        """The principal owning *token*.

        Raises:
            AuthenticationError: no token, or one this manager does not know.
        """
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError(
                "missing or malformed token: send 'Authorization: Bearer <token>'"
            )
        if self._file_stamp() != self._stamp:
            # `donjon host token NAME` (another process) added a token, or the operator removed
            # one: take it into account now, not at the next restart.
            try:
                self.reload()
            except (ConfigError, OSError) as e:
                self._entries = []  # fail closed: a damaged token file admits nobody
                raise AuthenticationError(
                    "the keep manager's token file is damaged; ask its operator"
                ) from e
        digest = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for name, stored in self._entries:  # no early exit: same work for every token
            if hmac.compare_digest(digest, stored):
                found = name
        if found is None:
            raise AuthenticationError("unknown token: ask the host's operator for a valid one")
        return Principal(found)


def bearer_token(header: str | None) -> str | None:
    """The token from an ``Authorization: Bearer ...`` header value."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None
