"""Evidence from Linux configfs-tsm: one interface for SEV-SNP, TDX and Arm CCA guests.

The kernel ABI (Documentation/ABI/testing/configfs-tsm, Linux >= 6.7)::

    mkdir  <root>/report/<name>          the kernel populates the entry's attributes
    write  <name>/privlevel              optional (SNP: the VMPL); must be >= privlevel_floor
    write  <name>/inblob                 up to 64 bytes of report data
    read   <name>/outblob                the report or quote, generated on first read
    read   <name>/auxblob                optional supplemental data (SNP: the certificate table)
    read   <name>/provider               "sev_guest", "tdx_guest", "arm_cca_guest", ...
    read   <name>/generation             bumped by every write to the entry
    rmdir  <root>/report/<name>

Rule 1: the generation is read before writing and after reading; if it moved by anything but
our own writes, another process wrote to the entry in between and the blobs may not be ours, so
the whole exchange is retried (a bounded number of times) and never returned.
Rule 2: every read is bounded, every entry we create is removed, and a missing interface is a
``BackendUnavailableError`` that says what to install or mount.

All file-system access goes through a :class:`ConfigfsIo`, so tests drive the provider against a
tree under ``tmp_path`` with a fake kernel that behaves like configfs.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from donjon.attestation.result import Endorsements, Platform
from donjon.backends._common import EvidenceError, TooLargeError, read_bounded, write_all
from donjon.errors import BackendUnavailableError, ConfigError

_logger = logging.getLogger(__name__)

TSM_ROOT = "/sys/kernel/config/tsm"
"""Where configfs-tsm lives when configfs is mounted at /sys/kernel/config."""

INBLOB_BYTES = 64
"""Report data size; the kernel accepts up to 64 bytes (TSM_INBLOB_MAX)."""

MAX_OUTBLOB_BYTES = 64 * 1024
"""Largest report or quote accepted (bytes). The kernel caps outblob at TSM_OUTBLOB_MAX (32 KiB);
twice that leaves room for growth while bounding what a hostile kernel module can make us hold."""

MAX_AUXBLOB_BYTES = 64 * 1024
"""Largest auxiliary blob accepted (bytes): an SNP certificate table is about 4-8 KiB."""

MAX_ATTRIBUTE_BYTES = 4096
"""Largest text attribute (provider, generation, privlevel_floor) accepted (bytes): a page."""

MAX_ATTEMPTS = 3
"""How many times a report is retried after a concurrent writer raced us (Rule 1)."""

MAX_SNP_CERT_ENTRIES = 64
"""Most entries accepted in an SNP certificate table (the GHCB spec defines five kinds)."""

PROVIDER_PLATFORMS: dict[str, Platform] = {
    "sev_guest": Platform.SEV_SNP,
    "tdx_guest": Platform.TDX,
    "arm_cca_guest": Platform.CCA,
}
"""configfs-tsm ``provider`` names and the evidence format each one writes to outblob."""

SNP_CERT_GUIDS: dict[str, str] = {
    "63da758d-e664-4564-adc5-f4b93be8accd": "vcek",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "vlek",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ask",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ark",
    "92f81bc3-5811-4d3d-97ff-d19f88dc67ea": "crl",
}
"""GUIDs of the SEV-SNP extended-report certificate table (AMD GHCB spec 56421, table
"Certificate table"), written in the order of their text form (big-endian, as ``uuid_parse``)."""

_SNP_CERT_ENTRY = struct.Struct("<16sII")  # GUID, offset, length: GHCB spec


class ConfigfsIo(Protocol):
    """The file-system operations the provider needs; the seam tests replace."""

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def exists(self, path: Path) -> bool: ...

    def read(self, path: Path, max_bytes: int) -> bytes:
        """The whole file; raises ``TooLargeError`` past *max_bytes*, ``OSError`` on failure."""
        ...

    def write(self, path: Path, data: bytes) -> None:
        """Write *data* in one call and close (configfs commits on close)."""
        ...


class OsConfigfsIo:
    """The real thing: plain OS calls on the configfs mount."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def read(self, path: Path, max_bytes: int) -> bytes:
        return read_bounded(path, max_bytes)

    def write(self, path: Path, data: bytes) -> None:
        write_all(path, data)


