"""Steward's state directory: the CA key and certificate, created once and shared by replicas.

Layout::

    <state-dir>/          mode 0700
        ca.key            mode 0600, PKCS#8 PEM, P-384: never logged, never printed
        ca.crt            mode 0644, PEM, self-signed
        .lock             serializes first-start creation between replicas on one filesystem

Rule 1: the key file is created with mode 0600 from the start (``O_CREAT | O_EXCL``, then an
atomic rename), never written wider and narrowed later; an existing key that group or others can
read is refused, not silently used.
Rule 2: creation is idempotent and race-free: replicas starting together take ``.lock`` and the
second one loads what the first created.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from donjon.crypto.ca import CertificateAuthority
from donjon.errors import ConfigError

_logger = logging.getLogger(__name__)

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
_LOCK_FILE = ".lock"
MAX_STATE_FILE_BYTES = 64 * 1024
"""Largest CA key or certificate file read (bytes); a P-384 key PEM is ~300 bytes."""


@dataclass(frozen=True, slots=True)
class StewardState:
    """The loaded state directory.

    Attributes:
        ca: the CA.
        key_path, cert_path: where its files are.
        created: whether this call created them (first start).
    """

    ca: CertificateAuthority
    key_path: Path
    cert_path: Path
    created: bool


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_STATE_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    if len(data) > MAX_STATE_FILE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_STATE_FILE_BYTES} bytes; is it a CA file?")
    return data


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write *data* to *path* atomically with *mode* from creation on (rule 1)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_key_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is mode {mode:04o}: the CA key must be readable by its owner only; "
            f"run `chmod 600 {path}`"
        )


def _ensure_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the state directory {state_dir}: {e.strerror}") from e
    if not state_dir.is_dir():
        raise ConfigError(f"{state_dir} is not a directory")


def load_state(state_dir: Path) -> StewardState:
    """Load an existing state directory.

    Raises:
        ConfigError: missing or unreadable files, a key readable by others, or a key that does
            not match the certificate.
    """
    key_path, cert_path = state_dir / CA_KEY_FILE, state_dir / CA_CERT_FILE
    if not key_path.exists() or not cert_path.exists():
        raise ConfigError(
            f"{state_dir} has no CA ({CA_KEY_FILE} and {CA_CERT_FILE}); create one with "
            f"`donjon steward init --state-dir {state_dir}`"
        )
    _check_key_mode(key_path)
    ca = CertificateAuthority.load(_read(key_path), _read(cert_path))
    return StewardState(ca, key_path, cert_path, created=False)


def init_state(state_dir: Path, *, now: datetime, force: bool = False) -> StewardState:
    """Load the CA from *state_dir*, creating it (and the directory) on first use.

    Args:
        state_dir: the state directory.
        now: the CA certificate's start of validity.
        force: replace an existing CA (the old files are kept as ``*.<timestamp>.bak``).

    Raises:
        ConfigError: a half-present CA (key without certificate or the reverse), bad modes, or
            unreadable files.
    """
    _ensure_dir(state_dir)
    key_path, cert_path = state_dir / CA_KEY_FILE, state_dir / CA_CERT_FILE
    lock_fd = os.open(state_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        have_key, have_cert = key_path.exists(), cert_path.exists()
        if have_key and have_cert and not force:
            return load_state(state_dir)
        if (have_key or have_cert) and not force:
            present = CA_KEY_FILE if have_key else CA_CERT_FILE
            raise ConfigError(
                f"{state_dir} has {present} but not its pair; restore the missing file, or "
                "create a new CA with `donjon steward init --force`"
            )
        if force:
            stamp = now.strftime("%Y%m%dT%H%M%SZ")
            for path in (key_path, cert_path):
                if path.exists():
                    os.replace(path, path.with_name(f"{path.name}.{stamp}.bak"))
        ca = CertificateAuthority.create(now=now)
        _write_new(key_path, ca.private_key_pem(), 0o600)
        _write_new(cert_path, ca.certificate_pem, 0o644)
        _logger.info("created a new Steward CA in %s", state_dir)
        return StewardState(ca, key_path, cert_path, created=True)
    finally:
        os.close(lock_fd)


__all__ = ["CA_CERT_FILE", "CA_KEY_FILE", "StewardState", "init_state", "load_state"]
