"""Steward issuance throughput and latency: concurrent clients on loopback, bounded runs.

Run from the repository root (about a minute):

    python benchmarks/bench_steward.py [--seconds 10] [--clients 32] [--workers 2]

Scenarios, each against a freshly started Steward process on 127.0.0.1 (port 0):

* ``nil``: the real ``donjon steward serve --policy dev --workers N`` command. Each client
  (a Keep with its own P-384 key) loops: ``GET /v1/nonce``, make nil evidence binding its key and
  that nonce (a P-384 COSE signature, client side), ``POST /v1/attest``. Steward verifies the CSR
  signature, the nonce, the nil evidence signature and the binding, applies the policy, and signs
  a certificate and a COSE result (4 P-384 operations per issuance).
* ``sev-snp``: a real SEV-SNP report (Milan, ``sev-snp/milan-trustee``) with its VCEK, under the
  ``production`` policy, verified at the vector's pinned time (2025-09-01). The report's data
  binds a key captured elsewhere, not the client's, so this server is started by this script
  (``--serve-snp``) with a pinned clock and a binding that accepts exactly the recorded report
  data: everything else (nonce, CSR signature, VCEK → ASK → ARK chain, report signature,
  policy, issuance) is the production path. That substitution is why the server is not the CLI:
  production has no way to pin the clock or swap the binding.

Load: ``--clients`` concurrent clients in one asyncio process speaking minimal HTTP/1.1 over
keep-alive connections (httpx would cost more CPU than the server on this 2-core machine). Two
phases per scenario:

* ``saturate``: a closed loop, every client sends its next request as soon as it has the last
  answer. This measures the most certificates per second Steward can issue. Its latency is
  mostly queueing: by Little's law 32 clients at 300/s wait 32/300 = 107 ms on average, so the
  latency goal cannot be judged here.
* ``paced``: the same clients together offer ``--rate`` requests per second (default: the
  scenario's throughput goal), each on a fixed schedule; latency is measured from the *scheduled*
  start, so a slow server is not hidden by clients that wait for it (no coordinated omission).
  This is where the p95 goal is judged.

Latency is per ``POST /v1/attest`` (issuance); ``e2e`` also counts the nonce round trip and the
client's evidence signature. The first response of each run is checked in full
(``donjon.steward.client.check_issued``): chain, signatures, key, nonce.

Results: a table on stdout and ``benchmarks/results/steward.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO.parent / "shared" / "vectors"
RESULTS = REPO / "benchmarks" / "results" / "steward.json"
SNP_DIR = VECTORS / "sev-snp" / "milan-trustee"
SNP_TIME = datetime(2025, 9, 1, tzinfo=UTC)
GOALS = {"nil": (300.0, 25.0), "sev-snp": (200.0, None)}


# -- the SEV-SNP server (test-style substitutions, clearly confined to this script) -----------


def serve_snp(workers: int, state_dir: Path) -> None:
    """Run Steward with a pinned clock and a vector binding; print ``listening on <url>``."""
    import hmac

    from donjon.attestation.result import VerifiedEvidence
    from donjon.crypto.ca import CertificateAuthority
    from donjon.errors import MeasurementError
    from donjon.steward.app import StewardApp, bind_socket, listening, uvicorn_server
    from donjon.steward.config import StewardPolicy
    from donjon.steward.core import BindingScheme, StewardCore

    manifest = json.loads((VECTORS / "manifest.json").read_text())
    entry = next(v for v in manifest["vectors"] if v["id"] == "snp-milan-trustee")
    recorded = bytes.fromhex(entry["expected"]["report_data"])

    class PinnedClock:
        def now(self) -> datetime:
            return SNP_TIME

    class VectorBinding:
        def check(
            self,
            evidence: VerifiedEvidence,
            *,
            spki_der: bytes,
            nonce: bytes | None,
            scheme: BindingScheme,
        ) -> None:
            if not hmac.compare_digest(evidence.report_data, recorded):
                raise MeasurementError("not the recorded vector")

    del state_dir
    ca = CertificateAuthority.create(now=SNP_TIME)
    sock = bind_socket("127.0.0.1", 0)
    print(f"listening on {listening(sock, tls=False).url}", flush=True)

    def run() -> None:
        core = StewardCore(
            ca, StewardPolicy.production(), clock=PinnedClock(), binding=VectorBinding()
        )
        uvicorn_server(StewardApp(core)).run(sockets=[sock])

    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, lambda *_: None)
            run()
            os._exit(0)
        children.append(pid)

    def forward(*_: object) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    for child in children:
        os.waitpid(child, 0)


# -- load generation ---------------------------------------------------------------------------


class Http:
    """Minimal HTTP/1.1 keep-alive client for the benchmark (Content-Length bodies only)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if method == "POST":
            head += f"Content-Type: application/cbor\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)


