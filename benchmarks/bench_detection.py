"""Detection metrics benchmark: Arena vs pycocotools (DigestPath scale) and LUNA16-scale CPM.

Run: python benchmarks/bench_detection.py [--repeats 3] [--seed 0]

1. DigestPath scale (synthetic, seeded): 687 images (104 positive with 14,589 GT boxes in all, ~140
   per positive image; 583 negative), ~45,000 scored box predictions (jittered copies of most GT boxes
   + random false positives on every image). Arena's full ``score_detection`` at IoU 0.5 (matching,
   FROC + CPM, normal-region FROC, AP by four methods, P/R/F1) vs pycocotools ``COCOeval`` at IoU 0.5
   (``evaluate()`` + ``accumulate()``, maxDets raised above the largest per-image count so no detection
   is dropped), with both AP values (COCO 101-point) printed side by side.
2. LUNA16 scale: the real LUNA16 annotations (../shared/data/luna16/annotations.csv, 1,117 nodules /
   568 scans; Setio et al. 2017, CC BY 4.0) with simulated candidates (50 per scan: a jittered candidate
   inside most nodules + random false positives): Arena's CPM (LUNA16 matching, both read-outs) vs a
   direct port of the LUNA16 evaluation script's per-nodule Python loops.
Times are the median of ``--repeats`` runs, measured in this one process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from arena.metrics.detection import LUNA16_FP_RATES, read_detections, score_detection

SHARED = Path(os.environ.get("ARENA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def digestpath_like(seed: int = 0, n_pos: int = 104, n_neg: int = 583, n_gt: int = 14589,
                    n_pred: int = 45000, size: float = 2000.0) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """Synthetic DigestPath-sized box data: (predictions, ground truth, image ids)."""
    rng = np.random.default_rng(seed)
    images = list(range(n_pos + n_neg))
    per = rng.multinomial(n_gt - n_pos, np.full(n_pos, 1 / n_pos)) + 1
    gimg = np.repeat(np.arange(n_pos), per)
    w = rng.uniform(20, 60, n_gt)
    h = w * rng.uniform(0.8, 1.25, n_gt)
    x0 = rng.uniform(0, size - 60, n_gt)
    y0 = rng.uniform(0, size - 60, n_gt)
    gt = pd.DataFrame({"image": gimg, "x0": x0, "y0": y0, "x1": x0 + w, "y1": y0 + h})
    det = rng.random(n_gt) < 0.8
    k = int(det.sum())
    jit = rng.normal(0, 0.12, (k, 4)) * np.column_stack([w[det], h[det], w[det], h[det]])
    tp = pd.DataFrame({"image": gimg[det], "x0": x0[det] + jit[:, 0], "y0": y0[det] + jit[:, 1],
                       "x1": x0[det] + w[det] + jit[:, 2], "y1": y0[det] + h[det] + jit[:, 3],
                       "probability": rng.beta(5, 2, k)})
    tp["x1"] = np.maximum(tp["x1"], tp["x0"] + 1)
    tp["y1"] = np.maximum(tp["y1"], tp["y0"] + 1)
    nf = n_pred - k
    fw = rng.uniform(20, 60, nf)
    fx, fy = rng.uniform(0, size - 60, nf), rng.uniform(0, size - 60, nf)
    fp = pd.DataFrame({"image": rng.integers(0, len(images), nf), "x0": fx, "y0": fy, "x1": fx + fw,
                       "y1": fy + fw * rng.uniform(0.8, 1.25, nf), "probability": rng.beta(2, 5, nf)})
    pred = pd.concat([tp, fp], ignore_index=True).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return pred, gt, images


def coco_ap50(pred: pd.DataFrame, gt: pd.DataFrame, images: list[int]) -> tuple[float, float]:
    """pycocotools AP@0.5 (101-point) and the seconds of evaluate()+accumulate()."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(df: pd.DataFrame) -> np.ndarray:
        return np.column_stack([df.x0, df.y0, df.x1 - df.x0, df.y1 - df.y0])

    gb = xywh(gt)
    anns = [{"id": i + 1, "image_id": int(im), "category_id": 1, "bbox": b.tolist(), "area": float(b[2] * b[3]),
             "iscrowd": 0} for i, (im, b) in enumerate(zip(gt.image, gb))]
    ds = {"images": [{"id": int(i)} for i in images], "annotations": anns, "categories": [{"id": 1}]}
    pb = xywh(pred)
    dets = [{"image_id": int(im), "category_id": 1, "bbox": b.tolist(), "score": float(s)}
            for im, b, s in zip(pred.image, pb, pred.probability)]
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = ds
        cg.createIndex()
        cd = cg.loadRes(dets) if dets else COCO()
        ev = COCOeval(cg, cd, "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.params.maxDets = [int(pred.groupby("image").size().max()) + 1 if len(pred) else 1]
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.imgIds = [int(i) for i in images]
        t = time.perf_counter()
        ev.evaluate()
        ev.accumulate()
        dt = time.perf_counter() - t
    prec = ev.eval["precision"][0, :, 0, 0, -1]
    ap = float(np.mean(prec[prec > -1])) if (prec > -1).any() else float("nan")
    return ap, dt


def luna16_like(seed: int = 0, per_scan: int = 50) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Real LUNA16 annotations + simulated candidates (predictions, ground truth, series ids)."""
    rng = np.random.default_rng(seed)
    gt = read_detections(SHARED / "luna16" / "annotations.csv")
    images = list(pd.unique(gt.image))
    hit = rng.random(len(gt)) < 0.85
    g = gt[hit]
    u = rng.normal(size=(len(g), 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    rad = g.radius.to_numpy() * rng.uniform(0, 0.8, len(g))
    tp = pd.DataFrame({"image": g.image.to_numpy(), "x": g.x.to_numpy() + u[:, 0] * rad,
                       "y": g.y.to_numpy() + u[:, 1] * rad, "z": g.z.to_numpy() + u[:, 2] * rad,
                       "probability": rng.beta(5, 2, len(g))})
    ntp = tp.groupby("image").size().reindex(images, fill_value=0).to_numpy()
    nfp = np.maximum(per_scan - ntp, 0)
    fimg = np.repeat(np.asarray(images, dtype=object), nfp)
    centre = gt.groupby("image")[["x", "y", "z"]].mean().reindex(images).fillna(0.0).to_numpy()
    fc = np.repeat(centre, nfp, axis=0) + rng.uniform(-150, 150, (int(nfp.sum()), 3))
    fp = pd.DataFrame({"image": fimg, "x": fc[:, 0], "y": fc[:, 1], "z": fc[:, 2],
                       "probability": rng.beta(2, 5, len(fimg))})
    return pd.concat([tp, fp], ignore_index=True), gt, images


def luna16_script_cpm(pred: pd.DataFrame, gt: pd.DataFrame, images: list[str]) -> float:
    """The LUNA16 evaluation script's structure: per series, per nodule, a Python loop over candidates;
    then sklearn-style roc points, both read-outs averaged like Arena's ``cpm_nearest``."""
    cands = {s: list(zip(df.x, df.y, df.z, df.probability)) for s, df in pred.groupby("image")}
    nods = {s: list(zip(df.x, df.y, df.z, df.radius)) for s, df in gt.groupby("image")}
    gt_list, prob_list = [], []
    for s in images:
        c = cands.get(s, [])
        remaining = set(range(len(c)))
        for x, y, z, r in nods.get(s, []):
            best = None
            for k, (x2, y2, z2, p) in enumerate(c):
                if (x - x2) ** 2 + (y - y2) ** 2 + (z - z2) ** 2 < r * r:
                    best = p if best is None or p > best else best
                    remaining.discard(k)
            gt_list.append(1.0)
            prob_list.append(best if best is not None else math.nan)
        for k in remaining:
            gt_list.append(0.0)
            prob_list.append(c[k][3])
    y, p = np.asarray(gt_list), np.asarray(prob_list)
    n_les = int(y.sum())
    keep = ~np.isnan(p)
    y, p = y[keep], p[keep]
    order = np.argsort(p, kind="mergesort")[::-1]
    ps, ys = p[order], y[order]
    idx = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]
    tps = np.r_[0, np.cumsum(ys)[idx]]
    fps = np.r_[0, 1 + idx - tps[1:]]
    keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
    fps, tps = fps[keep], tps[keep]
    fx = fps / len(images)
    sens = tps / n_les
    out = []
    for f in LUNA16_FP_RATES:
        best, prior = 0.0, fx.max()
        for a, b in zip(fx, sens):
            if abs(a - f) < prior:
                best, prior = b, abs(a - f)
        out.append(best)
    return float(np.mean(out))


