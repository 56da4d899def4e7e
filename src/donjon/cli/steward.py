"""``donjon steward``: run the attestation service, create its CA, dry-run its policy.

The contract (``docs/commands/steward.md``)::

    donjon steward serve --listen HOST:PORT --state-dir DIR [--policy NAME|FILE]
                         [--cert-lifetime DURATION] [--tls-cert FILE --tls-key FILE] [--workers N]
                         [--audit-log FILE] [--tenants DIR]
                         [--fetch-endorsements [--kds-url URL] [--pcs-url URL]
                          [--cache-dir DIR] [--kds-product P] [--kds-crl]]
    donjon steward init --state-dir DIR [--force]
    donjon steward audit verify LOG --ca FILE [--json]
    donjon steward policy check POLICY --platform P --evidence FILE [--cert FILE]...
                         [--collateral FILE]... [--at ISO-8601] [--nonce HEX]
                         [--client-nonce HEX] [--csr FILE] [--json]
                         [--fetch [--kds-url URL] [--pcs-url URL] [--cache-dir DIR] ...]
    donjon steward secret set NAME --state-dir DIR [--from-file FILE]   (else: value on stdin)
    donjon steward secret list --state-dir DIR [--json]
    donjon steward secret generate NAME --state-dir DIR [--bytes N] [--force]
    donjon steward secret rm NAME --state-dir DIR

``serve`` prints ``listening on <url>`` on stdout once its socket listens (``:0`` picks a free
port), and stops gracefully on SIGTERM or SIGINT. ``policy check`` exits 0 when Steward would
issue, 1 when it would refuse, 2 on unusable input. The CLI always uses the real clock.
``secret`` never takes a value on the command line and never prints one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from donjon.attestation.dispatch import (
    UnsupportedPlatformError,
    parse_platform,
    verifier_for,
    verify_with,
)
from donjon.attestation.inputs import InputError, load_endorsements, load_evidence, read_bounded
from donjon.attestation.nil import NilVerifier
from donjon.attestation.policy import evaluate
from donjon.attestation.result import Platform
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
from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import MAX_CSR_BYTES, CertificateRequest, parse_csr
from donjon.errors import (
    ConfigError,
    DecodeError,
    Error,
    SignatureError,
    TransportError,
    UsageError,
    VerificationError,
)
from donjon.steward.app import Listening, serve
from donjon.steward.config import (
    DEFAULT_CERT_LIFETIME,
    WORKLOAD_URI,
    StewardPolicy,
    StewardSettings,
    format_duration,
    parse_duration,
    parse_listen,
)
from donjon.steward.core import publisher_identity, workload_identity
from donjon.steward.secrets import (
    MAX_SECRET_BYTES,
    SecretStore,
    SecretValueError,
    check_secret_name,
)
from donjon.steward.state import init_state
from donjon.steward.tenants import find_tenants

MAX_DEFAULT_WORKERS = 8
"""The most workers ``serve`` starts by itself: more CPUs than this want a deliberate choice."""


def default_workers() -> int:
    """One worker per CPU this process may run on (at most :data:`MAX_DEFAULT_WORKERS`): one
    worker cannot meet Steward's latency goal on two cores (docs/performance.md)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


@click.group("steward")
def steward() -> None:
    """Run and manage Steward, the attestation service that issues Keep certificates."""


