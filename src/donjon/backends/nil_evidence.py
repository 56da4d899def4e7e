"""``nil`` evidence for development: signed by a per-machine key, protecting nothing.

The ``nil`` backend has no TEE, so there is nothing that could vouch for a Keep. To let the whole
flow (keep runtime → Steward → client) run on any machine, a ``nil`` Keep signs its claims with a
**development key** that lives in the user's data directory. Anyone who can read that file (the
host, by definition) can forge this evidence; verifiers mark it ``insecure`` and policies reject
it unless they say ``allow_insecure = true``. The format is in ``donjon.attestation.nil``.

The development key:

- path: ``$DONJON_NIL_DEV_KEY``, else ``$XDG_DATA_HOME/donjon/nil-dev-key.pem``, else
  ``~/.local/share/donjon/nil-dev-key.pem`` (see :func:`default_dev_key_path`);
- created on first use: P-384, PKCS#8 PEM, file mode 0600 in a directory created with mode 0700,
  written to a temporary file and linked into place so two processes never see half a key;
- refused if it is readable or writable by group or others, or owned by another user;
- never logged: only its path and the SHA-256 of its public key are.

The measurement (:func:`runtime_measurement`) is a SHA-384 over the keep runtime's source
(``donjon/keep`` and ``donjon/backends``) and the donjon version, so a policy can pin a release.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

import donjon
from donjon.attestation.nil import (
    MAX_HOSTNAME_BYTES,
    MEASUREMENT_BYTES,
    REPORT_DATA_BYTES,
    NilClaims,
    nil_protected_header,
)
from donjon.attestation.result import Platform
from donjon.backends._common import EvidenceError
from donjon.crypto.devkey import MAX_KEY_PEM_BYTES, DevSigningKey, generate_dev_key_pem
from donjon.errors import ConfigError

_logger = logging.getLogger(__name__)

DEV_KEY_ENV = "DONJON_NIL_DEV_KEY"
"""Environment variable that overrides the development key's path."""

DEV_KEY_FILENAME = "nil-dev-key.pem"

MEASURED_SUBPACKAGES = ("backends", "keep")
"""The parts of the donjon package that make up the keep runtime on the nil backend."""

_MEASUREMENT_DOMAIN = b"donjon/nil-measurement/v1\x00"


def default_dev_key_path(environ: Mapping[str, str]) -> Path:
    """Where the development key lives, given the process environment.

    ``DONJON_NIL_DEV_KEY`` > ``$XDG_DATA_HOME/donjon/nil-dev-key.pem`` >
    ``$HOME/.local/share/donjon/nil-dev-key.pem`` (XDG Base Directory spec; relative values are
    ignored, as the spec requires).

    Raises:
        ConfigError: none of these is set to an absolute path.
    """
    override = environ.get(DEV_KEY_ENV, "")
    if override:
        return Path(override)
    data_home = environ.get("XDG_DATA_HOME", "")
    if data_home.startswith("/"):
        return Path(data_home) / "donjon" / DEV_KEY_FILENAME
    home = environ.get("HOME", "")
    if home.startswith("/"):
        return Path(home) / ".local" / "share" / "donjon" / DEV_KEY_FILENAME
    raise ConfigError(
        f"cannot place the nil development key: set {DEV_KEY_ENV}, XDG_DATA_HOME or HOME "
        "to an absolute path"
    )


def load_or_create_dev_key(path: Path) -> DevSigningKey:
    """Load the development key at *path*, creating it (and its directory) if it is missing.

    Raises:
        ConfigError: the file or directory has unsafe permissions or ownership, or the file is
            not a P-384 private key, or it cannot be read or written.
    """
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    _create(path)
    return _load(path)


def runtime_files(package_dir: Path) -> list[Path]:
    """The files :func:`runtime_measurement` covers, in measurement order.

    Every regular file under ``backends/`` and ``keep/`` of *package_dir*, except ``__pycache__``
    directories and dot files, sorted by their ``/``-separated path relative to *package_dir*.
    """
    files: list[Path] = []
    for sub in MEASURED_SUBPACKAGES:
        for path in (package_dir / sub).rglob("*"):
            rel = path.relative_to(package_dir)
            if "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
                continue
            if path.is_file():
                files.append(path)
    return sorted(files, key=lambda p: p.relative_to(package_dir).as_posix().encode())


def runtime_measurement(
    package_dir: Path | None = None, *, version: str = donjon.__version__
) -> bytes:
    """SHA-384 over the keep runtime, the ``measurement`` of nil evidence (48 bytes).

    ::

        SHA-384( "donjon/nil-measurement/v1" || 0x00 || u16be(len(version)) || version ||
                 for each file in runtime_files(package_dir):
                     u16be(len(relpath)) || relpath || u64be(len(content)) || content )

    where ``relpath`` is the UTF-8 path relative to the package directory with ``/`` separators
    (``backends/probe.py``). Length prefixes keep file boundaries unambiguous.

    Args:
        package_dir: the ``donjon`` package directory; the installed one by default.
        version: the donjon version to bind.
    """
    root = package_dir if package_dir is not None else Path(donjon.__file__).resolve().parent
    h = hashlib.sha384(_MEASUREMENT_DOMAIN)
    encoded_version = version.encode("utf-8")
    h.update(len(encoded_version).to_bytes(2, "big") + encoded_version)
    for path in runtime_files(root):
        rel = path.relative_to(root).as_posix().encode("utf-8")
        content = path.read_bytes()
        h.update(len(rel).to_bytes(2, "big") + rel)
        h.update(len(content).to_bytes(8, "big") + content)
    return h.digest()


