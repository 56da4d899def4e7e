"""Attestation policy: which authentic evidence is acceptable, as a TOML file.

Rule 1: a verifier decides whether evidence is *authentic*; a policy decides whether authentic
evidence is *acceptable*. :func:`evaluate` never raises for a rejection: it returns a
:class:`~donjon.attestation.verdict.Verdict` whose reason explains itself, in the form
``rejected: <what was found> not allowed by policy '<name>'``.
Rule 2: secure by default. A key a policy file leaves out takes the ``production`` value: debug
rejected, TCB status UpToDate or SWHardeningNeeded, TDX SEPT_VE_DISABLE required, and no ``nil``
evidence unless ``allow_insecure = true``. Measurements, signers and claims are checked only when
the policy lists them.
Rule 3: a policy names itself and its content: :meth:`Policy.digest` hashes the canonical form
(:meth:`Policy.to_dict`), so a Steward can state exactly which rules it applied.
Rule 4: a top-level key applies to every platform; the same key in a platform section
(``[sev-snp]``, ``[tdx]``, ``[sgx]``, ``[cca]``, ``[nitro]``, ``[nil]``) replaces it there.

File format (every key optional; see ``docs/attestation/policy.md``)::

    name = "fleet-2026"
    allow_insecure = false            # true admits nil (no-TEE) evidence
    platforms = ["sev-snp", "tdx"]    # or "any"
    reject_debug = true
    tcb_statuses = ["UpToDate"]       # or "any"
    advisories = "any"                # allowed advisory IDs; reject_advisories = [...] denies
    measurements = ["<hex>", ...]
    claims = { vmpl = [0] }           # each named claim must equal one of the values
    min_claims = { guest_svn = 2 }    # each named claim must be an integer >= the value

    [sev-snp]
    min_tcb = { bl = 3, snp = 20 }    # per component of REPORTED_TCB (bl tee snp ucode fmc)
    signers = ["<id or author key digest>"]

    [sgx]
    signers = ["<MRSIGNER>"]

    [tdx]
    require_sept_ve_disable = true
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Final, NoReturn

from donjon.attestation.inputs import InputError, read_bounded
from donjon.attestation.result import Platform, VerifiedEvidence
from donjon.attestation.verdict import Check, Verdict
from donjon.errors import ConfigError, PolicyError, UsageError

POLICY_FORMAT_VERSION: Final = 1
# A policy lists reference values; even a large fleet's fits in far less than this.
MAX_POLICY_FILE_BYTES: Final = 1024 * 1024
MAX_POLICY_NAME_CHARS: Final = 100
# Bounds the work evaluate() does per evidence, whatever the policy file says.
MAX_LIST_ENTRIES: Final = 10_000

BUILTIN_POLICIES: Final = ("production", "permissive")

KNOWN_TCB_STATUSES: Final = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "TDRelaunchAdvised",
        "TDRelaunchAdvisedConfigurationNeeded",
        "Revoked",
    }
)
PRODUCTION_TCB_STATUSES: Final = frozenset({"UpToDate", "SWHardeningNeeded"})

# SEV-SNP TCB_VERSION components (Milan/Genoa: bl tee snp ucode; Turin adds fmc).
SNP_TCB_COMPONENTS: Final = ("fmc", "bl", "tee", "snp", "ucode")

HARDWARE_PLATFORMS: Final = frozenset(p for p in Platform if p is not Platform.NIL)

_ANY = "any"
_TD_ATTRIBUTES_DEBUG_BIT = 0
_TD_ATTRIBUTES_SEPT_VE_DISABLE_BIT = 28

# Where a platform's debug flag comes from, for rejection messages.
_DEBUG_SOURCE: Final[Mapping[Platform, str]] = {
    Platform.SEV_SNP: "SEV-SNP guest policy bit 19",
    Platform.SGX: "SGX ATTRIBUTES.DEBUG",
    Platform.TDX: "TDX TD_ATTRIBUTES.DEBUG",
    Platform.CCA: "CCA platform lifecycle state",
    Platform.NITRO: "Nitro debug mode, PCR0-2 all zero",
    Platform.NIL: "nil evidence",
}
# Claims that name who signed the workload, per platform, and what to call them.
_SIGNER_CLAIMS: Final[Mapping[Platform, tuple[str, ...]]] = {
    Platform.SGX: ("mrsigner",),
    Platform.SEV_SNP: ("id_key_digest", "author_key_digest"),
    Platform.NITRO: ("pcr8", "pcrs.8"),
}
_SIGNER_LABEL: Final[Mapping[Platform, str]] = {
    Platform.SGX: "SGX MRSIGNER",
    Platform.SEV_SNP: "SEV-SNP ID or author key digest",
    Platform.NITRO: "Nitro PCR8 (EIF signing certificate)",
}
# Accepted measurement lengths in bytes, so a pasted value of the wrong kind fails at load time.
_MEASUREMENT_BYTES: Final[Mapping[Platform | None, frozenset[int]]] = {
    None: frozenset({32, 48, 64}),
    Platform.SEV_SNP: frozenset({48}),
    Platform.TDX: frozenset({48}),
    Platform.SGX: frozenset({32}),
    Platform.NITRO: frozenset({48}),
    Platform.CCA: frozenset({32, 48, 64}),
}

Scalar = str | int | bool


class AnyValue(enum.Enum):
    """The value ``"any"`` in a policy: no check, even where a higher level sets one."""

    ANY = "any"


ANY: Final = AnyValue.ANY


@dataclass(frozen=True, slots=True)
class Rules:
    """The checks of one level of a policy; ``None`` means "not set here".

    At the top level of a parsed :class:`Policy` the baseline fields (``reject_debug``,
    ``tcb_statuses``, ``require_sept_ve_disable``) are always set; in a platform section, a
    field that is set replaces the top-level one for that platform (Rule 4). :data:`ANY` in a
    platform section lifts a top-level list for that platform.

    Attributes:
        reject_debug: reject evidence whose ``debug`` is true.
        tcb_statuses: accepted TCB statuses (evidence without a TCB status passes), or ANY.
        advisories: the only advisory IDs allowed, or ANY.
        reject_advisories: advisory IDs that reject the evidence.
        measurements: accepted measurements, lowercase hex, or ANY.
        signers: accepted signers (SGX MRSIGNER, SNP ID/author key digest, Nitro PCR8), or ANY.
        min_tcb: SEV-SNP minimum per REPORTED_TCB component.
        claims: claim name (dotted path) -> accepted values.
        min_claims: claim name (dotted path) -> minimum integer value.
        require_sept_ve_disable: TDX only; require TD_ATTRIBUTES.SEPT_VE_DISABLE (bit 28).
    """

    reject_debug: bool | None = None
    tcb_statuses: frozenset[str] | AnyValue | None = None
    advisories: frozenset[str] | AnyValue | None = None
    reject_advisories: frozenset[str] | None = None
    measurements: frozenset[str] | AnyValue | None = None
    signers: frozenset[str] | AnyValue | None = None
    min_tcb: tuple[tuple[str, int], ...] | None = None
    claims: tuple[tuple[str, tuple[Scalar, ...]], ...] | None = None
    min_claims: tuple[tuple[str, int], ...] | None = None
    require_sept_ve_disable: bool | None = None

    def merged_over(self, base: Rules) -> Rules:
        """These rules with every unset field taken from *base*."""
        return Rules(
            **{
                f.name: getattr(self, f.name)
                if getattr(self, f.name) is not None
                else getattr(base, f.name)
                for f in fields(Rules)
            }
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """An attestation policy. Build one with :meth:`production`, :meth:`permissive`,
    :meth:`load`, :meth:`parse` or :meth:`named`.

    Attributes:
        name: how verdicts and results name this policy.
        allow_insecure: admit evidence without a TEE (platform ``nil``, claim ``insecure``).
        platforms: accepted platforms; None = every hardware platform (and ``nil`` when
            ``allow_insecure`` is set).
        rules: the top-level rules (baseline fields always set).
        platform_rules: per-platform rules that replace top-level fields for that platform.
        description: free text for humans; not part of the digest.
    """

    name: str
    allow_insecure: bool = False
    platforms: frozenset[Platform] | None = None
    rules: Rules = field(
        default_factory=lambda: Rules(
            reject_debug=True,
            tcb_statuses=PRODUCTION_TCB_STATUSES,
            require_sept_ve_disable=True,
        )
    )
    platform_rules: tuple[tuple[Platform, Rules], ...] = ()
    description: str = ""

    @classmethod
    def production(cls) -> Policy:
        """The built-in policy for real deployments.

        Rejects debug, any TCB status but UpToDate and SWHardeningNeeded, TDX guests without
        SEPT_VE_DISABLE, and evidence without a TEE.
        """
        return _builtin("production")

    @classmethod
    def permissive(cls) -> Policy:
        """The built-in authenticity-only policy: anything that verifies, except ``nil``."""
        return _builtin("permissive")

    @classmethod
    def load(cls, path: Path) -> Policy:
        """Read a policy file; its name defaults to the file's stem.

        Raises:
            ConfigError: unreadable or invalid, with ``file:line: field: problem``.
        """
        try:
            data = read_bounded(path, max_bytes=MAX_POLICY_FILE_BYTES, what="policy file")
        except InputError as e:
            raise ConfigError(e.message) from e
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: policy file is not UTF-8 text ({e.reason})") from e
        return cls.parse(text, source=str(path), default_name=path.stem)

    @classmethod
    def parse(cls, text: str, *, source: str, default_name: str | None = None) -> Policy:
        """Parse policy TOML.

        Args:
            text: the TOML document.
            source: where it came from, for error messages (a path, ``"<steward config>"``).
            default_name: the name when the document has no ``name`` key (default: *source*).

        Raises:
            ConfigError: invalid TOML, an unknown key or platform, or a value of the wrong
                type or shape; the message says ``source:line: field: problem``.
        """
        return _Parser(text, source).policy(default_name or source)

    @classmethod
    def named(cls, name_or_path: str) -> Policy:
        """A built-in policy by name (``production``, ``permissive``) or a policy file path.

        Built-in names win over files of the same name: write ``./production`` for the file.

        Raises:
            ConfigError: no built-in policy of that name and no such file, or an invalid file.
        """
        if name_or_path in BUILTIN_POLICIES:
            return _builtin(name_or_path)
        path = Path(name_or_path)
        if not path.exists():
            raise ConfigError(
                f"no built-in policy named {name_or_path!r} and no such file; use one of "
                f"{', '.join(BUILTIN_POLICIES)} or the path of a policy TOML file"
            )
        return cls.load(path)

    def rules_for(self, platform: Platform) -> Rules:
        """The effective rules for *platform* (its section over the top level)."""
        for p, rules in self.platform_rules:
            if p is platform:
                return rules.merged_over(self.rules)
        return self.rules

    def accepted_platforms(self) -> frozenset[Platform]:
        """The platforms this policy can accept evidence from."""
        if self.platforms is not None:
            chosen = self.platforms
        else:
            chosen = HARDWARE_PLATFORMS | {Platform.NIL}
        return chosen if self.allow_insecure else chosen - {Platform.NIL}

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: JSON/TOML-compatible, sorted lists, every baseline key present."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": POLICY_FORMAT_VERSION,
            "allow_insecure": self.allow_insecure,
            "platforms": _ANY if self.platforms is None else sorted(map(str, self.platforms)),
        }
        if self.description:
            out["description"] = self.description
        out.update(_rules_to_dict(self.rules))
        for platform, rules in sorted(self.platform_rules, key=lambda pr: str(pr[0])):
            out[str(platform)] = _rules_to_dict(rules)
        return out

    def digest(self) -> str:
        """``sha256:<hex>`` over the canonical JSON of :meth:`to_dict`, without name/description.

        Two policies with the same rules have the same digest whatever they are called.
        """
        body = {k: v for k, v in self.to_dict().items() if k not in ("name", "description")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return "sha256:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def to_toml(self) -> str:
        """The policy as a TOML document that :meth:`parse` reads back to an equal policy."""
        d = self.to_dict()
        lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
        for k, v in d.items():
            if isinstance(v, dict):
                lines.append("")
                lines.append(f"[{k}]")
                lines += [f"{sk} = {_toml_value(sv)}" for sk, sv in v.items()]
        return "\n".join(lines) + "\n"


def evaluate(
    policy: Policy,
    evidence: VerifiedEvidence,
    *,
    nonce: bytes | None = None,
    expected_report_data: bytes | None = None,
) -> Verdict:
    """Apply *policy* to authentic *evidence*; never raises for a rejection.

    Args:
        policy: the policy.
        evidence: what a verifier returned.
        nonce: if given, the report data must **begin with** these bytes (compared in constant
            time). Use it when the attester put the relying party's nonce first in its report
            data. For Nitro, the document's own ``nonce`` field may hold it instead (AWS's
            freshness field; Nitro report data is the document's ``user_data``).
        expected_report_data: if given, the report data must **equal** these bytes (constant
            time). Use it with ``donjon.crypto.binding.report_data_for(spki, nonce)`` when the
            attester's key is known: that is how donjon Keeps bind key and nonce.

    Raises:
        UsageError: *nonce* or *expected_report_data* is given but empty (a caller bug: an empty
            expectation would match anything).
    """
    if nonce is not None and not nonce:
        raise UsageError("nonce must not be empty; pass None to skip the nonce check")
    if expected_report_data is not None and not expected_report_data:
        raise UsageError("expected report data must not be empty; pass None to skip the check")
    rules = policy.rules_for(evidence.platform)
    ctx = _Ctx(policy, evidence, rules)
    checks = (
        _check_platform(ctx),
        _check_report_data(ctx, expected_report_data),
        _check_nonce(ctx, nonce),
        _check_debug(ctx),
        _check_tcb_status(ctx),
        _check_advisories(ctx),
        _check_min_tcb(ctx),
        _check_sept_ve_disable(ctx),
        _check_measurement(ctx),
        _check_signer(ctx),
        _check_claims(ctx),
        _check_min_claims(ctx),
    )
    ran = tuple(c for c in checks if c is not None)
    failed = next((c for c in ran if not c.passed), None)
    return Verdict(
        accepted=failed is None,
        reason=None if failed is None else failed.detail,
        policy=policy.name,
        evidence=evidence,
        policy_digest=_digest(policy),
        checks=ran,
    )


def enforce(
    policy: Policy,
    evidence: VerifiedEvidence,
    *,
    nonce: bytes | None = None,
    expected_report_data: bytes | None = None,
) -> Verdict:
    """Like :func:`evaluate`, but a rejection raises.

    Raises:
        PolicyError: the policy rejects the evidence; the message is the verdict's reason.
    """
    verdict = evaluate(policy, evidence, nonce=nonce, expected_report_data=expected_report_data)
    if not verdict.accepted:
        raise PolicyError(verdict.reason or f"rejected by policy '{policy.name}'")
    return verdict


# --- checks ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ctx:
    policy: Policy
    evidence: VerifiedEvidence
    rules: Rules

    @property
    def by(self) -> str:
        return f"policy '{self.policy.name}'"

    @staticmethod
    def reject(name: str, message: str) -> Check:
        return Check(name, False, f"rejected: {message}")


def _check_platform(ctx: _Ctx) -> Check:
    ev = ctx.evidence
    insecure = ev.platform is Platform.NIL or ev.claims.get("insecure") is True
    if insecure and not ctx.policy.allow_insecure:
        return ctx.reject(
            "platform",
            f"insecure evidence without a TEE (platform {ev.platform}) not allowed by {ctx.by}",
        )
    if ev.platform not in ctx.policy.accepted_platforms():
        return ctx.reject("platform", f"platform {ev.platform} not allowed by {ctx.by}")
    if insecure:
        return Check("platform", True, f"{ev.platform} accepted: INSECURE, no TEE protects it")
    return Check("platform", True, f"{ev.platform} accepted")


def _check_report_data(ctx: _Ctx, expected: bytes | None) -> Check | None:
    if expected is None:
        return None
    actual = ctx.evidence.report_data
    if hmac.compare_digest(actual, expected):
        return Check("report_data", True, "report data equals the expected value")
    return ctx.reject(
        "report_data",
        f"report data {_short(actual)} is not the expected {_short(expected)} "
        "(evidence made for another key or nonce, or replayed)",
    )


def _check_nonce(ctx: _Ctx, nonce: bytes | None) -> Check | None:
    if nonce is None:
        return None
    actual = ctx.evidence.report_data
    if ctx.evidence.platform is Platform.NITRO:
        # AWS gives freshness its own signed field; report data is the document's user_data.
        field = _hex_claim(ctx.evidence.claims.get("nonce"))
        if field is not None and hmac.compare_digest(field[: len(nonce)], nonce):
            return Check(
                "nonce", True, f"Nitro nonce field begins with the nonce ({len(nonce)} bytes)"
            )
    if len(nonce) > len(actual):
        return ctx.reject(
            "nonce",
            f"report data ({len(actual)} bytes) cannot hold the nonce ({len(nonce)} bytes)",
        )
    if hmac.compare_digest(actual[: len(nonce)], nonce):
        return Check("nonce", True, f"report data begins with the nonce ({len(nonce)} bytes)")
    return ctx.reject(
        "nonce",
        f"report data {_short(actual)} does not begin with the nonce {_short(nonce)} "
        "(stale or replayed evidence)",
    )


def _check_debug(ctx: _Ctx) -> Check:
    if not ctx.evidence.debug:
        return Check("debug", True, "debug disabled")
    if not ctx.rules.reject_debug:
        return Check("debug", True, "debug enabled, allowed by the policy")
    source = _DEBUG_SOURCE.get(ctx.evidence.platform, str(ctx.evidence.platform))
    return ctx.reject("debug", f"debug enabled ({source}) not allowed by {ctx.by}")


def _check_tcb_status(ctx: _Ctx) -> Check:
    status = ctx.evidence.tcb_status
    allowed = ctx.rules.tcb_statuses
    if status is None:
        return Check("tcb_status", True, f"no TCB status for {ctx.evidence.platform}")
    if not isinstance(allowed, frozenset) or status in allowed:
        return Check("tcb_status", True, f"TCB status {status}")
    advisories = ctx.evidence.advisory_ids
    extra = f" (advisories {', '.join(advisories)})" if advisories else ""
    return ctx.reject("tcb_status", f"TCB status {status}{extra} not allowed by {ctx.by}")


def _check_advisories(ctx: _Ctx) -> Check | None:
    allowed = ctx.rules.advisories
    denied = ctx.rules.reject_advisories or frozenset()
    if not isinstance(allowed, frozenset) and not denied:
        return None
    present = tuple(a.upper() for a in ctx.evidence.advisory_ids)
    bad = [
        a for a in present if a in denied or (isinstance(allowed, frozenset) and a not in allowed)
    ]
    if bad:
        noun = "advisory" if len(bad) == 1 else "advisories"
        return ctx.reject("advisories", f"{noun} {', '.join(bad)} not allowed by {ctx.by}")
    return Check("advisories", True, f"advisories {', '.join(present) or 'none'} allowed")


def _check_min_tcb(ctx: _Ctx) -> Check | None:
    minimum = ctx.rules.min_tcb
    if not minimum or ctx.evidence.platform is not Platform.SEV_SNP:
        return None
    reported = _snp_tcb_fields(ctx.evidence)
    if reported is None:
        return ctx.reject(
            "min_tcb",
            f"SEV-SNP evidence without reported_tcb_fields, needed by the minimum TCB of {ctx.by}",
        )
    low = [
        f"{c}={reported[c]} below the minimum {m}"
        for c, m in minimum
        # A component the chip does not have (FMC before Turin) cannot be below a minimum.
        if c in reported and reported[c] < m
    ]
    if low:
        return ctx.reject("min_tcb", f"SEV-SNP reported TCB {', '.join(low)} required by {ctx.by}")
    shown = ", ".join(f"{c}={reported[c]}" for c in SNP_TCB_COMPONENTS if c in reported)
    return Check("min_tcb", True, f"SEV-SNP reported TCB {shown} meets the minimum")


def _check_sept_ve_disable(ctx: _Ctx) -> Check | None:
    if ctx.evidence.platform is not Platform.TDX or not ctx.rules.require_sept_ve_disable:
        return None
    attrs = _hex_claim(ctx.evidence.claims.get("td_attributes"))
    if attrs is None or len(attrs) != 8:
        return ctx.reject(
            "sept_ve_disable",
            f"TDX evidence without an 8-byte td_attributes claim, needed by {ctx.by}",
        )
    if (int.from_bytes(attrs, "little") >> _TD_ATTRIBUTES_SEPT_VE_DISABLE_BIT) & 1:
        return Check("sept_ve_disable", True, "TDX TD_ATTRIBUTES.SEPT_VE_DISABLE set")
    return ctx.reject(
        "sept_ve_disable",
        f"TDX TD_ATTRIBUTES.SEPT_VE_DISABLE (bit 28) not set, required by {ctx.by}",
    )


def _check_measurement(ctx: _Ctx) -> Check | None:
    accepted = ctx.rules.measurements
    if not isinstance(accepted, frozenset):
        return None
    m = ctx.evidence.measurement.hex()
    if m in accepted:
        return Check("measurement", True, f"measurement {m} accepted")
    return ctx.reject(
        "measurement", f"measurement {m} not among the {len(accepted)} accepted by {ctx.by}"
    )


def _check_signer(ctx: _Ctx) -> Check | None:
    accepted = ctx.rules.signers
    names = _SIGNER_CLAIMS.get(ctx.evidence.platform)
    if not isinstance(accepted, frozenset) or names is None:
        return None
    label = _SIGNER_LABEL[ctx.evidence.platform]
    found = [v for n in names if (v := _hex_claim(_claim(ctx.evidence, n))) is not None]
    for value in found:
        if value.hex() in accepted:
            return Check("signer", True, f"signer ({label}) {value.hex()} accepted")
    shown = ", ".join(v.hex() for v in found) or "missing"
    return ctx.reject(
        "signer", f"signer ({label}) {shown} not among the accepted signers of {ctx.by}"
    )


def _check_claims(ctx: _Ctx) -> Check | None:
    required = ctx.rules.claims
    if not required:
        return None
    for name, values in required:
        actual = _claim(ctx.evidence, name)
        if actual is None:
            return ctx.reject("claims", f"claim {name} missing, required by {ctx.by}")
        if not any(_scalar_eq(actual, v) for v in values):
            shown = ", ".join(_show_scalar(v) for v in values)
            return ctx.reject(
                "claims",
                f"claim {name} = {_show_scalar(actual)} not among [{shown}] accepted by {ctx.by}",
            )
    return Check("claims", True, f"claims {', '.join(n for n, _ in required)} accepted")


def _check_min_claims(ctx: _Ctx) -> Check | None:
    required = ctx.rules.min_claims
    if not required:
        return None
    for name, minimum in required:
        actual = _int_claim(_claim(ctx.evidence, name))
        if actual is None:
            return ctx.reject("min_claims", f"integer claim {name} missing, required by {ctx.by}")
        if actual < minimum:
            return ctx.reject(
                "min_claims", f"claim {name} = {actual} below the minimum {minimum} of {ctx.by}"
            )
    return Check("min_claims", True, f"claims {', '.join(n for n, _ in required)} at minimum")


def _claim(evidence: VerifiedEvidence, path: str) -> Any:
    """A claim by dotted path (``pcrs.8``): mapping keys (str or int) and list indexes."""
    node: Any = evidence.claims
    for part in path.split("."):
        if isinstance(node, Mapping):
            if part in node:
                node = node[part]
            elif part.isdigit() and int(part) in node:
                node = node[int(part)]
            else:
                return None
        elif isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _snp_tcb_fields(evidence: VerifiedEvidence) -> dict[str, int] | None:
    for name in ("reported_tcb_fields", "reported_tcb"):
        value = evidence.claims.get(name)
        if isinstance(value, Mapping):
            out = {
                str(k): v
                for k, v in value.items()
                if isinstance(v, int) and not isinstance(v, bool)
            }
            if out:
                return out
    return None


def _hex_claim(value: Any) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and _HEX.fullmatch(value) and len(value) % 2 == 0:
        return bytes.fromhex(value)
    return None


def _int_claim(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def _scalar_eq(actual: Any, expected: Scalar) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual is expected
    if isinstance(expected, int):
        return _int_claim(actual) == expected
    if isinstance(actual, str):
        if _HEX.fullmatch(actual) and _HEX.fullmatch(expected):
            return actual.lower() == expected.lower()
        return actual == expected
    if isinstance(actual, bytes):
        return actual.hex() == expected.lower()
    return False


def _show_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _short(data: bytes, n: int = 16) -> str:
    h = data.hex()
    return h if len(h) <= 2 * n else f"{h[: 2 * n]}…({len(data)} bytes)"


@lru_cache(maxsize=256)
def _digest(policy: Policy) -> str:
    # Policies are immutable and hashable, so evaluate() pays for the digest once per policy.
    return policy.digest()


# --- built-ins ---------------------------------------------------------------------------------


@cache
def _builtin(name: str) -> Policy:
    # Imported here: importlib.resources costs ~20 ms, which only built-in policies need.
    from importlib import resources

    resource = resources.files("donjon.attestation").joinpath(f"policies/{name}.toml")
    text = resource.read_text(encoding="utf-8")
    return Policy.parse(text, source=f"<built-in policy {name}>", default_name=name)


# --- parsing -----------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-fA-F]+")
_CLAIM_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")
_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOP_ONLY_KEYS = frozenset({"name", "version", "description", "allow_insecure", "platforms"})
_COMMON_RULE_KEYS = frozenset(
    {
        "reject_debug",
        "tcb_statuses",
        "advisories",
        "reject_advisories",
        "measurements",
        "claims",
        "min_claims",
    }
)
_PLATFORM_RULE_KEYS: Final[Mapping[Platform, frozenset[str]]] = {
    Platform.SEV_SNP: _COMMON_RULE_KEYS | {"signers", "min_tcb"},
    Platform.SGX: _COMMON_RULE_KEYS | {"signers"},
    Platform.TDX: _COMMON_RULE_KEYS | {"require_sept_ve_disable"},
    Platform.CCA: _COMMON_RULE_KEYS,
    Platform.NITRO: _COMMON_RULE_KEYS | {"signers"},
    Platform.NIL: _COMMON_RULE_KEYS,
}
_TOP_RULE_KEYS = _COMMON_RULE_KEYS | {"require_sept_ve_disable"}


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self._text = text
        self._source = source

    def policy(self, default_name: str) -> Policy:
        try:
            doc = tomllib.loads(self._text)
        except tomllib.TOMLDecodeError as e:
            # Python 3.11's tomllib puts the position in the message text only.
            m = _TOML_LINE.search(str(e))
            if m:
                line: int | None = int(m.group(1))
            elif "end of document" in str(e):
                line = max(1, len(self._text.splitlines()))
            else:
                line = None
            where = f"{self._source}:{line}" if line is not None else self._source
            problem = _TOML_LINE.sub("", str(e)).replace("(at end of document)", "").strip()
            raise ConfigError(f"{where}: invalid TOML: {problem}") from e
        platform_names = {str(p) for p in Platform}
        for key in doc:
            if key not in _TOP_ONLY_KEYS | _TOP_RULE_KEYS | platform_names:
                self._fail(
                    (key,),
                    "unknown key",
                    self._hint(key, _TOP_ONLY_KEYS | _TOP_RULE_KEYS | platform_names),
                )
        version = doc.get("version", POLICY_FORMAT_VERSION)
        if version != POLICY_FORMAT_VERSION or isinstance(version, bool):
            self._fail(
                ("version",),
                f"unsupported policy format version {version!r}",
                f"this donjon reads version {POLICY_FORMAT_VERSION}",
            )
        name = doc.get("name", default_name)
        if (
            not isinstance(name, str)
            or not name.strip()
            or len(name) > MAX_POLICY_NAME_CHARS
            or not name.isprintable()
        ):
            self._fail(
                ("name",),
                "must be a non-empty printable string",
                f"at most {MAX_POLICY_NAME_CHARS} characters",
            )
        description = doc.get("description", "")
        if not isinstance(description, str):
            self._fail(("description",), "must be a string")
        allow_insecure = self._bool(doc, ("allow_insecure",), default=False)
        platforms = self._platforms(doc, allow_insecure)
        top = self._rules(doc, (), _TOP_RULE_KEYS, None)
        # Rule 2: the baseline defaults to production; at the top, "any" simply means unset.
        top = replace(
            top,
            reject_debug=True if top.reject_debug is None else top.reject_debug,
            tcb_statuses=PRODUCTION_TCB_STATUSES if top.tcb_statuses is None else top.tcb_statuses,
            require_sept_ve_disable=(
                True if top.require_sept_ve_disable is None else top.require_sept_ve_disable
            ),
            advisories=None if top.advisories is ANY else top.advisories,
            measurements=None if top.measurements is ANY else top.measurements,
            signers=None if top.signers is ANY else top.signers,
        )
        sections: list[tuple[Platform, Rules]] = []
        for p in Platform:
            section = doc.get(str(p))
            if section is None:
                continue
            if not isinstance(section, dict):
                self._fail((str(p),), "must be a table", f"write [{p}] and its keys below it")
            allowed = _PLATFORM_RULE_KEYS[p]
            for key in section:
                if key not in allowed:
                    self._fail((str(p), key), "unknown key", self._hint(key, allowed))
            sections.append((p, self._rules(section, (str(p),), allowed, p)))
        return Policy(
            name=name.strip(),
            allow_insecure=allow_insecure,
            platforms=platforms,
            rules=top,
            platform_rules=tuple(sections),
            description=description,
        )

    def _platforms(
        self, doc: Mapping[str, Any], allow_insecure: bool
    ) -> frozenset[Platform] | None:
        value = doc.get("platforms", _ANY)
        if value == _ANY:
            return None
        items = self._str_list(value, ("platforms",), 'a list of platform names or "any"')
        out: set[Platform] = set()
        for item in items:
            try:
                out.add(Platform(item))
            except ValueError:
                self._fail(
                    ("platforms",),
                    f"unknown platform {item!r}",
                    f"expected one of {', '.join(map(str, Platform))}",
                )
        if Platform.NIL in out and not allow_insecure:
            self._fail(
                ("platforms",),
                "nil evidence has no TEE",
                "it needs allow_insecure = true in the same policy",
            )
        return frozenset(out)

    def _rules(
        self,
        doc: Mapping[str, Any],
        at: tuple[str, ...],
        allowed: frozenset[str],
        platform: Platform | None,
    ) -> Rules:
        def has(key: str) -> bool:
            return key in doc and key in allowed

        rules = Rules()
        if has("reject_debug"):
            rules = replace(
                rules, reject_debug=self._bool(doc, (*at, "reject_debug"), default=True)
            )
        if has("require_sept_ve_disable"):
            rules = replace(
                rules,
                require_sept_ve_disable=self._bool(
                    doc, (*at, "require_sept_ve_disable"), default=True
                ),
            )
        if has("tcb_statuses"):
            rules = replace(
                rules, tcb_statuses=self._statuses(doc["tcb_statuses"], (*at, "tcb_statuses"))
            )
        if has("advisories"):
            rules = replace(
                rules,
                advisories=self._advisories(doc["advisories"], (*at, "advisories"), allow_any=True),
            )
        if has("reject_advisories"):
            denied = self._advisories(
                doc["reject_advisories"], (*at, "reject_advisories"), allow_any=False
            )
            rules = replace(
                rules, reject_advisories=denied if isinstance(denied, frozenset) else None
            )
        if has("measurements"):
            rules = replace(
                rules,
                measurements=self._hex_list(
                    doc["measurements"], (*at, "measurements"), _MEASUREMENT_BYTES.get(platform)
                ),
            )
        if has("signers"):
            rules = replace(rules, signers=self._hex_list(doc["signers"], (*at, "signers"), None))
        if has("min_tcb"):
            rules = replace(rules, min_tcb=self._min_tcb(doc["min_tcb"], (*at, "min_tcb")))
        if has("claims"):
            rules = replace(rules, claims=self._claims(doc["claims"], (*at, "claims")))
        if has("min_claims"):
            rules = replace(
                rules, min_claims=self._min_claims(doc["min_claims"], (*at, "min_claims"))
            )
        return rules

    def _bool(self, doc: Mapping[str, Any], path: tuple[str, ...], *, default: bool) -> bool:
        value = doc.get(path[-1], default)
        if not isinstance(value, bool):
            self._fail(path, f"must be true or false, not {_toml_type(value)}")
        return value

    def _statuses(self, value: Any, path: tuple[str, ...]) -> frozenset[str] | AnyValue:
        if value == _ANY:
            return ANY
        items = self._str_list(value, path, 'a list of TCB status names or "any"')
        for item in items:
            if item not in KNOWN_TCB_STATUSES:
                self._fail(
                    path,
                    f"unknown TCB status {item!r}",
                    f"expected some of {', '.join(sorted(KNOWN_TCB_STATUSES))}",
                )
        return frozenset(items)

    def _advisories(
        self, value: Any, path: tuple[str, ...], *, allow_any: bool
    ) -> frozenset[str] | AnyValue:
        if allow_any and value == _ANY:
            return ANY
        items = self._str_list(
            value,
            path,
            'a list of advisory IDs such as "INTEL-SA-00615"' + (' or "any"' if allow_any else ""),
            allow_empty=True,
        )
        return frozenset(i.strip().upper() for i in items)

    def _hex_list(
        self, value: Any, path: tuple[str, ...], lengths: frozenset[int] | None
    ) -> frozenset[str] | AnyValue:
        if value == _ANY:
            return ANY
        items = self._str_list(value, path, 'a list of hex strings or "any"')
        out: set[str] = set()
        for item in items:
            h = item.strip().lower().removeprefix("0x")
            if not _HEX.fullmatch(h) or len(h) % 2:
                self._fail(
                    path,
                    f"{item!r} is not hex",
                    "write the value as hex digits, e.g. from the --json claims",
                )
            if lengths is not None and len(h) // 2 not in lengths:
                self._fail(
                    path,
                    f"{item[:20]}… is {len(h) // 2} bytes",
                    f"a measurement here is {' or '.join(map(str, sorted(lengths)))} bytes",
                )
            out.add(h)
        return frozenset(out)

    def _min_tcb(self, value: Any, path: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
        if not isinstance(value, dict) or not value:
            self._fail(
                path,
                "must be a non-empty table",
                "e.g. min_tcb = { bl = 3, snp = 20, ucode = 209 }",
            )
        out = []
        for comp, v in value.items():
            if comp not in SNP_TCB_COMPONENTS:
                self._fail(
                    (*path, comp),
                    "unknown TCB component",
                    f"expected one of {', '.join(SNP_TCB_COMPONENTS)}",
                )
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
                self._fail((*path, comp), "must be an integer 0..255")
            out.append((comp, v))
        return tuple(sorted(out, key=lambda cv: SNP_TCB_COMPONENTS.index(cv[0])))

    def _claims(
        self, value: Any, path: tuple[str, ...]
    ) -> tuple[tuple[str, tuple[Scalar, ...]], ...]:
        if not isinstance(value, dict) or not value:
            self._fail(path, "must be a non-empty table of claim = [accepted values]")
        out: list[tuple[str, tuple[Scalar, ...]]] = []
        for name, v in value.items():
            self._claim_name(name, (*path, name))
            values = v if isinstance(v, list) else [v]
            if not values or len(values) > MAX_LIST_ENTRIES:
                self._fail((*path, name), f"must list 1 to {MAX_LIST_ENTRIES} accepted values")
            if isinstance(v, dict):
                self._fail(
                    (*path, name),
                    "is a table, not accepted values",
                    f'quote a dotted claim name: "{name}.<key>" = [...]',
                )
            for item in values:
                if not isinstance(item, str | int | bool):
                    self._fail(
                        (*path, name),
                        f"values must be strings, integers or booleans, not {_toml_type(item)}",
                    )
            normalized = tuple(sorted({_norm_scalar(i) for i in values}, key=_scalar_sort_key))
            out.append((name, normalized))
        return tuple(sorted(out))

    def _min_claims(self, value: Any, path: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
        if not isinstance(value, dict) or not value:
            self._fail(path, "must be a non-empty table of claim = minimum")
        out = []
        for name, v in value.items():
            self._claim_name(name, (*path, name))
            if isinstance(v, bool) or not isinstance(v, int):
                self._fail((*path, name), f"must be an integer, not {_toml_type(v)}")
            out.append((name, v))
        return tuple(sorted(out))

    def _claim_name(self, name: str, path: tuple[str, ...]) -> None:
        if not _CLAIM_PATH.fullmatch(name):
            self._fail(
                path,
                "not a claim name",
                'use a claim from --json output, or a dotted path such as "pcrs.8"',
            )

    def _str_list(
        self, value: Any, path: tuple[str, ...], expected: str, *, allow_empty: bool = False
    ) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
            self._fail(path, f"must be {expected}, not {_toml_type(value)}")
        if not value and not allow_empty:
            self._fail(
                path,
                "is empty and would reject all evidence",
                f"list the accepted values ({expected})",
            )
        if len(value) > MAX_LIST_ENTRIES:
            self._fail(path, f"has {len(value)} entries; at most {MAX_LIST_ENTRIES} are allowed")
        return list(value)

    @staticmethod
    def _hint(key: str, allowed: Iterable[str]) -> str:
        return f"expected one of {', '.join(sorted(allowed))}"

    def _fail(self, path: tuple[str, ...], problem: str, hint: str = "") -> NoReturn:
        line = _line_of(self._text, path)
        where = f"{self._source}:{line}" if line is not None else self._source
        message = f"{where}: {'.'.join(path)}: {problem}"
        raise ConfigError(f"{message}; {hint}" if hint else message)


_HEADER = re.compile(r"^\s*\[\s*([^\[\]#]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(
    r'^\s*((?:"[^"]*"|[A-Za-z0-9_\- ]+)(?:\s*\.\s*(?:"[^"]*"|[A-Za-z0-9_\- ]+))*)\s*='
)
_KEY_PART = re.compile(r'"[^"]*"|[^."\s][^."]*')


def _line_of(text: str, path: tuple[str, ...]) -> int | None:
    """The 1-based line where *path* (a key, a table or a key inside an inline table) is set."""
    table: tuple[str, ...] = ()
    for lineno, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            if table == path:
                return lineno
            continue
        key = _KEY.match(line)
        if not key:
            continue
        full = table + _split_key(key.group(1))
        if full == path:
            return lineno
        if len(path) > len(full) and path[: len(full)] == full:
            # A key inside an inline table: it is on this line (or the next few, rarely).
            return lineno
    return None


def _split_key(dotted: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ``("a", "b.c", "d")``: TOML dotted keys, quotes respected."""
    return tuple(_unquote(m.group(0)) for m in _KEY_PART.finditer(dotted))


