"""Ranking: pure functions on long-format score tables (pandas in, pandas out).

A score table has one row per (entry, case, label, metric) with a float ``value`` (NaN where the
empty-mask policy excluded it). An *entry* is whatever is ranked: a submission, a reference model,
a published result.

Ranking rules (all pure; rank 1 = best):

- :func:`aggregate_then_rank` — mean (or median) of a metric over cases and labels (optionally
  label-weighted), ranked on the primary metric. Ties share the lower rank ("1224").
- :func:`rank_then_aggregate` — every entry ranked in every (case, label, metric) cell, ties share the
  *average* rank; the entry's score is its (label-weighted) mean rank; ranked on that ("1224").
- :func:`structseg_rank` — StructSeg 2019: per metric the importance-weighted mean over organs of each
  organ's mean over cases; each metric ranked separately; the final rank orders the mean of the metric
  ranks (:func:`mean_of_metric_ranks`, grand-challenge's "mean position" rule).
- :func:`digestpath_rank` — DigestPath 2019 signet ring cells: recall at precision > 0.2, the
  normal-region false-positive score ``max(100 - FPs, 0)`` and the normal-region FROC, each ranked,
  final rank on the mean rank.

Missing results are never dropped silently: :func:`complete_scores` gives every entry a row for every
(case, label, metric) of the phase, filling absent ones (failed or missing cases) with the task's worst
value (:func:`worst_values`); :func:`rank_then_aggregate` refuses incomplete tables.

Published results (``tasks/<slug>/literature.csv``) are read by :func:`arena.tasks.literature.load_literature` and placed on a
board by :func:`place_literature` (never ranked; positioned by their mean where comparable).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from arena.metrics.detection import DIGESTPATH_MIN_PRECISION, digestpath_recall
from arena.metrics.directions import DISTANCE_METRICS, OVERLAP_METRICS, higher_is_better

if TYPE_CHECKING:
    from arena.metrics.detection import PRCurve
    from arena.tasks.spec import TaskSpec

SCORE_COLUMNS = ["entry", "case", "label", "metric", "value"]

Statistic = Literal["mean", "median"]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def default_higher_is_better(metric: str) -> bool:
    """arena.metrics.directions: overlap, detection and AUC metrics are better when higher; the rest when lower."""
    return higher_is_better(metric)


def _hib(higher_is_better: Mapping[str, bool] | None, metric: str) -> bool:
    if higher_is_better is not None and metric in higher_is_better:
        return bool(higher_is_better[metric])
    return default_higher_is_better(metric)


def _check_scores(scores: pd.DataFrame, name: str = "scores") -> None:
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame with columns {SCORE_COLUMNS}, "
                        f"got {type(scores).__name__}")
    missing = set(SCORE_COLUMNS) - set(scores.columns)
    if missing:
        raise ValueError(f"{name}: missing columns {sorted(missing)}")


def _sorted_unique(values: Any) -> list:
    u = pd.unique(pd.Series(values))
    try:
        return sorted(u.tolist())
    except TypeError:  # mixed types: keep first-seen order
        return u.tolist()


TIE_DECIMALS = 9


def _tie_round(values: np.ndarray) -> np.ndarray:
    # Scores equal to TIE_DECIMALS decimals tie: the same mean summed in a different order must not
    # break a tie by floating-point noise (e.g. (0.9 + 0.8) / 2 = 0.8500000000000001).
    return np.round(np.asarray(values, dtype=float), TIE_DECIMALS)


def rank_min(values: np.ndarray, higher_is_better: bool, axis: int = -1) -> np.ndarray:
    """Competition ranks ("1224": ties share the lower rank) along ``axis``; NaN ranks last (NaNs tie).
    Values equal to ``TIE_DECIMALS`` (9) decimals tie.

    Returns floats (1.0 = best)."""
    v = _tie_round(values)
    o = -v if higher_is_better else v
    o = np.where(np.isnan(o), np.inf, o)
    return rankdata(o, method="min", axis=axis).astype(float)


def _label_name(names: Mapping[Any, str] | None, lab: Any) -> str:
    names = names or {}
    if lab in names:
        return str(names[lab])
    try:
        return str(names.get(int(lab), lab))
    except (TypeError, ValueError):
        return str(lab)


def _weights_for(labels: Sequence[Any], label_weights: Mapping[Any, float] | None, *,
                 required: bool = False) -> np.ndarray:
    if label_weights is None:
        return np.ones(len(labels))
    out = np.empty(len(labels))
    for i, lab in enumerate(labels):
        w = label_weights.get(lab)
        if w is None:
            try:
                w = label_weights.get(int(lab))
            except (TypeError, ValueError):
                w = None
        if w is None:
            if required:
                raise ValueError(f"weights: no weight for label {lab!r} (given for {sorted(label_weights, key=str)})")
            w = 1.0
        if not (isinstance(w, (int, float, np.number)) and math.isfinite(float(w)) and float(w) > 0):
            raise ValueError(f"weights: label {lab!r}: expected a positive number, got {w!r}")
        out[i] = float(w)
    return out


# --------------------------------------------------------------------------------------------------
# dense arrays: [metric, entry, label, case]
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseArrays:
    """A long score table as dense arrays ``values[metric, entry, label, case]`` (NaN where excluded by
    the empty-mask policy or absent) and ``present`` (a row exists). Built by :func:`case_arrays`; the
    vectorised rankings and the bootstrap work on it."""

    entries: list
    cases: list
    labels: list
    metrics: list[str]
    values: np.ndarray
    present: np.ndarray

    def metric(self, name: str) -> np.ndarray:
        """``[entry, label, case]`` values of one metric."""
        try:
            return self.values[self.metrics.index(name)]
        except ValueError:
            raise KeyError(f"no metric {name!r} in the scores (metrics: {self.metrics})") from None

    def subset(self, entries: Sequence[Any]) -> CaseArrays:
        """The same arrays for the given entries only (in that order)."""
        idx = pd.Index(self.entries).get_indexer(list(entries))
        if (idx < 0).any():
            raise KeyError(f"entries not in the scores: {[e for e, i in zip(entries, idx) if i < 0]}")
        return CaseArrays(list(entries), self.cases, self.labels, self.metrics, self.values[:, idx],
                          self.present[:, idx])


def _codes(col: pd.Series, order: Sequence[Any] | None) -> tuple[np.ndarray, list]:
    if order is None:
        order = _sorted_unique(col)
    return pd.Index(list(order)).get_indexer(col), list(order)


def case_arrays(scores: pd.DataFrame, *, metrics: Sequence[str] | None = None, entries: Sequence[Any] | None = None,
                cases: Sequence[Any] | None = None, labels: Sequence[Any] | None = None) -> CaseArrays:
    """Dense ``[metric, entry, label, case]`` arrays from a long score table.

    Each of ``metrics``/``entries``/``cases``/``labels`` fixes the order (default: sorted unique values);
    rows outside the given lists are left out. Duplicate (entry, case, label, metric) rows: ValueError.
    """
    _check_scores(scores)
    codes = []
    orders = []
    for col, order in (("metric", metrics), ("entry", entries), ("label", labels), ("case", cases)):
        c, o = _codes(scores[col], order)
        codes.append(c)
        orders.append(o)
    keep = np.logical_and.reduce([c >= 0 for c in codes])
    shape = tuple(len(o) for o in orders)
    values = np.full(shape, np.nan)
    present = np.zeros(shape, dtype=bool)
    if keep.any():
        cm, ce, cl, cc = (c[keep] for c in codes)
        flat = np.ravel_multi_index((cm, ce, cl, cc), shape)
        dup = np.bincount(flat, minlength=int(np.prod(shape))) > 1
        if dup.any():
            m, e, lab, c = np.unravel_index(int(np.flatnonzero(dup)[0]), shape)
            raise ValueError(f"scores: {int(dup.sum())} duplicate (entry, case, label, metric) rows, e.g. "
                             f"entry {orders[1][e]!r}, case {orders[3][c]!r}, label {orders[2][lab]!r}, "
                             f"metric {orders[0][m]!r}")
        vals = pd.to_numeric(scores["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)[keep]
        values.ravel()[flat] = vals
        present.ravel()[flat] = True
    return CaseArrays(entries=orders[1], cases=orders[3], labels=orders[2], metrics=[str(m) for m in orders[0]],
                      values=values, present=present)


def label_means(arrays: CaseArrays, metric: str, statistic: Statistic = "mean") -> np.ndarray:
    """``[entry, label]`` mean (or median) over cases, NaN values excluded (NaN if none)."""
    v = arrays.metric(metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: NaN, as documented
        return np.nanmedian(v, axis=2) if statistic == "median" else np.nanmean(v, axis=2)


def weighted_over_labels(per_label: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over the last axis (labels), skipping NaN labels; NaN if none has a value."""
    ok = np.isfinite(per_label)
    num = np.where(ok, per_label, 0.0) @ weights
    den = ok.astype(float) @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def cell_ranks(arrays: CaseArrays, metrics: Sequence[str],
               higher_is_better: Mapping[str, bool] | None = None) -> np.ndarray:
    """``[metric, entry, label, case]`` rank of each entry in each (case, label, metric) cell among the
    entries with a value there (ties share the average rank; NaN values get no rank)."""
    out = np.full((len(metrics), len(arrays.entries), len(arrays.labels), len(arrays.cases)), np.nan)
    for i, m in enumerate(metrics):
        v = _tie_round(arrays.metric(m))
        o = -v if _hib(higher_is_better, m) else v
        if v.shape[0]:
            out[i] = rankdata(o, method="average", axis=0, nan_policy="omit")
    return out


