from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from donjon.cli.entry import _plain_nil_run

DONJON = Path(sys.executable).with_name("donjon")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "x.wasm"], True),
        (["run", "--backend", "nil", "x.wasm"], True),
        (["run", "--backend=nil", "x.wasm", "--", "--help"], True),
        (["run", "--backend", "sgx", "x.wasm"], False),
        (["run", "--help"], False),
        (["-v", "run", "x.wasm"], False),
        (["deploy", "x.wasm"], False),
        ([], False),
    ],
)
def test_only_a_plain_nil_run_prestarts(argv: list[str], expected: bool) -> None:
    assert _plain_nil_run(argv) is expected


def _keep_processes() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum("donjon.keep.process" in line for line in out.splitlines())


def test_a_run_that_fails_early_leaves_no_keep_process(tmp_path: Path) -> None:
    before = _keep_processes()
    done = subprocess.run(
        [str(DONJON), "run", str(tmp_path / "missing.wasm")], capture_output=True, text=True
    )
    assert done.returncode == 127
    assert done.stderr.count("donjon: error:") == 1
    time.sleep(0.2)
    assert _keep_processes() <= before
