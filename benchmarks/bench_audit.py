"""What Steward's audit log costs per decision: ``AuditLog.record`` against a plain append of
the same JSON line, in the same run.

Run from the repository root (a few seconds)::

    python benchmarks/bench_audit.py [--records 5000] [--rounds 5]

The baseline writes each decision as one JSON line to a file opened ``O_APPEND`` (what a log
without integrity costs). The audit log adds what makes it tamper-evident and shared by worker
processes: ``flock``, reading the file's end for the previous line's hash and sequence number,
and every 100 records a checkpoint signed with a real Steward CA key (ES384) and ``fsync``-ed.
Rounds alternate the two, in fresh files in a temporary directory (on this machine's disk),
and each round's time per record is kept; the table shows the median over rounds.

Prints a table and writes ``benchmarks/results/audit.json``, with the load average.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from donjon.crypto.ca import CertificateAuthority
from donjon.steward.audit import CHECKPOINT_EVERY, AuditLog, verify_log

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "audit.json"
NOW = datetime(2026, 11, 27, 18, 30, tzinfo=UTC)


def decision(n: int) -> dict[str, Any]:
    """A release decision as Steward records it: names and hashes, a few hundred bytes."""
    return {
        "event": "released",
        "endpoint": "/v1/secrets",
        "platform": "sev-snp",
        "workload": "donjon:workload:sha256:" + f"{n:064x}",
        "key": f"{n * 7:064x}",
        "policy": "fleet",
        "policy_digest": "ab" * 32,
        "secrets": ["db-password"],
        "serial": f"{n:032x}",
        "reason": None,
    }


def plain_append(path: Path, records: int) -> float:
    """Seconds per record: one JSON line per decision, one ``write`` in append mode."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        started = time.perf_counter()
        for n in range(records):
            fields = {"seq": n, "time": NOW.isoformat(), **decision(n)}
            os.write(fd, json.dumps(fields, separators=(",", ":")).encode() + b"\n")
        return (time.perf_counter() - started) / records
    finally:
        os.close(fd)


def audit_log(path: Path, ca: CertificateAuthority, records: int) -> float:
    """Seconds per record through ``AuditLog.record`` (checkpoints included, amortized)."""
    with AuditLog(path, ca.sign_result, clock=lambda: NOW) as log:
        started = time.perf_counter()
        for n in range(records):
            log.record(decision(n))
        elapsed = time.perf_counter() - started
    report = verify_log(path.read_bytes(), ca.certificate)
    if not report.intact:  # a benchmark of a log that does not verify would measure nothing
        raise SystemExit(f"the benchmark's own audit log does not verify: {report}")
    return elapsed / records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="records per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (alternating)")
    ns = parser.parse_args()
    load_before = os.getloadavg()
    ca = CertificateAuthority.create(now=NOW - timedelta(days=1), lifetime=timedelta(days=30))
    plain: list[float] = []
    audited: list[float] = []
    with tempfile.TemporaryDirectory(prefix="donjon-bench-audit-") as tmp:
        for r in range(ns.rounds):
            plain.append(plain_append(Path(tmp) / f"plain-{r}.jsonl", ns.records))
            audited.append(audit_log(Path(tmp) / f"audit-{r}.jsonl", ca, ns.records))
    plain_us = statistics.median(plain) * 1e6
    audit_us = statistics.median(audited) * 1e6
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_audit.py " + " ".join(sys.argv[1:]),
        "records_per_round": ns.records,
        "rounds": ns.rounds,
        "checkpoint_every": CHECKPOINT_EVERY,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "plain_append_us": plain_us,
        "audit_log_us": audit_us,
        "per_round_us": {
            "plain_append": [t * 1e6 for t in plain],
            "audit_log": [t * 1e6 for t in audited],
        },
    }
    print(f"{'per decision (median of ' + str(ns.rounds) + ' rounds)':<44}  {'time':>9}")
    print(f"{'plain JSON line, O_APPEND write (baseline)':<44}  {plain_us:6.1f} us")
    print(f"{'AuditLog.record (chain, flock, checkpoints)':<44}  {audit_us:6.1f} us")
    print(f"audit log / plain append: {audit_us / plain_us:.1f}x")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} on 2 CPUs")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
