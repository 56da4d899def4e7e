"""Bearer tokens of the keep manager: stored hashed, compared in constant time, names as owners."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest

from donjon.errors import ConfigError
from donjon.host.auth import (
    MAX_TOKEN_CHARS,
    AuthenticationError,
    Principal,
    TokenStore,
    bearer_token,
)


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens")


def test_add_returns_a_token_stored_only_as_its_hash(store: TokenStore) -> None:
    token = store.add("alice")
    assert len(token) == 64 and int(token, 16) >= 0
    text = store.path.read_text()
    assert token not in text
    assert text == f"alice:{hashlib.sha256(token.encode()).hexdigest()}\n"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.authenticate(token) == Principal("alice")


def test_tokens_are_distinct_and_map_to_their_names(store: TokenStore, tmp_path: Path) -> None:
    a, b = store.add("alice"), store.add("bob")
    assert a != b
    reopened = TokenStore(tmp_path / "tokens")  # e.g. after a restart
    assert reopened.authenticate(a) == Principal("alice")
    assert reopened.authenticate(b) == Principal("bob")


@pytest.mark.parametrize("token", [None, "", "0" * 64, "x", "a" * (MAX_TOKEN_CHARS + 1)])
def test_bad_tokens_are_refused(store: TokenStore, token: str | None) -> None:
    real = store.add("alice")
    with pytest.raises(AuthenticationError) as e:
        store.authenticate(token)
    assert "token" in e.value.diagnostics()
    assert real not in e.value.diagnostics()


def test_a_store_without_a_file_knows_no_token(store: TokenStore) -> None:
    with pytest.raises(AuthenticationError, match="unknown token"):
        store.authenticate("0" * 64)


def test_every_stored_hash_is_compared_in_constant_time(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Observe (not replace) the comparison: it must be hmac.compare_digest, run against every
    # entry whether or not an early one matched, so timing does not reveal which one did.
    tokens = [store.add(f"user{i}") for i in range(5)]
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def observed(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", observed)  # the module auth.py calls through
    assert store.authenticate(tokens[0]) == Principal("user0")
    assert len(calls) == 5
    calls.clear()
    with pytest.raises(AuthenticationError):
        store.authenticate("f" * 64)
    assert len(calls) == 5
    assert all(a == hashlib.sha256(b"f" * 64).digest() for a, _ in calls)


@pytest.mark.parametrize("name", ["", "a" * 65, "al ice", "../x", "é", "a:b"])
def test_bad_names_are_refused(store: TokenStore, name: str) -> None:
    with pytest.raises(ConfigError, match="token name"):
        store.add(name)
    assert not store.path.exists()


def test_a_name_is_used_once(store: TokenStore) -> None:
    store.add("alice")
    with pytest.raises(ConfigError, match="exists already"):
        store.add("alice")


def test_comments_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"secret-token").hexdigest()
    path = tmp_path / "tokens"
    path.write_text(f"# operators\n\n  carol:{digest}  \n")
    assert TokenStore(path).authenticate("secret-token") == Principal("carol")


@pytest.mark.parametrize(
    "line", ["carol", "carol:", "carol:abc", "bad name:" + "0" * 64, "carol:" + "G" * 64]
)
def test_a_malformed_token_file_names_its_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "tokens"
    path.write_text("# header\n" + line + "\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: expected 'name:sha256hex'"):
        TokenStore(path)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("BEARER abc", "abc"),
        ("Basic abc", None),
        ("Bearer", ""),
        ("abc", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_tokens_added_or_removed_by_another_process_apply_at_once(tmp_path: Path) -> None:
    # The running manager's store, and `donjon host token` (another process, another store).
    serving = TokenStore(tmp_path / "tokens")
    admin = serving.add("admin")
    alice = TokenStore(tmp_path / "tokens").add("alice")
    assert serving.authenticate(alice) == Principal("alice")
    # Revoking: the operator deletes alice's line.
    lines = serving.path.read_text().splitlines(keepends=True)
    serving.path.write_text("".join(line for line in lines if not line.startswith("alice:")))
    with pytest.raises(AuthenticationError, match="unknown token"):
        serving.authenticate(alice)
    assert serving.authenticate(admin) == Principal("admin")


def test_a_token_file_damaged_while_serving_admits_nobody(tmp_path: Path) -> None:
    serving = TokenStore(tmp_path / "tokens")
    admin = serving.add("admin")
    good = serving.path.read_text()
    serving.path.write_text(good + "not a token line\n")
    with pytest.raises(AuthenticationError, match="token file is damaged"):
        serving.authenticate(admin)
    serving.path.write_text(good)  # repaired
    assert serving.authenticate(admin) == Principal("admin")