def _unquote(part: str) -> str:
    part = part.strip()
    return part[1:-1] if len(part) >= 2 and part[0] == part[-1] == '"' else part


def _toml_type(value: Any) -> str:
    names: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
    ]
    for t, n in names:
        if isinstance(value, t):
            return n
    return type(value).__name__


def _norm_scalar(value: Scalar) -> Scalar:
    if isinstance(value, str) and _HEX.fullmatch(value) and len(value) % 2 == 0:
        return value.lower()
    return value


def _scalar_sort_key(value: Scalar) -> tuple[int, str]:
    order = 0 if isinstance(value, bool) else 1 if isinstance(value, int) else 2
    return (order, repr(value))


def _rules_to_dict(rules: Rules) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conv: dict[str, Callable[[Any], Any]] = {
        "reject_debug": bool,
        "require_sept_ve_disable": bool,
        "tcb_statuses": lambda v: sorted(v),
        "advisories": lambda v: sorted(v),
        "reject_advisories": lambda v: sorted(v),
        "measurements": lambda v: sorted(v),
        "signers": lambda v: sorted(v),
        "min_tcb": lambda v: dict(v),
        "claims": lambda v: {k: list(vals) for k, vals in v},
        "min_claims": lambda v: dict(v),
    }
    for f in fields(Rules):
        value = getattr(rules, f.name)
        if value is None:
            continue
        out[f.name] = _ANY if value is ANY else conv[f.name](value)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes; TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"cannot write {type(value).__name__} as TOML")  # pragma: no cover


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


__all__ = [
    "ANY",
    "BUILTIN_POLICIES",
    "KNOWN_TCB_STATUSES",
    "MAX_LIST_ENTRIES",
    "MAX_POLICY_FILE_BYTES",
    "POLICY_FORMAT_VERSION",
    "PRODUCTION_TCB_STATUSES",
    "SNP_TCB_COMPONENTS",
    "AnyValue",
    "Check",
    "Policy",
    "Rules",
    "Verdict",
    "enforce",
    "evaluate",
]
