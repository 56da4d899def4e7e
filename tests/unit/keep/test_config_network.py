"""Socket limits from the workload config: ``[network]`` and a listener's ``max_connections``.

Parsing (every key, every bound, wrong types, unknown keys, located messages), the plain-data
round trip along the two real transports (the deploy frame, the keep process request), the
template, and how :class:`Invocation` puts the config's values over the caller's limits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.keep.config import (
    MAX_BUFFER_KIB,
    MAX_HANDSHAKES_IN_PROGRESS,
    MAX_LISTENER_CONNECTIONS,
    MAX_SOCKET_TIMEOUT_S,
    MIN_BUFFER_KIB,
    ConfigFileError,
    FileKind,
    FileSpec,
    NetworkLimits,
    Protocol,
    WorkloadConfig,
    config_template,
    parse_config,
)
from donjon.keep.plan import Invocation
from donjon.keep.request import KeepRequest
from donjon.keep.sockets import network as sockets_network
from donjon.keep.sockets.network import SocketLimits
from donjon.wire import cbor
from donjon.wire.frames import FrameDecoder, WorkloadFrame, encode_frame

LISTEN = '[[files]]\nkind = "listen"\nname = "api"\nport = 0\n'
TIMEOUT_KEYS = ("handshake_timeout_s", "connect_timeout_s", "send_stall_timeout_s")
ALL_KEYS = ("max_connections", "max_pending_handshakes", *TIMEOUT_KEYS, "buffer_kib")


def error_of(text: str) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as info:
        parse_config(text)
    return info.value


# -- parsing: what is accepted -------------------------------------------------------------------


def test_no_network_section_sets_nothing() -> None:
    cfg = parse_config(LISTEN)
    assert cfg.network == NetworkLimits()
    assert cfg.files is not None and cfg.files[0].max_connections is None
    assert "network" not in cfg.to_dict()
    assert "max_connections" not in cfg.to_dict()["files"][0]


def test_every_network_key() -> None:
    cfg = parse_config(
        "[network]\n"
        "max_connections = 100\n"
        "max_pending_handshakes = 8\n"
        "handshake_timeout_s = 2.5\n"
        "connect_timeout_s = 3\n"
        "send_stall_timeout_s = 0.25\n"
        "buffer_kib = 64\n"
    )
    assert cfg.network == NetworkLimits(
        max_connections=100,
        max_pending_handshakes=8,
        handshake_timeout_s=2.5,
        connect_timeout_s=3.0,
        send_stall_timeout_s=0.25,
        buffer_kib=64,
    )
    # An integer number of seconds is a number of seconds: kept as a float, like timeout_s.
    assert isinstance(cfg.network.connect_timeout_s, float)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_connections", 1),
        ("max_connections", MAX_LISTENER_CONNECTIONS),
        ("max_pending_handshakes", 1),
        ("max_pending_handshakes", MAX_HANDSHAKES_IN_PROGRESS),
        ("buffer_kib", MIN_BUFFER_KIB),
        ("buffer_kib", MAX_BUFFER_KIB),
        *((key, 0.001) for key in TIMEOUT_KEYS),
        *((key, MAX_SOCKET_TIMEOUT_S) for key in TIMEOUT_KEYS),
    ],
)
def test_network_bounds_are_inclusive(key: str, value: float) -> None:
    cfg = parse_config(f"[network]\n{key} = {value!r}\n")
    assert getattr(cfg.network, key) == value
    others = [getattr(cfg.network, k) for k in ALL_KEYS if k != key]
    assert others == [None] * (len(ALL_KEYS) - 1)


def test_bounds_are_what_the_docs_say() -> None:
    assert (MAX_LISTENER_CONNECTIONS, MAX_HANDSHAKES_IN_PROGRESS) == (65536, 4096)
    assert (MIN_BUFFER_KIB, MAX_BUFFER_KIB, MAX_SOCKET_TIMEOUT_S) == (4, 16384, 3600.0)
    # The smallest buffer the config allows is one the runtime accepts (SocketLimits >= 4096).
    SocketLimits(buffer_bytes=MIN_BUFFER_KIB * 1024)


def test_a_listener_sets_its_own_max_connections() -> None:
    cfg = parse_config(
        "[network]\nmax_connections = 50\n"
        + LISTEN
        + "max_connections = 2\n"
        + '[[files]]\nkind = "listen"\nname = "other"\nport = 0\nprot = "tcp"\n'
        + "max_connections = 65536\n"
        + '[[files]]\nkind = "listen"\nname = "third"\nport = 0\n'
    )
    assert cfg.files is not None
    assert [f.max_connections for f in cfg.files] == [2, 65536, None]
    assert cfg.network.max_connections == 50
    assert cfg.files[0] == FileSpec(
        FileKind.LISTEN, "api", prot=Protocol.TLS, addr="::", port=0, max_connections=2
    )


# -- parsing: what is refused, and where ---------------------------------------------------------

INVALID: list[tuple[str, str, int, str, str]] = [
    # id, text, line, field, the whole problem
    (
        "network-not-a-table",
        'args = []\nnetwork = "fast"\n',
        2,
        "network",
        "must be a table ([network]), got a string",
    ),
    (
        "network-array-of-tables",
        "[[network]]\nbuffer_kib = 8\n",
        1,
        "network",
        "must be a table ([network]), got an array",
    ),
    (
        "network-typo",
        "[network]\nmax_connection = 5\n",
        2,
        "network.max_connection",
        'unknown key; did you mean "max_connections"? allowed here: max_connections, '
        "max_pending_handshakes, handshake_timeout_s, connect_timeout_s, send_stall_timeout_s, "
        "buffer_kib",
    ),
    (
        "network-buffer-bytes",
        "[network]\n\nbuffer_bytes = 4096\n",
        3,
        "network.buffer_bytes",
        'unknown key; did you mean "buffer_kib"? allowed here: max_connections, '
        "max_pending_handshakes, handshake_timeout_s, connect_timeout_s, send_stall_timeout_s, "
        "buffer_kib",
    ),
    (
        "network-memory-key",
        "[network]\nmemory_mib = 5\n",
        2,
        "network.memory_mib",
        "unknown key; allowed here: max_connections, max_pending_handshakes, "
        "handshake_timeout_s, connect_timeout_s, send_stall_timeout_s, buffer_kib",
    ),
    (
        "connections-zero",
        "[network]\nmax_connections = 0\n",
        2,
        "network.max_connections",
        "0 is out of range; use 1..65536 (connections open at once per listener)",
    ),
    (
        "connections-too-many",
        "[network]\nmax_connections = 65537\n",
        2,
        "network.max_connections",
        "65537 is out of range; use 1..65536 (connections open at once per listener)",
    ),
    (
        "connections-negative",
        "[network]\nmax_connections = -1\n",
        2,
        "network.max_connections",
        "-1 is out of range; use 1..65536 (connections open at once per listener)",
    ),
    (
        "connections-float",
        "[network]\nmax_connections = 2.0\n",
        2,
        "network.max_connections",
        "must be an integer number of connections, got a number",
    ),
    (
        "connections-bool",
        "[network]\nmax_connections = true\n",
        2,
        "network.max_connections",
        "must be an integer number of connections, got a boolean",
    ),
    (
        "connections-string",
        '[network]\nmax_connections = "10"\n',
        2,
        "network.max_connections",
        "must be an integer number of connections, got a string",
    ),
    (
        "handshakes-zero",
        "[network]\nmax_pending_handshakes = 0\n",
        2,
        "network.max_pending_handshakes",
        "0 is out of range; use 1..4096 (TLS handshakes in progress per listener)",
    ),
    (
        "handshakes-too-many",
        "[network]\nmax_pending_handshakes = 4097\n",
        2,
        "network.max_pending_handshakes",
        "4097 is out of range; use 1..4096 (TLS handshakes in progress per listener)",
    ),
    (
        "handshakes-array",
        "[network]\nmax_pending_handshakes = [1]\n",
        2,
        "network.max_pending_handshakes",
        "must be an integer number of handshakes, got an array",
    ),
    (
        "buffer-too-small",
        "[network]\nbuffer_kib = 3\n",
        2,
        "network.buffer_kib",
        "3 is out of range; use 4..16384 (KiB per socket buffer: 4 KiB to 16 MiB)",
    ),
    (
        "buffer-too-large",
        "[network]\nbuffer_kib = 16385\n",
        2,
        "network.buffer_kib",
        "16385 is out of range; use 4..16384 (KiB per socket buffer: 4 KiB to 16 MiB)",
    ),
    (
        "buffer-string",
        '[network]\nbuffer_kib = "256K"\n',
        2,
        "network.buffer_kib",
        "must be an integer number of KiB, got a string",
    ),
    (
        "buffer-table",
        "[network.buffer_kib]\nsend = 4\n",
        1,
        "network.buffer_kib",
        "must be an integer number of KiB, got a table",
    ),
    *(
        (
            f"{key}-zero",
            f"[network]\n{key} = 0\n",
            2,
            f"network.{key}",
            "0 is out of range; use a number of seconds > 0 and at most 3600 (one hour)",
        )
        for key in TIMEOUT_KEYS
    ),
    *(
        (
            f"{key}-too-long",
            f"[network]\n{key} = 3600.5\n",
            2,
            f"network.{key}",
            "3600.5 is out of range; use a number of seconds > 0 and at most 3600 (one hour)",
        )
        for key in TIMEOUT_KEYS
    ),
    (
        "handshake-timeout-negative",
        "[network]\nhandshake_timeout_s = -1\n",
        2,
        "network.handshake_timeout_s",
        "-1 is out of range; use a number of seconds > 0 and at most 3600 (one hour)",
    ),
    (
        "connect-timeout-inf",
        "[network]\nconnect_timeout_s = inf\n",
        2,
        "network.connect_timeout_s",
        "inf is out of range; use a number of seconds > 0 and at most 3600 (one hour)",
    ),
    (
        "send-stall-nan",
        "[network]\nsend_stall_timeout_s = nan\n",
        2,
        "network.send_stall_timeout_s",
        "nan is out of range; use a number of seconds > 0 and at most 3600 (one hour)",
    ),
    (
        "send-stall-string",
        '[network]\nsend_stall_timeout_s = "60s"\n',
        2,
        "network.send_stall_timeout_s",
        "must be a number of seconds, got a string",
    ),
    (
        "handshake-timeout-bool",
        "[network]\nhandshake_timeout_s = false\n",
        2,
        "network.handshake_timeout_s",
        "must be a number of seconds, got a boolean",
    ),
    (
        "connect-timeout-date",
        "[network]\nconnect_timeout_s = 1979-05-27\n",
        2,
        "network.connect_timeout_s",
        "must be a number of seconds, got a date",
    ),
    (
        "listener-zero",
        LISTEN + "\nmax_connections = 0\n",
        6,
        "files[0].max_connections",
        "0 is out of range; use 1..65536 (connections open at once per listener)",
    ),
    (
        "listener-string",
        'args = []\n[[files]]\nkind = "null"\n' + LISTEN + 'max_connections = "2"\n',
        8,
        "files[1].max_connections",
        "must be an integer number of connections, got a string",
    ),
    (
        "listener-too-many",
        LISTEN + "max_connections = 100000\n",
        5,
        "files[0].max_connections",
        "100000 is out of range; use 1..65536 (connections open at once per listener)",
    ),
    (
        "connect-has-no-max-connections",
        '[[files]]\nkind = "connect"\nhost = "db.example"\nmax_connections = 2\n',
        4,
        "files[0].max_connections",
        'is not allowed for kind = "connect"; only for kind = "listen"',
    ),
    (
        "stdout-has-no-max-connections",
        '[[files]]\nkind = "stdout"\nmax_connections = 2\n',
        3,
        "files[0].max_connections",
        'is not allowed for kind = "stdout"; only for kind = "listen"',
    ),
    (
        "listener-network-key",
        LISTEN + "buffer_kib = 8\n",
        5,
        "files[0].buffer_kib",
        "unknown key; allowed here: kind, name, prot, addr, port, client_ca, max_connections, "
        "host, server_ca",
    ),
    (
        "top-level-typo",
        "[netwrok]\nbuffer_kib = 8\n",
        1,
        "netwrok",
        'unknown key; did you mean "network"? allowed here: args, env, steward, files, dirs, '
        "limits, network, secrets",
    ),
    (
        "network-key-at-top-level",
        "max_connections = 8\n",
        1,
        "max_connections",
        "unknown key; allowed here: args, env, steward, files, dirs, limits, network, secrets",
    ),
    (
        "network-key-in-limits",
        "[limits]\nhandshake_timeout_s = 1\n",
        2,
        "limits.handshake_timeout_s",
        'unknown key; did you mean "timeout_s"? allowed here: memory_mib, timeout_s',
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_network_config_names_file_line_and_field(
    text: str, line: int, field: str, problem: str
) -> None:
    error = error_of(text)
    assert (error.file, error.line, error.field, error.problem) == (
        "Enarx.toml",
        line,
        field,
        problem,
    )
    assert str(error) == f"Enarx.toml:{line}: {field}: {problem}"


def test_the_first_bad_key_in_file_order_is_reported() -> None:
    error = error_of("[network]\nbuffer_kib = 64\nsend_stall_timeout_s = 0\nmax_connections = 0\n")
    assert (error.line, error.field) == (3, "network.send_stall_timeout_s")


def test_the_source_name_is_the_file_in_messages() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config("\n[network]\nbuffer_kib = 1\n", source="svc/Enarx.toml")
    assert str(info.value).startswith("svc/Enarx.toml:3: network.buffer_kib: 1 is out of range")


# -- plain data: to_dict / from_dict, along the real transports ----------------------------------

_seconds = st.floats(min_value=0.001, max_value=MAX_SOCKET_TIMEOUT_S, allow_nan=False)
_network = st.builds(
    NetworkLimits,
    max_connections=st.none() | st.integers(1, MAX_LISTENER_CONNECTIONS),
    max_pending_handshakes=st.none() | st.integers(1, MAX_HANDSHAKES_IN_PROGRESS),
    handshake_timeout_s=st.none() | _seconds,
    connect_timeout_s=st.none() | _seconds,
    send_stall_timeout_s=st.none() | _seconds,
    buffer_kib=st.none() | st.integers(MIN_BUFFER_KIB, MAX_BUFFER_KIB),
)
_listeners = st.lists(
    st.none() | st.integers(1, MAX_LISTENER_CONNECTIONS), min_size=0, max_size=3
).map(
    lambda limits: tuple(
        FileSpec(
            FileKind.LISTEN,
            f"l{i}",
            prot=Protocol.TLS,
            addr="127.0.0.1",
            port=0,
            max_connections=limit,
        )
        for i, limit in enumerate(limits)
    )
)


@settings(max_examples=150, deadline=None)
@given(_network, _listeners)
def test_round_trip_through_plain_data_and_cbor(
    network: NetworkLimits, files: tuple[FileSpec, ...]
) -> None:
    cfg = WorkloadConfig(files=files, network=network, source="Enarx.toml")
    data = cfg.to_dict()
    assert ("network" in data) == (network != NetworkLimits())
    assert WorkloadConfig.from_dict(data) == cfg
    assert WorkloadConfig.from_dict(cbor.decode(cbor.encode(data))) == cfg


def test_round_trip_from_toml_through_the_deploy_frame_and_the_keep_request() -> None:
    cfg = parse_config(
        "[network]\nmax_pending_handshakes = 3\nconnect_timeout_s = 2\nbuffer_kib = 16\n"
        + LISTEN
        + "max_connections = 7\n"
    )
    assert cfg.to_dict()["network"] == {
        "max_pending_handshakes": 3,
        "connect_timeout_s": 2.0,
        "buffer_kib": 16,
    }
    assert cfg.to_dict()["files"][0]["max_connections"] == 7

    # `donjon deploy`: the client sends to_dict() in the workload frame; the Keep parses it.
    module = b"\0asm\1\0\0\0"
    frame = WorkloadFrame(
        config=cfg.to_dict(), module=module, module_sha256=hashlib.sha256(module).digest()
    )
    decoder = FrameDecoder()
    decoder.feed(encode_frame(frame))
    received = decoder.next_frame()
    assert isinstance(received, WorkloadFrame)
    assert WorkloadConfig.from_dict(received.config) == cfg

    # `donjon run`: the loader hands the keep process a KeepRequest.
    request = KeepRequest(module=Path("/w/x.wasm"), program="x.wasm", config=cfg)
    assert KeepRequest.decode(request.encode()).config == cfg


@pytest.mark.parametrize(
    ("network", "field", "problem"),
    [
        (5, "network", "must be a table ([network]), got an integer"),
        ([], "network", "must be a table ([network]), got an array"),
        ({"buffer_bytes": 4096}, "network.buffer_bytes", "unknown key"),
        ({"max_connections": 0}, "network.max_connections", "0 is out of range"),
        ({"handshake_timeout_s": "1"}, "network.handshake_timeout_s", "number of seconds"),
        ({"buffer_kib": 1.5}, "network.buffer_kib", "integer number of KiB"),
        ({"connect_timeout_s": None}, "network.connect_timeout_s", "nothing (null)"),
    ],
)
def test_from_dict_validates_network_as_hostile_input(
    network: object, field: str, problem: str
) -> None:
    with pytest.raises(ConfigFileError) as info:
        WorkloadConfig.from_dict({"version": 1, "network": network})
    assert (info.value.line, info.value.field) == (None, field)
    assert problem in info.value.problem


def test_from_dict_validates_a_listeners_max_connections() -> None:
    entry = {"kind": "listen", "name": "a", "port": 0, "max_connections": 70000}
    with pytest.raises(ConfigFileError) as info:
        WorkloadConfig.from_dict({"version": 1, "files": [entry]})
    assert (info.value.line, info.value.field) == (None, "files[0].max_connections")


_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(_plain, st.dictionaries(st.sampled_from([*ALL_KEYS, "buffer_bytes"]), _plain)),
    st.one_of(st.none(), _plain),
)
def test_from_dict_hostile_network_data_only_raises_config_error(
    network: Any, listener_limit: Any
) -> None:
    entry: dict[str, Any] = {"kind": "listen", "name": "a", "port": 0}
    if listener_limit is not None:
        entry["max_connections"] = listener_limit
    try:
        cfg = WorkloadConfig.from_dict({"version": 1, "network": network, "files": [entry]})
    except ConfigFileError as e:
        assert e.line is None
    else:
        assert WorkloadConfig.from_dict(cfg.to_dict()) == cfg


# -- the template documents them -----------------------------------------------------------------


def _uncommented_template() -> WorkloadConfig:
    lines = [line[2:] if line.startswith("# ") else line for line in config_template().splitlines()]
    return parse_config("\n".join(lines))


def test_template_examples_are_the_runtime_defaults() -> None:
    cfg = _uncommented_template()
    # The template says "one left out keeps the default shown": the shown values must be them.
    defaults = SocketLimits()
    assert cfg.network == NetworkLimits(
        max_connections=defaults.max_connections,
        max_pending_handshakes=defaults.max_pending_handshakes,
        handshake_timeout_s=defaults.handshake_timeout_s,
        connect_timeout_s=defaults.connect_timeout_s,
        send_stall_timeout_s=defaults.send_stall_timeout_s,
        buffer_kib=sockets_network.SOCKET_BUFFER_BYTES // 1024,
    )
    listen = [f for f in cfg.files or () if f.kind is FileKind.LISTEN]
    assert [f.max_connections for f in listen] == [100]


def test_template_mentions_every_key_with_its_bounds() -> None:
    text = config_template()
    for key in ALL_KEYS:
        assert re.search(rf"^# {key} = ", text, re.MULTILINE), key
    assert "1..65536" in text and "1..4096" in text and "4..16384 KiB" in text
    assert "3600" in text
    assert parse_config(text) == WorkloadConfig(source="Enarx.toml")  # all of it commented out


# -- Invocation: the config's values over the caller's -------------------------------------------


def test_socket_limits_without_a_network_section_are_the_callers() -> None:
    base = SocketLimits(max_connections=9)
    inv = Invocation.from_config(parse_config(LISTEN), program="x.wasm")
    assert inv.network == NetworkLimits()
    assert inv.socket_limits(base) is base


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("max_connections", 3, "max_connections", 3),
        ("max_pending_handshakes", 2, "max_pending_handshakes", 2),
        ("handshake_timeout_s", 0.5, "handshake_timeout_s", 0.5),
        ("connect_timeout_s", 1.5, "connect_timeout_s", 1.5),
        ("send_stall_timeout_s", 7, "send_stall_timeout_s", 7.0),
        ("buffer_kib", 64, "buffer_bytes", 64 * 1024),
    ],
)
def test_each_network_key_overrides_its_socket_limit(
    key: str, value: float, field: str, expected: float
) -> None:
    base = SocketLimits(
        max_connections=100,
        max_pending_handshakes=50,
        handshake_timeout_s=20.0,
        connect_timeout_s=30.0,
        send_stall_timeout_s=40.0,
        buffer_bytes=None,
    )
    inv = Invocation.from_config(parse_config(f"[network]\n{key} = {value}\n"), program="x")
    limits = inv.socket_limits(base)
    assert getattr(limits, field) == expected
    # Only that one: the rest stays the caller's.
    assert dataclasses.replace(limits, **{field: getattr(base, field)}) == base


def test_every_network_key_reaches_a_socket_limit() -> None:
    network_keys = {f.name for f in dataclasses.fields(NetworkLimits)}
    assert network_keys == set(ALL_KEYS)
    assert network_keys - {"buffer_kib"} <= {f.name for f in dataclasses.fields(SocketLimits)}
    inv = Invocation.from_config(
        parse_config("[network]\n" + "".join(f"{k} = 4\n" for k in ALL_KEYS)), program="x"
    )
    assert inv.socket_limits(SocketLimits()) == SocketLimits(4, 4, 4.0, 4.0, 4.0, 4096)


def test_a_listeners_own_limit_travels_on_its_fd() -> None:
    cfg = parse_config(
        "[network]\nmax_connections = 50\n"
        + '[[files]]\nkind = "stdin"\n'
        + LISTEN
        + "max_connections = 2\n"
        + '[[files]]\nkind = "listen"\nname = "b"\nport = 0\n'
    )
    inv = Invocation.from_config(cfg, program="x.wasm")
    assert [(fd, spec.max_connections) for fd, spec in inv.sockets] == [(1, 2), (2, None)]
    assert inv.socket_limits(SocketLimits()).max_connections == 50


def test_parsing_socket_limits_loads_no_socket_layer() -> None:
    # `donjon run` imports keep.config and keep.plan on its start-up path (a time goal): the
    # socket limits must not pull in the socket layer (ssl, threads) there.
    code = (
        "import sys\n"
        "from donjon.keep.config import parse_config\n"
        "from donjon.keep.plan import Invocation\n"
        'cfg = parse_config(\'[network]\\nbuffer_kib = 8\\n[[files]]\\nkind = "listen"\\n'
        'name = "a"\\nmax_connections = 2\\n\')\n'
        "Invocation.from_config(cfg, program='x')\n"
        "print(sorted(m for m in sys.modules if m == 'ssl' or m.startswith('donjon.keep.sock')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout == "[]\n", out.stderr


def test_the_keep_process_start_up_path_loads_no_parser_it_does_not_need() -> None:
    # The keep process gets its config as plain data: TOML and JSON parsing are for the CLI side,
    # not for every run's start-up. (ipaddress and urllib.parse come with pathlib anyway.)
    code = (
        "import sys\n"
        "import donjon.keep.process\n"
        "from donjon.keep.config import WorkloadConfig\n"
        "WorkloadConfig.from_dict(WorkloadConfig().to_dict())\n"
        "print(sorted(m for m in ('tomllib', 'json', 'donjon.keep._toml_lines') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {sys.path!r}\n{code}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout == "[]\n", out.stderr


# -- the documented examples --------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _toml_blocks(name: str) -> list[str]:
    text = (DOCS / name).read_text(encoding="utf-8")
    return [block.split("```", 1)[0] for block in text.split("```toml\n")[1:]]


def test_workload_config_doc_examples_parse_as_described() -> None:
    blocks = [b for b in _toml_blocks("workload-config.md") if "max_connections" in b]
    assert len(blocks) == 2
    first = parse_config(blocks[0])
    assert first.network == NetworkLimits(handshake_timeout_s=5.0)
    assert [s.max_connections for s in first.files or () if s.is_socket] == [64]
    section = parse_config(blocks[1])
    assert section.network == NetworkLimits(
        max_connections=1000, handshake_timeout_s=5.0, buffer_kib=64
    )
    assert [s.max_connections for s in section.files or ()] == [4]


def test_sockets_doc_example_parses_as_described() -> None:
    (block,) = [b for b in _toml_blocks("sockets.md") if "[network]" in b]
    cfg = parse_config(block)
    assert cfg.network == NetworkLimits(handshake_timeout_s=2.0, buffer_kib=64)
    assert [s.max_connections for s in cfg.files or ()] == [2]
    limits = Invocation.from_config(cfg, program="echo_server.wasm").socket_limits(SocketLimits())
    assert (limits.handshake_timeout_s, limits.buffer_bytes) == (2.0, 64 * 1024)


def test_the_documented_error_message_is_the_real_one() -> None:
    doc = (DOCS / "workload-config.md").read_text(encoding="utf-8")
    text = "\n" * 7 + "[network]\nbuffer_kib = 2\n"
    assert str(error_of(text)) in doc
