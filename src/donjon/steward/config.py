"""Steward's settings and its policy file.

A Steward policy file is an attestation policy (``donjon.attestation.policy``, see
``docs/attestation/policy.md``) plus one ``[steward]`` table for what only Steward decides::

    name = "fleet"
    [sev-snp]
    measurements = ["<hex>"]
    min_tcb = { bl = 3, snp = 20 }

    [steward]
    workloads = ["donjon:workload:sha256:<hex>"]   # accepted workload identities; absent = any
    dns_names = ["*.keeps.example.com"]             # DNS SANs a CSR may request; absent = none
    enarx = true                                    # accept Enarx CSRs on POST / (default true)
    dev_keys = ["<hex DER SPKI>"]                   # pin nil development keys; absent = any

    [steward.secrets]                               # which workloads receive which secrets
    db-password = ["donjon:workload:sha256:<hex>"]  # released to these workloads only

``allow_insecure = true`` (top level, an attestation-policy key) is what admits ``nil`` evidence
and Enarx KVM CSRs; the built-in ``dev`` policy sets it for the demo and nothing else does.

Rule 1: the ``[steward]`` table is cut out of the text line by line (other lines keep their
numbers, so attestation-policy errors still point at the right line), and the cut is verified:
the rest must parse to exactly the same document minus ``steward``.
Rule 2: unknown keys and wrong types are ``ConfigError`` with ``file:line: field: problem``.
Rule 3: the policy digest covers both parts, so a result names exactly the rules applied.
Rule 4: a secret is released only to workloads its rule names: there is no "any workload"
rule, and a measurement-derived identity (no workload named) never receives one.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, NoReturn

from donjon.attestation.nil import NilVerifier
from donjon.attestation.policy import BUILTIN_POLICIES, MAX_POLICY_FILE_BYTES, Policy
from donjon.crypto.ca import is_dns_name
from donjon.endorse.config import FetchConfig
from donjon.errors import ConfigError, UsageError

DEFAULT_CERT_LIFETIME: Final = timedelta(hours=24)
"""Lifetime of issued certificates: a Keep re-attests daily, so a revoked TCB ages out fast."""

MAX_CERT_LIFETIME: Final = timedelta(days=28)
"""Longest ``--cert-lifetime`` accepted (Enarx's fixed lifetime)."""

MIN_CERT_LIFETIME: Final = timedelta(minutes=1)
"""Shortest ``--cert-lifetime`` accepted."""

DEFAULT_PORT: Final = 8443

MAX_SPKI_BYTES: Final = 512
"""Longest development-key SPKI accepted (bytes); a P-384 SPKI is 120 bytes."""

MAX_WORKLOADS: Final = 10_000
"""Most workload identities one policy may list (bounds lookups and file size)."""

MAX_SECRET_RULES: Final = 10_000
"""Most secrets one policy may have release rules for."""

SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""A secret's name (match in full): a bare TOML key without dots, as ``donjon.steward.secrets``."""

WORKLOAD_URI = re.compile(r"^donjon:workload:sha256:[0-9a-f]{64}$")
"""A workload identity a Keep may claim in its CSR: the SHA-256 of the workload package."""

PUBLISHER_URI = re.compile(r"donjon:publisher:sha256:[0-9a-f]{64}")
"""A publisher identity (match in full): the SHA-256 of the key whose signature over a registry
package the keep runtime verified; a release rule may name it to cover every such workload."""

MEASUREMENT_URI = re.compile(r"^donjon:measurement:[a-z0-9-]{1,16}:[0-9a-f]{2,256}$")
"""A workload identity derived from a launch measurement when the CSR claims none."""

DEV_POLICY_TOML: Final = """\
# The development policy the demo uses: nil evidence (no TEE, no protection) is accepted.
name = "dev"
allow_insecure = true
description = "development only: accepts nil evidence, which no hardware protects"

[nil]
reject_debug = false
"""

_STEWARD_KEYS: Final = frozenset({"workloads", "dns_names", "enarx", "dev_keys", "secrets"})
_HEADER = re.compile(r"^\s*\[\s*([^\[\]#]*?)\s*\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class StewardPolicy:
    """The attestation policy plus Steward's own rules.

    Attributes:
        attestation: which authentic evidence is acceptable.
        workloads: accepted workload identity URIs; empty = any workload.
        dns_names: DNS names (or ``*.suffix`` one-label wildcards) a CSR may request; empty =
            none (Steward then names the Keep ``<key hash>.keep.donjon.invalid`` only).
        enarx: accept Enarx-format CSRs on ``POST /``.
        dev_keys: DER SPKIs of the only development keys whose ``nil`` evidence is accepted;
            empty = any development key (``nil`` still needs ``allow_insecure``).
        secrets: release rules: (secret name, the workload identities it may go to), sorted.
    """

    attestation: Policy
    workloads: frozenset[str] = frozenset()
    dns_names: tuple[str, ...] = ()
    enarx: bool = True
    dev_keys: frozenset[bytes] = frozenset()
    secrets: tuple[tuple[str, frozenset[str]], ...] = ()
    _digest: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._digest:
            object.__setattr__(self, "_digest", _digest_of(self))

    @property
    def name(self) -> str:
        """The policy's name (the attestation policy's ``name``)."""
        return self.attestation.name

    @property
    def digest(self) -> bytes:
        """SHA-256 over the canonical JSON of the attestation policy digest + Steward rules."""
        return self._digest

    @property
    def allow_insecure(self) -> bool:
        return self.attestation.allow_insecure

    def steward_dict(self) -> dict[str, Any]:
        """The Steward rules in canonical form (sorted)."""
        return {
            "workloads": sorted(self.workloads),
            "dns_names": sorted(self.dns_names),
            "enarx": self.enarx,
            "dev_keys": sorted(k.hex() for k in self.dev_keys),
            "secrets": {name: sorted(workloads) for name, workloads in self.secrets},
        }

    def secret_readers(self, name: str) -> frozenset[str]:
        """The workload identities secret *name* may be released to (empty: none)."""
        for rule_name, workloads in self.secrets:
            if rule_name == name:
                return workloads
        return frozenset()

    def allows_dns_name(self, name: str) -> bool:
        """Whether a CSR may request DNS SAN *name* (lowercase)."""
        for pattern in self.dns_names:
            if pattern.startswith("*."):
                suffix = pattern[1:]
                head = name[: -len(suffix)] if name.endswith(suffix) else ""
                if head and "." not in head:
                    return True
            elif name == pattern:
                return True
        return False

    @classmethod
    def production(cls) -> StewardPolicy:
        """The default: the ``production`` attestation policy, any workload, no CSR DNS names."""
        return cls(Policy.production())

    @classmethod
    def dev(cls) -> StewardPolicy:
        """The development policy the demo uses: admits ``nil`` evidence. Never for production."""
        return cls.parse(DEV_POLICY_TOML, source="<built-in dev policy>")

    @classmethod
    def named(cls, name_or_path: str) -> StewardPolicy:
        """``production``, ``permissive``, ``dev``, or the path of a Steward policy file.

        Raises:
            ConfigError: no such built-in policy or file, or an invalid file.
        """
        if name_or_path == "dev":
            return cls.dev()
        if name_or_path in BUILTIN_POLICIES:
            return cls(Policy.named(name_or_path))
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                f"no built-in policy named {name_or_path!r} and no such file; use production, "
                "permissive, dev, or the path of a Steward policy TOML file"
            )
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> StewardPolicy:
        """Read a Steward policy file (its name defaults to the file's stem).

        Raises:
            ConfigError: unreadable or invalid, with ``file:line: field: problem``.
        """
        try:
            with path.open("rb") as f:
                data = f.read(MAX_POLICY_FILE_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the policy file: {e.strerror}") from e
        if len(data) > MAX_POLICY_FILE_BYTES:
            raise ConfigError(f"{path}: policy file is over {MAX_POLICY_FILE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: policy file is not UTF-8 text ({e.reason})") from e
        return cls.parse(text, source=str(path), default_name=path.stem)

    @classmethod
    def parse(cls, text: str, *, source: str, default_name: str | None = None) -> StewardPolicy:
        """Parse Steward policy TOML (see the module docstring).

        Raises:
            ConfigError: invalid TOML, unknown keys, or wrong values, naming file and line.
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            m = _TOML_LINE.search(str(e))
            where = f"{source}:{m.group(1)}" if m else source
            raise ConfigError(f"{where}: invalid TOML: {_TOML_LINE.sub('', str(e)).strip()}") from e
        steward = doc.pop("steward", None)
        rest = text
        if steward is not None:
            if not isinstance(steward, dict):
                _fail(source, text, "steward", "must be a table", "write [steward] and its keys")
            rest = _cut_table(text, "steward")
            try:
                same = tomllib.loads(rest) == doc
            except tomllib.TOMLDecodeError:
                same = False
            if not same:
                _fail(
                    source,
                    text,
                    "steward",
                    "must be one plain [steward] table",
                    "not dotted keys or an inline table; put it after the attestation keys",
                )
        attestation = Policy.parse(rest, source=source, default_name=default_name)
        table: dict[str, Any] = steward or {}
        for key in table:
            if key not in _STEWARD_KEYS:
                _fail(
                    source,
                    text,
                    f"steward.{key}",
                    "unknown key",
                    f"expected one of {', '.join(sorted(_STEWARD_KEYS))}",
                )
        workloads = _workloads(source, text, table.get("workloads", []))
        dns_names = _dns_names(source, text, table.get("dns_names", []))
        enarx = table.get("enarx", True)
        if not isinstance(enarx, bool):
            _fail(source, text, "steward.enarx", "must be true or false")
        dev_keys = _dev_keys(source, text, table.get("dev_keys", []))
        secrets = _secret_rules(source, text, table.get("secrets", {}))
        return cls(
            attestation,
            workloads=workloads,
            dns_names=dns_names,
            enarx=enarx,
            dev_keys=dev_keys,
            secrets=secrets,
        )


def _workloads(source: str, text: str, value: Any) -> frozenset[str]:
    return _identities(
        source,
        text,
        "steward.workloads",
        value,
        (WORKLOAD_URI, MEASUREMENT_URI),
        "write donjon:workload:sha256:<64 hex> or donjon:measurement:<platform>:<hex>",
    )


def _identities(
    source: str,
    text: str,
    where: str,
    value: Any,
    forms: tuple[re.Pattern[str], ...],
    hint: str,
) -> frozenset[str]:
    """A bounded list of identity URIs, each matching one of *forms* in full."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(source, text, where, "must be a list of workload identity URIs")
    if len(value) > MAX_WORKLOADS:
        _fail(source, text, where, f"has {len(value)} entries; at most {MAX_WORKLOADS}")
    for v in value:
        if not any(form.fullmatch(v) for form in forms):
            _fail(source, text, where, f"{v[:80]!r} is not a workload identity", hint)
    return frozenset(value)


def _secret_rules(source: str, text: str, value: Any) -> tuple[tuple[str, frozenset[str]], ...]:
    if not isinstance(value, dict):
        _fail(
            source,
            text,
            "steward.secrets",
            "must be a table of secret names",
            'write [steward.secrets] then NAME = ["donjon:workload:sha256:<hex>", ...]',
        )
    if len(value) > MAX_SECRET_RULES:
        _fail(
            source, text, "steward.secrets", f"has {len(value)} rules; at most {MAX_SECRET_RULES}"
        )
    rules: list[tuple[str, frozenset[str]]] = []
    for name, readers in value.items():
        if not SECRET_NAME.fullmatch(name):
            # Shown as TOML would quote it: a name may hold anything, newlines included.
            shown = json.dumps(name[:80])
            _fail(
                source,
                text,
                f"steward.secrets.{shown}",
                "is not a secret name",
                "use 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
                line=_key_line(text, "steward.secrets", name),
            )
        where = f"steward.secrets.{name}"
        if isinstance(readers, list) and not readers:
            _fail(
                source,
                text,
                where,
                "names no workload, so the secret would go to none",
                "list the workloads (`donjon workload id` prints one's identity) or remove it",
            )
        allowed = _identities(
            source,
            text,
            where,
            readers,
            (WORKLOAD_URI, PUBLISHER_URI),
            "write donjon:workload:sha256:<64 hex> (`donjon workload id` prints it) or "
            "donjon:publisher:sha256:<64 hex> (`donjon package keygen` prints a key's); "
            "a secret never goes to a Keep that does not name its workload",
        )
        rules.append((name, allowed))
    return tuple(sorted(rules))


def _dns_names(source: str, text: str, value: Any) -> tuple[str, ...]:
    where = "steward.dns_names"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(source, text, where, "must be a list of DNS names or *.suffix patterns")
    out: list[str] = []
    for v in value:
        name = v.lower()
        bare = name[2:] if name.startswith("*.") else name
        if not is_dns_name(bare) or ("." not in bare and name.startswith("*.")):
            _fail(source, text, where, f"{v!r} is not a DNS name or a *.suffix pattern")
        out.append(name)
    return tuple(sorted(set(out)))


def _dev_keys(source: str, text: str, value: Any) -> frozenset[bytes]:
    where = "steward.dev_keys"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(source, text, where, "must be a list of hex DER SubjectPublicKeyInfos")
    keys: set[bytes] = set()
    for v in value:
        try:
            key = bytes.fromhex(v)
        except ValueError:
            _fail(source, text, where, f"{v[:40]!r}… is not hex")
        if len(key) > MAX_SPKI_BYTES:
            _fail(source, text, where, f"{v[:40]!r}… is over {MAX_SPKI_BYTES} bytes")
        try:
            NilVerifier(trusted_keys=[key])
        except ConfigError as e:
            _fail(source, text, where, f"{v[:40]!r}… is not a P-384 SubjectPublicKeyInfo ({e})")
        keys.add(key)
    return frozenset(keys)


def _cut_table(text: str, table: str) -> str:
    """*text* with the lines of ``[table]`` (header to the next header) blanked."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    inside = False
    for line in lines:
        header = _HEADER.match(line)
        if header:
            name = header.group(1)
            inside = name == table or name.startswith(table + ".")
        elif _ANY_HEADER.match(line) and line.lstrip().startswith("[["):
            inside = False
        out.append("\n" if inside and line.endswith("\n") else ("" if inside else line))
    return "".join(out)


def _line_of(text: str, dotted: str) -> int | None:
    parts = dotted.split(".")
    table = ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = header.group(1)
            if table == dotted:
                return lineno
            continue
        if (
            len(parts) >= 2
            and table == ".".join(parts[:-1])
            and re.match(rf"^\s*{re.escape(parts[-1])}\s*=", line)
        ):
            return lineno
    # A key of a sub-table written inline (`secrets = {...}`) is on its parent key's line.
    return _line_of(text, ".".join(parts[:-1])) if len(parts) > 2 else None


def _key_line(text: str, table: str, key: str) -> int | None:
    """The line of *key* (bare or quoted) in ``[table]``, or None."""
    forms = {key, json.dumps(key), f"'{key}'"}
    inside = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            inside = header.group(1) == table
            continue
        if inside and line.partition("=")[0].strip() in forms:
            return lineno
    return None


def _fail(
    source: str,
    text: str,
    dotted: str,
    problem: str,
    hint: str = "",
    *,
    line: int | None = None,
) -> NoReturn:
    line = line if line is not None else _line_of(text, dotted)
    where = f"{source}:{line}" if line is not None else source
    message = f"{where}: {dotted}: {problem}"
    raise ConfigError(f"{message}; {hint}" if hint else message)


def _digest_of(policy: StewardPolicy) -> bytes:
    body = {"attestation": policy.attestation.digest(), "steward": policy.steward_dict()}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).digest()


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True)
class StewardSettings:
    """Everything ``donjon steward serve`` needs, already validated.

    Attributes:
        state_dir: holds ``ca.key`` (0600) and ``ca.crt``; shared by replicas.
        policy: the Steward policy.
        host, port: where to listen (port 0 = any free port).
        cert_lifetime: lifetime of issued certificates.
        tls_cert, tls_key: serve HTTPS with these PEM files (both or neither).
        workers: uvicorn worker processes (one per core is the usual choice).
        endorsements: fetch the endorsements a Keep did not send (AMD KDS, Intel PCS) with this
            configuration; None (the default): verify only what the Keep sent.
        audit_log: append every decision to this file (``donjon.steward.audit``); None: none.
        policy_source: what :attr:`policy` was read from (a built-in name or a file), read again
            on SIGHUP; None: the policy is never reloaded.
        tenants_dir: serve a tenant per subdirectory under ``/t/<name>`` (``donjon.steward.
            tenants``); None: none.
    """

    state_dir: Path
    policy: StewardPolicy = field(default_factory=StewardPolicy.production)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    cert_lifetime: timedelta = DEFAULT_CERT_LIFETIME
    tls_cert: Path | None = None
    tls_key: Path | None = None
    workers: int = 1
    endorsements: FetchConfig | None = None
    audit_log: Path | None = None
    policy_source: str | None = None
    tenants_dir: Path | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together; give both or neither")
        if not MIN_CERT_LIFETIME <= self.cert_lifetime <= MAX_CERT_LIFETIME:
            raise UsageError(
                f"certificate lifetime {format_duration(self.cert_lifetime)} is out of range; "
                f"use {format_duration(MIN_CERT_LIFETIME)} to {format_duration(MAX_CERT_LIFETIME)}"
            )
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port {self.port} is out of range 0..65535")
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")


def parse_duration(text: str) -> timedelta:
    """``30s``, ``30m``, ``24h`` or ``7d`` as a timedelta.

    Raises:
        UsageError: anything else.
    """
    m = _DURATION.match(text)
    if not m:
        raise UsageError(f"duration {text!r} is not understood; write e.g. 30m, 24h or 7d")
    return timedelta(seconds=int(m.group(1)) * _DURATION_UNITS[m.group(2)])


def format_duration(value: timedelta) -> str:
    """The shortest exact ``<n><unit>`` form of *value*."""
    seconds = int(value.total_seconds())
    # Days only from two on: "24h" reads better than "1d" for the default lifetime.
    for unit, size, minimum in (("d", 86400, 2 * 86400), ("h", 3600, 3600), ("m", 60, 60)):
        if seconds % size == 0 and seconds >= minimum:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port).

    Raises:
        UsageError: not that form, or a port out of range.
    """
    m = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$", text) or re.match(
        r"^([A-Za-z0-9.\-]+):(\d{1,5})$", text
    )
    if not m:
        raise UsageError(f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:8443, [::1]:0)")
    port = int(m.group(2))
    if port > 65535:
        raise UsageError(f"--listen port {port} is out of range 0..65535")
    return m.group(1), port


__all__ = [
    "DEFAULT_CERT_LIFETIME",
    "DEFAULT_PORT",
    "DEV_POLICY_TOML",
    "MAX_CERT_LIFETIME",
    "MEASUREMENT_URI",
    "MIN_CERT_LIFETIME",
    "PUBLISHER_URI",
    "WORKLOAD_URI",
    "StewardPolicy",
    "StewardSettings",
    "format_duration",
    "parse_duration",
    "parse_listen",
]
