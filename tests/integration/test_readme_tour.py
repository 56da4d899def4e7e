"""The README's quick tour runs as written (the local part: no services started).

Each command of the tour's first block, up to the services, is run through bash in a scratch
directory laid out like a checkout (``build/`` and ``../shared`` where the README expects them).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _tour_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## A quick tour", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if "steward serve" in line:  # the rest of the tour starts services
            break
        commands.append(line)
    return commands


def test_the_tour_has_the_local_commands() -> None:
    commands = _tour_commands()
    assert any(c.startswith("donjon run") for c in commands)
    assert any("attest verify" in c for c in commands)


@pytest.mark.parametrize("command", _tour_commands())
def test_tour_command_runs(command: str, tmp_path: Path, vectors_dir: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "build").symlink_to(REPO / "build")
    (tmp_path / "shared").symlink_to(vectors_dir.parent)
    if "Enarx.toml" in command and "config init" not in command:
        subprocess.run(
            [REPO / ".venv/bin/donjon", "config", "init"], cwd=work, check=True, capture_output=True
        )
    env = {
        "PATH": f"{REPO / '.venv/bin'}:{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        ["bash", "-c", command], cwd=work, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    assert b"Traceback" not in done.stderr
