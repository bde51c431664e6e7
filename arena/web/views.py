"""Plain-dict views of ORM objects, shared by the JSON API and the pages."""

from __future__ import annotations

import math
from typing import Any

from arena.lifecycle import EvaluationStatus
from arena.models import Evaluation, Submission
from arena.tasks.store import spec_of


def _num(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def evaluation_view(ev: Evaluation, show_cases: bool, show_logs: bool) -> dict[str, Any]:
    spec = spec_of(ev.submission.task)
    out: dict[str, Any] = {
        "id": ev.id, "status": ev.status.value, "error": ev.error, "cases_done": ev.cases_done,
        "cases_total": ev.cases_total, "created_at": ev.created_at.isoformat() + "Z",
        "started_at": ev.started_at.isoformat() + "Z" if ev.started_at else None,
        "finished_at": ev.finished_at.isoformat() + "Z" if ev.finished_at else None,
    }
    if ev.status == EvaluationStatus.RUNNING:
        out["progress"] = f"case {min(ev.cases_done + 1, ev.cases_total)}/{ev.cases_total}"
    if show_cases:
        cases = []
        for cr in ev.case_results:
            scores: dict[str, dict[str, float | None]] = {}
            for mv in cr.metrics:
                name = spec.labels[mv.label].name if mv.label in spec.labels else str(mv.label)
                scores.setdefault(name, {})[mv.metric] = _num(mv.value)
            case = {"case": cr.case.key, "status": cr.status.value, "error": cr.error,
                    "runtime_s": cr.runtime_s, "exit_code": cr.exit_code, "scores": scores}
            if show_logs:
                case["log_tail"] = cr.log_tail
            cases.append(case)
        out["cases"] = cases
    return out


def submission_view(sub: Submission, viewer_is_organizer: bool = False) -> dict[str, Any]:
    phase_spec = spec_of(sub.task).phase(sub.phase.slug)
    show_cases = viewer_is_organizer or phase_spec.show_case_results
    show_logs = viewer_is_organizer or phase_spec.show_logs
    return {
        "id": sub.id, "task": sub.task.slug, "phase": sub.phase.slug, "team": sub.team.name,
        "label": sub.label, "status": sub.display_status, "intake_status": sub.status.value, "error": sub.error,
        "image_id": sub.image_id, "upload_sha256": sub.upload_sha256, "upload_bytes": sub.upload_bytes,
        "created_at": sub.created_at.isoformat() + "Z",
        "evaluations": [evaluation_view(ev, show_cases, show_logs) for ev in sub.evaluations],
    }
