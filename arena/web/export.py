"""Flat rows for exports (CSV/JSON): submissions, evaluations, per-case per-label results."""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from arena.csv_cells import rows_csv
from arena.metrics.directions import DISTANCE_METRICS
from arena.models import CaseResult, Evaluation, Submission, Task
from arena.tasks.store import spec_of

KINDS = ("submissions", "evaluations", "results")


def _iso(v):
    return v.isoformat() + "Z" if v is not None else None


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def submission_rows(subs: Iterable[Submission]) -> list[dict[str, Any]]:
    return [{"submission_id": s.id, "task": s.task.slug, "phase": s.phase.slug, "team": s.team.name,
             "user": s.user.name if s.user else None, "label": s.label, "status": s.display_status,
             "intake_status": s.status.value, "error": s.error, "upload_bytes": s.upload_bytes,
             "upload_sha256": s.upload_sha256, "image_id": s.image_id, "created_at": _iso(s.created_at),
             "evaluations": len(s.evaluations)} for s in subs]


def evaluation_rows(subs: Iterable[Submission]) -> list[dict[str, Any]]:
    return [{"evaluation_id": e.id, "submission_id": s.id, "task": s.task.slug, "phase": s.phase.slug,
             "team": s.team.name, "status": e.status.value, "cases_done": e.cases_done,
             "cases_total": e.cases_total, "worker": e.worker, "error": e.error, "created_at": _iso(e.created_at),
             "started_at": _iso(e.started_at), "finished_at": _iso(e.finished_at)}
            for s in subs for e in s.evaluations]


def result_rows(subs: Iterable[Submission], evaluation_ids: set[int] | None = None) -> list[dict[str, Any]]:
    """One row per (evaluation, case, label) with every metric as a column, plus run statistics. Each
    distance metric has a ``<metric>_penalty`` column: True where the value is the empty-mask policy's
    penalty (a missed or hallucinated organ: e.g. the image diagonal, filled in, not measured), False
    where it was measured, None where there is no value."""
    from arena.leaderboard.query import penalty_distance  # pandas/SimpleITK only when exporting
    from arena.leaderboard.ranking import is_penalty

    rows = []
    pens: dict[int, float | None] = {}
    for s in subs:
        spec = spec_of(s.task)
        names = {k: v.name for k, v in spec.labels.items()}
        metrics = [m.name for m in spec.metrics]
        distances = [m for m in metrics if m in DISTANCE_METRICS]
        for e in s.evaluations:
            if evaluation_ids is not None and e.id not in evaluation_ids:
                continue
            for cr in e.case_results:
                by_label: dict[int, dict[str, Any]] = {}
                for mv in cr.metrics:
                    by_label.setdefault(mv.label, {})[mv.metric] = _num(mv.value)
                pen = None
                if distances and by_label:  # once per case, not per submission and evaluation that scored it
                    if cr.case_id not in pens:
                        pens[cr.case_id] = penalty_distance(spec, cr.case)
                    pen = pens[cr.case_id]
                for label in sorted(by_label) or [None]:
                    row = {"evaluation_id": e.id, "submission_id": s.id, "team": s.team.name, "phase": s.phase.slug,
                           "case": cr.case.key, "case_status": cr.status.value, "failure": cr.failure,
                           "runtime_s": cr.runtime_s, "peak_memory_mb": cr.peak_memory_mb,
                           "gpu_memory_peak_mb": cr.gpu_memory_peak_mb, "label": label,
                           "label_name": names.get(label, str(label)) if label is not None else None}
                    for m in metrics:
                        row[m] = by_label.get(label, {}).get(m) if label is not None else None
                    for m in distances:
                        row[f"{m}_penalty"] = None if row[m] is None else is_penalty(row[m], pen)
                    rows.append(row)
    return rows


def task_submissions(session: Session, task: Task) -> list[Submission]:
    return list(session.scalars(
        select(Submission).where(Submission.task_id == task.id).order_by(Submission.id)
        .options(selectinload(Submission.evaluations).selectinload(Evaluation.case_results)
                 .selectinload(CaseResult.metrics), selectinload(Submission.team))))


def rows_for(session: Session, task: Task, kind: str) -> list[dict[str, Any]]:
    subs = task_submissions(session, task)
    return {"submissions": submission_rows, "evaluations": evaluation_rows, "results": result_rows}[kind](subs)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Export rows as CSV (cells a spreadsheet would run as formulas neutralised: :mod:`arena.csv_cells`)."""
    return rows_csv(rows)


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1)
