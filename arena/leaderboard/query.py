"""Reading scores from the database into the ranking functions' tables, and caching boards.

A board is computed by the pure functions in ranking.py / statistics.py:

1. entries: each validated submission's latest succeeded evaluation in the phase;
2. the long score table is completed (a failed or missing case gets the metric's worst value, never
   dropped) over the phase's cases × the task's labels × metrics;
3. one entry per team (the phase's ``team_entry``: best or latest) — the reference team's models each count as
   a team of their own — ranked by the task's rule;
4. bootstrap over cases → rank interval and probability of being first per entry (with fewer than 10
   cases an ``uncertainty`` column says "n < 10: not informative");
   penalties (a missed organ's or failed case's distance) are flagged in ``scores["penalty"]`` and
   counted per entry in ``penalties:<metric>[:<organ>]`` columns;
5. published results (tasks/<slug>/literature.csv) placed, not ranked.

Boards are cached per (phase, result version): a new result or a re-run changes the version.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd
import SimpleITK as sitk
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from arena.disclosure import coarse
from arena.leaderboard.ranking import (
    SCORE_COLUMNS,
    board_arguments,
    complete_scores,
    penalty_counts,
    penalty_mask,
    place_literature,
    rank_by_spec,
    select_team_entries,
    with_literature,
    worst_values,
)
from arena.leaderboard.statistics import NOT_INFORMATIVE
from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.metrics.directions import DISTANCE_METRICS
from arena.models import Case, CaseResult, Evaluation, MetricValue, Phase, Submission, Task
from arena.tasks.literature import load_literature
from arena.tasks.spec import TaskSpec
from arena.tasks.store import spec_of


@dataclass
class Leaderboard:
    task: Task
    phase: Phase
    spec: TaskSpec
    table: pd.DataFrame  # one row per shown entry, ranked (published rows have rank NaN)
    entries: pd.DataFrame  # entry → submission_id, evaluation_id, team, label, submitted
    scores: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SCORE_COLUMNS))  # completed
    bootstrap: pd.DataFrame | None = None  # statistics.bootstrap_ranks output for the ranked entries
    names: dict = field(default_factory=dict)  # entry → display name


def evaluation_scores(session: Session, evaluation_ids: list[int]) -> pd.DataFrame:
    """Long score table (entry = evaluation id) for the given evaluations."""
    if not evaluation_ids:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    stmt = (select(CaseResult.evaluation_id, Case.key, MetricValue.label, MetricValue.metric, MetricValue.value)
            .join(MetricValue, MetricValue.case_result_id == CaseResult.id)
            .join(Case, Case.id == CaseResult.case_id)
            .where(CaseResult.evaluation_id.in_([int(e) for e in evaluation_ids])))
    # Plain DBAPI tuples: building a DataFrame from 10⁵–10⁶ SQLAlchemy Row objects is ~10× slower.
    conn = session.connection()
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(str(compiled))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    df = pd.DataFrame.from_records(rows, columns=SCORE_COLUMNS)
    df["value"] = df["value"].astype(float)
    return df


def penalty_distance(spec: TaskSpec, case: Case) -> float | None:
    """The distance (mm) a missed organ or failed case gets in ``case`` under the task's empty-mask policy:
    the stated number, or the image diagonal of the case's reference (from its header); None when the
    policy gives NaN or the reference file is gone."""
    policy = spec.empty_policy.one_empty_distance
    if isinstance(policy, (int, float)):
        return float(policy)
    if policy == "diagonal" and Path(case.reference_path).is_file():
        return _diagonal_mm(case.reference_path)
    return None


@lru_cache(maxsize=4096)
def _diagonal_mm(path: str) -> float:
    """The image diagonal (mm) of a case, from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(reader.GetSize(), reader.GetSpacing()))))


ENTRY_COLUMNS = ["entry", "submission_id", "evaluation_id", "team", "competitor", "label", "submitted", "badge",
                 "provenance", "runtime_s", "peak_memory_mb"]


