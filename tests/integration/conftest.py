"""Fixtures for the socket tests (see ``socket_support``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from donjon.keep.executor import KeepRuntime
from donjon.keep.sockets import UnsafeEphemeralTls
from tests.integration.socket_support import Keeps


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
