"""Runner overhead per case: Arena's full path vs plain `docker run --rm`, in one run.

Run: python benchmarks/bench_runner_overhead.py [--runs 7] [--batch 10]

The image writes an all-background label map with the input's geometry (SimpleITK read + write: the
same work in every row). Rows (median wall seconds per case):
  docker run --rm            plain CLI run of the same image on the same /input (no limits)
  arena per-case             evaluate_case: lay out /input, tmpfs /output, sandboxed create/start/wait/remove,
                             collect without links, geometry/label check, score 22 labels
  arena batch (per case)     evaluate_batch over --batch cases in one container, divided by the case count
Overhead = arena − docker run. Targets (issue 4): ≤ 0.5 s per case, ≤ 0.05 s per case in batch mode.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from arena.datasets.phantom import write_case
from arena.images.base import BASE_TAG, build_base_image
from arena.images.build import build_image
from arena.images.docker_client import docker_client
from arena.runner.contract import prepare_case_input
from arena.runner.evaluate import CaseInput, evaluate_batch, evaluate_case, limits_for
from arena.tasks.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
WRITER = r"""
import os, sys, SimpleITK as sitk
def one(i, o):
    d = os.path.join(i, "images", "ct"); src = os.path.join(d, os.listdir(d)[0])
    img = sitk.ReadImage(src); out = sitk.Image(img.GetSize(), sitk.sitkUInt8); out.CopyInformation(img)
    os.makedirs(os.path.join(o, "images", "oar-segmentation"), exist_ok=True)
    sitk.WriteImage(out, os.path.join(o, "images", "oar-segmentation", "out.mha"))
if os.path.isdir("/input/images"):
    one("/input", "/output")
else:
    for c in sorted(os.listdir("/input")):
        one(os.path.join("/input", c), os.path.join("/output", c))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--batch", type=int, default=10)
    args = ap.parse_args()
    client = docker_client()
    build_base_image(log=lambda s: None)
    spec = load_spec(REPO / "tasks" / "han-oar-22")
    limits = limits_for(spec)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "img").mkdir()
        (d / "img" / "run.py").write_text(WRITER)
        (d / "img" / "Dockerfile").write_text('ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY run.py /run.py\n'
                                              'ENTRYPOINT ["python3", "/run.py"]\n')
        image = build_image(str(d / "img"), "arena-bench/writer:latest", BASE_TAG, log=lambda s: None)
        cases = []
        for i in range(max(args.batch, 1)):
            write_case(d / "cases", f"c{i:03d}", seed=i, size="small")
            cases.append(CaseInput(f"c{i:03d}", d / "cases" / f"c{i:03d}" / "image.mha",
                                   d / "cases" / f"c{i:03d}" / "reference.mha"))
        plain, arena = [], []
        for r in range(args.runs):
            c = cases[r % len(cases)]
            inp, out = d / f"plain-in-{r}", d / f"plain-out-{r}"
            prepare_case_input(spec, c.image, inp)
            out.mkdir()
            out.chmod(0o777)
            t = time.perf_counter()
            subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{inp}:/input:ro",
                            "-v", f"{out}:/output", image], check=True, capture_output=True)
            plain.append(time.perf_counter() - t)
            shutil.rmtree(inp)
            shutil.rmtree(out)
            t = time.perf_counter()
            o = evaluate_case(client, spec, image, c.key, c.image, c.reference, d / f"w{r}", d / f"r{r}", limits,
                              {"arena.bench": "1"})
            arena.append(time.perf_counter() - t)
            assert o.ok, o.error
        from dataclasses import replace

        batch = []
        for r in range(max(1, args.runs // 3)):
            t = time.perf_counter()
            outs = evaluate_batch(client, spec, image, cases, d / f"bw{r}", d / f"br{r}",
                                  replace(limits, time_s=limits.time_s * len(cases)), {"arena.bench": "1"})
            batch.append((time.perf_counter() - t) / len(cases))
            assert all(o.ok for o in outs), [o.error for o in outs if not o.ok]
        client.images.remove(image, force=True)
    p, a, b = statistics.median(plain), statistics.median(arena), statistics.median(batch)
    print(f"{'what (median per case)':44} {'seconds':>9}")
    print(f"{'docker run --rm (plain, same work)':44} {p:9.3f}")
    print(f"{'arena per-case (full path)':44} {a:9.3f}   overhead {a - p:+.3f} s, ratio {a / p:.2f}x")
    print(f"{f'arena batch of {len(cases)} (per case)':44} {b:9.3f}   vs docker run per case: {b / p:.2f}x")
    print(f"per-case overhead target ≤ 0.5 s: {'met' if a - p <= 0.5 else 'NOT met'}; "
          f"batch per-case cost {b:.3f} s (target ≤ 0.05 s of overhead)")


if __name__ == "__main__":
    main()
