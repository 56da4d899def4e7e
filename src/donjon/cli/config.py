"""``donjon config``: write a commented ``Enarx.toml`` template, or check a config file.

Commands parse, call :mod:`donjon.keep.config`, and render. Errors are donjon errors:
``donjon.cli.main.main`` prints them as one line and exits with their ``exit_code``
(3 for an invalid config, 2 for a bad command line).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

import click

from donjon.errors import ConfigError, UsageError
from donjon.keep.config import (
    ConfigFileError,
    FileKind,
    FileSpec,
    Protocol,
    WorkloadConfig,
    config_template,
    load_config,
)

__all__ = ["config"]

_DEFAULT_NAME = "Enarx.toml"


@click.group("config")
def config() -> None:
    """Write or check workload configs (Enarx.toml)."""


@config.command("init")
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
@click.argument("path", required=False, type=click.Path(path_type=Path))
def init(force: bool, path: Path | None) -> None:
    """Write a commented Enarx.toml template to PATH (default: ./Enarx.toml).

    If PATH is a directory, the template is written as Enarx.toml inside it.
    """
    target = Path(_DEFAULT_NAME) if path is None else path
    if target.is_dir():
        target = target / _DEFAULT_NAME
    text = config_template()
    if force:
        _replace(target, text)
    else:
        _create(target, text)
    click.echo(f"wrote {target}; check it with: donjon config check {shlex.quote(str(target))}")


@config.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("file", type=click.Path(path_type=Path))
def check(as_json: bool, file: Path) -> None:
    """Validate FILE and print what it grants.

    Environment variable values are never printed (they may be secrets): only their names.
    Exits 0 when the config is valid, 3 when it is not.
    """
    try:
        cfg = load_config(file)
    except ConfigFileError as e:
        if as_json:
            click.echo(json.dumps(_error_json(e), indent=2))
        raise
    if as_json:
        click.echo(json.dumps(_summary_json(cfg), indent=2))
    else:
        click.echo(_summary_text(cfg))


# -- writing -----------------------------------------------------------------------------------


def _create(target: Path, text: str) -> None:
    try:
        # "x": fail rather than overwrite, atomically, even if the file appears meanwhile.
        with target.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError as e:
        raise UsageError(
            f"{target} already exists; pass --force to overwrite it, or give another PATH"
        ) from e
    except OSError as e:
        raise ConfigError(f"cannot write {target}: {e.strerror or e}") from e


def _replace(target: Path, text: str) -> None:
    # Write beside the target and rename over it, so a crash never leaves half a config.
    directory = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise ConfigError(f"cannot write {target}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {target}: {e.strerror or e}") from e


# -- rendering ---------------------------------------------------------------------------------


def _socket_text(spec: FileSpec) -> str:
    prot = spec.prot.value if spec.prot is not None else "?"
    if spec.kind is FileKind.LISTEN:
        where = f"listen on {_endpoint(spec.addr or '', spec.port or 0)}"
        extra = ", clients must present a certificate (mTLS)" if spec.client_ca else ""
        if spec.max_connections is not None:
            extra += f", at most {spec.max_connections} connections at once"
    else:
        where = f"connect to {_endpoint(spec.host or '', spec.port or 0)}"
        extra = ", server checked against configured anchors" if spec.server_ca else ""
    if spec.prot is Protocol.TCP:
        extra += " (PLAINTEXT: the host can read and alter it)"
    return f"{prot} {where}{extra}"


def _summary_text(cfg: WorkloadConfig) -> str:
    lines = [f"{cfg.source}: valid"]
    lines.append(f"  args:    {shlex.join(cfg.argv())}")
    names = ", ".join(name for name, _ in cfg.env)
    lines.append(f"  env:     {names or '(none)'}" + ("  (values not shown)" if names else ""))
    lines.append(f"  steward: {cfg.steward or '(none: self-signed certificate)'}")
    origin = "" if cfg.files is not None else "  (no [[files]]: ordinary stdio)"
    lines.append(f"  files:{origin}")
    for fd, spec in enumerate(cfg.effective_files()):
        detail = f"  {_socket_text(spec)}" if spec.is_socket else ""
        lines.append(f"    fd {fd:<3} {spec.kind.value:<8} {spec.name}{detail}")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cfg.fd_environment())
    lines.append(f"    {env}")
    lines.append("  dirs:" + ("" if cfg.dirs else "    (none)"))
    for d in cfg.dirs:
        mode = "read-write" if d.writable else "read-only"
        lines.append(f"    {d.guest} <- {d.host}  ({mode}, untrusted host storage)")
    memory = f"{cfg.limits.memory_mib} MiB" if cfg.limits.memory_mib is not None else "no cap"
    timeout = f"{cfg.limits.timeout_s:g} s" if cfg.limits.timeout_s is not None else "none"
    lines.append(f"  limits:  memory {memory}, deadline {timeout}")
    network = ", ".join(f"{key} {value:g}" for key, value in cfg.network.to_dict().items())
    lines.append(f"  network: {network or '(runtime defaults)'}")
    lines.append("  secrets:" + ("" if cfg.secrets else " (none)"))
    for secret in cfg.secrets:
        target = secret.env if secret.file is None else f"/run/secrets/{secret.file} (read-only)"
        lines.append(f"    {target} <- Steward secret {secret.name}  (deployed Keeps only)")
    return "\n".join(lines)


def _summary_json(cfg: WorkloadConfig) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    for fd, spec in enumerate(cfg.effective_files()):
        entry: dict[str, Any] = {"fd": fd, **spec.to_dict()}
        # Trust anchors are long PEM text; say whether they are set, not what they are.
        for key in ("client_ca", "server_ca"):
            if key in entry:
                entry[key] = True
        files.append(entry)
    return {
        "valid": True,
        "file": cfg.source,
        "argv": list(cfg.argv()),
        "env_names": [name for name, _ in cfg.env],
        "steward": cfg.steward,
        "files_default": cfg.files is None,
        "files": files,
        "fd_environment": dict(cfg.fd_environment()),
        "dirs": [{"guest": d.guest, "host": str(d.host), "writable": d.writable} for d in cfg.dirs],
        "limits": {"memory_mib": cfg.limits.memory_mib, "timeout_s": cfg.limits.timeout_s},
        "network": {f.name: getattr(cfg.network, f.name) for f in dataclasses.fields(cfg.network)},
        "secrets": [secret.to_dict() for secret in cfg.secrets],
    }


def _error_json(error: ConfigFileError) -> dict[str, Any]:
    return {
        "valid": False,
        "file": error.file,
        "line": error.line,
        "field": error.field,
        "error": error.problem,
        "message": error.diagnostics(),
    }


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
