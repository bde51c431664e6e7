"""`arena metrics seg` end to end (process start, imports, reading both files, Dice + HD95 + the rest) beside
DeepMind's surface-distance doing Dice + HD95 in a process of its own, on a real PDDCA label map.

Run: python benchmarks/bench_cli_startup.py [--repeat 5]

The pair: PDDCA 0522c0002 (130×512×512, 9 OARs, ../shared/data/pddca) against a copy shifted by one voxel
in x. Each command runs --repeat times as a fresh process; the median wall time is printed, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CASE = SHARED / "pddca" / "0522c0002" / "labelmap_9oar.nii.gz"

SURFACE_DISTANCE = r"""
import sys
import numpy as np
np.Inf, np.NaN = np.inf, np.nan  # surface-distance 0.1 needs the NumPy 1 aliases
import SimpleITK as sitk
import surface_distance as sd
pred, ref = (sitk.ReadImage(p) for p in sys.argv[1:3])
spacing = ref.GetSpacing()[::-1]
p, r = sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(ref)
for lab in range(1, 10):
    a, b = r == lab, p == lab
    if not a.any() or not b.any():
        continue
    d = sd.compute_surface_distances(a, b, spacing)
    print(lab, sd.compute_dice_coefficient(a, b), sd.compute_robust_hausdorff(d, 95))
"""


def _median_wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not CASE.exists():
        sys.exit(f"needs {CASE} (the shared data beside the checkout)")
    with tempfile.TemporaryDirectory() as tmp:
        ref = sitk.ReadImage(str(CASE))
        arr = np.roll(sitk.GetArrayFromImage(ref), 1, axis=2)
        pred = sitk.GetImageFromArray(arr)
        pred.CopyInformation(ref)
        pred_path = Path(tmp) / "pred.nii.gz"
        sitk.WriteImage(pred, str(pred_path))
        arena = _median_wall([sys.executable, "-m", "arena", "metrics", "seg", str(pred_path), str(CASE)], args.repeat)
        sd = _median_wall([sys.executable, "-c", SURFACE_DISTANCE, str(pred_path), str(CASE)], args.repeat)
    size = "×".join(str(s) for s in ref.GetSize()[::-1])
    print(f"PDDCA 0522c0002 ({size}, 9 OARs), one-voxel shift; median of {args.repeat} fresh processes")
    print(f"{'command':<58} {'wall s':>8}")
    print(f"{'arena metrics seg (every metric, medpy convention)':<58} {arena:8.2f}")
    print(f"{'surface-distance: Dice + robust HD95 per label':<58} {sd:8.2f}")
    print(f"ratio arena / surface-distance: {arena / sd:.2f}")


if __name__ == "__main__":
    main()
