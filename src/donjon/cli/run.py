"""``donjon run``: run a WebAssembly module in a local Keep.

The command parses, builds a keep request and hands it to the backend's keep loader; the workload
runs in a separate keep process, never in this one (this process does not even import wasmtime,
which keeps ``donjon run`` fast). Settings: flag > ``DONJON_*`` environment variable > default.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from donjon.backends.nil import NIL_WARNING, NilKeepLoader, take_prestarted
from donjon.cli._args import check_wasi_args
from donjon.errors import BackendUnavailableError, UsageError
from donjon.keep.errors import ModuleFileError

if TYPE_CHECKING:
    from donjon.keep.config import WorkloadConfig

__all__ = ["run"]

_BACKENDS = ("nil", "kvm", "sev-snp", "tdx", "sgx", "cca")  # as in donjon.backends.probe
_RUNNABLE = frozenset({"nil", "kvm"})  # backends this donjon can start a Keep on
_HEADER_BYTES = 8
_LOG_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # by -v count


@click.command(
    "run",
    context_settings={"allow_interspersed_args": False},
    short_help="Run a WebAssembly module in a local Keep.",
)
@click.option(
    "--backend",
    type=click.Choice(_BACKENDS),
    envvar="DONJON_BACKEND",
    help="Where the Keep runs [env: DONJON_BACKEND]. Default: nil, with a warning.",
)
@click.option(
    "--wasmcfgfile",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="DONJON_WASMCFGFILE",
    help="Workload config (Enarx.toml) [env: DONJON_WASMCFGFILE]. Default: stdio only.",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Compile the module afresh; do not read or write the compiled-module cache.",
)
@click.option(
    "--secret",
    "secret_files",
    multiple=True,
    metavar="NAME=FILE",
    help="For trying a workload locally: the value of its [[secrets]] entry NAME, from FILE "
    "(a deployed Keep gets it from Steward instead). Repeatable.",
)
@click.argument("module", type=click.Path(path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context,
    backend: str | None,
    wasmcfgfile: Path | None,
    no_cache: bool,
    secret_files: tuple[str, ...],
    module: Path,
    args: tuple[str, ...],
) -> int:
    """Run MODULE (a WASI preview 1 command .wasm) in a Keep and exit with its exit code.

    Arguments after MODULE (or after --) go to the workload, after the config's args. The
    workload gets nothing but what its config grants: no host environment, files or network.

    \b
    Exit codes: the workload's own (0-125); 2 usage; 3 config; 125 keep failure;
    126 not Wasm; 127 module not found; 128 no _start; 129 missing import;
    134 trap; 137 memory limit or deadline.
    """
    if backend is None:
        backend = "nil"
        click.echo(NIL_WARNING, err=True)
    if backend not in _RUNNABLE:
        raise BackendUnavailableError(
            f"the {backend} backend cannot run workloads with this donjon yet; only nil and kvm "
            "can. Run `donjon platform info` to see which backends this machine supports"
        )
    if args[:1] == ("--",):
        # With interspersed options off, click passes the "--" after MODULE through.
        args = args[1:]
    check_wasi_args(args)
    if backend == "kvm":
        if secret_files:
            raise UsageError(
                "--secret is for the nil backend; a kvm Keep gets no local secret values yet"
            )
        return _run_kvm(wasmcfgfile, module, args)

    # The keep process starts first and loads wasmtime while this process reads the config;
    # if anything below fails, leaving the `with` block cancels it.
    with take_prestarted() or NilKeepLoader().start() as keep:
        # Imported here, not at the top: `donjon run --help` stays instant.
        from donjon.keep.config import WorkloadConfig, load_config
        from donjon.keep.request import KeepRequest

        config = load_config(wasmcfgfile) if wasmcfgfile is not None else WorkloadConfig()
        _check_module(module)
        secrets = _local_secrets(secret_files, config)
        verbose = (ctx.obj or {}).get("verbose", 0)
        request = KeepRequest(
            module=module.absolute(),
            program=module.name,
            args=args,
            config=config,
            cache_dir=None if no_cache else _cache_dir(),
            progress=sys.stderr.isatty(),
            log_level=_LOG_LEVELS[min(verbose, 2)],
            secrets=secrets,
        )
        keep.send(request.encode())
        return keep.wait()


def _local_secrets(given: tuple[str, ...], config: WorkloadConfig) -> dict[str, bytes]:
    """``--secret NAME=FILE`` values, each for a ``[[secrets]]`` entry of *config*."""
    from donjon.keep.request import MAX_SECRET_VALUE_BYTES

    wanted = {s.name for s in config.secrets}
    out: dict[str, bytes] = {}
    for item in given:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise UsageError(f"--secret {item!r}: write NAME=FILE")
        if name not in wanted:
            listed = ", ".join(sorted(wanted)) or "none"
            raise UsageError(
                f"--secret {name}: the config has no [[secrets]] entry {name!r} (it has: {listed})"
            )
        try:
            with open(file, "rb") as f:
                value = f.read(MAX_SECRET_VALUE_BYTES + 1)
        except OSError as e:
            raise UsageError(f"--secret {name}: cannot read {file}: {e.strerror}") from e
        if len(value) > MAX_SECRET_VALUE_BYTES:
            raise UsageError(f"--secret {name}: {file} is over {MAX_SECRET_VALUE_BYTES} bytes")
        out[name] = value
        click.echo(
            f"donjon: secret {name} from {file} (a local run: no Steward released it, and "
            "nil protects nothing)",
            err=True,
        )
    return out


def _run_kvm(wasmcfgfile: Path | None, module: Path, args: tuple[str, ...]) -> int:
    """Run in a QEMU micro-VM: the config and module are read here, then the VM boots.

    Unlike nil, nothing is started before the config is checked: a VM costs seconds, and a
    config that the kvm backend refuses (sockets, [[dirs]]) should not cost them.
    """
    import hashlib

    from donjon.backends.kvm.launcher import KVM_WARNING, TCG_NOTICE, KvmKeepLoader, memory_for
    from donjon.backends.kvm.qemu import Accel
    from donjon.keep.config import FileKind, WorkloadConfig, load_config
    from donjon.keep.errors import UnsupportedConfigError
    from donjon.keep.module import read_module_file
    from donjon.keep.vmguest import kvm_config_problem
    from donjon.wire.frames import MAX_MODULE_BYTES, WorkloadFrame, encode_frame

    config = load_config(wasmcfgfile) if wasmcfgfile is not None else WorkloadConfig()
    problem = kvm_config_problem(config)
    if problem is not None:
        raise UnsupportedConfigError(problem)
    _check_module(module)
    wasm = read_module_file(module, max_bytes=MAX_MODULE_BYTES)
    request = encode_frame(
        WorkloadFrame(
            config=config.to_dict(),
            module=wasm,
            module_sha256=hashlib.sha256(wasm).digest(),
            program=module.name,
            args=args,
        )
    )
    loader = KvmKeepLoader(
        memory_mib=memory_for(len(wasm), config.limits.memory_mib),
        forward_stdin=any(f.kind is FileKind.STDIN for f in config.effective_files()),
        timeout_s=config.limits.timeout_s,
        on_notice=lambda line: click.echo(line, err=True),
    )
    click.echo(KVM_WARNING, err=True)
    if loader.accel is Accel.TCG:
        click.echo(TCG_NOTICE, err=True)
    return loader.run(request)


def _check_module(path: Path) -> None:
    """Catch a missing or non-Wasm module here, before a keep process is started for it."""
    from donjon.keep.module import check_module_header

    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ModuleFileError(f"{path} is a directory; give the path of a .wasm file")
        if not stat.S_ISREG(info.st_mode):
            return  # a pipe or device: reading its header here would eat it; the keep checks
        with path.open("rb") as f:
            header = f.read(_HEADER_BYTES)
    except FileNotFoundError as e:
        raise ModuleFileError(f"{path} does not exist; check the module path") from e
    except OSError as e:
        raise ModuleFileError(f"{path} cannot be read: {e.strerror or e}") from e
    check_module_header(header, path.name)


def _cache_dir() -> Path:
    override = os.environ.get("DONJON_CACHE_DIR")
    if override:
        return Path(override)
    from donjon.keep.cache import default_cache_dir

    return default_cache_dir(os.environ)
