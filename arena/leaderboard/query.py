"""Reading scores from the database into the ranking functions' tables."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from arena.leaderboard.ranking import SCORE_COLUMNS, aggregate_then_rank, best_per_group
from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import Case, CaseResult, Evaluation, MetricValue, Phase, Submission, Task
from arena.tasks.spec import TaskSpec
from arena.tasks.store import spec_of


@dataclass
class Leaderboard:
    task: Task
    phase: Phase
    spec: TaskSpec
    table: pd.DataFrame  # one row per entry, ranked; see aggregate_then_rank
    entries: pd.DataFrame  # entry → submission_id, evaluation_id, team, label, submitted


def evaluation_scores(session: Session, evaluation_ids: list[int]) -> pd.DataFrame:
    """Long score table (entry = evaluation id) for the given evaluations."""
    if not evaluation_ids:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    rows = session.execute(
        select(CaseResult.evaluation_id, Case.key, MetricValue.label, MetricValue.metric, MetricValue.value)
        .join(MetricValue, MetricValue.case_result_id == CaseResult.id)
        .join(Case, Case.id == CaseResult.case_id)
        .where(CaseResult.evaluation_id.in_(evaluation_ids))
    ).all()
    df = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    df["value"] = df["value"].astype(float)
    return df


def leaderboard(session: Session, task: Task, phase: Phase, per_team: bool = True) -> Leaderboard:
    """The phase's leaderboard: each validated submission's latest succeeded evaluation, ranked as the
    task says; with ``per_team``, only each team's best entry."""
    spec = spec_of(task)
    subs = session.scalars(select(Submission).where(Submission.phase_id == phase.id,
                                                    Submission.status == SubmissionStatus.VALIDATED)).all()
    entries = []
    for sub in subs:
        ev = next((e for e in reversed(sub.evaluations) if e.status == EvaluationStatus.SUCCEEDED), None)
        if ev is not None:
            entries.append({"entry": ev.id, "submission_id": sub.id, "evaluation_id": ev.id, "team": sub.team.name,
                            "label": sub.label or f"submission {sub.id}", "submitted": sub.created_at})
    entries_df = pd.DataFrame(entries, columns=["entry", "submission_id", "evaluation_id", "team", "label", "submitted"])
    scores = evaluation_scores(session, [e["entry"] for e in entries])
    weights = {lab: s.weight for lab, s in spec.labels.items()} if spec.ranking.label_weights else None
    table = aggregate_then_rank(scores, spec.ranking.primary,
                                {m.name: TaskSpec.higher_is_better(m.name) for m in spec.metrics},
                                label_weights=weights, label_names={lab: s.name for lab, s in spec.labels.items()})
    if per_team and not table.empty:
        table = best_per_group(table, dict(zip(entries_df["entry"], entries_df["team"])))
    if not table.empty:
        table = table.merge(entries_df, on="entry", how="left")
    return Leaderboard(task, phase, spec, table, entries_df)
