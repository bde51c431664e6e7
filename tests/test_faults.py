"""Faults injected for real: a worker SIGKILLed mid-case leaves no container running and no evaluation
stuck; the next worker on the host re-queues it and finishes it, each case recorded once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arena.lifecycle import EvaluationStatus
from arena.models import Evaluation

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]



def test_worker_killed_mid_case(settings, db, redis_url, docker_engine, base_image, tmp_path, arena_env,
                                monkeypatch):
    from arena.config import load_settings
    from arena.runner.jobs import create_evaluation
    from runner_helpers import build_writer_image, case_counts, validated_submissions, wait_for_case_container

    image_id = build_writer_image(tmp_path, base_image, 4, "arena-test/slow-writer:faults")
    (sub_id,) = validated_submissions(db, settings, image_id, 1, 2)
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    ev_id = create_evaluation(load_settings(), sub_id)
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}

    worker = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    # this test's containers only: evaluation ids repeat across test databases sharing one engine
    label = [f"arena.evaluation={ev_id}", f"arena.queue={arena_env['ARENA_QUEUE']}"]
    wait_for_case_container(docker_engine, ev_id, timeout_s=60)
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
    assert case_counts(db, ev_id) == [1, 1]
    assert not docker_engine.containers.list(all=True, filters={"label": label})
    runs = str(settings.run_root)
    assert not [line for line in Path("/proc/mounts").read_text().splitlines() if runs in line]  # no tmpfs left
    assert not list(settings.run_root.iterdir())  # the dead worker's run folder was removed too
    assert time.monotonic() - t0 < 120


def test_redis_restart_loses_nothing(settings, db, docker_engine, base_image, tmp_path, arena_env, monkeypatch):
    """A private Redis (a real process) is SIGKILLed and restarted empty while evaluations and an intake
    are queued: the next worker re-queues them from the database and finishes them."""
    import socket

    from arena.config import load_settings
    from arena.lifecycle import SubmissionStatus
    from arena.models import Submission
    from arena.runner.jobs import create_evaluation, enqueue_intake
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.users import create_user
    from runner_helpers import build_writer_image, validated_submissions

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"

    def start_redis():
        p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                return p
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    redis = start_redis()
    try:
        monkeypatch.setenv("ARENA_REDIS_URL", url)
        image_id = build_writer_image(tmp_path, base_image, 0, "arena-test/writer:redis")
        sub_ids = validated_submissions(db, settings, image_id, 2, 1)
        ev_ids = [create_evaluation(load_settings(), sid) for sid in sub_ids]
        # an upload whose intake job will be lost too (an invalid archive: the intake fails it, with a reason)
        user, _ = create_user(db, "late", team="Late")
        junk = settings.uploads_dir / "junk.tar"
        junk.write_bytes(b"not an image")
        late = create_submission(db, "han-oar-22", "validation", user, StoredUpload(junk, "1" * 64, 12))
        db.commit()
        enqueue_intake(load_settings(), late.id)
        redis.kill()  # SIGKILL: no persistence, every queued job is gone
        redis.wait(timeout=10)
        redis = start_redis()
        env = {**os.environ, **arena_env, "ARENA_REDIS_URL": url}
        res = subprocess.run([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert "re-queued jobs the queue had lost" in res.stdout
        db.expire_all()
        assert [db.get(Evaluation, e).status for e in ev_ids] == [EvaluationStatus.SUCCEEDED] * 2
        late = db.get(Submission, late.id)
        assert late.status == SubmissionStatus.FAILED and "not a tar archive" in late.error
    finally:
        redis.kill()
        redis.wait(timeout=10)
