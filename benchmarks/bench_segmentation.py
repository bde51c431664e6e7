"""Segmentation metrics benchmark: Arena vs medpy 0.5.2 vs DeepMind surface-distance 0.1, one run.

Run: python benchmarks/bench_segmentation.py [--full] [--repeat 3]

Pairs: a real PDDCA label map (0522c0002, 130×512×512, 9 OARs; ../shared/data) against a perturbed
copy (shifts, erosion, dilation, a stray blob), and a synthetic 22-label 512×512×160 head-and-neck
phantom against a perturbed copy. Timed (median of --repeat, except medpy: once):
  read-once        reading both label maps from .nii.gz once (the floor any tool pays)
  arena medpy      Arena, medpy convention, every metric (Dice, Jaccard, volumes, HD, HD95, ASSD, NSD)
  arena all        Arena, all four conventions at once, every metric
  surface-dist.    surface-distance: compute_surface_distances + dice + robust HD95 per label
  medpy            medpy: dc + hd95 per label (PDDCA only unless --full: ~2.5 min per 9 labels)
Values are checked equal (max abs difference printed); Arena's peak traced memory is reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from arena.metrics import score_segmentation, score_segmentation_conventions

np.Inf, np.NaN = np.inf, np.nan  # surface-distance 0.1 needs the NumPy 1 aliases
import surface_distance  # noqa: E402
from medpy.metric.binary import dc, hd95  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def perturb(ref: np.ndarray, seed: int) -> np.ndarray:
    """Per label: a shift of 1–2 voxels, a one-voxel erosion or dilation; plus a stray 4×4×3 blob."""
    rng = np.random.default_rng(seed)
    pred = np.zeros_like(ref)
    for lab in [int(v) for v in np.unique(ref) if v]:
        m = ref == lab
        op = lab % 3
        if op == 0:
            m = np.roll(m, int(rng.integers(1, 3)), axis=int(rng.integers(0, 3)))
        elif op == 1:
            m = ndimage.binary_erosion(m)
        else:
            m = ndimage.binary_dilation(m) & (pred == 0)
        pred[m & (pred == 0)] = lab
    z, y, x = (int(rng.integers(5, n - 8)) for n in ref.shape)
    pred[z:z + 3, y:y + 4, x:x + 4] = int(np.unique(ref)[1])
    return pred


def timed(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def bench(name: str, ref_img: sitk.Image, pred: np.ndarray, repeat: int, run_medpy: bool) -> None:
    ref = sitk.GetArrayFromImage(ref_img)
    spacing = ref_img.GetSpacing()[::-1]
    labels = [int(v) for v in np.unique(ref) if v]
    with tempfile.TemporaryDirectory() as d:
        pred_img = sitk.GetImageFromArray(pred)
        pred_img.CopyInformation(ref_img)
        rp, pp = f"{d}/ref.nii.gz", f"{d}/pred.nii.gz"
        sitk.WriteImage(ref_img, rp)
        sitk.WriteImage(pred_img, pp)
        t_read, _ = timed(lambda: (sitk.GetArrayFromImage(sitk.ReadImage(rp)),
                                   sitk.GetArrayFromImage(sitk.ReadImage(pp))), repeat)
    t_medpy_conv, ours = timed(lambda: score_segmentation(pred, ref, spacing, labels, "medpy"), repeat)
    t_all, every = timed(lambda: score_segmentation_conventions(pred, ref, spacing, labels), repeat)
    tracemalloc.start()
    score_segmentation_conventions(pred, ref, spacing, labels)
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    def sd_run():
        out = {}
        for lab in labels:
            g, p = ref == lab, pred == lab
            sdist = surface_distance.compute_surface_distances(g, p, list(spacing))
            out[lab] = (surface_distance.compute_dice_coefficient(g, p), surface_distance.compute_robust_hausdorff(sdist, 95))
        return out

    t_sd, sd_vals = timed(sd_run, repeat)
    diff_sd = max(max(abs(every["deepmind"][lab]["hd95"] - v[1]), abs(every["deepmind"][lab]["dice"] - v[0]))
                  for lab, v in sd_vals.items())
    if run_medpy:
        t_mp, mp_vals = timed(lambda: {lab: (dc(pred == lab, ref == lab), hd95(pred == lab, ref == lab, spacing))
                                       for lab in labels}, 1)
        diff_mp = max(max(abs(ours[lab]["hd95"] - v[1]), abs(ours[lab]["dice"] - v[0])) for lab, v in mp_vals.items())
    print(f"\n{name}: {ref.shape} voxels, spacing {tuple(round(s, 3) for s in spacing)} mm, {len(labels)} labels")
    print(f"  {'what':42} {'seconds':>9} {'vs arena all':>13}")
    rows = [("read both label maps once (.nii.gz)", t_read), ("arena, medpy convention, all metrics", t_medpy_conv),
            ("arena, all 4 conventions, all metrics", t_all), ("surface-distance 0.1 (dice + robust HD95)", t_sd)]
    if run_medpy:
        rows.append(("medpy 0.5.2 (dc + hd95)", t_mp))
    for what, t in rows:
        print(f"  {what:42} {t:9.3f} {t / t_all:12.1f}x")
    line = f"  ratios: arena all vs surface-distance {t_sd / t_all:.1f}x faster"
    if run_medpy:
        line += f"; arena all vs medpy {t_mp / t_all:.0f}x; arena medpy-convention vs medpy {t_mp / t_medpy_conv:.0f}x"
    else:
        line += "; medpy skipped (--full runs it, minutes)"
    print(line)
    print(f"  identical values: max |Δ| vs surface-distance {diff_sd:.2e}"
          + (f", vs medpy {diff_mp:.2e}" if run_medpy else "") + f"; arena peak traced memory {peak_mb:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also run medpy on the 22-label phantom (minutes)")
    args = ap.parse_args()
    img = sitk.ReadImage(str(SHARED / "pddca" / "0522c0002" / "labelmap_9oar.nii.gz"))
    ref = sitk.GetArrayFromImage(img)
    bench("PDDCA 0522c0002 vs perturbed copy", img, perturb(ref, 0), args.repeat, run_medpy=True)
    from arena.datasets.phantom import generate_case

    _, lab_img = generate_case(7, "512x512x160")
    bench("phantom 22 OARs vs perturbed copy", lab_img, perturb(sitk.GetArrayFromImage(lab_img), 1), args.repeat,
          run_medpy=args.full)


if __name__ == "__main__":
    main()