@dataclass(frozen=True, slots=True)
class SnpCertificate:
    """One entry of an SNP certificate table.

    Attributes:
        guid: the entry's GUID, in text form.
        kind: ``vcek``, ``vlek``, ``ask``, ``ark``, ``crl``, or None for a GUID we do not know.
        data: the entry's bytes (DER for certificates).
    """

    guid: str
    kind: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class TsmReport:
    """One configfs-tsm report.

    Attributes:
        provider: the kernel's provider name (``sev_guest``, ``tdx_guest``, ``arm_cca_guest``).
        platform: the evidence format of ``outblob``.
        outblob: the evidence: an SNP report, a TDX quote, a CCA token.
        auxblob: supplemental data, or b"" (SNP: the host-provided certificate table).
        generation: the entry's generation when the blobs were read.
    """

    provider: str
    platform: Platform
    outblob: bytes
    auxblob: bytes
    generation: int

    def snp_certificates(self) -> tuple[SnpCertificate, ...]:
        """The SNP certificate table in ``auxblob`` (empty for other providers or no table).

        Raises:
            EvidenceError: the table is malformed (the host supplies it: it is untrusted).
        """
        if self.platform is not Platform.SEV_SNP or not self.auxblob:
            return ()
        return parse_snp_cert_table(self.auxblob)

    def endorsements(self) -> Endorsements:
        """What a verifier needs beside ``outblob``: for SNP, the host's certificates (VCEK or
        VLEK, ASK, ARK); other formats carry their chain inside the evidence."""
        return Endorsements(
            certs=tuple(c.data for c in self.snp_certificates() if c.kind not in {None, "crl"}),
            collateral=tuple(c.data for c in self.snp_certificates() if c.kind == "crl"),
        )


def parse_snp_cert_table(blob: bytes) -> tuple[SnpCertificate, ...]:
    """Parse an SEV-SNP certificate table: (GUID, offset, length) entries, then an all-zero one.

    Raises:
        EvidenceError: no terminator, too many entries, or an entry outside the blob.
    """
    entries: list[SnpCertificate] = []
    for index in range(MAX_SNP_CERT_ENTRIES + 1):
        start = index * _SNP_CERT_ENTRY.size
        if start + _SNP_CERT_ENTRY.size > len(blob):
            raise EvidenceError("SNP certificate table has no all-zero terminator entry")
        guid_bytes, offset, length = _SNP_CERT_ENTRY.unpack_from(blob, start)
        if guid_bytes == bytes(16):
            if offset or length:
                raise EvidenceError("SNP certificate table terminator is not all zero")
            return tuple(entries)
        if index == MAX_SNP_CERT_ENTRIES:
            break
        if offset + length > len(blob) or length == 0:
            raise EvidenceError(
                f"SNP certificate table entry {index} ({offset}+{length}) lies outside the "
                f"{len(blob)}-byte table"
            )
        guid = str(uuid.UUID(bytes=guid_bytes))
        entries.append(
            SnpCertificate(guid, SNP_CERT_GUIDS.get(guid), blob[offset : offset + length])
        )
    raise EvidenceError(f"SNP certificate table has more than {MAX_SNP_CERT_ENTRIES} entries")