@steward.command("serve")
@click.option(
    "--listen",
    default="127.0.0.1:8443",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on; port 0 picks a free port (printed as 'listening on URL').",
)
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Holds the CA key (0600) and certificate; created on first start.",
)
@click.option(
    "--policy",
    "policy_name",
    default="production",
    show_default=True,
    metavar="production|permissive|dev|FILE",
    help="Steward policy: a built-in name or a TOML file.",
)
@click.option(
    "--cert-lifetime",
    default=format_duration(DEFAULT_CERT_LIFETIME),
    show_default=True,
    metavar="DURATION",
    help="Lifetime of issued certificates (30m, 24h, 7d).",
)
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), help="Serve HTTPS.")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="Its key.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help=f"Worker processes. Default: one per CPU, at most {MAX_DEFAULT_WORKERS} "
    f"({default_workers()} here).",
)
@click.option(
    "--tenants",
    "tenants_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also serve a tenant per subdirectory of this directory, under /t/<name>: each its own "
    "state dir (CA, secrets) with its own policy.toml.",
)
@click.option(
    "--audit-log",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Append every decision (certificate issued or refused, secrets released or withheld) "
    "to this file: hash-chained, with checkpoints signed by the CA key.",
)
@fetch_options(
    flag="--fetch-endorsements",
    flag_help="Fetch the endorsements a Keep did not send (VCEK, Intel collateral) from AMD KDS "
    "/ Intel PCS, cached, before verifying.",
)
def serve_command(
    listen: str,
    state_dir: Path,
    policy_name: str,
    cert_lifetime: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    workers: int | None,
    tenants_dir: Path | None,
    audit_log: Path | None,
    endorsement_fetch: FetchConfigFactory,
) -> None:
    """Serve the Steward API until SIGTERM or SIGINT. SIGHUP reads the policy again."""
    host, port = parse_listen(listen)
    policy = StewardPolicy.named(policy_name)
    fetching = endorsement_fetch()
    settings = StewardSettings(
        state_dir=state_dir,
        policy=policy,
        host=host,
        port=port,
        cert_lifetime=parse_duration(cert_lifetime),
        tls_cert=tls_cert,
        tls_key=tls_key,
        workers=workers if workers is not None else default_workers(),
        endorsements=fetching,
        audit_log=audit_log,
        policy_source=policy_name,
        tenants_dir=tenants_dir,
    )
    tenants = find_tenants(tenants_dir) if tenants_dir is not None else []
    if policy.allow_insecure:
        click.echo(
            f"donjon: warning: policy '{policy.name}' accepts insecure evidence (nil: no TEE); "
            "use it for development only",
            err=True,
        )

    def announce(where: Listening) -> None:
        click.echo(f"policy {policy.name} sha256:{policy.digest.hex()}")
        if fetching is not None:
            click.echo(
                f"fetching missing endorsements from {fetching.kds_url} and {fetching.pcs_url} "
                f"(cache {fetching.cache_dir})"
            )
        if audit_log is not None:
            click.echo(f"audit log {audit_log}")
        for tenant in tenants:
            click.echo(f"tenant {tenant.name} at {where.url}/t/{tenant.name} ({tenant.state_dir})")
        click.echo(f"listening on {where.url}")

    serve(settings, announce=announce)
    click.echo("stopped")


@steward.command("init")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to create the CA key and certificate.",
)
@click.option("--force", is_flag=True, help="Replace an existing CA (old files kept as .bak).")
def init_command(state_dir: Path, force: bool) -> None:
    """Create Steward's CA (P-384 key, mode 0600, and self-signed certificate)."""
    state = init_state(state_dir, now=datetime.now(UTC), force=force)
    fingerprint = hashlib.sha256(state.ca.certificate_der).hexdigest()
    click.echo(f"{'created' if state.created else 'existing'} CA in {state_dir}")
    click.echo(f"  certificate  {state.cert_path}")
    click.echo(f"  key          {state.key_path} (mode 0600)")
    click.echo(f"  subject      {state.ca.certificate.subject.rfc4514_string()}")
    click.echo(f"  sha256       {fingerprint}")
    click.echo(f"  valid until  {state.ca.certificate.not_valid_after_utc.isoformat()}")


@steward.group("policy")
def policy_group() -> None:
    """Work with Steward policy files."""


