"""Options shared by the commands that talk to a keep manager: its URL and the client token."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from donjon.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])
MAX_TOKEN_FILE_BYTES = 4096


def host_options(f: F) -> F:
    f = click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File holding the keep manager's client token (or set DONJON_HOST_TOKEN).",
    )(f)
    f = click.option(
        "--host",
        "host_url",
        required=True,
        envvar="DONJON_HOST",
        help="Keep manager URL, e.g. http://127.0.0.1:8080 (env DONJON_HOST).",
    )(f)
    return f


def read_token(token_file: Path | None) -> str:
    """The client token: from --token-file, else $DONJON_HOST_TOKEN. Never from argv."""
    if token_file is not None:
        try:
            with token_file.open("rb") as fh:
                raw = fh.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as e:
            raise UsageError(f"cannot read the token file {token_file}: {e.strerror}") from e
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            raise UsageError(f"{token_file} is too large to be a token file")
        token = raw.decode("utf-8", "replace").strip()
    else:
        token = os.environ.get("DONJON_HOST_TOKEN", "").strip()
    if not token:
        raise UsageError(
            "no client token: pass --token-file FILE (the keep manager writes admin.token in its "
            "state dir) or set DONJON_HOST_TOKEN"
        )
    return token
