"""Leaderboard computation benchmark: 200 entries × 50 cases × 22 organs × 2 metrics, 1,000 bootstrap resamples.

Run: python benchmarks/bench_board.py [--entries 200] [--cases 50] [--organs 22] [--n 1000] [--naive 20]

Synthetic, seeded scores (Dice and HD95 per entry, case and organ, StructSeg importance weights; a few
values NaN as "excluded" and 1% of the rows missing as failed cases). Each measurement runs in a fresh
Python process ("cold": nothing cached, first call of every function); the time of ``import pandas,
scipy, arena.leaderboard`` is reported separately. Pipelines (pure functions, long table in):

- ``structseg``: complete_scores (worst values for missing rows) → structseg_rank (per-metric weighted
  means, metric ranks, mean rank) → bootstrap_ranks(method="mean-of-metric-ranks", n) with Kendall tau.
- ``aggregate``: complete_scores → aggregate_then_rank (Dice, weighted) → bootstrap_ranks(primary="dice").
- ``rank-then-aggregate``: complete_scores → rank_then_aggregate → bootstrap_ranks(method=...).

The naive reference does the StructSeg bootstrap with pandas: per resample, the resampled long table is
built (concat of each drawn case's rows), organ means via groupby, weighted means, per-metric ranks and
the mean rank (pandas ``rank``), and Kendall's tau with scipy; it is timed on ``--naive`` resamples and
extrapolated to ``n``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SETUP = """
import time
t0 = time.perf_counter()
import numpy as np, pandas as pd, scipy.stats
from arena.leaderboard.ranking import (aggregate_then_rank, complete_scores, rank_then_aggregate, structseg_rank)
from arena.leaderboard.statistics import bootstrap_ranks
t_import = time.perf_counter() - t0

WEIGHTS22 = [100, 100, 100, 50, 50, 80, 80, 50, 80, 80, 80, 50, 50, 70, 70, 70, 70, 60, 60, 100, 100, 100]

def make_scores(E, C, L, seed=0):
    rng = np.random.default_rng(seed)
    e, c, l = np.meshgrid(np.arange(E), np.arange(C), np.arange(1, L + 1), indexing="ij")
    skill = rng.normal(0, 0.03, E)
    organ = rng.uniform(0.55, 0.92, L)
    dice = np.clip(organ[l - 1] + skill[e] + rng.normal(0, 0.06, e.shape), 0, 1)
    hd = np.clip(4 - 40 * skill[e] + rng.gamma(2.0, 1.0, e.shape), 0.2, None)
    excl = rng.random(e.shape) < 0.002
    dice[excl] = np.nan; hd[excl] = np.nan
    cases = np.array([f"case{i:03d}" for i in range(C)])
    parts = [pd.DataFrame({"entry": e.ravel(), "case": cases[c.ravel()], "label": l.ravel(), "metric": m,
                           "value": v.ravel()}) for m, v in (("dice", dice), ("hd95", hd))]
    df = pd.concat(parts, ignore_index=True)
    keep = rng.random(len(df)) >= 0.01  # 1% failed/missing rows
    return df[keep].reset_index(drop=True), list(range(E)), list(cases)

weights = {i + 1: float(WEIGHTS22[i % 22]) for i in range(L)}
scores, entries, cases = make_scores(E, C, L)
worst = {"dice": 0.0, "hd95": 373.0}
"""

PIPELINES = {
    "structseg": """
s0 = time.perf_counter(); full = complete_scores(scores, entries, cases, worst=worst)
s1 = time.perf_counter(); board = structseg_rank(full, weights)
s2 = time.perf_counter(); boot = bootstrap_ranks(full, N, 0, method="mean-of-metric-ranks", label_weights=weights)
s3 = time.perf_counter()
""",
    "aggregate": """
s0 = time.perf_counter(); full = complete_scores(scores, entries, cases, worst=worst)
s1 = time.perf_counter(); board = aggregate_then_rank(full, "dice", {"dice": True, "hd95": False}, weights)
s2 = time.perf_counter(); boot = bootstrap_ranks(full, N, 0, primary="dice", label_weights=weights)
s3 = time.perf_counter()
""",
    "rank-then-aggregate": """
