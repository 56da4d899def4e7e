"""The socket package's public names, and what plan.py hands the socket layer."""

from __future__ import annotations

import subprocess
import sys

import pytest

import donjon.keep.sockets as sockets
from donjon.keep.config import FileKind, Protocol, parse_config
from donjon.keep.plan import Invocation


def test_all_names_resolve_and_nothing_else_is_exported() -> None:
    assert sorted(sockets.__all__) == sorted(set(sockets.__all__))
    for name in sockets.__all__:
        assert getattr(sockets, name) is not None
    with pytest.raises(AttributeError):
        sockets.NotAThing  # noqa: B018


def test_importing_the_package_does_not_load_cryptography() -> None:
    code = (
        "import sys, donjon.keep.sockets, donjon.keep.executor;print('cryptography' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert out.stdout == b"False\n"


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        sockets.SocketLimits(max_connections=0)
    with pytest.raises(ValueError, match="handshake_timeout_s"):
        sockets.SocketLimits(handshake_timeout_s=0)
    assert sockets.SocketLimits().max_connections == sockets.MAX_CONNECTIONS_PER_LISTENER


def test_socket_layouts_keep_enarx_numbering() -> None:
    config = parse_config(
        '[[files]]\nkind = "null"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
        '[[files]]\nkind = "listen"\nname = "api"\nport = 8443\n'
        '[[files]]\nkind = "connect"\nname = "db"\nhost = "db.example"\nprot = "tcp"\n'
        '[[dirs]]\nhost = "/tmp"\nguest = "/tmp"\n'
    )
    invocation = Invocation.from_config(config, program="x.wasm")
    assert invocation.fds == config.effective_files()
    assert [kind.value for kind in invocation.stdio] == ["null", "stdout", "stderr"]
    assert invocation.preopen_base == 5
    assert [fd for fd, _ in invocation.sockets] == [3, 4]
    assert invocation.uses_tls
    assert dict(invocation.env)["FD_NAMES"] == "null:stdout:stderr:api:db"
    tcp_only = parse_config('[[files]]\nkind = "listen"\nname = "l"\nprot = "tcp"\nport = 0\n')
    tcp = Invocation.from_config(tcp_only, program="x.wasm")
    assert not tcp.uses_tls and tcp.preopen_base == 3
    assert tcp.fds is not None and tcp.fds[0].kind is FileKind.LISTEN
    assert tcp.fds[0].prot is Protocol.TCP and tcp.fds[0].port == 0
    plain = Invocation.from_config(parse_config(""), program="x.wasm")
    assert plain.fds is None and plain.sockets == () and not plain.uses_tls


def test_listen_port_zero_is_any_port_but_connect_port_zero_is_refused() -> None:
    from donjon.keep.config import ConfigFileError

    two = parse_config(
        '[[files]]\nkind = "listen"\nname = "a"\nport = 0\n'
        '[[files]]\nkind = "listen"\nname = "b"\nport = 0\n'
    )
    assert [f.port for f in two.effective_files()] == [0, 0]  # never "already listens"
    with pytest.raises(ConfigFileError, match=r"out of range; use a port in 1\.\.65535"):
        parse_config('[[files]]\nkind = "connect"\nhost = "h.example"\nport = 0\n')
