"""The secret store: one 0600 file per secret in a 0700 directory, written atomically, and
refused (never silently used) when its files or directory are unsafe."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.errors import ConfigError, UsageError
from donjon.steward.secrets import (
    MAX_SECRET_BYTES,
    MAX_SECRETS,
    SECRET_NAME,
    SECRETS_DIR,
    SecretNameError,
    SecretStore,
    SecretStoreError,
    SecretValueError,
    check_secret_name,
    is_secret_name,
)

VALUE = b"S3CRET-correct-horse-battery-staple"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    return SecretStore(tmp_path / "state")


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that changes it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


# -- the basic life cycle ------------------------------------------------------------------------


def test_set_get_replace_remove(store: SecretStore, tmp_path: Path) -> None:
    assert store.directory == tmp_path / "state" / SECRETS_DIR
    assert store.get("db-password") is None
    assert store.names() == []
    assert store.remove("db-password") is False

    assert store.set("db-password", VALUE) is False
    assert store.get("db-password") == VALUE
    assert (store.directory / "db-password").read_bytes() == VALUE
    assert store.set("db-password", b"\x00new\xff") is True
    assert store.get("db-password") == b"\x00new\xff"

    assert store.remove("db-password") is True
    assert store.get("db-password") is None
    assert store.remove("db-password") is False
    assert list(store.directory.iterdir()) == []


def test_a_store_on_a_missing_directory_is_empty(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "nowhere")
    assert store.get("x") is None
    assert store.names() == []
    assert store.remove("x") is False
    assert not (tmp_path / "nowhere").exists()  # reading never creates anything


def test_names_are_sorted_with_sizes_and_utc_times(store: SecretStore) -> None:
    store.set("zeta", b"z" * 10)
    store.set("alpha", b"a")
    store.set("m-1_x", VALUE)
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    os.utime(store.directory / "alpha", (when.timestamp(), when.timestamp()))
    listed = store.names()
    assert [(n, size) for n, size, _ in listed] == [
        ("alpha", 1),
        ("m-1_x", len(VALUE)),
        ("zeta", 10),
    ]
    assert listed[0][2] == when
    assert all(t.tzinfo is UTC for _, _, t in listed)


def test_values_of_every_byte_and_the_size_limit(store: SecretStore) -> None:
    every = bytes(range(256)) * (MAX_SECRET_BYTES // 256)
    assert len(every) == MAX_SECRET_BYTES
    store.set("max", every)
    assert store.get("max") == every
    store.set("one", b"\n")
    assert store.get("one") == b"\n"  # raw bytes: nothing stripped


def test_a_bytearray_value_is_stored_as_bytes(store: SecretStore) -> None:
    store.set("ba", bytearray(b"abc"))  # type: ignore[arg-type]
    assert store.get("ba") == b"abc"


# -- modes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277])
@pytest.mark.usefixtures("umask")
def test_modes_are_exact_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    os.umask(mask)
    store = SecretStore(tmp_path / "state")
    store.set("k", VALUE)
    store.set("k", VALUE + b"2")  # a replacement keeps the mode too
    os.umask(0o022)
    assert _mode(store.directory) == 0o700
    assert _mode(store.directory / "k") == 0o600
    assert store.get("k") == VALUE + b"2"


def test_an_existing_state_dir_is_left_as_it_is(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)  # noqa: S103 - a state dir others may list is allowed
    SecretStore(state).set("k", VALUE)
    assert _mode(state) == 0o755  # the CA's business; only secrets/ is ours
    assert _mode(state / SECRETS_DIR) == 0o700


# -- names ---------------------------------------------------------------------------------------

BAD_NAMES = [
    "../x",
    "..",
    ".",
    ".hidden",
    "Upper",
    "a" * 65,
    "",
    "a.b",
    "a/b",
    "-lead",
    "_lead",
    "x\n",
    "x\x00",
    "sp ace",
    "é",
    "\N{FULLWIDTH LATIN SMALL LETTER A}",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused(store: SecretStore, name: str) -> None:
    assert not is_secret_name(name)
    with pytest.raises(SecretNameError, match="is not a secret name") as info:
        store.set(name, VALUE)
    assert issubclass(SecretNameError, UsageError) and info.value.exit_code == 2
    assert "a-z, 0-9" in info.value.diagnostics()
    assert store.get(name) is None
    with pytest.raises(SecretNameError):
        store.remove(name)
    assert not store.directory.exists()  # refused before anything was created


def test_a_trailing_newline_matches_the_regex_but_not_a_name() -> None:
    # Why the module matches SECRET_NAME in full: `$` also matches before a final newline.
    assert SECRET_NAME.match("x\n") is not None
    assert not is_secret_name("x\n")


@pytest.mark.parametrize("name", ["a", "0", "a" * 64, "db-password_2", "9-_"])
def test_good_names(store: SecretStore, name: str) -> None:
    assert check_secret_name(name) == name
    store.set(name, VALUE)
    assert store.get(name) == VALUE
    assert [n for n, _, _ in store.names()] == [name]


def test_a_long_bad_name_is_cut_in_the_message() -> None:
    with pytest.raises(SecretNameError) as info:
        check_secret_name("A" * 1000)
    assert len(info.value.diagnostics()) < 300


@given(st.text(max_size=70))
def test_valid_names_are_plain_file_names(name: str) -> None:
    expected = (
        1 <= len(name) <= 64
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789_-" for c in name)
        and name[0] not in "_-"
    )
    assert is_secret_name(name) is expected
    if expected:
        assert Path(name).name == name and not name.startswith(".")


# -- values --------------------------------------------------------------------------------------


def test_empty_and_oversized_values_are_refused(store: SecretStore) -> None:
    with pytest.raises(SecretValueError, match="is empty"):
        store.set("k", b"")
    with pytest.raises(SecretValueError, match=f"65537 bytes, more than the {MAX_SECRET_BYTES}"):
        store.set("k", b"x" * (MAX_SECRET_BYTES + 1))
    assert store.get("k") is None


def test_a_file_larger_than_the_limit_is_refused_on_read(store: SecretStore) -> None:
    store.set("big", b"x")
    (store.directory / "big").write_bytes(VALUE * (MAX_SECRET_BYTES // len(VALUE) + 1))
    with pytest.raises(SecretStoreError, match="larger than the 65536-byte limit") as info:
        store.get("big")
    assert VALUE.decode() not in info.value.diagnostics()


# -- unsafe files and directories ----------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o601])
def test_a_secret_others_may_access_is_refused(store: SecretStore, mode: int) -> None:
    store.set("k", VALUE)
    path = store.directory / "k"
    os.chmod(path, mode)
    with pytest.raises(SecretStoreError) as info:
        store.get("k")
    message = info.value.diagnostics()
    assert str(path) in message and f"mode {mode:04o}" in message
    assert f"chmod 600 {path}" in message
    assert issubclass(SecretStoreError, ConfigError) and info.value.exit_code == 3
    with pytest.raises(SecretStoreError, match="chmod 600"):
        store.names()
    os.chmod(path, 0o400)  # narrower than 0600 is fine
    assert store.get("k") == VALUE


def test_a_symlink_in_place_of_a_secret_is_refused(store: SecretStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(VALUE)
    os.chmod(elsewhere, 0o600)
    store.set("other", b"o")
    link = store.directory / "k"
    link.symlink_to(elsewhere)
    with pytest.raises(SecretStoreError, match="is a symbolic link") as info:
        store.get("k")
    assert f"rm {link}" in info.value.diagnostics()
    with pytest.raises(SecretStoreError, match="is a symbolic link"):
        store.names()
    # set replaces the link itself and never writes through it
    assert store.set("k", b"new") is True
    assert elsewhere.read_bytes() == VALUE
    assert stat.S_ISREG(os.lstat(link).st_mode)
    assert store.get("k") == b"new"


def test_remove_unlinks_a_symlink_not_its_target(store: SecretStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(VALUE)
    store.set("other", b"o")
    (store.directory / "k").symlink_to(elsewhere)
    assert store.remove("k") is True
    assert elsewhere.read_bytes() == VALUE


def test_a_fifo_in_place_of_a_secret_is_refused_without_waiting(store: SecretStore) -> None:
    store.set("other", b"o")
    os.mkfifo(store.directory / "k", 0o600)
    with pytest.raises(SecretStoreError, match="is not a regular file"):
        store.get("k")
    with pytest.raises(SecretStoreError, match="is not a regular file"):
        store.names()


def test_a_directory_in_place_of_a_secret_is_refused(store: SecretStore) -> None:
    store.set("other", b"o")
    (store.directory / "k").mkdir(mode=0o700)
    with pytest.raises(SecretStoreError, match="is not a regular file"):
        store.get("k")
    with pytest.raises(SecretStoreError, match="is a directory"):
        store.set("k", VALUE)
    with pytest.raises(SecretStoreError, match="is a directory"):
        store.remove("k")
    assert [p.name for p in store.directory.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o755, 0o777, 0o710])
def test_a_directory_others_may_access_is_refused(store: SecretStore, mode: int) -> None:
    store.set("k", VALUE)
    os.chmod(store.directory, mode)
    for operation in (lambda: store.set("k2", VALUE), lambda: store.get("k"), store.names):
        with pytest.raises(SecretStoreError) as info:
            operation()
        message = info.value.diagnostics()
        assert f"mode {mode:04o}" in message and f"chmod 700 {store.directory}" in message
    assert not (store.directory / "k2").exists()


def test_a_file_where_the_directory_should_be_is_refused(store: SecretStore) -> None:
    store.directory.parent.mkdir()
    store.directory.write_bytes(b"")
    with pytest.raises(SecretStoreError, match="is not a directory"):
        store.set("k", VALUE)
    with pytest.raises(SecretStoreError, match="is not a directory"):
        store.get("k")


# -- atomicity -----------------------------------------------------------------------------------


def test_a_leftover_temporary_file_is_ignored(store: SecretStore) -> None:
    store.set("k", VALUE)
    partial = store.directory / ".k.0123456789abcdef.tmp"
    partial.write_bytes(VALUE[:3])  # as a crash between create and rename leaves it
    os.chmod(partial, 0o600)
    (store.directory / "NOT-A-NAME").write_bytes(b"junk")  # nor anything else invalid
    assert store.names()[0][:2] == ("k", len(VALUE))
    assert len(store.names()) == 1
    assert store.get("k") == VALUE
    assert store.get(partial.name) is None


def test_set_leaves_no_temporary_file(store: SecretStore) -> None:
    for i in range(5):
        store.set("k", VALUE + bytes([i]))
    assert sorted(p.name for p in store.directory.iterdir()) == ["k"]


def test_readers_see_the_old_or_the_new_value_never_a_mix(store: SecretStore) -> None:
    old, new = b"o" * MAX_SECRET_BYTES, b"n" * 100
    store.set("k", old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            value = store.get("k")
            assert value is not None
            seen.add(value)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(100):
            store.set("k", new if i % 2 == 0 else old)
    finally:
        stop.set()
        reader.join()
    assert seen <= {old, new}
    assert seen


# -- limits --------------------------------------------------------------------------------------


def test_the_store_holds_at_most_max_secrets(store: SecretStore) -> None:
    store.set("seed", b"s")
    for i in range(MAX_SECRETS - 1):
        fd = os.open(store.directory / f"s{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"v")
        os.close(fd)
    assert len(store.names()) == MAX_SECRETS
    with pytest.raises(SecretStoreError, match=f"already holds {MAX_SECRETS} secrets"):
        store.set("one-more", b"v")
    assert store.set("seed", b"replacing is fine") is True
    # A store filled past the limit by hand is refused, not listed without bound.
    fd = os.open(store.directory / "extra", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with pytest.raises(SecretStoreError, match=f"more than {MAX_SECRETS} secrets"):
        store.names()


# -- no value ever leaks -------------------------------------------------------------------------


def test_no_error_or_log_line_contains_the_value(
    store: SecretStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="donjon")
    messages: list[str] = []

    def capture(operation: object) -> None:
        with pytest.raises(ConfigError) as info:
            operation()  # type: ignore[operator]
        messages.append(info.value.diagnostics())
        messages.append(str(info.value))
        messages.append(repr(info.value))

    big = VALUE * (MAX_SECRET_BYTES // len(VALUE) + 1)
    capture(lambda: store.set("k", big))
    capture(lambda: store.set("BAD", VALUE))
    store.set("k", VALUE)
    store.set("k", VALUE)
    os.chmod(store.directory / "k", 0o644)
    capture(lambda: store.get("k"))
    os.chmod(store.directory / "k", 0o600)
    (store.directory / "big").write_bytes(big)
    capture(lambda: store.get("big"))
    os.chmod(store.directory, 0o755)  # noqa: S103 - the unsafe mode under test
    capture(lambda: store.set("k", VALUE))
    os.chmod(store.directory, 0o700)
    store.remove("k")

    texts = [*messages, caplog.text, repr(store)]
    assert len(messages) == 15 and "stored secret k" in caplog.text
    for text in texts:
        assert VALUE.decode() not in text
        assert VALUE.hex() not in text
        assert VALUE[:8].decode() not in text