def _require_complete(arrays: CaseArrays, metrics: Sequence[str]) -> None:
    idx = [arrays.metrics.index(m) for m in metrics]
    p = arrays.present[idx]
    any_present = p.any(axis=1, keepdims=True)
    gaps = any_present & ~p
    if gaps.any():
        m, e, lab, c = np.unravel_index(int(np.flatnonzero(gaps)[0]), gaps.shape)
        raise ValueError(f"scores: {int(gaps.sum())} (entry, case, label, metric) rows that other entries have are "
                         f"missing, e.g. entry {arrays.entries[e]!r}, case {arrays.cases[c]!r}, label "
                         f"{arrays.labels[lab]!r}, metric {metrics[m]!r}; fill them with complete_scores() "
                         f"(the task's worst values) before ranking")


def case_mean_ranks(arrays: CaseArrays, metrics: Sequence[str], higher_is_better: Mapping[str, bool] | None = None,
                    label_weights: Mapping[Any, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rank-then-aggregate per case: ``(rank_sum[entry, case], weight_sum[entry, case])`` — the
    label-weighted sum of an entry's cell ranks in the case and the weights summed over its ranked cells.
    An entry's mean rank over any set of cases is ``rank_sum.sum(1) / weight_sum.sum(1)`` (the
    bootstrap uses this)."""
    r = cell_ranks(arrays, metrics, higher_is_better)
    w = _weights_for(arrays.labels, label_weights)[None, None, :, None]
    ok = np.isfinite(r)
    return (np.where(ok, r, 0.0) * w).sum(axis=(0, 2)), (ok * w).sum(axis=(0, 2))


# --------------------------------------------------------------------------------------------------
# aggregate-then-rank
# --------------------------------------------------------------------------------------------------


def _weighted_mean(df: pd.DataFrame, by: list[str]) -> pd.Series:
    d = df.dropna(subset=["value"])
    num = (d["value"] * d["weight"]).groupby([d[c] for c in by]).sum()
    den = d["weight"].groupby([d[c] for c in by]).sum()
    return num / den


def aggregate_then_rank(scores: pd.DataFrame, primary: str, higher_is_better: Mapping[str, bool],
                        label_weights: Mapping[int, float] | None = None,
                        label_names: Mapping[int, str] | None = None,
                        statistic: Statistic = "mean") -> pd.DataFrame:
    """Aggregate each metric over cases × labels per entry (weighted by label weight), then rank.

    ``statistic="mean"`` (default): the label-weighted mean of all (case, label) values, NaN
    (excluded) values left out (``sum(w_l * v[c, l]) / sum(w_l)`` over the values present); per-label
    columns are the mean over cases. ``statistic="median"``: each label's median over cases, then the
    label-weighted mean of those medians; per-label columns are the medians. Scores equal to 9
    decimals tie.

    Returns one row per entry, best first: ``rank`` (1 = best; ties share the lower rank; entries
    without a primary value rank last), ``<metric>`` (the aggregate), ``<metric>:<label name>`` (per
    label over cases) and ``cases`` (cases scored).
    """
    _check_scores(scores)
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic: expected 'mean' or 'median', got {statistic!r}")
    if scores.empty:
        return pd.DataFrame(columns=["entry", "rank", "cases"])
    df = scores.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    weights = dict(label_weights or {})
    df["weight"] = df["label"].astype(int).map({int(k): float(v) for k, v in weights.items()}).fillna(1.0)
    valid = df.dropna(subset=["value"])
    if statistic == "mean":
        overall = _weighted_mean(df, ["entry", "metric"]).unstack("metric")
        per_label = valid.groupby(["entry", "metric", "label"])["value"].mean().unstack(["metric", "label"])
    else:
        med = valid.groupby(["entry", "metric", "label"])["value"].median().rename("value").reset_index()
        med["weight"] = med["label"].map(lambda lab: float(weights.get(int(lab), 1.0)))
        overall = _weighted_mean(med, ["entry", "metric"]).unstack("metric")
        per_label = med.set_index(["entry", "metric", "label"])["value"].unstack(["metric", "label"])
    names = dict(label_names or {})
    per_label.columns = [f"{m}:{names.get(int(lab), lab)}" for m, lab in per_label.columns]
    table = overall.join(per_label, how="outer").reindex(pd.Index(_sorted_unique(df["entry"]), name="entry"))
    table["cases"] = df.groupby("entry")["case"].nunique()
    if primary not in table.columns:
        table[primary] = np.nan
    asc = not higher_is_better.get(primary, True)
    table["rank"] = table[primary].round(TIE_DECIMALS).rank(method="min", ascending=asc, na_option="bottom").astype(int)
    metric_cols = sorted(overall.columns, key=lambda m: (m != primary, m))
    label_cols = [c for m in metric_cols for c in per_label.columns if c.startswith(f"{m}:")]
    table = table.reset_index().rename(columns={"index": "entry"})
    table = table[["entry", "rank", *metric_cols, *label_cols, "cases"]]
    return table.sort_values(["rank", "entry"], kind="stable").reset_index(drop=True)


def rank_then_aggregate(scores: pd.DataFrame, metrics: Sequence[str] | None = None,
                        higher_is_better: Mapping[str, bool] | None = None, *,
                        label_weights: Mapping[Any, float] | None = None) -> pd.DataFrame:
    """Rank every entry in every (case, label, metric) cell, then average the ranks.

    In each cell entries are ranked among those with a value (1 = best; ties share the *average* rank,
    e.g. two entries tied for first both get 1.5); NaN values (excluded by the empty-mask policy) get no
    rank in that cell. An entry's score is the mean of its cell ranks (label-weighted when
    ``label_weights`` is given). The final ``rank`` orders the mean ranks (lower is better; equal mean
    ranks share the lower rank; entries without any ranked cell rank last).

    The table must be complete (every entry has a row for each (case, label, metric) any entry has):
    otherwise ValueError — run :func:`complete_scores` first. Published results have no per-case values
    and are never part of this ranking.

    Args:
        scores: long score table.
        metrics: metrics to rank (default: all in ``scores``, sorted).
        higher_is_better: per metric (default: dice/jaccard/nsd higher, others lower).
        label_weights: label → weight for the mean of ranks (default: all 1).

    Returns:
        One row per entry, best first: ``entry``, ``rank``, ``mean_rank``, ``mean_rank:<metric>`` per
        metric and ``cells`` (number of ranked cells).
    """
    _check_scores(scores)
    metrics = list(metrics) if metrics is not None else _sorted_unique(scores["metric"])
    cols = ["entry", "rank", "mean_rank", *[f"mean_rank:{m}" for m in metrics], "cells"]
    if scores.empty:
        return pd.DataFrame(columns=cols)
    arrays = case_arrays(scores, metrics=metrics)
    _require_complete(arrays, metrics)
    r = cell_ranks(arrays, metrics, higher_is_better)
    w = _weights_for(arrays.labels, label_weights)[None, None, :, None]
    ok = np.isfinite(r)
    rs, ws = np.where(ok, r, 0.0) * w, ok * w
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_rank = rs.sum(axis=(0, 2, 3)) / ws.sum(axis=(0, 2, 3))
        per_metric = rs.sum(axis=(2, 3)) / ws.sum(axis=(2, 3))
    table = pd.DataFrame({"entry": arrays.entries, "rank": rank_min(mean_rank, False).astype(int),
                          "mean_rank": mean_rank})
    for i, m in enumerate(metrics):
        table[f"mean_rank:{m}"] = per_metric[i]
    table["cells"] = ok.sum(axis=(0, 2, 3))
    return table[cols].sort_values(["rank", "entry"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# mean of metric ranks: StructSeg 2019, DigestPath 2019
# --------------------------------------------------------------------------------------------------


def mean_of_metric_ranks(values: pd.DataFrame, higher_is_better: Mapping[str, bool] | None = None,
                         metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Grand-challenge's "mean position" rule on an entry × metric table.

    ``values`` has an ``entry`` column (or index) and one column per metric. Each metric is ranked
    separately (``rank:<metric>``; 1 = best; ties share the lower rank, "1224"; NaN ranks last); the
    entry's ``mean_rank`` is the mean of its metric ranks; the final ``rank`` orders ``mean_rank``
    (lower is better; equal mean ranks share the lower rank — no further tie-break).

    Returns ``entry, rank, mean_rank, <metric>, rank:<metric>, ...`` (plus the other columns of
    ``values``), best first.
    """
    v = values.reset_index() if "entry" not in values.columns else values.copy()
    metrics = list(metrics) if metrics is not None else [c for c in v.columns if c != "entry"]
    if not metrics:
        raise ValueError("metrics: at least one metric column to rank")
    ranks = []
    for m in metrics:
        if m not in v.columns:
            raise ValueError(f"values: no column {m!r} (columns: {list(v.columns)})")
        x = pd.to_numeric(v[m], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        v[f"rank:{m}"] = rank_min(x, _hib(higher_is_better, m)).astype(int) if len(x) else np.array([], dtype=int)
        ranks.append(v[f"rank:{m}"].to_numpy(dtype=float))
    v["mean_rank"] = np.mean(ranks, axis=0) if len(v) else np.array([], dtype=float)
    v["rank"] = rank_min(v["mean_rank"].to_numpy(), False).astype(int) if len(v) else np.array([], dtype=int)
    lead = ["entry", "rank", "mean_rank", *[c for m in metrics for c in (m, f"rank:{m}")]]
    rest = [c for c in v.columns if c not in lead]
    return v[lead + rest].sort_values(["rank", "entry"], kind="stable").reset_index(drop=True)


def structseg_rank(scores: pd.DataFrame, weights: Mapping[Any, float], *, metrics: Sequence[str] | None = None,
                   higher_is_better: Mapping[str, bool] | None = None,
                   label_names: Mapping[Any, str] | None = None) -> pd.DataFrame:
    """StructSeg 2019 ranking (tasks 1–4: head-and-neck and thoracic OARs).

    For each metric (by default every metric in ``scores``; StructSeg: Dice and HD95) an entry's score is
    the importance-weighted mean over organs of the organ's mean over cases,
    ``sum_l w_l * mean_c(v[c, l]) / sum_l w_l`` (NaN values, i.e. excluded by the empty-mask policy, are
    left out of the organ mean; an organ without any value is left out of the weighted mean). Each
    metric is ranked separately (Dice higher, HD95 lower is better; ties share the lower rank, "1224")
    and the overall rank orders the mean of the metric ranks; equal means share the lower rank
    (grand-challenge's "mean position" rule, on which StructSeg 2019 was run).

    Args:
        scores: long score table, complete (see :func:`complete_scores`).
        weights: organ label → importance weight; every label in ``scores`` needs one (ValueError).
        metrics: metrics to rank, each separately.
        higher_is_better: per metric (default: dice/jaccard/nsd higher, others lower).
        label_names: label → name for the per-organ columns.

    Returns:
        Best first: ``entry, rank, mean_rank``, then per metric ``<metric>`` (weighted score) and
        ``rank:<metric>``, then ``<metric>:<organ>`` (organ mean over cases) and ``cases``.
    """
    _check_scores(scores)
    metrics = list(metrics) if metrics is not None else _sorted_unique(scores["metric"])
    if scores.empty:
        return pd.DataFrame(columns=["entry", "rank", "mean_rank", *[c for m in metrics for c in (m, f"rank:{m}")],
                                     "cases"])
    arrays = case_arrays(scores, metrics=metrics)
    w = _weights_for(arrays.labels, weights, required=True)
    table = pd.DataFrame({"entry": arrays.entries})
    per_label_cols = {}
    for m in metrics:
        lm = label_means(arrays, m)
        table[m] = weighted_over_labels(lm, w)
        for j, lab in enumerate(arrays.labels):
            per_label_cols[f"{m}:{_label_name(label_names, lab)}"] = lm[:, j]
    ranked = mean_of_metric_ranks(table, higher_is_better, metrics)
    extra = pd.DataFrame(per_label_cols)
    extra["entry"] = arrays.entries
    extra["cases"] = (arrays.present.any(axis=(0, 2))).sum(axis=1)
    return ranked.merge(extra, on="entry", how="left")


# -- DigestPath 2019 -------------------------------------------------------------------------------

def digestpath_fp_score(normal_fps: float | np.ndarray) -> float | np.ndarray:
    """DigestPath's normal-region false-positive score ``max(100 - FPs, 0)`` (NaN stays NaN)."""
    return np.maximum(100.0 - np.asarray(normal_fps, dtype=float), 0.0) if np.ndim(normal_fps) else (
        float("nan") if math.isnan(float(normal_fps)) else max(100.0 - float(normal_fps), 0.0))


def digestpath_metrics(result: Mapping[str, Any], pr: PRCurve | None = None,
                       min_precision: float = DIGESTPATH_MIN_PRECISION) -> dict[str, float]:
    """The three DigestPath 2019 numbers from a :func:`arena.metrics.detection.score_detection` result.

    - ``recall``: :func:`arena.metrics.detection.digestpath_recall` — the highest recall at an operating
      point with precision *strictly* above ``min_precision`` (0.2), the one definition the boards use
      too. Read from ``pr`` (:func:`arena.metrics.detection.pr_curve`) when given, else from
      ``result["digestpath_recall"]`` (score_detection reports it for 0.2; ValueError if absent, or if
      another ``min_precision`` is asked for without ``pr``).
    - ``normal_fps``: false positives on normal (negative) images, all submitted detections
      (``counts["fp_on_negative_images"]``); ``fp_score = max(100 - normal_fps, 0)``.
    - ``froc``: mean recall at 1, 2, 4, 8, 16, 32 normal-region FPs per normal image
      (``normal_region_froc["score"]``; NaN without negative images).
    """
    if pr is not None:
        recall = digestpath_recall(pr, min_precision)
    elif min_precision != DIGESTPATH_MIN_PRECISION:
        raise ValueError(f"min_precision {min_precision}: pass the PR curve (pr=) to read the recall there")
    elif "digestpath_recall" in result:
        recall = float(result["digestpath_recall"])
    else:
        raise ValueError("result: no 'digestpath_recall'; score with arena.metrics.detection.score_detection "
                         "or pass the PR curve (pr=)")
    fps = float(result["counts"]["fp_on_negative_images"])
    normal = result.get("normal_region_froc")
    froc = float(normal["score"]) if normal else float("nan")
    return {"recall": recall, "normal_fps": fps, "fp_score": float(digestpath_fp_score(fps)), "froc": froc}


def digestpath_rank(table: pd.DataFrame) -> pd.DataFrame:
    """DigestPath 2019 signet-ring-cell ranking: three metrics ranked separately, overall = mean rank.

    ``table`` has one row per entry (``entry`` column) with ``recall`` (at precision > 0.2),
    ``froc`` (normal-region FROC) and either ``normal_fps`` (false positives on normal images; the score
    is ``max(100 - FPs, 0)``) or ``fp_score`` directly. A long table (``entry, metric, value``) is
    pivoted first. All three scores are better when higher; ties share the lower rank ("1224"); a
    missing (NaN) score ranks last. The final rank orders the mean of the three ranks (ties share).

    Returns best first: ``entry, rank, mean_rank, recall, rank:recall, fp_score, rank:fp_score, froc,
    rank:froc`` (+ ``normal_fps`` when given).
    """
    t = table.copy()
    if {"metric", "value"} <= set(t.columns) and "recall" not in t.columns:
        t = t.pivot_table(index="entry", columns="metric", values="value", aggfunc="first").reset_index()
        t.columns.name = None
    if "entry" not in t.columns:
        raise ValueError("table: missing column 'entry'")
    if t["entry"].duplicated().any():
        dup = t.loc[t["entry"].duplicated(), "entry"].tolist()
        raise ValueError(f"table: entries must be unique, duplicated {dup}")
    for col in ("recall", "froc"):
        if col not in t.columns:
            raise ValueError(f"table: missing column {col!r} (expected entry, recall, normal_fps or fp_score, froc)")
    if "fp_score" not in t.columns:
        if "normal_fps" not in t.columns:
            raise ValueError("table: missing column 'normal_fps' (or 'fp_score')")
        fps = pd.to_numeric(t["normal_fps"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        t["fp_score"] = digestpath_fp_score(fps)
    return mean_of_metric_ranks(t, {"recall": True, "fp_score": True, "froc": True}, ["recall", "fp_score", "froc"])


# -- dispatch on the task's ranking spec -------------------------------------------------------------


def ranking_for(spec: TaskSpec, phase: str | None = None) -> Any:
    """The task's :class:`~arena.tasks.spec.RankingSpec` with ``phase``'s overrides applied."""
    return spec.ranking.for_phase(phase or "")


def board_arguments(spec: TaskSpec, phase: str | None = None) -> dict[str, Any]:
    """What the ranking functions need from a task spec: ``method, primary, metrics, statistic,
    higher_is_better, label_weights`` (None when ``ranking.label_weights`` is false), ``label_names``,
    ``team_entry, bootstrap, seed``."""
    rs = ranking_for(spec, phase)
    metrics = list(rs.metrics) if rs.metrics else [m.name for m in spec.metrics]
    return {"method": rs.method, "primary": rs.primary, "metrics": metrics, "statistic": rs.statistic,
            "higher_is_better": {m.name: spec.higher_is_better(m.name) for m in spec.metrics},
            "label_weights": {lab: s.weight for lab, s in spec.labels.items()} if rs.label_weights else None,
            "label_names": {lab: s.name for lab, s in spec.labels.items()}, "team_entry": rs.team_entry,
            "bootstrap": rs.bootstrap, "seed": rs.seed}


def rank_by_spec(scores: pd.DataFrame, spec: TaskSpec, phase: str | None = None) -> pd.DataFrame:
    """Rank a (completed, see :func:`complete_scores`) long score table by the task's rule for ``phase``:
    :func:`aggregate_then_rank`, :func:`rank_then_aggregate` or :func:`structseg_rank`
    (``mean-of-metric-ranks``; label weights 1 when ``label_weights`` is false). ``digestpath-2019``
    ranks entry-level detection numbers: use :func:`digestpath_rank` (ValueError here)."""
    a = board_arguments(spec, phase)
    if a["method"] == "aggregate-then-rank":
        return aggregate_then_rank(scores, a["primary"], a["higher_is_better"], a["label_weights"], a["label_names"],
                                   statistic=a["statistic"])
    if a["method"] == "rank-then-aggregate":
        return rank_then_aggregate(scores, a["metrics"], a["higher_is_better"], label_weights=a["label_weights"])
    if a["method"] == "mean-of-metric-ranks":
        weights = a["label_weights"] or {lab: 1.0 for lab in spec.labels}
        return structseg_rank(scores, weights, metrics=a["metrics"], higher_is_better=a["higher_is_better"],
                              label_names=a["label_names"])
    raise ValueError(f"ranking.method {a['method']!r}: rank a table of recall, normal_fps and froc per entry "
                     f"with digestpath_rank()")


# --------------------------------------------------------------------------------------------------
# missing results, team representatives
# --------------------------------------------------------------------------------------------------


def worst_values(spec: TaskSpec, *, diagonal_mm: float | Mapping[Any, float] | None = None) -> dict[str, Any]:
    """Per metric, the value a missing or failed case gets: ``spec.ranking.worst`` first; else 0 for
    dice/jaccard/nsd; for distance metrics the empty-mask policy's distance (a number), or
    ``diagonal_mm`` (a number or a case → mm mapping) when the policy says ``diagonal``.

    Raises ValueError naming a metric for which no worst value is known."""
    out: dict[str, Any] = {}
    stated = dict(spec.ranking.worst)
    for m in (mm.name for mm in spec.metrics):
        if m in stated:
            out[m] = float(stated[m])
        elif m in OVERLAP_METRICS:
            out[m] = 0.0
        elif m in DISTANCE_METRICS and isinstance(spec.empty_policy.one_empty_distance, (int, float)):
            out[m] = float(spec.empty_policy.one_empty_distance)
        elif m in DISTANCE_METRICS and spec.empty_policy.one_empty_distance == "diagonal" and diagonal_mm is not None:
            out[m] = diagonal_mm if isinstance(diagonal_mm, Mapping) else float(diagonal_mm)
        else:
            raise ValueError(f"ranking.worst: no worst value known for metric {m!r}; state one in task.yaml "
                             f"(ranking: worst: {{{m}: <number>}})")
    return out


def complete_scores(scores: pd.DataFrame, entries: Sequence[Any] | None = None, cases: Sequence[Any] | None = None,
                    labels: Sequence[Any] | None = None, metrics: Sequence[str] | None = None,
                    worst: Mapping[str, float | Mapping[Any, float]] | None = None, *,
                    indicator: str | None = "filled") -> pd.DataFrame:
    """Every entry × case × label × metric, missing rows filled with the metric's worst value.

    A failed or missing case is never dropped: an entry lacking a (case, label, metric) row gets
    ``worst[metric]`` (a number, or a case → number mapping, e.g. the image diagonal for HD95). Rows that
    exist keep their value, NaN included (NaN means "excluded by the empty-mask policy"). ``entries``,
    ``cases``, ``labels``, ``metrics`` define the grid (default: the values present in ``scores``);
    rows outside the grid (e.g. cases not in the phase) are left out. Order: entry, case, label, metric.

    Args:
        worst: metric → worst value; ValueError when a row must be filled for a metric without one.
        indicator: name of a boolean column marking filled rows (None: no column).

    Raises:
        ValueError: missing columns, duplicate rows, a needed worst value absent or NaN.
    """
    _check_scores(scores)
    worst = dict(worst or {})
    grid_lists = []
    for col, given in (("entry", entries), ("case", cases), ("label", labels), ("metric", metrics)):
        grid_lists.append(list(given) if given is not None else _sorted_unique(scores[col]))
    grid = pd.MultiIndex.from_product(grid_lists, names=["entry", "case", "label", "metric"])
    s = scores[SCORE_COLUMNS].copy()
    s["value"] = pd.to_numeric(s["value"], errors="coerce").astype(float)
    key = pd.MultiIndex.from_frame(s[["entry", "case", "label", "metric"]])
    if key.has_duplicates:
        d = key[key.duplicated()][0]
        raise ValueError(f"scores: duplicate (entry, case, label, metric) rows, e.g. {d!r}")
    values = pd.Series(s["value"].to_numpy(), index=key)
    pos = key.get_indexer(grid)
    missing = pos < 0
    out = grid.to_frame(index=False)
    vals = np.where(missing, np.nan, values.to_numpy()[np.where(missing, 0, pos)] if len(values) else np.nan)
    if missing.any():
        mfill = out.loc[missing]
        for m, rows in mfill.groupby("metric", sort=False):
            if m not in worst:
                ex = rows.iloc[0]
                raise ValueError(f"worst: no worst value for metric {m!r}, needed for {len(rows)} missing rows "
                                 f"(e.g. entry {ex['entry']!r}, case {ex['case']!r}, label {ex['label']!r})")
            wv = worst[m]
            if isinstance(wv, Mapping):
                fill = rows["case"].map(lambda c, wv=wv: wv.get(c, np.nan)).to_numpy(dtype=float)
                if np.isnan(fill).any():
                    c = rows["case"].to_numpy()[np.isnan(fill)][0]
                    raise ValueError(f"worst: metric {m!r} has no worst value for case {c!r}")
            else:
                if wv is None or (isinstance(wv, float) and math.isnan(wv)):
                    raise ValueError(f"worst: metric {m!r}: expected a number, got {wv!r}")
                fill = np.full(len(rows), float(wv))
            vals[rows.index.to_numpy()] = fill
    out["value"] = vals.astype(float)
    if indicator:
        out[indicator] = missing
    return out


PENALTY_RTOL = 1e-9


def penalty_mask(scores: pd.DataFrame, worst: Mapping[str, float | Mapping[Any, float]], *,
                 filled: str | None = "filled") -> np.ndarray:
    """Which rows of a long score table hold a *penalty*, not a measurement: a distance metric's value
    that was filled in because an organ was missed or hallucinated (one mask empty: the empty-mask
    policy's distance, e.g. the image diagonal) or because the case failed or is missing (``filled``
    column of :func:`complete_scores`, when present).

    ``worst``: :func:`worst_values` (metric → mm, or case → mm for the diagonal). A value counts as the
    penalty when it equals ``worst[metric]`` (for its case) to a relative 1e-9; a measured distance
    never reaches it, since two voxel centres of one image are less than the image diagonal apart.
    Overlap metrics (Dice 0 of a missed organ is a true Dice) are never penalties. NaN values are not.

    Returns a boolean array aligned with ``scores``' rows.
    """
    _check_scores(scores)
    out = np.zeros(len(scores), dtype=bool)
    if scores.empty:
        return out
    metric = scores["metric"].astype(str).to_numpy()
    value = pd.to_numeric(scores["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    is_filled = (scores[filled].fillna(False).to_numpy(dtype=bool) if filled and filled in scores.columns
                 else np.zeros(len(scores), dtype=bool))
    for m in set(metric):
        if m not in DISTANCE_METRICS:
            continue
        rows = metric == m
        wv = worst.get(m)
        if isinstance(wv, Mapping):
            pen = scores.loc[rows, "case"].map(lambda c, wv=wv: wv.get(c, np.nan)).to_numpy(dtype=float)
        elif wv is None:
            pen = np.full(int(rows.sum()), np.nan)
        else:
            pen = np.full(int(rows.sum()), float(wv))
        v = value[rows]
        with np.errstate(invalid="ignore"):
            hit = np.isfinite(v) & np.isfinite(pen) & (np.abs(v - pen) <= PENALTY_RTOL * np.maximum(np.abs(pen), 1.0))
            hit |= np.isinf(v) & np.isinf(pen)
        out[rows] = hit | is_filled[rows]
    return out


def is_penalty(value: float | None, penalty: float | None) -> bool:
    """One value: whether a distance ``value`` is the ``penalty`` (the same test as :func:`penalty_mask`:
    equal to a relative 1e-9, or both infinite). None/NaN values or penalties: False."""
    if value is None or penalty is None or math.isnan(float(value)) or math.isnan(float(penalty)):
        return False
    v, p = float(value), float(penalty)
    if math.isinf(v) or math.isinf(p):
        return math.isinf(v) and math.isinf(p)
    return abs(v - p) <= PENALTY_RTOL * max(abs(p), 1.0)


def penalty_counts(scores: pd.DataFrame, penalties: np.ndarray, label_names: Mapping[Any, str] | None = None
                   ) -> pd.DataFrame:
    """Per entry, how many of its values are penalties: ``penalties:<metric>`` (all cases and labels) and
    ``penalties:<metric>:<label name>``, only for metrics with a penalty anywhere. Returns ``entry`` plus
    those integer columns (one row per entry of ``scores``)."""
    entries = _sorted_unique(scores["entry"]) if len(scores) else []
    out = pd.DataFrame({"entry": entries})
    p = scores.loc[np.asarray(penalties, dtype=bool), ["entry", "label", "metric"]]
    for m, pm in p.groupby("metric", sort=True):
        out[f"penalties:{m}"] = out["entry"].map(pm.groupby("entry").size()).fillna(0).astype(int)
        for lab, pl in pm.groupby("label", sort=True):
            out[f"penalties:{m}:{_label_name(label_names, lab)}"] = (
                out["entry"].map(pl.groupby("entry").size()).fillna(0).astype(int))
    return out


def select_team_entries(entries: pd.DataFrame, how: Literal["best", "latest"] = "best", *,
                        board: pd.DataFrame | None = None, team: str = "team",
                        submitted: str = "submitted") -> pd.DataFrame:
    """One entry per team: its best-ranked (``how="best"``) or its latest (``how="latest"``) entry.

    Args:
        entries: one row per entry with ``entry``, ``team`` and ``submitted`` (a sortable time) columns.
        how: ``"best"``: the entry with the lowest ``rank`` on ``board`` (ties: the earlier submission,
            then the lower entry id); entries not on the board count as worst. ``"latest"``: the most
            recent ``submitted`` (ties: the higher entry id) — whatever its score.
        board: a ranked table with ``entry`` and ``rank`` (required for ``"best"``).

    Returns the selected rows of ``entries`` (same columns), in team order. Rank only these entries
    afterwards (rules such as mean-of-ranks depend on who else is on the board).
    """
    for col in ("entry", team, submitted):
        if col not in entries.columns:
            raise ValueError(f"entries: missing column {col!r}")
    if entries.empty:
        return entries.copy()
    e = entries.copy()
    if how == "latest":
        e = e.sort_values([team, submitted, "entry"], ascending=[True, False, False], kind="stable")
    elif how == "best":
        if board is None or not {"entry", "rank"} <= set(board.columns):
            raise ValueError("board: a ranked table with 'entry' and 'rank' is needed for how='best'")
        r = dict(zip(board["entry"], board["rank"]))
        e["_rank"] = e["entry"].map(r).astype(float).fillna(np.inf)
        e = e.sort_values([team, "_rank", submitted, "entry"], kind="stable").drop(columns="_rank")
    else:
        raise ValueError(f"how: expected 'best' or 'latest', got {how!r}")
    return e.drop_duplicates(team, keep="first").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# published results
# --------------------------------------------------------------------------------------------------

def place_literature(board: pd.DataFrame, literature: pd.DataFrame, by: Sequence[str],
                     higher_is_better: Mapping[str, bool] | None = None, *,
                     labels: Sequence[Any] | None = None, label_weights: Mapping[Any, float] | None = None,
                     label_names: Mapping[Any, str] | None = None,
                     conventions: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Place published results on a board without ranking them.

    For each published entry and each metric in ``by`` its board-comparable score is computed: the
    label-weighted mean of its per-label values when the paper reports that metric for every one of
    ``labels`` (default: all labels of the literature table's task, i.e. those in ``label_names``), else
    the paper's own ``mean`` row when the weights are all equal (or ``label_weights`` is None), else none
    (not comparable). The score is the mean of the paper's per-label means (papers report those), which
    matches the board's aggregate when no case is excluded.

    ``position``: with one metric, 1 + the number of board entries strictly better on ``board[metric]``
    (the rank it would share); with several (mean of metric ranks, StructSeg), its would-be rank on each
    metric, averaged, then 1 + the number of board entries with a strictly lower ``mean_rank``. NaN when
    not comparable. Published rows never get a ``rank`` and are not part of rank-then-aggregate.

    What a reader must know beside the number (from :func:`arena.tasks.literature.load_literature`'s
    columns, when present): ``dataset`` (the paper's data set, never this board's cases), ``table`` (where
    the numbers are printed), ``convention:<metric>`` (the paper's distance convention), ``caveats`` (a
    sentence per metric whose convention differs from ``conventions[metric]``, the board's own, or is not
    stated) and ``flag:<metric>:<label name>`` (a cell's flag, e.g. a likely typo kept as printed).

    Returns one row per published entry: ``entry, badge, source, citation, model, comparable, position,
    <metric>`` per metric in ``by``, ``<metric>:<label name>`` per reported label, the columns above, ``note``.
    """
    names = dict(label_names or {})
    if labels is None:
        labels = list(names) if names else sorted({int(x) for x in literature["label"].dropna()})
    labels = list(labels)
    w = _weights_for(labels, label_weights)
    equal_weights = label_weights is None or np.allclose(w, w[0])
    rows = []
    for entry, g in literature.groupby("entry", sort=False):
        first = g.iloc[0]
        row: dict[str, Any] = {"entry": entry, "badge": "published", "source": first["source"],
                               "citation": first["citation"], "model": first["model"]}
        notes = []
        comparable = True
        for m in by:
            gm = g[g["metric"] == m]
            per = {int(lab): v for lab, v in zip(gm["label"], gm["value"]) if not pd.isna(lab)}
            for lab, v in per.items():
                row[f"{m}:{_label_name(names, lab)}"] = v
            mean_row = gm[gm["label"].isna()]
            if labels and all(lab in per for lab in labels):
                row[m] = float(np.dot([per[lab] for lab in labels], w) / w.sum())
            elif len(mean_row) and equal_weights:
                row[m] = float(mean_row["value"].iloc[0])
                notes.append(f"{m}: the paper's mean over organs")
            else:
                row[m] = np.nan
                comparable = False
                notes.append(f"{m}: reported for {len(per)} of {len(labels)} organs")
        absent = [m for m in by if m not in board.columns]
        if len(by) > 1 and "mean_rank" not in board.columns:
            absent.append("mean_rank")
        if absent:
            comparable = False
            notes.append(f"the board has no {', '.join(absent)} column (not placed)")
        row["comparable"] = comparable
        _literature_context(row, g, by, dict(conventions or {}), names)
        if comparable and len(board):
            would = []
            for m in by:
                col = pd.to_numeric(board[m], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                better = col > row[m] if _hib(higher_is_better, m) else col < row[m]
                would.append(1 + int(np.sum(better)))
            if len(by) == 1:
                row["position"] = float(would[0])
            else:
                mr = float(np.mean(would))
                row["position"] = float(1 + np.sum(board["mean_rank"].to_numpy(dtype=float) < mr))
        else:
            row["position"] = 1.0 if comparable else np.nan
        paper_note = "; ".join(dict.fromkeys(n for n in g["note"] if n))
        data = f"data set: {row['dataset']}" if row.get("dataset") else ""
        row["note"] = "; ".join(filter(None, ["published result, not evaluated on this test set", data, row["caveats"],
                                              paper_note, *notes]))
        rows.append(row)
    lead = ["entry", "badge", "source", "citation", "model", "comparable", "position", *by]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=[*lead, "note"])
    if by:  # published rows sharing a position are listed best first on the first metric
        df = df.sort_values(by[0], ascending=not _hib(higher_is_better, by[0]), kind="stable", na_position="last")
    rest = [c for c in df.columns if c not in lead and c != "note"]
    return df[lead + rest + ["note"]]


def _joined(values: Any) -> str:
    return "; ".join(dict.fromkeys(str(v) for v in values if isinstance(v, str) and v))


def _literature_context(row: dict[str, Any], g: pd.DataFrame, by: Sequence[str], conventions: Mapping[str, str],
                        names: Mapping[Any, str]) -> None:
    """Fill a published row's data set, table, conventions, caveats and cell flags (see place_literature)."""
    row["dataset"] = _joined(g["dataset"]) if "dataset" in g.columns else ""
    row["table"] = _joined(g["table"]) if "table" in g.columns else ""
    caveats = []
    for m in by:
        gm = g[g["metric"] == m]
        conv = _joined(gm["convention"]) if "convention" in gm.columns else ""
        if conv and conv != "n/a":
            row[f"convention:{m}"] = conv
            ours = conventions.get(m)
            if conv == "not stated":
                board = f" (this board: {ours})" if ours else ""
                caveats.append(f"{m}: the paper does not state its convention{board}")
            elif ours and conv != ours:
                caveats.append(f"{m}: the paper's {conv} convention, not this board's {ours}")
        if "flag" in gm.columns:
            flagged: dict[str, list[str]] = {}
            for lab, flag in zip(gm["label"], gm["flag"]):
                if isinstance(flag, str) and flag:
                    key = "mean" if pd.isna(lab) else _label_name(names, lab)
                    row[f"flag:{m}:{key}"] = flag
                    flagged.setdefault(flag, []).append(key)
            caveats += [f"{m} {', '.join(keys)}: {flag}" for flag, keys in flagged.items()]
    row["caveats"] = "; ".join(caveats)


def with_literature(board: pd.DataFrame, placed: pd.DataFrame) -> pd.DataFrame:
    """The board with published rows interleaved: a published row with ``position`` p sits just above
    the board entry ranked p; non-comparable ones go to the bottom. Board rows get ``badge`` (kept if
    present, else empty) and published rows keep ``rank`` NaN."""
    b = board.copy()
    if "badge" not in b.columns:
        b["badge"] = ""
    b["_order"] = b["rank"].astype(float)
    p = placed.copy()
    p["rank"] = np.nan
    p["_order"] = p["position"].astype(float).fillna(np.inf) - 0.5
    parts = [x for x in (b, p) if len(x)]
    if not parts:
        return b.drop(columns="_order")
    out = pd.concat(parts, ignore_index=True, sort=False)
    out["_pub"] = out["badge"].eq("published")
    out = out.sort_values(["_order", "_pub"], kind="stable").drop(columns=["_order", "_pub"])
    return out.reset_index(drop=True)
