"""Credentials: the environment, registries.toml, Docker config.json, and challenges."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.errors import ConfigError
from donjon.registry.credentials import (
    Challenge,
    Credentials,
    credentials_from_environ,
    parse_challenges,
    parse_credentials_file,
)
from donjon.registry.errors import CredentialsError

SECRET = "s3cr3t-p4ss"


def test_password_never_in_repr_or_errors() -> None:
    creds = Credentials("ci", SECRET)
    assert SECRET not in repr(creds)
    assert creds.basic_header() == "Basic " + base64.b64encode(f"ci:{SECRET}".encode()).decode()
    with pytest.raises(CredentialsError) as info:
        parse_credentials_file(
            b'[registries."r:1"]\nusername = "ci"\npassword = "' + SECRET.encode() + b'"\nx = 1\n',
            source="f.toml",
        )
    assert SECRET not in info.value.message
    assert isinstance(info.value, ConfigError)


def test_environment() -> None:
    assert credentials_from_environ({}) is None
    creds = credentials_from_environ(
        {"DONJON_REGISTRY_USER": "u", "DONJON_REGISTRY_PASSWORD": SECRET}
    )
    assert creds == Credentials("u", SECRET)
    with pytest.raises(CredentialsError, match="both"):
        credentials_from_environ({"DONJON_REGISTRY_USER": "u"})
    with pytest.raises(CredentialsError, match="both"):
        credentials_from_environ({"DONJON_REGISTRY_PASSWORD": SECRET})


def test_registries_toml() -> None:
    table = parse_credentials_file(
        b'[registries."localhost:5000"]\nusername = "a"\npassword = "1"\n'
        b'[registries."ghcr.io"]\nusername = "b"\npassword = "2"\n',
        source="r.toml",
    )
    assert table.lookup("localhost:5000") == Credentials("a", "1")
    assert table.lookup("ghcr.io") == Credentials("b", "2")
    assert table.lookup("localhost:5001") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"[registries\n", "not valid TOML"),
        (b"other = 1\n", "unknown top-level key"),
        (b'[registries."x"]\nusername = "a"\n', "both be strings"),
        (b"registries = 1\n", "table of tables"),
        (b'[registries."x"]\nusername = "a:b"\npassword = "p"\n', "no ':'"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_registries_toml_errors(text: bytes, reason: str) -> None:
    with pytest.raises(CredentialsError, match=reason):
        parse_credentials_file(text, source="r.toml")


def test_docker_config_json() -> None:
    auth = base64.b64encode(b"alice:pa:ss").decode()
    doc = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": auth},
            "localhost:5000": {"username": "bob", "password": "pw"},
            "helper.example": {},
        },
        "credsStore": "desktop",
    }
    table = parse_credentials_file(json.dumps(doc).encode(), source="config.json")
    assert table.lookup("index.docker.io") == Credentials("alice", "pa:ss")
    assert table.lookup("localhost:5000") == Credentials("bob", "pw")
    assert table.lookup("helper.example") is None
    with pytest.raises(CredentialsError, match="identity token"):
        parse_credentials_file(
            json.dumps({"auths": {"r": {"identitytoken": "t"}}}).encode(), source="c.json"
        )
    with pytest.raises(CredentialsError, match="base64"):
        parse_credentials_file(json.dumps({"auths": {"r": {"auth": "!!"}}}).encode(), source="c")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            [
                'Bearer realm="https://auth.example/token",service="registry.example",'
                'scope="repository:a/b:pull,push"'
            ],
            [
                Challenge(
                    "bearer",
                    (
                        ("realm", "https://auth.example/token"),
                        ("service", "registry.example"),
                        ("scope", "repository:a/b:pull,push"),
                    ),
                )
            ],
        ),
        (['Basic realm="donjon-test"'], [Challenge("basic", (("realm", "donjon-test"),))]),
        (
            ['Basic realm=plain, Bearer realm="x\\"y"'],
            [
                Challenge("basic", (("realm", "plain"),)),
                Challenge("bearer", (("realm", 'x"y'),)),
            ],
        ),
        (['Bearer realm="unterminated'], [Challenge("bearer", ())]),
        ([""], []),
        (["x" * 9000], []),
    ],
)
def test_challenges(values: list[str], expected: list[Challenge]) -> None:
    assert list(parse_challenges(values)) == expected


@given(st.lists(st.text(max_size=200), max_size=3))
def test_challenges_never_crash(values: list[str]) -> None:
    for challenge in parse_challenges(values):
        assert challenge.scheme == challenge.scheme.lower()


@given(st.binary(max_size=512))
def test_credentials_file_only_raises_its_error(data: bytes) -> None:
    try:
        parse_credentials_file(data, source="f")
    except CredentialsError:
        pass
