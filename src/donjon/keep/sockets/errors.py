"""Errors of the socket layer: each a :mod:`donjon.errors` subclass with its own meaning.

::

    WorkloadError (125)
    ├─ SocketSetupError          a listen or connect entry could not be set up
    │  └─ PeerVerificationError  a connect entry's TLS server was refused (also a ChainError)
    ├─ RunStoppedError           the caller stopped the run (NetworkOptions.stop)
    └─ SocketLayerError          a bug in the socket layer (never the workload's fault)

A deadline that ends a workload blocked in a socket call is the executor's
:class:`~donjon.keep.errors.DeadlineError`, as for any other deadline.
"""

from __future__ import annotations

from donjon.errors import ChainError, WorkloadError

__all__ = ["PeerVerificationError", "RunStoppedError", "SocketLayerError", "SocketSetupError"]


class SocketSetupError(WorkloadError):
    """A ``[[files]]`` socket could not be provided: the workload did not start.

    Attributes:
        fd: the entry's fd number (its index in ``[[files]]``).
        name: the entry's name in ``FD_NAMES``.
    """

    def __init__(self, message: str, *, fd: int, name: str) -> None:
        super().__init__(message)
        self.fd = fd
        self.name = name


class PeerVerificationError(SocketSetupError, ChainError):
    """A ``connect`` entry's server did not present a certificate its ``server_ca`` accepts
    (or not for its ``host``), so the Keep refused to hand the connection to the workload."""


class RunStoppedError(WorkloadError):
    """The caller stopped the run through its :class:`~donjon.keep.sockets.StopSignal`."""


class SocketLayerError(WorkloadError):
    """An internal error in the socket layer (a bug); the run was stopped."""
