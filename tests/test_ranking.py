"""Aggregate-then-rank on long score tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from arena.leaderboard.ranking import aggregate_then_rank, best_per_group


def _scores(values: dict[int, dict[tuple[str, int], tuple[float, float]]]) -> pd.DataFrame:
    rows = []
    for entry, cells in values.items():
        for (case, label), (dice, hd) in cells.items():
            rows.append((entry, case, label, "dice", dice))
            rows.append((entry, case, label, "hd95", hd))
    return pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"])


def test_weighted_mean_and_rank():
    df = _scores({
        1: {("a", 1): (0.9, 2.0), ("a", 2): (0.3, 9.0), ("b", 1): (0.8, 3.0), ("b", 2): (0.5, 7.0)},
        2: {("a", 1): (0.7, 4.0), ("a", 2): (0.9, 1.0), ("b", 1): (0.6, 5.0), ("b", 2): (0.9, 1.0)},
    })
    # Label 1 weighs 100, label 2 weighs 50: entry 1 = (0.9+0.8)*100 + (0.3+0.5)*50 over 300
    t = aggregate_then_rank(df, "dice", {"dice": True, "hd95": False}, {1: 100, 2: 50}, {1: "BrainStem", 2: "Lens"})
    e1 = t.set_index("entry").loc[1]
    assert e1["dice"] == pytest.approx((170 + 40) / 300)
    assert e1["dice:BrainStem"] == pytest.approx(0.85) and e1["dice:Lens"] == pytest.approx(0.4)
    assert e1["hd95"] == pytest.approx((5 * 100 + 16 * 50) / 300)
    assert list(t["entry"]) == [2, 1] and list(t["rank"]) == [1, 2]  # 0.7667 > 0.7
    unweighted = aggregate_then_rank(df, "dice", {"dice": True}, None)
    assert unweighted.set_index("entry").loc[1, "dice"] == pytest.approx(0.625)
    by_hd = aggregate_then_rank(df, "hd95", {"dice": True, "hd95": False}, None)
    assert list(by_hd["entry"]) == [2, 1]  # lower HD95 ranks first


def test_excluded_values_ties_and_missing_primary():
    df = _scores({1: {("a", 1): (0.8, 1.0), ("a", 2): (np.nan, np.nan)},
                  2: {("a", 1): (0.8, 1.0)},
                  3: {("a", 1): (np.nan, np.nan)}})
    t = aggregate_then_rank(df, "dice", {"dice": True}, None).set_index("entry")
    assert t.loc[1, "dice"] == pytest.approx(0.8)  # NaN (excluded) is not a zero
    assert t.loc[1, "rank"] == t.loc[2, "rank"] == 1 and t.loc[3, "rank"] == 3


def test_best_per_team():
    df = _scores({1: {("a", 1): (0.5, 1.0)}, 2: {("a", 1): (0.9, 1.0)}, 3: {("a", 1): (0.7, 1.0)}})
    t = aggregate_then_rank(df, "dice", {"dice": True}, None)
    best = best_per_group(t, {1: "x", 2: "x", 3: "y"})
    assert list(best["entry"]) == [2, 3] and list(best["rank"]) == [1, 2]


def test_missing_columns():
    with pytest.raises(ValueError, match="missing columns"):
        aggregate_then_rank(pd.DataFrame({"entry": [1]}), "dice", {}, None)
