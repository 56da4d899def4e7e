"""``donjon keep``: see and manage your Keeps on a host."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import click

from donjon.cli._hostopts import host_options, read_token
from donjon.client.host_api import HostClient, KeepInfo


def _client(host_url: str, token_file: Path | None) -> HostClient:
    return HostClient(host_url, token=read_token(token_file))


def _row(k: KeepInfo) -> str:
    age = time.time() - k.created_at
    code = "" if k.exit_code is None else str(k.exit_code)
    return f"{k.id}  {k.backend:<8} {k.state:<9} {age:>7.0f}s  {code:>4}  {k.detail or ''}"


@click.group()
def keep() -> None:
    """List, inspect and stop your Keeps on a keep manager."""


@keep.command("list")
@host_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(host_url: str, token_file: Path | None, as_json: bool) -> None:
    """Your Keeps on the host."""
    with _client(host_url, token_file) as client:
        keeps = client.list_keeps()
    if as_json:
        click.echo(json.dumps([asdict(k) for k in keeps], indent=2))
        return
    if not keeps:
        click.echo("no Keeps")
        return
    click.echo("ID                BACKEND  STATE         AGE  EXIT  DETAIL")
    for k in keeps:
        click.echo(_row(k))


@keep.command("status")
@click.argument("keep_id")
@host_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(keep_id: str, host_url: str, token_file: Path | None, as_json: bool) -> None:
    """One Keep's state (as the untrusted host reports it)."""
    with _client(host_url, token_file) as client:
        k = client.get_keep(keep_id)
    if as_json:
        click.echo(json.dumps(asdict(k), indent=2))
    else:
        click.echo(_row(k))


@keep.command("stop")
@click.argument("keep_id")
@host_options
def stop_command(keep_id: str, host_url: str, token_file: Path | None) -> None:
    """Stop a Keep (only its creator can)."""
    with _client(host_url, token_file) as client:
        k = client.stop_keep(keep_id)
    click.echo(_row(k))
