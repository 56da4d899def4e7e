"""What the client makes of a keep manager's relay refusal: its reason, made safe to print."""

from __future__ import annotations

import pytest

from donjon.client.channel import MAX_REASON_CHARS, MAX_REFUSAL_BODY_BYTES, refusal_reason
from donjon.wire.cbor import encode


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            encode({"error": "KeepFinished", "reason": "the Keep 0a has finished"}),
            "the Keep 0a has finished",
        ),
        (encode({"reason": "two\nlines\tand  spaces"}), "two lines and spaces"),
        (encode({"reason": "escape \x1b[2J and bell \x07"}), "escape [2J and bell"),
        (encode({"reason": "r" * 3000}), "r" * MAX_REASON_CHARS),
        (encode({"reason": ""}), None),
        (encode({"reason": 42}), None),
        (encode(["reason", "x"]), None),
        (b"<html>403 Forbidden</html>", None),
        (b"", None),
        (None, None),
        (encode({"reason": "x" * MAX_REFUSAL_BODY_BYTES}), None),  # too large to read at all
    ],
    ids=[
        "plain",
        "whitespace",
        "control-chars",
        "long",
        "empty",
        "not-text",
        "not-a-map",
        "html",
        "no-body",
        "none",
        "oversized",
    ],
)
def test_refusal_reason(body: bytes | None, reason: str | None) -> None:
    assert refusal_reason(body) == reason
