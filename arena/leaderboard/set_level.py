"""Boards whose metrics are defined over a whole test set, not per case (pure pandas/numpy).

DigestPath 2019 scores detection over all tiles of a phase together, and an image-level AUC only
exists over a set of images. The runner therefore stores, per case, what these metrics need (as
ordinary MetricValue rows of the task's label, see ``arena.runner.evaluate.score_tile_case``):

=================  ==================================================================================
row (metric)       meaning
=================  ==================================================================================
``targets``        ground-truth boxes in the tile (detection)
``negative``       1 when the tile has no target (a "normal region" tile)
``tp``, ``fp``     matched / unmatched boxes (IoU criterion of the task, greedy, one-to-one)
``tp#k``, ``fp#k`` the probability of the k-th true / false positive box
``dice``           per-tile lesion Dice (segmentation)
``probability``    the submitted image-level probability (a failed case: ``1 - target``)
``target``         the image-level truth (1 = malignant)
=================  ==================================================================================

and the board computes per entry, over the phase's cases:

- ``recall``: the highest recall over the operating points (distinct probability thresholds, boxes of
  all tiles pooled) whose precision is *strictly* above ``detection.min_precision`` (0.2); 0 if none.
- ``normal_fps``: boxes on negative tiles (every one is a false positive), all of them, whatever their
  probability; ``fp_score = max(fp_score_max - normal_fps, 0)`` (DigestPath: max(100 − FP, 0)).
- ``froc``: the normal-region FROC — sensitivity (over all targets) at ``normal_fp_rates`` (1, 2, 4, 8,
  16, 32) FPs per negative tile, counting only FPs on negative tiles, read by linear interpolation on
  the FROC curve, averaged (NaN without negative tiles).
- ``auc``: ROC AUC of ``probability`` against ``target`` over the cases (ties count one half).
- per-case metrics (``dice``): the mean over cases; a case without a row counts as the worst value (0).

Ranking: DigestPath's rule — each metric ranked separately (ties share the lower rank), final rank =
mean of the ranks (:func:`arena.leaderboard.ranking.mean_of_metric_ranks`). A case an entry failed or
never ran is not dropped: it has no boxes (all its targets missed) or the worst probability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from arena.leaderboard.ranking import HIGHER_IS_BETTER_METRICS, board_arguments, mean_of_metric_ranks

if TYPE_CHECKING:
    from arena.tasks.spec import TaskSpec

__all__ = ["detection_metrics", "entry_metrics", "set_level_rank"]


def detection_metrics(tp: np.ndarray, fp: np.ndarray, fp_normal: np.ndarray, n_targets: int, n_negative: int, *,
                      min_precision: float = 0.2, normal_fp_rates: Sequence[float] = (1, 2, 4, 8, 16, 32),
                      fp_score_max: float = 100.0) -> dict[str, float]:
    """DigestPath's three numbers from pooled box probabilities: ``tp`` (true positives), ``fp`` (all false
    positives), ``fp_normal`` (false positives on negative tiles, a subset of ``fp``), ``n_targets`` (all
    GT boxes) and ``n_negative`` (negative tiles)."""
    from arena.metrics.detection import froc_curve_from_scores, pr_curve_from_scores, sensitivity_at

    tp, fp, fp_normal = (np.asarray(a, dtype=float).ravel() for a in (tp, fp, fp_normal))
    if n_targets:
        pr = pr_curve_from_scores(np.r_[tp, fp], np.r_[np.ones(tp.size, bool), np.zeros(fp.size, bool)], n_targets)
        ok = pr.precision > min_precision
        recall = float(pr.recall[ok].max()) if ok.any() else 0.0
    else:
        recall = float("nan")
    normal_fps = float(fp_normal.size)
    if n_negative and n_targets:
        hits = np.r_[tp, np.full(max(n_targets - tp.size, 0), np.nan)]
        curve = froc_curve_from_scores(hits, fp_normal, n_negative)
        froc = float(np.mean(sensitivity_at(curve, normal_fp_rates, readout="interpolated")))
    else:
        froc = float("nan")
    return {"recall": recall, "normal_fps": normal_fps, "fp_score": max(fp_score_max - normal_fps, 0.0),
            "froc": froc, "tp": float(tp.size), "fp": float(fp.size), "targets": float(n_targets)}


def _per_detection(scores: pd.DataFrame) -> pd.DataFrame:
    m = scores["metric"].astype(str)
    kind = m.str[:3]
    return scores.assign(kind=kind)[kind.isin(["tp#", "fp#"])]


def entry_metrics(scores: pd.DataFrame, spec: TaskSpec, phase: str | None, entries: Sequence[Any],
                  cases: Sequence[Any], case_info: Mapping[Any, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per entry with the phase's set-level (and mean per-case) metrics; ``cases`` = the phase's
    cases; ``case_info[case]`` may give ``targets`` (GT boxes) and ``target`` (image-level truth) for cases
    that no entry has a row for (read from the stored rows otherwise)."""
    a = board_arguments(spec, phase)
    metrics = a["metrics"] if a["method"] != "digestpath-2019" else ["recall", "fp_score", "froc"]
    case_info = dict(case_info or {})
    cases = list(cases)
    s = scores[scores["case"].isin(cases)]
    out = []
    if spec.kind == "detection":
        summary = s[s["metric"].isin(["targets"])]
        targets = {c: float(case_info.get(c, {}).get("targets", np.nan)) for c in cases}
        stored = summary.groupby("case")["value"].max().to_dict()
        for c in cases:
            if np.isnan(targets[c]) and c in stored:
                targets[c] = stored[c]
        unknown = [c for c in cases if np.isnan(targets[c])]
        if unknown:
            raise ValueError(f"cases {unknown[:5]}: number of targets unknown (no case info, no stored row)")
        negative = {c for c in cases if targets[c] == 0}
        n_targets, n_negative = int(sum(targets.values())), len(negative)
        det = _per_detection(s)
        d = spec.detection
        for e in entries:
            de = det[det["entry"] == e]
            tp = de.loc[de["kind"] == "tp#", "value"].to_numpy(float)
            fpd = de[de["kind"] == "fp#"]
            fp = fpd["value"].to_numpy(float)
            fp_normal = fpd.loc[fpd["case"].isin(negative), "value"].to_numpy(float)
            row = detection_metrics(tp, fp, fp_normal, n_targets, n_negative, min_precision=d.min_precision,
                                    normal_fp_rates=d.normal_fp_rates, fp_score_max=d.fp_score_max)
            row.update(entry=e, cases=float(s.loc[(s["entry"] == e) & (s["metric"] == "targets"), "case"].nunique()))
            out.append(row)
        return pd.DataFrame(out)
    truth: dict[Any, float] = {}
    t_rows = s[s["metric"] == "target"]
    truth.update(t_rows.groupby("case")["value"].first().to_dict())
    for c in cases:
        if c not in truth and "target" in case_info.get(c, {}):
            truth[c] = float(case_info[c]["target"])
    worst = dict(spec.ranking.worst)
    for e in entries:
        se = s[s["entry"] == e]
        row: dict[str, Any] = {"entry": e, "cases": float(se["case"].nunique())}
        for m in metrics:
            if m == "auc":
                from arena.metrics.classification import roc_auc

                probs = se[se["metric"] == "probability"].groupby("case")["value"].first().to_dict()
                known = [c for c in cases if c in truth]
                if len(known) < len(cases):
                    missing = [c for c in cases if c not in truth][:5]
                    raise ValueError(f"cases {missing}: image-level truth unknown (no case info, no stored row)")
                y = np.array([truth[c] for c in cases])
                p = np.array([probs.get(c, 1.0 - truth[c]) for c in cases], dtype=float)
                p = np.where(np.isnan(p), 1.0 - y, p)
                row["auc"] = roc_auc(y, p)
            else:
                v = se[se["metric"] == m].groupby("case")["value"].mean()
                w = worst.get(m, 0.0 if m in HIGHER_IS_BETTER_METRICS else np.nan)
                vals = np.array([v.get(c, w) for c in cases], dtype=float)
                row[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def set_level_rank(scores: pd.DataFrame, spec: TaskSpec, phase: str | None, entries: Sequence[Any],
                   cases: Sequence[Any], case_info: Mapping[Any, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """The ranked board of a task with set-level metrics: DigestPath 2019's rule for detection tasks
    (:func:`arena.leaderboard.ranking.digestpath_rank` on recall, fp_score, froc), the mean of metric ranks
    otherwise. Returns ``entry, rank, mean_rank, <metric>, rank:<metric>, ..., cases`` best first."""
    table = entry_metrics(scores, spec, phase, entries, cases, case_info)
    if table.empty:
        return pd.DataFrame(columns=["entry", "rank", "mean_rank"])
    a = board_arguments(spec, phase)
    if a["method"] == "digestpath-2019":
        from arena.leaderboard.ranking import digestpath_rank

        return digestpath_rank(table)
    return mean_of_metric_ranks(table, {m: spec.higher_is_better(m) for m in a["metrics"]}, a["metrics"])
