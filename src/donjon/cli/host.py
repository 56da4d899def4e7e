"""``donjon host``: run the keep manager on a host and manage its client tokens."""

from __future__ import annotations

from pathlib import Path

import click

from donjon.errors import UsageError
from donjon.host.pool import DEFAULT_SPARES, MAX_SPARES


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen must be HOST:PORT (port 0 picks a free one), not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def spares_setting(spares: int | None, spare: bool | None) -> int:
    """How many warm spares to keep, from ``--spares N`` or the older ``--spare/--no-spare``.

    Raises:
        UsageError: both forms given.
    """
    if spares is not None and spare is not None:
        flag = "--spare" if spare else "--no-spare"
        raise UsageError(f"give --spares N or {flag}, not both ({flag} is --spares {int(spare)})")
    if spares is not None:
        return spares
    return DEFAULT_SPARES if spare is None else int(spare)


@click.group()
def host() -> None:
    """Run the keep manager (the untrusted host agent) and manage its tokens."""


@host.command("serve")
@click.option(
    "--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to serve on."
)
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where Keep records and tokens live; survives restarts.",
)
@click.option("--backend", default="nil", show_default=True, help="Backend for new Keeps.")
@click.option(
    "--spares",
    type=click.IntRange(0, MAX_SPARES),
    default=None,
    help=(
        "Warm keep loaders kept ready, so new Keeps start without waiting for imports "
        f"(0-{MAX_SPARES}; default {DEFAULT_SPARES}; each idle one is ~77 MiB RSS)."
    ),
)
@click.option(
    "--spare/--no-spare",
    default=None,
    help="Same as --spares 1 / --spares 0 (the older form).",
)
def serve_command(
    listen: str, state_dir: Path, backend: str, spares: int | None, spare: bool | None
) -> None:
    """Serve the keep manager API (CBOR over HTTP) and the relay to Keeps.

    On first start an 'admin' client token is written to STATE_DIR/admin.token (mode 0600).
    """
    from donjon.host.serve import HostSettings, HostState, serve
    from donjon.steward.app import Listening

    if backend != "nil":
        raise UsageError(
            f"backend {backend!r} cannot run on this host yet; see `donjon platform info`"
        )
    address, port = _split_listen(listen)
    pool = spares_setting(spares, spare)
    click.echo(
        "donjon: warning: this keep manager offers only the nil backend: Keeps get no "
        "confidentiality or integrity against this host (development only)",
        err=True,
    )

    def announce(where: Listening, state: HostState) -> None:
        if state.admin_token_path is not None:
            click.echo(f"admin token written to {state.admin_token_path} (mode 0600)", err=True)
        if state.attached or state.reaped:
            click.echo(
                f"re-attached {len(state.attached)} running Keeps, reaped {len(state.reaped)}",
                err=True,
            )
        click.echo(f"listening on {where.url}", nl=True)

    serve(HostSettings(address, port, state_dir, backend, pool), announce=announce)


@host.command("token")
@click.argument("name")
@click.option("--state-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the token to this file (mode 0600) instead of printing it.",
)
def token_command(name: str, state_dir: Path, out: Path | None) -> None:
    """Create a client token NAME; its holder can create and manage its own Keeps."""
    import os

    from donjon.host.auth import TokenStore

    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = TokenStore(state_dir / "tokens").add(name)
    if out is None:
        click.echo(token)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    click.echo(f"token for {name} written to {out}", err=True)
