"""Per-case sandbox overhead: a sandboxed container that does nothing, vs. the same Python process on the host.

Run: python benchmarks/sandbox_overhead.py [--runs 10]
Prints the median wall time of: host `python3 -c pass`, Arena's run_sandboxed() of the same command
(create + start + wait + logs + remove, all limits on), and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from arena.images.base import BASE_TAG, build_base_image
from arena.images.docker_client import docker_client
from arena.runner.sandbox import SandboxLimits, run_sandboxed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    client = docker_client()
    build_base_image(log=lambda s: None)
    host, sandboxed = [], []
    with tempfile.TemporaryDirectory() as d:
        inp, out = Path(d) / "in", Path(d) / "out"
        inp.mkdir()
        out.mkdir()
        out.chmod(0o777)
        mounts = {"/input": (str(inp), "ro"), "/output": (str(out), "rw")}
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run(["python3", "-c", "pass"], check=True)
            host.append(time.perf_counter() - t)
            t = time.perf_counter()
            res = run_sandboxed(client, BASE_TAG, mounts=mounts, limits=SandboxLimits(time_s=60),
                                command=["python3", "-c", "pass"])
            sandboxed.append(time.perf_counter() - t)
            assert res.ok, res.error
    h, s = statistics.median(host), statistics.median(sandboxed)
    print(f"{'what':40} {'median s':>10}")
    print(f"{'host python3 -c pass':40} {h:10.3f}")
    print(f"{'run_sandboxed python3 -c pass':40} {s:10.3f}")
    print(f"{'overhead per case (sandboxed - host)':40} {s - h:10.3f}")
    print(f"ratio sandboxed/host: {s / h:.1f}x over {args.runs} runs")


if __name__ == "__main__":
    main()
