"""Steward's Prometheus metrics, kept in memory and rendered in the text exposition format 0.0.4.

Hand-written (no client library): four families, label values from closed sets (route templates,
status codes, error class names), so cardinality stays bounded whatever clients send.

    donjon_steward_requests_total{endpoint, status}           counter
    donjon_steward_request_duration_seconds{endpoint}         histogram
    donjon_steward_verdicts_total{verdict, reason}            counter  (reason = error class)
    donjon_steward_certificates_issued_total                  counter
    donjon_steward_nonces_issued_total                        counter
    donjon_steward_replay_cache_entries                       gauge
    donjon_steward_endorsement_fetches_total{outcome}         counter  (with --fetch-endorsements)

Each uvicorn worker process keeps its own numbers; scrape each worker, or run one per pod.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Mapping

LATENCY_BUCKETS_SECONDS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Histogram upper bounds (seconds): the issue's p95 target (25 ms) falls on a boundary."""

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_PREFIX = "donjon_steward"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return repr(value)


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(LATENCY_BUCKETS_SECONDS)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        i = bisect_left(LATENCY_BUCKETS_SECONDS, seconds)
        if i < len(self.counts):
            self.counts[i] += 1
        self.count += 1
        self.total += seconds


class Metrics:
    """Thread-safe counters and histograms for one Steward process.

    Args:
        replay_cache_size: reads the current replay-cache size at render time.
        endorsement_fetches: reads, at render time, how many endorsement documents ended each
            way (``donjon.endorse.FetchOutcome`` values: ``memory``, ``cache``, ``fetched``,
            ``failed``, ``remembered``, ``paused``, ``budget-exhausted``, ``busy``); None when
            Steward fetches nothing.
    """

    def __init__(
        self,
        *,
        replay_cache_size: Callable[[], int] = lambda: 0,
        endorsement_fetches: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._latency: dict[str, _Histogram] = {}
        self._verdicts: dict[tuple[str, str], int] = {}
        self._issued = 0
        self._nonces = 0
        self._replay_cache_size = replay_cache_size
        self._endorsement_fetches = endorsement_fetches

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        with self._lock:
            key = (endpoint, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            hist = self._latency.get(endpoint)
            if hist is None:
                hist = self._latency[endpoint] = _Histogram()
            hist.observe(seconds)

    def observe_verdict(self, *, accepted: bool, reason: str) -> None:
        """Count one attestation decision; *reason* is ``"accepted"`` or an error class name."""
        with self._lock:
            key = ("accept" if accepted else "reject", reason)
            self._verdicts[key] = self._verdicts.get(key, 0) + 1
            if accepted:
                self._issued += 1

    def observe_nonce(self) -> None:
        """Count one issued nonce."""
        with self._lock:
            self._nonces += 1

    def requests(self, endpoint: str, status: int) -> int:
        """How many requests to *endpoint* finished with *status* (for tests and benchmarks)."""
        with self._lock:
            return self._requests.get((endpoint, str(status)), 0)

    def render(self) -> str:
        """The exposition text (ends with a newline)."""
        out: list[str] = []
        with self._lock:
            name = f"{_PREFIX}_requests_total"
            out += [
                f"# HELP {name} HTTP requests by endpoint and status.",
                f"# TYPE {name} counter",
            ]
            for (endpoint, status), n in sorted(self._requests.items()):
                out.append(f"{name}{_labels((('endpoint', endpoint), ('status', status)))} {n}")

            name = f"{_PREFIX}_request_duration_seconds"
            out += [
                f"# HELP {name} Request latency by endpoint.",
                f"# TYPE {name} histogram",
            ]
            for endpoint, hist in sorted(self._latency.items()):
                cumulative = 0
                for bound, n in zip(LATENCY_BUCKETS_SECONDS, hist.counts, strict=True):
                    cumulative += n
                    le = _labels((("endpoint", endpoint), ("le", _number(bound))))
                    out.append(f"{name}_bucket{le} {cumulative}")
                inf = _labels((("endpoint", endpoint), ("le", "+Inf")))
                out.append(f"{name}_bucket{inf} {hist.count}")
                ep = _labels((("endpoint", endpoint),))
                out.append(f"{name}_sum{ep} {hist.total!r}")
                out.append(f"{name}_count{ep} {hist.count}")

            name = f"{_PREFIX}_verdicts_total"
            out += [
                f"# HELP {name} Attestation decisions by verdict and reason (error class).",
                f"# TYPE {name} counter",
            ]
            for (verdict, reason), n in sorted(self._verdicts.items()):
                out.append(f"{name}{_labels((('verdict', verdict), ('reason', reason)))} {n}")

            for name, help_text, value in (
                (f"{_PREFIX}_certificates_issued_total", "Certificates issued.", self._issued),
                (f"{_PREFIX}_nonces_issued_total", "Nonces issued.", self._nonces),
            ):
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
        name = f"{_PREFIX}_replay_cache_entries"
        out += [
            f"# HELP {name} Used nonces remembered until they expire.",
            f"# TYPE {name} gauge",
            f"{name} {self._replay_cache_size()}",
        ]
        if self._endorsement_fetches is not None:
            name = f"{_PREFIX}_endorsement_fetches_total"
            out += [
                f"# HELP {name} Endorsement documents asked for, by outcome.",
                f"# TYPE {name} counter",
            ]
            for outcome, n in sorted(self._endorsement_fetches().items()):
                out.append(f"{name}{_labels((('outcome', outcome),))} {n}")
        return "\n".join(out) + "\n"


__all__ = ["LATENCY_BUCKETS_SECONDS", "PROMETHEUS_CONTENT_TYPE", "Metrics"]
