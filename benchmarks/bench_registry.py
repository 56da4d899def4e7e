"""Push and pull of a 20 MB module: donjon's registry client against curl, in the same run.

Run from the repository root (needs /usr/bin/docker-registry and curl; about half a minute):

    python benchmarks/bench_registry.py [--size-mb 20] [--repeats 7]

It starts a real registry (CNCF distribution, Debian's ``docker-registry``) on 127.0.0.1 with
storage in a temporary directory, and times, interleaved over ``--repeats`` rounds:

* ``push-blob``: ``RegistryClient.push_blob`` of the module into a fresh repository (HEAD, POST,
  one PUT) against ``curl``: a POST for the upload URL, then ``curl -T`` of the same file;
* ``push-package``: ``push_package`` (the module, the config, the empty config and the manifest);
* ``pull-blob``: ``RegistryClient.fetch_blob`` (streamed into a sink that drops the pieces,
  size-bounded, SHA-256 checked) against ``curl -o /dev/null`` of the same blob URL (no check);
* ``read-blob``: ``RegistryClient.read_blob`` (the blob kept in memory, size-bounded, SHA-256
  checked): what ``fetch_package`` does with the module;
* ``pull-package``: ``fetch_package`` by digest (manifest, digest checks, module and config);
* ``curl-verified``: ``curl`` piped into ``sha256sum``, the shell equivalent of a checked pull.

curl's times include starting the curl process (a few ms), as a user running curl would see.
Results go to stdout as a table and to ``benchmarks/results/registry.json``. The ratio is
donjon's MB/s over curl's, from the medians; the goal is at least 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.integration.registry_support import start_registry  # noqa: E402

from donjon.registry.client import RegistryClient  # noqa: E402
from donjon.registry.fetch import FetchLimits, fetch_package  # noqa: E402
from donjon.registry.oci import Descriptor  # noqa: E402
from donjon.registry.package import MEDIA_TYPE_WASM, build_package  # noqa: E402
from donjon.registry.reference import Reference  # noqa: E402
from donjon.registry.transfer import push_package  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "registry.json"


class _Discard:
    def write(self, piece: bytes, /) -> int:
        return len(piece)


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    curl = shutil.which("curl")
    if curl is None:
        print("bench_registry: curl is required", file=sys.stderr)
        return 2
    size = args.size_mb * 1000 * 1000
    module = b"\0asm\x01\0\0\0" + os.urandom(size - 8)
    config = b'args = ["bench"]\n'
    built = build_package(module, config)
    blob = Descriptor.for_content(MEDIA_TYPE_WASM, module)
    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "push-blob",
            "curl-push-blob",
            "push-package",
            "pull-blob",
            "curl-pull-blob",
            "read-blob",
            "pull-package",
            "curl-verified",
        )
    }
    with tempfile.TemporaryDirectory(prefix="donjon-bench-registry-") as tmp:
        work = Path(tmp)
        module_file = work / "module.wasm"
        module_file.write_bytes(module)
        server = start_registry(work / "registry")
        try:
            base = f"http://{server.address}"
            client = RegistryClient(server.address, plain_http=True)
            ref = Reference.parse(f"{server.address}/bench/pkg:1")
            push_package(client, ref, built)  # warm-up; the pulls read this copy
            limits = FetchLimits(max_module_bytes=size)
            pinned = ref.with_digest(built.digest)
            blob_url = f"{base}/v2/bench/pkg/blobs/{blob.digest}"

            def curl_push(repo: str) -> None:
                location = subprocess.run(
                    [
                        curl,
                        "-s",
                        "-X",
                        "POST",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{redirect_url}",
                        "-D",
                        "-",
                        f"{base}/v2/{repo}/blobs/uploads/",
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                url = next(
                    line.split(":", 1)[1].strip()
                    for line in location.splitlines()
                    if line.lower().startswith("location:")
                )
                if url.startswith("/"):
                    url = base + url
                sep = "&" if "?" in url else "?"
                subprocess.run(
                    [
                        curl,
                        "-s",
                        "-f",
                        "-o",
                        "/dev/null",
                        "-T",
                        str(module_file),
                        "-H",
                        "Content-Type: application/octet-stream",
                        f"{url}{sep}digest={blob.digest}",
                    ],
                    check=True,
                )

            def curl_verified(url: str) -> None:
                # curl | sha256sum, without a shell.
                fetch = subprocess.Popen([curl, "-s", "-f", url], stdout=subprocess.PIPE)
                subprocess.run(["sha256sum"], stdin=fetch.stdout, check=True, capture_output=True)
                if fetch.stdout is not None:
                    fetch.stdout.close()
                if fetch.wait() != 0:
                    raise RuntimeError("curl failed")

            for i in range(args.repeats):
                samples["push-blob"].append(
                    _time(partial(client.push_blob, f"bench/push-{i}", blob, module))
                )
                samples["curl-push-blob"].append(_time(partial(curl_push, f"bench/curl-{i}")))
                samples["push-package"].append(
                    _time(
                        partial(
                            push_package,
                            client,
                            Reference.parse(f"{server.address}/bench/pkg-{i}:1"),
                            built,
                        )
                    )
                )
                samples["pull-blob"].append(
                    _time(lambda: client.fetch_blob("bench/pkg", blob, _Discard(), max_bytes=size))
                )
                samples["curl-pull-blob"].append(
                    _time(
                        lambda: subprocess.run(
                            [curl, "-s", "-f", "-o", "/dev/null", blob_url], check=True
                        )
                    )
                )
                samples["read-blob"].append(
                    _time(lambda: client.read_blob("bench/pkg", blob, max_bytes=size))
                )
                samples["pull-package"].append(
                    _time(lambda: fetch_package(pinned, client=client, limits=limits))
                )
                samples["curl-verified"].append(_time(lambda: curl_verified(blob_url)))
            client.close()
        finally:
            server.stop()
    mb = size / 1e6
    rows: dict[str, dict[str, float]] = {}
    for name, times in samples.items():
        rows[name] = {
            "median_s": statistics.median(times),
            "best_s": min(times),
            "median_mb_s": mb / statistics.median(times),
            "best_mb_s": mb / min(times),
        }
    ratios = {
        "push-blob / curl": rows["push-blob"]["median_mb_s"]
        / rows["curl-push-blob"]["median_mb_s"],
        "push-package / curl": rows["push-package"]["median_mb_s"]
        / rows["curl-push-blob"]["median_mb_s"],
        "pull-blob / curl": rows["pull-blob"]["median_mb_s"]
        / rows["curl-pull-blob"]["median_mb_s"],
        "read-blob / curl": rows["read-blob"]["median_mb_s"]
        / rows["curl-pull-blob"]["median_mb_s"],
        "pull-package / curl": rows["pull-package"]["median_mb_s"]
        / rows["curl-pull-blob"]["median_mb_s"],
        "pull-package / curl|sha256sum": rows["pull-package"]["median_mb_s"]
        / rows["curl-verified"]["median_mb_s"],
    }
    print(f"{args.size_mb} MB module, {args.repeats} interleaved rounds, registry on loopback")
    print(f"{'case':<16} {'median MB/s':>12} {'best MB/s':>10} {'median ms':>10}")
    for name, row in rows.items():
        print(
            f"{name:<16} {row['median_mb_s']:>12.0f} {row['best_mb_s']:>10.0f} "
            f"{row['median_s'] * 1000:>10.1f}"
        )
    print()
    for name, ratio in ratios.items():
        print(f"{name:<32} {ratio:5.2f}x")
    result: dict[str, Any] = {
        "benchmark": "registry",
        "command": "python benchmarks/bench_registry.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "size_mb": args.size_mb,
        "repeats": args.repeats,
        "results": rows,
        "ratios_from_medians": ratios,
        "goal": "donjon >= 0.8x curl",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