def median_time(fn, repeats: int) -> tuple[float, object]:
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    pred, gt, images = digestpath_like(args.seed)
    npos = gt.image.nunique()
    print(f"DigestPath scale: {len(images)} images ({npos} positive, {len(images) - npos} negative), "
          f"{len(gt)} GT boxes, {len(pred)} predictions, IoU >= 0.5")
    t_arena, res = median_time(lambda: score_detection(pred, gt, criterion="iou", threshold=0.5, images=images,
                                                      ap_method="coco101"), args.repeats)
    coco_runs = [coco_ap50(pred, gt, images) for _ in range(args.repeats)]
    t_coco = statistics.median(t for _, t in coco_runs)
    ap_coco = coco_runs[0][0]
    print(f"{'what':52} {'median s':>10}")
    print(f"{'Arena score_detection (match+FROC+AP+P/R/F1)':52} {t_arena:10.3f}")
    print(f"{'pycocotools COCOeval evaluate+accumulate @0.5':52} {t_coco:10.3f}")
    print(f"ratio pycocotools/Arena: {t_coco / t_arena:.1f}x")
    print(f"AP@0.5 COCO 101-point: Arena {res['ap']:.12f}  pycocotools {ap_coco:.12f}  "
          f"|diff| {abs(res['ap'] - ap_coco):.2e}")
    print(f"Arena all-point AP {res['average_precision']['all-point']:.6f}, CPM (interp) "
          f"{res['froc']['cpm_interpolated']:.4f}, normal-region FROC {res['normal_region_froc']['score']:.4f}")

    lp, lg, limg = luna16_like(args.seed)
    print(f"\nLUNA16 scale: {len(limg)} scans, {len(lg)} nodules (real annotations), {len(lp)} simulated candidates")
    t_luna, lres = median_time(lambda: score_detection(lp, lg, criterion="inside-radius", matching="luna16",
                                                       images=limg), args.repeats)
    t_ref, ref = median_time(lambda: luna16_script_cpm(lp, lg, limg), args.repeats)
    print(f"{'what':52} {'median s':>10}")
    print(f"{'Arena score_detection (LUNA16 matching, CPM)':52} {t_luna:10.3f}")
    print(f"{'LUNA16 script-style loops (CPM, nearest)':52} {t_ref:10.3f}")
    print(f"ratio script/Arena: {t_ref / t_luna:.1f}x")
    print(f"CPM nearest: Arena {lres['froc']['cpm_nearest']:.12f}  script-style {ref:.12f}; "
          f"CPM interpolated (Arena) {lres['froc']['cpm_interpolated']:.6f}")


if __name__ == "__main__":
    main()
