"""Steward's secret store: the named values Steward may release to attested Keeps.

Does: keep each secret's raw bytes in one file of ``<state-dir>/secrets/``, write it so that no
reader ever sees a partial value, and refuse files or a directory that others could read or
swap. Does not: decide who may receive a secret (that is the ``[steward]`` release rules of the
policy), encrypt values at rest (the directory's permissions and the disk's encryption do), or
cache anything: several worker processes read the files on every request, and a rename is all the
coordination they need.

Layout::

    <state-dir>/secrets/      mode 0700
        db-password           mode 0600, the raw value, file name = secret name
        .db-password.<random>.tmp   a write in progress (or left by a crash): ignored

Rule 1: a secret file is created with mode 0600 (``O_CREAT | O_EXCL``, then ``fchmod`` so the
umask cannot change it), filled, fsynced, then renamed over the old one: a reader sees the old
value or the new one, never a mix, and a crash leaves at most an ignored temporary file.
Rule 2: a secret file that group or others may access, that is not a regular file (a symbolic
link, a FIFO, a directory), or a secrets directory that group or others may access, is refused
with a :class:`~donjon.errors.ConfigError` naming the path and the ``chmod``/``rm`` that fixes
it; it is never silently used.
Rule 3: a secret's name is :data:`SECRET_NAME` matched in full; anything else is never turned into
a path, so ``../x`` or ``.hidden`` cannot reach outside the directory or a temporary file.
Rule 4: no message, log line or return value other than :meth:`SecretStore.get` carries a value,
nor anything derived from one (a hash of a short secret leaks it); sizes and times only.

Example::

    store = SecretStore(Path("/var/lib/donjon/steward"))
    store.set("db-password", b"correct horse")
    store.get("db-password")  # b"correct horse"
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path

from donjon.errors import ConfigError, UsageError

_logger = logging.getLogger(__name__)

SECRET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
"""A secret's name: a bare TOML key without dots, at most 64 characters.

