"""``donjon deploy``: request to first output byte, where the time goes, 20 Keeps at once, memory.

Run from the repository root after ``python examples/build.py``::

    python benchmarks/bench_deploy.py             # about two minutes
    python benchmarks/bench_deploy.py --check     # exit 1 when a goal is missed
    python benchmarks/bench_deploy.py --burst-only  # only 6.: bursts, --spares 1 against 4

Everything is real and on loopback: ``donjon host serve`` and ``donjon steward serve --policy dev``
run as processes, each Keep is a keep loader and a keep runtime process (nil backend), and the
client verifies each Keep before it sends ``hello.wasm``. The nil development key lives in a
temporary directory. The keep manager keeps one warm spare loader (its keep runtime has imported
everything); deploys are spaced by ``--gap`` seconds (default 1.5) so each finds the spare ready,
as a deploy to an idle host does, and deploys back to back are measured too. Measured (issue 5's
goals in brackets):

1. ``deploy()`` (the library call) of hello to a nil Keep, RA-TLS and via Steward: from the call
   to the first byte of the workload's output, median of N. [<= 500 ms] And RA-TLS back to back
   (each Keep asked for as soon as the previous deploy ended: the spare is still starting).
2. The same as the ``donjon deploy ... --insecure`` process: from spawning it to the first byte
   on its stdout (Python start-up and the client's imports included), and to its exit.
3. Where the time goes: the deploy steps replayed one by one with the public client API
   (create the Keep, wait for the keep runtime's socket, open the relay, TLS handshake, verify
   the certificate, send the workload and read the first output byte), and, in fresh
   processes started as the keep manager starts them (``python -I -S``), what a *cold* Keep's
   start is made of (interpreter start, the loader's and the keep runtime's imports, the warm-up
   a spare does before it has a Keep, the key + evidence + certificate with and without
   Steward): the part a warm spare takes off the path.
4. 20 Keeps at once on this 2-core machine: created together, then each runs hello in its own
   session, all at the same time. [all 20 answer]
5. Memory per idle Keep: RSS (and PSS, which splits shared pages fairly) of its loader and keep
   runtime, waiting for their client; and of the one spare pair.
6. Bursts: ``--burst`` deploys (6) fired at once, request to first output byte (median and
   max), against a keep manager with ``--spares 1`` and one with ``--spares 4`` (``--burst-spares``)
   in the same run, ``--burst-rounds`` times each, every round once the pool is full and warm;
   how each Keep started (warm spare, spare still warming up, cold, from its ``loader.log``), and
   the memory of one idle spare pair. The deploys run on threads of this process (the client's
   own CPU is shared, the same for both pool sizes).

Prints a table and writes ``benchmarks/results/deploy.json`` with the load average: on a shared
2-core machine the load moves every number. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform as pyplatform
import secrets
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "build" / "examples"
RESULTS = REPO / "benchmarks" / "results" / "deploy.json"

GOAL_FIRST_BYTE_MS = 500.0
GOAL_CONCURRENT_KEEPS = 20
START_TIMEOUT_S = 60.0
"""Longest wait for a service or a Keep on a loaded machine (seconds)."""


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": _ms(statistics.median(ordered)),
        "min_ms": _ms(ordered[0]),
        "max_ms": _ms(ordered[-1]),
        "n": len(ordered),
    }


# -- services ------------------------------------------------------------------------------


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str


@contextmanager
def _service(args: list[str], log: Path, env: dict[str, str]) -> Iterator[Service]:
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "donjon", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(b"listening on "):
                url = line.split()[-1].decode()
        if url is None:
            raise SystemExit(f"donjon {' '.join(args)} did not start: see {log}")
        yield Service(proc, url)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# -- one deploy, timed ---------------------------------------------------------------------


class _FirstByte(io.BytesIO):
    """A stdout that remembers when the first byte arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.first: float | None = None

    def write(self, data: Any) -> int:
        if self.first is None and data:
            self.first = time.perf_counter()
        return super().write(data)


