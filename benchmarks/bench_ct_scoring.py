"""Scoring a 22-OAR CT test set end to end, excluding container time: 10 realistic-size cases.

Run: python benchmarks/bench_ct_scoring.py [--cases 10] [--size realistic] [--entries 2]

Setup (not timed): ``--cases`` synthetic head-and-neck CTs (arena.datasets.phantom, realistic = 512×512×100
at 1×1×3 mm, 22 organs) and, per entry (a simulated submission), a prediction per case written directly as
``.mha`` (the reference shifted by one voxel and with one organ dropped, different per entry) — exactly the
file a container would leave in /output. Then the platform's own per-case path, timed per stage:

  load      read the reference and the prediction files (SimpleITK)
  validate  the runner's output checks (size, spacing, origin, direction, pixel type, label values)
  metrics   score_case: Dice + HD95 (medpy convention) per organ with the task's empty policy
  rank      completing missing values and ranking the entries with the task's rule (pandas)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--size", default="realistic")
    ap.add_argument("--entries", type=int, default=2)
    args = ap.parse_args()

    from arena.datasets.phantom import write_case
    from arena.leaderboard.ranking import complete_scores, rank_by_spec, worst_values
    from arena.runner.evaluate import score_case
    from arena.runner.output_check import read_checked_output
    from arena.tasks.convert import diagonal_mm, read_geometry
    from arena.tasks.spec import load_spec

    spec = load_spec(REPO / "tasks" / "han-oar-22")
    labels = set(spec.labels)
    with tempfile.TemporaryDirectory(prefix="arena-bench-ct-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        keys = []
        for i in range(args.cases):
            key = f"case-{i:02d}"
            write_case(tmp / "cases", key, seed=2000 + i, size=args.size)
            ref = sitk.ReadImage(str(tmp / "cases" / key / "reference.mha"))
            arr = sitk.GetArrayFromImage(ref)
            for e in range(args.entries):
                pred = np.roll(arr, 1 + e, axis=2)
                pred[pred == 1 + (i + e) % 22] = 0  # one organ missed
                img = sitk.GetImageFromArray(pred)
                img.CopyInformation(ref)
                d = tmp / f"entry-{e}" / key
                d.mkdir(parents=True)
                sitk.WriteImage(img, str(d / "output.mha"), True)
            keys.append(key)
        g = read_geometry(tmp / "cases" / keys[0] / "image.mha")
        print(f"setup: {args.cases} cases of {'×'.join(map(str, g['size']))} voxels ({args.size}), "
              f"{args.entries} entries, {len(labels)} organs: {time.perf_counter() - t0:.1f} s (not counted)")

        stages = {"load": 0.0, "validate": 0.0, "metrics": 0.0, "rank": 0.0}
        rows = []
        diagonals = {}
        for e in range(args.entries):
            for key in keys:
                t = time.perf_counter()
                reference = sitk.ReadImage(str(tmp / "cases" / key / "reference.mha"))
                sitk.ReadImage(str(tmp / f"entry-{e}" / key / "output.mha"))  # the file as collected
                stages["load"] += time.perf_counter() - t
                t = time.perf_counter()
                prediction = read_checked_output(tmp / f"entry-{e}" / key / "output.mha", reference, labels)
                stages["validate"] += time.perf_counter() - t
                t = time.perf_counter()
                scores = score_case(spec, prediction, reference)
                stages["metrics"] += time.perf_counter() - t
                diagonals[key] = diagonal_mm({"size": reference.GetSize(), "spacing": reference.GetSpacing()})
                for lab, vals in scores.items():
                    for m, v in vals.items():
                        rows.append((e, key, lab, m, np.nan if v is None else float(v)))
        t = time.perf_counter()
        raw = pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"])
        full = complete_scores(raw, list(range(args.entries)), keys, list(spec.labels),
                               [m.name for m in spec.metrics], worst_values(spec, diagonal_mm=diagonals))
        board = rank_by_spec(full, spec, "test")
        stages["rank"] += time.perf_counter() - t
        n = args.cases * args.entries
        total = sum(stages.values())
        print(f"{'stage':10} {'total s':>9} {'per case s':>11}")
        for k, v in stages.items():
            print(f"{k:10} {v:9.2f} {v / n if k != 'rank' else v:11.3f}" + ("  (once)" if k == "rank" else ""))
        print(f"{'total':10} {total:9.2f}   ({n} case scorings, {len(raw)} metric values)")
        print(board[["entry", "rank", "dice", "hd95"]].to_string(index=False))


if __name__ == "__main__":
    main()