Match it with ``SECRET_NAME.fullmatch(name)`` (or :func:`is_secret_name`): ``$`` alone also
matches before a trailing newline, so ``SECRET_NAME.match("x\\n")`` succeeds.
"""

MAX_SECRET_BYTES = 64 * 1024
"""Largest secret value (bytes): keys, passwords and tokens, not files; it is read whole into
memory on every release."""

MAX_SECRETS = 10_000
"""Most secrets one store holds: bounds a listing and the directory scan behind it."""

SECRETS_DIR = "secrets"
"""The store's directory inside Steward's state directory."""

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_TMP_SUFFIX = ".tmp"
_NAME_SHOWN_CHARS = 80  # a wrong name is echoed in errors, cut to this many characters


class SecretNameError(UsageError):
    """A secret name that :data:`SECRET_NAME` does not allow (exit code 2)."""


class SecretValueError(UsageError):
    """A secret value that is empty or larger than :data:`MAX_SECRET_BYTES` (exit code 2)."""


class SecretStoreError(ConfigError):
    """A secrets directory or file with unsafe modes, of the wrong kind, or unreadable (exit 3)."""


def is_secret_name(name: str) -> bool:
    """Whether *name* is a valid secret name (:data:`SECRET_NAME`, matched in full)."""
    return SECRET_NAME.fullmatch(name) is not None


def check_secret_name(name: str) -> str:
    """Return *name* if it is a valid secret name.

    Raises:
        SecretNameError: it is not; the message says what is allowed.
    """
    if not is_secret_name(name):
        shown = name if len(name) <= _NAME_SHOWN_CHARS else name[:_NAME_SHOWN_CHARS] + "…"
        raise SecretNameError(
            f"{shown!r} is not a secret name: use 1 to 64 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit (it is a bare TOML key in the Steward policy)"
        )
    return name


class SecretStore:
    """The secrets of one Steward state directory, one file per secret.

    Safe to use from several processes at once without locks: writers rename complete files
    into place, readers open whatever is there.

    Args:
        state_dir: Steward's state directory (``--state-dir``); the store is its ``secrets/``.
    """

    __slots__ = ("_dir",)

    def __init__(self, state_dir: Path) -> None:
        self._dir = Path(state_dir) / SECRETS_DIR

    @property
    def directory(self) -> Path:
        """The directory that holds the secret files (``<state-dir>/secrets``)."""
        return self._dir

    def __repr__(self) -> str:
        return f"SecretStore({str(self._dir.parent)!r})"

    # -- reading ---------------------------------------------------------------------------

    def get(self, name: str) -> bytes | None:
        """The value of secret *name*.

        Args:
            name: the secret's name.

        Returns:
            The raw bytes, or None if there is no such secret or *name* is not a valid name.

        Raises:
            SecretStoreError: the directory or the file is accessible to group or others, the
                entry is not a regular file (a symbolic link, FIFO, directory), it is larger than
                :data:`MAX_SECRET_BYTES`, or it cannot be read.
        """
        if not is_secret_name(name):
            return None
        if not self._existing_dir():
            return None
        path = self._dir / name
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._open_error(path, e) from e
        try:
            self._check_file(path, os.fstat(fd))
            return self._read_bounded(path, fd)
        finally:
            os.close(fd)

    def names(self) -> list[tuple[str, int, datetime]]:
        """The secrets in the store, without their values.

        Returns:
            ``(name, size in bytes, modification time in UTC)`` for each secret, sorted by name.
            Temporary files and entries whose name is not a secret name are left out.

        Raises:
            SecretStoreError: the directory is accessible to group or others or unreadable, an
                entry with a secret's name is unsafe (see :meth:`get`), or there are more than
                :data:`MAX_SECRETS`.
        """
        if not self._existing_dir():
            return []
        found: list[tuple[str, int, datetime]] = []
        try:
            with os.scandir(self._dir) as entries:
                for entry in entries:
                    if not is_secret_name(entry.name):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while we looked
                    self._check_file(self._dir / entry.name, st)
                    found.append((entry.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
                    if len(found) > MAX_SECRETS:
                        raise SecretStoreError(
                            f"{self._dir} holds more than {MAX_SECRETS} secrets, the most a store "
                            "may; remove some with `donjon steward secret rm`"
                        )
        except FileNotFoundError:
            return []  # the directory was removed while we looked: an empty store
        except OSError as e:
            raise SecretStoreError(f"cannot list {self._dir}: {e.strerror or e}") from e
        found.sort()
        return found

    # -- writing ---------------------------------------------------------------------------

    def set(self, name: str, value: bytes) -> bool:
        """Store *value* as secret *name*, atomically replacing any previous value.

        Creates ``<state-dir>/secrets`` (mode 0700) if missing.

        Args:
            name: the secret's name (:data:`SECRET_NAME`).
            value: its raw bytes, 1 to :data:`MAX_SECRET_BYTES` of them.

        Returns:
            True if a secret of that name was replaced, False if it is new.

        Raises:
            SecretNameError: *name* is not a secret name.
            SecretValueError: *value* is empty or too large.
            SecretStoreError: the directory cannot be created, is accessible to group or others,
                the store is full, or the file cannot be written.
        """
        check_secret_name(name)
        data = bytes(value)
        if not data:
            raise SecretValueError(f"the value of secret {name!r} is empty; give 1 or more bytes")
        if len(data) > MAX_SECRET_BYTES:
            raise SecretValueError(
                f"the value of secret {name!r} is {len(data)} bytes, more than the "
                f"{MAX_SECRET_BYTES}-byte limit; store a key to the data, not the data"
            )
        self._ensure_dir()
        path = self._dir / name
        replaced = self._exists(path)
        if not replaced:
            self._check_room()
        tmp = self._dir / f".{name}.{secrets.token_hex(8)}{_TMP_SUFFIX}"
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                _FILE_MODE,
            )
        except OSError as e:
            raise SecretStoreError(f"cannot write in {self._dir}: {e.strerror or e}") from e
        try:
            try:
                os.fchmod(fd, _FILE_MODE)  # the umask may have narrowed it; never widened
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except IsADirectoryError as e:
            tmp.unlink(missing_ok=True)
            raise SecretStoreError(
                f"{path} is a directory, not a secret; remove it (`rm -r {path}`) and set the "
                "secret again"
            ) from e
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise SecretStoreError(f"cannot write {path}: {e.strerror or e}") from e
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._sync_dir()
        _logger.info(
            "%s secret %s (%d bytes)", "replaced" if replaced else "stored", name, len(data)
        )
        return replaced

    def remove(self, name: str) -> bool:
        """Delete secret *name*.

        Returns:
            True if it existed, False if there was no such secret.

        Raises:
            SecretNameError: *name* is not a secret name.
            SecretStoreError: the entry is a directory, or cannot be removed.
        """
        check_secret_name(name)
        path = self._dir / name
        try:
            os.unlink(path)  # unlinks a symbolic link itself, never its target
        except FileNotFoundError:
            return False
        except IsADirectoryError as e:
            raise SecretStoreError(
                f"{path} is a directory, not a secret; remove it by hand (`rm -r {path}`)"
            ) from e
        except OSError as e:
            raise SecretStoreError(f"cannot remove {path}: {e.strerror or e}") from e
        self._sync_dir()
        _logger.info("removed secret %s", name)
        return True

    # -- internals -------------------------------------------------------------------------

    def _existing_dir(self) -> bool:
        """Whether the directory exists; refuses one that is unsafe (rule 2)."""
        try:
            st = os.stat(self._dir)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise SecretStoreError(f"cannot read {self._dir}: {e.strerror or e}") from e
        self._check_dir(st)
        return True

    def _check_dir(self, st: os.stat_result) -> None:
        if not stat.S_ISDIR(st.st_mode):
            raise SecretStoreError(
                f"{self._dir} is not a directory; move it away so the secret store can be created"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise SecretStoreError(
                f"{self._dir} is mode {mode:04o}: the secrets directory must be accessible to its "
                f"owner only; run `chmod 700 {self._dir}`"
            )

    def _check_file(self, path: Path, st: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            raise SecretStoreError(
                f"{path} is a symbolic link; a secret must be a regular file: remove the link "
                f"(`rm {path}`) and store the value with `donjon steward secret set`"
            )
        if not stat.S_ISREG(st.st_mode):
            raise SecretStoreError(
                f"{path} is not a regular file; remove it and store the value with "
                "`donjon steward secret set`"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise SecretStoreError(
                f"{path} is mode {mode:04o}: a secret must be readable by its owner only; "
                f"run `chmod 600 {path}`"
            )

    def _open_error(self, path: Path, e: OSError) -> SecretStoreError:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            return SecretStoreError(
                f"{path} is a symbolic link; a secret must be a regular file: remove the link "
                f"(`rm {path}`) and store the value with `donjon steward secret set`"
            )
        if e.errno == errno.ENXIO:  # a socket
            return SecretStoreError(f"{path} is not a regular file; remove it")
        return SecretStoreError(f"cannot read {path}: {e.strerror or e}")

    def _read_bounded(self, path: Path, fd: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while total <= MAX_SECRET_BYTES:
            try:
                chunk = os.read(fd, MAX_SECRET_BYTES + 1 - total)
            except OSError as e:
                raise SecretStoreError(f"cannot read {path}: {e.strerror or e}") from e
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_SECRET_BYTES:
            raise SecretStoreError(
                f"{path} is larger than the {MAX_SECRET_BYTES}-byte limit of a secret; "
                "replace it with `donjon steward secret set`"
            )
        return b"".join(chunks)

    def _ensure_dir(self) -> None:
        parent = self._dir.parent
        try:
            parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            try:
                self._dir.mkdir(mode=_DIR_MODE)
            except FileExistsError:
                pass  # checked below, as an existing directory always is
            else:
                os.chmod(self._dir, _DIR_MODE)  # we created it: exactly 0700 whatever the umask
        except OSError as e:
            raise SecretStoreError(f"cannot create {self._dir}: {e.strerror or e}") from e
        if not self._existing_dir():
            raise SecretStoreError(f"{self._dir} disappeared while it was being created; retry")

    def _exists(self, path: Path) -> bool:
        try:
            os.lstat(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise SecretStoreError(f"cannot read {path}: {e.strerror or e}") from e
        return True

    def _check_room(self) -> None:
        try:
            with os.scandir(self._dir) as entries:
                count = sum(1 for entry in entries if is_secret_name(entry.name))
        except OSError as e:
            raise SecretStoreError(f"cannot list {self._dir}: {e.strerror or e}") from e
        if count >= MAX_SECRETS:
            raise SecretStoreError(
                f"{self._dir} already holds {count} secrets, the most a store may "
                f"({MAX_SECRETS}); remove some with `donjon steward secret rm`"
            )

    def _sync_dir(self) -> None:
        """Make a rename or unlink durable: fsync the directory entry."""
        try:
            fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return  # best effort: the operation itself succeeded
        try:
            os.fsync(fd)
        except OSError:
            pass  # some filesystems refuse fsync on a directory; the rename stands
        finally:
            os.close(fd)


__all__ = [
    "MAX_SECRETS",
    "MAX_SECRET_BYTES",
    "SECRETS_DIR",
    "SECRET_NAME",
    "SecretNameError",
    "SecretStore",
    "SecretStoreError",
    "SecretValueError",
    "check_secret_name",
    "is_secret_name",
]
