"""A workload's identity and its ``[[secrets]]``: what the identity covers and what it does not,
located errors for bad ``[[secrets]]`` entries, and where released values enter the workload's
environment (and where they never show)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import cbor2
import pytest

from donjon.errors import ConfigError
from donjon.keep import config as keep_config
from donjon.keep.config import (
    MAX_SECRETS,
    ConfigFileError,
    SecretSpec,
    WorkloadConfig,
    parse_config,
)
from donjon.keep.errors import UnsupportedConfigError
from donjon.keep.plan import Invocation, Preopen
from donjon.keep.workload_id import IDENTITY_VERSION, WORKLOAD_URI_PREFIX, workload_identity
from donjon.steward import config as steward_config
from donjon.steward import secrets as steward_secrets
from donjon.steward.config import DEV_POLICY_TOML, StewardPolicy
from donjon.steward.secrets import SecretNameError, SecretStore
from donjon.wire import cbor

MODULE = hashlib.sha256(b"\x00asm\x01\x00\x00\x00").digest()

# Every kind of grant, so that a lost field in to_dict/from_dict would change the identity.
CONFIG = """\
args = ["--serve", "--verbose"]
steward = "https://steward.example.com"

[env]
LANGUAGE = "en"
REGION = "eu-west"

[[files]]
kind = "stdin"
[[files]]
kind = "stdout"
[[files]]
kind = "stderr"
[[files]]
kind = "listen"
name = "api"
prot = "tcp"
port = 8080

[limits]
memory_mib = 64
timeout_s = 30.0

[network]
max_connections = 8

[[secrets]]
name = "db-password"
env = "DB_PASSWORD"

