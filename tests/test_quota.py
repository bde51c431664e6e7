"""Quota: cancelled and platform-failed evaluations do not use a team's submissions; its own failures do."""

from __future__ import annotations

from pathlib import Path

from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import Evaluation, Submission

REPO = Path(__file__).resolve().parents[1]


def test_platform_failures_are_not_charged(settings, db):
    from arena.submissions.intake import quota
    from arena.tasks.store import upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    phase = next(p for p in task.phases if p.slug == "validation")
    user, _ = create_user(db, "q", team="Quota team")
    outcomes = [
        (EvaluationStatus.CANCELLED, None, False),
        (EvaluationStatus.FAILED, "worker host-a:12 died; gave up after 2 re-queues", False),
        (EvaluationStatus.FAILED, "stopped: the smoke case could not be run (the Docker engine could not run it)", False),
        (EvaluationStatus.FAILED, "all 2 cases failed; first: the container exited with code 3", True),
        (EvaluationStatus.SUCCEEDED, None, True),
    ]
    for status, error, _ in outcomes:
        sub = Submission(task=task, phase=phase, team=user.team, user=user, status=SubmissionStatus.VALIDATED)
        db.add(sub)
        db.flush()
        db.add(Evaluation(submission=sub, status=status, error=error))
    db.commit()
    db.expire_all()
    _, used = quota(db, task, phase, user.team)
    assert used == sum(charged for *_, charged in outcomes) == 2
