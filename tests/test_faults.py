"""Faults injected for real: a worker SIGKILLed mid-case leaves no container running and no evaluation
stuck; the next worker on the host re-queues it and finishes it, each case recorded once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from arena.lifecycle import EvaluationStatus
from arena.models import CaseResult, Evaluation

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]



def test_worker_killed_mid_case(settings, db, redis_url, docker_engine, base_image, tmp_path, arena_env):
    from arena.config import load_settings
    from arena.runner.jobs import create_evaluation
    from runner_helpers import build_writer_image, validated_submissions

    image_id = build_writer_image(tmp_path, base_image, 4, "arena-test/slow-writer:faults")
    (sub_id,) = validated_submissions(db, settings, image_id, 1, 2)
    os.environ["ARENA_REDIS_URL"] = redis_url
    ev_id = create_evaluation(load_settings(), sub_id)
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}

    worker = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    label = f"arena.evaluation={ev_id}"
    deadline = time.monotonic() + 60
    while not docker_engine.containers.list(filters={"label": label}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert docker_engine.containers.list(filters={"label": label}), "the first case never started"
    # the worker and its work-horse (RQ gives the horse its own process group: kill the whole session)
    subprocess.run(["pkill", "-KILL", "-s", str(worker.pid)], check=False)
    worker.wait(timeout=10)
    time.sleep(0.5)
    left = [p for p in subprocess.run(["pgrep", "-s", str(worker.pid)], capture_output=True, text=True).stdout.split()
            if Path(f"/proc/{p}/stat").exists() and Path(f"/proc/{p}/stat").read_text().split(") ")[-1][0] != "Z"]
    assert not left, f"processes of the killed worker still alive: {left}"
    db.expire_all()
    assert db.get(Evaluation, ev_id).status == EvaluationStatus.RUNNING  # what a crash leaves behind
    assert docker_engine.containers.list(filters={"label": label})  # an orphaned container, still running

    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "re-queued evaluations" in res.stdout
    db.expire_all()
    ev = db.get(Evaluation, ev_id)
    assert ev.status == EvaluationStatus.SUCCEEDED, ev.error
    assert "re-queued: worker" in ev.error  # the history says what happened
    counts = db.execute(select(CaseResult.case_id, func.count()).where(CaseResult.evaluation_id == ev_id)
                        .group_by(CaseResult.case_id)).all()
    assert len(counts) == 2 and all(n == 1 for _, n in counts)
    assert not docker_engine.containers.list(all=True, filters={"label": label})
    work = str(settings.work_dir / f"evaluation-{ev_id}")
    assert not [line for line in Path("/proc/mounts").read_text().splitlines() if work in line]  # no tmpfs left
    assert time.monotonic() - t0 < 120
