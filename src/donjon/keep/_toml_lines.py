"""Where each key of a TOML document is written: a map from key path to line number.

``tomllib`` parses TOML but forgets where things were. A config error that says only
``files[2].prot`` makes a user count ``[[files]]`` headers by hand, so this module scans the
source text again and records the line of every table header, key and array element.

Rule 1: it runs only on text that ``tomllib`` has already accepted, so it need not diagnose
syntax. Rule 2: it never raises. If the text surprises it anyway, it returns what it has
found so far, and callers fall back to the nearest enclosing path that has a line.

Paths are tuples of table keys (``str``) and array indexes (``int``), exactly as they index the
``dict``/``list`` that ``tomllib`` returns: the third ``[[files]]`` table's ``prot`` key is
``("files", 2, "prot")`` and the second element of ``args`` is ``("args", 1)``.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from collections.abc import Iterable

__all__ = ["KeyPath", "LineMap", "scan_lines"]

KeyPath = tuple[str | int, ...]

# Values nest at most three levels deep in any valid workload config; deeper arrays and inline
# tables are skipped without recording lines, iteratively, so hostile nesting cannot exhaust the
# Python stack here (tomllib itself is guarded by the caller).
_MAX_RECORD_DEPTH = 8

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SCALAR_END = frozenset(" \t\r\n,]}#")
_WS = frozenset(" \t")


class _StopScanError(Exception):
    """The text did not look like the TOML we expected; stop scanning."""


class LineMap:
    """Line numbers (1-based) of the keys, headers and array elements of one TOML text."""

    __slots__ = ("_lines",)

    def __init__(self, lines: dict[KeyPath, int]) -> None:
        self._lines = lines

    def exact(self, path: KeyPath) -> int | None:
        """The line where ``path`` itself is written, if it was found."""
        return self._lines.get(path)

    def nearest(self, path: KeyPath) -> int | None:
        """The line of ``path``, else of its closest enclosing table or array that has one.

        A missing key is reported at the header of the table that lacks it.
        """
        for end in range(len(path), 0, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return None

    def paths(self) -> Iterable[KeyPath]:
        """Every path that has a recorded line."""
        return self._lines.keys()


def scan_lines(text: str) -> LineMap:
    """Map every key path of ``text`` (already accepted by ``tomllib``) to its line.

    Args:
        text: a TOML document that ``tomllib.loads`` parsed without error.

    Returns:
        The line map; partial if the scan met something it did not expect.
    """
    scanner = _Scanner(text)
    try:
        scanner.run()
    except (_StopScanError, IndexError, ValueError, tomllib.TOMLDecodeError):
        pass
    return LineMap(scanner.lines)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._table: KeyPath = ()
        self._aot_index: dict[KeyPath, int] = {}

    # -- positions ---------------------------------------------------------------------------

    def _line_at(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def _record(self, path: KeyPath, pos: int) -> None:
        self.lines.setdefault(path, self._line_at(pos))

    def _peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.text[i] if i < self.n else ""

    def _skip_ws(self) -> None:
        while self.pos < self.n and self.text[self.pos] in _WS:
            self.pos += 1

    def _skip_comment(self) -> None:
        if self._peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = self.n if end < 0 else end

    def _skip_ws_comments_newlines(self) -> None:
        while self.pos < self.n:
            c = self.text[self.pos]
            if c in _WS or c in "\r\n":
                self.pos += 1
            elif c == "#":
                self._skip_comment()
            else:
                return

    # -- statements --------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            self._skip_ws_comments_newlines()
            if self.pos >= self.n:
                return
            if self._peek() == "[":
                self._header()
            else:
                self._key_value(self._table, depth=0)

    def _header(self) -> None:
        start = self.pos
        is_array = self._peek(1) == "["
        self.pos += 2 if is_array else 1
        keys = self._dotted_key()
        self._skip_ws()
        close = "]]" if is_array else "]"
        if not self.text.startswith(close, self.pos):
            raise _StopScanError
        self.pos += len(close)
        path: KeyPath = ()
        for i, key in enumerate(keys):
            path = (*path, key)
            last = i == len(keys) - 1
            if last and is_array:
                index = self._aot_index.get(path, -1) + 1
                self._aot_index[path] = index
                self._record(path, start)
                path = (*path, index)
            elif path in self._aot_index:
                path = (*path, self._aot_index[path])
        self._record(path, start)
        self._table = path

    def _key_value(self, table: KeyPath, depth: int) -> None:
        start = self.pos
        keys = self._dotted_key()
        self._skip_ws()
        if self._peek() != "=":
            raise _StopScanError
        self.pos += 1
        self._skip_ws()
        path = table
        for key in keys:
            path = (*path, key)
            self._record(path, start)
        self._value(path, depth)

    def _dotted_key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self._skip_ws()
            keys.append(self._simple_key())
            self._skip_ws()
            if self._peek() != ".":
                return keys
            self.pos += 1

    def _simple_key(self) -> str:
        c = self._peek()
        if c == '"':
            end = self._end_of_basic_string(self.pos)
            raw = self.text[self.pos : end]
            self.pos = end
            # tomllib already accepted this string; let it do the unescaping.
            value = tomllib.loads(f"k = {raw}")["k"]
            if not isinstance(value, str):
                raise _StopScanError
            return value
        if c == "'":
            end = self.text.index("'", self.pos + 1)
            key = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return key
        match = _BARE_KEY.match(self.text, self.pos)
        if match is None:
            raise _StopScanError
        self.pos = match.end()
        return match.group()

    # -- values ------------------------------------------------------------------------------

    def _value(self, path: KeyPath, depth: int) -> None:
        c = self._peek()
        if c in "[{" and depth >= _MAX_RECORD_DEPTH:
            self._skip_nested()
        elif c == "[":
            self._array(path, depth + 1)
        elif c == "{":
            self._inline_table(path, depth + 1)
        elif c == '"':
            self.pos = self._end_of_basic_string(self.pos)
        elif c == "'":
            self.pos = self._end_of_literal_string(self.pos)
        else:
            self._scalar()

    def _array(self, path: KeyPath, depth: int) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip_ws_comments_newlines()
            if self._peek() == "]":
                self.pos += 1
                return
            if self.pos >= self.n:
                raise _StopScanError
            self._record((*path, index), self.pos)
            self._value((*path, index), depth)
            index += 1
            self._skip_ws_comments_newlines()
            if self._peek() == ",":
                self.pos += 1

    def _inline_table(self, path: KeyPath, depth: int) -> None:
        self.pos += 1
        while True:
            self._skip_ws_comments_newlines()
            if self._peek() == "}":
                self.pos += 1
                return
            if self.pos >= self.n:
                raise _StopScanError
            self._key_value(path, depth)
            self._skip_ws_comments_newlines()
            if self._peek() == ",":
                self.pos += 1

    def _skip_nested(self) -> None:
        """Skip a deeply nested array or inline table without recursion."""
        level = 0
        while self.pos < self.n:
            c = self.text[self.pos]
            if c in "[{":
                level += 1
                self.pos += 1
            elif c in "]}":
                level -= 1
                self.pos += 1
                if level == 0:
                    return
            elif c == '"':
                self.pos = self._end_of_basic_string(self.pos)
            elif c == "'":
                self.pos = self._end_of_literal_string(self.pos)
            elif c == "#":
                self._skip_comment()
            else:
                self.pos += 1
        raise _StopScanError

    def _scalar(self) -> None:
        start = self.pos
        while self.pos < self.n and self.text[self.pos] not in _SCALAR_END:
            self.pos += 1
        # A local date-time may separate date and time with one space: 1979-05-27 07:32:00.
        if (
            _DATE.fullmatch(self.text, start, self.pos)
            and self._peek() == " "
            and self._peek(1).isdigit()
        ):
            self.pos += 1
            while self.pos < self.n and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1
        if self.pos == start:
            raise _StopScanError

    def _end_of_basic_string(self, pos: int) -> int:
        text = self.text
        if text.startswith('"""', pos):
            i = pos + 3
            while True:
                c = text[i]
                if c == "\\":
                    i += 2
                elif text.startswith('"""', i):
                    run = 3
                    # Up to two quotes may sit just before the closing delimiter.
                    while run < 5 and i + run < len(text) and text[i + run] == '"':
                        run += 1
                    return i + run
                else:
                    i += 1
        i = pos + 1
        while True:
            c = text[i]
            if c == "\\":
                i += 2
            elif c == '"':
                return i + 1
            elif c == "\n":
                raise _StopScanError
            else:
                i += 1

    def _end_of_literal_string(self, pos: int) -> int:
        text = self.text
        if text.startswith("'''", pos):
            i = text.index("'''", pos + 3)
            run = 3
            while run < 5 and i + run < len(text) and text[i + run] == "'":
                run += 1
            return i + run
        return text.index("'", pos + 1) + 1
