"""``donjon attest``: verify attestation evidence against a policy, offline.

The contract (``docs/commands/attest.md``) is stable, because others script against it::

    donjon attest verify --platform {sev-snp,tdx,sgx,cca,nitro,nil} --evidence FILE
                         [--cert FILE]... [--collateral FILE]... [--at ISO-8601] [--nonce HEX]
                         [--report-data HEX] [--policy production|permissive|FILE] [--json]

Exit codes are this command's own, not the ``exit_code`` of donjon's error classes:
0 accepted; 1 rejected (the evidence did not verify, or the policy rejects it); 2 unusable input
or usage (unreadable or malformed files, bad hex, bad ``--at``, an invalid policy file).
This is the one place in the attestation path that reads the clock (``--at`` default).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from donjon.attestation.dispatch import UnsupportedPlatformError, parse_platform, verify_evidence
from donjon.attestation.inputs import InputError, load_endorsements, load_evidence
from donjon.attestation.policy import Policy, evaluate
from donjon.attestation.result import Platform, VerifiedEvidence
from donjon.attestation.verdict import Verdict, failure_to_json
from donjon.crypto.binding import MAX_NONCE_BYTES
from donjon.errors import ConfigError, Error, VerificationError

EXIT_ACCEPTED = 0
EXIT_REJECTED = 1
EXIT_UNUSABLE = 2

_PLATFORMS = [str(p) for p in Platform]


@click.group("attest")
def attest() -> None:
    """Verify attestation evidence (SEV-SNP, TDX, SGX, Arm CCA, AWS Nitro, nil)."""


@attest.command("verify")
@click.option(
    "--platform",
    "platform_name",
    required=True,
    type=click.Choice(_PLATFORMS),
    help="The evidence format.",
)
@click.option(
    "--evidence",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Evidence file: raw bytes, hex text or base64 text (detected).",
)
@click.option(
    "--cert",
    "certs",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Certificate(s) as DER or PEM (several per file), or a key as PEM or JWK JSON "
    "(Arm CPAK). Repeatable.",
)
@click.option(
    "--collateral",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Collateral: Intel TCB info / QE identity JSON, dcap-qvl collateral JSON, CRLs "
    "(DER or PEM). Repeatable.",
)
@click.option("--at", "at", metavar="ISO-8601", help="Verify as of this time (default: now).")
@click.option(
    "--nonce",
    metavar="HEX",
    help="The report data must begin with these bytes (freshness).",
)
@click.option(
    "--report-data",
    "report_data",
    metavar="HEX",
    help="The report data must equal these bytes exactly (e.g. a key and nonce binding).",
)
@click.option(
    "--policy",
    "policy_name",
    default="production",
    show_default=True,
    metavar="production|permissive|FILE",
    help="Built-in policy name or a policy TOML file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (stable schema).")
@click.pass_context
def verify(
    ctx: click.Context,
    platform_name: str,
    evidence: Path,
    certs: tuple[Path, ...],
    collateral: tuple[Path, ...],
    at: str | None,
    nonce: str | None,
    report_data: str | None,
    policy_name: str,
    as_json: bool,
) -> None:
    """Verify evidence offline and apply a policy.

    Exit status: 0 accepted, 1 rejected, 2 unusable input or usage.
    """
    verbose = bool((ctx.obj or {}).get("verbose", 0))
    try:
        platform = parse_platform(platform_name)
        now = _parse_at(at) if at is not None else datetime.now(UTC)
        nonce_bytes = _parse_hex(nonce, "--nonce") if nonce is not None else None
        expected = _parse_hex(report_data, "--report-data") if report_data is not None else None
        policy = Policy.named(policy_name)
        decoded = load_evidence(evidence)
        endorsements = load_endorsements(certs, collateral)
    except (InputError, ConfigError, UnsupportedPlatformError) as e:
        _unusable(e)

    try:
        verified = verify_evidence(platform, decoded.data, endorsements=endorsements, now=now)
    except VerificationError as e:
        _print_failure(platform, e, policy, now, as_json=as_json)
        raise click.exceptions.Exit(EXIT_REJECTED) from e
    except (UnsupportedPlatformError, ConfigError) as e:
        _unusable(e)

    verdict = evaluate(policy, verified, nonce=nonce_bytes, expected_report_data=expected)
    if as_json:
        _echo_json({**verdict.to_json(), "verified_at": _iso(now)})
    else:
        _print_human(verdict, now, verbose=verbose)
    if verdict.accepted and (verified.platform is Platform.NIL or verified.claims.get("insecure")):
        click.echo(
            "donjon: warning: this evidence comes from no TEE; nothing protects the workload",
            err=True,
        )
    raise click.exceptions.Exit(EXIT_ACCEPTED if verdict.accepted else EXIT_REJECTED)


def _parse_at(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError(
            f"--at {value!r} is not an ISO-8601 time; write e.g. 2025-09-01T00:00:00Z"
        ) from None
    # A time without a zone is taken as UTC, the zone every verify_time in donjon uses.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _parse_hex(value: str, option: str) -> bytes:
    text = value.strip().removeprefix("0x").removeprefix("0X")
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise InputError(f"{option} {value!r} is not hex (an even number of 0-9a-f)") from None
    if not data:
        raise InputError(f"{option} is empty; give at least one byte as hex")
    if len(data) > MAX_NONCE_BYTES:
        raise InputError(f"{option} is {len(data)} bytes; at most {MAX_NONCE_BYTES} are accepted")
    return data


def _unusable(error: Error) -> NoReturn:
    click.echo(f"donjon: error: {error.diagnostics()}", err=True)
    raise click.exceptions.Exit(EXIT_UNUSABLE)


def _print_failure(
    platform: Platform, error: VerificationError, policy: Policy, now: datetime, *, as_json: bool
) -> None:
    if as_json:
        out = failure_to_json(platform, error, policy=policy.name, policy_digest=policy.digest())
        _echo_json({**out, "verified_at": _iso(now)})
        return
    click.echo(f"rejected: {platform} evidence did not verify ({type(error).__name__})")
    click.echo(f"  {'reason':<13} {error.diagnostics()}")
    click.echo(f"  {'verified at':<13} {_iso(now)}")


def _print_human(verdict: Verdict, now: datetime, *, verbose: bool) -> None:
    ev: VerifiedEvidence = verdict.evidence
    if verdict.accepted:
        click.echo(f"accepted by policy '{verdict.policy}' ({ev.platform})")
    else:
        click.echo(verdict.reason or f"rejected by policy '{verdict.policy}'")
    rows = [
        ("measurement", ev.measurement.hex()),
        ("report data", ev.report_data.hex()),
        ("TCB status", ev.tcb_status or "n/a"),
        ("advisories", ", ".join(ev.advisory_ids) or "none"),
        ("debug", "yes" if ev.debug else "no"),
        ("policy", f"{verdict.policy} {verdict.policy_digest}"),
        ("verified at", _iso(now)),
    ]
    for label, value in rows:
        click.echo(f"  {label:<13} {value}")
    if verbose:
        for check in verdict.checks:
            click.echo(f"  {'✔' if check.passed else '✗'} {check.name}: {check.detail}")


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _echo_json(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(value: object) -> Any:
    # Claims should already be JSON values; render stray bytes as hex rather than fail.
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    return str(value)
