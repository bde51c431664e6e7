"""The science behind the boards: DigestPath's one recall (checked by hand), penalties marked as penalties,
few cases called uninformative."""

from __future__ import annotations

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