@dataclass
class Run:
    latencies_ms: list[float]
    e2e_ms: list[float]
    errors: int
    seconds: float
    total: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* and its children that are alive (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[1] is ppid; fields[11], [12] are utime, stime (proc(5), counted from state)
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def load(
    url: str,
    scenario: str,
    *,
    clients: int,
    seconds: float,
    warmup: float,
    key_dir: Path,
    rate: float | None = None,
) -> Run:
    from donjon.backends.nil_evidence import NilEvidenceProvider
    from donjon.crypto.binding import report_data_for
    from donjon.crypto.ca import KeyPair, parse_csr
    from donjon.steward.client import check_issued
    from donjon.steward.messages import AttestRequest, AttestResponse

    host, port = url.removeprefix("http://").rsplit(":", 1)
    provider = NilEvidenceProvider(key_path=key_dir / "nil-dev-key.pem", hostname="bench")
    report = vcek = b""
    if scenario == "sev-snp":
        report = (SNP_DIR / "report.bin").read_bytes()
        vcek = (SNP_DIR / "vcek.der").read_bytes()
    keys = [KeyPair.generate("P-384") for _ in range(clients)]
    csrs = [k.csr() for k in keys]
    latencies: list[float] = []
    e2e: list[float] = []
    errors = 0
    total = 0
    checked = False
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    interval = clients / rate if rate else 0.0

    async def client(i: int) -> None:
        nonlocal errors, checked, total
        http = Http(host, int(port))
        await http.connect()
        scheduled = start + (i / clients) * interval
        while (now := time.perf_counter()) < stop_at:
            if interval:
                if now < scheduled:
                    await asyncio.sleep(scheduled - now)
                t0 = scheduled  # latency from the scheduled start (no coordinated omission)
                scheduled += interval
            else:
                t0 = now
            status, body = await http.request("GET", "/v1/nonce")
            nonce = cbor2.loads(body)["nonce"]
            if scenario == "nil":
                evidence = provider.evidence(report_data_for(keys[i].spki_der, nonce))
                request = AttestRequest(csrs[i], "nil", evidence, nonce)
            else:
                request = AttestRequest(csrs[i], "sev-snp", report, nonce, certs=(vcek,))
            t1 = time.perf_counter()
            status, body = await http.request("POST", "/v1/attest", request.encode())
            t2 = time.perf_counter()
            if status != 200:
                errors += 1
                continue
            total += 1
            if not checked:
                checked = True
                spki = parse_csr(csrs[i]).spki_der
                check_issued(AttestResponse.decode(body), spki_der=spki, nonce=nonce, ca=None)
            if measure_from <= t2 <= stop_at:
                latencies.append((t2 - t1) * 1e3)
                e2e.append((t2 - t0) * 1e3)
        http.writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return Run(latencies, e2e, errors, seconds, total=total)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[k]


def start_server(scenario: str, workers: int, state_dir: Path) -> tuple[subprocess.Popen[str], str]:
    if scenario == "nil":
        cmd = [
            sys.executable, "-m", "donjon", "steward", "serve", "--listen", "127.0.0.1:0",
            "--state-dir", str(state_dir), "--policy", "dev", "--workers", str(workers),
        ]  # fmt: skip
    else:
        cmd = [sys.executable, __file__, "--serve-snp", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, line.split()[-1]
    raise SystemExit(f"{scenario} server did not start")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _row(
    scenario: str,
    phase: str,
    run: Run,
    args: argparse.Namespace,
    goal_rate: float,
    goal_p95: float | None,
) -> dict[str, Any]:
    rate = len(run.latencies_ms) / run.seconds
    p95 = percentile(run.latencies_ms, 95)
    if phase == "saturate":
        meets = rate >= goal_rate
    else:
        offered = args.rate or goal_rate
        meets = rate >= 0.97 * offered and (goal_p95 is None or p95 <= goal_p95)
    return {
        "scenario": scenario,
        "phase": phase,
        "offered_per_s": None if phase == "saturate" else (args.rate or goal_rate),
        "workers": args.workers,
        "clients": args.clients,
        "seconds": run.seconds,
        "issued": len(run.latencies_ms),
        "errors": run.errors,
        "certificates_per_s": round(rate, 1),
        "p50_ms": round(percentile(run.latencies_ms, 50), 2),
        "p95_ms": round(p95, 2),
        "p99_ms": round(percentile(run.latencies_ms, 99), 2),
        "mean_ms": round(statistics.fmean(run.latencies_ms), 2) if run.latencies_ms else None,
        "server_cpu_ms_per_certificate": round(run.server_cpu_s * 1e3 / run.total, 2)
        if run.total
        else None,
        "client_cpu_ms_per_certificate": round(run.client_cpu_s * 1e3 / run.total, 2)
        if run.total
        else None,
        # What this machine's cores could sustain with nothing else running: CPU-bound estimate.
        "idle_machine_estimate_per_s": round(
            (os.cpu_count() or 1) * run.total / (run.server_cpu_s + run.client_cpu_s), 1
        )
        if run.total
        else None,
        "e2e_p50_ms": round(percentile(run.e2e_ms, 50), 2),
        "e2e_p95_ms": round(percentile(run.e2e_ms, 95), 2),
        "goal_certificates_per_s": goal_rate,
        "goal_p95_ms": goal_p95,
        "meets_goal": meets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scenario", choices=["nil", "sev-snp", "all"], default="all")
    parser.add_argument(
        "--rate", type=float, help="offered load of the paced phase (default: the goal rate)"
    )
    parser.add_argument("--serve-snp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_snp:
        serve_snp(args.workers, Path(tempfile.mkdtemp()))
        return

    scenarios = ["nil", "sev-snp"] if args.scenario == "all" else [args.scenario]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in scenarios:
            proc, url = start_server(scenario, args.workers, Path(tmp) / f"state-{scenario}")
            goal_rate, goal_p95 = GOALS[scenario]
            try:
                for phase in ("saturate", "paced"):
                    cpu_before = _cpu_seconds(proc.pid)
                    client_before = time.process_time()
                    run = asyncio.run(
                        load(
                            url,
                            scenario,
                            clients=args.clients,
                            seconds=args.seconds,
                            warmup=args.warmup,
                            key_dir=Path(tmp),
                            rate=None if phase == "saturate" else (args.rate or goal_rate),
                        )
                    )
                    # Warm-up and measured window both count: CPU per issued certificate.
                    run.server_cpu_s = _cpu_seconds(proc.pid) - cpu_before
                    run.client_cpu_s = time.process_time() - client_before
                    rows.append(_row(scenario, phase, run, args, goal_rate, goal_p95))
            finally:
                stop_server(proc)

    header = (
        f"{'scenario':<9} {'phase':<9} {'offered':>7} {'cert/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'e2e p95':>8} {'cpu/cert':>8} {'errors':>6}  goal"
    )
    print(f"{args.clients} clients, {args.workers} Steward worker(s), {args.seconds:g} s per phase")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["phase"] == "saturate":
            goal = f"≥{r['goal_certificates_per_s']:.0f}/s"
        else:
            goal = "keeps up" + (f", p95 ≤{r['goal_p95_ms']:.0f} ms" if r["goal_p95_ms"] else "")
        offered = "-" if r["offered_per_s"] is None else f"{r['offered_per_s']:.0f}"
        print(
            f"{r['scenario']:<9} {r['phase']:<9} {offered:>7} "
            f"{r['certificates_per_s']:>8.1f} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
            f"{r['p99_ms']:>8.2f} {r['e2e_p95_ms']:>8.2f} "
            f"{r['server_cpu_ms_per_certificate'] or 0:>5.2f} ms {r['errors']:>6}  {goal}: "
            f"{'met' if r['meets_goal'] else 'NOT met'}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    load_avg = os.getloadavg()
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "steward",
                "command": "python " + " ".join(["benchmarks/bench_steward.py", *sys.argv[1:]]),
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_1m_at_end": round(load_avg[0], 2),
                },
                "results": rows,
                "notes": (
                    "server_cpu_ms_per_certificate is the Steward processes' user+system CPU "
                    "(all workers) per issued certificate, nonce request included, measured "
                    "over the whole phase; client_cpu_ms_per_certificate the load generator's "
                    "(evidence signing, HTTP). They hardly depend on what else runs on the "
                    "machine; throughput and latency do (see load_average_1m_at_end). "
                    "idle_machine_estimate_per_s = cpus / (server + client CPU per certificate): "
                    "the CPU-bound rate this machine would sustain with nothing else running."
                ),
            },
            indent=2,
        )
        + "\n"
    )
    for r in rows:
        if r["phase"] == "saturate" and r["idle_machine_estimate_per_s"]:
            print(
                f"{r['scenario']}: CPU per certificate {r['server_cpu_ms_per_certificate']} ms "
                f"(Steward) + {r['client_cpu_ms_per_certificate']} ms (clients) -> at most "
                f"{r['idle_machine_estimate_per_s']:.0f}/s on {os.cpu_count()} idle cores; "
                f"load average now {os.getloadavg()[0]:.2f}"
            )
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
