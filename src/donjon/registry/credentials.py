"""Registry credentials and authentication challenges (pure: no files, no environment reads).

Where credentials come from, in order (the CLI reads the files and the environment and passes
their contents here; nothing in this module reads either):

1. ``DONJON_REGISTRY_USER`` / ``DONJON_REGISTRY_PASSWORD`` (both, or neither);
2. ``$DONJON_REGISTRY_AUTH_FILE``, else ``~/.config/donjon/registries.toml``::

       [registries."localhost:5000"]
       username = "ci"
       password = "..."          # or a personal access token

   (``$DONJON_REGISTRY_AUTH_FILE`` may instead be a Docker ``config.json``);
3. Docker's ``~/.docker/config.json`` ``auths`` (``auth`` = base64 ``user:password``, or
   ``username`` and ``password``). Credential helpers (``credsStore``, ``credHelpers``) are not
   run: a helper is an arbitrary program, and donjon does not start programs named in a file.

Never from the command line: arguments are visible to every user in ``ps`` and kept in shell
history.

Rule 1: a password or token never appears in a ``repr``, a message or a log line.
Rule 2: a challenge is parsed as hostile input: bounded, and unknown schemes are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from donjon.registry.errors import CredentialsError

__all__ = [
    "ENV_AUTH_FILE",
    "ENV_PASSWORD",
    "ENV_USER",
    "MAX_CREDENTIALS_FILE_BYTES",
    "Challenge",
    "Credentials",
    "CredentialsTable",
    "credentials_from_environ",
    "parse_challenges",
    "parse_credentials_file",
]

ENV_USER = "DONJON_REGISTRY_USER"
ENV_PASSWORD = "DONJON_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name, not a password
ENV_AUTH_FILE = "DONJON_REGISTRY_AUTH_FILE"

MAX_CREDENTIALS_FILE_BYTES = 1024 * 1024  # bytes; a Docker config.json with many registries
MAX_CHALLENGE_BYTES = 8192  # bytes of all WWW-Authenticate values; real ones are < 300
_MAX_SECRET_BYTES = 64 * 1024  # bytes; registry tokens (JWTs) can be a few KiB

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2 token


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """A username and a password (or access token) for one registry.

    Attributes:
        username: the user name.
        password: the password or personal access token. Never shown in ``repr``.
    """

    username: str
    password: str

    def __post_init__(self) -> None:
        if not self.username or ":" in self.username:
            raise CredentialsError("a registry username must be non-empty and contain no ':'")
        if len(self.password.encode()) > _MAX_SECRET_BYTES:
            raise CredentialsError(f"a registry password is limited to {_MAX_SECRET_BYTES} bytes")

    def basic_header(self) -> str:
        """The ``Authorization`` header value for HTTP Basic (RFC 7617)."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class CredentialsTable:
    """Credentials per registry (``host[:port]``), from one file.

    Attributes:
        entries: ``(registry, credentials)`` pairs.
        source: the file they came from, for messages.
    """

    entries: tuple[tuple[str, Credentials], ...]
    source: str

    def lookup(self, registry: str) -> Credentials | None:
        """The credentials for *registry*, matching ``host:port`` exactly, then Docker's
        ``https://host/v1/``-style keys by host and port."""
        for key, creds in self.entries:
            if _registry_key(key) == registry.lower():
                return creds
        return None


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge (RFC 9110 §11.6.1).

    Attributes:
        scheme: lowercase scheme (``"basic"``, ``"bearer"``).
        params: lowercase parameter names to values.
    """

    scheme: str
    params: tuple[tuple[str, str], ...]

    def param(self, name: str) -> str | None:
        """A parameter's value, if present."""
        for key, value in self.params:
            if key == name:
                return value
        return None


def credentials_from_environ(environ: Mapping[str, str]) -> Credentials | None:
    """Credentials from ``DONJON_REGISTRY_USER`` and ``DONJON_REGISTRY_PASSWORD``.

    Raises:
        CredentialsError: only one of the two is set.
    """
    user = environ.get(ENV_USER)
    password = environ.get(ENV_PASSWORD)
    if user is None and password is None:
        return None
    if not user or password is None:
        raise CredentialsError(
            f"set both {ENV_USER} and {ENV_PASSWORD}, or neither (only one is set)"
        )
    return Credentials(user, password)


