"""The kvm guest agent's host-side parts: the config it refuses, its refusal to run as anything
but a VM's PID 1, and the import trace the image is built from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from donjon.keep.config import parse_config
from donjon.keep.vmguest import kvm_config_problem


def test_stdio_limits_args_and_env_are_fine() -> None:
    config = parse_config(
        'args = ["-x"]\n[env]\nA = "1"\n[limits]\ntimeout_s = 2.0\nmemory_mib = 64\n'
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "null"\n'
    )
    assert kvm_config_problem(config) is None
    assert kvm_config_problem(parse_config("")) is None


def test_sockets_are_refused_with_their_names() -> None:
    config = parse_config(
        '[[files]]\nkind = "stdin"\n'
        '[[files]]\nkind = "listen"\nname = "web"\nport = 8443\nprot = "tls"\n'
    )
    problem = kvm_config_problem(config)
    assert problem is not None
    assert '"web" (listen)' in problem and "--backend nil" in problem


def test_dirs_are_refused_with_their_guest_paths(tmp_path: Path) -> None:
    config = parse_config(f'[[dirs]]\nhost = "{tmp_path}"\nguest = "/data"\n', base_dir=tmp_path)
    problem = kvm_config_problem(config)
    assert problem is not None and "[[dirs]] /data" in problem


def test_it_never_runs_outside_a_vm() -> None:
    """As PID 1 it powers the machine off at the end: anywhere else it must refuse to start."""
    result = subprocess.run(
        [sys.executable, "-m", "donjon.keep.vmguest"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "donjon: error: donjon.keep.vmguest is the init program of a kvm Keep's VM and runs "
        "only as PID 1 there (`--trace` lists its imports)\n"
    )


def test_the_trace_lists_what_the_guest_imports() -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-s", "-B", "-m", "donjon.keep.vmguest", "--trace"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[3] / "src",
        env={"PYTHONPATH": os.pathsep.join(p for p in sys.path if os.path.isabs(p))},
    )
    trace = json.loads(result.stdout)
    files = {Path(f).as_posix() for f in trace["files"]}
    stdlib = Path(trace["stdlib"])
    assert stdlib == Path(os.__file__).parent

    def has(suffix: str) -> bool:
        return any(f.endswith(suffix) for f in files)

    for needed in (
        "donjon/keep/vmguest.py",
        "donjon/keep/process.py",  # the keep process the agent starts
        "donjon/keep/executor.py",
        "donjon/backends/kvm/channel.py",
        "donjon/wire/frames.py",
        "wasmtime/__init__.py",
        "cbor2/__init__.py",
        "/runpy.py",  # `python -m`
        "/subprocess.py",
        "/traceback.py",
    ):
        assert has(needed), needed
    for absent in ("cryptography", "donjon/keep/sockets", "donjon/cli", "/ssl.py", "click"):
        assert not any(absent in f for f in files), absent
