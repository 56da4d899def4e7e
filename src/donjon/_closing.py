"""A mixin for objects that hold resources until :meth:`close`: ``with obj:`` closes them.

Clients, channels, runtimes and fetchers all follow the same rule (use them in a ``with`` block,
or call ``close()``), so the protocol is written once.
"""

from __future__ import annotations

from typing import Self


class Closing:
    """``__enter__`` returns the object; ``__exit__`` calls :meth:`close`, whatever happened."""

    __slots__ = ()

    def close(self) -> None:
        """Release what the object holds. Subclasses implement it; it must be idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["Closing"]
