"""Two real worker processes against one Redis and one database: a burst of evaluations, each case run
exactly once, none lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from arena.lifecycle import EvaluationStatus
from arena.models import CaseResult, Evaluation

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]



def test_two_workers_burst(settings, db, redis_url, docker_engine, base_image, tmp_path, arena_env, monkeypatch):
    from arena.config import load_settings
    from arena.runner.jobs import create_evaluation
    from runner_helpers import build_writer_image, validated_submissions

    image_id = build_writer_image(tmp_path, base_image, 0.5, "arena-test/writer:scale")
    sub_ids = validated_submissions(db, settings, image_id, 8, 3)
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    s = load_settings()
    ev_ids = [create_evaluation(s, sid) for sid in sub_ids]
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}
    workers = [subprocess.Popen([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    db.expire_all()
    evs = [db.get(Evaluation, e) for e in ev_ids]
    assert [e.status for e in evs] == [EvaluationStatus.SUCCEEDED] * 8, [e.error for e in evs]
    per_eval = dict(db.execute(select(CaseResult.evaluation_id, func.count(CaseResult.id))
                               .where(CaseResult.evaluation_id.in_(ev_ids)).group_by(CaseResult.evaluation_id)).all())
    assert per_eval == {e: 3 for e in ev_ids}  # every case exactly once, no evaluation lost
    assert all("arena.runner evaluation" in out for out in outputs), outputs  # both workers ran cases
    assert not docker_engine.containers.list(all=True, filters={"label": f"arena.queue={settings.queue_name}"})
