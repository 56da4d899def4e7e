from __future__ import annotations

import socket
from pathlib import Path

from donjon._unixpath import MAX_SUN_PATH_BYTES, unix_socket_path


def test_sockets_bind_and_connect_at_paths_longer_than_sun_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "keep.sock"
    assert len(str(path)) > MAX_SUN_PATH_BYTES
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with unix_socket_path(path) as short:
        assert len(short) <= MAX_SUN_PATH_BYTES
        server.bind(short)
    server.listen(1)
    assert path.exists()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with unix_socket_path(path) as short:
        client.connect(short)
    conn, _ = server.accept()
    client.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    for s in (conn, client, server):
        s.close()


def test_short_paths_are_used_as_they_are(tmp_path: Path) -> None:
    with unix_socket_path(Path("/tmp/x.sock")) as short:
        assert short == "/tmp/x.sock"
