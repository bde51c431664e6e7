"""Status transitions of submissions and evaluations."""

from __future__ import annotations

import pytest

from arena.lifecycle import EvaluationStatus as E, IllegalTransition, SubmissionStatus as S
from arena.models import Evaluation, Submission


def test_evaluation_happy_path_and_timestamps():
    ev = Evaluation(status=E.QUEUED)
    ev.set_status(E.RUNNING)
    assert ev.started_at is not None and ev.finished_at is None
    ev.set_status(E.SCORING)
    ev.set_status(E.SUCCEEDED)
    assert ev.finished_at is not None and ev.status.finished


@pytest.mark.parametrize("path", [
    [E.RUNNING, E.SCORING, E.RUNNING], [E.SUCCEEDED], [E.QUEUED], [E.RUNNING, E.SUCCEEDED], [E.CANCELLED, E.RUNNING],
    [E.RUNNING, E.FAILED, E.RUNNING], [E.RUNNING, E.SCORING, E.CANCELLED],
])
def test_illegal_evaluation_transitions(path):
    ev = Evaluation(status=E.QUEUED)
    with pytest.raises(IllegalTransition):
        for st in path:
            ev.set_status(st)


def test_requeue_after_a_dead_worker():
    ev = Evaluation(status=E.QUEUED)
    ev.set_status(E.RUNNING)
    ev.set_status(E.QUEUED)  # its worker died: back on the queue, finished cases kept
    ev.set_status(E.RUNNING)
    assert ev.status == E.RUNNING


def test_submission_transitions():
    sub = Submission(status=S.UPLOADED)
    sub.set_status(S.FAILED, error="invalid image archive: no manifest.json")
    assert sub.error.startswith("invalid")
    with pytest.raises(IllegalTransition, match="from failed to validated"):
        sub.set_status(S.VALIDATED)
    ok = Submission(status=S.UPLOADED)
    ok.set_status(S.VALIDATED)
    with pytest.raises(IllegalTransition):
        ok.set_status(S.UPLOADED)


def test_display_status_shows_case_progress():
    sub = Submission(status=S.VALIDATED)
    assert sub.display_status == "validated"
    sub.evaluations = [Evaluation(status=E.RUNNING, cases_done=1, cases_total=4)]
    assert sub.display_status == "running (case 2/4)"
