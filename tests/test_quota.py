"""Quota: cancelled and platform-failed evaluations do not use a team's submissions; its own failures do;
parallel uploads cannot take more slots than are left (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import http.client
import json
import random
import select
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import Evaluation, Submission
from arena.runner.failures import Fault
from test_archive import make_archive
from web_helpers import bearer, fake_submission, make_task, make_user

REPO = Path(__file__).resolve().parents[1]


def test_platform_failures_are_not_charged(settings, db):
    from arena.submissions.intake import quota
    from arena.tasks.store import upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    phase = next(p for p in task.phases if p.slug == "validation")
    user, _ = create_user(db, "q", team="Quota team")
    # the fault is what the runner recorded (tests/test_runner_modes.py: a GPU task on a worker without one);
    # the error text plays no part any more, so the same text with either fault is charged differently
    same = "all 2 cases failed; first: ..."
    outcomes = [
        (EvaluationStatus.CANCELLED, None, False),
        (EvaluationStatus.FAILED, Fault.PLATFORM, False),
        (EvaluationStatus.FAILED, Fault.PARTICIPANT, True),
        (EvaluationStatus.SUCCEEDED, None, True),
    ]
    for status, fault, _ in outcomes:
        sub = Submission(task=task, phase=phase, team=user.team, user=user, status=SubmissionStatus.VALIDATED)
        db.add(sub)
        db.flush()
        ev = Evaluation(submission=sub, status=EvaluationStatus.QUEUED)
        db.add(ev)
        if status != EvaluationStatus.SUCCEEDED and status != EvaluationStatus.CANCELLED:
            ev.set_status(EvaluationStatus.RUNNING)
            ev.set_status(status, error=same, fault=fault)
        else:
            ev.status = status
    db.commit()
    db.expire_all()
    _, used = quota(db, task, phase, user.team)
    assert used == sum(charged for *_, charged in outcomes) == 2


# -- parallel uploads (issue 17, finding 1) ------------------------------------------------------------------
# The audit beat the test phase's quota with 5 parallel uploads of a 432 MB image: the check came before the
# body and the insert after it. These tests upload through a real threaded HTTP server on 127.0.0.1 and hold
# the bodies open so that every upload overlaps every other; archive inspection is slowed down as a large
# image's is, which widens any window left between a check and its insert.

SLOW_INSPECT_S = 0.3
FIRST_CHUNK = 64 * 1024


@pytest.fixture
def quota_world(settings, db, monkeypatch):
    """han-oar-22 whose test phase allows 2 submissions a day; team "Racers" has used 1 of them and has 6
    members (the per-user upload rate limit stays out of the way). Yields (base URL, tokens, settings)."""
    import arena.submissions.intake as intake
    from arena.web import create_app

    settings = dataclasses.replace(settings, max_upload_bytes=4 * 2**20)
    task = make_task(db, settings)
    users = [make_user(db, f"racer{i}", team="Racers") for i in range(6)]
    fake_submission(db, settings, task, "test", users[0][0])  # 1 of the test phase's 2 used
    db.commit()
    real_inspect = intake.inspect_image_archive

    def slow_inspect(path):
        time.sleep(SLOW_INSPECT_S)
        return real_inspect(path)

    monkeypatch.setattr(intake, "inspect_image_archive", slow_inspect)
    monkeypatch.setattr("arena.runner.jobs.enqueue_intake", lambda s, sid: "job")
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", [t for _, t in users], settings
    server.shutdown()
    thread.join(timeout=10)


def _archive(tmp_path: Path, n: int, size: int = 2**20) -> bytes:
    """A valid image archive of about ``size`` bytes whose image ID differs with ``n``."""
    path = tmp_path / f"image-{n}.tar"
    make_archive(path, payload=random.Random(n).randbytes(size))
    return path.read_bytes()


def _start_upload(base: str, token: str, body: bytes, label: str) -> http.client.HTTPConnection:
    """Headers and the first chunk of an upload to the test phase; the rest is sent by _finish_upload."""
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
    conn.putrequest("POST", f"/api/v1/tasks/han-oar-22/phases/test/submissions?label={label}")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    conn.send(body[:FIRST_CHUNK])
    return conn


def _answered(conn: http.client.HTTPConnection, wait_s: float) -> bool:
    return bool(select.select([conn.sock], [], [], wait_s)[0])


def _response(conn: http.client.HTTPConnection) -> tuple[int, dict]:
    r = conn.getresponse()
    body = json.loads(r.read() or b"{}")
    conn.close()
    return r.status, body


def _quota_left(base: str, token: str) -> int:
    r = requests.get(f"{base}/api/v1/tasks/han-oar-22", headers=bearer(token), timeout=30)
    return next(p["quota_left"] for p in r.json()["phases"] if p["slug"] == "test")


def _wait_quota_left(base: str, token: str, expected: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := _quota_left(base, token)) != expected:
        assert time.monotonic() < deadline, f"quota_left stayed {left}, expected {expected}"
        time.sleep(0.05)


def test_parallel_uploads_take_exactly_the_slots_left(quota_world, db, tmp_path):
    """5 overlapping uploads (5 users of one team, distinct valid images) with 1 test slot left: exactly one
    is accepted; the others are refused with 429 before their bodies are read, saying why."""
    from arena.models import QuotaReservation

    base, tokens, _ = quota_world
    n = 5
    bodies = [_archive(tmp_path, i) for i in range(n)]
    conns = [_start_upload(base, tokens[i + 1], bodies[i], f"racer-{i}") for i in range(n)]
    deadline = time.monotonic() + 5  # the refusals come before any body is read; wait for n-1 of them
    while sum(_answered(c, 0) for c in conns) < n - 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    pending = [c for c in conns if not _answered(c, 0)]
    last_byte = threading.Barrier(len(pending))

    def finish(conn: http.client.HTTPConnection) -> None:
        body = bodies[conns.index(conn)]
        conn.send(body[FIRST_CHUNK:-1])
        last_byte.wait(timeout=60)  # every body but its last byte is in: they all complete at once
        conn.send(body[-1:])

    senders = [threading.Thread(target=finish, args=(c,)) for c in pending]
    for t in senders:
        t.start()
    for t in senders:
        t.join(timeout=120)
    answers = [_response(c) for c in conns]
    statuses = sorted(s for s, _ in answers)
    assert statuses == [202] + [429] * (n - 1), answers
    for status, body in answers:
        if status == 429:  # names the phase and its limit, and that a slot is held by an upload in progress
            assert "'test'" in body["error"] and " 2 submission" in body["error"] and "progress" in body["error"]
    db.expire_all()
    assert db.query(QuotaReservation).count() == 0
    assert _quota_left(base, tokens[0]) == 0


def test_refused_and_aborted_uploads_give_the_slot_back(quota_world, tmp_path):
    """With 1 test slot left: an upload holds it while its body streams; an aborted upload, an invalid
    archive and an over-size upload each give it back; then one upload takes it and the next gets 429."""
    base, tokens, settings = quota_world
    assert _quota_left(base, tokens[0]) == 1
    aborted = _start_upload(base, tokens[1], _archive(tmp_path, 10), "aborted")
    _wait_quota_left(base, tokens[0], 0)  # held while the body streams
    aborted.sock.shutdown(socket.SHUT_RDWR)
    aborted.close()
    _wait_quota_left(base, tokens[0], 1)

    url = f"{base}/api/v1/tasks/han-oar-22/phases/test/submissions"
    invalid = requests.post(url, data=b"not an image archive" * 1000, headers=bearer(tokens[2]), timeout=60)
    assert invalid.status_code == 400 and "invalid image archive" in invalid.json()["error"]
    assert _quota_left(base, tokens[0]) == 1
    too_large = requests.post(url, data=b"x" * (settings.max_upload_bytes + 1), headers=bearer(tokens[3]), timeout=60)
    assert too_large.status_code == 413
    assert _quota_left(base, tokens[0]) == 1

    ok = requests.post(url, data=_archive(tmp_path, 11), headers=bearer(tokens[4]), timeout=60)
    assert ok.status_code == 202, ok.text
    assert _quota_left(base, tokens[0]) == 0
    late = requests.post(url, data=_archive(tmp_path, 12), headers=bearer(tokens[5]), timeout=60)
    assert late.status_code == 429 and "'test'" in late.json()["error"]


def test_local_submit_race(settings, db, tmp_path, monkeypatch):
    """``arena submit --user`` (local mode) from 4 processes at once with 1 slot left: store_upload then
    create_submission, each in its own session as the CLI does; exactly one is recorded."""
    import arena.submissions.intake as intake
    from arena.db import session_scope
    from arena.models import Submission, User
    from sqlalchemy import select

    task = make_task(db, settings)
    users = [make_user(db, f"local{i}", team="Locals")[0] for i in range(4)]
    fake_submission(db, settings, task, "test", users[0])
    db.commit()
    names = [u.name for u in users]
    real_inspect = intake.inspect_image_archive
    start = threading.Barrier(len(names))

    def slow_inspect(path):
        time.sleep(SLOW_INSPECT_S)
        return real_inspect(path)

    monkeypatch.setattr(intake, "inspect_image_archive", slow_inspect)
    outcomes: dict[str, str] = {}

    def submit(i: int, name: str) -> None:
        path = tmp_path / f"local-{i}.tar"
        make_archive(path, payload=random.Random(100 + i).randbytes(2**16))
        start.wait(timeout=30)
        try:
            with session_scope(settings.database_url) as s:
                user = s.scalar(select(User).where(User.name == name))
                with open(path, "rb") as f:
                    upload = intake.store_upload(f, settings)
                intake.create_submission(s, "han-oar-22", "test", user, upload, settings=settings)
            outcomes[name] = "accepted"
        except intake.UploadError as e:
            outcomes[name] = f"{e.status}"

    threads = [threading.Thread(target=submit, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes.values()) == ["429"] * (len(names) - 1) + ["accepted"], outcomes
    db.expire_all()
    test_phase = next(p for p in task.phases if p.slug == "test")
    assert db.query(Submission).filter_by(phase_id=test_phase.id).count() == 2
