"""Job bookkeeping without Docker: a dead job never leaves its evaluation stuck; re-runs add evaluations."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import Evaluation, Submission

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def submission(settings, db):
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    load_demo_cases(db, settings, task, 2)
    user, _ = create_user(db, "bob", team="B")
    up = settings.uploads_dir / "x.tar"
    up.write_bytes(b"x")
    sub = create_submission(db, "han-oar-22", "validation", user, StoredUpload(up, "0" * 64, 1))
    sub.set_status(SubmissionStatus.VALIDATED)
    db.commit()
    return sub.id


def test_failure_callback_fails_running_evaluation(settings, db, submission):
    from arena.runner.jobs import evaluation_job_failed

    ev = Evaluation(submission_id=submission, status=EvaluationStatus.QUEUED, cases_total=1)
    db.add(ev)
    db.commit()
    ev.set_status(EvaluationStatus.RUNNING)
    db.commit()
    evaluation_job_failed(SimpleNamespace(args=(ev.id,)), None, TimeoutError, TimeoutError("job exceeded 600 s"))
    db.expire_all()
    ev = db.get(Evaluation, ev.id)
    assert ev.status == EvaluationStatus.FAILED and "job exceeded 600 s" in ev.error and ev.finished_at


def test_rerun_adds_evaluation_and_requires_validated(settings, db, submission, redis_url, monkeypatch):
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    from arena.config import load_settings
    from arena.runner.jobs import create_evaluation, get_queue

    s = load_settings()
    a = create_evaluation(s, submission)
    b = create_evaluation(s, submission)
    assert a != b
    db.expire_all()
    sub = db.get(Submission, submission)
    assert [e.status for e in sub.evaluations] == [EvaluationStatus.QUEUED] * 2
    assert sub.evaluations[0].cases_total == 1 and sub.evaluations[0].job_id
    assert get_queue(s).count == 2
    get_queue(s).empty()
    sub.status = SubmissionStatus.FAILED
    db.commit()
    with pytest.raises(ValueError, match="is failed, not validated"):
        create_evaluation(s, submission)


def test_quota(settings, db, submission):
    from arena.submissions.intake import StoredUpload, UploadError, create_submission
    from arena.models import User
    from sqlalchemy import select

    user = db.scalar(select(User).where(User.name == "bob"))
    up = StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1)
    for _ in range(9):  # validation allows 10 a day; one exists
        create_submission(db, "han-oar-22", "validation", user, up)
    with pytest.raises(UploadError, match="used its 10 submission"):
        create_submission(db, "han-oar-22", "validation", user, up)


def test_intake_failure_callback(settings, db):
    from arena.runner.jobs import intake_job_failed
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import upsert_task
    from arena.users import create_user

    upsert_task(db, REPO / "tasks" / "han-oar-22")
    user, _ = create_user(db, "carol", team="C")
    sub = create_submission(db, "han-oar-22", "validation", user,
                            StoredUpload(settings.uploads_dir / "y.tar", "0" * 64, 1))
    db.commit()
    intake_job_failed(SimpleNamespace(args=(sub.id,)), None, RuntimeError, RuntimeError("Cannot connect to the Docker Engine"))
    db.expire_all()
    sub = db.get(Submission, sub.id)
    assert sub.status == SubmissionStatus.FAILED and "Cannot connect to the Docker Engine" in sub.error


def test_hidden_phase_views_are_redacted(settings, db):
    """Test phase: participants get the outcome and cases per outcome only; organizers get everything."""
    from arena.disclosure import PARTICIPANT_FAULT
    from arena.lifecycle import CaseStatus
    from arena.models import CaseResult, MetricValue
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user
    from arena.web.views import submission_view

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    load_demo_cases(db, settings, task, 2)  # demo-001 goes to the test phase
    user, _ = create_user(db, "dan", team="D")
    sub = create_submission(db, "han-oar-22", "test", user, StoredUpload(settings.uploads_dir / "z.tar", "0" * 64, 1))
    sub.set_status(SubmissionStatus.VALIDATED)
    ev = Evaluation(submission=sub, status=EvaluationStatus.QUEUED, cases_total=1)
    db.add(ev)
    db.flush()
    case = task.phases[1].cases[0]
    cr = CaseResult(evaluation_id=ev.id, case_id=case.id, status=CaseStatus.FAILED, failure="non-zero-exit",
                    exit_code=1, error="the container exited with code 1: PATIENT NAME DOE^JOHN",
                    log_tail="PATIENT NAME DOE^JOHN")
    cr.metrics = [MetricValue(label=1, metric="dice", value=0.0)]
    db.add(cr)
    db.commit()
    participant = submission_view(sub)
    text = str(participant)
    assert "DOE^JOHN" not in text and case.key not in text and "dice" not in text
    assert participant["evaluations"][0]["diagnosis"] == []  # nothing per case while it runs
    ev.set_status(EvaluationStatus.FAILED, error="all 1 cases failed; first: the container exited with code 1")
    db.commit()
    participant = submission_view(sub)
    assert "exit" not in str(participant) and participant["evaluations"][0]["outcome"] == PARTICIPANT_FAULT
    assert participant["evaluations"][0]["diagnosis"] == [{"outcome": PARTICIPANT_FAULT, "cases": 1}]
    organizer = submission_view(sub, viewer_is_organizer=True)
    assert "DOE^JOHN" in str(organizer) and organizer["evaluations"][0]["cases"][0]["case"] == case.key
