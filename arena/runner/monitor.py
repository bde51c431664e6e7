"""Resource accounting for one running container, sampled in a background thread.

Usage, right after ``container.start()``::

    with ContainerMonitor(client, container, pids_limit=limits.pids,
                          gpu_device_ids=limits.gpu_device_ids) as mon:
        container.wait(...)
    stats = mon.result()          # RunStats; stats.columns() for the per-case columns

What is read, cheapest and most precise first:

* The container's own cgroup files, found through ``/proc/<State.Pid>/cgroup`` and
  ``/proc/self/mountinfo`` (works for the cgroupfs and systemd drivers, cgroup v1, v2 and hybrid):
  v1 ``memory.max_usage_in_bytes``, ``cpuacct.usage``, ``pids.current``/``pids.peak``/``pids.events``;
  v2 ``memory.peak`` (else ``memory.current`` tracked), ``cpu.stat`` usage_usec, ``pids.*``.
  The memory high-water mark is kept by the kernel, so a sample taken any time after the peak sees
  it; ``pids_peak`` is the largest ``pids.current`` sampled (the kernel's ``pids.peak`` also counts
  the runtime's setup threads, so it only feeds ``pids_limit_hit``). One sample reads a handful of small files (~0.1 ms).
* When a cgroup v2 hierarchy is mounted (pure v2, or the ``unified`` one of a hybrid v1 host), the
  thread also waits on the container's ``cgroup.events``: the kernel wakes it the moment the last
  process exits ("populated 0"), before the runtime deletes the cgroup, so the final CPU time and
  peaks are read exactly. Without it (pure v1) up to one ``interval_s`` at the very end is lost.
* Docker's stats API (``container.stats(stream=False)``) only if no cgroup file can be read (e.g. the
  worker runs in another PID namespace and no guessed path exists).
* GPU: NVML (nvidia-ml-py) per-process memory on the pinned devices, filtered to the container's host
  PIDs (its ``cgroup.procs``), and device utilization. Without pynvml or a driver the GPU fields are
  None and one line "no GPU metrics: <reason>" is logged per process.

The cgroup disappears when the container exits: the last good values are kept. Nothing here
raises into the caller; failures leave fields None and are logged at debug level.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("arena.runner")

MB = 2**20
STAT_COLUMNS = ("cpu_s", "peak_memory_mb", "pids_peak", "gpu_memory_peak_mb", "gpu_utilization_mean")


@dataclass
class RunStats:
    cpu_s: float | None  # CPU time (user+system) the container used, seconds
    peak_memory_mb: float | None  # high-water mark of the container's memory cgroup, MiB
    pids_peak: int | None  # most processes/threads seen at once
    pids_limit_hit: bool  # a fork/clone failed on the pids limit (pids.events "max" > 0, or peak >= limit)
    gpu_memory_peak_mb: float | None  # None when there are no GPU metrics (no driver / no GPU pinned)
    gpu_utilization_mean: float | None  # percent, mean over samples of the pinned device(s)
    samples: int

    def columns(self) -> dict[str, float | int | None]:
        return {k: getattr(self, k) for k in STAT_COLUMNS}


# ---------------------------------------------------------------------------------------------
# Finding the container's cgroup files


def _unescape_mount(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 …)."""
    if "\\" not in path:
        return path
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 4 <= len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def _cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> tuple[dict[str, list[tuple[str, str]]],
                                                                       list[tuple[str, str]]]:
    """(v1: controller → [(root, mount point)], v2: [(root, mount point)]) from mountinfo."""
    v1: dict[str, list[tuple[str, str]]] = {}
    v2: list[tuple[str, str]] = []
    try:
        text = Path(mountinfo).read_text()
    except OSError:
        return v1, v2
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 1:
            continue
        root, mountpoint = _unescape_mount(fields[3]), _unescape_mount(fields[4])
        fstype = rfields[0]
        if fstype == "cgroup2":
            v2.append((root, mountpoint))
        elif fstype == "cgroup" and len(rfields) >= 3:
            for opt in rfields[2].split(","):
                if opt in ("rw", "ro") or "=" in opt and not opt.startswith("name="):
                    continue
                v1.setdefault(opt, []).append((root, mountpoint))
    return v1, v2


def _join(root: str, mountpoint: str, cgpath: str) -> str | None:
    """The directory of cgroup ``cgpath`` under a hierarchy mounted at ``mountpoint`` (rooted at ``root``)."""
    root = root.rstrip("/")
    if root and not (cgpath == root or cgpath.startswith(root + "/")):
        return None
    rel = cgpath[len(root):].lstrip("/")
    return os.path.join(mountpoint, rel) if rel else mountpoint