s0 = time.perf_counter(); full = complete_scores(scores, entries, cases, worst=worst)
s1 = time.perf_counter(); board = rank_then_aggregate(full)
s2 = time.perf_counter(); boot = bootstrap_ranks(full, N, 0, method="rank-then-aggregate")
s3 = time.perf_counter()
""",
}

NAIVE = """
full = complete_scores(scores, entries, cases, worst=worst)
def naive_board(df):
    organ = df.dropna(subset=["value"]).groupby(["metric", "entry", "label"])["value"].mean().reset_index()
    organ["w"] = organ["label"].map(weights)
    organ["wv"] = organ["value"] * organ["w"]
    g = organ.groupby(["metric", "entry"])[["wv", "w"]].sum()
    per = (g["wv"] / g["w"]).unstack("metric")
    r = pd.DataFrame({"dice": per["dice"].rank(method="min", ascending=False),
                      "hd95": per["hd95"].rank(method="min", ascending=True)})
    return r.mean(axis=1).rank(method="min")
by_case = {c: g for c, g in full.groupby("case")}
ref = naive_board(full)
rng = np.random.default_rng(0)
t = time.perf_counter()
for b in range(NAIVE_N):
    draw = rng.integers(0, len(cases), len(cases))
    res = pd.concat([by_case[cases[i]] for i in draw], ignore_index=True)
    rk = naive_board(res)
    scipy.stats.kendalltau(ref.to_numpy(), rk.reindex(ref.index).to_numpy())
per_resample = (time.perf_counter() - t) / NAIVE_N
"""


def run_child(code: str, params: dict) -> dict:
    head = "".join(f"{k} = {v!r}\n" for k, v in params.items())
    prog = head + textwrap.dedent(SETUP) + "\nt1 = time.perf_counter()\n" + textwrap.dedent(code) + \
        "\nt_run = time.perf_counter() - t1\nimport json\nprint('RESULT ' + json.dumps({'import': t_import, " \
        "'run': t_run, 'tau': float(boot.attrs.get('kendall_tau', float('nan'))) if 'boot' in dir() else None, " \
        "'naive': per_resample if 'per_resample' in dir() else None, 'rows': len(scores), " \
        "'steps': [s1 - s0, s2 - s1, s3 - s2] if 's3' in dir() else None}))\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True, env=env)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200)
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--organs", type=int, default=22)
    ap.add_argument("--n", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--naive", type=int, default=20, help="resamples timed for the naive pandas reference (0: skip)")
    args = ap.parse_args()
    params = {"E": args.entries, "C": args.cases, "L": args.organs, "N": args.n, "NAIVE_N": args.naive}
    print(f"board: {args.entries} entries x {args.cases} cases x {args.organs} organs x 2 metrics "
          f"({args.entries * args.cases * args.organs * 2:,} score rows), {args.n} bootstrap resamples")
    results = {}
    for name, code in PIPELINES.items():
        t = time.perf_counter()
        r = run_child(code, params)
        results[name] = r
        c, b, bs = r["steps"]
        print(f"  {name:<20} cold {r['run']:6.3f} s  [complete_scores {c:.3f} + board {b:.3f} + bootstrap {bs:.3f}]"
              f"  (+ imports {r['import']:.2f} s; whole process {time.perf_counter() - t:.2f} s)"
              f"  Kendall tau {r['tau']:.4f}")
    if args.naive:
        r = run_child(NAIVE, params)
        naive_total = r["naive"] * args.n
        print(f"  naive pandas (StructSeg bootstrap): {r['naive'] * 1000:.1f} ms per resample -> "
              f"{naive_total:.1f} s for {args.n} (extrapolated from {args.naive})")
        print(f"  speed-up of the vectorised StructSeg board + bootstrap: "
              f"{naive_total / results['structseg']['run']:.0f}x")


if __name__ == "__main__":
    main()
