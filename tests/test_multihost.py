"""Several hosts, for real, on one machine: a worker "on another host" runs in a network namespace the
test creates, joined to the root namespace by a veth pair with a private /30 that nothing else on the
machine routes. Redis (and PostgreSQL, when its server is installed) are test-owned processes listening
only on the veth's root-side address, so the namespaced worker reaches them over that link, as a worker
machine reaches the queue and database hosts over a private network; its own 127.0.0.1 has nothing.
The store (ARENA_HOME) is the shared filesystem; the Docker Engine is the machine's, reached through
its unix socket (unix sockets are not namespaced by netns), as each worker machine drives its own.

Evaluations enqueued from the root namespace are taken by both workers (the namespaced one and one in the
root namespace); every evaluation is run by exactly one of them, every case recorded once, none lost.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from arena.lifecycle import CaseStatus, EvaluationStatus
from runner_helpers import PrivatePostgres, free_port, make_link, postgres_unavailable

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class QueueHost:
    """A test-owned redis-server bound to the veth's root-side address only (no persistence)."""

    def __init__(self, addr: str) -> None:
        from arena.services import redis_ok

        self.port = free_port(addr)
        self.url = f"redis://{addr}:{self.port}/0"
        self.proc = subprocess.Popen(["redis-server", "--bind", addr, "--port", str(self.port), "--save", "",
                                      "--appendonly", "no", "--protected-mode", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_ok(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer at {self.url}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def link():
    link = make_link()
    yield link
    link.destroy()


def _jobs_taken(log: str) -> set[int]:
    """Evaluations a worker ran, from its log (arena.runner logs each case it starts)."""
    return {int(m) for m in re.findall(r"evaluation (\d+): case \d+/\d+", log)}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_worker_in_another_network_namespace(database, settings, link, tmp_path, arena_env, docker_engine,
                                             monkeypatch):
    from arena.config import load_settings
    from arena.db import session_factory, upgrade
    from arena.runner.jobs import create_evaluation
    from runner_helpers import (build_tiny_image, case_counts, tiny_images_available, validated_submissions,
                                wait_finished)

    if os.environ.get("ARENA_TEST_POSTGRES_URL"):  # the same two runs as the SQLite pass: nothing new to learn
        pytest.skip("uses its own SQLite file or private PostgreSQL whatever the pass: both ran in the SQLite pass")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    if not tiny_images_available():
        pytest.skip("needs Debian's busybox-static (/bin/busybox) and a docker CLI for the tiny test image")
    if database == "postgresql" and postgres_unavailable():
        pytest.skip(postgres_unavailable())

    stack = []  # finalizers, run in reverse
    workers: list[subprocess.Popen] = []
    try:
        queue = QueueHost(link.root_ip)
        stack.append(queue.stop)
        # the database is the test's own, whatever ARENA_TEST_POSTGRES_URL says: the other host must reach it
        if database == "postgresql":
            pg = PrivatePostgres(link.root_ip, trust_net=link.net)
            stack.append(pg.destroy)
            pg.start()
            db_url = pg.url
        else:  # a file in the shared store (one machine's filesystem here)
            db_url = f"sqlite:///{settings.home / 'multihost.db'}"
        upgrade(db_url)
        monkeypatch.setenv("ARENA_DATABASE_URL", db_url)
        monkeypatch.setenv("ARENA_REDIS_URL", queue.url)
        net_settings = replace(settings, database_url=db_url, redis_url=queue.url)
        db = session_factory(db_url)()
        stack.append(db.close)

        # the other host really is elsewhere: its loopback has no Redis, the veth address answers
        probe = [*link.enter, sys.executable, "-c",
                 "import sys; from arena.services import redis_ok; print(redis_ok(sys.argv[1]))"]
        local = subprocess.run(probe + ["redis://127.0.0.1:6379/0"], capture_output=True, text=True, timeout=30)
        over_veth = subprocess.run(probe + [queue.url], capture_output=True, text=True, timeout=30)
        assert local.stdout.strip() == "False", local.stdout + local.stderr
        assert over_veth.stdout.strip() == "True", over_veth.stdout + over_veth.stderr

        tag = build_tiny_image("slow", tag="arena-test/tiny-slow:multihost", env={"SLOW_S": "2"})
        image_id = docker_engine.images.get(tag).id
        sub_ids = validated_submissions(db, net_settings, image_id, 6, 2)

        env = {**os.environ, **arena_env, "ARENA_DATABASE_URL": db_url, "ARENA_REDIS_URL": queue.url,
               "ARENA_HEARTBEAT_S": "1", "ARENA_STALE_AFTER_S": "60"}
        env.pop("DOCKER_HOST", None)  # both drive this machine's engine through its unix socket
        logs = {"netns": tmp_path / "worker-netns.log", "root": tmp_path / "worker-root.log"}
        for where, prefix in (("netns", link.enter), ("root", [])):
            with open(logs[where], "w") as out:
                workers.append(subprocess.Popen([*prefix, sys.executable, "-m", "arena.cli", "worker"], env=env,
                                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 60
        while not all("worker listening on" in p.read_text() for p in logs.values()):
            assert time.monotonic() < deadline, {k: p.read_text()[-1500:] for k, p in logs.items()}
            assert all(w.poll() is None for w in workers), {k: p.read_text()[-1500:] for k, p in logs.items()}
            time.sleep(0.2)
        # nsenter has entered the namespace and exec'd the worker by now (same PID): it lives in the test's
        # namespace, the other one in the root namespace
        assert link.in_namespace(workers[0].pid)
        assert os.stat(f"/proc/{workers[1].pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino

        ev_ids = [create_evaluation(load_settings(), sid) for sid in sub_ids]  # from the root namespace
        evs = [wait_finished(db, e, timeout_s=300) for e in ev_ids]
        text = {k: p.read_text() for k, p in logs.items()}
        assert [e.status for e in evs] == [EvaluationStatus.SUCCEEDED] * len(ev_ids), \
            [(e.id, e.status, e.error) for e in evs]
        for e in evs:
            assert case_counts(db, e.id) == [1, 1]  # no case run twice, none lost
            assert all(cr.status == CaseStatus.SUCCEEDED for cr in e.case_results)
        taken = {k: _jobs_taken(v) for k, v in text.items()}
        print(f"\n[{database}] evaluations run in the netns: {sorted(taken['netns'])}, "
              f"in the root namespace: {sorted(taken['root'])}")
        assert taken["netns"] and taken["root"], taken  # both hosts worked
        assert not taken["netns"] & taken["root"], taken  # no evaluation run by both
        assert taken["netns"] | taken["root"] == set(ev_ids), taken  # none lost
        assert not docker_engine.containers.list(all=True, filters={"label": f"arena.queue={settings.queue_name}"})
    finally:
        for w in workers:
            if w.poll() is None:
                subprocess.run(["pkill", "-TERM", "-s", str(w.pid)], check=False)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                subprocess.run(["pkill", "-KILL", "-s", str(w.pid)], check=False)
                w.wait(timeout=10)
        for fn in reversed(stack):
            fn()