def _proc_cgroup(pid: int) -> tuple[dict[str, str], str | None]:
    """(v1 controller → path, v2 path) of process ``pid``; ({}, None) when unreadable."""
    v1: dict[str, str] = {}
    v2: str | None = None
    if pid <= 0:
        return v1, v2
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return v1, v2
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        else:
            for c in controllers.split(","):
                if c:
                    v1[c] = path
    return v1, v2


@dataclass
class CgroupFiles:
    """The files one sample reads (absolute paths; None where this host has no such file)."""

    memory_peak: str | None = None  # kernel-kept high-water mark (bytes)
    memory_current: str | None = None  # current usage (bytes), tracked when there is no peak file
    cpu: str | None = None
    cpu_unit_s: float = 1e-9  # cpuacct.usage is in ns; cpu.stat usage_usec in µs
    cpu_stat: bool = False  # cpu is a v2 cpu.stat (key usage_usec)
    pids_current: str | None = None
    pids_peak: str | None = None
    pids_events: str | None = None
    procs: str | None = None  # cgroup.procs: the container's PIDs, as seen from here
    events: str | None = None  # v2 cgroup.events (populated 0/1), pollable

    def any(self) -> bool:
        return any((self.memory_peak, self.memory_current, self.cpu, self.pids_current, self.pids_peak))


def find_cgroup_files(container_id: str, pid: int, cgroup_parent: str = "") -> CgroupFiles | None:
    """Locate the container's cgroup files; None when none can be found (caller falls back to the API)."""
    mounts_v1, mounts_v2 = _cgroup_mounts()
    paths_v1, path_v2 = _proc_cgroup(pid)
    # /proc/<pid>/cgroup is authoritative only if it is the container's: the PID is a host PID and
    # could name another process when this worker runs in its own PID namespace.
    if not any(container_id in p for p in [*paths_v1.values(), path_v2 or ""]):
        paths_v1, path_v2 = {}, None

    def guesses() -> list[str]:
        parent = "/" + (cgroup_parent or "").strip("/")
        out = []
        if cgroup_parent and cgroup_parent.endswith(".slice"):  # systemd driver, custom slice
            out.append(f"{parent}/docker-{container_id}.scope")
        out += [f"{parent if cgroup_parent else '/docker'}/{container_id}",
                f"/system.slice/docker-{container_id}.scope", f"/docker/{container_id}"]
        return out

    def dir_v1(controller: str) -> str | None:
        cands = [paths_v1[controller]] if controller in paths_v1 else guesses()
        for cg in cands:
            for root, mp in mounts_v1.get(controller, []):
                d = _join(root, mp, cg)
                if d and os.path.isdir(d):
                    return d
        return None

    def dir_v2() -> str | None:
        cands = [path_v2] if path_v2 else guesses()
        for cg in cands:
            for root, mp in mounts_v2:
                d = _join(root, mp, cg)
                if d and d != mp and os.path.isdir(d):
                    return d
        return None

    def f(d: str | None, name: str) -> str | None:
        if d is None:
            return None
        p = os.path.join(d, name)
        return p if os.path.exists(p) else None

    mem1, cpu1, pids1, d2 = dir_v1("memory"), dir_v1("cpuacct") or dir_v1("cpu"), dir_v1("pids"), dir_v2()
    files = CgroupFiles()
    if mem1:
        files.memory_peak, files.memory_current = f(mem1, "memory.max_usage_in_bytes"), f(mem1, "memory.usage_in_bytes")
    else:
        files.memory_peak, files.memory_current = f(d2, "memory.peak"), f(d2, "memory.current")
    if f(cpu1, "cpuacct.usage"):
        files.cpu = f(cpu1, "cpuacct.usage")
    elif f(d2, "cpu.stat"):
        files.cpu, files.cpu_unit_s, files.cpu_stat = f(d2, "cpu.stat"), 1e-6, True
    pd = pids1 if pids1 and f(pids1, "pids.current") else d2
    files.pids_current, files.pids_peak, files.pids_events = f(pd, "pids.current"), f(pd, "pids.peak"), f(pd, "pids.events")
    files.procs = f(d2, "cgroup.procs") or f(pids1, "cgroup.procs") or f(mem1, "cgroup.procs") or f(cpu1, "cgroup.procs")
    files.events = f(d2, "cgroup.events")
    return files if files.any() else None


