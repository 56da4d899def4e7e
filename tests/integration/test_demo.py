"""``donjon demo``, the README's first command, end to end as a user runs it (a subprocess).

It starts Steward and a keep manager, deploys hello to an attested nil Keep, then deploys the
echo server and talks TLS to it as a client that trusts only Steward's CA, then shows a secret
released by Steward to one workload identity only; everything it started must be gone when it
returns.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.deploy_support import child_env, live_processes_mentioning, pin_dev_key

pytestmark = pytest.mark.integration


def test_demo_deploys_hello_and_an_attested_tls_echo_server_then_cleans_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pin_dev_key(monkeypatch, tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "donjon", "demo"],
        capture_output=True,
        env=child_env(TMPDIR=str(scratch)),
        timeout=240,
        check=False,
    )
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 0, err
    assert result.stdout == b"Hello, world!\necho_server: served 1 connections, 31 bytes\n"
    assert "verified via  steward" in err
    assert "platform      nil" in err
    assert "same key      yes: the key the deploy verified" in err
    assert re.search(r"workload      donjon:workload:sha256:[0-9a-f]{64} \(Steward", err)
    assert "echoed        a secret only the Keep may read" in err
    assert ".keep.donjon.invalid" in err  # the client checked the Keep's name on its certificate
    # A secret released to the workload its rule names, refused to the same module with
    # another argument.
    released = re.search(r"released +DEMO_TOKEN=(\S+)", err)
    assert released is not None and len(released.group(1)) >= 16, err
    assert re.search(r"refused +exit 125: secret 'demo-token' is not released to workload", err)
    assert released.group(1) not in result.stdout.decode()  # shown once, by the demo only
    assert "== 7. services stopped" in err and "Traceback" not in err
    # Nothing it started outlives it, and its temporary directory is gone.
    deadline = time.monotonic() + 10
    while live_processes_mentioning(str(scratch)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_processes_mentioning(str(scratch)) == []
    assert list(scratch.iterdir()) == []