class TsmReportProvider:
    """Evidence through configfs-tsm.

    Args:
        root: the ``tsm`` directory of configfs.
        privlevel: the privilege level to request (SNP: VMPL 0-3), or None for the default.
        io: file-system access (tests pass a fake kernel).
        max_attempts: retries after a concurrent writer changed the entry (Rule 1).

    Example:
        >>> provider = TsmReportProvider()  # doctest: +SKIP
        >>> report = provider.report(bytes(64))  # doctest: +SKIP
        >>> report.provider, len(report.outblob)  # doctest: +SKIP
        ('sev_guest', 1184)
    """

    def __init__(
        self,
        *,
        root: Path = Path(TSM_ROOT),
        privlevel: int | None = None,
        io: ConfigfsIo | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if privlevel is not None and not 0 <= privlevel <= 3:
            raise ConfigError(f"privlevel must be 0-3 (an SNP VMPL), got {privlevel}")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        self._root = root
        self._privlevel = privlevel
        self._io: ConfigfsIo = io if io is not None else OsConfigfsIo()
        self._max_attempts = max_attempts
        self._platform: Platform | None = None

    @property
    def platform(self) -> Platform:
        """The evidence format; learned once from a short-lived report entry's ``provider``.

        Raises:
            BackendUnavailableError: configfs-tsm is absent.
            EvidenceError: the entry could not be created or names an unknown provider.
        """
        if self._platform is None:
            with _Entry(self._io, self._report_dir()) as entry:
                self._platform = _platform_of(self._read_provider(entry))
        return self._platform

    def evidence(self, report_data: bytes) -> bytes:
        """The report for *report_data* (``outblob``); see :meth:`report` for the rest."""
        return self.report(report_data).outblob

    def report(self, report_data: bytes) -> TsmReport:
        """Ask the TEE for a report binding exactly *report_data* (64 bytes).

        Raises:
            BackendUnavailableError: configfs-tsm is absent.
            EvidenceError: the entry could not be used, the TEE refused, the provider is unknown,
                a blob was too large, or concurrent writers raced every attempt.
        """
        if len(report_data) != INBLOB_BYTES:
            raise EvidenceError(
                f"report data must be exactly {INBLOB_BYTES} bytes, got {len(report_data)}"
            )
        with _Entry(self._io, self._report_dir()) as entry:
            provider = self._read_provider(entry)
            platform = _platform_of(provider)
            seen: list[tuple[int, int]] = []
            for attempt in range(1, self._max_attempts + 1):
                before = self._generation(entry)
                writes = self._write_request(entry, report_data)
                outblob = self._read(entry / "outblob", MAX_OUTBLOB_BYTES)
                auxblob = (
                    self._read(entry / "auxblob", MAX_AUXBLOB_BYTES)
                    if self._io.exists(entry / "auxblob")
                    else b""
                )
                after = self._generation(entry)
                if after == before + writes:
                    if not outblob:
                        raise EvidenceError(f"{provider}: the kernel returned an empty report")
                    self._platform = platform
                    return TsmReport(provider, platform, outblob, auxblob, after)
                seen.append((before + writes, after))
                _logger.warning(
                    "configfs-tsm entry %s changed under us (generation %d, expected %d); "
                    "attempt %d of %d",
                    entry.name,
                    after,
                    before + writes,
                    attempt,
                    self._max_attempts,
                )
        raise EvidenceError(
            f"another process kept writing to configfs-tsm entry {entry.name} "
            f"(generation expected/found: {', '.join(f'{e}/{f}' for e, f in seen)}); the report "
            f"was discarded after {self._max_attempts} attempts. Find the other writer, or retry"
        )

    # --- steps -------------------------------------------------------------------------------

    def _report_dir(self) -> Path:
        report_dir = self._root / "report"
        if not self._io.exists(report_dir):
            raise BackendUnavailableError(
                f"configfs-tsm is not available: {report_dir} does not exist. It needs a guest "
                "kernel >= 6.7 with CONFIG_TSM_REPORTS and a TEE guest driver (sev-guest, "
                "tdx-guest, arm-cca-guest), and configfs mounted "
                "(`mount -t configfs none /sys/kernel/config`)"
            )
        return report_dir

    def _write_request(self, entry: Path, report_data: bytes) -> int:
        writes = 0
        if self._privlevel is not None:
            if not self._io.exists(entry / "privlevel"):
                raise EvidenceError(
                    f"this TEE's configfs-tsm provider has no privilege levels; "
                    f"do not ask for privlevel {self._privlevel}"
                )
            if self._io.exists(entry / "privlevel_floor"):
                floor = self._read_int(entry / "privlevel_floor")
                if self._privlevel < floor:
                    raise EvidenceError(
                        f"privlevel {self._privlevel} is below this guest's floor {floor} "
                        f"(the guest runs at that level); ask for {floor} or higher"
                    )
            self._write(entry / "privlevel", f"{self._privlevel}\n".encode())
            writes += 1
        self._write(entry / "inblob", report_data)
        return writes + 1

    def _read_provider(self, entry: Path) -> str:
        return (
            self._read(entry / "provider", MAX_ATTRIBUTE_BYTES)
            .decode("ascii", errors="replace")
            .strip()
        )

    def _generation(self, entry: Path) -> int:
        return self._read_int(entry / "generation")

    def _read_int(self, path: Path) -> int:
        text = self._read(path, MAX_ATTRIBUTE_BYTES).decode("ascii", errors="replace").strip()
        try:
            return int(text, 10)
        except ValueError:
            raise EvidenceError(f"{path} holds {text[:40]!r}, expected a number") from None

    def _read(self, path: Path, max_bytes: int) -> bytes:
        try:
            return self._io.read(path, max_bytes)
        except TooLargeError:
            raise EvidenceError(f"{path} is larger than {max_bytes} bytes; refusing it") from None
        except FileNotFoundError:
            raise EvidenceError(
                f"{path} is missing: {path.parent.parent} is not a configfs-tsm report "
                "directory (is configfs mounted, and is this the real /sys/kernel/config/tsm?)",
                errno=errno.ENOENT,
            ) from None
        except OSError as e:
            raise EvidenceError(
                f"reading {path} failed: {e.strerror or e} (the TEE or its driver refused the "
                "request; see the kernel log)",
                errno=e.errno,
            ) from e

    def _write(self, path: Path, data: bytes) -> None:
        try:
            self._io.write(path, data)
        except FileNotFoundError:
            raise EvidenceError(
                f"{path} is missing: {path.parent.parent} is not a configfs-tsm report directory",
                errno=errno.ENOENT,
            ) from None
        except OSError as e:
            raise EvidenceError(f"writing {path} failed: {e.strerror or e}", errno=e.errno) from e


def _platform_of(provider: str) -> Platform:
    try:
        return PROVIDER_PLATFORMS[provider]
    except KeyError:
        raise EvidenceError(
            f"configfs-tsm provider {provider[:64]!r} is not one donjon can verify "
            f"(known: {', '.join(sorted(PROVIDER_PLATFORMS))})"
        ) from None


class _Entry:
    """A report entry that exists for the duration of a ``with`` block."""

    def __init__(self, io: ConfigfsIo, report_dir: Path) -> None:
        self._io = io
        # Unique per request: concurrent donjon processes never share an entry (Rule 1).
        self._path = report_dir / f"donjon-{os.getpid()}-{secrets.token_hex(8)}"

    def __enter__(self) -> Path:
        try:
            self._io.mkdir(self._path)
        except PermissionError as e:
            raise EvidenceError(
                f"cannot create {self._path}: {e.strerror}; configfs-tsm reports need root "
                "(or CAP_SYS_ADMIN) inside the guest",
                errno=e.errno,
            ) from e
        except OSError as e:
            raise EvidenceError(
                f"cannot create {self._path}: {e.strerror or e}", errno=e.errno
            ) from e
        return self._path

    def __exit__(self, *exc: object) -> None:
        try:
            self._io.rmdir(self._path)
        except OSError as e:
            # Leaving an entry behind wastes a little kernel memory; it must not hide the result.
            _logger.warning("could not remove configfs-tsm entry %s: %s", self._path, e)


__all__ = [
    "INBLOB_BYTES",
    "MAX_ATTEMPTS",
    "MAX_AUXBLOB_BYTES",
    "MAX_OUTBLOB_BYTES",
    "PROVIDER_PLATFORMS",
    "SNP_CERT_GUIDS",
    "TSM_ROOT",
    "ConfigfsIo",
    "OsConfigfsIo",
    "SnpCertificate",
    "TsmReport",
    "TsmReportProvider",
    "parse_snp_cert_table",
]
