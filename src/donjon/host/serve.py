"""Run the keep manager: state directory, tokens, reconciliation, and the HTTP server."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from donjon.errors import ConfigError
from donjon.host.app import RelayTap, create_app
from donjon.host.auth import TokenStore
from donjon.host.core import KeepManager
from donjon.host.launcher import ProcessLauncher
from donjon.host.store import KeepStore
from donjon.steward.app import Listening, bind_socket, listening

_logger = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True, slots=True)
class HostSettings:
    host: str
    port: int
    state_dir: Path
    backend: str = "nil"
    spare: bool = True
    """Keep one warm keep loader ready for the next Keep (see :mod:`donjon.host.launcher`)."""


@dataclass(frozen=True, slots=True)
class HostState:
    manager: KeepManager
    tokens: TokenStore
    admin_token_path: Path | None
    attached: tuple[str, ...]
    reaped: tuple[str, ...]
    launcher: ProcessLauncher


def init_host_state(state_dir: Path, *, spare: bool = True) -> HostState:
    """Open (or create) a keep manager's state dir; reconcile Keeps left by a previous run.

    On first start it creates an ``admin`` token and writes it to ``STATE/admin.token`` (0600):
    the token itself is never printed or logged.
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ConfigError(f"cannot create the state directory {state_dir}: {e}") from e
    tokens = TokenStore(state_dir / "tokens")
    admin_path: Path | None = None
    if not (state_dir / "tokens").exists():
        token = tokens.add("admin")
        admin_path = state_dir / ADMIN_TOKEN_FILE
        fd = os.open(admin_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    launcher = ProcessLauncher(spare=spare)
    manager = KeepManager(KeepStore(state_dir), launcher)
    attached, reaped = manager.reconcile()
    return HostState(manager, tokens, admin_path, tuple(attached), tuple(reaped), launcher)


def serve(
    settings: HostSettings,
    *,
    announce: Callable[[Listening, HostState], None] | None = None,
    relay_tap: RelayTap | None = None,
) -> None:
    """Run the keep manager until SIGTERM/SIGINT. Keeps keep running; a restart re-attaches."""
    import uvicorn

    state = init_host_state(settings.state_dir, spare=settings.spare)
    sock = bind_socket(settings.host, settings.port)
    where = listening(sock, tls=False)
    app = create_app(state.manager, state.tokens, relay_tap=relay_tap)
    config: Any = uvicorn.Config(
        app,
        http="h11",
        ws="websockets-sansio",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        ws_max_size=1024 * 1024,
    )
    server = uvicorn.Server(config)
    if announce is not None:
        announce(where, state)
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        state.launcher.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
