"""The shared vectors, as the endorse unit tests read them (offline)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
SNP_TIME = datetime(2025, 9, 1, tzinfo=UTC)


@cache
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
    return {v["dir"]: v for v in data["vectors"]}


@dataclass(frozen=True)
class Snp:
    report: bytes
    vcek: bytes
    chip_id: bytes
    tcb: dict[str, int]
    version: int


def snp(name: str) -> Snp:
    entry = manifest()[f"sev-snp/{name}"]
    folder = VECTORS / "sev-snp" / name
    return Snp(
        report=(folder / "report.bin").read_bytes(),
        vcek=(folder / "vcek.der").read_bytes(),
        chip_id=bytes.fromhex(entry["expected"]["chip_id"]),
        tcb=entry["expected"]["reported_tcb_fields"],
        version=entry["expected"]["report_version"],
    )


def read(path: str) -> bytes:
    return (VECTORS / path).read_bytes()
