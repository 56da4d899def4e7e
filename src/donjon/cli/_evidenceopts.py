"""What `donjon attest verify` and `donjon steward policy check` share: the options that name
recorded evidence and its endorsements, their parsing, and the verdict exit statuses; and the
options that fetch missing endorsements (``--fetch``), which ``donjon steward serve`` shares too.

Both commands judge the same inputs, so a user moving from one to the other finds the same
option names, the same help and the same messages for the same mistakes.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from donjon.attestation.inputs import InputError
from donjon.attestation.result import Endorsements, Platform
from donjon.attestation.snp.tcb import ProductFamily
from donjon.crypto.binding import MAX_NONCE_BYTES
from donjon.endorse.config import (
    DEFAULT_KDS_URL,
    DEFAULT_PCS_URL,
    UPSTREAM_RATE_PER_SECOND,
    FetchConfig,
    UpstreamBudget,
    default_cache_dir,
)
from donjon.errors import ConfigError, Error

if TYPE_CHECKING:
    from donjon.endorse.fetcher import Completion

EXIT_ACCEPTED = 0
EXIT_REJECTED = 1
EXIT_UNUSABLE = 2

PLATFORMS = [str(p) for p in Platform]

F = TypeVar("F", bound=Callable[..., object])
R = TypeVar("R")


def evidence_options(*, at_help: str) -> Callable[[F], F]:
    """``--platform``, ``--evidence``, ``--cert``, ``--collateral`` and ``--at``, in that order
    in ``--help``; *at_help* says what the time is used for."""
    options = (
        click.option(
            "--platform",
            "platform_name",
            required=True,
            type=click.Choice(PLATFORMS),
            help="The evidence format.",
        ),
        click.option(
            "--evidence",
            required=True,
            type=click.Path(path_type=Path, dir_okay=False),
            help="Evidence file: raw bytes, hex text or base64 text (detected).",
        ),
        click.option(
            "--cert",
            "certs",
            multiple=True,
            type=click.Path(path_type=Path, dir_okay=False),
            help="Certificate(s) as DER or PEM (several per file), or a key as PEM or JWK JSON "
            "(Arm CPAK). Repeatable.",
        ),
        click.option(
            "--collateral",
            multiple=True,
            type=click.Path(path_type=Path, dir_okay=False),
            help="Collateral: Intel TCB info / QE identity JSON, dcap-qvl collateral JSON, CRLs "
            "(DER or PEM). Repeatable.",
        ),
        click.option("--at", "at", metavar="ISO-8601", help=at_help),
    )

    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


PCS_API_KEY_ENV = "DONJON_PCS_API_KEY"
"""The environment variable that holds an Intel PCS API key (never a flag: flags show in ``ps``)."""

FETCH_RATE_ENV = "DONJON_FETCH_RATE"
"""The environment variable that tunes the request budget per service host (requests per second,
bursts of twice as many): an operator's knob, for a Steward in front of its own PCCS or mirror."""

# The options that only mean something together with the fetch flag.
_FETCH_DETAILS = ("kds_url", "pcs_url", "cache_dir", "kds_product", "kds_crl")


FetchConfigFactory = Callable[[], "FetchConfig | None"]
"""What a command decorated with :func:`fetch_options` receives as ``endorsement_fetch``: call
it (where its errors are handled) for the :class:`FetchConfig` the options describe, or None."""


