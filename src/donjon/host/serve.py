"""Run the keep manager: state directory, tokens, reconciliation, and the HTTP server."""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from donjon.errors import ConfigError
from donjon.host.app import RelayTap, create_app
from donjon.host.auth import TokenStore
from donjon.host.core import KeepManager
from donjon.host.launcher import ProcessLauncher
from donjon.host.pool import DEFAULT_SPARES
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
    spares: int = DEFAULT_SPARES
    """Warm spare keep loaders kept ready for the next Keeps, 0..16 (see
    :mod:`donjon.host.launcher`); each idle one costs ~77 MiB RSS."""


@dataclass(frozen=True, slots=True)
class HostState:
    manager: KeepManager
    tokens: TokenStore
    admin_token_path: Path | None
    attached: tuple[str, ...]
    reaped: tuple[str, ...]
    launcher: ProcessLauncher


def init_host_state(state_dir: Path, *, spares: int = DEFAULT_SPARES) -> HostState:
    """Open (or create) a keep manager's state dir; reconcile Keeps left by a previous run.

    On first start it creates an ``admin`` token and writes it to ``STATE/admin.token`` (0600):
    the token itself is never printed or logged. The launcher starts warming up *spares* spare
    keep loaders in the background; reconciling never adopts a spare of an earlier run (those
    ended with it).

    Raises:
        ConfigError: the state directory cannot be used, or *spares* is out of range.
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
    launcher = ProcessLauncher(spares=spares)
    try:
        manager = KeepManager(KeepStore(state_dir), launcher)
        attached, reaped = manager.reconcile()
    except BaseException:
        launcher.close()  # its spares must not outlive a start that failed
        raise
    return HostState(manager, tokens, admin_path, tuple(attached), tuple(reaped), launcher)


def serve(
    settings: HostSettings,
    *,
    announce: Callable[[Listening, HostState], None] | None = None,
    relay_tap: RelayTap | None = None,
) -> None:
    """Run the keep manager until SIGTERM/SIGINT. Keeps keep running; a restart re-attaches.

    The warm spares (``settings.spares``) end when it returns, however it returns.
    """
    state = init_host_state(settings.state_dir, spares=settings.spares)
    try:
        sock = bind_socket(settings.host, settings.port)
        try:
            _run(state, sock, announce, relay_tap)
        finally:
            sock.close()
    finally:
        state.launcher.close()  # the spares end; the Keeps keep running


def _run(
    state: HostState,
    sock: socket.socket,
    announce: Callable[[Listening, HostState], None] | None,
    relay_tap: RelayTap | None,
) -> None:
    import uvicorn

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
        for s, handler in previous.items():
            signal.signal(s, handler)
