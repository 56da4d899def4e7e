"""The state directory: CA created once with mode 0600, reloaded, never half-made."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from donjon.errors import ConfigError
from donjon.steward.state import CA_CERT_FILE, CA_KEY_FILE, init_state, load_state

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_a_private_key_and_a_ca(tmp_path: Path) -> None:
    state_dir = tmp_path / "steward"
    state = init_state(state_dir, now=NOW)
    assert state.created is True
    assert _mode(state_dir) == 0o700
    assert _mode(state_dir / CA_KEY_FILE) == 0o600
    assert (state_dir / CA_KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert state.ca.certificate.not_valid_before_utc <= NOW
    assert state.ca.self_signed
    assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]


def test_second_start_loads_the_same_ca(tmp_path: Path) -> None:
    first = init_state(tmp_path, now=NOW)
    second = init_state(tmp_path, now=NOW)
    assert second.created is False
    assert second.ca.certificate_der == first.ca.certificate_der
    assert second.ca.derive_secret(b"x") == first.ca.derive_secret(b"x")
    assert load_state(tmp_path).ca.certificate_der == first.ca.certificate_der


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    init_state(tmp_path, now=NOW)
    os.chmod(tmp_path / CA_KEY_FILE, 0o644)
    with pytest.raises(ConfigError, match=r"mode 0644.*chmod 600"):
        init_state(tmp_path, now=NOW)


def test_half_present_ca_is_refused(tmp_path: Path) -> None:
    init_state(tmp_path, now=NOW)
    (tmp_path / CA_CERT_FILE).unlink()
    with pytest.raises(ConfigError, match=r"has ca\.key but not its pair"):
        init_state(tmp_path, now=NOW)
    with pytest.raises(ConfigError, match="steward init"):
        load_state(tmp_path)


def test_force_rotates_and_keeps_backups(tmp_path: Path) -> None:
    old = init_state(tmp_path, now=NOW)
    new = init_state(tmp_path, now=NOW, force=True)
    assert new.created and new.ca.certificate_der != old.ca.certificate_der
    backups = sorted(p.name for p in tmp_path.glob("*.bak"))
    assert backups == ["ca.crt.20260101T000000Z.bak", "ca.key.20260101T000000Z.bak"]
    assert _mode(tmp_path / "ca.key.20260101T000000Z.bak") == 0o600


def test_mismatched_key_and_certificate_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    init_state(a, now=NOW)
    init_state(b, now=NOW)
    (a / CA_CERT_FILE).write_bytes((b / CA_CERT_FILE).read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        load_state(a)


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot create|not a directory"):
        init_state(tmp_path / "f", now=NOW)
