"""Faults in what the runner writes to: the database stopped and started mid-evaluation (a private
PostgreSQL cluster, a real process), and a full results filesystem (a tiny tmpfs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from arena.lifecycle import EvaluationStatus
from arena.models import CaseResult, Evaluation

PG_BIN = Path("/usr/lib/postgresql/15/bin")
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free loopback port, run as the postgres user."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = root / "pgdata"
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, "postgres")
        self._as_pg([str(PG_BIN / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "arena", "--no-sync"])
        self.url = f"postgresql+psycopg://arena@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def _as_pg(cmd: list[str]) -> None:
        r = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, cwd="/tmp")
        if r.returncode:
            raise RuntimeError(f"{cmd[0]} failed: {r.stderr[-500:]}")

    def start(self) -> None:
        self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-w", "-l", str(self.dir.parent / "pg.log"), "-o",
                     f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])

    def stop(self) -> None:
        self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-w", "-m", "fast", "stop"])


@pytest.fixture
def private_pg():
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL 15 server binaries not installed (scripts/postgres.sh installs them)")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres system user")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="arena-pg-"))  # pytest's tmp_path is private to root: postgres can't enter
    pg = PrivatePostgres(root)
    pg.start()
    yield pg
    from arena.db import dispose_engines

    dispose_engines()
    try:
        pg.stop()
    except RuntimeError:
        pass
    shutil.rmtree(root, ignore_errors=True)


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
    worker = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker"], env=env, stdout=subprocess.PIPE,
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
            out, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["pkill", "-KILL", "-s", str(worker.pid)], check=False)
            out, _ = worker.communicate()
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
