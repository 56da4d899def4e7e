"""Enarx.toml parsing: Enarx compatibility, donjon's additions, and located errors."""

from __future__ import annotations

import datetime
import pickle
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.errors import ConfigError
from donjon.keep._toml_lines import scan_lines
from donjon.keep.config import (
    MAX_CONFIG_BYTES,
    MAX_FILES,
    ConfigFileError,
    DirSpec,
    FileKind,
    FileSpec,
    Limits,
    Protocol,
    WorkloadConfig,
    config_template,
    load_config,
    parse_config,
)
from donjon.wire import cbor

# The example of /work/shared/reference/enarx.md §2, condensed from Enarx's Enarx_toml.md.
ENARX_MD_EXAMPLE = """\
args = ["--argument1", "--argument2=foo"]
steward = "https://attest.profian.com"   # optional
[env]
VAR1 = "var1"
[[files]]
kind = "null"                 # fd0
[[files]]
kind = "stdout"               # fd1
[[files]]
kind = "stderr"               # fd2
[[files]]
kind = "listen"               # fd3
name = "listen"
prot = "tls"
port = 12345
[[files]]
kind = "connect"              # fd4
name = "connect"
prot = "tcp"
host = "127.0.0.1"
port = 23456
"""

# Enarx's own documented example (enarx/enarx:crates/enarx-config/Enarx_toml.md), verbatim.
ENARX_TOML_MD_EXAMPLE = """\
# Configuration for a WASI application in an Enarx Keep

# Arguments
args = [
     "--argument1",
     "--argument2=foo"
]

# Environment variables
[env]
VAR1 = "var1"
VAR2 = "var2"

# Pre-opened file descriptors
[[files]]
kind = "null"

[[files]]
kind = "stdout"

[[files]]
kind = "stderr"

# A listen socket
[[files]]
name = "LISTEN"
kind = "listen"
prot = "tls" # or prot = "tcp"
port = 12345

# An outgoing connected socket
[[files]]
name = "CONNECT"
kind = "connect"
prot = "tcp" # or prot = "tls"
host = "127.0.0.1"
port = 23456
"""

# The configuration of Enarx's own unit test (enarx-config/src/lib.rs), with its defaults.
ENARX_UNIT_TEST = """\
[[files]]
kind = "stdin"

[[files]]
name = "X"
kind = "listen"
prot = "tcp"
port = 9000

[[files]]
kind = "stdout"

[[files]]
kind = "null"

[[files]]
kind = "stderr"

[[files]]
kind = "connect"
host = "example.com"
"""


def _pem_certificate() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM).decode("ascii")


# -- valid configs -----------------------------------------------------------------------------


def test_enarx_md_example_parses_with_documented_fd_environment() -> None:
    cfg = parse_config(ENARX_MD_EXAMPLE)
    assert cfg.args == ("--argument1", "--argument2=foo")
    assert cfg.env == (("VAR1", "var1"),)
    assert cfg.steward == "https://attest.profian.com"
    assert cfg.fd_environment() == (
        ("FD_COUNT", "5"),
        ("FD_NAMES", "null:stdout:stderr:listen:connect"),
    )
    assert cfg.files == (
        FileSpec(FileKind.NULL, "null"),
        FileSpec(FileKind.STDOUT, "stdout"),
        FileSpec(FileKind.STDERR, "stderr"),
        FileSpec(FileKind.LISTEN, "listen", prot=Protocol.TLS, addr="::", port=12345),
        FileSpec(FileKind.CONNECT, "connect", prot=Protocol.TCP, host="127.0.0.1", port=23456),
    )
    assert cfg.environment() == (
        ("FD_COUNT", "5"),
        ("FD_NAMES", "null:stdout:stderr:listen:connect"),
        ("VAR1", "var1"),
    )
    assert cfg.argv() == ("main.wasm", "--argument1", "--argument2=foo")


def test_enarx_toml_md_example_verbatim() -> None:
    cfg = parse_config(ENARX_TOML_MD_EXAMPLE)
    assert cfg.env == (("VAR1", "var1"), ("VAR2", "var2"))
    # The FD_COUNT / FD_NAMES that Enarx_toml.md promises for this file.
    assert dict(cfg.fd_environment()) == {
        "FD_COUNT": "5",
        "FD_NAMES": "null:stdout:stderr:LISTEN:CONNECT",
    }


