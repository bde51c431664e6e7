"""Fit the cell detector's candidate scorer (logistic regression over detector.FEATURES) on synthetic
training tiles of the signet-ring-cells task and write weights.json next to this file.

Training tiles use seeds 100.. (the demo/test tiles use 5000..), DigestPath's positive share is raised
to one half so both classes are well represented. A candidate is positive when its circle's box has
IoU >= 0.3 with a ground-truth box (the task's hit criterion).

    python reference_models/cell_detector/train.py [--tiles 24] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import detector  # noqa: E402


def iou_max(box, gt: np.ndarray) -> float:
    if not len(gt):
        return 0.0
    x0 = np.maximum(box[0], gt[:, 0])
    y0 = np.maximum(box[1], gt[:, 1])
    x1 = np.minimum(box[2], gt[:, 2])
    y1 = np.minimum(box[3], gt[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) - inter
    return float((inter / union).max())


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> tuple[np.ndarray, float]:
    """IRLS (Newton) on standardised features; returns weights and bias on the raw features."""
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = np.c_[(X - mu) / sd, np.ones(len(X))]
    w = np.zeros(Z.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(Z @ w, -50, 50)))
        g = Z.T @ (p - y) + l2 * np.r_[w[:-1], 0]
        H = (Z * (p * (1 - p))[:, None]).T @ Z + l2 * np.eye(len(w))
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[:-1] / sd
    bias = float(w[-1] - (w[:-1] * mu / sd).sum())
    return weights, bias


def main(argv=None) -> int:
    from arena.datasets.pathology import signet_tile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=24)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", default=str(HERE / "weights.json"))
    a = ap.parse_args(argv)
    t0 = time.time()
    X, Y = [], []
    for i in range(a.tiles):
        t = signet_tile(100 + i, a.size, positive=i % 2 == 0)
        hs, best, angles, kept = detector.candidates(t.image)
        for x, y, r in kept:
            X.append(detector.candidate_features(hs, best, x, y, r, angles))
            Y.append(float(iou_max((x - r, y - r, x + r, y + r), t.boxes) >= 0.3))
    X, Y = np.array(X), np.array(Y)
    w, b = fit_logistic(X, Y)
    p = 1 / (1 + np.exp(-(X @ w + b)))
    acc = float(((p >= 0.5) == (Y == 1)).mean())
    doc = {"features": list(detector.FEATURES), "weights": [round(float(v), 6) for v in w], "bias": round(b, 6),
           "training": {"tiles": a.tiles, "size": a.size, "candidates": int(len(Y)), "positives": int(Y.sum()),
                        "accuracy_at_0.5": round(acc, 4), "seconds": round(time.time() - t0, 1),
                        "seeds": f"100..{100 + a.tiles - 1}"}}
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["training"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
