"""Image-level classification metrics over a test set (pure functions).

AUC is a *set-level* metric: it is defined over all cases of a phase together, never per case. Arena
stores, per case, the submitted probability and the truth (MetricValue rows ``probability`` and
``target`` of the case result) and computes the AUC per entry when the board is built
(:mod:`arena.leaderboard.set_level`). A failed case keeps its truth and gets the maximally wrong
probability (``1 - target``), so failing never helps an entry.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["roc_auc", "roc_curve_points"]


def roc_auc(targets: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores higher than a random
    negative, ties counting one half (Mann–Whitney U / (n₊ n₋); equals sklearn's ``roc_auc_score``).

    NaN when the targets are all positive or all negative. Raises ValueError on NaN scores, targets
    other than 0/1, or different lengths."""
    y = np.asarray(targets, dtype=float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.size != s.size:
        raise ValueError(f"targets and scores: {y.size} targets, {s.size} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("targets: expected 0 or 1 only")
    if not np.isfinite(s).all():
        raise ValueError("scores: must be finite")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks: ties count 1/2
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve_points(targets, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds) at each distinct score, descending, from
    (0, 0) at +inf."""
    y = np.asarray(targets, dtype=float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    thr = np.unique(s)[::-1]
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    tp = pos.size - np.searchsorted(pos, thr, side="left")
    fp = neg.size - np.searchsorted(neg, thr, side="left")
    tpr = np.r_[0.0, tp / max(pos.size, 1)]
    fpr = np.r_[0.0, fp / max(neg.size, 1)]
    return fpr, tpr, np.r_[np.inf, thr]
