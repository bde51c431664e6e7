#!/usr/bin/env python3
"""Inference time per case and peak memory of each reference container on a realistic-size
han-oar-22 phantom (512 x 512 x 100 at 1 x 1 x 3 mm), CPU, through Arena's own runner
(`arena try` code path, the task's limits: 1 CPU, 4 GiB). Prints a table.

    python benchmarks/bench_reference_models.py [--size realistic] [--name anatomynet ...]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="realistic")
    ap.add_argument("--name", action="append")
    ap.add_argument("--memory-mb", type=int, default=None, help="override the task's memory limit")
    a = ap.parse_args()
    from arena import reference
    from arena.images.base import BASE_TAG, build_base_image
    from arena.runner.harness import try_image

    build_base_image(BASE_TAG, log=lambda m: None)
    names = a.name or ["anatomynet", "focusnetv2", "multiatlas"]
    built = reference.build(BASE_TAG, names, log=lambda m: None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "han-oar-22"
        shutil.copytree(REPO / "tasks" / "han-oar-22", task)
        if a.memory_mb:
            y = (task / "task.yaml").read_text().replace("memory_mb: 4096", f"memory_mb: {a.memory_mb}")
            (task / "task.yaml").write_text(y)
        for b in built:
            res = try_image(b.image_id, task, n_cases=1, size=a.size, log=lambda m: None)
            key, o = res.cases[0]
            dice = [s["dice"] for s in o.scores.values() if s.get("dice") is not None]
            rows.append((b.name, "ok" if o.ok else f"FAILED ({o.failure})", o.runtime_s,
                         o.stats.get("cpu_s"), o.stats.get("peak_memory_mb"),
                         sum(dice) / len(dice) if dice else float("nan")))
    print(f"\nreference containers on one '{a.size}' phantom, CPU (1 core, per-case mode incl. container start):")
    print(f"{'model':<12} {'status':<10} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'mean Dice':>10}")
    for r in rows:
        f = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        print(f"{r[0]:<12} {r[1]:<10} {f(r[2], 1):>8} {f(r[3], 1):>8} {f(r[4], 0):>8} {f(r[5], 3):>10}")


if __name__ == "__main__":
    main()