[[secrets]]
name = "api-token"
env = "API_TOKEN"
"""


def _id(
    text: str = CONFIG,
    *,
    module: bytes = MODULE,
    program: str = "server.wasm",
    args: tuple[str, ...] = (),
    source: str = "Enarx.toml",
) -> str:
    return workload_identity(module, parse_config(text, source=source), program=program, args=args)


# -- the identity ----------------------------------------------------------------------------------


def test_the_identity_is_a_workload_uri_steward_accepts() -> None:
    identity = _id()
    assert identity.startswith(WORKLOAD_URI_PREFIX)
    assert steward_config.WORKLOAD_URI.fullmatch(identity)


def test_the_identity_is_deterministic() -> None:
    assert _id() == _id() == _id(CONFIG)
    config = parse_config(CONFIG)
    assert workload_identity(MODULE, config, program="server.wasm") == _id()


def test_the_identity_is_the_documented_hash() -> None:
    # The formula of the module docstring, computed here independently of the module.
    config = parse_config(CONFIG, source="Enarx.toml")
    plain = config.to_dict()
    del plain["source"]
    document = {"v": 1, "module": MODULE, "config": plain, "program": "p.wasm", "args": ["x"]}
    digest = hashlib.sha256(cbor2.dumps(document, canonical=True)).hexdigest()
    assert IDENTITY_VERSION == 1
    assert _id(program="p.wasm", args=("x",)) == WORKLOAD_URI_PREFIX + digest


def test_a_known_identity_does_not_move() -> None:
    # Release rules in Steward policies name identities: an unintended change to the identity
    # document would lock every deployed workload out of its secrets.
    config = parse_config('[[secrets]]\nname = "db-password"\nenv = "DB_PASSWORD"\n')
    assert workload_identity(bytes(32), config, program="main.wasm") == (
        WORKLOAD_URI_PREFIX + "0ddda00ecc1b159b0b4b6e7186563e25db5941e822929bcb7b1f14ccb9582977"
    )


def test_the_config_file_name_does_not_change_it() -> None:
    assert _id(source="Enarx.toml") == _id(source="/home/me/deploy/prod.toml") == _id(source="")
    without = parse_config(CONFIG)
    assert (
        workload_identity(
            MODULE,
            WorkloadConfig.from_dict({k: v for k, v in without.to_dict().items() if k != "source"}),
            program="server.wasm",
        )
        == _id()
    )


def _edit(old: str, new: str) -> str:
    assert CONFIG.count(old) == 1, old
    return CONFIG.replace(old, new)


CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("module", {"module": bytes([MODULE[0] ^ 1]) + MODULE[1:]}),
    ("env value", {"text": _edit('REGION = "eu-west"', 'REGION = "eu-east"')}),
    ("env name", {"text": _edit('REGION = "eu-west"', 'ZONE = "eu-west"')}),
    ("env added", {"text": _edit('REGION = "eu-west"', 'REGION = "eu-west"\nDEBUG = "1"')}),
    ("config args", {"text": _edit('"--verbose"]', '"--quiet"]')}),
    ("config args order", {"text": _edit('["--serve", "--verbose"]', '["--verbose", "--serve"]')}),
    ("extra args", {"args": ("--dump",)}),
    ("empty extra arg", {"args": ("",)}),
    ("program", {"program": "main.wasm"}),
    ("memory limit", {"text": _edit("memory_mib = 64", "memory_mib = 65")}),
    ("timeout", {"text": _edit("timeout_s = 30.0", "timeout_s = 31.0")}),
    ("network limit", {"text": _edit("max_connections = 8", "max_connections = 9")}),
    ("listen port", {"text": _edit("port = 8080", "port = 8081")}),
    ("steward", {"text": _edit("steward.example.com", "steward2.example.com")}),
    ("secret env", {"text": _edit('env = "API_TOKEN"', 'env = "TOKEN"')}),
    ("secret name", {"text": _edit('name = "api-token"', 'name = "api-key"')}),
    ("secret removed", {"text": CONFIG.split('\n[[secrets]]\nname = "api-token"')[0]}),
]


@pytest.mark.parametrize(("label", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_any_change_of_what_the_workload_does_changes_it(
    label: str, change: dict[str, Any]
) -> None:
    assert _id(**change) != _id()


def test_every_change_makes_its_own_identity() -> None:
    identities = {_id(**change) for _, change in CHANGES}
    assert len(identities) == len(CHANGES)


def test_extra_args_are_not_config_args() -> None:
    # Appended after the config's own, but hashed apart from them.
    moved = "args = []\n" + CONFIG.split("\n", 1)[1]
    assert _id(moved, args=("--serve", "--verbose")) != _id()


def test_the_keep_computes_the_same_identity_from_the_deployed_config() -> None:
    config = parse_config(CONFIG, source="workload/Enarx.toml")
    # What the Keep receives: to_dict, through CBOR over the untrusted host, then from_dict.
    received = WorkloadConfig.from_dict(cbor.decode(cbor.encode(config.to_dict())))
    assert received.secrets == config.secrets
    assert received.env == config.env
    assert workload_identity(MODULE, received, program="server.wasm") == _id()
    assert workload_identity(
        MODULE, WorkloadConfig.from_dict(config.to_dict()), program="server.wasm", args=("-x",)
    ) == _id(args=("-x",))


def test_a_digest_that_is_not_sha256_is_refused() -> None:
    with pytest.raises(ValueError, match="32-byte SHA-256"):
        workload_identity(MODULE[:20], WorkloadConfig())


# -- [[secrets]] -----------------------------------------------------------------------------------


def test_secrets_are_parsed_in_order() -> None:
    config = parse_config(CONFIG)
    assert config.secrets == (
        SecretSpec(name="db-password", env="DB_PASSWORD"),
        SecretSpec(name="api-token", env="API_TOKEN"),
    )
    assert config.to_dict()["secrets"] == [
        {"name": "db-password", "env": "DB_PASSWORD"},
        {"name": "api-token", "env": "API_TOKEN"},
    ]
    assert "secrets" not in parse_config("").to_dict()  # absent, not empty: older Keeps read it


def _secrets(*entries: tuple[str, str]) -> str:
    return "".join(f'[[secrets]]\nname = "{n}"\nenv = "{e}"\n\n' for n, e in entries)


SECRET_ERRORS: list[tuple[str, str, int, str, str]] = [
    (
        "bad name",
        '[[secrets]]\nname = "DB"\nenv = "DB"\n',
        2,
        "secrets[0].name",
        "\"DB\" is not a secret name: 1-64 of a-z, 0-9, '_' and '-', starting with a letter "
        "or digit (the name given to `donjon steward secret set`)",
    ),
    (
        "name with a newline",
        '[[secrets]]\nname = "db\\n"\nenv = "DB"\n',
        2,
        "secrets[0].name",
        '"db\\n" is not a secret name',
    ),
    (
        "name with a dot",
        '[[secrets]]\nname = "db.password"\nenv = "DB"\n',
        2,
        "secrets[0].name",
        '"db.password" is not a secret name',
    ),
    (
        "name too long",
        '[[secrets]]\nname = "' + "a" * 65 + '"\nenv = "DB"\n',
        2,
        "secrets[0].name",
        "is 65 bytes long; at most 64 bytes are allowed",
    ),
    (
        "name not a string",
        '[[secrets]]\nname = 7\nenv = "DB"\n',
        2,
        "secrets[0].name",
        "must be a string, got an integer",
    ),
    (
        "duplicate name",
        _secrets(("db", "A"), ("db", "B")),
        6,
        "secrets[1].name",
        '"db" is already secrets[0]',
    ),
    (
        "duplicate env",
        _secrets(("db", "A"), ("api", "A")),
        7,
        "secrets[1].env",
        '"A" is already secrets[0]\'s variable',
    ),
    (
        "env also in [env]",
        '[env]\nDB = "plain"\n\n' + _secrets(("db", "DB")),
        6,
        "secrets[0].env",
        '"DB" is also set in [env]; give the secret its own',
    ),
    (
        "FD_COUNT",
        _secrets(("db", "FD_COUNT")),
        3,
        "secrets[0].env",
        "FD_COUNT is set by the Keep from [[files]] (FD_COUNT, FD_NAMES); remove it",
    ),
    ("FD_NAMES", _secrets(("db", "FD_NAMES")), 3, "secrets[0].env", "FD_NAMES is set by the Keep"),
    ("env with =", _secrets(("db", "A=B")), 3, "secrets[0].env", "cannot contain '='"),
    ("empty env", _secrets(("db", "")), 3, "secrets[0].env", "needs a non-empty name"),
    (
        "unknown key",
        '[[secrets]]\nname = "db"\nenv = "DB"\nvalue = "hunter2"\n',
        4,
        "secrets[0].value",
        "unknown key; allowed here: name, env, file",
    ),
    (
        "neither env nor file",
        '[[secrets]]\nname = "db"\n',
        1,
        "secrets[0]",
        'needs exactly one of env = "VARIABLE" (an environment variable) and file = "NAME" '
        "(a read-only file in /run/secrets)",
    ),
    (
        "both env and file",
        '[[secrets]]\nname = "db"\nenv = "DB"\nfile = "db"\n',
        1,
        "secrets[0]",
        "needs exactly one of env",
    ),
    (
        "a path, not a file name",
        '[[secrets]]\nname = "db"\nfile = "keys/db"\n',
        3,
        "secrets[0].file",
        '"keys/db" is not a file name; give a plain name such as "tls.key" (it appears as '
        "/run/secrets/<name>)",
    ),
    (
        "dot-dot",
        '[[secrets]]\nname = "db"\nfile = ".."\n',
        3,
        "secrets[0].file",
        '".." is not a file name',
    ),
    (
        "duplicate file",
        '[[secrets]]\nname = "a"\nfile = "k"\n[[secrets]]\nname = "b"\nfile = "k"\n',
        6,
        "secrets[1].file",
        '"k" is already secrets[0]\'s file',
    ),
    (
        "a dir at /run/secrets",
        '[[dirs]]\nhost = "/tmp"\nguest = "/run/secrets"\n[[secrets]]\nname = "db"\nfile = "db"\n',
        3,
        "dirs[0].guest",
        "/run/secrets is where [[secrets]] files appear; use another path",
    ),
    (
        "missing name",
        '[[secrets]]\nenv = "DB"\n',
        1,
        "secrets[0].name",
        'is missing; add name = "..."',
    ),
    (
        "[secrets] table",
        '[secrets]\nname = "db"\nenv = "DB"\n',
        1,
        "secrets",
        "must be an array of tables: write [[secrets]], not [secrets]",
    ),
    (
        "array of strings",
        'secrets = ["db"]\n',
        1,
        "secrets[0]",
        "must be a table ([[secrets]] entry), got a string",
    ),
    (
        "too many",
        _secrets(*((f"s{i}", f"E{i}") for i in range(MAX_SECRETS + 1))),
        1,
        "secrets",
        f"has {MAX_SECRETS + 1} entries; at most {MAX_SECRETS} are allowed",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [e[1:] for e in SECRET_ERRORS],
    ids=[e[0] for e in SECRET_ERRORS],
)
def test_secrets_errors_name_file_line_and_field(
    text: str, line: int, field: str, problem: str
) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, source="w.toml")
    error = info.value
    assert (error.file, error.line, error.field) == ("w.toml", line, field)
    assert problem in error.problem
    assert str(error).startswith(f"w.toml:{line}: {field}: ")
    assert "hunter2" not in str(error)


def test_the_most_secrets_a_config_may_ask_for() -> None:
    text = _secrets(*((f"s{i}", f"E{i}") for i in range(MAX_SECRETS)))
    assert len(parse_config(text).secrets) == MAX_SECRETS


@pytest.mark.parametrize(
    ("secrets", "field", "problem"),
    [
        ([{"name": "DB", "env": "X"}], "secrets[0].name", "is not a secret name"),
        ([{"name": "db"}], "secrets[0]", "needs exactly one of env"),
        ([{"name": "db", "env": "X", "value": "v"}], "secrets[0].value", "unknown key"),
        ({"name": "db", "env": "X"}, "secrets", "write [[secrets]], not [secrets]"),
        ([["db", "X"]], "secrets[0]", "must be a table"),
    ],
)
def test_secrets_errors_from_the_host_name_the_field(
    secrets: Any, field: str, problem: str
) -> None:
    data = {**parse_config("").to_dict(), "secrets": secrets}
    with pytest.raises(ConfigFileError) as info:
        WorkloadConfig.from_dict(data)
    assert (info.value.line, info.value.field) == (None, field)
    assert problem in info.value.problem


# -- the values, once released ---------------------------------------------------------------------


def test_without_the_released_values_the_invocation_is_refused() -> None:
    config = parse_config(CONFIG, source="app/Enarx.toml")
    for secrets in (None, {}, {"db-password": b"pw-hunter2"}):
        with pytest.raises(UnsupportedConfigError) as info:
            Invocation.from_config(config, program="server.wasm", secrets=secrets)
        message = str(info.value)
        missing = "db-password, api-token" if not secrets else "api-token"
        assert message.startswith(f"app/Enarx.toml asks Steward for secrets ({missing}), ")
        assert "donjon deploy --steward URL --ca FILE" in message
        assert "donjon run --secret NAME=FILE" in message
        assert "hunter2" not in message
        assert isinstance(info.value, ConfigError)


def test_with_them_the_env_is_env_then_secrets_in_config_order() -> None:
    config = parse_config(CONFIG)
    # Given in another order, with one the config does not ask for.
    released = {"api-token": b"tok-1", "unasked": b"nope", "db-password": b"pw-1"}
    invocation = Invocation.from_config(config, program="server.wasm", secrets=released)
    assert invocation.env == (
        ("FD_COUNT", "4"),
        ("FD_NAMES", "stdin:stdout:stderr:api"),
        ("LANGUAGE", "en"),
        ("REGION", "eu-west"),
        ("DB_PASSWORD", "pw-1"),
        ("API_TOKEN", "tok-1"),
    )
    assert invocation.argv == ("server.wasm", "--serve", "--verbose")


def test_a_config_without_secrets_needs_no_values() -> None:
    config = parse_config('[env]\nA = "1"\n')
    assert Invocation.from_config(config, program="m.wasm").env[-1] == ("A", "1")
    # Values Steward never released for it are not added either.
    given = Invocation.from_config(config, program="m.wasm", secrets={"db": b"x"})
    assert given.env == Invocation.from_config(config, program="m.wasm").env


def test_repr_never_shows_a_value() -> None:
    config = parse_config(CONFIG.replace('REGION = "eu-west"', 'REGION = "plain-hunter2"'))
    invocation = Invocation.from_config(
        config,
        program="server.wasm",
        secrets={"db-password": b"pw-hunter2", "api-token": b"tok-hunter2"},
    )
    for shown in (repr(config), str(config), repr(invocation), str(invocation)):
        assert "hunter2" not in shown
    # Names are not values: they stay visible for debugging.
    assert "db-password" in repr(config) and "DB_PASSWORD" in repr(config)


# -- one secret-name grammar in three places ---------------------------------------------------

NAMES = [
    ("a", True),
    ("0", True),
    ("db-password", True),
    ("db_password", True),
    ("9-_", True),
    ("a" * 64, True),
    ("", False),
    ("a" * 65, False),
    ("DB", False),
    ("dB", False),
    ("-db", False),
    ("_db", False),
    (".hidden", False),
    ("a.b", False),
    ("a b", False),
    ("a/b", False),
    ("../x", False),
    ("db\n", False),
    ("\ndb", False),
    ("db\x00", False),
    ("é", False),
    ("\uff41", False),  # fullwidth a
    ("\u0661", False),  # Arabic-Indic digit one
]
PATTERNS = {
    "donjon.keep.config._SECRET_NAME": keep_config._SECRET_NAME,
    "donjon.steward.config.SECRET_NAME": steward_config.SECRET_NAME,
    "donjon.steward.secrets.SECRET_NAME": steward_secrets.SECRET_NAME,
}


@pytest.mark.parametrize(("name", "valid"), NAMES, ids=[repr(n)[:20] for n, _ in NAMES])
def test_the_three_secret_name_patterns_agree(name: str, valid: bool) -> None:
    verdicts = {where: bool(p.fullmatch(name)) for where, p in PATTERNS.items()}
    assert verdicts == dict.fromkeys(PATTERNS, valid)
    assert steward_secrets.is_secret_name(name) is valid


@pytest.mark.parametrize(("name", "valid"), NAMES, ids=[repr(n)[:20] for n, _ in NAMES])
def test_config_policy_and_store_accept_the_same_names(
    name: str, valid: bool, tmp_path: Path
) -> None:
    quoted = json.dumps(name)  # a TOML basic string: JSON's escapes are TOML's
    workload = "donjon:workload:sha256:" + "ab" * 32

    def config() -> object:
        return parse_config(f'[[secrets]]\nname = {quoted}\nenv = "S"\n')

    def policy() -> object:
        return StewardPolicy.parse(
            f'{DEV_POLICY_TOML}[steward.secrets]\n{quoted} = ["{workload}"]\n', source="p.toml"
        )

    def store() -> object:
        return SecretStore(tmp_path).set(name, b"v")

    for step, error in ((config, ConfigFileError), (policy, ConfigError), (store, SecretNameError)):
        if valid:
            step()
        else:
            with pytest.raises(error):
                step()


def test_match_is_not_fullmatch_for_the_anchored_pattern() -> None:
    # Why every caller must use fullmatch (or is_secret_name): `$` also matches before a final
    # newline, so .match would take "db\n" for a name.
    assert steward_secrets.SECRET_NAME.match("db\n")
    assert not steward_secrets.SECRET_NAME.fullmatch("db\n")
    assert not re.fullmatch(keep_config._SECRET_NAME, "db\n")


def test_an_env_secret_must_be_text_and_a_file_secret_may_be_anything(tmp_path: Path) -> None:
    config = parse_config(
        '[[secrets]]\nname = "token"\nenv = "TOKEN"\n'
        '[[secrets]]\nname = "tls-key"\nfile = "tls.key"\n'
    )
    binary = bytes(range(256))
    for bad in (b"\xff\xfe", b"a\x00b"):
        with pytest.raises(UnsupportedConfigError, match="'token' is not UTF-8 text without NUL"):
            Invocation.from_config(
                config,
                program="m.wasm",
                secrets={"token": bad, "tls-key": binary},
                secrets_dir=tmp_path,
            )
    with pytest.raises(UnsupportedConfigError, match="secrets_dir"):
        Invocation.from_config(config, program="m.wasm", secrets={"token": b"t", "tls-key": binary})
    invocation = Invocation.from_config(
        config, program="m.wasm", secrets={"token": b"t", "tls-key": binary}, secrets_dir=tmp_path
    )
    assert invocation.env[-1] == ("TOKEN", "t")
    assert invocation.preopens[-1] == Preopen(tmp_path, "/run/secrets", writable=False)
    # The file secret is part of the identity, under its file name.
    assert config.to_dict()["secrets"] == [
        {"name": "token", "env": "TOKEN"},
        {"name": "tls-key", "file": "tls.key"},
    ]
