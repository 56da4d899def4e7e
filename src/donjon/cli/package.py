"""``donjon package``: build, inspect, push, pull, sign and verify workload packages.

Commands parse their arguments, call :mod:`donjon.registry`, and render. This module is also
where registry credentials are read (the environment and the credentials files, see
:mod:`donjon.registry.credentials`) and where the workload config is validated with
:mod:`donjon.keep.config` before it goes into a package: the registry layer treats the config
as opaque bytes. ``docs/commands/package.md`` documents every command.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from donjon.crypto.publisher import (
    PublisherKey,
    PublisherPublicKey,
    generate_publisher_key_pem,
)
from donjon.errors import ConfigError, UsageError
from donjon.keep.config import MAX_CONFIG_BYTES, parse_config
from donjon.registry.client import RegistryClient
from donjon.registry.credentials import (
    ENV_AUTH_FILE,
    MAX_CREDENTIALS_FILE_BYTES,
    Credentials,
    credentials_from_environ,
    parse_credentials_file,
)
from donjon.registry.errors import CredentialsError
from donjon.registry.fetch import fetch_package
from donjon.registry.layout import read_layout, write_layout
from donjon.registry.oci import Descriptor
from donjon.registry.package import (
    MAX_MODULE_BYTES,
    BuiltPackage,
    PackageManifest,
    build_package,
)
from donjon.registry.reference import Reference
from donjon.registry.signing import (
    ANNOTATION_SIGNATURE_KEY,
    find_signatures,
    sign_package,
    verify_package_signature,
)
from donjon.registry.transfer import push_package, resolve_package

__all__ = ["package"]

ENV_KEY_PASSWORD = "DONJON_PUBLISHER_KEY_PASSWORD"  # noqa: S105 - a variable name
_CONFIG_NAME = "Enarx.toml"
_MODULE_NAME = "main.wasm"
_DEFAULT_CONFIG = (
    b"# No Enarx.toml was given when this package was built: the Keep's defaults apply\n"
    b"# (no arguments, no environment, ordinary stdio). See docs/workload-config.md.\n"
)
_MAX_PUBLIC_KEY_BYTES = 16 * 1024  # bytes of a public key file; a PEM P-384 key is ~215

F = TypeVar("F", bound=Callable[..., Any])


@click.group("package")
def package() -> None:
    """Build, sign, push and pull workload packages (OCI artifacts).

    Registry credentials come from DONJON_REGISTRY_USER and DONJON_REGISTRY_PASSWORD, from
    $DONJON_REGISTRY_AUTH_FILE or ~/.config/donjon/registries.toml, or from Docker's
    ~/.docker/config.json; never from the command line.
    """


def _registry_options(command: F) -> F:
    command = click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="PEM CA bundle to verify the registry's TLS certificate with.",
    )(command)
    return click.option(
        "--plain-http/--https",
        "plain_http",
        default=None,
        help="Force HTTP or HTTPS (default: HTTP for localhost/127.0.0.1/::1, else HTTPS).",
    )(command)


# -- build and inspect -------------------------------------------------------------------------


@package.command("build")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--wasmcfgfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The workload config (default: Enarx.toml beside the module, if there is one).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write the package as an OCI image layout directory (must not exist).",
)
@click.option("--tag", help="Tag recorded in the layout's index.json (with -o).")
@click.option(
    "--annotation",
    "annotations",
    multiple=True,
    metavar="KEY=VALUE",
    help="Add a manifest annotation (repeatable), e.g. org.opencontainers.image.source=URL.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def build(
    source: Path,
    wasmcfgfile: Path | None,
    output: Path | None,
    tag: str | None,
    annotations: tuple[str, ...],
    as_json: bool,
) -> None:
    """Build a package from SOURCE: a .wasm file, or a directory with main.wasm.

    Prints the package digest, which names the exact module and config. The config is
    validated as an Enarx.toml first.
    """
    built = _build(source, wasmcfgfile, _annotations(annotations))
    if output is not None:
        write_layout(output, built, tag=tag)
    if as_json:
        click.echo(json.dumps(_summary_json(built.manifest, output=output), indent=2))
        return
    click.echo(str(built.digest))
    if output is not None:
        click.echo(f"wrote OCI image layout {output}", err=True)


@package.command("inspect")
@click.argument("target")
@_registry_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def inspect(target: str, plain_http: bool | None, ca_file: Path | None, as_json: bool) -> None:
    """Show a package: TARGET is an OCI layout directory or REGISTRY/REPO:TAG|@DIGEST.

    For a registry reference, the tag is resolved to a digest (computed over the manifest
    received) and the signatures listed beside it are shown, unverified: use `verify`.
    """
    path = Path(target)
    if path.is_dir():
        manifest = read_layout(path).manifest
        summary = _summary_json(manifest, output=path)
    else:
        ref = Reference.parse(target)
        with _client(ref, plain_http, ca_file) as client:
            manifest = resolve_package(client, ref)
            signatures = find_signatures(client, ref.repository, manifest.digest)
        summary = _summary_json(manifest, output=None)
        summary["reference"] = str(ref.with_digest(manifest.digest))
        summary["signatures"] = [_signature_hint(d) for d in signatures]
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(_summary_text(summary))


# -- push and pull -----------------------------------------------------------------------------


@package.command("push")
@click.argument("reference")
@click.option(
    "--from",
    "source",
    default=".",
    show_default=True,
    type=click.Path(exists=True, path_type=Path),
    help="An OCI layout directory, a directory with main.wasm, or a .wasm file.",
)
@click.option(
    "--wasmcfgfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The workload config, when building from a module.",
)
@_registry_options
def push(
    reference: str,
    source: Path,
    wasmcfgfile: Path | None,
    plain_http: bool | None,
    ca_file: Path | None,
) -> None:
    """Push a package to REFERENCE (REGISTRY/REPO:TAG) and print REGISTRY/REPO:TAG@DIGEST."""
    ref = Reference.parse(reference)
    if (source / "oci-layout").is_file():
        if wasmcfgfile is not None:
            raise UsageError("--wasmcfgfile applies when building from a module, not to a layout")
        built = read_layout(source)
    else:
        built = _build(source, wasmcfgfile, {})
    with _client(ref, plain_http, ca_file) as client:
        digest = push_package(client, ref, built)
    click.echo(str(ref.with_digest(digest)))


@package.command("pull")
@click.argument("reference")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="OCI layout directory to write (default: the repository's last name part).",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Require a signature by this publisher public key (repeatable: any of them).",
)
@_registry_options
def pull(
    reference: str,
    output: Path | None,
    keys: tuple[Path, ...],
    plain_http: bool | None,
    ca_file: Path | None,
) -> None:
    """Fetch a package, check every digest (and signature with --key), write an OCI layout.

    A tag is resolved to a digest first; everything after is fetched by that digest.
    """
    ref = Reference.parse(reference)
    publisher_keys = [_public_key(k) for k in keys]
    target = output if output is not None else Path(ref.repository.rsplit("/", 1)[-1])
    if target.exists() or target.is_symlink():
        # Checked again when writing; here so that nothing is downloaded for nothing.
        raise UsageError(f"{target} already exists; remove it or choose another -o")
    with _client(ref, plain_http, ca_file) as client:
        pinned = (
            ref if ref.digest is not None else ref.with_digest(resolve_package(client, ref).digest)
        )
        fetched = fetch_package(pinned, client=client, publisher_keys=publisher_keys)
    built = BuiltPackage(
        manifest=fetched.manifest, module=fetched.module, config_toml=fetched.config_toml
    )
    write_layout(target, built, tag=ref.tag)
    click.echo(str(pinned))
    signed = f", signed by {fetched.publisher}" if fetched.publisher else ""
    click.echo(f"wrote OCI image layout {target}{signed}", err=True)


# -- signatures --------------------------------------------------------------------------------


@package.command("keygen")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Private key file to create (mode 0600); the public key goes to OUT.pub.",
)
@click.option(
    "--curve",
    type=click.Choice(["P-256", "P-384"]),
    default="P-256",
    show_default=True,
    help="P-256 signs ES256, P-384 signs ES384.",
)
@click.option(
    "--encrypt",
    is_flag=True,
    help=f"Encrypt the key with a passphrase (from {ENV_KEY_PASSWORD}, else asked for).",
)
def keygen(out: Path, curve: str, encrypt: bool) -> None:
    """Create a publisher signing key and print its fingerprint."""
    password = _new_password() if encrypt else None
    pem = generate_publisher_key_pem(curve, password=password)
    key = PublisherKey.from_pem(pem, source=str(out), password=password)
    public_path = out.with_name(out.name + ".pub")
    _write_new(out, pem, mode=0o600)
    try:
        _write_new(public_path, key.public.pem().encode("ascii"), mode=0o644)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    click.echo(key.public.fingerprint)
    click.echo(f"wrote {out} (keep it secret) and {public_path} (share it)", err=True)


@package.command("sign")
@click.argument("reference")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"The publisher private key (passphrase from {ENV_KEY_PASSWORD}, else asked for).",
)
@_registry_options
def sign(reference: str, key_path: Path, plain_http: bool | None, ca_file: Path | None) -> None:
    """Sign the package REFERENCE names and store the signature beside it in the registry."""
    ref = Reference.parse(reference)
    key = _private_key(key_path)
    with _client(ref, plain_http, ca_file) as client:
        artifact = sign_package(client, ref, key)
    click.echo(f"{ref.with_digest(artifact.subject)} signed by {key.public.fingerprint}")
    click.echo(f"signature artifact {artifact.digest}", err=True)


@package.command("verify")
@click.argument("reference")
@click.option(
    "--key",
    "keys",
    required=True,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An accepted publisher public key (repeatable: any of them).",
)
@_registry_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(
    reference: str,
    keys: tuple[Path, ...],
    plain_http: bool | None,
    ca_file: Path | None,
    as_json: bool,
) -> None:
    """Check that REFERENCE is signed by one of the --key public keys.

    Exits 0 when a signature verified, 1 when none did.
    """
    ref = Reference.parse(reference)
    accepted = [_public_key(k) for k in keys]
    with _client(ref, plain_http, ca_file) as client:
        manifest = resolve_package(client, ref)
        verified = verify_package_signature(client, ref.repository, manifest.descriptor, accepted)
    pinned = ref.with_digest(manifest.digest)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "reference": str(pinned),
                    "digest": str(manifest.digest),
                    "key": verified.key.fingerprint,
                    "signed_name": verified.name,
                    "signature": str(verified.signature_digest),
                },
                indent=2,
            )
        )
        return
    click.echo(f"{pinned}: signature by {verified.key.fingerprint} verified")
    if verified.name != ref.name:
        click.echo(f"note: the publisher signed it as {verified.name}", err=True)


# -- helpers -----------------------------------------------------------------------------------


def _build(source: Path, wasmcfgfile: Path | None, annotations: Mapping[str, str]) -> BuiltPackage:
    if source.is_dir():
        module_path = source / _MODULE_NAME
        if not module_path.is_file():
            raise UsageError(f"{source} has no {_MODULE_NAME}; give the module file instead")
        default_config: Path | None = source / _CONFIG_NAME
    else:
        module_path = source
        default_config = source.with_name(_CONFIG_NAME)
    config_path = wasmcfgfile
    if config_path is None and default_config is not None and default_config.is_file():
        config_path = default_config
    module = _read_file(module_path, MAX_MODULE_BYTES, "module")
    if config_path is None:
        config = _DEFAULT_CONFIG
    else:
        config = _read_file(config_path, MAX_CONFIG_BYTES, "config")
        try:
            text = config.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{config_path}: not UTF-8 text (byte {e.start})") from e
        # Validated here, where both layers may be imported; the registry keeps it opaque.
        parse_config(text, source=str(config_path))
    return build_package(module, config, annotations=annotations)


def _read_file(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise UsageError(f"cannot read the {what} {path}: {e.strerror or e}") from e
    if len(data) > limit:
        raise UsageError(f"the {what} {path} is larger than {limit} bytes")
    return data


def _annotations(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--annotation {item!r}: write KEY=VALUE")
        if key in out:
            raise UsageError(f"--annotation {key!r} is given twice")
        out[key] = value
    return out


def _client(ref: Reference, plain_http: bool | None, ca_file: Path | None) -> RegistryClient:
    return RegistryClient.for_reference(
        ref,
        credentials=registry_credentials(ref.registry, os.environ),
        plain_http=plain_http,
        verify=str(ca_file) if ca_file is not None else True,
    )


def registry_credentials(registry: str, environ: Mapping[str, str]) -> Credentials | None:
    """Credentials for *registry*: environment, then the donjon file, then Docker's."""
    from_env = credentials_from_environ(environ)
    if from_env is not None:
        return from_env
    home = Path(environ.get("HOME") or Path.home())
    explicit = environ.get(ENV_AUTH_FILE)
    if explicit:
        files = [Path(explicit)]
        if not files[0].is_file():
            raise CredentialsError(f"{ENV_AUTH_FILE}={explicit}: no such file")
    else:
        docker_dir = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else None
        files = [
            home / ".config" / "donjon" / "registries.toml",
            (docker_dir or home / ".docker") / "config.json",
        ]
    for path in files:
        if not path.is_file():
            continue
        if path.stat().st_mode & 0o077 and path.suffix == ".toml":
            click.echo(
                f"donjon: warning: {path} is readable by other users; chmod 600 it", err=True
            )
        with path.open("rb") as f:
            data = f.read(MAX_CREDENTIALS_FILE_BYTES + 1)
        found = parse_credentials_file(data, source=str(path)).lookup(registry)
        if found is not None:
            return found
    return None


