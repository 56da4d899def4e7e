"""What releasing a secret costs: Steward's ``/v1/secrets`` against ``/v1/attest``, and a deploy
with a secret against the same deploy without, in the same run.

Run from the repository root after ``python examples/build.py`` (about a minute)::

    python benchmarks/bench_secrets.py [--requests 200] [--deploys 10]

1. Steward round trips. ``donjon steward serve --workers 1`` (the real command) with a policy
   that releases one secret to one workload identity. One client (a Keep with a P-384 key and
   nil evidence) alternates ``nonce + POST /v1/attest`` (the baseline: what a Keep does for its
   certificate) and ``nonce + POST /v1/secrets`` (the same attestation plus the release rule,
   reading the secret from the store and sealing it with HPKE, and the client opening it),
   sequentially, so each is one Keep's latency, not throughput. Client-side wall time per
   round trip, including evidence and CSR signing on the client: median and p95.
2. Deploys. ``donjon host serve`` and the same Steward; ``argsenv.wasm`` deployed to nil Keeps
   with ``--steward``, alternating a config with one ``[[secrets]]`` entry and the same config
   without it: median wall time from the deploy call to its end (the secret costs the Keep one
   more nonce, evidence and Steward round trip before the workload starts). Each deploy starts
   after a pause that lets the keep manager's spare loader warm up again, so that neither kind
   is measured against a cold Keep.

Prints a table and writes ``benchmarks/results/secrets.json``, with the load average: on a
shared 2-core machine it moves every number. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "build" / "examples"
RESULTS = REPO / "benchmarks" / "results" / "secrets.json"
RELEASED = "bench-token"
CONFIG = '[env]\nMODE = "bench"\n'
SPARE_REFILL_S = 1.5
"""Pause before each deploy (not timed): a spare loader warms up in ~0.5-1 s here."""
SECRET_CONFIG = CONFIG + f'[[secrets]]\nname = "{RELEASED}"\nenv = "TOKEN"\n'


@contextmanager
def service(args: list[str], log: Path) -> Iterator[str]:
    """``donjon ARGS`` until the block ends; yields the URL it prints."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "donjon", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode()
                if "listening on " in line:
                    yield line.split("listening on ", 1)[1].strip()
                    break
            else:
                raise SystemExit(f"donjon {args[0]} did not start; see {log}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1e3,
        "n": len(ordered),
    }


def round_trips(steward_url: str, ca: bytes, workload: str, n: int) -> dict[str, Any]:
    from donjon.attestation.result import Endorsements
    from donjon.backends.nil_evidence import NilEvidenceProvider
    from donjon.crypto.binding import report_data_for
    from donjon.crypto.ca import KeyPair
    from donjon.steward.client import StewardClient

    provider = NilEvidenceProvider.default()
    attest: list[float] = []
    release: list[float] = []
    with StewardClient(steward_url, ca=ca) as client:
        key = KeyPair.generate("P-384")

        def one_attest() -> None:
            nonce = client.nonce()
            evidence = provider.evidence(report_data_for(key.spki_der, nonce))
            client.attest(key.csr(), evidence, provider.platform, Endorsements(), nonce)

        def one_release() -> None:
            values = client.secrets(
                key, workload, [RELEASED], evidence=provider.evidence, platform=provider.platform
            )
            assert values[RELEASED]

        for warm in (one_attest, one_release):
            warm()
        for _ in range(n):
            attest.append(timed(one_attest))
            release.append(timed(one_release))
    a, r = summary(attest), summary(release)
    return {"attest": a, "secrets": r, "ratio_median": r["median_ms"] / a["median_ms"]}


def deploys(host_url: str, token: str, steward_url: str, ca: bytes, work: Path, n: int) -> Any:
    from donjon.client.deploy import DeployOptions, Workload, deploy
    from donjon.crypto.ca import load_certificate

    options = DeployOptions(
        host=host_url,
        token=token,
        steward=steward_url,
        steward_ca=load_certificate(ca),
        insecure=True,
    )
    plain = Workload.load(EXAMPLES / "argsenv.wasm", config_path=work / "plain.toml")
    secret = Workload.load(EXAMPLES / "argsenv.wasm", config_path=work / "secret.toml")
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(n + 1):
        for label, wl in (("without", plain), ("with", secret)):
            # Each deploy takes a warm spare loader; give the pool time to refill, so neither
            # kind meets a spare still warming up (the one after the other otherwise would).
            time.sleep(SPARE_REFILL_S)
            out = io.BytesIO()
            took = timed(
                lambda wl=wl, out=out: deploy(wl, options, stdout=out, stderr=io.BytesIO())
            )
            if (b"TOKEN=" in out.getvalue()) != (label == "with"):
                raise SystemExit(f"the deploy {label} a secret did not print what it should")
            times[label].append(took)
    without, with_ = summary(times["without"][1:]), summary(times["with"][1:])  # first: warm-up
    return {
        "without": without,
        "with": with_,
        "added_ms": with_["median_ms"] - without["median_ms"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="round trips of each kind")
    parser.add_argument("--deploys", type=int, default=10, help="deploys of each kind")
    ns = parser.parse_args()
    if not (EXAMPLES / "argsenv.wasm").exists():
        print("build the examples first: python examples/build.py", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="donjon-bench-secrets-") as tmp:
        work = Path(tmp)
        os.environ["DONJON_NIL_DEV_KEY"] = str(work / "nil-dev-key.pem")
        (work / "plain.toml").write_text(CONFIG)
        (work / "secret.toml").write_text(SECRET_CONFIG)
        from donjon.client.deploy import Workload
        from donjon.steward.config import DEV_POLICY_TOML
        from donjon.steward.secrets import SecretStore

        identity = Workload.load(
            EXAMPLES / "argsenv.wasm", config_path=work / "secret.toml"
        ).identity
        SecretStore(work / "steward").set(RELEASED, b"s3cr3t-" + os.urandom(8).hex().encode())
        policy = work / "policy.toml"
        # The round trips' client names the deployed workload's identity too: one rule for both.
        policy.write_text(DEV_POLICY_TOML + f'\n[steward.secrets]\n{RELEASED} = ["{identity}"]\n')
        steward_args = ["steward", "serve", "--listen", "127.0.0.1:0", "--workers", "1"]
        steward_args += ["--state-dir", str(work / "steward"), "--policy", str(policy)]
        host_args = ["host", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(work / "host")]
        with (
            service(steward_args, work / "steward.log") as steward_url,
            service(host_args, work / "host.log") as host_url,
        ):
            ca = (work / "steward" / "ca.crt").read_bytes()
            token = (work / "host" / "admin.token").read_text().strip()
            trips = round_trips(steward_url, ca, identity, ns.requests)
            deployed = deploys(host_url, token, steward_url, ca, work, ns.deploys)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_secrets.py " + " ".join(sys.argv[1:]),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "round_trips": trips,
        "deploys": deployed,
    }
    rows = [
        ("nonce + POST /v1/attest (baseline)", trips["attest"]),
        ("nonce + POST /v1/secrets, opened", trips["secrets"]),
        ("deploy argsenv.wasm, no secret (baseline)", deployed["without"]),
        ("deploy argsenv.wasm, one secret", deployed["with"]),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>9}  {'p95':>9}  n")
    for label, s in rows:
        print(f"{label:<{width}}  {s['median_ms']:7.1f} ms  {s['p95_ms']:7.1f} ms  {s['n']}")
    print(f"/v1/secrets / /v1/attest (median): {trips['ratio_median']:.2f}x")
    print(f"a secret adds {deployed['added_ms']:.0f} ms to a deploy (median)")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} on 2 CPUs")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
