"""The Docker Engine killed mid-case, for real: a private dockerd (its own data-root, exec-root, socket,
pidfile and bridge; the suite's engine is never touched) runs the case container of a real worker; the
test kills that dockerd while the case runs and starts it again on the same data-root.

The worker waits for the engine (ARENA_ENGINE_WAIT_S), removes the broken-off run's container and runs
the case again: the evaluation succeeds with every case recorded once. When the engine stays away the
evaluation is re-queued, then failed with a reason naming the Docker engine: never stuck in running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from arena.lifecycle import CaseStatus, EvaluationStatus
from arena.models import Evaluation
from arena.runner.jobs import _pid_alive

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


class PrivateDockerd:
    """A second dockerd owned by the test. ``--iptables=false --ip-masq=false --ip-forward=false``: it
    changes no firewall rule or sysctl; its default network is a bridge the test creates with a /30
    that nothing else on the machine routes (never ``--bridge=none``: that deletes the host's docker0)."""

    def __init__(self) -> None:
        from runner_helpers import free_private_slash30

        # a short path: containerd's sockets live below the exec-root (unix socket paths max 108 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="arena-dd-", dir="/tmp"))
        self.sock = self.root / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.bridge = f"ardd{uuid.uuid4().hex[:6]}"
        self.net = free_private_slash30()
        self.proc: subprocess.Popen | None = None
        self.bridge_made = False
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True, capture_output=True)
        self.bridge_made = True
        gw = next(self.net.hosts())
        subprocess.run(["ip", "addr", "add", f"{gw}/{self.net.prefixlen}", "dev", self.bridge], check=True,
                       capture_output=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True, capture_output=True)

    def start(self, timeout_s: float = 90) -> None:
        """Start dockerd and wait until its API answers (a restart first stops the containers the killed
        daemon left running: up to ~10 s)."""
        import docker

        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "docker.pid"), "-H", self.host, "--bridge", self.bridge,
             "--iptables=false", "--ip-masq=false", "--ip-forward=false", "--ip6tables=false",
             "--userland-proxy=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                c = docker.DockerClient(base_url=self.host, timeout=10)
                c.ping()
                c.close()
                return
            except Exception:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"dockerd exited ({self.proc.returncode}): {self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd did not answer within {timeout_s} s: {self.log_tail()}")
                time.sleep(0.2)

    def signal(self, sig: signal.Signals, timeout_s: float = 60) -> None:
        """Send ``sig`` to dockerd and wait for it to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.host, timeout=60)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return (self.root / "dockerd.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def destroy(self) -> None:
        """Stop the daemon gracefully (a daemon started again after a kill stops the containers the dead
        one left; a graceful stop stops its own), kill any shim of it still there, unmount everything
        below its roots, remove its directories and its bridge."""
        if self.proc is not None and self.proc.poll() is not None:
            try:
                self.start(timeout_s=60)
            except RuntimeError:
                pass
        self.signal(signal.SIGTERM)
        address = f"{self.root}/exec/containerd/containerd.sock"
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if address.encode() in cmd and _pid_alive(int(pid)):  # a shim of this daemon only
                os.kill(int(pid), signal.SIGKILL)
        prefix = str(self.root) + "/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if (line.split()[1] + "/").startswith(prefix)]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


@pytest.fixture
def private_dockerd():
    from runner_helpers import tiny_images_available

    if os.geteuid() != 0:
        pytest.skip("a private dockerd needs root")
    for tool in ("dockerd", "containerd", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not tiny_images_available():
        pytest.skip("needs Debian's busybox-static (/bin/busybox) and a docker CLI for the tiny test image")
    try:
        engine = PrivateDockerd()
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create a bridge here: {e.stderr.decode(errors='replace').strip()}")
    try:
        engine.start()
        yield engine
    finally:
        engine.destroy()
    assert not [line for line in Path("/proc/mounts").read_text().splitlines() if str(engine.root) in line]


def _start(db, settings, arena_env, redis_url, monkeypatch, engine: PrivateDockerd, tmp_path, slow_s: int,
           **extra_env):
    """A slow tiny image loaded into the private engine, one validated submission of it on two cases, its
    evaluation queued, and a real worker (``arena worker``) on the private engine."""
    from arena.config import load_settings
    from arena.runner.jobs import create_evaluation
    from runner_helpers import build_tiny_image, validated_submissions

    tag = build_tiny_image("slow", tag="arena-test/tiny-slow:dockerd", docker_host=engine.host,
                           env={"SLOW_S": str(slow_s)})
    client = engine.client()
    image_id = client.images.get(tag).id
    (sub_id,) = validated_submissions(db, settings, image_id, 1, 2)
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    ev_id = create_evaluation(load_settings(), sub_id)
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url, "DOCKER_HOST": engine.host,
           "ARENA_HEARTBEAT_S": "1", "ARENA_STALE_AFTER_S": "60", **extra_env}
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return client, ev_id, env, worker


def _stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        subprocess.run(["pkill", "-TERM", "-s", str(worker.pid)], check=False)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["pkill", "-KILL", "-s", str(worker.pid)], check=False)
            worker.wait(timeout=10)


def _our_containers(client, settings) -> list:
    return client.containers.list(all=True, filters={"label": f"arena.queue={settings.queue_name}"})


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_dockerd_restarted_mid_case(sig, settings, db, redis_url, private_dockerd, tmp_path, arena_env,
                                    monkeypatch):
    """dockerd dies while the first case's container runs and comes back on the same data-root: the
    worker waits for it, runs the case again, and the evaluation succeeds with each case recorded once
    and no container of this test left on the engine."""
    from runner_helpers import case_counts, wait_finished, wait_for_case_container

    engine = private_dockerd
    client, ev_id, _, worker = _start(db, settings, arena_env, redis_url, monkeypatch, engine, tmp_path, slow_s=6)
    try:
        wait_for_case_container(client, ev_id, timeout_s=90)
        client.close()
        killed_at = time.monotonic()
        engine.signal(sig)
        time.sleep(2)  # the worker notices; it must not record anything for the broken-off case
        db.expire_all()
        ev = db.get(Evaluation, ev_id)
        assert ev.status == EvaluationStatus.RUNNING and ev.cases_done == 0, (ev.status, ev.error)
        engine.start()
        back_at = time.monotonic()
        ev = wait_finished(db, ev_id, timeout_s=240)
        done_at = time.monotonic()
        print(f"\n[dockerd {sig.name}] engine answering again {back_at - killed_at:.1f} s after the kill; evaluation "
              f"{ev.status.value} {done_at - back_at:.1f} s later (both cases: 2 × 6 s of sleep)")
        assert ev.status == EvaluationStatus.SUCCEEDED, (ev.error, (tmp_path / "worker.log").read_text()[-3000:])
        assert case_counts(db, ev_id) == [1, 1]
        assert all(cr.status == CaseStatus.SUCCEEDED and cr.metrics for cr in ev.case_results)
        client = engine.client()
        # the worker removes the broken-off run's container once the engine is back, and its own after each run
        deadline = time.monotonic() + 30
        while _our_containers(client, settings) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _our_containers(client, settings)
        log = (tmp_path / "worker.log").read_text()
        assert "went away" in log and "running it again" in log, log[-3000:]
    finally:
        _stop_worker(worker)
    runs = str(settings.run_root)
    assert not [line for line in Path("/proc/mounts").read_text().splitlines() if runs in line]  # no tmpfs left


def test_dockerd_gone_for_good_fails_naming_the_engine(settings, db, redis_url, private_dockerd, tmp_path,
                                                       arena_env, monkeypatch):
    """dockerd is killed mid-case and stays away past ARENA_ENGINE_WAIT_S: the evaluation is re-queued
    (platform-caused) and, the engine still gone, ends failed with a reason naming the Docker engine;
    it never stays running. Once the engine is back a worker start removes what it left."""
    from arena.runner.jobs import MAX_REQUEUES
    from runner_helpers import case_counts, wait_finished, wait_for_case_container

    engine = private_dockerd
    client, ev_id, env, worker = _start(db, settings, arena_env, redis_url, monkeypatch, engine, tmp_path,
                                        slow_s=30, ARENA_ENGINE_WAIT_S="3")
    try:
        wait_for_case_container(client, ev_id, timeout_s=90)
        client.close()
        engine.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        ev = wait_finished(db, ev_id, timeout_s=120)
        print(f"\n[dockerd gone] evaluation {ev.status.value} {time.monotonic() - killed_at:.1f} s after the kill "
              f"(ARENA_ENGINE_WAIT_S=3, {MAX_REQUEUES} re-queues): {ev.error}")
        assert ev.status == EvaluationStatus.FAILED, (ev.status, ev.error)
        assert "Docker engine" in ev.error and engine.host in ev.error, ev.error
        assert f"gave up after {MAX_REQUEUES} re-queues" in ev.error, ev.error
        assert case_counts(db, ev_id) == []  # nothing half-recorded for the broken-off case
    finally:
        _stop_worker(worker)
    engine.start()
    res = subprocess.run([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    client = engine.client()
    assert not _our_containers(client, settings)
