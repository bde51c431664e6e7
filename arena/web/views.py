"""Plain-dict views of ORM objects, shared by the JSON API and the pages."""

from __future__ import annotations

import math
from typing import Any

from arena.lifecycle import EvaluationStatus
from arena.models import Evaluation, Submission
from arena.tasks.store import spec_of


def _num(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


REDACTED = {
    "timeout": "the case ran past its time limit",
    "evaluation-timeout": "the evaluation ran past its time limit",
    "out-of-memory": "the container ran out of memory",
    "pids-exhausted": "the container hit its process limit",
    "output-too-large": "the output was larger than allowed",
    "non-zero-exit": "the container exited with an error",
    "invalid-output": "the output did not match the contract (file, geometry or labels)",
    "engine-error": "the platform could not run the container (not your fault; organizers are told)",
    "no-gpu": "no GPU was available (not your fault)",
    "skipped": "not run (an earlier case failed and the task fails fast)",
}


def evaluation_view(ev: Evaluation, show_cases: bool, show_logs: bool) -> dict[str, Any]:
    """An evaluation as JSON-ready dict.

    Hidden phases give participants a redacted diagnosis: with ``show_logs`` false, no logs and no
    error text (stderr can carry hidden data), only the failure class in words; with ``show_cases``
    false, per case only index, status, failure class and exit code — no case ids, no scores.
    """
    spec = spec_of(ev.submission.task)
    out: dict[str, Any] = {
        "id": ev.id, "status": ev.status.value, "error": ev.error if show_logs else
        (ev.error and "the evaluation failed; see the cases' failure classes"),
        "cases_done": ev.cases_done,
        "cases_total": ev.cases_total, "created_at": ev.created_at.isoformat() + "Z",
        "started_at": ev.started_at.isoformat() + "Z" if ev.started_at else None,
        "finished_at": ev.finished_at.isoformat() + "Z" if ev.finished_at else None,
    }
    if ev.status == EvaluationStatus.RUNNING:
        out["progress"] = f"case {min(ev.cases_done + 1, ev.cases_total)}/{ev.cases_total}"
    if not show_cases:
        out["diagnosis"] = [{"index": i + 1, "status": cr.status.value, "failure": cr.failure,
                             "exit_code": cr.exit_code} for i, cr in enumerate(ev.case_results)]
        return out
    cases = []
    for cr in ev.case_results:
        scores: dict[str, dict[str, float | None]] = {}
        for mv in cr.metrics:
            name = spec.labels[mv.label].name if mv.label in spec.labels else str(mv.label)
            scores.setdefault(name, {})[mv.metric] = _num(mv.value)
        error = cr.error if show_logs else (REDACTED.get(cr.failure or "", cr.failure) if cr.error else None)
        case = {"case": cr.case.key, "status": cr.status.value, "failure": cr.failure, "error": error,
                "runtime_s": cr.runtime_s, "exit_code": cr.exit_code, "cpu_s": cr.cpu_s,
                "peak_memory_mb": cr.peak_memory_mb, "pids_peak": cr.pids_peak,
                "gpu_memory_peak_mb": cr.gpu_memory_peak_mb, "gpu_utilization_mean": cr.gpu_utilization_mean,
                "scores": scores}
        if show_logs:
            case["log_tail"] = cr.log_tail
        cases.append(case)
    out["cases"] = cases
    return out


def submission_view(sub: Submission, viewer_is_organizer: bool = False, hide_scores: bool = False) -> dict[str, Any]:
    """``hide_scores``: the phase hides scores even from the team until its reveal time (status only)."""
    phase_spec = spec_of(sub.task).phase(sub.phase.slug)
    show_cases = viewer_is_organizer or (phase_spec.show_case_results and not hide_scores)
    show_logs = viewer_is_organizer or (phase_spec.show_logs and not hide_scores)
    return {
        "id": sub.id, "task": sub.task.slug, "phase": sub.phase.slug, "team": sub.team.name,
        "label": sub.label, "status": sub.display_status, "intake_status": sub.status.value, "error": sub.error,
        "image_id": sub.image_id, "upload_sha256": sub.upload_sha256, "upload_bytes": sub.upload_bytes,
        "created_at": sub.created_at.isoformat() + "Z", "scores_hidden": hide_scores and not viewer_is_organizer,
        "evaluations": [evaluation_view(ev, show_cases, show_logs) for ev in sub.evaluations],
    }
