"""``donjon deploy``: run a workload in an attested Keep on a (possibly remote) host."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from donjon.cli._hostopts import host_options, read_token
from donjon.errors import UsageError

INSECURE_WARNING = (
    "donjon: WARNING: --insecure: Keeps without a hardware TEE (nil, kvm) are accepted. Such a "
    "Keep gives NO confidentiality or integrity against its host: the host can read and change "
    "the workload, its data and its output. Use this for development only."
)


@click.command()
@click.argument("workload", type=click.Path(path_type=Path))
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
def deploy(
    workload: Path,
    host_url: str,
    token_file: Path | None,
    steward: str | None,
    ca_file: Path | None,
    policy_name: str | None,
    insecure: bool,
    wasmcfgfile: Path | None,
    backend: str,
) -> int:
    """Deploy WORKLOAD (a .wasm file, or a directory with Enarx.toml and one module) to a Keep.

    The Keep must prove what it is (Steward certificate or RA-TLS evidence, checked against the
    policy) before any byte of the workload is sent. The workload's exit code becomes donjon's.
    """
    from donjon.attestation.policy import Policy
    from donjon.client.deploy import DeployOptions, Workload
    from donjon.client.deploy import deploy as run_deploy
    from donjon.crypto.ca import load_certificate

    token = read_token(token_file)
    wl = Workload.load(workload, config_path=wasmcfgfile)
    steward = steward or wl.config.steward
    ca = None
    if ca_file is not None:
        try:
            ca = load_certificate(ca_file.read_bytes(), what=f"CA certificate {ca_file}")
        except OSError as e:
            raise UsageError(f"cannot read --ca {ca_file}: {e.strerror}") from e
    if steward is not None and ca is None:
        raise UsageError(
            "the Keep will get its certificate from a Steward; pass that Steward's CA "
            "certificate with --ca FILE so the Keep can be checked (`donjon steward serve` "
            "writes it to its state dir as ca.pem)"
        )
    if insecure:
        click.echo(INSECURE_WARNING, err=True)
    policy = Policy.named(policy_name) if policy_name else None
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
            click.echo(
                f"donjon: Keep {keep.id} verified via {identity.via}: platform "
                f"{identity.platform}{tag}, measurement {identity.measurement.hex()[:32]}…, "
                f"policy {identity.policy}; sending {wl.name} "
                f"(sha256 {wl.module_sha256.hex()[:16]}…)",
                err=True,
            )

    result = run_deploy(
        wl, options, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer, on_verified=on_verified
    )
    if result.error is not None:
        click.echo(f"donjon: error: {result.message}", err=True)
    return result.exit_code
