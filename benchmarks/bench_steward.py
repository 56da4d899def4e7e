"""Steward issuance throughput and latency: 32 concurrent clients on loopback, bounded runs.

Run from the repository root (about two minutes for both scenarios):

    python benchmarks/bench_steward.py [--seconds 10] [--clients 32] [--workers 2]
        [--scenario nil|sev-snp|all] [--rate R] [--http auto|h11|httptools]
        [--loop auto|asyncio|uvloop] [--breakdown]

Scenarios, each against a freshly started Steward on 127.0.0.1 (port 0):

* ``nil``: ``donjon steward serve --policy dev --workers N`` (the real command; with a forced
  ``--http``/``--loop`` the same ``serve()`` is started by this script, because the CLI has no
  such option). Each client is a Keep with its own P-384 key. Steward checks the CSR signature,
  the nonce, the nil evidence signature and the key/nonce binding, applies the policy, and signs
  a certificate and a COSE result: four P-384 operations per certificate.
* ``sev-snp``: a real SEV-SNP report (Milan, ``sev-snp/milan-trustee``) with its VCEK, under the
  ``production`` policy at the vector's pinned time (2025-09-01). Its report data binds a key
  captured elsewhere, so this server is started by this script with a pinned clock and a binding
  that accepts exactly the recorded report data; everything else (nonce, CSR signature,
  VCEK → ASK → ARK chain, report signature, policy, issuance) is the production path.

The load generator shares the 2 cores with Steward, so it is kept light:

* Before each phase every request body is built: for each one a nonce is fetched from Steward
  (``GET /v1/nonce``) and the client signs nil evidence binding its key and that nonce. None of
  this is timed or counted.
* During the phase each client, on its own keep-alive connection, loops ``GET /v1/nonce`` then
  ``POST /v1/attest`` with its next pre-built body. Steward therefore does exactly the work of
  real Keeps (one nonce and one attestation per certificate); the nonce fetched in the loop
  stands for the one the pre-built evidence binds (fetched a few seconds earlier, well within
  its 60 s lifetime). The client only writes pre-built bytes and parses status lines.
* HTTP/1.1 over raw asyncio protocols (uvloop when installed), no HTTP library.

Two phases per scenario:

* ``saturate``: a closed loop, each client sends its next request as soon as it has the last
  answer: the most certificates per second. Its latency is queueing by construction (Little's
  law: 32 clients at 400/s wait 32/400 = 80 ms on average), so the latency goal is not judged
  here.
* ``paced``: the clients together offer ``--rate`` requests per second (default: the scenario's
  goal), each on a fixed schedule; latency is measured from the *scheduled* start of each
  exchange for ``e2e`` (no coordinated omission), and per ``POST /v1/attest`` for the goal.

Reported per phase: certificates/s, p50/p95/p99 of ``POST /v1/attest``, e2e p95 (nonce + attest
from the scheduled time), Steward CPU and client CPU per certificate, how the clients'
connections were spread over the workers, and the load average before and after. The first
response of each run is checked in full (``donjon.steward.client.check_issued``).

``--breakdown`` also measures, in this process, the CPU of each step of one issuance (CSR,
evidence, signing, CBOR, ...) with the same code Steward runs.

Results: a table on stdout and ``benchmarks/results/steward.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO.parent / "shared" / "vectors"
RESULTS = REPO / "benchmarks" / "results" / "steward.json"
SNP_DIR = VECTORS / "sev-snp" / "milan-trustee"
SNP_TIME = datetime(2025, 9, 1, tzinfo=UTC)
GOALS = {"nil": (300.0, 25.0), "sev-snp": (200.0, None)}
POOL_RATE = 900.0
"""Requests per second pre-built for a saturate phase (more than Steward issues here)."""


# -- servers started by this script -------------------------------------------------------------


def serve_internal(scenario: str, workers: int, http: str, loop: str) -> None:
    """Run Steward for *scenario*; print ``listening on <url>``; stop on SIGTERM."""
    from donjon.steward.app import Listening, serve
    from donjon.steward.config import StewardPolicy, StewardSettings

    stack: dict[str, Any] = {
        "http": None if http == "auto" else http,
        "loop": None if loop == "auto" else loop,
    }

    def announce(where: Listening) -> None:
        print(f"listening on {where.url}", flush=True)

    if scenario == "nil":
        settings = StewardSettings(
            state_dir=Path(tempfile.mkdtemp()) / "state",
            policy=StewardPolicy.dev(),
            host="127.0.0.1",
            port=0,
            workers=workers,
        )
        serve(settings, announce=announce, http=stack["http"], loop=stack["loop"])
        return
    _serve_snp(workers, stack, announce)


def _serve_snp(workers: int, stack: dict[str, Any], announce: Callable[[Any], None]) -> None:
    import hmac

    from donjon.attestation.result import VerifiedEvidence
    from donjon.crypto.ca import CertificateAuthority
    from donjon.errors import MeasurementError
    from donjon.steward.app import StewardApp, bind_sockets, listening, run_workers
    from donjon.steward.config import StewardPolicy
    from donjon.steward.core import BindingScheme, StewardCore
    from donjon.steward.nonce import SharedReplayCache

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

    ca = CertificateAuthority.create(now=SNP_TIME)
    sockets = bind_sockets("127.0.0.1", 0, workers)
    replay_cache = SharedReplayCache() if workers > 1 else None
    announce(listening(sockets[0], tls=False))

    def make_app() -> StewardApp:
        core = StewardCore(
            ca,
            StewardPolicy.production(),
            clock=PinnedClock(),
            binding=VectorBinding(),
            replay_cache=replay_cache,
        )
        return StewardApp(core)

    try:
        run_workers(make_app, sockets, **stack)
    finally:
        for sock in sockets:
            sock.close()


def start_server(scenario: str, args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    if scenario == "nil" and args.http == "auto" and args.loop == "auto":
        cmd = [
            sys.executable, "-m", "donjon", "steward", "serve", "--listen", "127.0.0.1:0",
            "--state-dir", tempfile.mkdtemp(), "--policy", "dev",
            "--workers", str(args.workers),
        ]  # fmt: skip
    else:
        cmd = [
            sys.executable, __file__, "--serve", scenario, "--workers", str(args.workers),
            "--http", args.http, "--loop", args.loop,
        ]  # fmt: skip
    env = dict(os.environ)
    if args.server_path:
        if cmd[1] == __file__:
            raise SystemExit("--server-path runs the CLI: use it with the nil scenario only")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.server_path, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("listening on "):
            break
    else:
        raise SystemExit(f"{scenario} server did not start")
    # The workers are forked after the socket listens: wait for them, so CPU is counted whole.
    deadline = time.monotonic() + 20
    while args.workers > 1 and len(server_pids(proc.pid)) <= args.workers:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"{scenario} server did not start its workers")
        time.sleep(0.05)
    return proc, line.split()[-1]


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- /proc accounting ---------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def server_pids(pid: int) -> list[int]:
    """The server process and its direct children (the forked workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            # fields[1] is the ppid (proc(5), counted from the state field)
            if fields is not None and int(fields[1]) == pid:
                pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time of *pids* (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11]) / tick  # utime
            system += int(fields[12]) / tick  # stime
    return user, system


