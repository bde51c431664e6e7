"""ContainerMonitor: CPU time, memory high-water mark, PIDs and GPU metrics of one container."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import types

import pytest

from arena.runner import monitor as monitor_mod
from arena.runner.monitor import ContainerMonitor, RunStats


def _run(client, image, code: str, *, pids_limit: int = 64, mem: str = "512m", gpu: tuple[str, ...] = (),
         interval_s: float = 0.25, on_start=None) -> tuple[RunStats, ContainerMonitor]:
    """Run ``python3 -c code`` in a sandbox-like container under a monitor; always remove it."""
    import docker.errors

    container = client.containers.create(image, command=["python3", "-c", code], pids_limit=pids_limit,
                                         mem_limit=mem, memswap_limit=mem, network_mode="none",
                                         labels={"arena.test": "monitor"}, use_config_proxy=False)
    try:
        container.start()
        if on_start is not None:
            on_start(container)
        with ContainerMonitor(client, container, pids_limit=pids_limit, gpu_device_ids=gpu,
                              interval_s=interval_s) as mon:
            container.wait(timeout=60)
        return mon.result(), mon
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass


class _FakeNVMLError(Exception):
    pass


def _fake_pynvml(*, init_error: Exception | None = None) -> types.ModuleType:
    """A stand-in for nvidia-ml-py with two devices: index 0 and UUID GPU-fake-1."""
    m = types.ModuleType("pynvml")
    m.NVMLError = _FakeNVMLError
    m.calls = {"init": 0, "shutdown": 0, "procs": 0}
    m.container_pid = None  # set once the container runs
    m.mem0 = [100, 300, 50]  # MiB the container uses on device 0, call after call (then stays 50)

    def nvmlInit():
        m.calls["init"] += 1
        if init_error is not None:
            raise init_error

    def nvmlShutdown():
        m.calls["shutdown"] += 1

    def by_index(i):
        if i != 0:
            raise _FakeNVMLError("Invalid Argument")
        return "h0"

    def by_uuid(u):
        if u != "GPU-fake-1":
            raise _FakeNVMLError("Not Found")
        return "h1"

    def procs(h):
        m.calls["procs"] += 1
        p = m.container_pid
        if h == "h0":
            mine = m.mem0.pop(0) if len(m.mem0) > 1 else m.mem0[0]
            return [types.SimpleNamespace(pid=p, usedGpuMemory=mine * 2**20),
                    types.SimpleNamespace(pid=1, usedGpuMemory=8192 * 2**20),  # another process: not counted
                    types.SimpleNamespace(pid=p, usedGpuMemory=None)]  # memory not available: skipped
        return [types.SimpleNamespace(pid=p, usedGpuMemory=100 * 2**20)]

    def util(h):
        return types.SimpleNamespace(gpu=30 if h == "h0" else 50, memory=10)

    m.nvmlInit, m.nvmlShutdown = nvmlInit, nvmlShutdown
    m.nvmlDeviceGetHandleByIndex, m.nvmlDeviceGetHandleByUUID = by_index, by_uuid
    m.nvmlDeviceGetComputeRunningProcesses, m.nvmlDeviceGetUtilizationRates = procs, util
    return m


def test_columns_are_exactly_the_stats_columns():
    s = RunStats(1.5, 200.0, 12, False, None, None, 4)
    assert s.columns() == {"cpu_s": 1.5, "peak_memory_mb": 200.0, "pids_peak": 12,
                           "gpu_memory_peak_mb": None, "gpu_utilization_mean": None}


@pytest.mark.docker
def test_peak_memory_of_a_200_mb_allocation(docker_engine, base_image):
    stats, _ = _run(docker_engine, base_image,
                    "import time\na = b'x' * (200 * 2**20)\ntime.sleep(0.5)")
    assert stats.samples >= 1
    assert 150 <= stats.peak_memory_mb <= 400, stats
    assert stats.gpu_memory_peak_mb is None and stats.gpu_utilization_mean is None


@pytest.mark.docker
def test_cpu_time_of_a_busy_loop(docker_engine, base_image):
    stats, _ = _run(docker_engine, base_image,
                    "import time\nt = time.time()\nwhile time.time() - t < 1.2: pass")
    assert stats.cpu_s is not None and stats.cpu_s > 0.5, stats
    assert stats.cpu_s < 10, stats
    assert not stats.pids_limit_hit


@pytest.mark.docker
def test_pids_limit_hit_is_reported(docker_engine, base_image):
    code = ("import subprocess, time\nps = []\n"
            "for i in range(30):\n"
            "    try: ps.append(subprocess.Popen(['sleep', '30']))\n"
            "    except OSError: pass\n"
            "time.sleep(1.0)\nprint(len(ps))")
    stats, _ = _run(docker_engine, base_image, code, pids_limit=20)
    assert stats.pids_limit_hit, stats
    assert stats.pids_peak is not None and stats.pids_peak >= 15, stats


@pytest.mark.docker
def test_gpu_metrics_with_a_fake_nvml(docker_engine, base_image, monkeypatch):
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    def on_start(container):
        container.reload()
        fake.container_pid = container.attrs["State"]["Pid"]

    stats, _ = _run(docker_engine, base_image, "import time\ntime.sleep(1.2)", gpu=("0", "GPU-fake-1"),
                    interval_s=0.1, on_start=on_start)
    assert fake.calls["procs"] >= 6  # several samples on both devices
    # peak of (device 0: 100, 300, 50 … MiB) + (device GPU-fake-1: 100 MiB); PID 1's 8 GiB is not the container's
    assert stats.gpu_memory_peak_mb == pytest.approx(400.0), stats
    assert stats.gpu_utilization_mean == pytest.approx(40.0), stats
    assert fake.calls["init"] == 1 and fake.calls["shutdown"] == 1


@pytest.mark.docker
@pytest.mark.parametrize("broken", ["not-installed", "no-driver"])
def test_no_gpu_metrics_without_a_driver(docker_engine, base_image, monkeypatch, caplog, broken):
    if broken == "not-installed":
        monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml → ImportError
    else:
        fake = _fake_pynvml(init_error=_FakeNVMLError("NVML Shared Library Not Found"))
        monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(monitor_mod, "_no_gpu_logged", False)
    caplog.set_level(logging.DEBUG, logger="arena.runner")
    for _ in range(2):  # two cases: one line per process, not per case
        stats, _ = _run(docker_engine, base_image, "pass", gpu=("0",))
        assert stats.gpu_memory_peak_mb is None and stats.gpu_utilization_mean is None
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and "no GPU metrics" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].name == "arena.runner"
    if broken == "no-driver":
        assert "NVML" in lines[0].getMessage()


@pytest.mark.docker
def test_no_gpu_pinned_means_no_nvml(docker_engine, base_image, monkeypatch, caplog):
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    caplog.set_level(logging.INFO, logger="arena.runner")
    stats, _ = _run(docker_engine, base_image, "pass")
    assert stats.gpu_memory_peak_mb is None and stats.gpu_utilization_mean is None
    assert fake.calls["init"] == 0
    assert not [r for r in caplog.records if "no GPU metrics" in r.getMessage()]


@pytest.mark.docker
def test_stops_promptly_and_keeps_values_after_exit(docker_engine, base_image):
    container = docker_engine.containers.create(base_image, command=["sleep", "30"], pids_limit=16,
                                                network_mode="none", labels={"arena.test": "monitor"})
    try:
        container.start()
        mon = ContainerMonitor(docker_engine, container, pids_limit=16, interval_s=5.0)
        with mon:
            time.sleep(0.3)
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 1.0  # __exit__ does not wait for the 5 s interval
        before = mon.result()
        assert before.samples >= 2 and before.peak_memory_mb and before.pids_peak == 1
        container.kill()
        container.wait(timeout=30)
        assert mon.result() == before  # the cgroup is gone; the values stay
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_never_raises_for_a_removed_container(docker_engine, base_image):
    container = docker_engine.containers.create(base_image, command=["true"], network_mode="none")
    container.remove(force=True)
    with ContainerMonitor(docker_engine, container, pids_limit=8, gpu_device_ids=(), interval_s=0.05) as mon:
        time.sleep(0.15)
    stats = mon.result()
    assert stats.cpu_s is None and stats.peak_memory_mb is None and stats.pids_peak is None
    assert stats.samples == 0 and not stats.pids_limit_hit


@pytest.mark.docker
def test_stats_api_fallback_when_no_cgroup_file_is_readable(docker_engine, base_image, monkeypatch):
    monkeypatch.setattr(monitor_mod, "find_cgroup_files", lambda *a, **k: None)
    container = docker_engine.containers.create(base_image, command=["sleep", "30"], pids_limit=16,
                                                network_mode="none", labels={"arena.test": "monitor"})
    try:
        container.start()
        with ContainerMonitor(docker_engine, container, pids_limit=16, interval_s=0.1) as mon:
            time.sleep(1.2)
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 1.5  # does not wait out a slow stats call
        stats = mon.result()
        assert stats.samples >= 1 and stats.peak_memory_mb and stats.pids_peak == 1, stats
    finally:
        container.remove(force=True)


def test_cgroup_mounts_and_paths(tmp_path):
    from arena.runner.monitor import _cgroup_mounts, _join

    mi = tmp_path / "mountinfo"
    mi.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
        "41 31 0:38 / /mnt/my\\040cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n")
    v1, v2 = _cgroup_mounts(str(mi))
    assert v1["cpuacct"] == v1["cpu"] == [("/", "/sys/fs/cgroup/cpu,cpuacct")]
    assert v1["memory"] == [("/docker/abc", "/sys/fs/cgroup/memory")]
    assert v2 == [("/", "/mnt/my cgroup")]
    assert _join("/", "/mnt/my cgroup", "/system.slice/docker-x.scope") == "/mnt/my cgroup/system.slice/docker-x.scope"
    assert _join("/docker/abc", "/sys/fs/cgroup/memory", "/docker/abc") == "/sys/fs/cgroup/memory"
    assert _join("/docker/abc", "/sys/fs/cgroup/memory", "/docker/abcd") is None


_GPU_CHILD = """
import sys, time, torch
x = torch.empty(1024 * 2**20, dtype=torch.uint8, device="cuda:0")  # 1 GiB
a = torch.randn(4096, 4096, device="cuda:0")
print("ready", flush=True)
t = time.time()
while time.time() - t < 4:
    a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()
"""


def test_gpu_sampler_with_a_real_driver():
    """Only where nvidia-ml-py, a driver and CUDA torch exist: the NVML path against a real GPU process."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as e:
        pytest.skip(f"no NVIDIA driver: {e}")
    probe = subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no CUDA-enabled torch to make GPU load with")
    from arena.runner.monitor import _GpuSampler

    child = subprocess.Popen([sys.executable, "-c", _GPU_CHILD], stdout=subprocess.PIPE, text=True)
    sampler = None
    try:
        assert child.stdout.readline().strip() == "ready"
        sampler = _GpuSampler.open(("0",))
        assert sampler is not None
        mems, utils = [], []
        for _ in range(12):
            mem, util = sampler.sample({child.pid})
            mems.append(mem)
            utils.append(util)
            time.sleep(0.2)
        other, _ = sampler.sample({os.getpid()})
        print("GPU memory MiB per sample:", mems, "utilization %:", utils)
        assert max(mems) >= 1024  # the 1 GiB tensor (plus the CUDA context)
        assert max(utils) > 0
        assert other == 0.0  # this process has no CUDA context
    finally:
        if sampler is not None:
            sampler.close()
        child.kill()
        child.wait()