@policy_group.command("check")
@click.argument("policy_name", metavar="POLICY")
@evidence_options(at_help="Decide as of this time (default: now).")
@click.option(
    "--nonce",
    metavar="HEX",
    help="With --csr: the report data must bind the CSR key and this nonce (donjon binding); "
    "without: it must begin with these bytes.",
)
@click.option(
    "--client-nonce",
    metavar="HEX",
    help="With --csr and --nonce: a relying party's nonce bound after the Steward nonce.",
)
@click.option(
    "--csr",
    type=click.Path(path_type=Path, dir_okay=False),
    help="DER CSR of the Keep: checks its signature, the binding, workload URI and DNS names.",
)
@click.option(
    "--secret",
    "secret_names",
    multiple=True,
    metavar="NAME",
    help="With --csr: would secret NAME be released to the CSR's workload? Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@fetch_options(
    flag="--fetch",
    flag_help="Fetch missing endorsements (VCEK, Intel collateral) from AMD KDS / Intel PCS, "
    "cached, as a Steward with --fetch-endorsements would.",
)
def policy_check(
    policy_name: str,
    platform_name: str,
    evidence: Path,
    certs: tuple[Path, ...],
    collateral: tuple[Path, ...],
    at: str | None,
    nonce: str | None,
    client_nonce: str | None,
    csr: Path | None,
    secret_names: tuple[str, ...],
    as_json: bool,
    endorsement_fetch: FetchConfigFactory,
) -> None:
    """Dry-run POLICY on recorded evidence and explain each step of the decision.

    POLICY is production, permissive, dev or a Steward policy file. Exit status: 0 Steward
    would issue a certificate, 1 it would refuse, 2 unusable input.
    """
    try:
        policy = StewardPolicy.named(policy_name)
        platform = parse_platform(platform_name)
        now = parse_at(at)
        nonce_bytes = parse_hex(nonce, "--nonce")
        client_bytes = parse_hex(client_nonce, "--client-nonce")
        if client_bytes is not None and (nonce_bytes is None or csr is None):
            raise InputError("--client-nonce needs --csr and --nonce")
        if secret_names and csr is None:
            raise InputError("--secret needs --csr: a secret goes to the workload a CSR names")
        decoded = load_evidence(evidence)
        endorsements = load_endorsements(certs, collateral)
        csr_data = _read_csr(csr) if csr is not None else None
        fetching = endorsement_fetch()
    except (InputError, ConfigError, UnsupportedPlatformError) as e:
        unusable(e)

    steps: list[dict[str, Any]] = [
        _step("policy", True, f"'{policy.name}' sha256:{policy.digest.hex()}"),
    ]
    request: CertificateRequest | None = None
    if csr_data is not None:
        try:
            request = parse_csr(csr_data)
        except DecodeError as e:
            unusable(e)
        except SignatureError as e:
            steps.append(_step("csr", False, e.diagnostics()))
            _finish(policy.name, steps, as_json=as_json)
        steps.append(_step("csr", True, f"signature verifies; {request.curve} key"))
    try:
        if fetching is not None:
            endorsements = complete_endorsements(
                fetching, platform, decoded.data, endorsements, now=now
            )
        if platform is Platform.NIL and policy.dev_keys:
            verifier = NilVerifier(trusted_keys=sorted(policy.dev_keys))
            verified = verify_with(verifier, decoded.data, endorsements=endorsements, now=now)
        else:
            verified = verify_with(
                verifier_for(platform), decoded.data, endorsements=endorsements, now=now
            )
    except VerificationError as e:
        detail = (
            f"{platform} evidence does not verify at {now.isoformat()}: "
            f"{type(e).__name__}: {e.diagnostics()}"
        )
        steps.append(_step("evidence", False, detail))
        _finish(policy.name, steps, as_json=as_json)
    except (UnsupportedPlatformError, ConfigError, TransportError) as e:
        # TransportError: a missing endorsement could not be fetched; nothing was decided.
        unusable(e)
    steps.append(_step("evidence", True, f"{platform} evidence is authentic at {now.isoformat()}"))

    expected = None
    prefix = nonce_bytes
    if request is not None and nonce_bytes is not None:
        bound = nonce_bytes + (client_bytes or b"")
        expected, prefix = report_data_for(request.spki_der, bound), None
    verdict = evaluate(policy.attestation, verified, nonce=prefix, expected_report_data=expected)
    for check in verdict.checks:
        steps.append(_step(check.name, check.passed, check.detail))

    if request is not None:
        try:
            workload = workload_identity(request, verified)
        except Error as e:
            steps.append(_step("workload", False, e.diagnostics()))
            _finish(policy.name, steps, as_json=as_json)
    else:
        workload = f"donjon:measurement:{verified.platform}:{verified.measurement.hex()}"
    if not policy.workloads:
        steps.append(_step("workload", True, f"{workload} (policy accepts any workload)"))
    elif workload in policy.workloads:
        steps.append(_step("workload", True, f"{workload} accepted"))
    else:
        steps.append(
            _step(
                "workload",
                False,
                f"rejected: workload identity {workload} not among the {len(policy.workloads)} "
                f"accepted by policy '{policy.name}'",
            )
        )
    if request is not None:
        for name in request.dns_names:
            ok = policy.allows_dns_name(name)
            detail = (
                f"DNS name {name} allowed"
                if ok
                else f"rejected: DNS name {name} not allowed by policy '{policy.name}'"
            )
            steps.append(_step("dns_name", ok, detail))
    publisher = publisher_identity(request) if request is not None else None
    for name in secret_names:
        steps.append(_secret_step(policy, name, workload, publisher))
    _finish(policy.name, steps, as_json=as_json, claims=verified.to_json())


