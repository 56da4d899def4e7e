"""nil evidence provider: the development key file, the runtime measurement, real signing."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import donjon
from donjon.attestation.nil import NilVerifier
from donjon.attestation.result import Endorsements, Platform
from donjon.backends.evidence import EvidenceError
from donjon.backends.nil_evidence import (
    DEV_KEY_ENV,
    NilEvidenceProvider,
    default_dev_key_path,
    load_or_create_dev_key,
    runtime_files,
    runtime_measurement,
)
from donjon.errors import ConfigError

NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """A permissive umask, so the test proves the code sets modes itself."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# --- where the key lives ---


def test_default_path_precedence() -> None:
    env = {DEV_KEY_ENV: "/k/explicit.pem", "XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}
    assert default_dev_key_path(env) == Path("/k/explicit.pem")
    del env[DEV_KEY_ENV]
    assert default_dev_key_path(env) == Path("/xdg/donjon/nil-dev-key.pem")
    env["XDG_DATA_HOME"] = "relative/ignored"
    assert default_dev_key_path(env) == Path("/home/u/.local/share/donjon/nil-dev-key.pem")
    with pytest.raises(ConfigError, match="XDG_DATA_HOME or HOME"):
        default_dev_key_path({})


def test_default_provider_uses_the_environment(tmp_path: Path) -> None:
    provider = NilEvidenceProvider.default({"XDG_DATA_HOME": str(tmp_path)})
    assert provider.key_path == tmp_path / "donjon" / "nil-dev-key.pem"
    assert not provider.key_path.exists()  # created on first use, not on construction


# --- the key file ---


def test_created_private_and_reused(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "data" / "donjon" / "nil-dev-key.pem"
    key = load_or_create_dev_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_or_create_dev_key(path)
    assert again.fingerprint == key.fingerprint == hashlib.sha256(key.spki).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["nil-dev-key.pem"]  # no temp files
    assert key.fingerprint in repr(key) and "PRIVATE" not in repr(key)


def test_concurrent_first_use_yields_one_key(tmp_path: Path) -> None:
    path = tmp_path / "donjon" / "nil-dev-key.pem"
    results: list[str] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait(timeout=10)
        results.append(load_or_create_dev_key(path).fingerprint)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 6 and len(set(results)) == 1
    assert [p.name for p in path.parent.iterdir()] == ["nil-dev-key.pem"]


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    load_or_create_dev_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"mode 0644\); run `chmod 600"):
        load_or_create_dev_key(path)


def test_symlinked_key_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.pem"
    load_or_create_dev_key(real)
    link = tmp_path / "link.pem"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="is a symbolic link, which is refused"):
        load_or_create_dev_key(link)


def test_group_writable_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by other users"):
        load_or_create_dev_key(shared / "k.pem")
    assert list(shared.iterdir()) == []


def test_garbage_key_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW1hdGVyaWFs\n-----END PRIVATE KEY-----\n"
    )
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key") as info:
        load_or_create_dev_key(path)
    assert "c2VjcmV0" not in info.value.message


def test_wrong_curve_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="must be an EC P-384 key"):
        load_or_create_dev_key(path)


def test_unwritable_location_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=f"set {DEV_KEY_ENV}"):
        load_or_create_dev_key(blocker / "donjon" / "k.pem")


# --- the measurement ---


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_measurement_is_the_documented_computation(tmp_path: Path) -> None:
    pkg = _tree(
        tmp_path / "donjon",
        {
            "keep/run.py": b"run",
            "backends/b.py": b"bee",
            "backends/sub/c.txt": b"",
            "backends/__pycache__/b.cpython-311.pyc": b"ignored",
            "backends/.b.py.swp": b"ignored",
            "cli/other.py": b"not measured",
        },
    )
    h = hashlib.sha384(b"donjon/nil-measurement/v1\x00")
    h.update(b"\x00\x051.2.3")
    for rel, data in [
        (b"backends/b.py", b"bee"),
        (b"backends/sub/c.txt", b""),
        (b"keep/run.py", b"run"),
    ]:
        h.update(len(rel).to_bytes(2, "big") + rel + len(data).to_bytes(8, "big") + data)
    assert runtime_measurement(pkg, version="1.2.3") == h.digest()
    assert [p.relative_to(pkg).as_posix() for p in runtime_files(pkg)] == [
        "backends/b.py",
        "backends/sub/c.txt",
        "keep/run.py",
    ]