def _resources(session: Session, evaluation_ids: list[int]) -> dict[int, tuple[float | None, float | None]]:
    """Per evaluation: mean container wall time per case (seconds) and the largest peak memory of a case (MB),
    over the cases that ran (None where no case recorded it)."""
    if not evaluation_ids:
        return {}
    rows = session.execute(
        select(CaseResult.evaluation_id, func.avg(CaseResult.runtime_s), func.max(CaseResult.peak_memory_mb))
        .where(CaseResult.evaluation_id.in_(evaluation_ids)).group_by(CaseResult.evaluation_id)).all()
    return {int(e): (None if rt is None else float(rt), None if mem is None else float(mem)) for e, rt, mem in rows}


def _entries(session: Session, phase: Phase) -> pd.DataFrame:
    subs = session.scalars(select(Submission).where(Submission.phase_id == phase.id,
                                                    Submission.status == SubmissionStatus.VALIDATED)).all()
    rows = []
    for sub in subs:
        ev = next((e for e in reversed(sub.evaluations) if e.status == EvaluationStatus.SUCCEEDED), None)
        if ev is not None:
            label = sub.label or f"submission {sub.id}"
            # one row per team on a board; the reference team's models are each a competitor of their own
            rows.append({"entry": ev.id, "submission_id": sub.id, "evaluation_id": ev.id, "team": sub.team.name,
                         "competitor": f"{sub.team.name}\x1f{label}" if sub.team.is_reference else sub.team.name,
                         "label": label, "submitted": sub.created_at,
                         "badge": "reference" if sub.team.is_reference else "",
                         "provenance": sub.provenance or ""})
    res = _resources(session, [r["evaluation_id"] for r in rows])
    hidden = not spec_of(phase.task).phase(phase.slug).show_case_results  # arena.disclosure: coarse only
    for r in rows:
        runtime, memory = res.get(r["evaluation_id"], (None, None))
        r["runtime_s"], r["peak_memory_mb"] = (coarse(runtime), coarse(memory)) if hidden else (runtime, memory)
    return pd.DataFrame(rows, columns=ENTRY_COLUMNS)


def compute_leaderboard(session: Session, task: Task, phase: Phase, *, bootstrap: bool = True) -> Leaderboard:
    """The phase's board, computed now (see the module docstring for the steps)."""
    spec = spec_of(task)
    a = board_arguments(spec, phase.slug)
    entries = _entries(session, phase)
    cases = [c.key for c in phase.cases]
    if entries.empty or not cases:
        return Leaderboard(task, phase, spec, pd.DataFrame(columns=["entry", "rank"]), entries)
    raw = evaluation_scores(session, entries["entry"].tolist())
    if spec.has_set_metrics:  # DigestPath detection, AUC: metrics over the whole phase (set_level.py)
        return _set_level_board(task, phase, spec, a, entries, raw, cases)
    diagonals = {c.key: _diagonal_mm(c.reference_path) for c in phase.cases if Path(c.reference_path).is_file()}
    worst = worst_values(spec, diagonal_mm=diagonals)
    full = complete_scores(raw, entries["entry"].tolist(), cases, list(spec.labels), [m.name for m in spec.metrics],
                           worst)
    full["penalty"] = penalty_mask(full, worst)  # a missed organ's / failed case's distance: not a measurement
    if entries["competitor"].is_unique:
        chosen = entries
    elif a["team_entry"] == "latest":
        chosen = select_team_entries(entries, "latest", team="competitor")
    else:
        chosen = select_team_entries(entries, "best", board=rank_by_spec(full, spec, phase.slug), team="competitor")
    full = full[full["entry"].isin(chosen["entry"])]
    table = rank_by_spec(full, spec, phase.slug)
    boot = None
    if bootstrap and len(chosen) > 1 and len(cases) > 1 and a["bootstrap"]:
        from arena.leaderboard.statistics import bootstrap_by_spec

        boot = bootstrap_by_spec(full, spec, phase.slug)
        table = table.merge(boot[["entry", "rank_p2.5", "rank_p97.5", "p_first"]], on="entry", how="left")
        if not boot.attrs.get("informative", True):
            table["uncertainty"] = NOT_INFORMATIVE  # beside the interval and P(first), in the page, CSV and JSON
    pens = penalty_counts(full, full["penalty"].to_numpy(), a["label_names"])
    if pens.shape[1] > 1:
        table = table.merge(pens, on="entry", how="left")
    table = table.merge(chosen, on="entry", how="left")
    if spec.literature and a["method"] != "rank-then-aggregate":
        lit = load_literature(Path(task.spec_path) / spec.literature, spec)
        if len(lit):
            by = a["metrics"] if a["method"] == "mean-of-metric-ranks" else [a["primary"]]
            placed = place_literature(table, lit, by, a["higher_is_better"], labels=list(spec.labels),
                                      label_weights=a["label_weights"], label_names=a["label_names"],
                                      conventions={m.name: m.convention for m in spec.metrics
                                                   if m.name in DISTANCE_METRICS})
            placed["team"] = placed["model"]
            placed["label"] = placed["source"]
            table = with_literature(table, placed)
    names = {row["entry"]: f"{row['team']} — {row['label']}" for row in chosen.to_dict(orient="records")}
    return Leaderboard(task, phase, spec, table.reset_index(drop=True), chosen, full, boot, names)


