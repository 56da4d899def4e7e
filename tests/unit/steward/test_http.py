"""Steward's server plumbing: per-worker sockets, stack selection, the bounded httptools head."""

from __future__ import annotations

import socket

import pytest

from donjon.errors import ConfigError
from donjon.steward._http import (
    MAX_HEAD_BYTES,
    bind_sockets,
    have_module,
    http_protocol,
    loop_name,
    stack_description,
)


def test_one_worker_gets_one_plain_socket() -> None:
    (sock,) = bind_sockets("127.0.0.1", 0, 1)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        assert sock.getsockname()[1] != 0
        assert sock.get_inheritable()
    finally:
        sock.close()


def test_workers_get_their_own_socket_on_one_port() -> None:
    sockets = bind_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(sockets) == 3 and len(ports) == 1 and 0 not in ports
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1 for s in sockets)
        # The kernel hands each new connection to one of them: open a few and see them all land.
        port = ports.pop()
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(24)]
        accepted = []
        for server in sockets:
            server.setblocking(False)
            count = 0
            while True:
                try:
                    conn, _ = server.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
            accepted.append(count)
        assert sum(accepted) == 24
        assert sum(1 for n in accepted if n) >= 2  # all 24 on one of 3: p = 3 / 3**24
        for client in clients:
            client.close()
    finally:
        for s in sockets:
            s.close()


def test_binding_a_taken_port_is_a_config_error() -> None:
    (taken,) = bind_sockets("127.0.0.1", 0, 1)
    try:
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1"):
            bind_sockets("127.0.0.1", taken.getsockname()[1], 2)
    finally:
        taken.close()
    with pytest.raises(ValueError, match="at least 1"):
        bind_sockets("127.0.0.1", 0, 0)


def test_stack_is_the_fastest_installed() -> None:
    protocol = http_protocol()
    if have_module("httptools"):
        assert not isinstance(protocol, str)
        assert protocol.__name__ == "BoundedHttpToolsProtocol"
        assert http_protocol() is protocol  # built once
    else:
        assert protocol == "h11"
    assert loop_name() == ("uvloop" if have_module("uvloop") else "asyncio")
    assert stack_description("h11", "asyncio") == "h11+asyncio"
    assert stack_description(protocol, loop_name()).endswith(loop_name())
    assert not have_module("donjon_no_such_module")
    assert MAX_HEAD_BYTES == 16 * 1024
