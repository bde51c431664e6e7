"""The sandbox on a real Docker engine: isolation holds, failures are reported in words."""

from __future__ import annotations

import pytest

from arena.runner.identity import NOBODY, effective_user
from arena.runner.sandbox import SandboxLimits, run_sandboxed

pytestmark = pytest.mark.docker

PROBE = r"""
import os, socket, json
r = {"uid": os.getuid()}
try:
    open("/probe", "w"); r["root_writable"] = True
except OSError as e:
    r["root_writable"] = False
try:
    open("/input/x", "w"); r["input_writable"] = True
except OSError:
    r["input_writable"] = False
open("/tmp/scratch", "w").write("ok"); r["tmp"] = True
open("/output/result.txt", "w").write("hello")
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2); r["net"] = True
except OSError:
    r["net"] = False
r["ifaces"] = sorted(os.listdir("/sys/class/net"))
r["caps"] = [l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1]
r["nnp"] = [l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0].split()[1]
r["input"] = open("/input/data.txt").read()
print(json.dumps(r))
"""


def _mounts(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    out.chmod(0o777)
    (inp / "data.txt").write_text("case data")
    (inp / "data.txt").chmod(0o644)
    return {"/input": (str(inp), "ro"), "/output": (str(out), "rw")}, out


def test_isolation(docker_engine, base_image, tmp_path):
    import json

    mounts, out = _mounts(tmp_path)
    res = run_sandboxed(docker_engine, base_image, mounts=mounts, limits=SandboxLimits(time_s=60),
                        command=["python3", "-c", PROBE], labels={"arena.test": "isolation"})
    assert res.ok, res.logs
    r = json.loads(res.logs.strip().splitlines()[-1])
    assert r["uid"] == 65534
    assert r["root_writable"] is False and r["input_writable"] is False and r["tmp"] is True
    assert r["net"] is False and r["ifaces"] == ["lo"]
    assert int(r["caps"], 16) == 0 and r["nnp"] == "1"
    assert r["input"] == "case data"
    assert (out / "result.txt").read_text() == "hello"
    assert not docker_engine.containers.list(all=True, filters={"label": "arena.test=isolation"})


def test_nonzero_exit_and_logs(docker_engine, base_image, tmp_path):
    mounts, _ = _mounts(tmp_path)
    res = run_sandboxed(docker_engine, base_image, mounts=mounts, limits=SandboxLimits(time_s=60),
                        command=["python3", "-c", "import sys; print('loading model'); sys.exit(3)"])
    assert res.exit_code == 3 and res.error == "the container exited with code 3"
    assert "loading model" in res.logs


def test_timeout_kills(docker_engine, base_image, tmp_path):
    mounts, _ = _mounts(tmp_path)
    res = run_sandboxed(docker_engine, base_image, mounts=mounts, limits=SandboxLimits(time_s=2),
                        command=["python3", "-c", "import time; time.sleep(60)"], labels={"arena.test": "timeout"})
    assert res.timed_out and "timed out after 2 s" in res.error
    assert res.runtime_s < 30
    assert not docker_engine.containers.list(all=True, filters={"label": "arena.test=timeout"})


def test_memory_limit(docker_engine, base_image, tmp_path):
    mounts, _ = _mounts(tmp_path)
    res = run_sandboxed(docker_engine, base_image, mounts=mounts, limits=SandboxLimits(time_s=60, memory_mb=96),
                        command=["python3", "-c", "x = bytearray(400 * 2**20); x[::4096] = b'1' * len(x[::4096])"])
    assert res.oom_killed and "out of memory" in res.error


def test_missing_image(docker_engine, tmp_path):
    mounts, _ = _mounts(tmp_path)
    res = run_sandboxed(docker_engine, "sha256:" + "0" * 64, mounts=mounts, limits=SandboxLimits(), user=NOBODY)
    assert res.error and "not present" in res.error


def test_effective_user():
    assert effective_user("") == NOBODY and effective_user("root") == NOBODY and effective_user("0:0") == NOBODY
    assert effective_user("1000:1000") == "1000:1000" and effective_user("algo") == "algo"


def test_reap_leftovers(docker_engine, base_image):
    """Stopped containers of dead workers are removed at worker start; one whose worker is alive on this host
    (a second worker sharing the engine, reading its exited container's logs) is left alone."""
    import os
    import socket
    import subprocess

    from arena.runner.jobs import live_local_worker
    from arena.runner.sandbox import reap_leftovers

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    tag = f"reap-{os.getpid()}"
    host = socket.gethostname()
    dead = docker_engine.containers.create(base_image, ["true"], labels={
        "arena.managed": "1", "arena.test": tag, "arena.worker": f"{host}:{gone.pid}"})
    live = docker_engine.containers.create(base_image, ["true"], labels={
        "arena.managed": "1", "arena.test": tag, "arena.worker": f"{host}:{os.getpid()}"})
    try:
        n = reap_leftovers(docker_engine, f"arena.test={tag}",
                           keep=lambda labels: live_local_worker(labels.get("arena.worker")))
        assert n == 1
        assert not docker_engine.containers.list(all=True, filters={"id": dead.id})
        assert docker_engine.containers.list(all=True, filters={"id": live.id})
        assert reap_leftovers(docker_engine, f"arena.test={tag}") == 1  # without keep: every stopped one
    finally:
        for c in (dead, live):
            try:
                c.remove(force=True)
            except Exception:
                pass