def connections_of(pid: int, port: int) -> int:
    """Established TCP connections to local *port* held by process *pid* (/proc/net/tcp)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            # local address "0100007F:1F90", state "01" = ESTABLISHED, inode (proc(5))
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
                inodes.add(f"socket:[{fields[9]}]")
    count = 0
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for name in names:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}") in inodes
        except OSError:
            continue
    return count


# -- load generation ----------------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends pre-built requests, one at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: steward\r\n\r\n".encode()


def post_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: steward\r\nContent-Type: application/cbor\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Prepared:
    """Pre-built requests, each with the key and nonce it binds (to check an answer).

    One pool for all clients: Steward does not care which connection a request comes on, so a
    client whose connection is served faster than the others never runs out before the pool.
    """

    requests: collections.deque[tuple[bytes, bytes, bytes]]  # (HTTP request, SPKI, nonce)


async def prepare(
    host: str, port: int, scenario: str, *, clients: int, count: int, key_dir: Path
) -> Prepared:
    """Fetch one nonce per request and build each request body (not timed)."""
    import cbor2

    from donjon.backends.nil_evidence import NilEvidenceProvider
    from donjon.crypto.binding import report_data_for
    from donjon.crypto.ca import KeyPair
    from donjon.steward.messages import AttestRequest

    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(Connection, host, port)
    provider = NilEvidenceProvider(key_path=key_dir / "nil-dev-key.pem", hostname="bench")
    report = vcek = b""
    if scenario == "sev-snp":
        report = (SNP_DIR / "report.bin").read_bytes()
        vcek = (SNP_DIR / "vcek.der").read_bytes()
    keys = [KeyPair.generate("P-384") for _ in range(clients)]
    csrs = [k.csr() for k in keys]
    nonce_request = get_request("/v1/nonce")
    requests: collections.deque[tuple[bytes, bytes, bytes]] = collections.deque()
    for n in range(count):
        i = n % clients  # the Keeps take turns
        status, body = await conn.request(nonce_request)
        if status != 200:
            raise SystemExit(f"GET /v1/nonce answered {status}")
        nonce = cbor2.loads(body)["nonce"]
        if scenario == "nil":
            evidence = provider.evidence(report_data_for(keys[i].spki_der, nonce))
            request = AttestRequest(csrs[i], "nil", evidence, nonce)
        else:
            request = AttestRequest(csrs[i], "sev-snp", report, nonce, certs=(vcek,))
        requests.append((post_request("/v1/attest", request.encode()), keys[i].spki_der, nonce))
    assert conn.transport is not None
    conn.transport.close()
    return Prepared(requests)


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    errors: int = 0
    exhausted: int = 0
    seconds: float = 0.0
    total: int = 0
    server_cpu_s: float = 0.0
    server_system_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    connections_per_worker: list[int] = field(default_factory=list)
    load_before: float = 0.0
    load_after: float = 0.0


async def load(
    host: str,
    port: int,
    prepared: Prepared,
    *,
    clients: int,
    seconds: float,
    warmup: float,
    rate: float | None,
    worker_pids: list[int],
) -> Run:
    from donjon.steward.client import check_issued
    from donjon.steward.messages import AttestResponse

    loop = asyncio.get_running_loop()
    connections = [
        (await loop.create_connection(Connection, host, port))[1] for _ in range(clients)
    ]
    run = Run(seconds=seconds)
    pool = prepared.requests
    nonce_request = get_request("/v1/nonce")
    checked = False
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    interval = clients / rate if rate else 0.0

    async def client(i: int) -> None:
        nonlocal checked
        conn = connections[i]
        scheduled = start + (i / clients) * interval
        while (now := time.perf_counter()) < stop_at:
            if not pool:
                run.exhausted += 1
                return
            if interval:
                if now < scheduled:
                    await asyncio.sleep(scheduled - now)
                t0 = scheduled  # e2e from the scheduled start: no coordinated omission
                scheduled += interval
            else:
                t0 = now
            raw, spki, nonce = pool.popleft()
            status, _ = await conn.request(nonce_request)
            t1 = time.perf_counter()
            status, body = await conn.request(raw)
            t2 = time.perf_counter()
            if status != 200:
                run.errors += 1
                continue
            run.total += 1
            if not checked:
                checked = True
                check_issued(AttestResponse.decode(body), spki_der=spki, nonce=nonce, ca=None)
            if measure_from <= t2 <= stop_at:
                run.latencies_ms.append((t2 - t1) * 1e3)
                run.e2e_ms.append((t2 - t0) * 1e3)

    async def spread() -> None:
        await asyncio.sleep(min(warmup, 1.0))
        run.connections_per_worker = [connections_of(pid, port) for pid in worker_pids]

    await asyncio.gather(spread(), *(client(i) for i in range(clients)))
    for conn in connections:
        assert conn.transport is not None
        conn.transport.close()
    return run


def run_phase(
    url: str,
    scenario: str,
    proc: subprocess.Popen[str],
    args: argparse.Namespace,
    *,
    rate: float | None,
    key_dir: Path,
) -> Run:
    host, port_text = url.removeprefix("http://").rsplit(":", 1)
    port = int(port_text)
    pids = server_pids(proc.pid)
    workers = [p for p in pids if p != proc.pid] or [proc.pid]
    duration = args.warmup + args.seconds
    count = int((rate or POOL_RATE) * duration) + args.clients
    loop_factory = _client_loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        prepared = runner.run(
            prepare(host, port, scenario, clients=args.clients, count=count, key_dir=key_dir)
        )
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds(pids)
    client_before = time.process_time()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        run = runner.run(
            load(
                host,
                port,
                prepared,
                clients=args.clients,
                seconds=args.seconds,
                warmup=args.warmup,
                rate=rate,
                worker_pids=workers,
            )
        )
    # Warm-up and measured window both count: CPU per certificate issued in them.
    user, system = cpu_seconds(pids)
    run.server_cpu_s = user + system - sum(cpu_before)
    run.server_system_cpu_s = system - cpu_before[1]
    run.client_cpu_s = time.process_time() - client_before
    run.load_before, run.load_after = load_before, os.getloadavg()[0]
    return run


def _client_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


# -- reporting ----------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[k]


def _row(
    scenario: str, phase: str, run: Run, args: argparse.Namespace, stack: str
) -> dict[str, Any]:
    goal_rate, goal_p95 = GOALS[scenario]
    rate = len(run.latencies_ms) / run.seconds
    p95 = percentile(run.latencies_ms, 95)
    offered = None if phase == "saturate" else (args.rate or goal_rate)
    if phase == "saturate":
        meets = rate >= goal_rate
    else:
        meets = rate >= 0.97 * (offered or 0) and (goal_p95 is None or p95 <= goal_p95)
    per_cert = (lambda s: round(s * 1e3 / run.total, 2)) if run.total else (lambda s: None)
    return {
        "scenario": scenario,
        "phase": phase,
        "stack": stack,
        "offered_per_s": offered,
        "workers": args.workers,
        "clients": args.clients,
        "seconds": run.seconds,
        "issued": len(run.latencies_ms),
        "errors": run.errors,
        "clients_out_of_requests": run.exhausted,
        "certificates_per_s": round(rate, 1),
        "p50_ms": round(percentile(run.latencies_ms, 50), 2),
        "p95_ms": round(p95, 2),
        "p99_ms": round(percentile(run.latencies_ms, 99), 2),
        "mean_ms": round(statistics.fmean(run.latencies_ms), 2) if run.latencies_ms else None,
        "e2e_p50_ms": round(percentile(run.e2e_ms, 50), 2),
        "e2e_p95_ms": round(percentile(run.e2e_ms, 95), 2),
        "server_cpu_ms_per_certificate": per_cert(run.server_cpu_s),
        "server_system_cpu_ms_per_certificate": per_cert(run.server_system_cpu_s),
        "client_cpu_ms_per_certificate": per_cert(run.client_cpu_s),
        "connections_per_worker": run.connections_per_worker,
        "load_average_1m_before": round(run.load_before, 2),
        "load_average_1m_after": round(run.load_after, 2),
        "goal_certificates_per_s": goal_rate,
        "goal_p95_ms": goal_p95,
        "meets_goal": meets,
    }


def issuance_steps(key_dir: Path, bodies_needed: int) -> dict[str, Callable[[], object]]:
    """The steps of one nil issuance, each a callable running the code Steward runs."""
    from donjon.attestation.dispatch import verify_evidence
    from donjon.attestation.policy import evaluate
    from donjon.attestation.result import Endorsements, Platform
    from donjon.backends.nil_evidence import NilEvidenceProvider
    from donjon.crypto.binding import report_data_for
    from donjon.crypto.ca import CertificateAuthority, KeyPair, LeafProfile, parse_csr
    from donjon.crypto.oids import DONJON_ATTESTATION_RESULT
    from donjon.steward.config import StewardPolicy
    from donjon.steward.core import StewardCore, SystemClock, keep_name
    from donjon.steward.messages import AttestRequest, AttestResponse

    now = datetime.now(UTC)
    core = StewardCore(
        CertificateAuthority.create(now=now),
        StewardPolicy.dev(),
        clock=SystemClock(),
        max_tracked_nonces=10 * bodies_needed + 10,
    )
    provider = NilEvidenceProvider(key_path=key_dir / "nil-dev-key.pem", hostname="bench")
    key = KeyPair.generate("P-384")
    csr = key.csr()

    def request() -> bytes:
        nonce = core.nonce().nonce
        evidence = provider.evidence(report_data_for(key.spki_der, nonce))
        return AttestRequest(csr, "nil", evidence, nonce).encode()

    bodies = [request() for _ in range(bodies_needed + 1)]
    decoded = AttestRequest.decode(bodies[0])
    verified = verify_evidence(Platform.NIL, decoded.evidence, endorsements=Endorsements(), now=now)
    parsed = parse_csr(csr)
    issued = core.attest(AttestRequest.decode(bodies[-1]))
    payload = issued.claims.encode()
    name = keep_name(parsed.spki_der)
    profile = LeafProfile(
        spki_der=parsed.spki_der,
        common_name=name,
        dns_names=(name,),
        uris=(issued.claims.workload,),
        not_before=now,
        not_after=now + timedelta(hours=24),
        extensions=((DONJON_ATTESTATION_RESULT, payload),),
        public_key=parsed.public_key,
    )
    response = AttestResponse(chain=issued.chain, result=issued.result)
    bodies_iter = iter(bodies[:-1])
    return {
        "whole attestation (core, request bytes -> response bytes)": lambda: core.attest_response(
            AttestRequest.decode(next(bodies_iter))
        ).encode(),
        "nonce (issue + CBOR)": lambda: core.nonce().encode(),
        "CBOR decode of the request": lambda: AttestRequest.decode(bodies[0]),
        "CSR parse + P-384 signature check": lambda: parse_csr(csr),
        "nil evidence verification (P-384)": lambda: verify_evidence(
            Platform.NIL, decoded.evidence, endorsements=Endorsements(), now=now
        ),
        "attestation policy": lambda: evaluate(core.policy.attestation, verified),
        "claims CBOR encode": lambda: issued.claims.encode(),
        "certificate build + P-384 signature": lambda: core.ca.issue(profile),
        "COSE result + P-384 signature": lambda: core.ca.sign_result(payload),
        "CBOR encode of the response": lambda: response.encode(),
    }


def breakdown(key_dir: Path, repeats: int = 200) -> dict[str, float]:
    """CPU microseconds per step, each in a tight loop in this process (best of 4).

    Tight loops keep caches warm: each step looks cheaper than inside a whole issuance, whose
    CPU is the first line (see ``--instructions`` for counts that do not depend on the cache).
    """
    out: dict[str, float] = {}
    for label, step in issuance_steps(key_dir, repeats * 4).items():
        n = repeats if label.startswith("whole") else repeats // 2
        best = float("inf")
        for _ in range(4):
            t0 = time.process_time()
            for _ in range(n):
                step()
            best = min(best, (time.process_time() - t0) / n)
        out[label] = round(best * 1e6, 1)
    return out


_FEW, _MANY = 5, 30
"""Instruction counts are the difference between a run of _MANY and one of _FEW repetitions,
divided by _MANY - _FEW: start-up and set-up cancel out."""


def _collected(cmd: list[str]) -> int:
    """Instructions (``Ir``) valgrind's callgrind counted for *cmd*."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stderr.rsplit("Collected : ", 1)[1].split()[0])


