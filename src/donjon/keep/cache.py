"""The compiled-module cache: ``.cwasm`` files authenticated with a per-user key.

A ``.cwasm`` is native machine code that wasmtime maps and runs without checking it
(TOOLING.md P5). So an entry is loaded only if it carries a valid HMAC-SHA256 made with this
user's cache key, over the entry's cache key *and* its bytes: a file the keep did not write, a
changed byte, or a valid entry copied under another module's name is refused, deleted and
recompiled, never loaded.

Rule 1: the cache never fails a run. Anything wrong (unwritable directory, a key file with
loose permissions, a full disk, a tampered entry) is logged and the module is compiled instead.
Rule 2: writes are atomic (a private temporary file, then ``rename``), so a reader sees a whole
entry or none, and concurrent writers of the same entry are harmless.
Rule 3: the key file is created ``0600`` in a ``0700`` directory owned by the user, and refused
if anyone else could read or replace it. The key is never logged.

Layout::

    <dir>/cache.key           32 random bytes (the HMAC key), mode 0600
    <dir>/modules/<id>.cwasm  MAGIC || tag || payload, where <id> = SHA-256(cache key) and
                              tag = HMAC-SHA256(key, MAC_CONTEXT || cache key || payload)

Example:
    >>> import tempfile
    >>> cache = ModuleCache(Path(tempfile.mkdtemp()) / "donjon")
    >>> key = CacheKey(engine="wasmtime=50.0.1;x86_64;epochs=0", module_sha256="ab" * 32)
    >>> cache.put(key, b"native code")
    >>> cache.lookup(key).payload
    b'native code'
"""

from __future__ import annotations

import enum
import errno
import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KEY_BYTES",
    "MAX_CACHE_BYTES",
    "MAX_ENTRY_BYTES",
    "CacheKey",
    "CacheLookup",
    "CacheStatus",
    "ModuleCache",
    "default_cache_dir",
]

_logger = logging.getLogger(__name__)

KEY_BYTES = 32
"""Length of the HMAC-SHA256 key (bytes): the hash's block-size-independent full strength."""

MAX_ENTRY_BYTES = 2 * 1024 * 1024 * 1024
"""Largest entry read back (bytes). Big modules compile to 144–243 MiB (TOOLING.md P3); the
bound stops a planted huge file from being read into memory."""

MAX_CACHE_BYTES = 4 * 1024 * 1024 * 1024
"""Total size the cache is pruned back to (bytes), oldest use first: about 16 large modules."""

_MAGIC = b"DJCWASM1"  # format marker and version of the entry file
_MAC_CONTEXT = b"donjon compiled-module cache v1\0"  # domain separation for the HMAC
_TAG_BYTES = 32  # HMAC-SHA256 output
_HEADER_BYTES = len(_MAGIC) + _TAG_BYTES
_KEY_FILE = "cache.key"
_MODULES_DIR = "modules"
_SUFFIX = ".cwasm"


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where the cache lives by default: ``$XDG_CACHE_HOME/donjon`` or ``~/.cache/donjon``.

    Args:
        environ: the environment to read (the CLI passes ``os.environ``; library code decides).

    Returns:
        The directory (not created).
    """
    xdg = environ.get("XDG_CACHE_HOME", "")
    # The XDG Base Directory spec says a relative value is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "donjon"
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".cache" / "donjon"


@dataclass(frozen=True, slots=True)
class CacheKey:
    """What a compiled module depends on (TOOLING.md P4).

    Attributes:
        engine: the wasmtime version and every engine setting that changes the code, as text.
        module_sha256: the module's SHA-256, lowercase hex.
    """

    engine: str
    module_sha256: str

    def text(self) -> bytes:
        """The canonical bytes the entry's MAC covers."""
        return f"{self.engine}\n{self.module_sha256}\n".encode()

    def entry_id(self) -> str:
        """The entry's file name stem: a digest of :meth:`text`."""
        return hashlib.sha256(self.text()).hexdigest()


class CacheStatus(enum.Enum):
    """What a lookup found."""

    HIT = "hit"
    """A whole entry with a valid MAC: safe to load."""
    MISS = "miss"
    """No entry (or the cache is off or unusable)."""
    REJECTED = "rejected"
    """An entry that failed its integrity check; it was deleted and must not be loaded."""


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """The result of :meth:`ModuleCache.lookup`.

    Attributes:
        status: hit, miss or rejected.
        payload: the authenticated compiled module on a hit, else ``None``.
        reason: why an entry was rejected (for logs and tests), else ``""``.
    """

    status: CacheStatus
    payload: bytes | None = None
    reason: str = ""