def test_enarx_unit_test_defaults() -> None:
    cfg = parse_config(ENARX_UNIT_TEST)
    assert [f.name for f in cfg.effective_files()] == [
        "stdin",
        "X",
        "stdout",
        "null",
        "stderr",
        "example.com",
    ]
    listen, connect = cfg.effective_files()[1], cfg.effective_files()[5]
    assert listen == FileSpec(FileKind.LISTEN, "X", prot=Protocol.TCP, addr="::", port=9000)
    # Enarx's code defaults port to 443 and prot to tls, and a connect's name to its host.
    assert connect == FileSpec(
        FileKind.CONNECT, "example.com", prot=Protocol.TLS, host="example.com", port=443
    )


@pytest.mark.parametrize(
    ("text", "count", "names"),
    [
        ("", "3", "stdin:stdout:stderr"),  # no [[files]]: ordinary stdio, not Enarx's nothing
        ('args = ["a"]\n', "3", "stdin:stdout:stderr"),
        ("files = []\n", "0", ""),  # explicit: no fds at all, as Enarx
        ('[[files]]\nkind = "stdout"\n', "1", "stdout"),
        ('[[files]]\nkind = "null"\nname = "sink"\n[[files]]\nkind = "null"\n', "2", "sink:null"),
        ('files = [{kind = "stdin"}, {kind = "stderr", name = "log"}]\n', "2", "stdin:log"),
    ],
)
def test_fd_environment(text: str, count: str, names: str) -> None:
    cfg = parse_config(text)
    assert cfg.fd_environment() == (("FD_COUNT", count), ("FD_NAMES", names))
    assert len(cfg.effective_files()) == int(count)


def test_no_files_is_none_and_gets_stdio() -> None:
    cfg = parse_config("")
    assert cfg.files is None
    assert [f.kind for f in cfg.effective_files()] == [
        FileKind.STDIN,
        FileKind.STDOUT,
        FileKind.STDERR,
    ]
    assert cfg == WorkloadConfig(source="Enarx.toml")


def test_donjon_sections(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        [limits]
        memory_mib = 64
        timeout_s = 2
        [[dirs]]
        host = "data"
        guest = "/data/"
        [[dirs]]
        host = "/abs/out"
        guest = "/out"
        writable = true
        """
    )
    cfg = parse_config(text, base_dir=tmp_path)
    assert cfg.limits == Limits(memory_mib=64, timeout_s=2.0)
    assert isinstance(cfg.limits.timeout_s, float)
    assert cfg.dirs == (
        DirSpec(host=tmp_path / "data", guest="/data"),
        DirSpec(host=Path("/abs/out"), guest="/out", writable=True),
    )
    # Without base_dir, relative host paths stay relative: parse_config reads nothing.
    assert parse_config(text).dirs[0].host == Path("data")


@pytest.mark.parametrize(
    "url",
    [
        "https://steward.example.com",
        "https://steward.example.com:8443/api/",
        "HTTPS://[2001:db8::1]/",
        "http://127.0.0.1:8080",
        "http://localhost:3000/",
        "http://[::1]:8080",
    ],
)
def test_steward_urls_accepted(url: str) -> None:
    assert parse_config(f'steward = "{url}"\n').steward == url


def test_trust_anchors_inline_pem() -> None:
    pem = _pem_certificate()
    text = (
        '[[files]]\nkind = "listen"\nname = "api"\nclient_ca = """\n'
        + pem
        + '"""\n[[files]]\nkind = "connect"\nhost = "db.internal"\nport = 5432\n'
        + "server_ca = '''\n"
        + pem
        + "'''\n"
    )
    listen, connect = parse_config(text).effective_files()
    assert listen.client_ca is not None and "BEGIN CERTIFICATE" in listen.client_ca
    assert connect.server_ca is not None and connect.name == "db.internal"
    assert listen.is_socket and connect.is_socket


# -- invalid configs: exact line and field -----------------------------------------------------