def _server_instructions(http: str, loop: str, certificates: int, key_dir: Path) -> int:
    """Instructions of a one-worker nil Steward under callgrind that issued *certificates*."""
    import cbor2

    from donjon.backends.nil_evidence import NilEvidenceProvider
    from donjon.crypto.binding import report_data_for
    from donjon.crypto.ca import KeyPair
    from donjon.steward.messages import AttestRequest

    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    cmd += [__file__, "--serve", "nil", "--workers", "1", "--http", http, "--loop", loop]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    port = next(int(line.rsplit(":", 1)[1]) for line in proc.stdout if "listening on" in line)
    provider = NilEvidenceProvider(key_path=key_dir / "nil-dev-key.pem", hostname="bench")
    key = KeyPair.generate("P-384")
    csr = key.csr()

    async def issue() -> None:
        loop_ = asyncio.get_running_loop()
        _, conn = await loop_.create_connection(Connection, "127.0.0.1", port)
        for _ in range(certificates):
            status, body = await conn.request(get_request("/v1/nonce"))
            nonce = cbor2.loads(body)["nonce"]
            evidence = provider.evidence(report_data_for(key.spki_der, nonce))
            request = AttestRequest(csr, "nil", evidence, nonce).encode()
            status, _ = await conn.request(post_request("/v1/attest", request))
            if status != 200:
                raise SystemExit(f"POST /v1/attest answered {status}")
        assert conn.transport is not None
        conn.transport.close()

    asyncio.run(issue())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return int(err.rsplit("Collected : ", 1)[1].split()[0])


