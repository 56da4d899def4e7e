"""The one exception tree of donjon.

Every error a caller can see is a subclass of :class:`Error`. Each carries an actionable
message (what was wrong, and what to do) and an ``exit_code`` that the CLI uses::

    Error                       exit 1
    ├─ WireError                malformed or unexpected bytes on the wire
    │  ├─ DecodeError           bytes that do not decode (bad CBOR, wrong shape, too large)
    │  ├─ EncodeError
    │  ├─ LocalProtocolError    we misused a protocol
    │  └─ RemoteProtocolError   the peer misbehaved
    ├─ VerificationError        evidence or a signature did not verify
    │  ├─ EvidenceFormatError   evidence that does not parse, or is out of bounds
    │  ├─ ChainError            certificate chain / CRL / trust anchor problems
    │  ├─ SignatureError        a signature that does not verify
    │  ├─ MeasurementError      a measurement or report-data mismatch
    │  ├─ TcbStatusError        TCB level too low or not allowed
    │  ├─ FreshnessError        a nonce or collateral that is stale, replayed or from the future
    │  └─ PolicyError           evidence was authentic but the policy rejects it
    ├─ BackendError
    │  ├─ BackendUnavailableError
    │  └─ KeepLaunchError
    ├─ WorkloadError            exit 125+: the workload could not run or was stopped
    │  ├─ ModuleError           not Wasm, no _start, missing import
    │  ├─ TrapError             the workload trapped
    │  └─ LimitError            a configured limit stopped it (memory, deadline)
    ├─ RegistryError
    │  ├─ NotFoundError
    │  └─ ConflictError
    ├─ TransportError           I/O failures; retryable
    │  ├─ TransportTimeoutError
    │  └─ ConnectError
    └─ ConfigError              a bad configuration file or setting
       └─ UsageError            a bad command line (exit 2)
"""

from __future__ import annotations

from typing import ClassVar


class Error(Exception):
    """Root of every donjon error.

    Args:
        message: what went wrong and, where it helps, what to do about it.
    """

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        if type(self) in _ABSTRACT:
            raise TypeError(f"{type(self).__name__} is abstract; raise a specific subclass")
        super().__init__(message)
        self.message = message

    def diagnostics(self) -> str:
        """The text shown to a user: one or a few lines, never a traceback."""
        return self.message


class WireError(Error):
    """Bytes on the wire that are malformed or not what the protocol allows."""


class DecodeError(WireError):
    """Bytes that do not decode into the expected message."""


class EncodeError(WireError):
    """A value that cannot be encoded."""


class LocalProtocolError(WireError):
    """We tried to do something the protocol does not allow."""


class RemoteProtocolError(WireError):
    """The peer did something the protocol does not allow."""


class VerificationError(Error):
    """Evidence, a chain or a signature did not verify."""


class EvidenceFormatError(VerificationError):
    """Evidence that does not parse or is outside its documented bounds."""


class ChainError(VerificationError):
    """A certificate chain, CRL or trust anchor problem."""


class SignatureError(VerificationError):
    """A signature that does not verify over the bytes it covers."""


class MeasurementError(VerificationError):
    """A measurement, report data or binding that does not match."""


class TcbStatusError(VerificationError):
    """A TCB level that is too low, unknown or not allowed."""


class FreshnessError(VerificationError):
    """A nonce, certificate or collateral that is stale, replayed or not yet valid."""


class PolicyError(VerificationError):
    """Authentic evidence that the policy does not accept."""


class BackendError(Error):
    """A Keep backend problem."""


class BackendUnavailableError(BackendError):
    """The requested backend cannot run on this machine."""


class KeepLaunchError(BackendError):
    """A Keep could not be created or started."""


class WorkloadError(Error):
    """The workload could not run, or was stopped. Exit codes 125 and above."""

    exit_code: ClassVar[int] = 125


class ModuleError(WorkloadError):
    """A module that is not valid Wasm, has no _start, or imports what the Keep lacks."""

    exit_code: ClassVar[int] = 126


class TrapError(WorkloadError):
    """The workload trapped."""

    exit_code: ClassVar[int] = 134


class LimitError(WorkloadError):
    """A configured limit (memory, deadline) stopped the workload."""

    exit_code: ClassVar[int] = 137


class RegistryError(Error):
    """A registry or package problem."""


class NotFoundError(RegistryError):
    """A package, tag or blob that does not exist."""


class ConflictError(RegistryError):
    """A registry object that exists with other content."""


class TransportError(Error):
    """An I/O failure talking to another component; usually retryable."""


class TransportTimeoutError(TransportError):
    """A peer that did not answer in time."""


class ConnectError(TransportError):
    """A peer that could not be reached."""


class ConfigError(Error):
    """A configuration file or setting that is wrong; says where and what is allowed."""

    exit_code: ClassVar[int] = 3


class UsageError(ConfigError):
    """A command line that is wrong."""

    exit_code: ClassVar[int] = 2


_ABSTRACT: frozenset[type[Error]] = frozenset(
    {Error, WireError, VerificationError, BackendError, RegistryError, TransportError}
)

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ChainError",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "DecodeError",
    "EncodeError",
    "Error",
    "EvidenceFormatError",
    "FreshnessError",
    "KeepLaunchError",
    "LimitError",
    "LocalProtocolError",
    "MeasurementError",
    "ModuleError",
    "NotFoundError",
    "PolicyError",
    "RegistryError",
    "RemoteProtocolError",
    "SignatureError",
    "TcbStatusError",
    "TransportError",
    "TransportTimeoutError",
    "TrapError",
    "UsageError",
    "VerificationError",
    "WorkloadError",
]
