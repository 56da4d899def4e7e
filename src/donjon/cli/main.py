"""The ``donjon`` command group.

Subcommands live in their own modules and are imported only when used, so ``donjon run`` does not
pay for the HTTP stack and ``donjon attest`` does not import wasmtime.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any

import click

from donjon import __version__
from donjon.errors import Error

# name -> (module, attribute, one-line help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("donjon.cli.run", "run", "Run a WebAssembly module in a local Keep."),
    "deploy": ("donjon.cli.deploy", "deploy", "Deploy a workload to an attested Keep on a host."),
    "demo": ("donjon.cli.demo", "demo", "Run the end-to-end demo on this machine."),
    "config": ("donjon.cli.config", "config", "Write or check workload configs (Enarx.toml)."),
    "platform": ("donjon.cli.platform", "platform", "What this machine can run."),
    "attest": ("donjon.cli.attest", "attest", "Verify attestation evidence."),
    "steward": ("donjon.cli.steward", "steward", "Run and manage the Steward attestation service."),
    "host": ("donjon.cli.host", "host", "Run the keep manager on a host."),
    "keep": ("donjon.cli.keep", "keep", "List, inspect and stop Keeps on a host."),
    "package": ("donjon.cli.package", "package", "Build, sign, push and pull workload packages."),
    "workload": ("donjon.cli.workload", "workload", "Print a workload's identity (for Steward)."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _, _) in _COMMANDS.items() if _available(mod))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None or not _available(entry[0]):
            return None
        command = getattr(importlib.import_module(entry[0]), entry[1])
        if not isinstance(command, click.Command):  # pragma: no cover - a wiring bug
            raise TypeError(f"{entry[0]}.{entry[1]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, _COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="donjon")
@click.option("-v", "--verbose", count=True, help="More output on stderr (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """donjon runs WebAssembly workloads in Keeps (hardware TEEs) and proves what runs there."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logger = logging.getLogger("donjon")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("donjon: %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, turning donjon errors into one line and an exit code."""
    try:
        rv = cli.main(args=argv, prog_name="donjon", standalone_mode=False)
    except Error as e:
        click.echo(f"donjon: error: {e.diagnostics()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("donjon: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("donjon: interrupted", err=True)
        sys.exit(130)
    if isinstance(rv, int):
        sys.exit(rv)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