def fetch_options(*, flag: str, flag_help: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """*flag* and the options saying where and how to fetch (``--kds-url``, ``--pcs-url``,
    ``--cache-dir``, ``--kds-product``, ``--kds-crl``), handed to the command as one parameter,
    ``endorsement_fetch``: a :data:`FetchConfigFactory` (deferred, so that the command decides
    how a bad option is reported)."""
    options = (
        click.option(flag, "fetch", is_flag=True, help=flag_help),
        click.option(
            "--kds-url",
            metavar="URL",
            envvar="DONJON_KDS_URL",
            default=DEFAULT_KDS_URL,
            show_default=True,
            help="AMD KDS, or a cache or mirror serving its paths.",
        ),
        click.option(
            "--pcs-url",
            metavar="URL",
            envvar="DONJON_PCS_URL",
            default=DEFAULT_PCS_URL,
            show_default=True,
            help="Intel PCS, or a PCCS.",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(path_type=Path, file_okay=False),
            envvar="DONJON_ENDORSEMENT_CACHE",
            help="Where fetched endorsements are cached [default: $XDG_CACHE_HOME/donjon/"
            "endorsements or ~/.cache/donjon/endorsements].",
        ),
        click.option(
            "--kds-product",
            type=click.Choice([str(f) for f in ProductFamily]),
            help="The EPYC product line of a version 2 SEV-SNP report, which does not name it "
            "[default: Milan].",
        ),
        click.option(
            "--kds-crl",
            is_flag=True,
            help="Also fetch AMD's CRL of the product line (revoked ASKs) when none is given.",
        ),
    )

    def apply(func: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(func)
        def command(*args: object, **kwargs: Any) -> R:
            given = {name: kwargs.pop(name) for name in ("fetch", *_FETCH_DETAILS)}
            kwargs["endorsement_fetch"] = functools.partial(fetch_config, **given, flag=flag)
            return func(*args, **kwargs)

        wrapped: Callable[..., R] = command
        for option in reversed(options):
            wrapped = option(wrapped)
        return wrapped

    return apply


def fetch_config(
    *,
    fetch: bool,
    kds_url: str,
    pcs_url: str,
    cache_dir: Path | None,
    kds_product: str | None,
    kds_crl: bool,
    flag: str = "--fetch",
) -> FetchConfig | None:
    """The :class:`FetchConfig` the fetch options describe, or None without the fetch flag.

    Raises:
        InputError: a fetch option given on the command line without the fetch flag.
        ConfigError: a URL that is not an http(s) base URL, or a bad ``DONJON_FETCH_RATE``.
    """
    if not fetch:
        ctx = click.get_current_context(silent=True)
        for name in _FETCH_DETAILS:
            if ctx is not None and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                option = "--" + name.replace("_", "-")
                raise InputError(f"{option} only applies with {flag}")
        return None
    return FetchConfig(
        kds_url=kds_url,
        pcs_url=pcs_url,
        kds_product=ProductFamily(kds_product) if kds_product else None,
        amd_crl=kds_crl,
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(os.environ),
        budget=_budget(os.environ.get(FETCH_RATE_ENV)),
        pcs_api_key=os.environ.get(PCS_API_KEY_ENV) or None,
    )


def _budget(rate: str | None) -> UpstreamBudget:
    """``DONJON_FETCH_RATE`` as a budget (unset or empty: the default)."""
    if not rate:
        return UpstreamBudget()
    try:
        value = float(rate.strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{FETCH_RATE_ENV}={rate[:40]!r} is not a positive number of requests per second to "
            f"each service host; write e.g. {UPSTREAM_RATE_PER_SECOND:g}, or unset it"
        )
    return UpstreamBudget.per_second(value)


def complete_endorsements(
    config: FetchConfig,
    platform: Platform,
    evidence: bytes,
    endorsements: Endorsements,
    *,
    now: datetime,
    verbose: bool = False,
) -> Endorsements:
    """Fetch what *evidence* is missing (``--fetch``); with *verbose*, say what came from where
    on stderr.

    Raises:
        EndorsementFetchError: a document could not be fetched (exit 2 for the caller).
        EndorsementUnavailableError: no service serves what is missing (a verification failure).
    """
    # Imported here: httpx and the fetcher load only when --fetch is given.
    from donjon.endorse.fetcher import EndorsementFetcher

    with EndorsementFetcher(config, clock=lambda: datetime.now(UTC)) as fetcher:
        done: Completion = fetcher.complete(platform, evidence, endorsements, now=now)
    if verbose:
        for item in done.fetched:
            click.echo(f"donjon: {item.kind} from {item.origin}: {item.url}", err=True)
    return done.endorsements


def parse_at(value: str | None) -> datetime:
    """``--at``: an ISO-8601 time (UTC when it names no zone); None: now."""
    if value is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError(
            f"--at {value!r} is not an ISO-8601 time; write e.g. 2025-09-01T00:00:00Z"
        ) from None
    # A time without a zone is taken as UTC, the zone every verify_time in donjon uses.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_hex(value: str | None, option: str) -> bytes | None:
    """A nonce-sized hex option (1 to ``MAX_NONCE_BYTES`` bytes, optional ``0x``), or None."""
    if value is None:
        return None
    text = value.strip().removeprefix("0x").removeprefix("0X")
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise InputError(f"{option} {value!r} is not hex (an even number of 0-9a-f)") from None
    if not data:
        raise InputError(f"{option} is empty; give at least one byte as hex")
    if len(data) > MAX_NONCE_BYTES:
        raise InputError(f"{option} is {len(data)} bytes; at most {MAX_NONCE_BYTES} are accepted")
    return data


def unusable(error: Error) -> NoReturn:
    """Say what was wrong with the input and exit with :data:`EXIT_UNUSABLE`."""
    click.echo(f"donjon: error: {error.diagnostics()}", err=True)
    raise click.exceptions.Exit(EXIT_UNUSABLE)


__all__ = [
    "EXIT_ACCEPTED",
    "EXIT_REJECTED",
    "EXIT_UNUSABLE",
    "FETCH_RATE_ENV",
    "PCS_API_KEY_ENV",
    "PLATFORMS",
    "FetchConfigFactory",
    "complete_endorsements",
    "evidence_options",
    "fetch_config",
    "fetch_options",
    "parse_at",
    "parse_hex",
    "unusable",
]