def _read(path: str) -> str:
    with open(path, "rb", buffering=0) as fh:
        return fh.read(65536).decode("ascii", errors="replace")


def _keyed(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        out[k] = v.strip()
    return out


# ---------------------------------------------------------------------------------------------
# GPU (nvidia-ml-py)

_no_gpu_logged = False
_no_gpu_lock = threading.Lock()


def _no_gpu(reason: str) -> None:
    """Log "no GPU metrics: <reason>" once per process (debug afterwards)."""
    global _no_gpu_logged
    with _no_gpu_lock:
        first, _no_gpu_logged = not _no_gpu_logged, True
    if first:
        log.warning("no GPU metrics: %s", reason)
    else:
        log.debug("no GPU metrics: %s", reason)


class _GpuSampler:
    """NVML handles for the pinned devices; one ``sample`` = (container's GPU memory MiB, mean util %)."""

    def __init__(self, nvml, handles: list):
        self.nvml, self.handles = nvml, handles

    @classmethod
    def open(cls, device_ids: tuple[str, ...]) -> _GpuSampler | None:
        try:
            import pynvml
        except ImportError:
            _no_gpu("nvidia-ml-py (pynvml) is not installed")
            return None
        except Exception as e:  # a broken install
            _no_gpu(f"pynvml could not be imported ({e.__class__.__name__}: {e})")
            return None
        try:
            pynvml.nvmlInit()
        except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded without a driver
            _no_gpu(f"NVML did not start, no NVIDIA driver? ({e.__class__.__name__}: {e})")
            return None
        handles = []
        for d in device_ids:
            try:
                d = str(d).strip()
                handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(d)) if d.isdigit()
                               else pynvml.nvmlDeviceGetHandleByUUID(d))
            except Exception as e:
                log.debug("monitor: NVML has no device %r: %s", d, e)
        if not handles:
            cls._shutdown(pynvml)
            _no_gpu(f"NVML does not know the pinned device(s) {', '.join(map(str, device_ids))}")
            return None
        return cls(pynvml, handles)

    def sample(self, pids: set[int] | None) -> tuple[float | None, float | None]:
        nvml = self.nvml
        used, listed = 0, False
        if pids is not None:
            for h in self.handles:
                try:
                    procs = nvml.nvmlDeviceGetComputeRunningProcesses(h)
                except Exception as e:
                    log.debug("monitor: nvmlDeviceGetComputeRunningProcesses: %s", e)
                    continue
                listed = True
                for p in procs or ():
                    mem = getattr(p, "usedGpuMemory", None)
                    if getattr(p, "pid", None) in pids and isinstance(mem, int) and mem >= 0:
                        used += mem
        utils = []
        for h in self.handles:
            try:
                utils.append(float(nvml.nvmlDeviceGetUtilizationRates(h).gpu))
            except Exception as e:
                log.debug("monitor: nvmlDeviceGetUtilizationRates: %s", e)
        return (used / MB if listed else None), (sum(utils) / len(utils) if utils else None)

    @staticmethod
    def _shutdown(nvml) -> None:
        try:
            nvml.nvmlShutdown()
        except Exception as e:
            log.debug("monitor: nvmlShutdown: %s", e)

    def close(self) -> None:
        self._shutdown(self.nvml)


# ---------------------------------------------------------------------------------------------