INVALID: list[tuple[str, str, int | None, str | None, str]] = [
    # (id, text, line, field, a fragment of the problem)
    ("unknown-top-key", 'args = []\nfile = "x"\n', 2, "file", 'did you mean "files"?'),
    ("unknown-no-hint", "zzz = 1\n", 1, "zzz", "allowed here: args, env"),
    ("args-not-array", 'args = "-v"\n', 1, "args", "must be an array"),
    ("args-item-int", 'args = [\n  "a",\n  3,\n]\n', 3, "args[1]", "must be a string"),
    ("args-nul", 'args = ["a\\u0000b"]\n', 1, "args[0]", "NUL"),
    ("env-not-table", 'env = ["A=1"]\n', 1, "env", "must be a table of strings"),
    ("env-int", "[env]\nA = 1\nB = 2\n", 2, "env.A", "must be a string, got an integer"),
    ("env-reserved", '\n[env]\nFD_COUNT = "9"\n', 3, "env.FD_COUNT", "set by the Keep"),
    ("env-equals", '[env]\n"A=B" = "x"\n', 2, 'env."A=B"', "cannot contain '='"),
    ("env-empty-name", '[env]\n"" = "x"\n', 2, 'env.""', "non-empty name"),
    ("steward-http", 'steward = "http://steward.example.com"\n', 1, "steward", "plain http"),
    ("steward-ftp", 'steward = "ftp://x.example"\n', 1, "steward", "not an https URL"),
    ("steward-creds", 'steward = "https://u:p@x.example"\n', 1, "steward", "user name"),
    ("steward-int", "steward = 443\n", 1, "steward", "must be a string"),
    ("steward-port", 'steward = "https://x.example:99999"\n', 1, "steward", "not a valid URL"),
    ("files-table", '[files]\nkind = "null"\n', 1, "files", "[[files]] (two brackets)"),
    (
        "prot-udp",
        '[[files]]\nkind = "null"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "listen"\n'
        'prot = "udp"\nname = "x"\n',
        7,
        "files[2].prot",
        '"udp" is not allowed; use "tls" or "tcp"',
    ),
    ("kind-missing", '[[files]]\nname = "x"\n', 1, "files[0].kind", "is missing"),
    ("kind-bad", '[[files]]\nkind = "pipe"\n', 2, "files[0].kind", '"pipe" is not allowed'),
    ("kind-int", "[[files]]\nkind = 1\n", 2, "files[0].kind", "an integer is not allowed"),
    (
        "file-key-typo",
        '[[files]]\nkind = "listen"\nname = "l"\nprt = "tls"\n',
        4,
        "files[0].prt",
        'did you mean "prot"?',
    ),
    (
        "port-on-stdout",
        '[[files]]\nkind = "stdout"\nport = 80\n',
        3,
        "files[0].port",
        'not allowed for kind = "stdout"; only for kind = "listen" or "connect"',
    ),
    (
        "addr-on-connect",
        '[[files]]\nkind = "connect"\nhost = "a.example"\naddr = "::"\n',
        4,
        "files[0].addr",
        'only for kind = "listen"',
    ),
    ("listen-no-name", '[[files]]\nkind = "listen"\nport = 8443\n', 1, "files[0].name", "required"),
    ("connect-no-host", '\n[[files]]\nkind = "connect"\n', 2, "files[0].host", "required"),
    ("name-colon", '[[files]]\nkind = "null"\nname = "a:b"\n', 3, "files[0].name", "contains ':'"),
    (
        "name-empty",
        '[[files]]\nkind = "null"\nname = ""\n',
        3,
        "files[0].name",
        "must not be empty",
    ),
    (
        "name-duplicate",
        '[[files]]\nkind = "null"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "null"\n',
        5,
        "files[2].name",
        "already the name of files[0]",
    ),
    (
        "connect-ipv6-default-name",
        '[[files]]\nkind = "connect"\nhost = "::1"\n',
        1,
        "files[0].name",
        "contains ':'",
    ),
    (
        "port-zero",  # a listener may take port 0 (any free port); a connect may not
        '[[files]]\nkind = "connect"\nhost = "h.example"\nport = 0\n',
        4,
        "files[0].port",
        "1..65535",
    ),
    (
        "port-big",
        '[[files]]\nkind = "connect"\nhost = "h.example"\nport = 65536\n',
        4,
        "files[0].port",
        "out of range",
    ),
    (
        "port-string",
        '[[files]]\nkind = "connect"\nhost = "h.example"\nport = "80"\n',
        4,
        "files[0].port",
        "got a string",
    ),
    (
        "port-bool",
        '[[files]]\nkind = "connect"\nhost = "h.example"\nport = true\n',
        4,
        "files[0].port",
        "got a boolean",
    ),
    (
        "addr-not-ip",
        '[[files]]\nkind = "listen"\nname = "l"\naddr = "localhost"\n',
        4,
        "files[0].addr",
        "not an IP address",
    ),
    (
        "host-bad",
        '[[files]]\nkind = "connect"\nhost = "a b"\n',
        3,
        "files[0].host",
        "neither an IP address nor a DNS name",
    ),
    (
        "host-bad-ip",
        '[[files]]\nkind = "connect"\nhost = "300.1.1.1"\nname = "c"\n',
        3,
        "files[0].host",
        "not a valid one",
    ),
    (
        "listen-same-port",
        '[[files]]\nkind = "listen"\nname = "a"\nport = 8443\n'
        '[[files]]\nkind = "listen"\nname = "b"\naddr = "0:0::0"\nport = 8443\n',
        9,
        "files[1].port",
        "files[0] already listens on [0:0::0]:8443",
    ),
    (
        "client-ca-on-tcp",
        '[[files]]\nkind = "listen"\nname = "a"\nprot = "tcp"\nclient_ca = "x"\n',
        5,
        "files[0].client_ca",
        'needs prot = "tls"',
    ),
    (
        "client-ca-not-pem",
        '[[files]]\nkind = "listen"\nname = "a"\nclient_ca = "/etc/ca.pem"\n',
        4,
        "files[0].client_ca",
        "must hold PEM certificates",
    ),
    (
        "client-ca-bad-pem",
        '[[files]]\nkind = "listen"\nname = "a"\nclient_ca = """\n-----BEGIN CERTIFICATE-----\n'
        'AAAA\n-----END CERTIFICATE-----\n"""\n',
        4,
        "files[0].client_ca",
        "does not hold valid PEM certificates",
    ),
    (
        "server-ca-on-listen",
        '[[files]]\nkind = "listen"\nname = "a"\nserver_ca = "x"\n',
        4,
        "files[0].server_ca",
        'only for kind = "connect"',
    ),
    ("files-item-not-table", "files = [1]\n", 1, "files[0]", "must be a table"),
    ("dirs-table", '[dirs]\nhost = "a"\n', 1, "dirs", "[[dirs]]"),
    ("dir-no-guest", '[[dirs]]\nhost = "a"\n', 1, "dirs[0].guest", "is missing"),
    ("dir-no-host", '[[dirs]]\nguest = "/a"\n', 1, "dirs[0].host", "is missing"),
    ("dir-relative-guest", '[[dirs]]\nhost = "a"\nguest = "a"\n', 3, "dirs[0].guest", "absolute"),
    ("dir-dotdot", '[[dirs]]\nhost = "a"\nguest = "/a/../b"\n', 3, "dirs[0].guest", '".."'),
    ("dir-double-slash", '[[dirs]]\nhost = "a"\nguest = "//a"\n', 3, "dirs[0].guest", "empty"),
    ("dir-empty-host", '[[dirs]]\nhost = ""\nguest = "/a"\n', 2, "dirs[0].host", "not be empty"),
    (
        "dir-writable-str",
        '[[dirs]]\nhost = "a"\nguest = "/a"\nwritable = "yes"\n',
        4,
        "dirs[0].writable",
        "true or false",
    ),
    (
        "dir-duplicate-guest",
        '[[dirs]]\nhost = "a"\nguest = "/a"\n\n[[dirs]]\nhost = "b"\nguest = "/a/"\n',
        7,
        "dirs[1].guest",
        "already used by dirs[0]",
    ),
    (
        "dir-key-typo",
        '[[dirs]]\nhost = "a"\nguest = "/a"\nwriteable = true\n',
        4,
        "dirs[0].writeable",
        'did you mean "writable"?',
    ),
    ("limits-not-table", "limits = 5\n", 1, "limits", "must be a table"),
    (
        "limits-typo",
        "[limits]\nmemory_mb = 5\n",
        2,
        "limits.memory_mb",
        'did you mean "memory_mib"',
    ),
    ("memory-zero", "[limits]\nmemory_mib = 0\n", 2, "limits.memory_mib", "1..4096"),
    ("memory-pages", "[limits]\nmemory_mib = 65536\n", 2, "limits.memory_mib", "4 GiB"),
    ("memory-float", "[limits]\nmemory_mib = 1.5\n", 2, "limits.memory_mib", "integer"),
    ("timeout-zero", "[limits]\ntimeout_s = 0\n", 2, "limits.timeout_s", "> 0"),
    ("timeout-negative", "[limits]\ntimeout_s = -1.0\n", 2, "limits.timeout_s", "> 0"),
    ("timeout-inf", "[limits]\ntimeout_s = inf\n", 2, "limits.timeout_s", "out of range"),
    ("timeout-nan", "[limits]\ntimeout_s = nan\n", 2, "limits.timeout_s", "out of range"),
    ("timeout-string", '[limits]\ntimeout_s = "2s"\n', 2, "limits.timeout_s", "number of seconds"),
    ("timeout-date", "[limits]\ntimeout_s = 1979-05-27\n", 2, "limits.timeout_s", "a date"),
    (
        "dotted-key-line",
        '[[files]]\nkind = "listen"\nname = "l"\n\n\nlimits.x = 1\n',
        6,
        "files[0].limits",
        "unknown key",
    ),
    (
        "inline-table-line",
        'files = [\n  {kind = "null"},\n  {kind = "tty"},\n]\n',
        3,
        "files[1].kind",
        '"tty" is not allowed',
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_config_names_line_and_field(
    text: str, line: int | None, field: str | None, fragment: str
) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(text)
    error = info.value
    assert (error.file, error.line, error.field) == ("Enarx.toml", line, field)
    assert fragment in error.problem
    assert str(error) == f"Enarx.toml:{line}: {field}: {error.problem}"
    assert error.diagnostics() == str(error)
    assert isinstance(error, ConfigError)
    assert error.exit_code == 3


def test_error_message_example_from_the_brief() -> None:
    text = (
        '[[files]]\nkind = "null"\n\n[[files]]\nkind = "stdout"\n[[files]]\n'
        'prot = "udp"\nkind = "connect"\nhost = "a.example"\n'
    )
    with pytest.raises(ConfigFileError) as info:
        parse_config(text)
    assert (
        str(info.value) == 'Enarx.toml:7: files[2].prot: "udp" is not allowed; use "tls" or "tcp"'
    )


def test_toml_syntax_error_keeps_tomllib_position() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config('args = []\n\nsteward = "https://x.example\n', source="my.toml")
    error = info.value
    assert error.file == "my.toml"
    assert error.line == 3
    assert error.field is None
    assert "not valid TOML" in error.problem and "line 3" in error.problem
    assert str(error).startswith("my.toml:3: not valid TOML: ")


def test_duplicate_key_is_a_toml_error() -> None:
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        parse_config('[env]\nA = "1"\nA = "2"\n')


def test_env_values_never_appear_in_errors() -> None:
    secret = "hunter2-" + "s" * 70_000
    with pytest.raises(ConfigFileError) as info:
        parse_config(f'[env]\nTOKEN = "{secret}"\n')
    assert info.value.field == "env.TOKEN"
    assert "hunter2" not in str(info.value)
    assert "at most 65536 bytes" in info.value.problem


def test_limits_on_counts_and_size() -> None:
    many = "".join(f'[[files]]\nkind = "null"\nname = "n{i}"\n' for i in range(MAX_FILES + 1))
    with pytest.raises(ConfigFileError, match=f"at most {MAX_FILES}") as info:
        parse_config(many)
    assert (info.value.line, info.value.field) == (1, "files")
    with pytest.raises(ConfigFileError, match="larger than 1 MiB") as info:
        parse_config("#" * (MAX_CONFIG_BYTES + 1))
    assert info.value.line is None
    with pytest.raises(ConfigFileError, match="larger than 1 MiB"):
        parse_config("#" + "é" * (MAX_CONFIG_BYTES // 2))


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(ConfigFileError):
        parse_config("a = " + "[" * 100_000)
    with pytest.raises(ConfigFileError, match="unknown key"):
        parse_config("a = " + "[" * 300 + "]" * 300)


def test_lone_surrogate_text_is_rejected() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config('args = []\nsteward = "\ud800"\n')
    assert info.value.line == 2


def test_config_file_error_pickles() -> None:
    error = ConfigFileError("a.toml", 3, "args", "must be an array")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.file, copy.line, copy.field, copy.problem) == ("a.toml", 3, "args", error.problem)
    assert str(copy) == "a.toml:3: args: must be an array"


# -- hypothesis --------------------------------------------------------------------------------

_TOML_ALPHABET = st.sampled_from(
    [*"[]{}=\",.#'\n \t", "kind", "files", "name", "args", "env", "listen", '"tls"', "1"]
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_config_error(text: str) -> None:
    try:
        parse_config(text)
    except ConfigFileError as e:
        assert e.file == "Enarx.toml"


@settings(max_examples=300, deadline=None)
@given(st.lists(_TOML_ALPHABET, max_size=60).map("".join))
def test_toml_like_text_only_raises_config_error(text: str) -> None:
    try:
        parse_config(text)
    except ConfigFileError as e:
        assert e.line is None or e.line >= 1


_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


_file_entry = st.dictionaries(
    st.sampled_from(["kind", "name", "prot", "addr", "host", "port", "client_ca", "server_ca"]),
    _plain | st.sampled_from(["listen", "connect", "null", "tls", "tcp", "::", "a.example", 80]),
)
_hostile = st.fixed_dictionaries(
    {"version": st.just(1) | _plain},
    optional={
        "args": _plain,
        "env": _plain | st.lists(st.lists(_plain, max_size=3), max_size=3),
        "files": _plain | st.lists(_file_entry, max_size=4),
        "dirs": _plain | st.lists(st.dictionaries(st.sampled_from(["host", "guest"]), _plain)),
        "limits": _plain | st.dictionaries(st.sampled_from(["memory_mib", "timeout_s"]), _plain),
        "steward": _plain,
        "source": _plain,
    },
)


@settings(max_examples=200, deadline=None)
@given(_hostile)
def test_from_dict_hostile_data_only_raises_config_error(data: dict[str, Any]) -> None:
    try:
        WorkloadConfig.from_dict(data)
    except ConfigFileError as e:
        assert e.line is None


_ENTRY_LINES = [
    '[[files]]\nkind = "null"',
    '[[files]]\nkind = "listen"\nname = "L{i}"\nport = {port}',
    '[[files]]\n# a comment\nkind = "connect"\n\nhost = "h{i}.example"',
]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(_ENTRY_LINES), min_size=1, max_size=8),
    st.data(),
)
def test_error_line_is_where_the_bad_key_is(entries: list[str], data: st.DataObject) -> None:
    bad = data.draw(st.integers(0, len(entries) - 1))
    padding = data.draw(st.lists(st.sampled_from(["", "# x", "  "]), max_size=3))
    chunks = ['args = [\n  "a",\n]']
    for i, entry in enumerate(entries):
        chunk = entry.format(i=i, port=1000 + i)
        if i > 0 and "null" in chunk:
            chunk += f'\nname = "n{i}"'
        if i == bad:
            chunk += "\n" + "\n".join(padding) + '\nprot = "udp"'
        chunks.append(chunk)
    text = "\n".join(chunks) + "\n"
    expected = text.splitlines().index('prot = "udp"') + 1
    with pytest.raises(ConfigFileError) as info:
        parse_config(text)
    assert info.value.line == expected
    assert info.value.field == f"files[{bad}].prot"


_name = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters=":\x7f"),
    min_size=1,
    max_size=12,
)
_file = st.one_of(
    st.builds(
        FileSpec,
        kind=st.sampled_from([FileKind.NULL, FileKind.STDIN, FileKind.STDOUT, FileKind.STDERR]),
        name=_name,
    ),
    st.builds(
        FileSpec,
        kind=st.just(FileKind.LISTEN),
        name=_name,
        prot=st.sampled_from(Protocol),
        addr=st.sampled_from(["::", "0.0.0.0", "127.0.0.1", "::1"]),  # noqa: S104
        port=st.integers(1, 65535),
    ),
    st.builds(
        FileSpec,
        kind=st.just(FileKind.CONNECT),
        name=_name,
        prot=st.sampled_from(Protocol),
        host=st.sampled_from(["example.com", "127.0.0.1", "::1", "a-b.c_d.internal"]),
        port=st.integers(1, 65535),
    ),
)


