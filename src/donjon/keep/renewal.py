"""Keeping a deployed Keep's Steward certificate valid for as long as its workload serves.

Steward's certificates are short-lived on purpose (24 h by default): a Keep whose TCB is revoked,
or that a new policy no longer accepts, ages out within a day. A workload that serves TLS for
longer than that would then present an expired certificate. So while a deployed Keep's workload
has TLS sockets, :class:`CertificateRenewer` asks Steward for a new certificate for the same key,
with fresh evidence and a fresh nonce, two thirds of the way from the moment it got the current
one to that one's expiry (not from its ``notBefore``, which Steward backdates), and the
listeners present it from their next handshake (:meth:`IdentityTls.renew`). If Steward refuses,
because the evidence no longer passes its policy, the certificate is left to expire: that is
the point of short lifetimes. Failures are retried (at most every :data:`MAX_RETRY_S`, at least
every :data:`MIN_RETRY_S`), and the workload's stderr says what happened, so its owner sees it.

The schedule is pure (:func:`renewal_due`, :func:`retry_delay`: times in, times out); only the
thread reads the clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509

from donjon.errors import DecodeError, Error

if TYPE_CHECKING:
    from donjon.keep.sockets.tls import IdentityTls

__all__ = [
    "MAX_RETRY_S",
    "MIN_RETRY_S",
    "RENEW_AT_FRACTION",
    "CertificateRenewer",
    "leaf_validity",
    "renewal_due",
    "retry_delay",
]

_logger = logging.getLogger(__name__)

RENEW_AT_FRACTION = 2 / 3
"""Renew once this fraction of the certificate's validity has passed."""
MIN_RETRY_S = 1.0
"""Shortest wait before trying a failed renewal again (seconds)."""
MAX_RETRY_S = 300.0
"""Longest wait before trying a failed renewal again (seconds)."""


def renewal_due(received_at: datetime, not_after: datetime) -> datetime:
    """When a certificate received at *received_at*, valid until *not_after*, should be
    renewed: two thirds of the way, and never sooner than MIN_RETRY_S after it arrived (a
    certificate that is nearly expired when issued, e.g. capped by the CA's own expiry, must
    not make the Keep ask again at once, over and over)."""
    due = received_at + (not_after - received_at) * RENEW_AT_FRACTION
    return max(due, received_at + timedelta(seconds=MIN_RETRY_S))


def retry_delay(not_after: datetime, now: datetime) -> float:
    """Seconds to wait after a failed renewal at *now*: an eighth of what validity is left,
    within [MIN_RETRY_S, MAX_RETRY_S], so several tries fit before it expires."""
    left = (not_after - now).total_seconds()
    return min(MAX_RETRY_S, max(MIN_RETRY_S, left / 8))


def leaf_validity(chain_pem: bytes) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) of the first certificate of a PEM chain, as aware UTC datetimes.

    Raises:
        DecodeError: no certificate in *chain_pem*.
    """
    try:
        leaf = x509.load_pem_x509_certificate(chain_pem)
    except ValueError as e:
        raise DecodeError(
            f"the Keep's certificate chain does not start with a certificate: {e}"
        ) from e
    return leaf.not_valid_before_utc, leaf.not_valid_after_utc


class CertificateRenewer:
    """A thread that renews *tls*'s certificate through *recertify* before it expires.

    Args:
        tls: the listeners' identity; renewed in place.
        recertify: gets a new chain (PEM, leaf first) for the same key from Steward; raises a
            :class:`donjon.errors.Error` when it cannot.
        notice: where to say what happened (the workload's stderr and the Keep's log).
        clock: the time (tests may pass another).
    """

    def __init__(
        self,
        tls: IdentityTls,
        recertify: Callable[[], bytes],
        notice: Callable[[str], None],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tls = tls
        self._recertify = recertify
        self._notice = notice
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="donjon-renewal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the workload has ended); returns once the thread has."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        _, not_after = leaf_validity(self._tls.chain_pem)
        due = renewal_due(self._clock(), not_after)
        told_expired = False
        while not self._stop.is_set():
            now = self._clock()
            if now < due:
                self._stop.wait((due - now).total_seconds())
                continue
            try:
                chain = self._recertify()
                self._tls.renew(chain)
                _, not_after = leaf_validity(chain)
            except Error as e:
                wait = retry_delay(not_after, now)
                self._notice(
                    f"renewing the Keep's certificate failed ({e.diagnostics()}); "
                    f"trying again in {wait:.0f} s"
                )
                if now >= not_after and not told_expired:
                    told_expired = True
                    self._notice(
                        f"the Keep's certificate expired at {_shown(not_after)}: TLS peers "
                        "refuse it until Steward certifies the Keep again"
                    )
                due = now + timedelta(seconds=wait)
                continue
            except Exception:  # a bug: say so once, and stop rather than spin
                _logger.exception("certificate renewal failed unexpectedly")
                self._notice("certificate renewal stopped after an internal error (see the log)")
                return
            told_expired = False
            due = renewal_due(self._clock(), not_after)
            self._notice(
                f"renewed the Keep's certificate from Steward (fresh evidence); valid until "
                f"{_shown(not_after)}"
            )


def _shown(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")