def parse_credentials_file(data: bytes, *, source: str) -> CredentialsTable:
    """Parse a donjon ``registries.toml`` or a Docker ``config.json``.

    The format is told by content: a file whose first non-blank byte is ``{`` is JSON.

    Raises:
        CredentialsError: too large, not parseable, or an entry of the wrong shape. The message
            names the file and the registry, never a secret.
    """
    if len(data) > MAX_CREDENTIALS_FILE_BYTES:
        raise CredentialsError(
            f"{source}: {len(data)} bytes; the limit is {MAX_CREDENTIALS_FILE_BYTES}"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CredentialsError(f"{source}: not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        return _parse_docker_config(text, source)
    return _parse_registries_toml(text, source)


def parse_challenges(values: list[str]) -> tuple[Challenge, ...]:
    """Parse ``WWW-Authenticate`` header values into challenges.

    Malformed parts end parsing of that value; what parsed before is kept. A hostile registry
    can therefore only withhold a challenge, never make us crash.
    """
    if sum(len(v) for v in values) > MAX_CHALLENGE_BYTES:
        return ()
    out: list[Challenge] = []
    for value in values:
        out.extend(_parse_challenge_value(value))
    return tuple(out)


# -- file formats ------------------------------------------------------------------------------


def _parse_registries_toml(text: str, source: str) -> CredentialsTable:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # The decoder's message names a line and column, not file content.
        raise CredentialsError(f"{source}: not valid TOML: {e}") from None
    unknown = set(doc) - {"registries"}
    if unknown:
        raise CredentialsError(
            f"{source}: unknown top-level key {sorted(unknown)[0]!r}; "
            'write [registries."HOST:PORT"] tables'
        )
    registries = doc.get("registries", {})
    if not isinstance(registries, dict):
        raise CredentialsError(f'{source}: "registries" must be a table of tables')
    entries = []
    for registry, entry in registries.items():
        where = f"{source}: registries.{registry!r}"
        if not isinstance(entry, dict):
            raise CredentialsError(f"{where} must be a table with username and password")
        extra = set(entry) - {"username", "password"}
        if extra:
            raise CredentialsError(f"{where}: unknown key {sorted(extra)[0]!r}")
        user, password = entry.get("username"), entry.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            raise CredentialsError(f"{where}: username and password must both be strings")
        entries.append((registry, _credentials(user, password, where)))
    return CredentialsTable(entries=tuple(entries), source=source)


def _parse_docker_config(text: str, source: str) -> CredentialsTable:
    try:
        doc: Any = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CredentialsError(f"{source}: not valid JSON") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"{source}: expected a JSON object with an 'auths' map")
    auths = doc.get("auths", {})
    if not isinstance(auths, dict):
        raise CredentialsError(f"{source}: 'auths' must be an object")
    entries = []
    for registry, entry in auths.items():
        where = f"{source}: auths[{registry!r}]"
        if not isinstance(entry, dict):
            raise CredentialsError(f"{where} must be an object")
        if "identitytoken" in entry and "auth" not in entry:
            raise CredentialsError(
                f"{where} holds an OAuth identity token, which donjon does not use; "
                f"put a username and token in {source} or in ~/.config/donjon/registries.toml"
            )
        if "auth" in entry:
            encoded = entry["auth"]
            if not isinstance(encoded, str):
                raise CredentialsError(f"{where}: 'auth' must be a base64 string")
            try:
                user, sep, password = (
                    base64.b64decode(encoded, validate=True).decode().partition(":")
                )
            except (binascii.Error, ValueError):
                raise CredentialsError(f"{where}: 'auth' is not base64 of user:password") from None
            if not sep:
                raise CredentialsError(f"{where}: 'auth' is not base64 of user:password")
        else:
            raw_user, raw_password = entry.get("username"), entry.get("password")
            if not isinstance(raw_user, str) or not isinstance(raw_password, str):
                # An entry without secrets (e.g. only a credsStore is used): nothing to take.
                continue
            user, password = raw_user, raw_password
        entries.append((registry, _credentials(user, password, where)))
    return CredentialsTable(entries=tuple(entries), source=source)


def _credentials(user: str, password: str, where: str) -> Credentials:
    try:
        return Credentials(user, password)
    except CredentialsError as e:
        raise CredentialsError(f"{where}: {e.message}") from None


def _registry_key(key: str) -> str:
    # Docker writes keys like "https://index.docker.io/v1/" or "localhost:5000".
    key = key.strip().lower()
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.split("/", 1)[0]


# -- challenges --------------------------------------------------------------------------------


def _parse_challenge_value(value: str) -> list[Challenge]:
    out: list[Challenge] = []
    pos, n = 0, len(value)
    scheme: str | None = None
    params: list[tuple[str, str]] = []

    def flush() -> None:
        if scheme is not None:
            out.append(Challenge(scheme=scheme, params=tuple(params)))

    while pos < n:
        while pos < n and value[pos] in " \t,":
            pos += 1
        match = _TOKEN.match(value, pos)
        if match is None:
            break
        token, end = match.group(0), match.end()
        rest = end
        while rest < n and value[rest] in " \t":
            rest += 1
        if rest < n and value[rest] == "=" and scheme is not None:
            rest += 1
            while rest < n and value[rest] in " \t":
                rest += 1
            parsed = _param_value(value, rest)
            if parsed is None:
                break
            param_value, pos = parsed
            params.append((token.lower(), param_value))
        else:
            flush()
            scheme, params = token.lower(), []
            pos = end
    flush()
    return out


def _param_value(value: str, pos: int) -> tuple[str, int] | None:
    if pos < len(value) and value[pos] == '"':
        chars: list[str] = []
        pos += 1
        while pos < len(value):
            c = value[pos]
            if c == "\\" and pos + 1 < len(value):
                chars.append(value[pos + 1])
                pos += 2
            elif c == '"':
                return "".join(chars), pos + 1
            else:
                chars.append(c)
                pos += 1
        return None
    match = _TOKEN.match(value, pos)
    if match is None:
        return None
    return match.group(0), match.end()
