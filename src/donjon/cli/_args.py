"""Checks on a workload's command-line arguments that `donjon run` and `donjon deploy` share."""

from __future__ import annotations

from collections.abc import Iterable

from donjon.errors import UsageError


def check_wasi_args(args: Iterable[str]) -> None:
    """Refuse arguments that WASI cannot carry (its arguments are UTF-8).

    Raises:
        UsageError: names the first argument that is not valid UTF-8.
    """
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as e:
            raise UsageError(
                f"argument {arg!r} is not valid UTF-8, which WASI arguments must be"
            ) from e


__all__ = ["check_wasi_args"]
