"""What can go wrong while completing endorsements, as ``donjon.errors`` subclasses.

Two families, kept apart because a caller reacts to them differently (STYLE rule 8):

- :class:`EndorsementFetchError` (a ``TransportError``): the service could not give us a document
  (unreachable, too slow, an HTTP error, an oversized or unusable answer). Retrying later, or
  pointing at another service or cache, may help. Nothing was verified.
- :class:`EndorsementUnavailableError` (a ``ChainError``): no service can supply what this
  evidence needs (a VLEK, a masked chip id, an unknown product line): the caller must pass it.
  The evidence cannot be verified, just as with a missing certificate.
"""

from __future__ import annotations

import enum

from donjon.errors import ChainError, ConnectError, TransportError, TransportTimeoutError


class FetchProblem(enum.StrEnum):
    """Why a fetch failed (the ``problem`` attribute of :class:`EndorsementFetchError`)."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http-status"
    RATE_LIMITED = "rate-limited"
    TOO_LARGE = "too-large"
    MALFORMED = "malformed"
    BUSY = "busy"
    PAUSED = "paused"
    """The service asked us to slow down (HTTP 429, or 503 with ``Retry-After``): nothing goes
    to its host until the time it named."""
    BUDGET_EXHAUSTED = "budget-exhausted"
    """This process's request budget for the service's host is spent for now."""


class EndorsementFetchError(TransportError):
    """A document could not be fetched from AMD KDS, Intel PCS or a cache standing in for them.

    Attributes:
        url: the URL asked for (never carries credentials).
        problem: what went wrong.
        status_code: the HTTP status, when the service answered with one.
        retry_after: the ``Retry-After`` the service sent with HTTP 429 or 503 (seconds), if
            it sent one we read (delta-seconds).
        retry_in: when the failure was not a request of this fetch but a remembered failure, a
            paused service or a spent budget: how long until the URL may be asked for again
            (seconds); None for the failure of a request just made.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        problem: FetchProblem,
        status_code: int | None = None,
        retry_after: float | None = None,
        retry_in: float | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.problem = problem
        self.status_code = status_code
        self.retry_after = retry_after
        self.retry_in = retry_in


class EndorsementTimeoutError(EndorsementFetchError, TransportTimeoutError):
    """The service did not answer within the time allowed."""


class EndorsementConnectError(EndorsementFetchError, ConnectError):
    """The service could not be reached."""


class EndorsementUnavailableError(ChainError):
    """Evidence whose missing endorsement no service serves; the caller must supply it."""


__all__ = [
    "EndorsementConnectError",
    "EndorsementFetchError",
    "EndorsementTimeoutError",
    "EndorsementUnavailableError",
    "FetchProblem",
]