def _secret_step(
    policy: StewardPolicy, name: str, workload: str, publisher: str | None
) -> dict[str, Any]:
    """Whether a release rule gives secret *name* to *workload* or its *publisher* (the value
    must also be stored: ``donjon steward secret list`` shows that)."""
    if not WORKLOAD_URI.fullmatch(workload):
        return _step(
            f"secret {name}",
            False,
            "a secret goes only to a Keep whose CSR names its workload "
            "(donjon:workload:sha256:...); this one names none",
        )
    readers = policy.secret_readers(name)
    if workload in readers:
        return _step(f"secret {name}", True, f"released to {workload} by [steward.secrets]")
    if publisher is not None and publisher in readers:
        return _step(
            f"secret {name}", True, f"released to {publisher}'s workloads by [steward.secrets]"
        )
    return _step(
        f"secret {name}",
        False,
        f"not released to {workload}: add it to [steward.secrets] {name} = [...]",
    )


def _step(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": passed, "detail": detail}


def _finish(
    policy: str,
    steps: list[dict[str, Any]],
    *,
    as_json: bool,
    claims: dict[str, Any] | None = None,
) -> NoReturn:
    accepted = all(s["passed"] for s in steps)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "decision": "issue" if accepted else "refuse",
                    "policy": policy,
                    "steps": steps,
                    "claims": claims or {},
                },
                indent=2,
                default=str,
            )
        )
    else:
        for s in steps:
            click.echo(f"  {'✔' if s['passed'] else '✗'} {s['name']}: {s['detail']}")
        first = next((s for s in steps if not s["passed"]), None)
        if accepted:
            click.echo(f"issue: policy '{policy}' accepts this evidence")
        else:
            detail = first["detail"] if first else ""
            click.echo(f"refuse: {detail}")
    raise click.exceptions.Exit(EXIT_ACCEPTED if accepted else EXIT_REJECTED)


def _read_csr(path: Path) -> bytes:
    data = read_bounded(path, max_bytes=MAX_CSR_BYTES, what="CSR file")
    if data.lstrip().startswith(b"-----BEGIN"):
        raise InputError(f"CSR file {path} is PEM; give the DER form (openssl req -outform DER)")
    return data


@steward.group("audit")
def audit_group() -> None:
    """Check Steward's audit log."""


@audit_group.command("verify")
@click.argument("log", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--ca",
    "ca_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The Steward CA certificate (its state dir's ca.crt) whose key signs the checkpoints.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def audit_verify(log: Path, ca_file: Path, as_json: bool) -> None:
    """Check LOG's hash chain and its checkpoints' signatures.

    Exit status: 0 the log is intact (lines after the last checkpoint are chained but not yet
    signed, and counted apart); 1 it was changed; 2 unusable input.
    """
    from donjon.crypto.ca import load_certificate
    from donjon.steward.audit import verify_log

    try:
        data = log.read_bytes()
        ca = load_certificate(ca_file.read_bytes(), what=f"CA certificate {ca_file}")
    except OSError as e:
        unusable(UsageError(f"cannot read {e.filename}: {e.strerror}"))
    except DecodeError as e:
        unusable(e)
    report = verify_log(data, ca)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "intact": report.intact,
                    "records": report.records,
                    "checkpoints": report.checkpoints,
                    "unsigned_tail": report.unsigned_tail,
                    "events": report.events,
                    "problems": list(report.problems),
                },
                indent=2,
            )
        )
    else:
        events = ", ".join(f"{n} {event}" for event, n in sorted(report.events.items()))
        click.echo(
            f"{report.records} records ({events or 'none'}), {report.checkpoints} signed "
            f"checkpoints, {report.unsigned_tail} records after the last checkpoint"
        )
        for problem in report.problems:
            click.echo(f"  ✗ {problem}")
        click.echo("intact" if report.intact else "CHANGED: the log does not verify")
    raise click.exceptions.Exit(0 if report.intact else 1)


_SECRETS_STATE_DIR = click.option(
    "--state-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Steward's state directory; the secret goes to its secrets/ (created, mode 0700).",
)
_EXISTING_STATE_DIR = click.option(
    "--state-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Steward's state directory.",
)


@steward.group("secret")
def secret_group() -> None:
    """Manage the secrets Steward releases to attested Keeps.

    Each secret is one file of STATE-DIR/secrets (mode 0700), named after the secret, mode
    0600. Which Keeps may receive a secret is decided by the release rules of the Steward
    policy, not here.
    """


