"""The compile progress line: drawn only on request, after a delay, and cleaned up."""

from __future__ import annotations

import io
import time

from donjon.keep._progress import CompileProgress, format_size


def test_render_estimates_and_never_claims_done() -> None:
    progress = CompileProgress(
        io.StringIO(), label="big.wasm", size_bytes=15_000_000, enabled=True, width=200
    )
    assert progress.expected_s == 10.0
    line = progress.render(4.0, 0)
    assert line == (
        "⠋ donjon: compiling big.wasm (15.0 MB) [████████░░░░░░░░░░░░] ~40%  4 s, about 6 s left"
    )
    late = progress.render(9.99, 3)
    assert "~99%" in late and late.startswith("⠸")
    assert progress.render(12.0, 1).endswith("12 s (estimated 10 s), still working")


def test_disabled_progress_writes_nothing() -> None:
    stream = io.StringIO()
    with CompileProgress(stream, label="x.wasm", size_bytes=10**8, enabled=False, delay_s=0):
        time.sleep(0.05)
    assert stream.getvalue() == ""


def test_short_compiles_show_nothing() -> None:
    stream = io.StringIO()
    with CompileProgress(stream, label="x.wasm", size_bytes=10**8, enabled=True, delay_s=5):
        time.sleep(0.01)
    assert stream.getvalue() == ""


def test_long_compiles_draw_and_end_with_a_summary_line() -> None:
    stream = io.StringIO()
    with CompileProgress(
        stream,
        label="x.wasm",
        size_bytes=3_000_000,
        enabled=True,
        delay_s=0,
        interval_s=0.01,
        width=120,
    ):
        time.sleep(0.1)
    text = stream.getvalue()
    assert text.startswith("\r⠋ donjon: compiling x.wasm (3.0 MB) [")
    assert "\x1b[K" in text
    last = text.rsplit("\r", 1)[-1]
    assert last.startswith("\x1b[Kdonjon: compiled x.wasm (3.0 MB) in 0.")
    assert last.endswith(" s\n")


def test_narrow_terminals_get_a_cut_line() -> None:
    progress = CompileProgress(
        io.StringIO(), label="x.wasm", size_bytes=10**7, enabled=True, width=30
    )
    assert len(progress._fit(progress.render(1.0, 0))) == 29


def test_format_size() -> None:
    assert [format_size(n) for n in (999, 2618, 69_200_000)] == ["999 B", "2.6 kB", "69.2 MB"]