def _private_key(path: Path) -> PublisherKey:
    pem = _read_file(path, 64 * 1024, "key")
    password = None
    if b"ENCRYPTED" in pem:
        secret = os.environ.get(ENV_KEY_PASSWORD)
        if secret is None and sys.stdin.isatty():
            secret = click.prompt(f"passphrase for {path}", hide_input=True)
        password = secret.encode() if secret is not None else None
    return PublisherKey.from_pem(pem, source=str(path), password=password)


def _public_key(path: Path) -> PublisherPublicKey:
    return PublisherPublicKey.from_pem(
        _read_file(path, _MAX_PUBLIC_KEY_BYTES, "public key"), source=str(path)
    )


def _new_password() -> bytes:
    secret = os.environ.get(ENV_KEY_PASSWORD)
    if secret is None:
        if not sys.stdin.isatty():
            raise UsageError(
                f"--encrypt needs a passphrase: set {ENV_KEY_PASSWORD} or run in a terminal"
            )
        secret = click.prompt("passphrase", hide_input=True, confirmation_prompt=True)
    return secret.encode()


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as e:
        raise UsageError(f"{path} already exists; choose another --out") from e
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror or e}") from e
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _signature_hint(desc: Descriptor) -> dict[str, Any]:
    return {
        "artifact": str(desc.digest),
        "key": desc.annotation(ANNOTATION_SIGNATURE_KEY),
        "verified": False,
    }


def _summary_json(manifest: PackageManifest, *, output: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "digest": str(manifest.digest),
        "manifest_bytes": len(manifest.raw),
        "module": {"digest": str(manifest.module.digest), "size": manifest.module.size},
        "config": {"digest": str(manifest.config.digest), "size": manifest.config.size},
        "annotations": dict(manifest.annotations),
    }
    if output is not None:
        out["layout"] = str(output)
    return out


def _summary_text(summary: Mapping[str, Any]) -> str:
    lines = [str(summary.get("reference") or summary["digest"])]
    lines.append(f"  digest:  {summary['digest']}")
    module, config = summary["module"], summary["config"]
    lines.append(f"  module:  {module['size']} bytes  {module['digest']}")
    lines.append(f"  config:  {config['size']} bytes  {config['digest']}")
    for key, value in summary["annotations"].items():
        lines.append(f"  annotation {key}={value}")
    if "signatures" in summary:
        sigs = summary["signatures"]
        lines.append(
            f"  signatures: {len(sigs)} listed (not verified; use `donjon package verify`)"
        )
        for sig in sigs:
            lines.append(f"    {sig['artifact']}  key {sig['key'] or '(not named)'}")
    return "\n".join(lines)
