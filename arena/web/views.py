"""Plain-dict views of ORM objects, shared by the JSON API and the pages."""

from __future__ import annotations

import math
from typing import Any

from arena.disclosure import coarse, failed_outcome, outcome_counts
from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import Evaluation, Submission, User
from arena.tasks.store import spec_of
from arena.users import is_organizer


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

    With ``show_logs`` false, no logs and no error text (stderr can carry hidden data), only the failure
    class in words. With ``show_cases`` false (the viewer may not see this phase's cases), only what
    arena.disclosure allows: see :func:`hidden_evaluation_view`.
    """
    if not show_cases:
        return hidden_evaluation_view(ev)
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


def hidden_evaluation_view(ev: Evaluation) -> dict[str, Any]:
    """An evaluation as a participant of a phase that hides its cases sees it (arena.disclosure): status,
    no progress while it runs; once finished, one outcome, cases per outcome and the total runtime to one
    significant digit. No exit codes, per-case runtimes or memory, error text, logs, case ids or scores."""
    finished = ev.status.finished
    counts = outcome_counts((cr.status, cr.failure) for cr in ev.case_results) if finished else {}
    duration = (ev.finished_at - ev.started_at).total_seconds() if finished and ev.started_at and ev.finished_at \
        else None
    return {
        "id": ev.id, "status": ev.status.value,
        "outcome": failed_outcome(counts, ev.fault) if ev.status == EvaluationStatus.FAILED else ev.status.value,
        "error": None, "cases_done": ev.cases_done if finished else 0, "cases_total": ev.cases_total,
        "created_at": ev.created_at.isoformat() + "Z", "started_at": None, "finished_at": None,
        "duration_s": coarse(duration), "diagnosis": [{"outcome": k, "cases": n} for k, n in counts.items()],
    }


def cases_hidden(sub: Submission, viewer_is_organizer: bool) -> bool:
    """The viewer gets the redacted view of ``sub``'s runs (:func:`hidden_evaluation_view`): a participant
    in a phase that hides its cases (task.yaml ``show_case_results: false``, or private before its reveal)."""
    if viewer_is_organizer:
        return False
    return not spec_of(sub.task).phase(sub.phase.slug).show_case_results or sub.phase.scores_hidden_from_teams()


def status_for(sub: Submission, hidden: bool) -> str:
    """``sub.display_status``, without the "(case i/N)" of a running evaluation when its cases are
    ``hidden`` from the viewer (polling it would time each hidden case)."""
    ev = sub.latest_evaluation
    if hidden and sub.status == SubmissionStatus.VALIDATED and ev is not None:
        return ev.status.value
    return sub.display_status


def listed_status(sub: Submission, viewer: User | None) -> str:
    """The status of ``sub`` in a list shown to ``viewer`` (see :func:`status_for`)."""
    return status_for(sub, cases_hidden(sub, is_organizer(viewer, sub.task)))


def submission_view(sub: Submission, viewer_is_organizer: bool = False, hide_scores: bool = False) -> dict[str, Any]:
    """``hide_scores``: the phase hides scores even from the team until its reveal time (status only)."""
    phase_spec = spec_of(sub.task).phase(sub.phase.slug)
    show_cases = viewer_is_organizer or (phase_spec.show_case_results and not hide_scores)
    show_logs = viewer_is_organizer or (phase_spec.show_logs and not hide_scores)
    return {
        "id": sub.id, "task": sub.task.slug, "phase": sub.phase.slug, "team": sub.team.name,
        "label": sub.label, "status": status_for(sub, hidden=not show_cases), "intake_status": sub.status.value,
        "error": sub.error,
        "image_id": sub.image_id, "upload_sha256": sub.upload_sha256, "upload_bytes": sub.upload_bytes,
        "model": ({"sha256": sub.model_archive.sha256, "bytes": sub.model_archive.bytes,
                   "files": sub.model_archive.files} if sub.model_archive is not None else None),
        "created_at": sub.created_at.isoformat() + "Z", "scores_hidden": hide_scores and not viewer_is_organizer,
        "evaluations": [evaluation_view(ev, show_cases, show_logs) for ev in sub.evaluations],
    }
