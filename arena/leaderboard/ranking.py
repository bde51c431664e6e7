"""Ranking: pure functions on long-format score tables (pandas in, pandas out).

A score table has one row per (entry, case, label, metric) with a float ``value`` (NaN where the
empty-mask policy excluded it). An *entry* is whatever is ranked: a submission, a reference model,
a published result.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

SCORE_COLUMNS = ["entry", "case", "label", "metric", "value"]


def _weighted_mean(df: pd.DataFrame, by: list[str]) -> pd.Series:
    d = df.dropna(subset=["value"])
    num = (d["value"] * d["weight"]).groupby([d[c] for c in by]).sum()
    den = d["weight"].groupby([d[c] for c in by]).sum()
    return num / den


def aggregate_then_rank(scores: pd.DataFrame, primary: str, higher_is_better: Mapping[str, bool],
                        label_weights: Mapping[int, float] | None = None,
                        label_names: Mapping[int, str] | None = None) -> pd.DataFrame:
    """Mean of each metric over cases × labels per entry (weighted by label weight), then rank.

    Returns one row per entry, best first: ``rank`` (1 = best; ties share the lower rank; entries
    without a primary value rank last), ``<metric>`` (weighted mean over cases and labels),
    ``<metric>:<label name>`` (mean over cases for one label) and ``cases`` (cases scored).
    """
    missing = set(SCORE_COLUMNS) - set(scores.columns)
    if missing:
        raise ValueError(f"scores: missing columns {sorted(missing)}")
    if scores.empty:
        return pd.DataFrame(columns=["entry", "rank", "cases"])
    df = scores.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    weights = dict(label_weights or {})
    df["weight"] = df["label"].map(lambda lab: float(weights.get(int(lab), 1.0)))
    overall = _weighted_mean(df, ["entry", "metric"]).unstack("metric")
    per_label = df.dropna(subset=["value"]).groupby(["entry", "metric", "label"])["value"].mean().unstack(["metric", "label"])
    names = dict(label_names or {})
    per_label.columns = [f"{m}:{names.get(int(lab), lab)}" for m, lab in per_label.columns]
    table = overall.join(per_label, how="outer").reindex(pd.Index(sorted(df["entry"].unique()), name="entry"))
    table["cases"] = df.groupby("entry")["case"].nunique()
    if primary not in table.columns:
        table[primary] = np.nan
    asc = not higher_is_better.get(primary, True)
    table["rank"] = table[primary].rank(method="min", ascending=asc, na_option="bottom").astype(int)
    metric_cols = sorted(overall.columns, key=lambda m: (m != primary, m))
    label_cols = [c for m in metric_cols for c in per_label.columns if c.startswith(f"{m}:")]
    table = table.reset_index().rename(columns={"index": "entry"})
    table = table[["entry", "rank", *metric_cols, *label_cols, "cases"]]
    return table.sort_values(["rank", "entry"], kind="stable").reset_index(drop=True)


def best_per_group(table: pd.DataFrame, groups: Mapping[object, object]) -> pd.DataFrame:
    """Keep each group's best-ranked entry (e.g. one row per team), then re-rank 1..n."""
    t = table.copy()
    t["_group"] = t["entry"].map(groups)
    t = t.sort_values(["rank", "entry"], kind="stable").drop_duplicates("_group", keep="first")
    t["rank"] = t["rank"].rank(method="min").astype(int)
    return t.drop(columns="_group").reset_index(drop=True)