def _case_info(case: Case) -> dict:
    """What set-level metrics need to know about a case without any entry's rows: its number of target
    boxes and its image-level truth (from the case's metadata when the loader recorded them)."""
    meta = case.meta or {}
    info = {}
    if "targets" in meta:
        info["targets"] = meta["targets"]
    for k in ("target", "malignant", "positive"):
        if k in meta:
            info["target"] = float(bool(meta[k]))
            break
    return info


def _set_level_board(task: Task, phase: Phase, spec: TaskSpec, a: dict, entries: pd.DataFrame, raw: pd.DataFrame,
                     cases: list) -> Leaderboard:
    """A board of set-level metrics (arena.leaderboard.set_level): DigestPath 2019's rule for detection,
    mean of metric ranks with AUC. No bootstrap rank intervals (not defined here yet)."""
    from arena.leaderboard.set_level import set_level_rank

    info = {c.key: _case_info(c) for c in phase.cases}

    def rank(ents: pd.DataFrame) -> pd.DataFrame:
        return set_level_rank(raw, spec, phase.slug, ents["entry"].tolist(), cases, info)

    if entries["competitor"].is_unique:
        chosen = entries
    elif a["team_entry"] == "latest":
        chosen = select_team_entries(entries, "latest", team="competitor")
    else:
        chosen = select_team_entries(entries, "best", board=rank(entries), team="competitor")
    table = rank(chosen).merge(chosen, on="entry", how="left")
    per_case = raw[raw["entry"].isin(chosen["entry"]) & ~raw["metric"].astype(str).str.contains("#", regex=False)]
    names = {row["entry"]: f"{row['team']} — {row['label']}" for row in chosen.to_dict(orient="records")}
    return Leaderboard(task, phase, spec, table.reset_index(drop=True), chosen, per_case.reset_index(drop=True),
                       None, names)


_CACHE: OrderedDict[tuple, Leaderboard] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 64


def result_version(session: Session, phase: Phase) -> tuple:
    """Changes whenever an evaluation of the phase finishes (or is re-run), or the task spec changes. Holds
    the database's URL too: the caches keyed by it never mix two databases served by one process."""
    row = session.execute(
        select(func.count(Evaluation.id), func.max(Evaluation.id), func.max(Evaluation.finished_at))
        .join(Submission, Submission.id == Evaluation.submission_id)
        .where(Submission.phase_id == phase.id, Evaluation.status == EvaluationStatus.SUCCEEDED)
    ).one()
    return (*row, phase.task.updated_at, len(phase.cases), session.get_bind().url.render_as_string())


def leaderboard(session: Session, task: Task, phase: Phase, *, cached: bool = True) -> Leaderboard:
    """The phase's board, from the cache when nothing changed since it was computed."""
    key = (phase.id, result_version(session, phase))
    if cached:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
                return hit
    board = compute_leaderboard(session, task, phase)
    with _CACHE_LOCK:
        _CACHE[key] = board
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return board
