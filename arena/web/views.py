"""Plain-dict views of ORM objects, shared by the JSON API and the pages."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Callable

from sqlalchemy.orm import Session

from arena.disclosure import coarse, failed_outcome, outcome_counts
from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import Evaluation, Phase, Submission, User, utcnow
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
    return phase_hides_cases(sub.phase)


def phase_hides_cases(phase: Phase) -> bool:
    """Participants of ``phase`` see no per-case results (task.yaml ``show_case_results: false``, or a private
    phase before its reveal): no per-case scores, so no per-case distributions or paired comparisons either."""
    return not spec_of(phase.task).phase(phase.slug).show_case_results or phase.scores_hidden_from_teams()


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


def _when(t: dt.datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC" if t else ""


def _reveal(phase: Phase) -> str:
    """" until the reveal on <date>" or " until the organizers reveal it" (a phase without a reveal date)."""
    return f" until the reveal on {_when(phase.reveal_at)}" if phase.reveal_at else " until the organizers reveal it"


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _rank_of(row: dict) -> int | None:
    r = _number(row.get("rank"))
    return None if r is None else int(r)


def standing_view(sub: Submission, *, organizer: bool, rows: Callable[[], list[dict] | None], frozen: bool,
                  own_score: Callable[[], float | None]) -> dict[str, Any]:
    """The overall score and the rank of ``sub`` shown at the top of its page, as its viewer may see them.

    ``rows``: gives the board rows the viewer may read (organizers: the live board; participants: the live
    board, or the frozen snapshot when ``frozen``), None when the board is hidden from them; called only
    for a submission with a succeeded evaluation (a running one costs no board). ``own_score``
    computes the submission's score (the board's primary metric, label-weighted as the board does) when it
    is not on the board; called only where the viewer may see it.

    What a team member is told follows arena.disclosure and the phase's settings: nothing before the reveal
    of a private phase; the rank only from a board they may read (the frozen snapshot while frozen); the
    score of an entry the board does not show only where the phase shows per-case scores anyway.

    Returns ``metric`` (column name, e.g. "weighted mean dice"), ``score`` (None: not shown), ``penalties``
    (how many averaged values are penalty distances, 0 when unknown), ``rank`` and ``ranked`` (entries
    ranked), and ``note`` (one sentence saying why a score or rank is missing, or what the rank is of).
    """
    spec = spec_of(sub.task)
    phase = sub.phase
    primary = spec.ranking.for_phase(phase.slug).primary
    label = primary if spec.has_set_metrics else f"{'weighted ' if spec.ranking.label_weights else ''}mean {primary}"
    out: dict[str, Any] = {"metric": label,
                           "score": None, "penalties": 0, "rank": None, "ranked": 0, "note": ""}
    if not organizer and phase.scores_hidden_from_teams():
        out["note"] = f"Score and rank are hidden{_reveal(phase)}."
        return out
    ev = next((e for e in reversed(sub.evaluations) if e.status == EvaluationStatus.SUCCEEDED), None)
    if sub.status != SubmissionStatus.VALIDATED or ev is None:
        latest = sub.latest_evaluation
        running = sub.status == SubmissionStatus.UPLOADED or (
            sub.status == SubmissionStatus.VALIDATED and (latest is None or not latest.status.finished))
        out["note"] = ("The score and rank appear when the evaluation finishes." if running
                       else "No score: no evaluation of this submission succeeded, so it is not ranked.")
        return out
    cases_shown = organizer or spec.phase(phase.slug).show_case_results
    rows = rows()
    if rows is not None:
        out["ranked"] = sum(_rank_of(r) is not None for r in rows)
        row = next((r for r in rows if _number(r.get("submission_id")) == sub.id), None)
        if row is not None:
            out["score"], out["rank"] = _number(row.get(primary)), _rank_of(row)
            out["penalties"] = int(_number(row.get(f"penalties:{primary}")) or 0)
            if frozen:
                out["note"] = f"Rank on the board frozen on {_when(phase.frozen_at)}; the final board is " + (
                    f"revealed on {_when(phase.reveal_at)}." if phase.reveal_at else "revealed by the organizers.")
            elif organizer and phase.frozen():
                out["note"] = (f"Live rank; participants see the board as it was frozen on "
                               f"{_when(phase.frozen_at)}.")
            return out
        if frozen:
            out["note"] = (f"Not ranked yet: the board is frozen since {_when(phase.frozen_at)}"
                           f"{_reveal(phase).replace(' it', ' the final board')}.")
        else:
            team = next((r for r in rows if r.get("team") == sub.team.name and r.get("badge") != "published"
                         and _number(r.get("submission_id")) is not None), None)
            which = spec.ranking.for_phase(phase.slug).team_entry
            out["note"] = (f"Not on the board: it shows one entry per team, the {which} one"
                           + (f" — submission {int(_number(team['submission_id']))}"
                              + (f", ranked #{_rank_of(team)}" if _rank_of(team) else "") if team else "") + ".")
    else:
        out["note"] = f"Not ranked here: the phase's board is hidden{_reveal(phase)}."
    if cases_shown:
        out["score"] = own_score()
    elif rows is not None:
        out["note"] += " The phase hides per-case scores, so only the board shows a score."
    else:
        out["note"] = (f"Score and rank are hidden{_reveal(phase)}: this phase shows no per-case scores and "
                       "its board is hidden.")
    return out


def standing_text(standing: dict[str, Any]) -> str:
    """One line for a terminal from :func:`standing_view`'s dict (or the API's ``standing``), e.g.
    "weighted mean dice 0.812 (2 penalties), rank 3 of 12" followed by its note; "–" for what is not shown."""
    score = standing.get("score")
    metric = str(standing.get("metric", ""))
    fmt = "{:.3f}" if metric.split(" ")[-1] in ("dice", "nsd", "jaccard") else "{:.2f}"
    text = f"{metric} {fmt.format(score) if score is not None else '–'}"
    if standing.get("penalties"):
        text += f" ({standing['penalties']} of the averaged values are penalties)"
    if standing.get("rank"):
        text += f", rank {standing['rank']} of {standing.get('ranked', 0)}"
    return text + (f". {standing['note']}" if standing.get("note") else "")


def entry_score(session: Session, sub: Submission) -> float | None:
    """The board's primary metric of ``sub``'s latest succeeded evaluation, scored as the board scores an
    entry (missing cases at the worst value, label-weighted mean over cases × labels); None for tasks
    ranked on set-level metrics (DigestPath) or without a succeeded evaluation."""
    # the leaderboard modules load pandas and scipy: only a page that shows a score imports them
    from arena.leaderboard.query import evaluation_scores, penalty_distance
    from arena.leaderboard.ranking import aggregate_then_rank, board_arguments, complete_scores, worst_values

    spec = spec_of(sub.task)
    ev = next((e for e in reversed(sub.evaluations) if e.status == EvaluationStatus.SUCCEEDED), None)
    if ev is None or spec.has_set_metrics or not sub.phase.cases:
        return None
    a = board_arguments(spec, sub.phase.slug)
    distances = {c.key: penalty_distance(spec, c) for c in sub.phase.cases}  # what the board fills a miss with
    worst = worst_values(spec, diagonal_mm={k: d for k, d in distances.items() if d is not None})
    full = complete_scores(evaluation_scores(session, [ev.id]), [ev.id], [c.key for c in sub.phase.cases],
                           list(spec.labels), [m.name for m in spec.metrics], worst)
    table = aggregate_then_rank(full, a["primary"], a["higher_is_better"], a["label_weights"], a["label_names"],
                                statistic=a["statistic"])
    return _number(table[a["primary"]].iloc[0]) if a["primary"] in table.columns and len(table) else None


def phase_disclosure(phase: Phase, now: dt.datetime | None = None) -> list[str]:
    """What a team sees of its runs in ``phase`` and when, as sentences for the task and submit pages: the
    same rules as the submission page and the API (a private phase before its reveal, task.yaml's
    ``show_case_results`` / ``show_logs``, arena.disclosure) and the board's visibility, freeze and reveal."""
    now = now or utcnow()
    ps = spec_of(phase.task).phase(phase.slug)
    if phase.scores_hidden_from_teams(now):
        return [f"Private phase: scores, per-case results and logs stay hidden from teams{_reveal(phase)}; "
                "until then a submission shows its status and, once finished, its outcome."]
    out = []
    if ps.show_case_results:
        out.append("Your submission's page shows each case's scores as it finishes"
                   + (", with the container's log." if ps.show_logs else " (no logs in this phase)."))
    else:
        out.append("The cases are hidden: when an evaluation finishes, your submission's page shows its outcome, "
                   "the cases per outcome and the total runtime (to one significant digit); no per-case scores, "
                   "errors or logs.")
    if not phase.board_public(now):
        out.append(f"The board is hidden{_reveal(phase).replace(' it', ' the board')}"
                   + ("." if ps.show_case_results else ", so teams see no score before then."))
    elif phase.frozen(now):
        out.append(f"The board is frozen since {_when(phase.frozen_at)}: it shows the standings of then, and "
                   f"newer results are ranked when the final board is revealed"
                   + (f" on {_when(phase.reveal_at)}." if phase.reveal_at else " by the organizers."))
    else:
        which = spec_of(phase.task).ranking.for_phase(phase.slug).team_entry
        out.append(f"The board is public and updates as soon as an evaluation succeeds (one entry per team: its "
                   f"{which})"
                   + (f"; it freezes on {_when(phase.frozen_at)}." if phase.frozen_at and phase.frozen_at > now
                      else "."))
    return out
