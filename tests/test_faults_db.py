"""Faults in what the runner writes to: the database stopped and started mid-evaluation (a private
PostgreSQL cluster, a real process), and a full results filesystem (a tiny tmpfs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from sqlalchemy import select

from arena.lifecycle import EvaluationStatus
from arena.models import CaseResult, Evaluation

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def private_pg():
    from runner_helpers import PrivatePostgres, postgres_unavailable

    if postgres_unavailable():
        pytest.skip(postgres_unavailable())
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


def test_database_restart_mid_evaluation(settings, redis_url, docker_engine, base_image, tmp_path, arena_env,
                                         private_pg, monkeypatch):
    """PostgreSQL goes down for a few seconds while a case runs: the worker waits it out (retrying the
    case's one transaction), finishes, and records every case once."""
    from arena.config import load_settings
    from arena.db import session_factory, upgrade
    from arena.runner.jobs import create_evaluation
    from runner_helpers import (build_writer_image, case_counts, validated_submissions, wait_finished,
                                wait_for_case_container)

    monkeypatch.setenv("ARENA_DATABASE_URL", private_pg.url)
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    pg_settings = replace(settings, database_url=private_pg.url, redis_url=redis_url)
    upgrade(private_pg.url)
    db = session_factory(private_pg.url)()
    image_id = build_writer_image(tmp_path, base_image, 4, "arena-test/slow-writer:pg")
    (sub_id,) = validated_submissions(db, pg_settings, image_id, 1, 2)
    db.close()
    ev_id = create_evaluation(load_settings(), sub_id)
    env = {**os.environ, **arena_env, "ARENA_DATABASE_URL": private_pg.url, "ARENA_REDIS_URL": redis_url,
           "ARENA_HEARTBEAT_S": "1", "ARENA_STALE_AFTER_S": "20"}
    log = open(tmp_path / "worker.log", "w")  # a file, not a pipe: an unread pipe fills and blocks the worker
    worker = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_case_container(docker_engine, ev_id)
        private_pg.stop()  # the case finishes while the database is down
        time.sleep(8)
        private_pg.start()
        from arena.db import dispose_engines

        dispose_engines()
        db = session_factory(private_pg.url)()
        ev = wait_finished(db, ev_id, timeout_s=120)
        assert ev.status == EvaluationStatus.SUCCEEDED, ev.error
        assert case_counts(db, ev_id) == [1, 1]
        db.close()
    finally:
        subprocess.run(["pkill", "-TERM", "-s", str(worker.pid)], check=False)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["pkill", "-KILL", "-s", str(worker.pid)], check=False)
            worker.wait()
        log.close()
    out = (tmp_path / "worker.log").read_text()
    assert "database unavailable" in out  # it did wait the outage out, it did not just miss it


def test_results_filesystem_full(settings, db, redis_url, docker_engine, base_image, tmp_path, arena_env,
                                 monkeypatch):
    """The results filesystem is full: the evaluation ends failed with a reason that says so (not stuck),
    and no case row is half-written."""
    from arena.config import load_settings
    from arena.runner.jobs import create_evaluation
    from runner_helpers import build_writer_image, validated_submissions

    image_id = build_writer_image(tmp_path, base_image, 0, "arena-test/writer:full")
    (sub_id,) = validated_submissions(db, settings, image_id, 1, 2)
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    full = settings.results_dir
    full.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,nr_inodes=64", "arena-test-full", str(full)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={full / 'filler'}", "bs=1k", "count=64"], capture_output=True)
        ev_id = create_evaluation(load_settings(), sub_id)
        env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}
        res = subprocess.run([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        db.expire_all()
        ev = db.get(Evaluation, ev_id)
        assert ev.status == EvaluationStatus.FAILED, (ev.status, ev.error)
        assert "No space left on device" in ev.error or "no space" in ev.error.lower(), ev.error
        rows = db.scalars(select(CaseResult).where(CaseResult.evaluation_id == ev_id)).all()
        # whatever was recorded before the disk filled up is whole: a failed case with its reason, or a
        # scored case with all its metrics
        assert all(cr.error or cr.metrics for cr in rows), [(cr.error, len(cr.metrics)) for cr in rows]
    finally:
        subprocess.run(["umount", "-l", str(full)], capture_output=True)
