"""``donjon workload id``: the identity a workload's Keep names when it asks for its secrets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from donjon.cli._args import check_wasi_args
from donjon.client.deploy import Workload
from donjon.errors import UsageError
from donjon.keep.config import DEFAULT_ARGV0, WorkloadConfig, package_config
from donjon.keep.workload_id import workload_identity


@click.group()
def workload() -> None:
    """Inspect workloads before they are deployed."""


@workload.command("id")
@click.argument("module")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--wasmcfgfile",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DONJON_WASMCFGFILE",
    help="Workload config (Enarx.toml) when MODULE is a .wasm file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON with what the identity covers.")
def workload_id(
    module: str, args: tuple[str, ...], wasmcfgfile: Path | None, as_json: bool
) -> None:
    """Print the workload identity (donjon:workload:sha256:...) of MODULE under its config.

    MODULE, its config and ARGS are taken exactly as `donjon deploy` takes them: a .wasm file,
    a directory with Enarx.toml and one module, or a package in an OCI registry
    (REGISTRY/REPO:TAG or @sha256:..., fetched here with the credentials deploy would use).
    The identity is the one the Keep computes from what it receives: the module's SHA-256,
    every grant of the config, argv[0] (the module's file name; main.wasm for a package) and
    ARGS. Name it in a Steward policy's release rules ([steward.secrets] NAME =
    ["<identity>"]) to let this workload, and no other, receive secret NAME once its Keep is
    attested. Any change to the module, the config or the arguments makes another identity.
    """
    check_wasi_args(args)
    if Path(module).exists() or module.endswith(".wasm") or "/" not in module:
        loaded = Workload.load(Path(module), config_path=wasmcfgfile, args=args)
        module_sha256, config, program = loaded.module_sha256, loaded.config, loaded.name
        source = loaded.config.source
    else:
        if wasmcfgfile is not None:
            raise UsageError("--wasmcfgfile applies to .wasm files; a package has its own config")
        module_sha256, config, source = _package(module)
        program = DEFAULT_ARGV0
    identity = workload_identity(module_sha256, config, program=program, args=args)
    if not as_json:
        click.echo(identity)
        return
    click.echo(
        json.dumps(
            {
                "identity": identity,
                "module_sha256": module_sha256.hex(),
                "config": source,
                "program": program,
                "args": list(args),
                "secrets": [s.to_dict() for s in config.secrets],
            },
            indent=2,
        )
    )


def _package(text: str) -> tuple[bytes, WorkloadConfig, str]:
    """(module SHA-256, config, pinned reference) of a registry package, fetched and checked
    here exactly as the Keep will fetch it."""
    import hashlib

    from donjon.cli.package import registry_credentials
    from donjon.registry import Reference, RegistryClient, fetch_package, resolve_package

    ref = Reference.parse(text)
    credentials = registry_credentials(ref.registry, os.environ)
    with RegistryClient.for_reference(ref, credentials=credentials) as client:
        pinned = ref.with_digest(resolve_package(client, ref).digest)
        package = fetch_package(pinned, client=client)
    if ref.digest is None:
        click.echo(f"donjon: {text} resolved to {pinned}", err=True)
    config = package_config(package.config_toml, source=f"{pinned.repository} Enarx.toml")
    return hashlib.sha256(package.module).digest(), config, str(pinned)