class ModuleCache:
    """A directory of authenticated compiled modules.

    Args:
        directory: the cache directory; created (``0700``) on first write.
        max_total_bytes: prune the oldest-used entries beyond this size after a write.
    """

    def __init__(self, directory: Path, *, max_total_bytes: int = MAX_CACHE_BYTES) -> None:
        self.directory = directory
        self._modules = directory / _MODULES_DIR
        self._max_total_bytes = max_total_bytes
        self._key: bytes | None = None
        self._unusable = False

    def path_for(self, key: CacheKey) -> Path:
        """The file an entry for ``key`` lives in (it may not exist)."""
        return self._modules / f"{key.entry_id()}{_SUFFIX}"

    def lookup(self, key: CacheKey) -> CacheLookup:
        """Find and authenticate the entry for ``key``.

        Returns:
            A hit with the payload, a miss, or a rejection (the bad entry is deleted).
        """
        path = self.path_for(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return CacheLookup(CacheStatus.MISS)
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW: a symlink was planted in place of an entry
                return self._reject(path, "is a symbolic link")
            _logger.warning("compiled-module cache: cannot open %s: %s", path, e)
            return CacheLookup(CacheStatus.MISS)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return self._reject(path, "is not a regular file")
            if info.st_size > MAX_ENTRY_BYTES + _HEADER_BYTES:
                return self._reject(path, f"is {info.st_size} bytes, over the entry limit")
            with os.fdopen(fd, "rb", closefd=False) as f:
                header = f.read(_HEADER_BYTES)
                payload = f.read(MAX_ENTRY_BYTES + 1)
        except OSError as e:
            _logger.warning("compiled-module cache: cannot read %s: %s", path, e)
            return CacheLookup(CacheStatus.MISS)
        finally:
            os.close(fd)
        cache_key = self._load_key(create=False)
        if cache_key is None:
            # Without our key nothing in the directory can be trusted; leave it alone.
            return CacheLookup(CacheStatus.MISS)
        if len(header) < _HEADER_BYTES or header[: len(_MAGIC)] != _MAGIC:
            return self._reject(path, "has no donjon cache header")
        if len(payload) > MAX_ENTRY_BYTES:
            return self._reject(path, "grew past the entry limit while being read")
        # The MAC is checked over the very bytes that will be loaded: no second read (TOCTOU).
        if not hmac.compare_digest(header[len(_MAGIC) :], _mac(cache_key, key, payload)):
            return self._reject(path, "failed its integrity check (HMAC mismatch)")
        try:
            # Record the use, so pruning removes the least recently used entries first.
            os.utime(path)
        except OSError:
            pass
        return CacheLookup(CacheStatus.HIT, payload)

    def put(self, key: CacheKey, payload: bytes) -> None:
        """Store a compiled module for ``key`` (atomically; failures are only logged)."""
        if len(payload) > MAX_ENTRY_BYTES:
            _logger.info("compiled-module cache: %d bytes is too large to cache", len(payload))
            return
        cache_key = self._load_key(create=True)
        if cache_key is None:
            return
        blob = _MAGIC + _mac(cache_key, key, payload)
        import tempfile  # only writers pay for it (~5 ms of start-up)

        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=_SUFFIX, dir=self._modules)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path_for(key))
            except BaseException:
                _unlink_quietly(Path(tmp))
                raise
        except OSError as e:
            _logger.warning("compiled-module cache: cannot write to %s: %s", self._modules, e)
            return
        self._prune()

    def _reject(self, path: Path, reason: str) -> CacheLookup:
        _logger.warning(
            "compiled-module cache: refusing %s: it %s; deleting it and compiling afresh",
            path,
            reason,
        )
        _unlink_quietly(path)
        return CacheLookup(CacheStatus.REJECTED, reason=reason)

    def _load_key(self, *, create: bool) -> bytes | None:
        """The per-user HMAC key, created on first write; ``None`` if unusable."""
        if self._key is not None or self._unusable:
            return self._key
        path = self.directory / _KEY_FILE
        try:
            if create:
                self._prepare_directories()
            key = _read_key(path)
            if key is None and create:
                key = _create_key(path)
        except _UnsafeCacheError as e:
            _logger.warning("compiled-module cache disabled: %s", e)
            self._unusable = True
            return None
        except OSError as e:
            _logger.warning("compiled-module cache disabled: %s: %s", self.directory, e)
            self._unusable = True
            return None
        self._key = key
        return key

    def _prepare_directories(self) -> None:
        for directory in (self.directory, self._modules):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(directory)
            if not stat.S_ISDIR(info.st_mode):
                raise _UnsafeCacheError(f"{directory} is not a directory")
            if info.st_uid != os.getuid():
                raise _UnsafeCacheError(f"{directory} belongs to another user")
            if info.st_mode & 0o022:
                raise _UnsafeCacheError(
                    f"{directory} is writable by other users; run chmod go-w {directory}"
                )

    def _prune(self) -> None:
        try:
            entries = []
            for entry in os.scandir(self._modules):
                if entry.name.endswith(_SUFFIX) and entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    entries.append((info.st_mtime_ns, info.st_size, entry.path))
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self._max_total_bytes:
                break
            _unlink_quietly(Path(path))
            total -= size


class _UnsafeCacheError(Exception):
    """The cache directory or key file could be read or replaced by someone else."""


def _mac(cache_key: bytes, key: CacheKey, payload: bytes) -> bytes:
    mac = hmac.new(cache_key, _MAC_CONTEXT, hashlib.sha256)
    mac.update(key.text())
    mac.update(payload)
    return mac.digest()


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise _UnsafeCacheError(f"{path} is not a file owned by this user")
        if info.st_mode & 0o077:
            raise _UnsafeCacheError(
                f"{path} is readable or writable by other users; delete it (a new key is made)"
            )
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise _UnsafeCacheError(f"{path} is not a {KEY_BYTES}-byte key; delete it")
    return key


def _create_key(path: Path) -> bytes:
    import secrets
    import tempfile

    key = secrets.token_bytes(KEY_BYTES)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-key-", dir=path.parent)  # mode 0600
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails if the key exists: whoever links first wins, and the loser reads theirs.
        os.link(tmp, path)
    except FileExistsError:
        existing = _read_key(path)
        if existing is None:
            raise _UnsafeCacheError(f"{path} vanished while being created") from None
        return existing
    finally:
        _unlink_quietly(Path(tmp))
    return key


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