class ContainerMonitor:
    """Samples one container's CPU time, memory high-water mark, PIDs and GPU use while it runs."""

    def __init__(self, client, container, *, pids_limit: int, gpu_device_ids: tuple[str, ...] = (),
                 interval_s: float = 0.25):
        self.client = client
        self.container = container
        self.pids_limit = int(pids_limit or 0)
        self.gpu_device_ids = tuple(str(d) for d in (gpu_device_ids or ()))
        self.interval_s = max(0.01, float(interval_s))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None
        self._life_lock = threading.Lock()
        self._thread_done = False
        self._gave_up = False
        self._files: CgroupFiles | None = None
        self._use_api = False
        self._gone = False  # the cgroup is gone or empty: nothing more to read
        self._gpu: _GpuSampler | None = None
        # accumulators (under _lock)
        self._cpu_s: float | None = None
        self._mem_peak: int | None = None
        self._pids_peak: int | None = None
        self._pids_kernel_peak: int | None = None  # pids.peak (kernel ≥ 6.1), runtime threads included
        self._pids_max_events = 0
        self._gpu_mem_peak: float | None = None
        self._gpu_util_sum = 0.0
        self._gpu_util_n = 0
        self._samples = 0
        self.sample_seconds = 0.0  # time spent sampling (for measuring the overhead)

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> ContainerMonitor:
        try:
            self._setup()
        except Exception as e:
            log.debug("monitor: setup failed: %s", e, exc_info=True)
        try:
            self._sample()
        except Exception as e:
            log.debug("monitor: first sample failed: %s", e, exc_info=True)
        try:
            self._wake_r, self._wake_w = os.pipe()
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name=f"arena-monitor-{self._cid()[:12]}")
            self._thread.start()
        except Exception as e:
            log.debug("monitor: could not start the sampling thread: %s", e, exc_info=True)
            self._thread = None
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._stop.set()
            wake_w, self._wake_w = self._wake_w, None
            if wake_w is not None:
                os.close(wake_w)  # POLLHUP wakes the thread at once
            if self._thread is not None:
                # File reads return in microseconds; only a stats-API call (fallback) can keep the
                # thread busy, and then it finishes alone and cleans up after itself.
                self._thread.join(timeout=1.0)
            with self._life_lock:
                done = self._thread is None or self._thread_done
                self._gave_up = not done
            if done:
                if self._files is not None and not self._gone:
                    self._sample()  # a last one, if the cgroup still exists
                self._close_resources()
        except Exception as e:
            log.debug("monitor: stopping failed: %s", e, exc_info=True)

    def _close_resources(self) -> None:
        with self._lock:
            gpu, self._gpu = self._gpu, None
            wake_r, self._wake_r = self._wake_r, None
        if gpu is not None:
            gpu.close()
        if wake_r is not None:
            try:
                os.close(wake_r)
            except OSError:
                pass

    def result(self) -> RunStats:
        with self._lock:
            peak = self._pids_peak
            hit = self._pids_max_events > 0 or any(
                p is not None and 0 < self.pids_limit <= p for p in (peak, self._pids_kernel_peak))
            return RunStats(
                cpu_s=self._cpu_s,
                peak_memory_mb=None if self._mem_peak is None else self._mem_peak / MB,
                pids_peak=peak,
                pids_limit_hit=hit,
                gpu_memory_peak_mb=self._gpu_mem_peak,
                gpu_utilization_mean=(self._gpu_util_sum / self._gpu_util_n) if self._gpu_util_n else None,
                samples=self._samples,
            )

    # -- internals -----------------------------------------------------------------------------

    def _cid(self) -> str:
        return str(getattr(self.container, "id", "") or "")

    def _setup(self) -> None:
        cid = self._cid()
        if self.client is not None:
            attrs = self.client.api.inspect_container(cid)
        else:
            self.container.reload()
            attrs = self.container.attrs
        pid = int(attrs.get("State", {}).get("Pid") or 0)
        parent = attrs.get("HostConfig", {}).get("CgroupParent") or ""
        self._files = find_cgroup_files(cid, pid, parent)
        if self._files is None:
            self._use_api = True
            log.debug("monitor: no cgroup files for %s (pid %s); using the stats API", cid[:12], pid)
        if self.gpu_device_ids:
            self._gpu = _GpuSampler.open(self.gpu_device_ids)

    def _loop(self) -> None:
        try:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            events_fd = None
            if self._files is not None and self._files.events and not self._gone:
                try:
                    events_fd = os.open(self._files.events, os.O_RDONLY)
                    poller.register(events_fd, select.POLLPRI | select.POLLERR)
                except OSError:
                    events_fd = None
            try:
                next_at = time.monotonic() + self.interval_s
                while not self._stop.is_set() and not self._gone:
                    ready = poller.poll(max(0, int((next_at - time.monotonic()) * 1000)))
                    if self._stop.is_set():
                        break
                    if events_fd is not None and any(fd == events_fd for fd, _ in ready):
                        try:
                            os.lseek(events_fd, 0, os.SEEK_SET)
                            text = os.read(events_fd, 4096).decode("ascii", "replace")
                        except OSError:
                            text = "populated 0"
                        self._sample()
                        if _keyed(text).get("populated") == "0":  # the last process is gone
                            with self._lock:
                                self._gone = True
                            break
                        continue
                    if time.monotonic() >= next_at:
                        self._sample()
                        next_at = time.monotonic() + self.interval_s
            finally:
                if events_fd is not None:
                    os.close(events_fd)
        except Exception as e:
            log.debug("monitor: sampling thread failed: %s", e, exc_info=True)
        finally:
            with self._life_lock:
                self._thread_done = True
                gave_up = self._gave_up
            if gave_up:  # __exit__ stopped waiting for us: clean up here
                self._close_resources()

    def _sample(self) -> None:
        t0 = time.perf_counter()
        with self._lock:
            try:
                if self._files is not None:
                    pids = self._sample_cgroup()
                elif self._use_api:
                    pids = self._sample_api()
                else:
                    pids = None
                if self._gpu is not None and not self._gone:
                    if pids is None and self._use_api:
                        pids = self._top_pids()
                    mem, util = self._gpu.sample(pids)
                    if mem is not None:
                        self._gpu_mem_peak = max(self._gpu_mem_peak or 0.0, mem)
                    if util is not None:
                        self._gpu_util_sum += util
                        self._gpu_util_n += 1
            except Exception as e:
                log.debug("monitor: sample failed: %s", e, exc_info=True)
            finally:
                self.sample_seconds += time.perf_counter() - t0

    def _sample_cgroup(self) -> set[int] | None:
        """Read the cgroup files once; the container's PIDs (for the GPU filter) or None."""
        if self._gone:
            return None
        f = self._files
        got = False

        def read_int(path: str | None) -> int | None:
            nonlocal got
            if not path:
                return None
            try:
                v = int(_read(path).strip())
            except (OSError, ValueError):
                return None
            got = True
            return v

        peak = read_int(f.memory_peak)
        cur = read_int(f.memory_current)
        for v in (peak, cur):
            if v is not None and v > 0:
                self._mem_peak = max(self._mem_peak or 0, v)
        if f.cpu:
            try:
                text = _read(f.cpu)
                raw = int(_keyed(text)["usage_usec"]) if f.cpu_stat else int(text.strip())
                got = True
                if raw > 0:
                    self._cpu_s = max(self._cpu_s or 0.0, raw * f.cpu_unit_s)
            except (OSError, ValueError, KeyError):
                pass
        # pids_peak is the largest pids.current seen: the kernel's pids.peak also counts the
        # runtime's own setup threads (runc init: ~5 for a one-process container), so it only
        # serves the limit check.
        cur_pids, kernel_peak = read_int(f.pids_current), read_int(f.pids_peak)
        if cur_pids is not None and cur_pids > 0:
            self._pids_peak = max(self._pids_peak or 0, cur_pids)
        if kernel_peak is not None:
            self._pids_kernel_peak = max(self._pids_kernel_peak or 0, kernel_peak)
        if f.pids_events:
            try:
                n = int(_keyed(_read(f.pids_events)).get("max", "0").split()[0])
                got = True
                self._pids_max_events = max(self._pids_max_events, n)
            except (OSError, ValueError, IndexError):
                pass
        pids = None
        if f.procs and self._gpu is not None:
            try:
                pids = {int(x) for x in _read(f.procs).split()}
                got = True
            except (OSError, ValueError):
                pids = None
        if got:
            self._samples += 1
        else:
            self._gone = True  # the container exited and the runtime removed its cgroup
        return pids

    def _sample_api(self) -> None:
        try:
            try:
                s = self.container.stats(stream=False, one_shot=True)
            except Exception as e:  # InvalidVersion on API < 1.41
                if e.__class__.__name__ != "InvalidVersion":
                    raise
                s = self.container.stats(stream=False)
        except Exception as e:
            log.debug("monitor: stats API failed: %s", e)
            return
        if not isinstance(s, dict):
            return
        ok = False
        mem = s.get("memory_stats") or {}
        for v in (mem.get("max_usage"), mem.get("usage")):
            if isinstance(v, int) and v > 0:
                self._mem_peak = max(self._mem_peak or 0, v)
                ok = True
        total = ((s.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        if isinstance(total, int) and total > 0:
            self._cpu_s = max(self._cpu_s or 0.0, total / 1e9)
            ok = True
        cur = (s.get("pids_stats") or {}).get("current")
        if isinstance(cur, int) and cur > 0:
            self._pids_peak = max(self._pids_peak or 0, cur)
            ok = True
        if ok:
            self._samples += 1
        return

    def _top_pids(self) -> set[int] | None:
        """The container's host PIDs via the API (only when its cgroup.procs cannot be read)."""
        try:
            top = self.container.top()
            col = top["Titles"].index("PID")
            return {int(row[col]) for row in top.get("Processes") or []}
        except Exception as e:
            log.debug("monitor: container.top failed: %s", e)
            return None