def _unique_names(files: list[FileSpec]) -> bool:
    return len({f.name for f in files}) == len(files)


def _unique_listeners(files: list[FileSpec]) -> bool:
    binds = [(f.addr, f.port) for f in files if f.kind is FileKind.LISTEN]
    return len(set(binds)) == len(binds)


_env_name = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="="), min_size=1
).filter(lambda n: n not in ("FD_COUNT", "FD_NAMES"))
_configs = st.builds(
    WorkloadConfig,
    args=st.lists(st.text(st.characters(exclude_characters="\x00", codec="utf-8"))).map(tuple),
    env=st.dictionaries(
        _env_name, st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
    ).map(lambda d: tuple(d.items())),
    steward=st.sampled_from([None, "https://steward.example.com", "http://127.0.0.1:8000/x"]),
    files=st.none()
    | st.lists(_file, max_size=6).filter(_unique_names).filter(_unique_listeners).map(tuple),
    dirs=st.lists(
        st.builds(
            DirSpec,
            host=st.sampled_from([Path("data"), Path("/srv/x y")]),
            guest=st.sampled_from(["/", "/data", "/a/b"]),
            writable=st.booleans(),
        ),
        max_size=3,
        unique_by=lambda d: d.guest,
    ).map(tuple),
    limits=st.builds(
        Limits,
        memory_mib=st.none() | st.integers(1, 4096),
        timeout_s=st.none() | st.floats(min_value=0.001, max_value=1e6),
    ),
    source=st.none() | st.just("Enarx.toml"),
)