def _library_deploy(host: str, token: str, steward: Any, ca: Any) -> tuple[float, float]:
    """(seconds to the first output byte, seconds to the end) of one ``deploy()``."""
    from donjon.client.deploy import DeployOptions, Workload, deploy

    out = _FirstByte()
    started = time.perf_counter()
    workload = Workload.load(EXAMPLES / "hello.wasm")
    result = deploy(
        workload,
        DeployOptions(host=host, token=token, steward=steward, steward_ca=ca, insecure=True),
        stdout=out,
        stderr=io.BytesIO(),
    )
    ended = time.perf_counter()
    if result.exit_code != 0 or out.getvalue() != b"Hello, world!\n" or out.first is None:
        raise SystemExit(f"deploy failed: {result}")
    return out.first - started, ended - started


def _cli_deploy(host: str, token_file: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first byte on stdout, seconds to exit) of one ``donjon deploy``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "donjon", "deploy", str(EXAMPLES / "hello.wasm")),
            *("--host", host, "--token-file", str(token_file), "--insecure"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    at_first = time.perf_counter()
    rest = proc.stdout.read()
    code = proc.wait()
    ended = time.perf_counter()
    proc.stdout.close()
    if code != 0 or first + rest != b"Hello, world!\n":
        raise SystemExit(f"donjon deploy failed ({code}): {first + rest!r}")
    return at_first - started, ended - started


def _wait_for(path: Path, timeout: float = START_TIMEOUT_S) -> float:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear")
        time.sleep(0.001)
    return time.perf_counter()


def _session(
    host: str,
    token: str,
    keep_id: str,
    nonce: bytes,
    module: bytes,
    *,
    marks: dict[str, float] | None = None,
    listening: Callable[[], float] | None = None,
) -> bytes:
    """Verify an existing Keep, run *module* in it, return its stdout (deploy's steps)."""
    import hashlib

    from donjon.client.attested import development_policy, verify_keep_certificate
    from donjon.client.channel import KeepChannel
    from donjon.client.host_api import HostClient
    from donjon.keep.config import WorkloadConfig
    from donjon.wire.frames import (
        DataFrame,
        ExitFrame,
        FrameDecoder,
        StdinEofFrame,
        WorkloadFrame,
        encode_frame,
    )

    m = marks if marks is not None else {}
    if listening is not None:
        m["listening"] = listening()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # RA-TLS: the evidence is verified below, before sending
    with HostClient(host, token=token) as client:
        relay = client.relay_url(keep_id)
    with KeepChannel(relay, token=token, context=ctx) as channel:
        m["relay"] = time.perf_counter()
        der = channel.handshake()
        m["handshake"] = time.perf_counter()
        verify_keep_certificate(
            der,
            nonce=nonce,
            policy=development_policy(),
            insecure_ok=True,
            now=datetime.now(UTC),
            steward_ca=None,
        )
        m["verified"] = time.perf_counter()
        frame = WorkloadFrame(
            config=WorkloadConfig().to_dict(),
            module=module,
            module_sha256=hashlib.sha256(module).digest(),
        )
        channel.send(encode_frame(frame) + encode_frame(StdinEofFrame()))
        out = bytearray()
        decoder = FrameDecoder()
        while True:
            data = channel.recv()
            if not data:
                raise SystemExit("the Keep closed without an exit frame")
            decoder.feed(data)
            while (f := decoder.next_frame()) is not None:
                if isinstance(f, DataFrame) and f.stream == "stdout":
                    m.setdefault("first_byte", time.perf_counter())
                    out += f.data
                elif isinstance(f, ExitFrame):
                    m["exit"] = time.perf_counter()
                    if f.code != 0:
                        raise SystemExit(f"workload exited {f.code}: {f.message}")
                    return bytes(out)


def _phases(host: str, token: str, state: Path, module: bytes) -> dict[str, float]:
    """One deploy, step by step, with a timestamp after each step (seconds from the start)."""
    from donjon.client.host_api import HostClient

    t0 = time.perf_counter()
    nonce = secrets.token_bytes(32)
    with HostClient(host, token=token) as client:
        keep = client.create_keep(backend="nil", nonce=nonce)
    created = time.perf_counter()
    sock = state / "keeps" / keep.id / "keep.sock"
    marks: dict[str, float] = {"created": created}
    _session(host, token, keep.id, nonce, module, marks=marks, listening=lambda: _wait_for(sock))
    return {k: v - t0 for k, v in marks.items()}


PHASES = [
    ("create the Keep (HTTP request; the manager writes records, spawns the loader)", "created"),
    ("keep loader + keep runtime start, key, evidence, certificate, listen", "listening"),
    ("relay WebSocket open (manager connects to the Keep's socket)", "relay"),
    ("TLS 1.3 handshake through the relay", "handshake"),
    ("verify the certificate and evidence (client)", "verified"),
    ("send hello.wasm, compile and run it, first output byte back", "first_byte"),
]


# -- the parts of a Keep's start, in fresh processes ----------------------------------------


def _isolated(code: str) -> list[str]:
    """``python -I -S`` with this process's import path, as the keep manager starts Keeps."""
    paths = [p for p in sys.path if p and os.path.isabs(p)]
    return [sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {paths!r}; {code}"]


def _python_ms(code: str, env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(_isolated(code), env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


_IDENTITY = """
import time, sys
t0 = time.perf_counter()
import donjon.keep.agent as a
t1 = time.perf_counter()
warm = a.prewarm() if sys.argv[3] == "warm" else None
t2 = time.perf_counter()
from datetime import UTC, datetime
steward = sys.argv[1] or None
ca = open(sys.argv[2], "rb").read() if sys.argv[2] else None
p = a.LaunchParams("0123456789abcdef", "nil", b"n" * 32, steward, ca)
a.establish_identity(p, now=datetime.now(UTC), warm=warm)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def _identity_ms(
    env: dict[str, str], steward: str, ca_file: str, runs: int, *, warm: bool = False
) -> tuple[float, float]:
    """(warm-up, identity) medians in seconds."""
    warmups, identities = [], []
    for _ in range(runs):
        out = subprocess.run(
            [*_isolated(_IDENTITY), steward, ca_file, "warm" if warm else "cold"],
            env=env,
            check=True,
            capture_output=True,
        ).stdout.split()
        warmups.append(float(out[1]))
        identities.append(float(out[2]))
    return statistics.median(warmups), statistics.median(identities)


# -- memory --------------------------------------------------------------------------------


def _proc_kib(pid: int, key: str, file: str) -> int:
    for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def _keep_pids(keep_dir: Path) -> list[int]:
    """The Keep's loader (its pid is in ``loader.pid``) and the loader's child, the runtime."""
    try:
        loader = int((keep_dir / "loader.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    if not Path(f"/proc/{loader}").exists():
        return []
    return [loader, *_children(loader)]


def _idle_spares(manager_pid: int) -> list[int]:
    """The manager's spare loaders still waiting for a Keep: started with ``--spare`` and still
    writing to a pipe (a spare's stdout goes to the manager until its Keep's log replaces it)."""
    idle = []
    for pid in _children(manager_pid):
        try:
            if b"--spare" in Path(f"/proc/{pid}/cmdline").read_bytes() and os.readlink(
                f"/proc/{pid}/fd/1"
            ).startswith("pipe:"):
                idle.append(pid)
        except OSError:
            continue
    return idle


def _runtime_waiting(spare: int) -> bool:
    """Whether the spare's keep runtime has warmed up: it blocks in read(2) on its launch pipe
    (``/proc/PID/syscall``, x86-64 numbering; what the loader itself watches)."""
    for runtime in _children(spare):
        try:
            return Path(f"/proc/{runtime}/syscall").read_text().split()[0] == "0"
        except (OSError, IndexError):
            return False
    return False


def _wait_for_warm_pool(manager_pid: int, spares: int) -> list[int]:
    """Wait until *spares* idle spares have warmed up, then a second for the host to settle."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        idle = _idle_spares(manager_pid)
        if len(idle) >= spares and all(_runtime_waiting(p) for p in idle):
            time.sleep(1.0)
            return idle
        if time.monotonic() > deadline:
            raise SystemExit(f"{spares} warm spares did not appear (found {len(idle)})")
        time.sleep(0.02)


def _how_started(keep_dir: Path) -> str:
    """``warm``, ``warming`` or ``cold``: the first line of the Keep's ``loader.log``."""
    try:
        first = (keep_dir / "loader.log").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"
    if first.startswith("donjon loader: started from a warm spare"):
        return "warm"
    if first.startswith("donjon loader: started from a spare still warming up"):
        return "warming"
    if first.startswith("donjon loader: started cold"):
        return "cold"
    return "unknown"


def _burst(ns: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """6.: *ns.burst* deploys at once against each pool size of *ns.burst_spares*."""
    from donjon.client.host_api import HostClient

    out: dict[str, Any] = {}
    for spares in ns.burst_spares:
        state = tmp / f"burst-host-{spares}"
        args = ["host", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(state)]
        with _service([*args, "--spares", str(spares)], tmp / f"burst-{spares}.log", env) as host:
            token = (state / "admin.token").read_text().strip()
            firsts: list[float] = []
            started: dict[str, int] = {"warm": 0, "warming": 0, "cold": 0, "unknown": 0}
            loads: list[float] = []
            spare_rss: list[float] = []
            spare_pss: list[float] = []
            for _ in range(ns.burst_rounds):
                idle = _wait_for_warm_pool(host.proc.pid, spares)
                for pid in idle:
                    pair = [pid, *_children(pid)]
                    spare_rss.append(sum(_proc_kib(p, "VmRSS", "status") for p in pair) / 1024)
                    spare_pss.append(sum(_proc_kib(p, "Pss", "smaps_rollup") for p in pair) / 1024)
                with HostClient(host.url, token=token) as client:
                    before = {k.id for k in client.list_keeps()}
                loads.append(os.getloadavg()[0])
                with ThreadPoolExecutor(ns.burst) as pool:
                    deploys = [
                        pool.submit(_library_deploy, host.url, token, None, None)
                        for _ in range(ns.burst)
                    ]
                    runs = [d.result() for d in deploys]
                firsts += [first for first, _ in runs]
                with HostClient(host.url, token=token) as client:
                    new = [k.id for k in client.list_keeps() if k.id not in before]
                for keep_id in new:
                    started[_how_started(state / "keeps" / keep_id)] += 1
            out[str(spares)] = {
                "first_byte": _stats(firsts),
                "started": started,
                "load_average_1min": [round(x, 2) for x in loads],
                "idle_spare_pair_mib": {
                    "rss_median": round(statistics.median(spare_rss), 1),
                    "pss_median": round(statistics.median(spare_pss), 1),
                },
            }
    return out


def _spare_pids(manager_pid: int) -> list[int]:
    """One idle spare pair (loader and keep runtime), if the manager has one."""
    idle = _idle_spares(manager_pid)
    return [idle[0], *_children(idle[0])] if idle else []


def _burst_rows(burst: dict[str, Any], size: int) -> list[tuple[str, str]]:
    rows = []
    for spares, r in burst.items():
        s, n = r["first_byte"], r["started"]
        rows += [
            (
                f"{size} deploys at once, --spares {spares}: first byte",
                f"median {s['median_ms']:.0f} ms, max {s['max_ms']:.0f} ms (n {s['n']})",
            ),
            (
                "  Keeps started: warm / still warming / cold",
                f"{n['warm']} / {n['warming']} / {n['cold']}",
            ),
            ("  load average before each burst", ", ".join(map(str, r["load_average_1min"]))),
            (
                "  idle spare pair, RSS / PSS",
                f"{r['idle_spare_pair_mib']['rss_median']} / "
                f"{r['idle_spare_pair_mib']['pss_median']} MiB",
            ),
        ]
    return rows


def _report_burst(
    burst: dict[str, Any],
    ns: argparse.Namespace,
    argv: list[str] | None,
    load_before: tuple[float, float, float],
    tmp: Path,
) -> int:
    """``--burst-only``: print 6. and write ``benchmarks/results/deploy-burst.json``."""
    import shutil

    load_after = os.getloadavg()
    path = RESULTS.with_name("deploy-burst.json")
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": pyplatform.python_version(),
            "load_average_before": list(load_before),
            "load_average_after": list(load_after),
        },
        "command": "python benchmarks/bench_deploy.py " + " ".join(argv or sys.argv[1:]),
        "burst": burst,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    rows = _burst_rows(burst, ns.burst)
    width = max(len(name) for name, _ in rows)
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"wrote {path.relative_to(REPO)}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per latency measure")
    parser.add_argument("--keeps", type=int, default=GOAL_CONCURRENT_KEEPS)
    parser.add_argument(
        "--gap", type=float, default=1.5, help="seconds between deploys (the spare warms up)"
    )
    parser.add_argument(
        "--spares", type=int, default=1, help="warm spares of the keep manager in 1.-5."
    )
    parser.add_argument(
        "--no-spare", action="store_true", help="run the keep manager without spares (--spares 0)"
    )
    parser.add_argument("--burst", type=int, default=6, help="deploys fired at once in 6.")
    parser.add_argument(
        "--burst-spares",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 4],
        help="pool sizes compared in 6. (comma-separated; default 1,4)",
    )
    parser.add_argument("--burst-rounds", type=int, default=3, help="bursts per pool size in 6.")
    parser.add_argument("--burst-only", action="store_true", help="measure only 6. (~1 minute)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    ns = parser.parse_args(argv)
    if ns.no_spare:
        ns.spares = 0
    if not (EXAMPLES / "hello.wasm").exists():
        raise SystemExit("examples not built: python examples/build.py")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="donjon-bench-deploy-"))
    env = dict(os.environ, DONJON_NIL_DEV_KEY=str(tmp / "devkey" / "nil-dev-key.pem"))
    os.environ["DONJON_NIL_DEV_KEY"] = env["DONJON_NIL_DEV_KEY"]
    module = (EXAMPLES / "hello.wasm").read_bytes()
    results: dict[str, Any] = {}
    rows: list[tuple[str, str]] = []
    if ns.burst_only:
        return _report_burst(_burst(ns, tmp, env), ns, argv, load_before, tmp)

    from donjon.client.host_api import HostClient
    from donjon.crypto.ca import load_certificate

    state = tmp / "host"
    with (
        _service(
            [
                *("host", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(state)),
                *("--spares", str(ns.spares)),
            ],
            tmp / "host.log",
            env,
        ) as host,
        _service(
            [
                *("steward", "serve", "--listen", "127.0.0.1:0"),
                *("--state-dir", str(tmp / "steward"), "--policy", "dev"),
            ],
            tmp / "steward.log",
            env,
        ) as steward,
    ):
        token_file = state / "admin.token"
        token = token_file.read_text().strip()
        ca_file = tmp / "steward" / "ca.crt"
        ca = load_certificate(ca_file.read_bytes())
        _library_deploy(host.url, token, None, None)  # warm the dev key and this process

        # 1. library, RA-TLS and Steward (spaced by --gap), and RA-TLS back to back
        for label, st, c, gap in (
            ("ratls", None, None, ns.gap),
            ("steward", steward.url, ca, ns.gap),
            ("ratls_back_to_back", None, None, 0.0),
        ):
            firsts, totals = [], []
            for _ in range(ns.runs):
                time.sleep(gap)
                first, total = _library_deploy(host.url, token, st, c)
                firsts.append(first)
                totals.append(total)
            results[f"library_{label}"] = {
                "first_byte": _stats(firsts),
                "total": _stats(totals),
            }
        # 2. CLI process
        firsts, totals = [], []
        for _ in range(max(5, ns.runs)):
            time.sleep(ns.gap)
            first, total = _cli_deploy(host.url, token_file, env)
            firsts.append(first)
            totals.append(total)
        results["cli_ratls"] = {"first_byte": _stats(firsts), "total": _stats(totals)}

        # 3. where the time goes
        runs: list[dict[str, float]] = []
        for _ in range(ns.runs):
            time.sleep(ns.gap)
            runs.append(_phases(host.url, token, state, module))
        previous = "start"
        breakdown: dict[str, float] = {}
        for _, key in PHASES:
            steps = [r[key] - (r[previous] if previous != "start" else 0.0) for r in runs]
            breakdown[key] = _ms(statistics.median(steps))
            previous = key
        breakdown["total_to_first_byte"] = _ms(statistics.median(r["first_byte"] for r in runs))
        n = max(3, ns.runs // 2)
        interp = _python_ms("pass", env, n)
        prewarm, warm_identity = _identity_ms(env, "", "", n, warm=True)
        parts = {
            "python_start": _ms(interp),
            "loader_imports": _ms(_python_ms("import donjon.host.loader", env, n) - interp),
            "runtime_imports": _ms(_python_ms("import donjon.keep.agent", env, n) - interp),
            "spare_warm_up": _ms(prewarm),
            "identity_ratls_cold": _ms(_identity_ms(env, "", "", n)[1]),
            "identity_ratls_warm": _ms(warm_identity),
            "identity_steward_cold_incl_httpx_import": _ms(
                _identity_ms(env, steward.url, str(ca_file), n)[1]
            ),
            "identity_steward_warm": _ms(
                _identity_ms(env, steward.url, str(ca_file), n, warm=True)[1]
            ),
        }
        results["phases_ms"] = breakdown
        results["keep_start_parts_ms"] = parts

        # 4. and 5. twenty Keeps at once, and memory per idle Keep
        nonces = [secrets.token_bytes(32) for _ in range(ns.keeps)]

        def create(nonce: bytes) -> str:
            with HostClient(host.url, token=token) as client:
                return client.create_keep(backend="nil", nonce=nonce).id

        started = time.perf_counter()
        with ThreadPoolExecutor(ns.keeps) as pool:
            ids = list(pool.map(create, nonces))
        for keep_id in ids:
            _wait_for(state / "keeps" / keep_id / "keep.sock")
        all_listening = time.perf_counter() - started
        time.sleep(1.0)  # let them settle: idle Keeps waiting for their clients
        rss, pss = [], []
        keep_pids: list[int] = []
        for keep_id in ids:
            pids = _keep_pids(state / "keeps" / keep_id)
            keep_pids += pids
            rss.append(sum(_proc_kib(p, "VmRSS", "status") for p in pids))
            pss.append(sum(_proc_kib(p, "Pss", "smaps_rollup") for p in pids))
        spare = _spare_pids(host.proc.pid)
        spare_rss = sum(_proc_kib(p, "VmRSS", "status") for p in spare)

        errors: list[str] = []

        def answer(i: int) -> tuple[bool, float]:
            begun = time.perf_counter()
            try:
                out = _session(host.url, token, ids[i], nonces[i], module)
            except (Exception, SystemExit) as e:
                errors.append(f"{type(e).__name__}: {e}")
                return False, time.perf_counter() - begun
            return out == b"Hello, world!\n", time.perf_counter() - begun

        started = time.perf_counter()
        with ThreadPoolExecutor(ns.keeps) as pool:
            answers = list(pool.map(answer, range(ns.keeps)))
        all_answered = time.perf_counter() - started
        ok = sum(1 for good, _ in answers if good)
        results["concurrent"] = {
            "keeps": ns.keeps,
            "answered": ok,
            "create_all_until_listening_s": round(all_listening, 2),
            "sessions_wall_s": round(all_answered, 2),
            "session": _stats([t for _, t in answers]),
            "errors": sorted(set(errors)),
        }
        results["idle_keep_memory_mib"] = {
            "rss_median": round(statistics.median(rss) / 1024, 1),
            "pss_median": round(statistics.median(pss) / 1024, 1),
            "processes_per_keep": 2,
            "spare_pair_rss": round(spare_rss / 1024, 1),
        }
        with HostClient(host.url, token=token) as client:
            for keep in client.list_keeps():
                if keep.state in ("starting", "running"):
                    client.stop_keep(keep.id)
        time.sleep(0.5)
        leaked = [p for p in keep_pids if Path(f"/proc/{p}/cmdline").exists()]
        if leaked:
            print(f"warning: Keep processes left running: {leaked}", file=sys.stderr)

    results["burst"] = _burst(ns, tmp, env)  # 6. (its own keep managers)
    load_after = os.getloadavg()
    lib = results["library_ratls"]["first_byte"]["median_ms"]
    cli = results["cli_ratls"]["first_byte"]["median_ms"]
    goals = {
        "first_byte_ms": {
            "goal": GOAL_FIRST_BYTE_MS,
            "value": lib,
            "met": lib <= GOAL_FIRST_BYTE_MS,
        },
        "cli_first_byte_ms": {
            "goal": GOAL_FIRST_BYTE_MS,
            "value": cli,
            "met": cli <= GOAL_FIRST_BYTE_MS,
        },
        "concurrent_keeps": {"goal": ns.keeps, "value": ok, "met": ok == ns.keeps},
    }
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": pyplatform.python_version(),
            "platform": pyplatform.platform(),
            "load_average_before": list(load_before),
            "load_average_after": list(load_after),
        },
        "command": "python benchmarks/bench_deploy.py " + " ".join(argv or sys.argv[1:]),
        **results,
        "goals": goals,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    def row(name: str, s: dict[str, float]) -> tuple[str, str]:
        return name, f"{s['median_ms']:.0f} ms (min {s['min_ms']:.0f}, max {s['max_ms']:.0f})"

    rows += [
        row(
            "deploy(), RA-TLS: request to first output byte", results["library_ratls"]["first_byte"]
        ),
        row(
            "deploy(), via Steward: request to first output byte",
            results["library_steward"]["first_byte"],
        ),
        row(
            "deploy(), RA-TLS, back to back (spare not ready yet)",
            results["library_ratls_back_to_back"]["first_byte"],
        ),
        row(
            "donjon deploy process: spawn to first output byte", results["cli_ratls"]["first_byte"]
        ),
        row("donjon deploy process: spawn to exit", results["cli_ratls"]["total"]),
    ]
    rows += [(f"  step: {label}", f"{breakdown[key]:.0f} ms") for label, key in PHASES]
    rows += [(f"  keep start part: {k}", f"{v:.0f} ms") for k, v in parts.items()]
    c = results["concurrent"]
    rows += [
        (f"{c['keeps']} Keeps at once: answered", f"{c['answered']}/{c['keeps']}"),
        ("  created together until all listen", f"{c['create_all_until_listening_s']:.2f} s"),
        ("  all sessions at once, wall", f"{c['sessions_wall_s']:.2f} s"),
        (
            "memory per idle Keep (loader + runtime), RSS / PSS",
            f"{results['idle_keep_memory_mib']['rss_median']} / "
            f"{results['idle_keep_memory_mib']['pss_median']} MiB",
        ),
        (
            "memory of the spare pair, RSS",
            f"{results['idle_keep_memory_mib']['spare_pair_rss']} MiB",
        ),
    ]
    rows += _burst_rows(results["burst"], ns.burst)
    width = max(len(name) for name, _ in rows)
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    verdict = {True: "met", False: "MISSED"}
    print(
        f"goal first byte <= {GOAL_FIRST_BYTE_MS:.0f} ms: library "
        f"{verdict[goals['first_byte_ms']['met']]}, CLI "
        f"{verdict[goals['cli_first_byte_ms']['met']]}; "
        f"{ns.keeps} Keeps answering: {verdict[goals['concurrent_keeps']['met']]}"
    )
    print(f"wrote {RESULTS.relative_to(REPO)}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    if ns.check and not all(g["met"] for g in goals.values()):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