def instructions(key_dir: Path) -> dict[str, int]:
    """Instructions per step and per certificate (valgrind callgrind): exact, unlike CPU time on
    a shared machine, and comparable between two versions of the code."""
    if subprocess.run(["which", "valgrind"], capture_output=True).returncode != 0:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    out: dict[str, int] = {}
    for label in issuance_steps(key_dir, 1):
        few, many = (
            _collected([sys.executable, __file__, "--run-step", label, "--count", str(n)])
            for n in (_FEW, _MANY)
        )
        out[label] = (many - few) // (_MANY - _FEW)
    for primitive in ("P-384 ECDSA verify", "P-384 ECDSA sign"):
        few, many = (
            _collected([sys.executable, __file__, "--run-step", primitive, "--count", str(n)])
            for n in (_FEW, _MANY)
        )
        out[primitive] = (many - few) // (_MANY - _FEW)
    from donjon.steward._http import have_module

    stacks = [("h11", "asyncio")]
    if have_module("httptools") and have_module("uvloop"):
        stacks.append(("httptools", "uvloop"))
    for http, loop in stacks:
        few, many = (_server_instructions(http, loop, n, key_dir) for n in (10, 60))
        out[f"one certificate over HTTP, {http}+{loop} (server: nonce + attest)"] = (
            many - few
        ) // 50
    return out


