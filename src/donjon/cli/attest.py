"""``donjon attest``: verify attestation evidence against a policy, offline.

The contract (``docs/commands/attest.md``) is stable, because others script against it::

    donjon attest verify --platform {sev-snp,tdx,sgx,cca,nitro,nil} --evidence FILE
                         [--cert FILE]... [--collateral FILE]... [--at ISO-8601] [--nonce HEX]
                         [--report-data HEX] [--policy production|permissive|FILE]
                         [--json | --ear [--ear-key FILE]]
                         [--fetch [--kds-url URL] [--pcs-url URL] [--cache-dir DIR]
                          [--kds-product Milan|Genoa|Turin] [--kds-crl]]

Exit codes are this command's own, not the ``exit_code`` of donjon's error classes:
0 accepted; 1 rejected (the evidence did not verify, or the policy rejects it); 2 unusable input
or usage (unreadable or malformed files, bad hex, bad ``--at``, an invalid policy file, a
missing endorsement that ``--fetch`` could not fetch).
This is the one place in the attestation path that reads the clock (``--at`` default). With
``--fetch`` it is also the only network use: missing endorsements come from AMD KDS / Intel PCS
through ``donjon.endorse`` before the (unchanged, offline) verifier runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from donjon.attestation.dispatch import UnsupportedPlatformError, parse_platform, verify_evidence
from donjon.attestation.ear import appraisal, ear_claims, failed_appraisal
from donjon.attestation.inputs import InputError, load_endorsements, load_evidence, read_bounded
from donjon.attestation.policy import Policy, evaluate
from donjon.attestation.result import Platform, VerifiedEvidence
from donjon.attestation.verdict import Verdict, failure_to_json
from donjon.cli._evidenceopts import (
    EXIT_ACCEPTED,
    EXIT_REJECTED,
    FetchConfigFactory,
    complete_endorsements,
    evidence_options,
    fetch_options,
    parse_at,
    parse_hex,
    unusable,
)
from donjon.errors import ConfigError, TransportError, VerificationError

MAX_KEY_FILE_BYTES = 64 * 1024
"""Largest ``--ear-key`` file read (bytes); a P-384 key PEM is ~300 bytes."""


@click.group("attest")
def attest() -> None:
    """Verify attestation evidence (SEV-SNP, TDX, SGX, Arm CCA, AWS Nitro, nil)."""


@attest.command("verify")
@evidence_options(at_help="Verify as of this time (default: now).")
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
@click.option(
    "--ear",
    "as_ear",
    is_flag=True,
    help="Print the appraisal as an EAT Attestation Result (IETF RATS EAR, AR4SI vectors).",
)
@click.option(
    "--ear-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --ear: sign it with this EC private key (PEM) and print a JWT instead.",
)
@fetch_options(
    flag="--fetch",
    flag_help="Fetch missing endorsements (VCEK, Intel collateral) from AMD KDS / Intel PCS, "
    "cached; the verification itself stays offline.",
)
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
    as_ear: bool,
    ear_key: Path | None,
    endorsement_fetch: FetchConfigFactory,
) -> None:
    """Verify evidence offline and apply a policy.

    With --fetch, endorsements missing from --cert/--collateral are fetched first.
    Exit status: 0 accepted, 1 rejected, 2 unusable input or usage.
    """
    verbose = bool((ctx.obj or {}).get("verbose", 0))
    try:
        platform = parse_platform(platform_name)
        now = parse_at(at)
        nonce_bytes = parse_hex(nonce, "--nonce")
        expected = parse_hex(report_data, "--report-data")
        policy = Policy.named(policy_name)
        decoded = load_evidence(evidence)
        endorsements = load_endorsements(certs, collateral)
        fetching = endorsement_fetch()
        if as_ear and as_json:
            raise InputError("--ear and --json are two output formats; choose one")
        if ear_key is not None and not as_ear:
            raise InputError("--ear-key signs the --ear output; add --ear")
        ear_signing_key = (
            read_bounded(ear_key, max_bytes=MAX_KEY_FILE_BYTES, what="--ear-key file")
            if ear_key is not None
            else None
        )
    except (InputError, ConfigError, UnsupportedPlatformError) as e:
        unusable(e)

    try:
        if fetching is not None:
            endorsements = complete_endorsements(
                fetching, platform, decoded.data, endorsements, now=now, verbose=verbose
            )
        verified = verify_evidence(platform, decoded.data, endorsements=endorsements, now=now)
    except VerificationError as e:
        if as_ear:
            failed = failed_appraisal(f"{type(e).__name__}: {e.diagnostics()}")
            _print_ear(str(platform), failed, now, nonce_bytes, ear_signing_key)
        else:
            _print_failure(platform, e, policy, now, as_json=as_json)
        raise click.exceptions.Exit(EXIT_REJECTED) from e
    except (UnsupportedPlatformError, ConfigError, TransportError) as e:
        # TransportError: a missing endorsement could not be fetched; nothing was verified.
        unusable(e)

    verdict = evaluate(policy, verified, nonce=nonce_bytes, expected_report_data=expected)
    if as_ear:
        _print_ear(str(platform), appraisal(verdict), now, nonce_bytes, ear_signing_key)
    elif as_json:
        _echo_json({**verdict.to_json(), "verified_at": _iso(now)})
    else:
        _print_human(verdict, now, verbose=verbose)
    if verdict.accepted and (verified.platform is Platform.NIL or verified.claims.get("insecure")):
        click.echo(
            "donjon: warning: this evidence comes from no TEE; nothing protects the workload",
            err=True,
        )
    raise click.exceptions.Exit(EXIT_ACCEPTED if verdict.accepted else EXIT_REJECTED)


def _print_ear(
    submod: str,
    appraised: dict[str, Any],
    now: datetime,
    nonce: bytes | None,
    signing_key: bytes | None,
) -> None:
    """The EAR on stdout: its JSON claims-set, or a JWT signed with *signing_key*."""
    from donjon import __version__

    claims = ear_claims(
        {submod: appraised},
        iat=int(now.timestamp()),
        verifier_build=f"donjon {__version__}",
        nonce=nonce,
    )
    if signing_key is None:
        _echo_json(claims)
        return
    from donjon.crypto.jws import sign_jwt

    try:
        click.echo(sign_jwt(claims, signing_key))
    except ConfigError as e:
        unusable(e)


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
