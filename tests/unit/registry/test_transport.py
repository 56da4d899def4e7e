"""The registry client's transport pieces that need no network: the zero-copy buffer."""

from __future__ import annotations

import httpx
import pytest

from donjon.registry._transport import DirectGet, SizedBuffer


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 1024 * 1024 + 1])
def test_sized_buffer_is_zero_filled_and_hands_over_its_bytes(size: int) -> None:
    buffer = SizedBuffer(size)
    assert buffer.size == size
    with buffer.view() as view:
        assert len(view) == size
        assert not view.readonly
        view[: min(size, 3)] = b"abc"[: min(size, 3)]
    value = buffer.value()
    assert type(value) is bytes
    assert value == (b"abc"[: min(size, 3)] + bytes(max(size - 3, 0)))
    # No copy once the view is gone: the same object every time (CPython).
    assert buffer.value() is value


def test_sized_buffer_copies_while_a_view_is_alive() -> None:
    buffer = SizedBuffer(8)
    view = buffer.view()
    piece = view[2:4]
    view.release()
    assert buffer.value() == bytes(8)  # correct, via a copy, with the slice still exported
    piece.release()
    assert buffer.value() is buffer.value()


def test_sized_buffer_refuses_a_negative_size() -> None:
    with pytest.raises(ValueError, match="negative"):
        SizedBuffer(-1)


def test_direct_get_speaks_plain_http_only() -> None:
    with pytest.raises(ValueError, match="plain HTTP"):
        DirectGet(httpx.URL("https://127.0.0.1/v2/"), {}, timeout=1.0)
    get = DirectGet(httpx.URL("http://127.0.0.1/v2/"), {}, timeout=1.0)
    with pytest.raises(RuntimeError, match="outside its with block"):
        _ = get.status
