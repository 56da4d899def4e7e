"""``donjon deploy``: run a workload in an attested Keep on a (possibly remote) host."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from donjon.cli._args import check_wasi_args
from donjon.cli._hostopts import host_options, read_token
from donjon.client.deploy import DeployOptions, RegistryWorkload, Workload
from donjon.client.deploy import deploy as run_deploy
from donjon.errors import UsageError

INSECURE_WARNING = (
    "donjon: WARNING: --insecure: Keeps without a hardware TEE (nil, kvm) are accepted. Such a "
    "Keep gives NO confidentiality or integrity against its host: the host can read and change "
    "the workload, its data and its output. Use this for development only."
)


@click.command()
@click.argument("workload")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@host_options
@click.option("--steward", help="Steward URL the Keep gets its certificate from.")
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Steward CA certificate (PEM/DER) to trust for the Keep's certificate.",
)
@click.option("--policy", "policy_name", help="Client policy: production, permissive, or a file.")
@click.option("--insecure", is_flag=True, help="Accept Keeps without confidentiality (nil).")
@click.option(
    "--wasmcfgfile",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DONJON_WASMCFGFILE",
    help="Workload config (Enarx.toml) when WORKLOAD is a .wasm file.",
)
@click.option("--backend", default="nil", show_default=True, help="Backend to ask the host for.")
@click.option(
    "--publisher-key",
    "publisher_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="For a registry package: require a signature by this publisher key (PEM); repeatable.",
)
def deploy(
    workload: str,
    args: tuple[str, ...],
    host_url: str,
    token_file: Path | None,
    steward: str | None,
    ca_file: Path | None,
    policy_name: str | None,
    insecure: bool,
    wasmcfgfile: Path | None,
    backend: str,
    publisher_keys: tuple[Path, ...],
) -> int:
    """Deploy WORKLOAD to a Keep: a .wasm file, a directory with Enarx.toml and one module, or a
    package in an OCI registry (REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...).

    Arguments after WORKLOAD (put them after -- if they start with -) go to the workload, after
    the config's args. stdin is streamed to the workload while it runs (if its config gives it a
    stdin); stdout and stderr stream back.

    A registry package is resolved to a digest here; the Keep fetches it itself after it has
    been verified, with the registry credentials (from DONJON_REGISTRY_USER/PASSWORD or the
    credentials files) sent only to it over the attested channel.

    The Keep must prove what it is (Steward certificate or RA-TLS evidence, checked against the
    policy) before any byte of the workload is sent. The workload's exit code becomes donjon's.
    """
    token = read_token(token_file)
    check_wasi_args(args)
    wl: Workload | RegistryWorkload
    if Path(workload).exists() or workload.endswith(".wasm") or "/" not in workload:
        if publisher_keys:
            raise UsageError("--publisher-key applies to registry packages only")
        wl = Workload.load(Path(workload), config_path=wasmcfgfile, args=args)
        steward = steward or wl.config.steward
    else:
        wl = _resolve_registry_workload(workload, publisher_keys, args)
    ca = None
    if ca_file is not None:
        from donjon.crypto.ca import load_certificate

        try:
            ca = load_certificate(ca_file.read_bytes(), what=f"CA certificate {ca_file}")
        except OSError as e:
            raise UsageError(f"cannot read --ca {ca_file}: {e.strerror}") from e
    if steward is not None and ca is None:
        raise UsageError(
            "the Keep will get its certificate from a Steward; pass that Steward's CA "
            "certificate with --ca FILE so the Keep can be checked (`donjon steward serve` "
            "writes it to its state dir as ca.crt)"
        )
    if insecure:
        click.echo(INSECURE_WARNING, err=True)
    policy = None
    if policy_name:
        from donjon.attestation.policy import Policy

        policy = Policy.named(policy_name)
    options = DeployOptions(
        host=host_url,
        token=token,
        steward=steward,
        steward_ca=ca,
        policy=policy,
        insecure=insecure,
        backend=backend,
    )

    def on_verified(keep: object, identity: object) -> None:
        from donjon.client.attested import KeepIdentity
        from donjon.client.host_api import KeepInfo

        if isinstance(keep, KeepInfo) and isinstance(identity, KeepIdentity):
            tag = " (INSECURE: no TEE)" if identity.insecure else ""
            what = (
                f"sending {wl.name} (sha256 {wl.module_sha256.hex()[:16]}…)"
                if isinstance(wl, Workload)
                else f"it fetches {wl.reference}"
            )
            click.echo(
                f"donjon: Keep {keep.id} verified via {identity.via}: platform "
                f"{identity.platform}{tag}, measurement {identity.measurement.hex()[:32]}…, "
                f"policy {identity.policy}; {what}",
                err=True,
            )
            if isinstance(wl, Workload) and wl.config.secrets:
                names = ", ".join(s.name for s in wl.config.secrets)
                click.echo(
                    f"donjon: the Keep asks Steward for {names} as workload {wl.identity}",
                    err=True,
                )

    result = run_deploy(
        wl,
        options,
        stdout=sys.stdout.buffer,
        stderr=sys.stderr.buffer,
        stdin=sys.stdin.buffer,
        on_verified=on_verified,
    )
    if result.error is not None:
        click.echo(f"donjon: error: {result.message}", err=True)
    return result.exit_code


def _resolve_registry_workload(
    text: str, key_files: tuple[Path, ...], args: tuple[str, ...]
) -> RegistryWorkload:
    """Resolve a registry reference to a digest here (the Keep fetches by digest only)."""
    import os

    from donjon.cli.package import registry_credentials
    from donjon.client.deploy import resolve_registry_workload
    from donjon.crypto.publisher import PublisherPublicKey
    from donjon.registry import Reference

    ref = Reference.parse(text)
    credentials = registry_credentials(ref.registry, os.environ)
    keys: list[bytes] = []
    for path in key_files:
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read --publisher-key {path}: {e.strerror}") from e
        PublisherPublicKey.from_pem(pem, source=str(path))  # refuse a bad key here, naming it
        keys.append(pem)
    resolved = resolve_registry_workload(
        text, credentials=credentials, publisher_keys=keys, args=args
    )
    if ref.digest is None:
        click.echo(f"donjon: {text} resolved to {resolved.reference}", err=True)
    return resolved
