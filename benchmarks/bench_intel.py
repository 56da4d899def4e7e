"""Verifications per second for Intel SGX and TDX DCAP quotes, on one core.

Run from the repository root (takes about half a minute):

    python benchmarks/bench_intel.py [--seconds 1.0] [--repeats 5]

It pins itself to one CPU, then times, each as the median of ``--repeats`` runs:

* ``ecdsa-p256-verify``: one raw ECDSA P-256/SHA-256 verification of a quote-sized message, the
  primitive every DCAP signature uses; every other rate is also given as a ratio to this one;
* ``sgx-warm``: ``DcapVerifier.verify`` on the real dcap-qvl SGX quote (v3) with its collateral,
  in the steady state of a service: what depends only on bytes (parsed collateral, the PCK and
  TCB Signing paths, the CRL, TCB info, QE identity and QE report signatures) was checked once
  and is remembered by those exact bytes, so each call parses the quote, verifies the quote
  signature (one ECDSA verification), re-checks every validity period, CRL freshness and
  revocation at ``now``, and evaluates the TCB;
* ``tdx-warm`` / ``tdx15-warm``: the same for the dcap-qvl TDX quote (v4, TDX 1.0) and the
  go-tdx-guest quote (v5, TDX 1.5);
* ``sgx-cold`` / ``tdx-cold``: a fresh verifier per call, so everything is parsed and every
  signature (quote, QE report, 2 CRLs, TCB info, QE identity, 2 certificate paths) is verified.

Results go to stdout as a table and to ``benchmarks/results/intel.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cryptography
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from donjon.attestation import Endorsements, Platform
from donjon.attestation.intel import DcapVerifier

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO.parent / "shared" / "vectors"
RESULTS = REPO / "benchmarks" / "results" / "intel.json"
TARGETS = {"sgx-warm": 500.0, "tdx-warm": 500.0, "tdx15-warm": 500.0}
"""Required verifications per second on one core (issue 3)."""


def _rate(fn: Callable[[], object], seconds: float, repeats: int) -> float:
    """Median calls per second of *fn* over *repeats* runs of about *seconds* each."""
    fn()  # warm up caches and imports
    rates = []
    for _ in range(repeats):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            fn()
            n += 1
            if n % 16 == 0 and time.perf_counter() >= deadline:
                break
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "not pinned"


def _case(rel: str, collateral: str) -> tuple[bytes, Endorsements]:
    quote = (VECTORS / rel / "quote.bin").read_bytes()
    return quote, Endorsements(collateral=((VECTORS / collateral).read_bytes(),))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Intel SGX/TDX quote verification throughput")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median)")
    args = parser.parse_args(argv)
    pinned = _pin_one_core()

    key = ec.generate_private_key(ec.SECP256R1())
    message = b"\x00" * 632  # a TDX 1.0 quote's signed part: header (48) + TD report (584)
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()

    sgx_quote, sgx_end = _case("sgx/dcapqvl", "sgx/dcapqvl/collateral.json")
    tdx_quote, tdx_end = _case("tdx/dcapqvl-v4", "tdx/dcapqvl-v4/collateral.json")
    v5_quote, v5_end = _case("tdx/gotdx-v5", "tdx/dcapqvl-v5-no-tcb-level/collateral.json")
    july = datetime(2025, 7, 4, tzinfo=UTC)
    march = datetime(2026, 3, 1, tzinfo=UTC)
    sgx = DcapVerifier.from_embedded_roots(platform=Platform.SGX)
    tdx = DcapVerifier.from_embedded_roots(platform=Platform.TDX)

    def cold(platform_: Platform, quote: bytes, end: Endorsements) -> object:
        verifier = DcapVerifier.from_embedded_roots(platform=platform_)
        return verifier.verify(quote, endorsements=end, now=july)

    cases: dict[str, Callable[[], object]] = {
        "ecdsa-p256-verify": lambda: public.verify(signature, message, ec.ECDSA(hashes.SHA256())),
        "sgx-warm": lambda: sgx.verify(sgx_quote, endorsements=sgx_end, now=july),
        "tdx-warm": lambda: tdx.verify(tdx_quote, endorsements=tdx_end, now=july),
        "tdx15-warm": lambda: tdx.verify(v5_quote, endorsements=v5_end, now=march),
        "sgx-cold": lambda: cold(Platform.SGX, sgx_quote, sgx_end),
        "tdx-cold": lambda: cold(Platform.TDX, tdx_quote, tdx_end),
    }
    rates = {name: _rate(fn, args.seconds, args.repeats) for name, fn in cases.items()}
    primitive = rates["ecdsa-p256-verify"]

    rows: list[dict[str, Any]] = []
    for name, per_s in rates.items():
        target = TARGETS.get(name)
        rows.append(
            {
                "name": name,
                "per_second": round(per_s, 1),
                "ms_per_call": round(1000 / per_s, 4),
                "ratio_to_p256_verify": round(per_s / primitive, 3),
                "target_per_second": target,
                "meets_target": None if target is None else per_s >= target,
            }
        )
    print(f"{'case':<20}{'per s':>10}{'ms/call':>10}{'÷ P-256':>9}{'target':>9}")
    for row in rows:
        shown = "" if row["target_per_second"] is None else f"{row['target_per_second']:.0f}"
        mark = {True: " ✔", False: " ✗", None: ""}[row["meets_target"]]
        print(
            f"{row['name']:<20}{row['per_second']:>10.0f}{row['ms_per_call']:>10.3f}"
            f"{row['ratio_to_p256_verify']:>9.2f}{shown:>9}{mark}"
        )
    report = {
        "command": "python benchmarks/bench_intel.py "
        + f"--seconds {args.seconds} --repeats {args.repeats}",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "pinned": pinned,
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus_online": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0 if all(r["meets_target"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
