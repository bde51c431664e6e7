"""What every task kind answers: the interface the runner, the board and the case store ask.

A task kind (CTFd's "challenge type") is one class here. It owns everything that differs between kinds:
which task.yaml shapes it accepts, how a case's reference is read, how an output is found and checked,
how a case is scored and what a failed case scores, the metrics computed over a whole phase, and the
synthetic demo cases. Nothing outside ``arena/kinds`` branches on a task's kind; it asks
``kind_for(spec)`` (see ``arena/kinds/__init__.py``) and calls one of these methods.

Kinds import no Flask, SQLAlchemy or docker, and nothing that imports the task spec at run time (the
spec asks its kind to check it). Their heavier tools (pandas, SimpleITK, scipy through the metrics, the
data generators) are imported inside the methods that use them: loading a task spec must not pay their
start-up (about 0.9 s together, measured with ``python -X importtime``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from arena.metrics.directions import OVERLAP_METRICS, SET_METRICS

if TYPE_CHECKING:
    import pandas as pd

    from arena.tasks.spec import TaskSpec

Scores = dict[int, dict[str, float | None]]  # label -> metric -> value (None: not scored)


@dataclass
class DemoCase:
    """A synthetic case a kind wrote: its files, what to store with it, and its stratum (positive/negative
    tiles are spread over the phases separately, so that every phase gets both)."""

    image: Path
    reference: Path
    meta: dict[str, Any] = field(default_factory=dict)
    stratum: object = None



def cases_with_known_truth(cases: Sequence[Any], truth: Mapping[Any, float]) -> list[Any]:
    """``cases`` without those whose truth (image-level target, number of target boxes) is unknown: no
    case info recorded it and no entry has a row for the case yet (a case imported after the entries were
    scored, or a site's case). Leaving such a case out treats every entry alike (none has scored it), where
    guessing its truth would not; a NaN counts as unknown."""
    return [c for c in cases if c in truth and not np.isnan(truth[c])]

class TaskKind:
    """Base class of the task kinds; subclasses set the class attributes and override the methods."""

    name: ClassVar[str]  # registry key, e.g. "volume-segmentation"
    title: ClassVar[str]  # in words, for `arena task check` and docs
    volumetric: ClassVar[bool] = True  # cases are 3-D volumes converted into the store (else 2-D tiles kept as they are)
    metrics: ClassVar[frozenset[str]]  # the metrics a task of this kind may declare
    ranking_methods: ClassVar[frozenset[str]]  # the ranking methods it may use
    set_ranking_methods: ClassVar[frozenset[str]] = frozenset()  # methods that rank set-level metrics themselves

    # -- the spec --------------------------------------------------------------------------------
    @classmethod
    def matches(cls, spec: TaskSpec) -> bool:
        """Whether ``spec`` (its ``kind`` and ``modality``) is a task of this kind."""
        raise NotImplementedError

    def check_spec(self, spec: TaskSpec) -> list[str]:
        """What is wrong with ``spec`` for this kind, as ``key: expected ...`` sentences (empty: nothing)."""
        problems = []
        names = [m.name for m in spec.metrics]
        other = [m for m in names if m not in self.metrics]
        if other:
            problems.append(f"metrics: a {self.title} task's metrics are {sorted(self.metrics)}, got {other}")
        for slug in ["", *spec.ranking.phases]:
            r = spec.ranking.for_phase(slug) if slug else spec.ranking
            where = f"ranking.phases.{slug}" if slug else "ranking"
            if r.method not in self.ranking_methods:
                allowed = " or ".join(repr(m) for m in sorted(self.ranking_methods))
                problems.append(f"{where}.method: a {self.title} task is ranked by {allowed}, got {r.method!r}")
            elif [m for m in names if m in SET_METRICS] and r.method != "mean-of-metric-ranks" \
                    and r.method not in self.set_ranking_methods:
                problems.append(f"{where}.method: set-level metrics {[m for m in names if m in SET_METRICS]} are "
                                f"ranked by 'mean-of-metric-ranks', got {r.method!r}")
        return problems

    # -- cases -----------------------------------------------------------------------------------
    def load_reference(self, spec: TaskSpec, reference_path: Path, image_path: Path | None = None) -> Any:
        """The case's reference, as :meth:`score_case` takes it."""
        raise NotImplementedError

    def case_meta(self, spec: TaskSpec, reference_path: Path, image_path: Path | None = None) -> dict[str, Any]:
        """What the board needs to know about a case before any entry has scored it, read from its reference
        when the case is registered (stored in ``case.meta``; see ``arena.leaderboard.query._case_info``).
        Empty by default: per-case metrics need nothing beyond each entry's own rows."""
        return {}

    def find_output(self, spec: TaskSpec, results: Path, skipped: Sequence[str]) -> Path:
        """The main output file a container left in ``results`` (the collected /output). Raises
        ``arena.runner.contract.OutputError`` naming what is missing; ``skipped`` (what was not collected)
        is named in that error."""
        raise NotImplementedError

    def read_output(self, spec: TaskSpec, path: Path, results: Path, reference: Any, skipped: Sequence[str],
                    warnings: list[str]) -> Any:
        """Check and read the output at ``path`` (and any other output in ``results``) into a prediction.
        Raises ``OutputError`` naming the problem; ``warnings`` get case-log lines."""
        raise NotImplementedError

    def empty_prediction(self, spec: TaskSpec, reference: Any) -> Any:
        """What a failed case is scored as (an all-background volume, no boxes, ...)."""
        raise NotImplementedError

    def score_case(self, spec: TaskSpec, prediction: Any, reference: Any) -> Scores:
        """Per-label metric values of one case (the rows a board and the set-level metrics read)."""
        raise NotImplementedError

    # -- the board -------------------------------------------------------------------------------
    def entry_metrics(self, scores: pd.DataFrame, spec: TaskSpec, metrics: Sequence[str], entries: Sequence[Any],
                      cases: Sequence[Any], case_info: Mapping[Any, Mapping[str, Any]]) -> pd.DataFrame:
        """One row per entry with ``metrics`` over the phase's ``cases`` (set-level metrics, and per-case
        metrics as their mean over cases, a case without a row counting as the metric's worst value).

        ``scores``: long table ``entry, case, label, metric, value`` of the phase's cases; ``case_info``
        may give ``target`` (image-level truth) for cases no entry has a row for. A case whose truth is
        unknown (no case info) and that no entry has scored yet is left out for every entry alike."""
        import pandas as pd

        from arena.metrics.classification import roc_auc

        truth: dict[Any, float] = dict(scores[scores["metric"] == "target"].groupby("case")["value"].first())
        for c in cases:
            if c not in truth and "target" in case_info.get(c, {}):
                truth[c] = float(case_info[c]["target"])
        cases = cases_with_known_truth(cases, truth)
        worst = dict(spec.ranking.worst)
        out = []
        for e in entries:
            se = scores[scores["entry"] == e]
            row: dict[str, Any] = {"entry": e, "cases": float(se["case"].nunique())}
            for m in metrics:
                if m == "auc":
                    probs = se[se["metric"] == "probability"].groupby("case")["value"].first().to_dict()
                    y = np.array([truth[c] for c in cases])
                    p = np.array([probs.get(c, 1.0 - truth[c]) for c in cases], dtype=float)
                    row["auc"] = roc_auc(y, np.where(np.isnan(p), 1.0 - y, p))
                else:
                    v = se[se["metric"] == m].groupby("case")["value"].mean()
                    w = worst.get(m, 0.0 if m in OVERLAP_METRICS else np.nan)
                    vals = np.array([v.get(c, w) for c in cases], dtype=float)
                    row[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
            out.append(row)
        return pd.DataFrame(out)

    # -- synthetic data --------------------------------------------------------------------------
    def demo_strata(self, spec: TaskSpec, n: int) -> list[object]:
        """The stratum of each of ``n`` demo cases (None: one stratum)."""
        return [None] * n

    def write_demo_case(self, spec: TaskSpec, root: Path, key: str, index: int, size: str,
                        stratum: object = None) -> DemoCase:
        """Write synthetic case ``index`` (seeded, deterministic) below ``root/key``. Raises ValueError when
        the kind has no generator for this task's labels."""
        raise NotImplementedError
