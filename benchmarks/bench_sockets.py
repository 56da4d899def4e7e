"""Network workloads: the Wasm echo and HTTP servers in a Keep with TLS, against the same C
programs built natively behind a Python TLS terminator, in the same run.

Run from the repository root after ``python examples/build.py``::

    python benchmarks/bench_sockets.py              # about two and a half minutes
    python benchmarks/bench_sockets.py --check      # exit 1 when a goal is missed

Both sides terminate TLS 1.3 in Python with the same kind of certificate (an ephemeral P-384
one) and the same ``ssl`` module:

- **Keep**: ``donjon run --backend nil`` of ``echo_server.wasm`` / ``http_server.wasm`` with a
  ``listen`` entry of ``prot = "tls"``: TLS ends in the keep process's socket layer, and the
  workload reads and writes plaintext through its fds (raw wasmtime callbacks).
- **Native**: ``build/examples/native/echo_server`` / ``http_server`` (the same C source built
  with ``zig cc -O2``), handed a plaintext listening socket as fd 3, behind a single-threaded
  Python TLS terminator (``--terminator``: selectors, non-blocking ``SSLSocket``) that relays
  each TLS connection to it over loopback TCP.

The load comes from a separate client process (``--client``) that is the same for both sides:

1. ``echo MB/s``: one connection, 64 KiB writes with up to 1 MiB in flight; counts echoed bytes.
2. ``echo req/s``: 8 connections, each a 64-byte message and its echo in lock-step.
3. ``http req/s``: 8 keep-alive connections, each ``GET /`` and its response in lock-step.

Each scenario runs ``--seconds`` per side, sides alternating, ``--runs`` times; the table shows
medians (the goals are judged on them) and the best run of each side. Goals (issue 6): the Keep
at >= 0.5x the native baseline in each scenario, and >= 10,000 requests/s for the HTTP server
over keep-alive. Results go to ``benchmarks/results/sockets.json`` with the machine's load
average: on a shared 2-core machine the client, the TLS layer and the server compete for the
same cores, which moves every number.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import re
import selectors
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "build" / "examples"
RESULTS = REPO / "benchmarks" / "results" / "sockets.json"
DONJON = Path(sys.executable).with_name("donjon")

GOAL_RATIO = 0.5
GOAL_HTTP_RPS = 10_000.0
SCENARIOS = {
    # name: (server, client kind, connections)
    "echo MB/s": ("echo_server", "echo-bulk", 1),
    "echo req/s": ("echo_server", "echo-rr", 8),
    "http req/s": ("http_server", "http", 8),
}
_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


# -- the load generator (its own process) ----------------------------------------------------


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # both sides present throwaway certificates
    return ctx


def _connect(port: int) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _client_context().wrap_socket(sock, server_hostname="localhost")


def client_bulk(port: int, seconds: float) -> float:
    """Echo throughput of one connection, MB/s of echoed bytes (1 MB = 10**6 bytes)."""
    conn = _connect(port)
    conn.setblocking(False)
    payload = os.urandom(64 * 1024)
    window = 1024 * 1024
    sent = received = 0
    selector = selectors.DefaultSelector()
    selector.register(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
    started = time.perf_counter()
    end = started + seconds
    sending = True
    while sending or received < sent:
        if sending and time.perf_counter() >= end:
            sending = False
        progressed = False
        if sending and sent - received < window:
            try:
                sent += conn.send(payload)
                progressed = True
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        try:
            while True:
                data = conn.recv(256 * 1024)
                if not data:
                    raise SystemExit("the echo server closed the connection")
                received += len(data)
                progressed = True
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        if not progressed:
            want = selectors.EVENT_READ
            if sending and sent - received < window:
                want |= selectors.EVENT_WRITE
            selector.modify(conn, want)
            selector.select(0.05)
    elapsed = time.perf_counter() - started
    conn.close()
    return received / elapsed / 1e6


def client_lockstep(port: int, seconds: float, connections: int, kind: str) -> float:
    """Round trips per second over ``connections`` connections, each in lock-step."""
    message = _REQUEST if kind == "http" else os.urandom(64)
    conns = [_connect(port) for _ in range(connections)]
    selector = selectors.DefaultSelector()
    expected: int | None = len(message) if kind != "http" else None
    state: dict[ssl.SSLSocket, bytearray] = {}
    for conn in conns:
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
        state[conn] = bytearray()
        conn.sendall(message)
    count = 0
    started = time.perf_counter()
    end = started + seconds
    while True:
        for key, _ in selector.select(1.0):
            ready = key.fileobj
            assert isinstance(ready, ssl.SSLSocket)
            conn = ready
            buffer = state[conn]
            try:
                data = conn.recv(65536)  # once per readiness: a loop would end in an exception
                if not data:
                    raise SystemExit("the server closed a connection")
                buffer += data
            except ssl.SSLWantReadError:
                pass
            if expected is None and b"\r\n\r\n" in buffer:
                head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
                expected = len(head) + 4 + length
            while expected is not None and len(buffer) >= expected:
                del buffer[:expected]
                count += 1
                if time.perf_counter() < end:
                    conn.sendall(message)
        if time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return count / elapsed


# -- the native side's TLS terminator (its own process) ---------------------------------------


def terminator(backend_port: int) -> None:
    """TLS on 127.0.0.1:0 (port printed on stdout), relayed to 127.0.0.1:backend_port."""
    from donjon.keep.sockets.tls import UnsafeEphemeralTls

    logging_off()
    context = UnsafeEphemeralTls.generate(now=datetime.now(UTC)).server_context(client_ca=None)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    pending: dict[socket.socket, bytearray] = {}  # bytes waiting for each socket to take them
    peer: dict[socket.socket, socket.socket] = {}
    handshaking: set[ssl.SSLSocket] = set()

    def close(sock: socket.socket) -> None:
        for s in (sock, peer.get(sock)):
            if s is not None and s.fileno() >= 0:
                selector.unregister(s)
                s.close()

    def flush(sock: socket.socket) -> bool:
        buf = pending[sock]
        try:
            while buf:
                n = sock.send(buf)
                del buf[:n]
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return False
        return True

    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                raw, _ = listener.accept()
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                raw.setblocking(False)
                tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                handshaking.add(tls)
                selector.register(tls, selectors.EVENT_READ)
                sock = tls
            assert isinstance(sock, socket.socket)
            if sock in handshaking:
                assert isinstance(sock, ssl.SSLSocket)
                try:
                    sock.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except (ssl.SSLError, OSError):
                    selector.unregister(sock)
                    sock.close()
                    handshaking.discard(sock)
                    continue
                handshaking.discard(sock)
                back = socket.create_connection(("127.0.0.1", backend_port))
                back.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                back.setblocking(False)
                peer[sock], peer[back] = back, sock
                pending[sock], pending[back] = bytearray(), bytearray()
                selector.register(back, selectors.EVENT_READ)
            other = peer[sock]
            if not flush(sock):
                continue
            try:
                while True:
                    data = sock.recv(256 * 1024)
                    if not data:
                        close(sock)
                        break
                    pending[other] += data
                    if len(pending[other]) > 4 * 1024 * 1024:
                        break
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                close(sock)
                continue
            if other.fileno() >= 0 and not flush(other):
                selector.modify(other, selectors.EVENT_READ | selectors.EVENT_WRITE)
            elif other.fileno() >= 0:
                selector.modify(other, selectors.EVENT_READ)


def logging_off() -> None:
    import logging

    logging.getLogger("donjon").setLevel(logging.ERROR)


# -- the two sides -----------------------------------------------------------------------------


def _env(cache_dir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "DONJON_CACHE_DIR": str(cache_dir),
    }


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def keep_server(server: str, config: Path, env: dict[str, str]) -> Iterator[int]:
    proc = subprocess.Popen(
        [DONJON, "run", "--backend", "nil", "--wasmcfgfile", config, EXAMPLES / f"{server}.wasm"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 60
        while not _LISTENING.search(seen):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the Keep did not start listening:\n{seen.decode()}")
            seen += os.read(proc.stderr.fileno(), 4096)
        match = _LISTENING.search(seen)
        assert match is not None
        yield int(match.group(1))
    finally:
        _stop(proc)


@contextmanager
def native_server(server: str) -> Iterator[int]:
    backend = socket.create_server(("127.0.0.1", 0), backlog=128)
    fd = backend.fileno()
    native = subprocess.Popen(
        [EXAMPLES / "native" / server],
        stdout=subprocess.DEVNULL,
        pass_fds=(fd,),
        preexec_fn=lambda: os.dup2(fd, 3),  # the C program takes its listener as fd 3
    )
    backend_port = backend.getsockname()[1]
    backend.close()
    term = subprocess.Popen(
        [sys.executable, __file__, "--terminator", str(backend_port)],
        stdout=subprocess.PIPE,
    )
    try:
        assert term.stdout is not None
        line = term.stdout.readline()
        if not line.strip().isdigit():
            raise SystemExit("the TLS terminator did not start")
        yield int(line)
    finally:
        _stop(term)
        _stop(native)


def run_client(kind: str, port: int, seconds: float, connections: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--client", kind, str(port), str(seconds), str(connections)],
        capture_output=True,
        check=False,
        timeout=seconds + 120,
    )
    if out.returncode != 0:
        raise SystemExit(f"client {kind} failed:\n{out.stderr.decode()}")
    return float(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="repetitions per side (median)")
    parser.add_argument("--seconds", type=float, default=2.5, help="load time per measurement")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--client", nargs=4, metavar=("KIND", "PORT", "SECONDS", "CONNS"))
    parser.add_argument("--terminator", type=int, metavar="BACKEND_PORT")
    ns = parser.parse_args()
    if ns.client:
        kind, port, seconds, conns = ns.client
        if kind == "echo-bulk":
            value = client_bulk(int(port), float(seconds))
        else:
            value = client_lockstep(int(port), float(seconds), int(conns), kind)
        print(value)
        return 0
    if ns.terminator:
        terminator(ns.terminator)
        return 0

    for name in ("echo_server", "http_server"):
        for path in (EXAMPLES / f"{name}.wasm", EXAMPLES / "native" / name):
            if not path.exists():
                raise SystemExit(f"{path} is missing; run python examples/build.py")
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "Enarx.toml"
        config.write_text(
            '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
            '[[files]]\nkind = "listen"\nname = "listen"\nprot = "tls"\naddr = "127.0.0.1"\n'
            "port = 0\n"
        )
        env = _env(Path(tmp) / "cache")
        for name, (server, kind, conns) in SCENARIOS.items():
            keep: list[float] = []
            native: list[float] = []
            for _ in range(ns.runs):
                with keep_server(server, config, env) as port:
                    keep.append(run_client(kind, port, ns.seconds, conns))
                with native_server(server) as port:
                    native.append(run_client(kind, port, ns.seconds, conns))
            keep_median, native_median = statistics.median(keep), statistics.median(native)
            results[name] = {
                "server": server,
                "connections": conns,
                "keep": keep_median,
                "native_behind_terminator": native_median,
                "ratio": keep_median / native_median,
                "keep_best": max(keep),
                "native_best": max(native),
                "best_ratio": max(keep) / max(native),
                "keep_runs": keep,
                "native_runs": native,
            }
            print(
                f"{name:12} keep {keep_median:10.1f}   native+terminator "
                f"{native_median:10.1f}   ratio {keep_median / native_median:5.2f}",
                file=sys.stderr,
            )
    goals = {
        "ratio_at_least": GOAL_RATIO,
        "http_rps_at_least": GOAL_HTTP_RPS,
        "ratios_met": all(r["ratio"] >= GOAL_RATIO for r in results.values()),
        "http_rps_met": results["http req/s"]["keep"] >= GOAL_HTTP_RPS,
    }
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": pyplatform.python_version(),
            "openssl": ssl.OPENSSL_VERSION,
            "platform": pyplatform.platform(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "command": "python benchmarks/bench_sockets.py " + " ".join(sys.argv[1:]),
        "seconds_per_measurement": ns.seconds,
        "runs": ns.runs,
        "scenarios": results,
        "goals": goals,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{'median of ' + str(ns.runs):12} | {'Keep (TLS in Keep)':>18} | "
        f"{'native + terminator':>19} | ratio | best: Keep / native / ratio",
        file=sys.stderr,
    )
    for name, r in results.items():
        print(
            f"{name:12} | {r['keep']:18.1f} | {r['native_behind_terminator']:19.1f} | "
            f"{r['ratio']:5.2f} | {r['keep_best']:.1f} / {r['native_best']:.1f} / "
            f"{r['best_ratio']:.2f}",
            file=sys.stderr,
        )
    print(f"goals: {goals}\nwritten: {RESULTS.relative_to(REPO)}", file=sys.stderr)
    if ns.check and not (goals["ratios_met"] and goals["http_rps_met"]):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