class NilEvidenceProvider:
    """Signs nil evidence with the machine's development key. **No security**: development only.

    Args:
        key_path: the development key file; created on first use if missing.
        hostname: the ``hostname`` claim; this machine's name by default.
        measurement: the ``measurement`` claim; :func:`runtime_measurement` by default.

    Example:
        >>> from pathlib import Path
        >>> import tempfile
        >>> from donjon.attestation.nil import NilVerifier
        >>> from donjon.attestation.result import Endorsements
        >>> from datetime import UTC, datetime
        >>> key = Path(tempfile.mkdtemp()) / "donjon" / "nil-dev-key.pem"
        >>> evidence = NilEvidenceProvider(key_path=key).evidence(bytes(64))
        >>> verified = NilVerifier().verify(
        ...     evidence, endorsements=Endorsements(), now=datetime.now(UTC)
        ... )
        >>> verified.claims["insecure"]
        True
    """

    def __init__(
        self, *, key_path: Path, hostname: str | None = None, measurement: bytes | None = None
    ) -> None:
        if measurement is not None and len(measurement) != MEASUREMENT_BYTES:
            raise ConfigError(
                f"measurement must be {MEASUREMENT_BYTES} bytes (SHA-384), got {len(measurement)}"
            )
        self._key_path = key_path
        self._hostname = _clean_hostname(hostname if hostname is not None else socket.gethostname())
        self._measurement = measurement
        self._key: DevSigningKey | None = None

    @classmethod
    def default(cls, environ: Mapping[str, str] | None = None) -> NilEvidenceProvider:
        """A provider using the key at :func:`default_dev_key_path` (``os.environ`` if None)."""
        return cls(key_path=default_dev_key_path(os.environ if environ is None else environ))

    @property
    def platform(self) -> Platform:
        return Platform.NIL

    @property
    def key_path(self) -> Path:
        return self._key_path

    @property
    def key(self) -> DevSigningKey:
        """The development key (loaded, or created, on first use).

        Raises:
            ConfigError: see :func:`load_or_create_dev_key`.
        """
        if self._key is None:
            self._key = load_or_create_dev_key(self._key_path)
        return self._key

    @property
    def measurement(self) -> bytes:
        """The ``measurement`` claim (computed once)."""
        if self._measurement is None:
            self._measurement = runtime_measurement()
        return self._measurement

    def evidence(self, report_data: bytes) -> bytes:
        """Nil evidence (a COSE_Sign1, ``donjon-nil/v1``) binding *report_data* (64 bytes).

        Raises:
            EvidenceError: *report_data* is not 64 bytes.
            ConfigError: the development key cannot be loaded or created.
        """
        if len(report_data) != REPORT_DATA_BYTES:
            raise EvidenceError(
                f"report data must be exactly {REPORT_DATA_BYTES} bytes, got {len(report_data)}"
            )
        claims = NilClaims(
            report_data=bytes(report_data),
            measurement=self.measurement,
            hostname=self._hostname,
            version=donjon.__version__,
        )
        key = self.key
        return key.sign1(claims.encode(), protected=nil_protected_header(key.spki))


def _clean_hostname(name: str) -> str:
    # The hostname is informational; keep it printable and within the format's bound.
    printable = "".join(ch for ch in name if ch.isprintable()) or "localhost"
    encoded = printable.encode("utf-8")[:MAX_HOSTNAME_BYTES]
    return encoded.decode("utf-8", errors="ignore")


def _load(path: Path) -> DevSigningKey:
    """Read and check the key file; FileNotFoundError when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(
                f"nil development key {path} is a symbolic link, which is refused (another user "
                f"could redirect it); point {DEV_KEY_ENV} at the real file"
            ) from e
        raise ConfigError(
            f"cannot read the nil development key {path}: {e.strerror or e}; "
            f"set {DEV_KEY_ENV} to a usable location"
        ) from e
    try:
        info = os.fstat(fd)
        _check_private_file(path, info)
        data = os.read(fd, MAX_KEY_PEM_BYTES + 1)
    finally:
        os.close(fd)
    return DevSigningKey.from_pem(data, source=str(path))


def _check_private_file(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"nil development key {path} is not a regular file")
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"nil development key {path} is owned by uid {info.st_uid}, not by you "
            f"(uid {os.getuid()}); use your own key file"
        )
    if info.st_mode & 0o077:
        raise ConfigError(
            f"nil development key {path} is accessible by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
        )


def _create(path: Path) -> None:
    directory = path.parent
    try:
        if not directory.exists():
            # Parents get the default mode; the key's own directory is private (0700).
            directory.parent.mkdir(parents=True, exist_ok=True)
            try:
                directory.mkdir(mode=0o700)
            except FileExistsError:
                pass  # another process created it first; checked below
            else:
                os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        info = os.stat(directory)
        if info.st_mode & 0o022:
            raise ConfigError(
                f"directory {directory} is writable by other users "
                f"(mode {stat.S_IMODE(info.st_mode):04o}), so they could replace the nil "
                f"development key; run `chmod 700 {directory}`"
            )
        pem = generate_dev_key_pem()
        tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                # link() fails if the key appeared meanwhile: the first writer wins, and
                # nobody ever reads a half-written key.
                os.link(tmp, path)
            except FileExistsError:
                _logger.debug("nil development key %s was created concurrently", path)
                return
        finally:
            os.unlink(tmp)
    except OSError as e:
        raise ConfigError(
            f"cannot create the nil development key {path}: {e.strerror or e}; "
            f"set {DEV_KEY_ENV} to a writable location"
        ) from e
    _logger.info("created nil development key %s", path)


__all__ = [
    "DEV_KEY_ENV",
    "DEV_KEY_FILENAME",
    "MEASURED_SUBPACKAGES",
    "NilEvidenceProvider",
    "default_dev_key_path",
    "load_or_create_dev_key",
    "runtime_files",
    "runtime_measurement",
]