@settings(max_examples=200, deadline=None)
@given(_configs)
def test_to_dict_from_dict_roundtrip(cfg: WorkloadConfig) -> None:
    data = cfg.to_dict()
    assert WorkloadConfig.from_dict(data) == cfg
    # Through deterministic CBOR too, the way it reaches the keep process.
    assert WorkloadConfig.from_dict(cbor.decode(cbor.encode(data))) == cfg


def test_to_dict_shape() -> None:
    cfg = parse_config(ENARX_MD_EXAMPLE)
    data = cfg.to_dict()
    assert data["version"] == 1
    assert data["env"] == [["VAR1", "var1"]]
    assert data["files"][3] == {
        "kind": "listen",
        "name": "listen",
        "prot": "tls",
        "addr": "::",
        "port": 12345,
    }
    assert "files" not in parse_config("").to_dict()
    assert WorkloadConfig.from_dict(data) == cfg


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({}, "version", "must be 1"),
        ({"version": 2}, "version", "must be 1"),
        ({"version": True}, "version", "must be 1"),
        ({"version": 1, "extra": 1}, "extra", "unknown key"),
        ({"version": 1, "env": {"A": "1"}}, "env", "must be an array"),
        ({"version": 1, "env": [["A", "1"], ["A", "2"]]}, "env[1]", "set twice"),
        ({"version": 1, "env": [["A"]]}, "env[0]", "pair"),
        (
            {"version": 1, "files": [{"kind": "listen", "name": "a", "port": -1}]},
            "files[0].port",
            "out of range",
        ),
        ({"version": 1, "source": 5}, "source", "must be a string"),
    ],
)
def test_from_dict_rejects(data: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        WorkloadConfig.from_dict(data)
    assert (info.value.line, info.value.field) == (None, field)
    assert fragment in info.value.problem


def test_from_dict_not_a_mapping() -> None:
    with pytest.raises(ConfigFileError, match="must be a mapping"):
        WorkloadConfig.from_dict([1, 2])  # type: ignore[arg-type]


# -- load_config -------------------------------------------------------------------------------


def test_load_config_resolves_dirs_and_checks_they_exist(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "Enarx.toml"
    path.write_text('[[dirs]]\nhost = "data"\nguest = "/data"\n', encoding="utf-8")
    cfg = load_config(path)
    assert cfg.dirs == (DirSpec(host=tmp_path / "data", guest="/data"),)
    assert cfg.source == str(path)

    path.write_text(
        '\n[[dirs]]\nhost = "data"\nguest = "/data"\n[[dirs]]\nhost = "nope"\nguest = "/nope"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert (info.value.line, info.value.field) == (6, "dirs[1].host")
    assert "does not exist" in info.value.problem

    (tmp_path / "file").write_text("x", encoding="utf-8")
    path.write_text('[[dirs]]\nhost = "file"\nguest = "/f"\n', encoding="utf-8")
    with pytest.raises(ConfigFileError, match="is not a directory"):
        load_config(path)


def test_load_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="does not exist; write one") as info:
        load_config(tmp_path / "missing.toml")
    assert info.value.line is None
    with pytest.raises(ConfigFileError, match="is a directory"):
        load_config(tmp_path)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigFileError, match="larger than 1 MiB"):
        load_config(big)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"args = []\n# caf\xe9\n")
    with pytest.raises(ConfigFileError, match="not UTF-8") as info:
        load_config(latin)
    assert info.value.line == 2


