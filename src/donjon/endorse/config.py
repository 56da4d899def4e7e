"""Where endorsements are fetched from, where they are cached, and how long a fetch may take.

Pure values, validated on construction: no network, no files, no clock. The CLI and Steward
build one :class:`FetchConfig` from their options; :class:`~donjon.endorse.fetcher.
EndorsementFetcher` does the I/O.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from donjon.attestation.snp.tcb import ProductFamily
from donjon.errors import ConfigError

DEFAULT_KDS_URL: Final = "https://kdsintf.amd.com"
"""AMD's Key Distribution Service (AMD #57230, chapter 4)."""

DEFAULT_PCS_URL: Final = "https://api.trustedservices.intel.com"
"""Intel's Provisioning Certification Service (PCS API v4)."""

INTEL_ROOT_CA_CRL_URL: Final = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
"""Where Intel publishes the CRL of the Intel SGX Root CA (the root's CRL distribution point);
Intel PCS itself does not serve it. A PCCS serves it at ``/sgx/certification/v4/rootcacrl``."""

CONNECT_TIMEOUT_SECONDS: Final = 5.0
"""Longest wait for a TCP (and TLS) connection (seconds)."""

TOTAL_TIMEOUT_SECONDS: Final = 15.0
"""Longest time one document may take, retries and ``Retry-After`` waits included (seconds)."""

SILENCE_TIMEOUT_SECONDS: Final = 5.0
"""Longest wait for the next bytes of an answer (seconds). The total is checked whenever bytes
arrive, so a transfer ends at most one silence after :data:`TOTAL_TIMEOUT_SECONDS`."""

MAX_RETRY_AFTER_SECONDS: Final = 5.0
"""Longest ``Retry-After`` honoured after HTTP 429/503 (seconds); a longer one fails at once."""

UPSTREAM_RATE_PER_SECOND: Final = 10.0
"""Requests per second one process may send to one service host, sustained. A Steward needs two
KDS requests per new (chip, TCB) and four PCS requests per FMSPC and month; ten a second is far
above that and far below what would get a client rate-limited."""

UPSTREAM_BURST: Final = 20
"""Requests one process may send to one service host at once after a quiet spell (count): the
first Keeps of a new fleet arrive together."""

