"""Per-team concurrency, fair ordering across teams, heartbeats and the sweep that re-queues evaluations
whose worker went silent (SIGSTOPped for real), and RQ's abandoned-job callback."""

from __future__ import annotations

import os
import uuid
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from arena.lifecycle import EvaluationStatus
from arena.models import Evaluation, Submission

pytestmark = [pytest.mark.redis]


def _signal_session(sid: int, sig: signal.Signals) -> None:
    """Signal every process of a session (RQ puts its work-horse in a process group of its own)."""
    subprocess.run(["pkill", f"-{sig.name[3:]}", "-s", str(sid)], check=False)


def _queued_evaluations(db, settings, teams: list[str]) -> list[int]:
    """One validated submission and one queued evaluation (not enqueued) per entry of ``teams``."""
    from arena.lifecycle import SubmissionStatus
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import upsert_task
    from arena.users import create_user
    from runner_helpers import REPO

    upsert_task(db, REPO / "tasks" / "han-oar-22")
    ids = []
    for team in teams:
        user, _ = create_user(db, f"user-{uuid.uuid4().hex[:8]}", team=team)
        sub = create_submission(db, "han-oar-22", "validation", user,
                                StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
        sub.set_status(SubmissionStatus.VALIDATED)
        ev = Evaluation(submission=sub, status=EvaluationStatus.QUEUED)
        db.add(ev)
        db.flush()
        ids.append(ev.id)
    db.commit()
    return ids


def test_team_limit_claims(settings, db, redis_url, monkeypatch):
    """With one slot per team, a team's second evaluation waits while its first runs; another team's runs;
    once the first finishes the second can start. A limit of 0 means no limit."""
    from dataclasses import replace

    from arena.runner.jobs import _claim

    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    s = replace(settings, redis_url=redis_url, team_concurrency=1)
    a1, a2, b1 = _queued_evaluations(db, settings, ["A", "A", "B"])
    assert _claim(s, a1, "host:1") == "run"
    assert _claim(s, a2, "host:2") == "wait"
    assert _claim(s, b1, "host:2") == "run"
    assert _claim(s, a1, "host:3") == "running"  # already taken: never run twice
    db.expire_all()
    assert db.get(Evaluation, a2).status == EvaluationStatus.QUEUED
    ev = db.get(Evaluation, a1)
    ev.set_status(EvaluationStatus.SCORING)
    db.commit()
    assert _claim(s, a2, "host:2") == "wait"  # scoring still counts as active
    ev.set_status(EvaluationStatus.SUCCEEDED)
    db.commit()
    assert _claim(s, a2, "host:2") == "run"
    a3, a4 = _queued_evaluations(db, settings, ["C", "C"])
    unlimited = replace(s, team_concurrency=0)
    assert _claim(unlimited, a3, "h:1") == "run" and _claim(unlimited, a4, "h:2") == "run"


def test_abandoned_job_is_requeued_and_timeout_fails(settings, db, redis_url, monkeypatch):
    """RQ reports a job whose worker vanished (another host) as AbandonedJobError: platform-caused, so the
    evaluation goes back on the queue (finished cases kept); after MAX_REQUEUES it fails with the reason.
    A job timeout fails it at once."""
    from redis import Redis
    from rq.exceptions import AbandonedJobError
    from rq.job import Job

    from arena.runner.jobs import MAX_REQUEUES, evaluation_job_failed

    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    ev_id, other = _queued_evaluations(db, settings, ["A", "B"])
    for attempt in range(MAX_REQUEUES + 1):
        ev = db.get(Evaluation, ev_id)
        ev.set_status(EvaluationStatus.RUNNING)
        ev.worker = "gone-host:123"
        ev.job_id = f"old-{attempt}"
        db.commit()
        evaluation_job_failed(SimpleNamespace(args=(ev_id,), id=f"old-{attempt}"), None, AbandonedJobError,
                              AbandonedJobError())
        db.expire_all()
        ev = db.get(Evaluation, ev_id)
        if attempt < MAX_REQUEUES:
            assert ev.status == EvaluationStatus.QUEUED and ev.worker is None
            assert Job.exists(ev.job_id, connection=Redis.from_url(redis_url))
        else:
            assert ev.status == EvaluationStatus.FAILED and "gave up after 2 re-queues" in ev.error
    # abandoned before its evaluation was even claimed: the job goes back on the queue, nothing is failed
    queued, = _queued_evaluations(db, settings, ["C"])
    ev = db.get(Evaluation, queued)
    ev.job_id = "lost-before-start"
    db.commit()
    evaluation_job_failed(SimpleNamespace(args=(queued,), id="lost-before-start"), None, AbandonedJobError,
                          AbandonedJobError())
    db.expire_all()
    ev = db.get(Evaluation, queued)
    assert ev.status == EvaluationStatus.QUEUED and ev.job_id != "lost-before-start"
    assert Job.exists(ev.job_id, connection=Redis.from_url(redis_url))

    ev = db.get(Evaluation, other)
    ev.set_status(EvaluationStatus.RUNNING)
    db.commit()
    from rq.timeouts import JobTimeoutException

    evaluation_job_failed(SimpleNamespace(args=(other,), id=None), None, JobTimeoutException,
                          JobTimeoutException("Task exceeded maximum timeout value (600 seconds)"))
    db.expire_all()
    assert db.get(Evaluation, other).status == EvaluationStatus.FAILED


def test_sweep_waits_for_grace_then_requeues(settings, db, redis_url, monkeypatch):
    """The sweep acts only on evaluations it has itself seen silent for stale_after_s; a fresh heartbeat
    clears the suspicion; a finished evaluation is forgotten."""
    from dataclasses import replace

    from arena.runner.jobs import sweep_silent_evaluations
    from arena.runner.liveness import beat, find_silent

    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    from redis import Redis

    conn = Redis.from_url(redis_url)
    s = replace(settings, redis_url=redis_url, stale_after_s=30)
    silent, beating = _queued_evaluations(db, settings, ["A", "B"])
    for ev_id in (silent, beating):
        ev = db.get(Evaluation, ev_id)
        ev.set_status(EvaluationStatus.RUNNING)
        ev.worker = "somewhere:1"
        ev.started_at = ev.started_at.replace(year=2000)  # long running
    db.commit()
    now = time.time()
    beat(conn, s, beating, "somewhere:1", now=now)
    assert find_silent(s, now=now, conn=conn) == []  # first sighting only
    beat(conn, s, beating, "somewhere:1", now=now + 31)
    assert find_silent(s, now=now + 31, conn=conn) == [silent]
    assert sweep_silent_evaluations(s) == []  # real clock: not yet 30 s since the first sighting
    db.expire_all()
    assert db.get(Evaluation, beating).status == EvaluationStatus.RUNNING
    # the sweep with a clock past the grace re-queues the silent one, and only it
    from arena.runner.liveness import sweep
    from arena.runner.jobs import requeue_evaluation

    beat(conn, s, beating, "somewhere:1", now=now + 62)
    done = sweep(s, lambda e, r: requeue_evaluation(s, e, r), now=now + 62)
    assert done == [silent]
    db.expire_all()
    ev = db.get(Evaluation, silent)
    assert ev.status == EvaluationStatus.QUEUED and "no heartbeat for 30 s" in ev.error


@pytest.mark.docker
@pytest.mark.slow
def test_two_workers_fair_and_one_per_team(settings, db, redis_url, docker_engine, base_image, tmp_path, arena_env,
                                           monkeypatch):
    """Team A submits three times, then team B once; two real workers, one slot per team: A's evaluations
    never overlap, and B's starts before A's second (B does not wait behind A's backlog)."""
    from arena.config import load_settings
    from arena.runner.jobs import create_evaluation
    from arena.users import create_user
    from runner_helpers import build_writer_image, validated_submissions

    image_id = build_writer_image(tmp_path, base_image, 3, "arena-test/slow-writer:fair")
    sub_ids = validated_submissions(db, settings, image_id, 4, 1)
    a_user, _ = create_user(db, "a-second", team="Team 0")
    for sid in sub_ids[1:3]:  # submissions 0, 1, 2 → team A ("Team 0"); 3 → team B
        db.get(Submission, sid).team_id = a_user.team_id
    db.commit()
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    ev_ids = [create_evaluation(load_settings(), sid) for sid in sub_ids]
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url, "ARENA_TEAM_CONCURRENCY": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        for w in workers:
            out, _ = w.communicate(timeout=400)
            assert w.returncode == 0, out[-3000:]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    db.expire_all()
    evs = [db.get(Evaluation, e) for e in ev_ids]
    assert [e.status for e in evs] == [EvaluationStatus.SUCCEEDED] * 4, [e.error for e in evs]
    a = sorted((e.started_at, e.finished_at) for e in evs[:3])
    for (s1, f1), (s2, _) in zip(a, a[1:]):
        assert s2 >= f1, f"team A ran two evaluations at once: {a}"
    assert evs[3].started_at < a[1][0], "team B waited behind team A's backlog"


@pytest.mark.docker
@pytest.mark.slow
def test_silent_worker_is_swept_and_cannot_write_later(settings, db, redis_url, docker_engine, base_image, tmp_path,
                                                       arena_env, monkeypatch):
    """A worker frozen with SIGSTOP mid-case stops beating; a second worker's sweeper re-queues the
    evaluation after the grace period and finishes it; the frozen one, thawed, finds the evaluation no
    longer its own and writes nothing: every case is recorded exactly once."""
    from arena.config import load_settings
    from arena.runner.jobs import create_evaluation
    from runner_helpers import (build_writer_image, case_counts, validated_submissions, wait_finished,
                                wait_for_case_container)

    image_id = build_writer_image(tmp_path, base_image, 5, "arena-test/slow-writer:silent")
    (sub_id,) = validated_submissions(db, settings, image_id, 1, 2)
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    ev_id = create_evaluation(load_settings(), sub_id)
    # 10 missed beats make a worker silent: the frozen one misses them all, while a live one on two busy cores
    # (a work horse holding the GIL in a long numpy call, the machine loaded by a parallel build) never misses
    # ten in a row; with 4 s (four beats) the rescuer itself was once swept as silent on a loaded machine
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url, "ARENA_HEARTBEAT_S": "1",
           "ARENA_STALE_AFTER_S": "10"}
    frozen = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    rescuer = None
    try:
        wait_for_case_container(docker_engine, ev_id)
        _signal_session(frozen.pid, signal.SIGSTOP)  # the worker, its horse, its heartbeat thread: all frozen
        # its log goes to a file: a pipe nobody reads fills up (64 KB) and blocks the worker mid-run
        rescuer_log = open(tmp_path / "rescuer.log", "w")
        rescuer = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker"], env=env, stdout=rescuer_log,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        ev = wait_finished(db, ev_id)
        assert ev.status == EvaluationStatus.SUCCEEDED, (ev.error, (tmp_path / "rescuer.log").read_text()[-3000:])
        assert "re-queued: no heartbeat for 10 s" in ev.error
        _signal_session(frozen.pid, signal.SIGCONT)  # the old horse wakes, finishes its container, tries to record
        time.sleep(8)
        db.expire_all()
        assert case_counts(db, ev_id) == [1, 1]
        assert db.get(Evaluation, ev_id).status == EvaluationStatus.SUCCEEDED
    finally:
        for p in (frozen, rescuer):
            if p is not None and p.poll() is None:
                _signal_session(p.pid, signal.SIGCONT)
                _signal_session(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _signal_session(p.pid, signal.SIGKILL)
                    p.wait()
    deadline = time.monotonic() + 30
    mine = {"label": [f"arena.evaluation={ev_id}", f"arena.queue={os.environ['ARENA_QUEUE']}"]}
    while docker_engine.containers.list(all=True, filters=mine) and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert not docker_engine.containers.list(all=True, filters=mine)
