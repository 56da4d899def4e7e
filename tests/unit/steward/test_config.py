"""Steward policy files and settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from donjon.attestation.policy import Policy
from donjon.backends.nil_evidence import load_or_create_dev_key
from donjon.errors import ConfigError, UsageError
from donjon.steward.config import (
    DEFAULT_CERT_LIFETIME,
    StewardPolicy,
    StewardSettings,
    format_duration,
    parse_duration,
    parse_listen,
)

WORKLOAD = "donjon:workload:sha256:" + "ab" * 32

FLEET = f"""\
name = "fleet"
platforms = ["sev-snp"]

[sev-snp]
min_tcb = {{ bl = 3, snp = 8 }}

[steward]
workloads = [
    "{WORKLOAD}",
]
dns_names = ["*.keeps.example.com", "api.example.com"]
enarx = false
"""


def test_policy_file_with_steward_table() -> None:
    policy = StewardPolicy.parse(FLEET, source="fleet.toml")
    assert policy.name == "fleet"
    assert policy.workloads == frozenset({WORKLOAD})
    assert policy.dns_names == ("*.keeps.example.com", "api.example.com")
    assert policy.enarx is False
    assert policy.allow_insecure is False
    attestation_only = FLEET.split("[steward]")[0]
    assert policy.attestation == Policy.parse(attestation_only, source="fleet.toml")
    assert len(policy.digest) == 32


def test_digest_covers_both_parts() -> None:
    base = StewardPolicy.parse(FLEET, source="a")
    assert StewardPolicy.parse(FLEET, source="b").digest == base.digest
    assert StewardPolicy.parse(FLEET.replace("enarx = false", ""), source="a").digest != base.digest
    assert (
        StewardPolicy.parse(FLEET.replace("snp = 8", "snp = 9"), source="a").digest != base.digest
    )


def test_without_steward_table_defaults_apply() -> None:
    policy = StewardPolicy.parse('name = "plain"\n', source="p.toml")
    assert policy.workloads == frozenset()
    assert policy.dns_names == ()
    assert policy.enarx is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[steward]\nworkload = []\n", r"p\.toml:2: steward\.workload: unknown key"),
        (
            '[steward]\nworkloads = ["sha256:00"]\n',
            r"p\.toml:2: steward\.workloads: .* is not a workload",
        ),
        ("[steward]\nworkloads = 3\n", r"steward\.workloads: must be a list"),
        ('[steward]\ndns_names = ["*.com"]\n', r"steward\.dns_names: '\*\.com' is not a DNS name"),
        ('[steward]\ndns_names = ["bad_name.example"]\n', r"is not a DNS name"),
        ('[steward]\nenarx = "yes"\n', r"p\.toml:2: steward\.enarx: must be true or false"),
        ('[steward]\ndev_keys = ["zz"]\n', r"steward\.dev_keys: 'zz'… is not hex"),
        ('[steward]\ndev_keys = ["3059"]\n', r"is not a P-384 SubjectPublicKeyInfo"),
        ("steward.enarx = true\n", r"steward: must be one plain \[steward\] table"),
        ("steward = 1\n", r"steward: must be a table"),
        ("[steward]\n[sev-snp]\nbogus = 1\n", r"p\.toml:3: sev-snp\.bogus: unknown key"),
        ("x = = 1\n", r"p\.toml:1: invalid TOML"),
    ],
)
def test_invalid_policy_files_name_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StewardPolicy.parse(text, source="p.toml")


def test_attestation_errors_after_the_steward_table_keep_their_line() -> None:
    text = '[steward]\nenarx = true\nworkloads = []\n\n[tdx]\nrequire_sept_ve_disable = "no"\n'
    with pytest.raises(ConfigError, match=r"p\.toml:6: tdx\.require_sept_ve_disable"):
        StewardPolicy.parse(text, source="p.toml")


def test_dev_policy_admits_nil_and_production_does_not() -> None:
    assert StewardPolicy.dev().allow_insecure is True
    assert StewardPolicy.named("dev").name == "dev"
    assert StewardPolicy.named("production").allow_insecure is False
    assert StewardPolicy.named("permissive").name == "permissive"


def test_named_loads_files_and_explains_unknown_names(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET.replace('name = "fleet"\n', ""))
    assert StewardPolicy.named(str(path)).name == "fleet"  # the file's stem
    with pytest.raises(ConfigError, match="no built-in policy named 'nope'"):
        StewardPolicy.named("nope")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        StewardPolicy.named(str(tmp_path / "bin.toml"))


def test_dev_keys_pin_real_development_keys(tmp_path: Path) -> None:
    spki = load_or_create_dev_key(tmp_path / "k.pem").spki
    policy = StewardPolicy.parse(f'[steward]\ndev_keys = ["{spki.hex()}"]\n', source="p")
    assert policy.dev_keys == frozenset({spki})


@pytest.mark.parametrize(
    ("pattern", "name", "allowed"),
    [
        ("*.keeps.example.com", "a.keeps.example.com", True),
        ("*.keeps.example.com", "a.b.keeps.example.com", False),
        ("*.keeps.example.com", "keeps.example.com", False),
        ("*.keeps.example.com", "xkeeps.example.com", False),
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "x.api.example.com", False),
    ],
)
def test_dns_name_patterns(pattern: str, name: str, allowed: bool) -> None:
    policy = StewardPolicy.parse(f'[steward]\ndns_names = ["{pattern}"]\n', source="p")
    assert policy.allows_dns_name(name) is allowed


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("30s", timedelta(seconds=30)),
        ("30m", timedelta(minutes=30)),
        ("24h", DEFAULT_CERT_LIFETIME),
        ("7d", timedelta(days=7)),
    ],
)
def test_durations(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value
    assert format_duration(value) == text


@pytest.mark.parametrize("text", ["", "24", "1w", "-1h", "1.5h", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError, match="not understood"):
        parse_duration(text)


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    assert parse_listen("localhost:80") == ("localhost", 80)
    for bad in ("127.0.0.1", ":80", "host:99999", "a b:1"):
        with pytest.raises(UsageError):
            parse_listen(bad)


def test_settings_validate(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="go together"):
        StewardSettings(state_dir=tmp_path, tls_cert=tmp_path / "c")
    with pytest.raises(UsageError, match="out of range"):
        StewardSettings(state_dir=tmp_path, cert_lifetime=timedelta(days=29))
    with pytest.raises(UsageError, match="out of range"):
        StewardSettings(state_dir=tmp_path, cert_lifetime=timedelta(seconds=5))
    assert StewardSettings(state_dir=tmp_path).cert_lifetime == timedelta(hours=24)
