"""Build the C example workloads to wasm32-wasi (and natively, for benchmarks) with zig from PyPI.

Outputs go to build/examples/<name>.wasm and build/examples/native/<name>. A target is rebuilt only
when its source is newer, so running this on every setup costs almost nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUT = ROOT.parent / "build" / "examples"
WASM_FLAGS = ["-target", "wasm32-wasi", "-O2", "-s"]
NATIVE_FLAGS = ["-O2", "-s"]


def _zig_cc(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "ziglang", "cc", *args], check=True)


def _stale(target: Path, source: Path) -> bool:
    return not target.exists() or target.stat().st_mtime < source.stat().st_mtime


def build(*, quiet: bool) -> list[Path]:
    """Compile every examples/c/*.c that is out of date; return the wasm paths."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "native").mkdir(exist_ok=True)
    built: list[Path] = []
    sources = sorted(ROOT.glob("c/*.c"))
    for src in sources:
        wasm = OUT / f"{src.stem}.wasm"
        native = OUT / "native" / src.stem
        extra = (
            ["-lwasi-emulated-signal", "-D_WASI_EMULATED_SIGNAL"] if "signal" in src.stem else []
        )
        if _stale(wasm, src):
            if not quiet:
                print(f"build: {src.name} -> {wasm.relative_to(ROOT.parent)}", file=sys.stderr)
            _zig_cc([*WASM_FLAGS, *extra, "-o", str(wasm), str(src)])
        if _stale(native, src):
            _zig_cc([*NATIVE_FLAGS, "-o", str(native), str(src)])
        built.append(wasm)
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quiet", action="store_true", help="print nothing when up to date")
    ns = parser.parse_args()
    paths = build(quiet=ns.quiet)
    if not ns.quiet:
        print(f"build: {len(paths)} example workloads in {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
