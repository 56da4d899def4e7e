"""What `donjon attest verify` and `donjon steward policy check` share: the options that name
recorded evidence and its endorsements, their parsing, and the verdict exit statuses.

Both commands judge the same inputs, so a user moving from one to the other finds the same
option names, the same help and the same messages for the same mistakes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TypeVar

import click

from donjon.attestation.inputs import InputError
from donjon.attestation.result import Platform
from donjon.crypto.binding import MAX_NONCE_BYTES
from donjon.errors import Error

EXIT_ACCEPTED = 0
EXIT_REJECTED = 1
EXIT_UNUSABLE = 2

PLATFORMS = [str(p) for p in Platform]

F = TypeVar("F", bound=Callable[..., object])


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
    "PLATFORMS",
    "evidence_options",
    "parse_at",
    "parse_hex",
    "unusable",
]
