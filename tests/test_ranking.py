"""Ranking rules on long score tables: aggregate-then-rank, rank-then-aggregate, StructSeg 2019,
DigestPath 2019, completing missing results, team representatives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pathlib import Path

from arena.leaderboard.ranking import (
    aggregate_then_rank,
    complete_scores,
    digestpath_metrics,
    digestpath_rank,
    mean_of_metric_ranks,
    rank_then_aggregate,
    select_team_entries,
    structseg_rank,
    worst_values,
)


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


def test_missing_columns():
    with pytest.raises(ValueError, match="missing columns"):
        aggregate_then_rank(pd.DataFrame({"entry": [1]}), "dice", {}, None)


# -- aggregate-then-rank: median ---------------------------------------------------------------------

def test_median_statistic_per_label_then_weighted():
    rows = [(1, c, 1, "dice", v) for c, v in zip("abc", (0.1, 0.8, 0.9))]
    rows += [(1, c, 2, "dice", v) for c, v in zip("abc", (0.5, 0.6, 0.7))]
    rows += [(2, c, 1, "dice", v) for c, v in zip("abc", (0.7, 0.7, 0.7))]
    rows += [(2, c, 2, "dice", v) for c, v in zip("abc", (0.6, 0.6, 0.6))]
    df = pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"])
    mean = aggregate_then_rank(df, "dice", {"dice": True}, {1: 100, 2: 50}).set_index("entry")
    med = aggregate_then_rank(df, "dice", {"dice": True}, {1: 100, 2: 50}, statistic="median").set_index("entry")
    # entry 1: medians 0.8 (label 1) and 0.6 (label 2) -> (80 + 30) / 150; means (0.6*100 + 0.6*50)/150 = 0.6
    assert med.loc[1, "dice"] == pytest.approx(110 / 150) and med.loc[1, "dice:1"] == pytest.approx(0.8)
    assert mean.loc[1, "dice"] == pytest.approx(0.6)
    assert med.loc[2, "dice"] == pytest.approx((70 + 30) / 150)
    assert mean.loc[1, "rank"] == 2 and med.loc[1, "rank"] == 1  # the outlier case 0.1 no longer decides
    with pytest.raises(ValueError, match="statistic"):
        aggregate_then_rank(df, "dice", {"dice": True}, statistic="mode")


# -- StructSeg 2019 ------------------------------------------------------------------------------------

def _long(cells: dict) -> pd.DataFrame:
    """{entry: {metric: {label: [case values]}}} -> long table (cases c0, c1, ...)."""
    rows = [(e, f"c{i}", lab, m, v) for e, per_m in cells.items() for m, per_l in per_m.items()
            for lab, vals in per_l.items() for i, v in enumerate(vals)]
    return pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"])


STRUCTSEG = _long({
    # label 1 = BrainStem (weight 100), label 4 = Lens_L (weight 50); two cases
    "A": {"dice": {1: [0.9, 0.8], 4: [0.6, 0.4]}, "hd95": {1: [2.0, 4.0], 4: [3.0, 3.0]}},
    "B": {"dice": {1: [0.7, 0.7], 4: [0.8, 0.8]}, "hd95": {1: [5.0, 5.0], 4: [1.0, 1.0]}},
    "C": {"dice": {1: [0.6, 0.6], 4: [0.5, 0.5]}, "hd95": {1: [1.0, 1.0], 4: [2.0, 2.0]}},
})


def test_structseg_hand_example():
    t = structseg_rank(STRUCTSEG, {1: 100, 4: 50}, label_names={1: "BrainStem", 4: "Lens_L"}).set_index("entry")
    # Dice, organ means then weights: A (100*0.85 + 50*0.5)/150 = 110/150; B (100*0.7 + 50*0.8)/150 = 110/150;
    # C (100*0.6 + 50*0.5)/150 = 85/150.  A and B tie (0.85 is 0.8500000000000001 in floating point:
    # ties are compared to 9 decimals) -> Dice ranks A 1, B 1, C 3.
    assert t.loc["A", "dice"] == pytest.approx(110 / 150) and t.loc["C", "dice"] == pytest.approx(85 / 150)
    assert t["rank:dice"].to_dict() == {"A": 1, "B": 1, "C": 3}
    # HD95 (lower is better): A (100*3 + 50*3)/150 = 3.0; B (100*5 + 50*1)/150 = 3.667; C (100*1 + 50*2)/150 = 1.333
    assert t.loc["B", "hd95"] == pytest.approx(550 / 150)
    assert t["rank:hd95"].to_dict() == {"C": 1, "A": 2, "B": 3}
    # mean of the metric ranks: A (1+2)/2 = 1.5, B (1+3)/2 = 2, C (3+1)/2 = 2 -> A 1, B 2, C 2 (tie shares 2)
    assert t["mean_rank"].to_dict() == {"A": 1.5, "B": 2.0, "C": 2.0}
    assert t["rank"].to_dict() == {"A": 1, "B": 2, "C": 2}
    assert t.loc["A", "dice:BrainStem"] == pytest.approx(0.85) and t.loc["B", "hd95:Lens_L"] == pytest.approx(1.0)
    assert (t["cases"] == 2).all()


def test_structseg_weights_matter_and_are_required():
    # without the importance weights B's Dice (0.75) beats A's (0.675): B first on Dice alone
    t = structseg_rank(STRUCTSEG, {1: 1, 4: 1}).set_index("entry")
    assert t["rank:dice"].to_dict() == {"B": 1, "A": 2, "C": 3}
    with pytest.raises(ValueError, match="no weight for label 4"):
        structseg_rank(STRUCTSEG, {1: 100})


def test_structseg_han_oar_22_weights_from_task():
    from arena.tasks.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "tasks" / "han-oar-22")
    w = {lab: s.weight for lab, s in spec.labels.items()}
    rows = [(e, "c0", lab, "dice", 0.9 if (e == "X") == (lab == 20) else 0.8) for e in ("X", "Y") for lab in w]
    rows += [(e, "c0", lab, "hd95", 2.0) for e in ("X", "Y") for lab in w]
    t = structseg_rank(pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"]), w).set_index("entry")
    # X is better only on the spinal cord (weight 100 of 1,650 in all); Y on every other organ
    assert t.loc["X", "dice"] == pytest.approx((0.9 * 100 + 0.8 * 1550) / 1650)
    assert t["rank"].to_dict() == {"Y": 1, "X": 2}  # HD95 tied (both rank 1) -> Dice decides


def test_mean_of_metric_ranks_nan_ranks_last():
    v = pd.DataFrame({"entry": ["a", "b", "c"], "m1": [1.0, np.nan, 3.0], "m2": [0.5, 0.7, 0.6]})
    t = mean_of_metric_ranks(v, {"m1": True, "m2": True}).set_index("entry")
    assert t["rank:m1"].to_dict() == {"a": 2, "b": 3, "c": 1}
    assert t["rank:m2"].to_dict() == {"a": 3, "b": 1, "c": 2}
    # mean ranks: a (2+3)/2 = 2.5, b (3+1)/2 = 2.0, c (1+2)/2 = 1.5
    assert t["mean_rank"].to_dict() == {"c": 1.5, "b": 2.0, "a": 2.5}
    assert t["rank"].to_dict() == {"c": 1, "b": 2, "a": 3}


# -- DigestPath 2019 -----------------------------------------------------------------------------------

def test_digestpath_hand_example():
    table = pd.DataFrame({"entry": ["A", "B", "C", "D"], "recall": [0.80, 0.90, 0.70, 0.80],
                          "normal_fps": [30, 120, 10, 150], "froc": [0.60, 0.55, 0.50, 0.65]})
    t = digestpath_rank(table).set_index("entry")
    # FP score max(100 - FPs, 0): A 70, B 0, C 90, D 0
    assert t["fp_score"].to_dict() == {"A": 70.0, "B": 0.0, "C": 90.0, "D": 0.0}
    assert t["rank:recall"].to_dict() == {"A": 2, "B": 1, "C": 4, "D": 2}     # 0.9 > 0.8 = 0.8 > 0.7
    assert t["rank:fp_score"].to_dict() == {"A": 2, "B": 3, "C": 1, "D": 3}   # 90 > 70 > 0 = 0
    assert t["rank:froc"].to_dict() == {"A": 2, "B": 3, "C": 4, "D": 1}       # 0.65 > 0.60 > 0.55 > 0.50
    # mean ranks: A (2+2+2)/3 = 2, B (1+3+3)/3 = 2.33, C (4+1+4)/3 = 3, D (2+3+1)/3 = 2
    assert t["mean_rank"].round(4).to_dict() == {"A": 2.0, "D": 2.0, "B": 2.3333, "C": 3.0}
    assert t["rank"].to_dict() == {"A": 1, "D": 1, "B": 3, "C": 4}
    # the same from a long table and from fp_score directly
    long = table.melt(id_vars="entry", var_name="metric", value_name="value")
    assert digestpath_rank(long).set_index("entry")["rank"].to_dict() == t["rank"].to_dict()
    direct = table.drop(columns="normal_fps").assign(fp_score=[70, 0, 90, 0])
    assert digestpath_rank(direct).set_index("entry")["rank"].to_dict() == t["rank"].to_dict()
    with pytest.raises(ValueError, match="normal_fps"):
        digestpath_rank(table.drop(columns="normal_fps"))


def test_digestpath_metrics_from_score_detection():
    from arena.metrics.detection import pr_curve_from_scores, score_detection

    pred = pd.DataFrame({"image": ["p1", "p1", "n1", "n1"], "x": [0.0, 50.0, 5.0, 6.0], "y": [0.0, 50.0, 5.0, 6.0],
                         "probability": [0.9, 0.8, 0.7, 0.6]})
    gt = pd.DataFrame({"image": ["p1", "p1"], "x": [0.0, 10.0], "y": [0.0, 10.0]})
    res = score_detection(pred, gt, criterion="distance", threshold=3.0, images=["p1", "n1", "n2"])
    m = digestpath_metrics(res)
    # one of two targets found at precision 1 -> recall 0.5; 2 FPs on the normal image n1 -> score 98
    assert m["recall"] == 0.5 and m["normal_fps"] == 2 and m["fp_score"] == 98.0
    assert m["froc"] == pytest.approx(res["normal_region_froc"]["score"]) and m["froc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="digestpath_recall"):
        digestpath_metrics({k: v for k, v in res.items() if k != "digestpath_recall"})
    # precision exactly 0.2 (1 TP after 4 FPs) is not "more than 20%": recall 0, the same via the PR curve
    pr = pr_curve_from_scores([0.9, 0.8, 0.7, 0.6, 0.5], [False, False, False, False, True], n_gt=2)
    fake = {"digestpath_recall": 0.5, "counts": {"fp_on_negative_images": 120}, "normal_region_froc": None}
    strict = digestpath_metrics(fake, pr=pr)  # the PR curve, when given, is read, not the stored number
    assert strict["recall"] == 0.0 and strict["fp_score"] == 0.0 and np.isnan(strict["froc"])
    with pytest.raises(ValueError, match="pass the PR curve"):
        digestpath_metrics(fake, min_precision=0.5)


# -- rank-then-aggregate ---------------------------------------------------------------------------------

def test_rank_then_aggregate_ties_share_average_rank():
    df = pd.DataFrame([
        ("A", "c1", 1, "dice", 0.9), ("B", "c1", 1, "dice", 0.9), ("C", "c1", 1, "dice", 0.8),
        ("A", "c1", 2, "dice", 0.7), ("B", "c1", 2, "dice", 0.8), ("C", "c1", 2, "dice", 0.8),
        ("A", "c1", 1, "hd95", 1.0), ("B", "c1", 1, "hd95", 2.0), ("C", "c1", 1, "hd95", 3.0),
    ], columns=["entry", "case", "label", "metric", "value"])
    t = rank_then_aggregate(df, ["dice", "hd95"], {"dice": True, "hd95": False}).set_index("entry")
    # dice (c1, 1): A, B tie for first -> 1.5 each, C 3; dice (c1, 2): B, C tie -> 1.5, A 3
    assert t["mean_rank:dice"].to_dict() == {"A": 2.25, "B": 1.5, "C": 2.25}
    # hd95 (c1, 1), lower is better: A 1, B 2, C 3
    assert t["mean_rank:hd95"].to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
    # over the 3 cells: A (1.5+3+1)/3, B (1.5+1.5+2)/3, C (3+1.5+3)/3
    assert t["mean_rank"].to_dict() == pytest.approx({"A": 5.5 / 3, "B": 5 / 3, "C": 2.5})
    assert t["rank"].to_dict() == {"B": 1, "A": 2, "C": 3}
    assert (t["cells"] == 3).all()
    dice_only = rank_then_aggregate(df, ["dice"]).set_index("entry")
    assert dice_only["rank"].to_dict() == {"B": 1, "A": 2, "C": 2}  # equal mean ranks share the rank


def test_rank_then_aggregate_nan_and_incomplete():
    df = pd.DataFrame([("A", "c1", 1, "dice", 0.9), ("B", "c1", 1, "dice", np.nan), ("C", "c1", 1, "dice", 0.5),
                       ("A", "c2", 1, "dice", 0.1), ("B", "c2", 1, "dice", 0.6), ("C", "c2", 1, "dice", 0.5)],
                      columns=["entry", "case", "label", "metric", "value"])
    t = rank_then_aggregate(df).set_index("entry")
    # c1: B excluded (NaN), A 1, C 2; c2: B 1, C 2, A 3
    assert t["mean_rank"].to_dict() == {"A": 2.0, "B": 1.0, "C": 2.0} and t.loc["B", "cells"] == 1
    with pytest.raises(ValueError, match="complete_scores"):
        rank_then_aggregate(df.iloc[:-1])  # C has no row for c2


# -- missing and failed cases ------------------------------------------------------------------------------

def test_complete_scores_fills_worst_values():
    df = pd.DataFrame([
        (1, "a", 1, "dice", 0.8), (1, "a", 1, "hd95", 3.0), (1, "b", 1, "dice", np.nan), (1, "b", 1, "hd95", np.nan),
        (2, "a", 1, "dice", 0.9), (2, "a", 1, "hd95", 2.0),  # entry 2 failed on case b: no rows at all
    ], columns=["entry", "case", "label", "metric", "value"])
    full = complete_scores(df, worst={"dice": 0.0, "hd95": {"a": 300.0, "b": 350.0}})
    assert len(full) == 2 * 2 * 1 * 2
    key = full.set_index(["entry", "case", "label", "metric"])
    assert key.loc[(2, "b", 1, "dice"), "value"] == 0.0 and key.loc[(2, "b", 1, "hd95"), "value"] == 350.0
    assert key.loc[(2, "b", 1, "dice"), "filled"] and not key.loc[(1, "a", 1, "dice"), "filled"]
    assert np.isnan(key.loc[(1, "b", 1, "dice"), "value"])  # excluded by the empty policy stays excluded
    assert int(full["filled"].sum()) == 2
    # a phase case nobody submitted for, and an entry without any result, are filled too
    more = complete_scores(df, entries=[1, 2, 3], cases=["a", "b", "c"], worst={"dice": 0.0, "hd95": 400.0},
                           indicator=None)
    assert len(more) == 3 * 3 * 2 and "filled" not in more.columns
    assert (more[more["entry"] == 3]["value"].to_numpy() == np.tile([0.0, 400.0], 3)).all()
    # ranking on completed scores penalises the failure: entry 2 drops below entry 1
    before = aggregate_then_rank(df, "dice", {"dice": True}).set_index("entry")["rank"].to_dict()
    after = aggregate_then_rank(full, "dice", {"dice": True}).set_index("entry")["rank"].to_dict()
    assert before == {2: 1, 1: 2} and after == {1: 1, 2: 2}
    with pytest.raises(ValueError, match="no worst value for metric 'hd95'"):
        complete_scores(df, worst={"dice": 0.0})
    with pytest.raises(ValueError, match="no worst value for case 'b'"):
        complete_scores(df, worst={"dice": 0.0, "hd95": {"a": 1.0}})
    with pytest.raises(ValueError, match="duplicate"):
        complete_scores(pd.concat([df, df.iloc[:1]]), worst={"dice": 0.0, "hd95": 1.0})


def test_worst_values_from_spec():
    from arena.tasks.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "tasks" / "han-oar-9")
    with pytest.raises(ValueError, match="hd95"):
        worst_values(spec)  # 'diagonal' policy: the diagonal must be given
    assert worst_values(spec, diagonal_mm=512.0) == {"dice": 0.0, "hd95": 512.0}
    stated = spec.model_copy(update={"ranking": spec.ranking.model_copy(update={"worst": {"hd95": 100.0}})})
    assert worst_values(stated) == {"dice": 0.0, "hd95": 100.0}


def test_select_team_entries_best_and_latest():
    entries = pd.DataFrame({"entry": [1, 2, 3, 4], "team": ["x", "x", "y", "y"],
                            "submitted": pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-02", "2024-01-02"])})
    board = pd.DataFrame({"entry": [2, 1, 3, 4], "rank": [1, 2, 3, 3]})
    best = select_team_entries(entries, "best", board=board)
    assert best["entry"].tolist() == [2, 3]  # y: 3 and 4 tie on rank and time -> the lower id
    latest = select_team_entries(entries, "latest")
    assert latest["entry"].tolist() == [2, 4]  # y: same time -> the higher id
    no_board = select_team_entries(entries, "best", board=board[board["entry"] != 2])
    assert no_board["entry"].tolist() == [1, 3]
    with pytest.raises(ValueError, match="board"):
        select_team_entries(entries, "best")
    with pytest.raises(ValueError, match="how"):
        select_team_entries(entries, "first", board=board)
