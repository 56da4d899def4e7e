"""``donjon workload id``: the identity a workload's Keep names when it asks for its secrets."""

from __future__ import annotations

import json
from pathlib import Path

import click

from donjon.cli._args import check_wasi_args
from donjon.client.deploy import Workload


@click.group()
def workload() -> None:
    """Inspect workloads before they are deployed."""


@workload.command("id")
@click.argument("module", type=click.Path(path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--wasmcfgfile",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DONJON_WASMCFGFILE",
    help="Workload config (Enarx.toml) when MODULE is a .wasm file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON with what the identity covers.")
def workload_id(
    module: Path, args: tuple[str, ...], wasmcfgfile: Path | None, as_json: bool
) -> None:
    """Print the workload identity (donjon:workload:sha256:...) of MODULE under its config.

    MODULE, its config and ARGS are taken exactly as `donjon deploy` takes them, and the
    identity is the one the Keep computes from what it receives: the module's SHA-256, every
    grant of the config, argv[0] (the module's file name) and ARGS. Name it in a Steward
    policy's release rules ([steward.secrets] NAME = ["<identity>"]) to let this workload, and
    no other, receive secret NAME once its Keep is attested. Any change to the module, the
    config or the arguments makes another identity.
    """
    check_wasi_args(args)
    loaded = Workload.load(module, config_path=wasmcfgfile, args=args)
    identity = loaded.identity
    if not as_json:
        click.echo(identity)
        return
    click.echo(
        json.dumps(
            {
                "identity": identity,
                "module_sha256": loaded.module_sha256.hex(),
                "config": loaded.config.source,
                "program": loaded.name,
                "args": list(loaded.args),
                "secrets": [{"name": s.name, "env": s.env} for s in loaded.config.secrets],
            },
            indent=2,
        )
    )