def test_measurement_changes_with_code_version_and_file_boundaries(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"keep/x.py": b"xy", "keep/y.py": b"z"})
    b = _tree(tmp_path / "b", {"keep/x.py": b"x", "keep/y.py": b"yz"})
    c = _tree(tmp_path / "c", {"keep/x.py": b"xy", "keep/y.py": b"z", "keep/new.py": b""})
    base = runtime_measurement(a, version="1")
    assert len(base) == 48
    assert runtime_measurement(a, version="1") == base
    assert runtime_measurement(a, version="2") != base
    assert runtime_measurement(b, version="1") != base
    assert runtime_measurement(c, version="1") != base


def test_installed_package_measurement_covers_this_module() -> None:
    pkg = Path(donjon.__file__).resolve().parent
    names = [p.relative_to(pkg).as_posix() for p in runtime_files(pkg)]
    assert "backends/nil_evidence.py" in names and "backends/probe.py" in names
    assert not any(n.startswith("cli/") or "__pycache__" in n for n in names)
    assert runtime_measurement() == runtime_measurement(pkg, version=donjon.__version__)


# --- evidence ---


def test_evidence_verifies_and_carries_the_claims(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "donjon" / "nil-dev-key.pem"
    provider = NilEvidenceProvider(key_path=path, hostname="keep-host")
    assert provider.platform is Platform.NIL
    rd = bytes(range(64))
    with caplog.at_level(logging.DEBUG, logger="donjon"):
        evidence = provider.evidence(rd)
    verified = NilVerifier(trusted_keys=[provider.key.spki]).verify(
        evidence, endorsements=Endorsements(), now=NOW
    )
    assert verified.report_data == rd
    assert verified.measurement == runtime_measurement()
    assert verified.debug is True
    assert verified.claims["hostname"] == "keep-host"
    assert verified.claims["version"] == donjon.__version__
    assert verified.claims["dev_key_sha256"] == provider.key.fingerprint
    key_text = path.read_text()
    assert "PRIVATE KEY" not in caplog.text and key_text.splitlines()[1] not in caplog.text
    assert f"created nil development key {path}" in caplog.text


def test_evidence_is_fresh_per_report_data(tmp_path: Path) -> None:
    provider = NilEvidenceProvider(key_path=tmp_path / "k.pem", measurement=bytes(48))
    one = NilVerifier().verify(
        provider.evidence(b"\x01" * 64), endorsements=Endorsements(), now=NOW
    )
    two = NilVerifier().verify(
        provider.evidence(b"\x02" * 64), endorsements=Endorsements(), now=NOW
    )
    assert (one.report_data, two.report_data) == (b"\x01" * 64, b"\x02" * 64)
    assert one.measurement == bytes(48)


@pytest.mark.parametrize("size", [0, 48, 65])
def test_report_data_must_be_64_bytes(tmp_path: Path, size: int) -> None:
    provider = NilEvidenceProvider(key_path=tmp_path / "k.pem", measurement=bytes(48))
    with pytest.raises(EvidenceError, match="exactly 64 bytes"):
        provider.evidence(bytes(size))
    assert not (tmp_path / "k.pem").exists()


def test_measurement_override_must_be_sha384_sized(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="48 bytes"):
        NilEvidenceProvider(key_path=tmp_path / "k.pem", measurement=bytes(32))


def test_hostname_is_made_printable_and_bounded(tmp_path: Path) -> None:
    provider = NilEvidenceProvider(
        key_path=tmp_path / "k.pem", hostname="bad\x1b[31mname" + "é" * 300, measurement=bytes(48)
    )
    verified = NilVerifier().verify(
        provider.evidence(bytes(64)), endorsements=Endorsements(), now=NOW
    )
    hostname = verified.claims["hostname"]
    assert hostname.startswith("bad[31mname") and "\x1b" not in hostname
    assert len(hostname.encode()) <= 255
