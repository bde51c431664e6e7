"""The science behind the boards: DigestPath's one recall (checked by hand), penalties marked as penalties,
few cases called uninformative."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arena.leaderboard.ranking import digestpath_metrics
from arena.metrics.detection import (
    digestpath_numbers,
    digestpath_recall,
    pr_curve_from_scores,
    recall_at_precision,
    score_detection,
)

REPO = Path(__file__).resolve().parents[1]

# -- DigestPath recall: one definition, worked by hand ------------------------------------------------------
#
# Ten boxes pooled over the tiles, 3 target cells. Probabilities and whether each box hit a target:
#   0.9 hit, 0.8 miss, 0.7 miss, 0.6 miss, 0.5 miss, 0.4 miss, 0.3 miss, 0.2 miss, 0.15 miss, 0.1 hit
# Operating points (keep boxes with probability >= t):
#   t    TP FP  precision      recall
#   0.9  1  0   1/1 = 1.000    1/3
#   0.8  1  1   1/2 = 0.500    1/3
#   0.7  1  2   1/3 = 0.333    1/3
#   0.6  1  3   1/4 = 0.250    1/3
#   0.5  1  4   1/5 = 0.200    1/3   <- exactly 0.2: not "more than 20%"
#   0.4  1  5   1/6 = 0.167    1/3
#   0.3  1  6   1/7 = 0.143    1/3
#   0.2  1  7   1/8 = 0.125    1/3
#   0.15 1  8   1/9 = 0.111    1/3
#   0.1  2  8   2/10 = 0.200   2/3   <- exactly 0.2 again, with the higher recall
# DigestPath (precision strictly above 0.2): the best recall among t = 0.9 ... 0.6 is 1/3.
# A ">= 0.2" reading would take t = 0.1 and report 2/3: the two readings Arena had differ here.
HAND_PROBS = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1]
HAND_HIT = [True, False, False, False, False, False, False, False, False, True]


def test_digestpath_recall_matches_the_hand_worked_example():
    pr = pr_curve_from_scores(HAND_PROBS, HAND_HIT, n_gt=3)
    assert digestpath_recall(pr) == pytest.approx(1 / 3)
    assert recall_at_precision(pr, 0.2) == pytest.approx(2 / 3)  # the general ">=" read-out is a different number
    # the tile kinds' set-level path (pooled TP / FP probabilities) gives the same number
    tp = [p for p, h in zip(HAND_PROBS, HAND_HIT) if h]
    fp = [p for p, h in zip(HAND_PROBS, HAND_HIT) if not h]
    assert digestpath_numbers(np.array(tp), np.array(fp), np.array([]), 3, 0)["recall"] == pytest.approx(1 / 3)
    # and so does the score_detection path the ranking helper reads
    result = {"digestpath_recall": digestpath_recall(pr), "counts": {"fp_on_negative_images": 0},
              "normal_region_froc": None}
    assert digestpath_metrics(result)["recall"] == pytest.approx(1 / 3)
    assert digestpath_metrics(result, pr=pr)["recall"] == pytest.approx(1 / 3)


def test_digestpath_recall_is_the_all_boxes_recall_when_their_precision_clears_0_2():
    # 4 targets; boxes 0.9 hit, 0.5 miss, 0.3 hit. Points: 0.9 -> P 1, R 1/4; 0.5 -> P 1/2, R 1/4;
    # 0.3 -> P 2/3, R 2/4. All boxes together: precision 2/3 > 0.2, recall 2/4 = 0.5, which is the answer.
    pr = pr_curve_from_scores([0.9, 0.5, 0.3], [True, False, True], n_gt=4)
    assert digestpath_recall(pr) == 0.5
    # no operating point above 0.2 -> 0; no targets -> NaN
    assert digestpath_recall(pr_curve_from_scores([0.9, 0.8, 0.7, 0.6, 0.5], [False] * 4 + [True], n_gt=1)) == 0.0
    assert np.isnan(digestpath_recall(pr_curve_from_scores([0.9], [False], n_gt=0)))


def test_score_detection_reports_the_digestpath_recall():
    # one tile, 2 target cells at (0,0) and (10,10); boxes at (0,0) p .9 (hit), (50,50) p .8 (miss):
    # points 0.9 -> P 1, R 1/2; 0.8 -> P 1/2, R 1/2 -> DigestPath recall 0.5
    pred = pd.DataFrame({"image": ["p1", "p1"], "x": [0.0, 50.0], "y": [0.0, 50.0], "probability": [0.9, 0.8]})
    gt = pd.DataFrame({"image": ["p1", "p1"], "x": [0.0, 10.0], "y": [0.0, 10.0]})
    res = score_detection(pred, gt, criterion="distance", threshold=3.0)
    assert res["digestpath_recall"] == 0.5 and digestpath_metrics(res)["recall"] == 0.5


# -- penalties are marked as penalties ----------------------------------------------------------------------

def test_penalty_mask_finds_filled_and_policy_distances():
    from arena.leaderboard.ranking import is_penalty, penalty_counts, penalty_mask

    s = pd.DataFrame({"entry": [1, 1, 1, 2, 2], "case": ["a", "a", "b", "b", "b"], "label": [1, 1, 1, 2, 2],
                      "metric": ["dice", "hd95", "hd95", "hd95", "dice"], "value": [0.0, 301.25, 4.0, 88.0, 0.0],
                      "filled": [False, False, False, True, True]})
    # case a's diagonal is 301.25 mm: entry 1 missed label 1 there; entry 2's case b failed (filled in)
    mask = penalty_mask(s, {"dice": 0.0, "hd95": {"a": 301.25, "b": 250.0}})
    assert mask.tolist() == [False, True, False, True, False]  # Dice 0 is a true Dice, never a penalty
    counts = penalty_counts(s, mask, {1: "BrainStem", 2: "Chiasm"}).set_index("entry")
    assert counts.loc[1, "penalties:hd95"] == 1 and counts.loc[1, "penalties:hd95:BrainStem"] == 1
    assert counts.loc[2, "penalties:hd95:Chiasm"] == 1 and counts.loc[2, "penalties:hd95:BrainStem"] == 0
    assert is_penalty(301.25, 301.25) and not is_penalty(301.0, 301.25) and not is_penalty(None, 3.0)


@pytest.fixture
def two_case_board(settings, db, shared_data):
    """han-oar-9 with two real PDDCA label maps as validation cases; team Alpha misses the chiasm in the first
    case (Dice 0, HD95 = that case's image diagonal), team Beta measures everything."""
    from arena.leaderboard.query import _diagonal_mm
    from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
    from arena.models import CaseResult, Evaluation, MetricValue, Submission
    from arena.tasks.store import add_case, upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-9")
    val = next(p for p in task.phases if p.slug == "validation")
    for cid in ("0522c0001", "0522c0002"):
        ref = shared_data / "pddca" / cid / "labelmap_9oar.nii.gz"
        add_case(db, settings, task, cid, ref, ref, [val])
    first = val.cases[0]
    diagonal = _diagonal_mm(first.reference_path)
    subs = {}
    for team, dice in (("Alpha", 0.85), ("Beta", 0.7)):
        user, _ = create_user(db, team.lower(), team=team, password="correct horse battery staple")
        sub = Submission(task=task, phase=val, team=user.team, user=user, label=f"{team} v1",
                         status=SubmissionStatus.VALIDATED, image_id=f"sha256:{team}")
        ev = Evaluation(submission=sub, status=EvaluationStatus.SUCCEEDED, cases_total=2, cases_done=2)
        db.add_all([sub, ev])
        db.flush()
        for case in val.cases:
            cr = CaseResult(evaluation_id=ev.id, case_id=case.id, status=CaseStatus.SUCCEEDED)
            missed = team == "Alpha" and case.id == first.id
            cr.metrics = [MetricValue(label=lab, metric="dice", value=0.0 if missed and lab == 2 else dice)
                          for lab in range(1, 10)]
            cr.metrics += [MetricValue(label=lab, metric="hd95", value=diagonal if missed and lab == 2 else 3.0)
                           for lab in range(1, 10)]
            db.add(cr)
        subs[team] = sub.id
    db.commit()
    return task, val, subs, diagonal


def test_board_page_csv_json_and_plots_mark_penalties_and_few_cases(two_case_board, settings, db):
    from arena.leaderboard.query import compute_leaderboard
    from arena.leaderboard.statistics import NOT_INFORMATIVE
    from arena.web import create_app
    from tests.web_helpers import sign_in

    task, val, subs, diagonal = two_case_board
    board = compute_leaderboard(db, task, val)
    t = board.table[board.table["rank"].notna()].set_index("team")
    assert t.loc["Alpha", "penalties:hd95"] == 1 and t.loc["Alpha", "penalties:hd95:Chiasm"] == 1
    assert t.loc["Beta", "penalties:hd95"] == 0
    pen = board.scores[board.scores["penalty"]]
    assert len(pen) == 1 and pen["value"].item() == pytest.approx(diagonal)
    # 2 cases: the bootstrap still runs, but the board says it is not informative
    assert (t["uncertainty"] == NOT_INFORMATIVE).all() and board.bootstrap.attrs["informative"] is False

    client = create_app(settings).test_client()
    page = client.get("/tasks/han-oar-9?phase=validation").get_data(as_text=True)
    assert "1 pen." in page and "n &lt; 10: not informative" in page
    api = client.get("/api/v1/tasks/han-oar-9/leaderboard?phase=validation").get_json()
    ranked = [r for r in api["rows"] if r["rank"] is not None]
    assert all(r["uncertainty"] == NOT_INFORMATIVE for r in ranked)
    assert {r["team"]: r["penalties:hd95"] for r in ranked} == {"Alpha": 1, "Beta": 0}
    csv = client.get("/tasks/han-oar-9/leaderboard.csv?phase=validation").get_data(as_text=True)
    assert "penalties:hd95" in csv.splitlines()[0] and "uncertainty" in csv.splitlines()[0]
    alpha_entry = int(t.loc["Alpha", "entry"])
    svg = client.get(f"/tasks/han-oar-9/distributions.svg?phase=validation&metric=hd95&entry={alpha_entry}")
    assert svg.status_code == 200 and b"1 penalty value (" in svg.data and b"not to scale" in svg.data
    cmp = client.get("/tasks/han-oar-9/compare?phase=validation&metric=dice").get_data(as_text=True)
    assert "n &lt; 10: not informative" in cmp
    rank_svg = client.get("/tasks/han-oar-9/rank-distribution.svg?phase=validation")
    assert rank_svg.status_code == 200 and b"not informative" in rank_svg.data

    # the submission page marks the penalty cell; the results export flags it
    sign_in(client, "alpha", "correct horse battery staple")
    sub_page = client.get(f"/submissions/{subs['Alpha']}").get_data(as_text=True)
    assert sub_page.count("<sup>penalty</sup>") == 1 and "filled in, not measured" in sub_page
    from arena.models import Submission
    from arena.web.export import result_rows

    rows = result_rows([db.get(Submission, subs["Alpha"])])
    flagged = [(r["case"], r["label_name"]) for r in rows if r["hd95_penalty"]]
    assert flagged == [(val.cases[0].key, "Chiasm")]
    assert all(r["hd95_penalty"] is False for r in rows if (r["case"], r["label_name"]) not in flagged)


def test_pairwise_compare_on_few_cases_is_not_informative():
    from arena.leaderboard.statistics import NOT_INFORMATIVE, informative, pairwise_compare

    # 6 cases, A always better by a clear margin: Wilcoxon's exact p = 0.03125 < 0.05, but 6 < 10 cases
    rows = [(e, f"c{i}", 1, "dice", v) for i in range(6) for e, v in (("A", 0.9 - 0.01 * i), ("B", 0.5))]
    t = pairwise_compare(pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"]), "A", "B", "dice")
    assert t.loc[0, "p"] == pytest.approx(0.03125) and not t.loc[0, "significant"]
    assert not t.loc[0, "informative"] and t.loc[0, "note"] == NOT_INFORMATIVE
    assert not informative(9) and informative(10)
