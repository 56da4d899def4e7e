"""``donjon platform``: what this machine can run, and its nil development key."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from donjon import __version__
from donjon.backends.host_view import DEFAULT_SEARCH_PATH, HostView
from donjon.backends.nil_evidence import default_dev_key_path, load_or_create_dev_key
from donjon.backends.probe import (
    BackendReport,
    HostSummary,
    best_available,
    host_summary,
    probe_all,
)
from donjon.errors import BackendUnavailableError

_OK = "✔"
_FAIL = "✗"
_SCHEMA_VERSION = 1


@click.group(name="platform")
def platform() -> None:
    """What this machine can run."""


@platform.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in docs).")
def info(as_json: bool) -> None:
    """Check each backend (nil, kvm, sev-snp, tdx, sgx, cca): ✔/✗ with the reason and the fix.

    Always exits 0: a missing TEE is information, not an error.
    """
    view = HostView(search_path=os.environ.get("PATH", DEFAULT_SEARCH_PATH))
    reports = probe_all(view)
    summary = host_summary(view)
    try:
        best: str | None = best_available(reports)
    except BackendUnavailableError:
        best = None
    if as_json:
        click.echo(json.dumps(info_json(summary, reports, best), indent=2, ensure_ascii=False))
    else:
        click.echo(render_info(summary, reports, best), color=None)


def info_json(
    summary: HostSummary, reports: Sequence[BackendReport], best: str | None
) -> dict[str, Any]:
    """The ``platform info --json`` object (docs/commands/platform.md documents the schema)."""
    return {
        "schema": _SCHEMA_VERSION,
        "donjon_version": __version__,
        "host": summary.to_json(),
        "best_available": best,
        "backends": [r.to_json() for r in reports],
    }


def render_info(summary: HostSummary, reports: Sequence[BackendReport], best: str | None) -> str:
    """The terminal table: an overview, then every check with its fix where it fails."""
    lines = [
        f"donjon {__version__} on {summary.machine}, Linux {summary.kernel}, {summary.cpu}"
        + (" (a virtual machine)" if summary.in_vm else ""),
        "",
    ]
    width = max(len(r.name) for r in reports)
    lines.append(f"  {'BACKEND':<{width}}  USABLE  CONFIDENTIAL  MODE")
    for r in reports:
        usable = _mark(r.usable) + (" yes" if r.usable else " no ")
        lines.append(
            f"  {r.name:<{width}}  {usable}   {'yes' if r.confidential else 'no ':<12}  "
            f"{r.mode or '-'}"
        )
    for r in reports:
        lines.append("")
        state = f"usable ({r.mode})" if r.usable else "not usable here"
        lines.append(f"{_mark(r.usable)} {click.style(r.name, bold=True)}: {state}: {r.summary}")
        group = None
        for c in r.checks:
            if c.group != group:
                group = c.group
                lines.append(f"    {_GROUP_TITLES[str(group)]}")
            lines.append(f"      {_mark(c.ok)} {c.name}: {c.detail}")
            if not c.ok and c.fix:
                lines.append(f"          fix: {c.fix}")
    lines.append("")
    if best is None:
        lines.append(f"{_FAIL} No backend can run here; see the fixes above.")
    else:
        chosen = next(r for r in reports if r.name == best)
        note = (
            "" if chosen.confidential else " (no confidentiality: deploying to it needs --insecure)"
        )
        lines.append(f"Best available backend: {best}{note}")
    return "\n".join(lines)


_GROUP_TITLES = {
    "runtime": "keep runtime (needed either way)",
    "host": "host: donjon creates it on this machine",
    "guest": "guest: this machine already runs inside it",
}


def _mark(ok: bool) -> str:
    return click.style(_OK, fg="green") if ok else click.style(_FAIL, fg="red")


@platform.command(name="dev-key")
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key file (default: $DONJON_NIL_DEV_KEY, else $XDG_DATA_HOME/donjon/nil-dev-key.pem).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def dev_key(key_path: Path | None, as_json: bool) -> None:
    """Show this machine's nil development key (created if missing): path, SHA-256, public key.

    Put the public key in a Steward policy's trusted development keys to accept nil evidence
    from this machine only. The private key is never printed.
    """
    path = key_path if key_path is not None else default_dev_key_path(os.environ)
    existed = path.exists()
    key = load_or_create_dev_key(path)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "path": str(path),
                    "created": not existed,
                    "sha256": key.fingerprint,
                    "public_key_pem": key.spki_pem(),
                },
                indent=2,
            )
        )
        return
    if not existed:
        click.echo(f"created {path}", err=True)
    click.echo(f"path:    {path}")
    click.echo(f"sha256:  {key.fingerprint}")
    click.echo(key.spki_pem().rstrip("\n"))
