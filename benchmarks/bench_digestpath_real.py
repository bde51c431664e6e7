#!/usr/bin/env python3
"""Real DigestPath tiles: time to load signet-ring-cells' real phases into a fresh case store (index check,
JPEG → tiled TIFF conversion, database rows), time to load them again (unchanged sources are kept), and the
cell detector's time per tile on the converted tiles (reading the TIFF, working resolution, candidates,
scoring; in-process, no container start). Reads the tiles from the shared data folder; writes only to a
temporary ARENA_HOME. Prints wall and CPU seconds (this process): on a shared machine the CPU time is the
steadier number.

    python benchmarks/bench_digestpath_real.py [--detector-tiles 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TASK = REPO / "tasks" / "signet-ring-cells"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector-tiles", type=int, default=4, help="tiles to time the cell detector on")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="arena-bench-digestpath-") as home:
        os.environ["ARENA_HOME"] = home
        os.environ.pop("ARENA_DATABASE_URL", None)
        from arena.config import load_settings
        from arena.db import session_scope, upgrade
        from arena.tasks.store import load_real_cases, upsert_task

        settings = load_settings()
        settings.ensure_dirs()
        upgrade(settings.database_url)
        timings = {}
        for run in ("first load", "reload"):
            t0, c0 = time.perf_counter(), time.process_time()
            with session_scope(settings.database_url) as s:
                task = upsert_task(s, TASK)
                cases = load_real_cases(s, settings, task, TASK)
                n = len(cases)
                paths = [(c.key, c.image_path) for c in cases if c.meta.get("positive")]
            timings[run] = (time.perf_counter() - t0, time.process_time() - c0)
        sys.path.insert(0, str(REPO / "reference_models" / "cell_detector"))
        import detector

        det = []
        for key, path in paths[: a.detector_tiles]:
            t0, c0 = time.perf_counter(), time.process_time()
            rgb, mpp, desc = detector.read_tile(path)
            t1 = time.perf_counter()
            boxes = detector.detect(rgb, mpp=mpp, model=detector.model_for(desc))
            det.append((key, rgb.shape[1], rgb.shape[0], t1 - t0, time.perf_counter() - t1,
                        time.process_time() - c0, len(boxes)))
    print(f"\nsignet-ring-cells real phases ({n} DigestPath tiles, about 2000 x 2000 px):")
    for run, (wall, cpu) in timings.items():
        print(f"  {run:<11} wall {wall:7.1f} s ({wall / n * 1000:6.0f} ms per tile), CPU {cpu:6.1f} s "
              f"({cpu / n * 1000:5.0f} ms per tile)")
    print("\ncell detector per tile (in-process, one process):")
    print(f"  {'case':<34} {'size':>11} {'read s':>7} {'detect s':>9} {'CPU s':>6} {'boxes':>6}")
    for key, w, h, r, d, cpu, nb in det:
        print(f"  {key:<34} {f'{w}x{h}':>11} {r:7.2f} {d:9.2f} {cpu:6.2f} {nb:6d}")
    if det:
        print(f"  mean: wall {sum(x[3] + x[4] for x in det) / len(det):.2f} s, CPU "
              f"{sum(x[5] for x in det) / len(det):.2f} s per tile")


if __name__ == "__main__":
    main()
