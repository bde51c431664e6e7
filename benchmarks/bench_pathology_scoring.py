"""Scoring a DigestPath-scale signet-ring-cell test set end to end, container time excluded.

687 tiles of 2000 × 2000 px (104 positive with 14,589 cells, 583 negative), ground truth as the case
store holds it (one grand-challenge box JSON per tile) and, per team, one output JSON per tile as a
container would leave it (synthetic predictions: most cells found with jittered boxes, false positives
on every tile). Stages, as the runner and the board run them:

  load      read the references (arena.runner.evaluate.load_reference)
  validate  check every output JSON (arena.runner.output_check.read_checked_boxes)
  metrics   match per tile and build the per-case rows (the tile kinds' score_case: TP/FP counts + probabilities)
  rank      DigestPath's set-level metrics and mean rank over all teams (arena.leaderboard.set_level)

    python benchmarks/bench_pathology_scoring.py [--teams 10] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena.datasets.pathology import CELLS_PER_POSITIVE_TILE, boxes_to_gc, digestpath_scale  # noqa: E402
from arena.leaderboard.set_level import set_level_rank  # noqa: E402
from arena.runner.evaluate import CaseOutcome, check_case_output, load_reference, score_case  # noqa: E402
from arena.tasks.spec import load_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = 2000


def gt_boxes(rng, n: int) -> np.ndarray:
    c = rng.uniform(40, SIZE - 40, (n, 2))
    r = rng.uniform(14, 22, (n, 1))
    return np.c_[c - r, c + r]


def predictions(rng, gt: np.ndarray, skill: float) -> tuple[np.ndarray, np.ndarray]:
    found = gt[rng.random(len(gt)) < skill]
    tp = np.clip(found + rng.normal(0, 3, found.shape), 0, SIZE)
    tp[:, 2:] = np.maximum(tp[:, 2:], tp[:, :2] + 1)
    n_fp = rng.poisson(0.2 * (1.4 - skill))
    fp = gt_boxes(rng, n_fp)
    boxes = np.r_[tp, fp]
    prob = np.r_[rng.beta(5, 2, len(tp)), rng.beta(2, 4, n_fp)]
    return boxes, prob


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teams", type=int, default=10)
    ap.add_argument("--scale", type=float, default=1.0)
    a = ap.parse_args(argv)
    spec = load_spec(REPO / "tasks" / "signet-ring-cells")
    counts = digestpath_scale(a.scale)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-pathology-") as tmp:
        tmp = Path(tmp)
        # cells per positive tile: DigestPath's total spread over the positive tiles
        total = int(round(CELLS_PER_POSITIVE_TILE * counts["positive"]))
        per_tile = rng.multinomial(total, np.ones(counts["positive"]) / counts["positive"])
        keys, refs = [], {}
        for i in range(counts["tiles"]):
            key = f"tile-{i:04d}"
            n = int(per_tile[i]) if i < counts["positive"] else 0
            ref = boxes_to_gc(gt_boxes(rng, n))
            ref["image_size"] = [SIZE, SIZE]
            (tmp / "cases" / key).mkdir(parents=True)
            refs[key] = tmp / "cases" / key / "reference.json"
            refs[key].write_text(json.dumps(ref))
            keys.append(key)
        n_boxes = 0
        t_write = time.perf_counter()
        gts = {k: load_reference(spec, refs[k]).boxes[["x0", "y0", "x1", "y1"]].to_numpy() for k in keys}
        for team in range(a.teams):
            skill = 0.5 + 0.45 * team / max(a.teams - 1, 1)
            for k in keys:
                b, p = predictions(rng, gts[k], skill)
                d = tmp / "out" / f"team-{team}" / k
                d.mkdir(parents=True)
                (d / "signet-ring-cells.json").write_text(json.dumps(boxes_to_gc(b, p)))
                n_boxes += len(b)
        t_write = time.perf_counter() - t_write
        print(f"DigestPath-scale test set: {counts['tiles']} tiles ({counts['positive']} positive, "
              f"{counts['negative']} negative), {total} cells; {a.teams} teams, {n_boxes} output boxes "
              f"(written in {t_write:.1f} s, not timed below)")
        times = {}
        t0 = time.perf_counter()
        references = {k: load_reference(spec, refs[k]) for k in keys}
        times["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = {}
        for team in range(a.teams):
            for k in keys:
                o = CaseOutcome(ok=False)
                preds[team, k] = check_case_output(spec, tmp / "out" / f"team-{team}" / k, references[k], o)
                assert o.ok, o.error
        times["validate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = []
        for (team, k), pred in preds.items():
            for lab, vals in score_case(spec, pred, references[k]).items():
                rows += [(team, k, lab, m, v) for m, v in vals.items()]
        scores = pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"])
        times["metrics"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        board = set_level_rank(scores, spec, "test", list(range(a.teams)), keys,
                               {k: {"targets": len(references[k].boxes)} for k in keys})
        times["rank"] = time.perf_counter() - t0
    print(f"{'stage':<10}{'seconds':>9}   per tile × team")
    n = counts["tiles"] * a.teams
    for stage, s in times.items():
        per = s / (counts["tiles"] if stage == "load" else n)
        print(f"{stage:<10}{s:>9.3f}   {per * 1e3:.2f} ms")
    print(f"{'total':<10}{sum(times.values()):>9.3f}   ({len(scores)} stored rows)")
    print(board[["entry", "rank", "recall", "fp_score", "froc", "normal_fps"]].round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