_MAX_URL_CHARS = 2048
_CACHE_SUBDIR = ("donjon", "endorsements")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long fetching may take, in seconds (see the module constants for the defaults)."""

    connect: float = CONNECT_TIMEOUT_SECONDS
    total: float = TOTAL_TIMEOUT_SECONDS
    silence: float = SILENCE_TIMEOUT_SECONDS
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS

    def __post_init__(self) -> None:
        for name in ("connect", "total", "silence"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"fetch timeout {name} must be positive, got {getattr(self, name)}"
                )
        if self.max_retry_after < 0:
            raise ConfigError("max_retry_after must not be negative")


@dataclass(frozen=True, slots=True)
class UpstreamBudget:
    """How many requests one process may send to each service host: a token bucket.

    Attributes:
        rate: tokens added per second (requests per second, sustained).
        burst: the bucket's size (requests at once after a quiet spell).
    """

    rate: float = UPSTREAM_RATE_PER_SECOND
    burst: int = UPSTREAM_BURST

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", _checked_rate(self.rate))
        if isinstance(self.burst, bool) or self.burst < 1:
            raise ConfigError(
                f"the upstream burst must be a whole number of requests, at least 1, got "
                f"{self.burst!r}"
            )

    @classmethod
    def per_second(cls, rate: float) -> UpstreamBudget:
        """*rate* requests per second, in bursts of up to twice as many (at least 1).

        Raises:
            ConfigError: *rate* is not a positive, finite number.
        """
        rate = _checked_rate(rate)
        return cls(rate=rate, burst=max(1, math.ceil(2 * rate)))


def _checked_rate(rate: float) -> float:
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(
            f"the upstream request rate must be a positive number of requests per second, got "
            f"{rate!r}"
        )
    return float(rate)


def service_url(value: str, *, option: str) -> str:
    """*value* as a service base URL: ``http`` or ``https``, a host, no credentials, query or
    fragment; a trailing ``/`` is dropped.

    Raises:
        ConfigError: anything else (the message names *option*).
    """
    text = value.strip()
    if len(text) > _MAX_URL_CHARS:
        raise ConfigError(f"{option}: the URL is over {_MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError on a malformed or out-of-range port
    except ValueError as e:
        raise ConfigError(f"{option} {value!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"{option} {value!r} must be an http:// or https:// URL (e.g. {DEFAULT_KDS_URL})"
        )
    if not parts.hostname:
        raise ConfigError(f"{option} {value!r} names no host")
    if parts.username is not None or parts.password is not None:
        # Only the URL is ever sent; credentials in it would be sent to every path we ask for.
        raise ConfigError(f"{option} must not carry credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ConfigError(f"{option} {value!r} must be a base URL, without ?query or #fragment")
    return text.rstrip("/")


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where endorsements are cached by default: ``$XDG_CACHE_HOME/donjon/endorsements``, or
    ``~/.cache/donjon/endorsements``.

    Args:
        environ: the environment to read (the CLI passes ``os.environ``; library code decides).
    """
    xdg = environ.get("XDG_CACHE_HOME", "")
    # The XDG Base Directory spec says a relative value is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg).joinpath(*_CACHE_SUBDIR)
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home, ".cache", *_CACHE_SUBDIR)


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """How to complete endorsements.

    Attributes:
        kds_url: AMD KDS, or anything serving its paths (a caching proxy).
        pcs_url: Intel PCS, or a PCCS (same ``/sgx|tdx/certification/v4/...`` paths).
        intel_root_crl_url: where the Intel SGX Root CA CRL comes from; None: Intel's own
            (:data:`INTEL_ROOT_CA_CRL_URL`) with the default *pcs_url*, else the PCCS path
            ``{pcs_url}/sgx/certification/v4/rootcacrl``.
        kds_product: the EPYC product line to ask KDS for when a report does not name it
            (report version 2 has no CPUID fields); None: Milan, as Trustee assumes, since
            version 2 predates the CPUID fields and most such reports are Milan's.
            A report that names its line (version 3 and later) is always asked for as such.
        amd_crl: also fetch AMD's CRL of the product line (revocation of ASKs/ASVKs) when the
            caller gave none.
        cache_dir: the on-disk cache; None keeps documents in memory only.
        timeouts: how long fetching may take.
        budget: how many requests per second this process may send to each service host
            (docs/attestation/endorsements.md, "Protecting the services").
        pcs_api_key: sent as ``Ocp-Apim-Subscription-Key`` to *pcs_url* only; never logged or
            shown (Intel PCS v4 needs none for what donjon fetches).
    """

    kds_url: str = DEFAULT_KDS_URL
    pcs_url: str = DEFAULT_PCS_URL
    intel_root_crl_url: str | None = None
    kds_product: ProductFamily | None = None
    amd_crl: bool = False
    cache_dir: Path | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    budget: UpstreamBudget = field(default_factory=UpstreamBudget)
    pcs_api_key: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kds_url", service_url(self.kds_url, option="--kds-url"))
        object.__setattr__(self, "pcs_url", service_url(self.pcs_url, option="--pcs-url"))
        if self.intel_root_crl_url is not None:
            url = self.intel_root_crl_url.strip()
            try:
                parts = urlsplit(url)
            except ValueError as e:
                raise ConfigError(f"Intel root CRL URL {url!r} is not a URL ({e})") from None
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
                raise ConfigError(
                    f"Intel root CRL URL {url!r} must be an http(s) URL without credentials"
                )
            object.__setattr__(self, "intel_root_crl_url", url)
        if self.pcs_api_key is not None and (
            not self.pcs_api_key or any(c in self.pcs_api_key for c in "\r\n\0")
        ):
            raise ConfigError("the Intel PCS API key is empty or holds a line break")

    @property
    def root_crl_url(self) -> str:
        """The URL of the Intel SGX Root CA CRL (see *intel_root_crl_url*)."""
        if self.intel_root_crl_url is not None:
            return self.intel_root_crl_url
        if self.pcs_url == DEFAULT_PCS_URL:
            return INTEL_ROOT_CA_CRL_URL
        return f"{self.pcs_url}/sgx/certification/v4/rootcacrl"


__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_KDS_URL",
    "DEFAULT_PCS_URL",
    "INTEL_ROOT_CA_CRL_URL",
    "MAX_RETRY_AFTER_SECONDS",
    "SILENCE_TIMEOUT_SECONDS",
    "TOTAL_TIMEOUT_SECONDS",
    "UPSTREAM_BURST",
    "UPSTREAM_RATE_PER_SECOND",
    "FetchConfig",
    "Timeouts",
    "UpstreamBudget",
    "default_cache_dir",
    "service_url",
]