def test_load_config_accepts_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "Enarx.toml"
    path.write_bytes(b'\xef\xbb\xbfargs = ["x"]\n')
    assert load_config(path).args == ("x",)


# -- template ----------------------------------------------------------------------------------


def test_template_parses_to_the_default_config() -> None:
    cfg = parse_config(config_template())
    assert cfg == WorkloadConfig(source="Enarx.toml")


def test_template_examples_parse_when_uncommented() -> None:
    # The template's convention (Enarx's too): "## " explains, "# " comments out an example.
    lines = [line[2:] if line.startswith("# ") else line for line in config_template().splitlines()]
    cfg = parse_config("\n".join(lines))
    assert cfg.args == ("--argument1", "--argument2=foo")
    assert cfg.steward == "https://steward.example.com"
    assert [k for k, _ in cfg.env] == ["VAR1", "VAR2"]
    assert cfg.limits == Limits(memory_mib=64, timeout_s=2.0)
    assert cfg.dirs == (DirSpec(host=Path("data"), guest="/data"),)
    assert dict(cfg.fd_environment()) == {
        "FD_COUNT": "5",
        "FD_NAMES": "stdin:stdout:stderr:LISTEN:CONNECT",
    }


# -- the line scanner --------------------------------------------------------------------------


def test_scanner_maps_paths_to_lines() -> None:
    text = textwrap.dedent(
        """\
        # comment with [brackets] and key = "value"
        args = [
          "a]#",   # a comment
          '''multi
        line ] literal''',
          "b",
        ]
        "quoted.key" = { x = 1, y = [1, 2] }
        a.b.c = 1979-05-27 07:32:00
        s = \"\"\"
        [[files]]
        not a header\"\"\"
        [[files]]
        kind = "null"
        [files.sub]
        z = 1
        [[files]]
        kind = "stdout"
        """
    )
    lines = scan_lines(text)
    assert lines.exact(("args",)) == 2
    assert lines.exact(("args", 0)) == 3
    assert lines.exact(("args", 1)) == 4
    assert lines.exact(("args", 2)) == 6
    assert lines.exact(("quoted.key", "y", 1)) == 8
    assert lines.exact(("a", "b", "c")) == 9
    assert lines.exact(("s",)) == 10
    assert lines.exact(("files",)) == 13
    assert lines.exact(("files", 0)) == 13
    assert lines.exact(("files", 0, "kind")) == 14
    assert lines.exact(("files", 0, "sub", "z")) == 16
    assert lines.exact(("files", 1, "kind")) == 18
    assert lines.nearest(("files", 1, "missing")) == 17
    assert lines.nearest(("nothing",)) is None


def test_documented_example_parses_as_documented() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "workload-config.md"
    example = doc.read_text(encoding="utf-8").split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = parse_config(example)
    assert cfg.argv() == ("main.wasm", "--port", "8443")
    assert cfg.environment() == (
        ("FD_COUNT", "4"),
        ("FD_NAMES", "stdin:stdout:stderr:api"),
        ("MODE", "production"),
    )
    assert cfg.limits == Limits(memory_mib=64, timeout_s=30.0)
    assert cfg.dirs == (DirSpec(host=Path("data"), guest="/data"),)
