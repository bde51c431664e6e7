"""Boards whose metrics are defined over a whole test set, not per case (pure pandas/numpy).

DigestPath 2019 scores detection over all tiles of a phase together, and an image-level AUC only
exists over a set of images. The runner therefore stores, per case, what these metrics need (as
ordinary MetricValue rows of the task's label, see ``arena/kinds/tiles.py``):

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

- ``recall``: :func:`arena.metrics.detection.digestpath_recall` — the highest recall over the operating
  points (distinct probability thresholds, boxes of all tiles pooled) whose precision is *strictly*
  above ``detection.min_precision`` (0.2; the challenge's "more than 20%"); 0 if none.
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

import pandas as pd

from arena.kinds import kind_for
from arena.leaderboard.ranking import board_arguments, mean_of_metric_ranks

if TYPE_CHECKING:
    from arena.tasks.spec import TaskSpec

__all__ = ["entry_metrics", "set_level_rank"]


def entry_metrics(scores: pd.DataFrame, spec: TaskSpec, phase: str | None, entries: Sequence[Any],
                  cases: Sequence[Any], case_info: Mapping[Any, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per entry with the phase's set-level (and mean per-case) metrics; ``cases`` = the phase's
    cases; ``case_info[case]`` may give ``targets`` (GT boxes) and ``target`` (image-level truth) for cases
    that no entry has a row for (read from the stored rows otherwise). The task's kind computes them
    (:meth:`arena.kinds.base.TaskKind.entry_metrics`)."""
    a = board_arguments(spec, phase)
    metrics = a["metrics"] if a["method"] != "digestpath-2019" else ["recall", "fp_score", "froc"]
    cases = list(cases)
    return kind_for(spec).entry_metrics(scores[scores["case"].isin(cases)], spec, metrics, entries, cases,
                                        dict(case_info or {}))


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