@secret_group.command("set")
@click.argument("name")
@_SECRETS_STATE_DIR
@click.option(
    "--from-file",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=False),
    help="Read the value from this file (a FIFO such as <(pass show db) works). "
    "Default: read it from stdin.",
)
def secret_set(name: str, state_dir: Path, from_file: Path | None) -> None:
    """Store the value of secret NAME, replacing any previous one.

    The value is raw bytes (a trailing newline is part of it), 1 to 65536 bytes, read from
    --from-file or from stdin: `donjon steward secret set db-password --state-dir DIR < file`.
    There is deliberately no option to give the value on the command line: arguments land in
    shell history and are visible to every user in `ps`.
    """
    check_secret_name(name)  # before reading: a typo must not consume the value
    if from_file is not None:
        value, source = _read_value_file(from_file), str(from_file)
    else:
        value, source = _read_value_stdin(name, state_dir), "stdin"
    if not value:
        raise SecretValueError(
            f"the value read from {source} is empty; a secret needs 1 or more bytes"
        )
    if len(value) > MAX_SECRET_BYTES:
        raise SecretValueError(
            f"the value read from {source} is larger than the {MAX_SECRET_BYTES}-byte limit of "
            "a secret; store a key to the data, not the data"
        )
    store = SecretStore(state_dir)
    replaced = store.set(name, value)
    click.echo(
        f"{'replaced' if replaced else 'stored'} secret {name} ({len(value)} bytes) "
        f"in {store.directory}"
    )


@secret_group.command("list")
@_EXISTING_STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def secret_list(state_dir: Path, as_json: bool) -> None:
    """List the secrets: name, size and modification time (UTC), never a value or its hash."""
    store = SecretStore(state_dir)
    entries = store.names()
    if as_json:
        document = {
            "directory": str(store.directory),
            "secrets": [
                {"name": name, "bytes": size, "modified": modified.isoformat(timespec="seconds")}
                for name, size, modified in entries
            ],
        }
        click.echo(json.dumps(document, indent=2))
        return
    if not entries:
        click.echo(f"no secrets in {store.directory}")
        return
    width = max(len("NAME"), *(len(name) for name, _, _ in entries))
    click.echo(f"{'NAME':<{width}}  {'BYTES':>5}  MODIFIED (UTC)")
    for name, size, modified in entries:
        click.echo(f"{name:<{width}}  {size:>5}  {modified.isoformat(timespec='seconds')}")


@secret_group.command("generate")
@click.argument("name")
@_SECRETS_STATE_DIR
@click.option(
    "--bytes",
    "size",
    type=click.IntRange(16, 1024),
    default=32,
    show_default=True,
    help="Random bytes in the value (stored base64, so it fits an environment variable too).",
)
@click.option("--force", is_flag=True, help="Replace an existing secret of that name.")
def secret_generate(name: str, state_dir: Path, size: int, force: bool) -> None:
    """Store a new random value as secret NAME, printing nothing of it.

    A generated secret is a key only Steward and the Keeps its rule names ever hold: a data or
    sealing key that a workload uses to encrypt what it keeps on untrusted host storage
    ([[dirs]]), and that survives moving to another host and TCB updates, since Steward
    releases it by workload identity, not by machine. To let a new version of the workload read
    what an old one wrote, add the new identity to the same rule.
    """
    import base64
    import secrets as random

    check_secret_name(name)
    store = SecretStore(state_dir)
    if store.get(name) is not None and not force:
        raise UsageError(
            f"secret {name} already exists; a new value would make what was encrypted with the "
            "old one unreadable. Pass --force to replace it anyway"
        )
    store.set(name, base64.b64encode(random.token_bytes(size)))
    click.echo(f"generated secret {name} ({size} random bytes, base64) in {store.directory}")


@secret_group.command("rm")
@click.argument("name")
@_EXISTING_STATE_DIR
def secret_rm(name: str, state_dir: Path) -> None:
    """Delete secret NAME. Keeps that already received it keep their copy."""
    store = SecretStore(state_dir)
    if not store.remove(name):
        raise UsageError(
            f"no secret named {name!r} in {store.directory}; "
            f"`donjon steward secret list --state-dir {state_dir}` shows the names"
        )
    click.echo(f"removed secret {name} from {store.directory}")


def _read_value_file(path: Path) -> bytes:
    """Read at most one byte past the limit, so /dev/zero or a wrong file fails fast."""
    try:
        with path.open("rb") as f:
            return f.read(MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read the secret value from {path}: {e.strerror or e}") from e


def _read_value_stdin(name: str, state_dir: Path) -> bytes:
    stdin = sys.stdin.buffer
    if stdin.isatty():
        # Reading a terminal would wait for input the user does not know is wanted (and echo it).
        raise UsageError(
            "the secret value is read from stdin, which is a terminal; redirect it "
            f"(`donjon steward secret set {name} --state-dir {state_dir} < FILE`) or give "
            "--from-file FILE"
        )
    try:
        return stdin.read(MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read the secret value from stdin: {e.strerror or e}") from e


__all__ = ["steward"]
