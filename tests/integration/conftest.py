"""Fixtures shared by the integration tests: the socket tests' (see ``socket_support``) and the
deploy tests' (a pinned nil development key, a keep manager whose relay is recorded)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from donjon.keep.executor import KeepRuntime
from donjon.keep.sockets import UnsafeEphemeralTls
from tests.integration.deploy_support import (
    ManagerHandle,
    RelayRecorder,
    pin_dev_key,
    running_manager,
)
from tests.integration.socket_support import Keeps


@pytest.fixture
def dev_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A nil development key of the test's own, pinned for every Keep it starts."""
    return pin_dev_key(monkeypatch, tmp_path)


@pytest.fixture
def recorder() -> RelayRecorder:
    """Every chunk the keep manager's relay carries in the test (see ``host``)."""
    return RelayRecorder()


@pytest.fixture
def host(tmp_path: Path, recorder: RelayRecorder) -> Iterator[ManagerHandle]:
    """A keep manager served in this process, its relay recorded by ``recorder``."""
    with running_manager(tmp_path / "host", relay_tap=recorder) as handle:
        yield handle


@pytest.fixture(scope="module")
def runtime() -> Iterator[KeepRuntime]:
    with KeepRuntime() as rt:
        yield rt


@pytest.fixture(scope="module")
def keep_tls() -> UnsafeEphemeralTls:
    return UnsafeEphemeralTls.generate(now=datetime.now(UTC))


@pytest.fixture
def keeps(
    runtime: KeepRuntime, examples_dir: Path, keep_tls: UnsafeEphemeralTls
) -> Iterator[Keeps]:
    pool = Keeps(runtime, examples_dir, keep_tls)
    yield pool
    for keep in pool.started:
        keep.stop.set()
        keep.thread.join(10)