def run_step(label: str, count: int) -> None:
    """Run one step *count* times (what ``--instructions`` measures under valgrind)."""
    if label.startswith("P-384"):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP384R1())
        data = b"x" * 1000
        signature = key.sign(data, ec.ECDSA(hashes.SHA384()))
        for _ in range(count):
            if label.endswith("verify"):
                key.public_key().verify(signature, data, ec.ECDSA(hashes.SHA384()))
            else:
                key.sign(data, ec.ECDSA(hashes.SHA384()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        # The same set-up for every count, so it cancels out of the difference.
        step = issuance_steps(Path(tmp), _MANY + 1)[label]
        for _ in range(count):
            step()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scenario", choices=["nil", "sev-snp", "all"], default="all")
    parser.add_argument("--phase", choices=["saturate", "paced", "both"], default="both")
    parser.add_argument(
        "--rate", type=float, help="offered load of the paced phase (default: the goal rate)"
    )
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--breakdown", action="store_true", help="also time each step")
    parser.add_argument(
        "--server-path",
        help="a src/ directory to run Steward from (e.g. a copy from before a change), with the "
        "same load generator; nil scenario, default stack only",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per step and per certificate with valgrind instead (minutes)",
    )
    parser.add_argument("--serve", choices=["nil", "sev-snp"], help=argparse.SUPPRESS)
    parser.add_argument("--run-step", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_internal(args.serve, args.workers, args.http, args.loop)
        return
    if args.run_step:
        run_step(args.run_step, args.count)
        return
    if args.instructions:
        with tempfile.TemporaryDirectory() as tmp:
            counts = instructions(Path(tmp))
        print("Instructions (valgrind callgrind, millions):")
        for label, n in counts.items():
            print(f"  {n / 1e6:>8.2f}  {label}")
        out = args.output.with_name(args.output.stem + "-instructions.json")
        out.write_text(
            json.dumps({"command": " ".join(sys.argv), "instructions": counts}, indent=2) + "\n"
        )
        print(f"wrote {out}")
        return

    from donjon.steward._http import have_module, http_protocol, loop_name, stack_description

    http = http_protocol() if args.http == "auto" else args.http
    if http == "httptools" and not have_module("httptools"):
        raise SystemExit("httptools is not installed")
    stack = stack_description(http, loop_name() if args.loop == "auto" else args.loop)
    if args.server_path:
        stack = f"server from {args.server_path}"
    scenarios = ["nil", "sev-snp"] if args.scenario == "all" else [args.scenario]
    phases = ["saturate", "paced"] if args.phase == "both" else [args.phase]
    rows: list[dict[str, Any]] = []
    steps: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.breakdown:
            steps = breakdown(Path(tmp))
        for scenario in scenarios:
            proc, url = start_server(scenario, args)
            goal_rate, _ = GOALS[scenario]
            try:
                for phase in phases:
                    rate = None if phase == "saturate" else (args.rate or goal_rate)
                    run = run_phase(url, scenario, proc, args, rate=rate, key_dir=Path(tmp))
                    rows.append(_row(scenario, phase, run, args, stack))
            finally:
                stop_server(proc)

    print(
        f"{args.clients} clients, {args.workers} Steward worker(s), {stack}, "
        f"{args.seconds:g} s per phase"
    )
    header = (
        f"{'scenario':<9} {'phase':<9} {'offered':>7} {'cert/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'e2e p95':>8} {'srv cpu':>8} {'cli cpu':>8} {'conns':>7} {'load':>9}  goal"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["phase"] == "saturate":
            goal = f"≥{r['goal_certificates_per_s']:.0f}/s"
        else:
            goal = "keeps up" + (f", p95 ≤{r['goal_p95_ms']:.0f} ms" if r["goal_p95_ms"] else "")
        offered = "-" if r["offered_per_s"] is None else f"{r['offered_per_s']:.0f}"
        conns = "/".join(str(n) for n in r["connections_per_worker"])
        load_avg = f"{r['load_average_1m_before']:.1f}>{r['load_average_1m_after']:.1f}"
        print(
            f"{r['scenario']:<9} {r['phase']:<9} {offered:>7} {r['certificates_per_s']:>7.1f} "
            f"{r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['e2e_p95_ms']:>8.2f} {r['server_cpu_ms_per_certificate'] or 0:>5.2f} ms "
            f"{r['client_cpu_ms_per_certificate'] or 0:>5.2f} ms {conns:>7} {load_avg:>9}  "
            f"{goal}: {'met' if r['meets_goal'] else 'NOT met'}"
            + (f" ({r['errors']} errors)" if r["errors"] else "")
            + (" (ran out of pre-built requests)" if r["clients_out_of_requests"] else "")
        )
    if steps:
        print("\nCPU per step of one issuance, in this process (µs, best of 4):")
        for label, micros in steps.items():
            print(f"  {micros:>8.1f}  {label}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "steward",
                "command": "python " + " ".join(["benchmarks/bench_steward.py", *sys.argv[1:]]),
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                },
                "stack": stack,
                "results": rows,
                "steps_us": steps,
                "notes": (
                    "p50/p95/p99 are per POST /v1/attest; e2e adds the nonce round trip and is "
                    "measured from each exchange's scheduled start. server_cpu_ms_per_"
                    "certificate is the Steward processes' user+system CPU per certificate, "
                    "nonce request included; client_cpu_ms_per_certificate the load "
                    "generator's (request bodies are pre-built, untimed). Throughput and "
                    "latency move with the machine's load (load_average_1m_*); CPU per "
                    "certificate hardly does."
                ),
            },
            indent=2,
        )
        + "\n"
    )
    shown = args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output
    print(f"wrote {shown}")


if __name__ == "__main__":
    main()
