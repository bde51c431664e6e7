"""Running an untrusted container under Arena's sandbox (docker-py).

No network, read-only root filesystem, non-root user, all capabilities dropped, no-new-privileges,
private IPC, an init process, and limits on pids, memory (no swap), CPU, /dev/shm, /tmp, open files,
file size and wall-clock time. /input is mounted read-only, /output read-write. The container is
always removed, whatever happens (``finally``), and labelled so a restarted worker can reap leftovers.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import docker.errors
import requests

from arena.runner.failures import Failure
from arena.runner.identity import effective_user
from arena.runner.monitor import ContainerMonitor

MANAGED_LABEL = "arena.managed"


@dataclass(frozen=True)
class SandboxLimits:
    time_s: float = 600.0  # wall clock per run, seconds
    memory_mb: int = 4096  # RAM, no swap (tmpfs /tmp counts against it)
    cpus: float = 1.0
    pids: int = 256
    shm_mb: int = 256
    tmp_mb: int = 1024
    file_mb: int = 1024  # largest single file the container may write
    nofile: int = 1024
    gpu_device_ids: tuple[str, ...] = ()  # empty: no GPU


@dataclass
class RunResult:
    exit_code: int | None
    runtime_s: float  # wall time from start to exit (or kill), seconds
    timed_out: bool = False
    oom_killed: bool = False
    logs: str = ""  # the last bytes of stdout+stderr
    error: str | None = None  # why the run did not succeed, in words; None when exit 0
    failure: Failure | None = None  # the class of ``error``
    stderr_tail: str = ""  # the last lines of stderr alone (shown with a non-zero exit)
    stats: dict = field(default_factory=dict)  # cpu_s, peak_memory_mb, pids_peak, gpu_* (RunStats.columns())
    skipped: list = field(default_factory=list)  # /output entries not collected (set by the caller)

    @property
    def ok(self) -> bool:
        return self.error is None


def _tail(data: bytes, limit: int) -> str:
    text = data[-limit:].decode("utf-8", errors="replace")
    return ("…" + text) if len(data) > limit else text


def _pids_events_paths(container_id: str, pid: int) -> list[str]:
    """Candidate paths of the container's ``pids.events`` (cgroup v1 or v2, cgroupfs or systemd driver)."""
    paths = []
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "pids" in controllers.split(","):
                    paths.append(f"/sys/fs/cgroup/pids{path}/pids.events")
                elif controllers == "":
                    paths.append(f"/sys/fs/cgroup{path}/pids.events")
    except (OSError, ValueError):
        pass
    for parent in ("/sys/fs/cgroup/pids/docker", "/sys/fs/cgroup/docker", "/sys/fs/cgroup/pids/system.slice",
                   "/sys/fs/cgroup/system.slice"):
        paths.append(f"{parent}/{container_id}/pids.events")
        paths.append(f"{parent}/docker-{container_id}.scope/pids.events")
    return paths


class _PidsWatch:
    """Did the pids limit refuse a fork/clone while the container ran? (``hits``: how many, if known)

    A fork bomb does not exit: at the limit it spins until the timeout; a program that dies on its
    first refused fork leaves only an exit code. Two sources, both read-only:

    * the container's ``pids.events`` ("max N"), re-read every ``interval_s`` and once more before a
      timeout kill (``sample``). The cgroup, and the file, disappear ~10 ms after the last process
      exits and cgroup v1 sends no notification, so a program that dies on its first refused fork is
      usually gone before the next read;
    * the kernel log (``/dev/kmsg``, root only), for exactly that case: the kernel logs "cgroup: fork
      rejected by pids controller in <cgroup path>" once per cgroup; records written after ``__init__``
      are searched for the container's ID when the poll saw nothing (``hits`` is then 1: at least one).

    Without /dev/kmsg (a non-root worker) a fork failure followed by a quick exit can be missed (the run
    is then a plain non-zero exit). ContainerMonitor's ``pids_limit_hit`` can replace the poll once it
    is wired into run_sandboxed.
    """

    def __init__(self, interval_s: float = 0.1):
        self.hits = 0
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._kmsg: int | None = None
        self._cid = ""
        try:
            self._kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._kmsg, 0, os.SEEK_END)
        except OSError:
            self._close_kmsg()

    def attach(self, container) -> None:
        """Start polling the started ``container``'s pids.events."""
        self._cid = container.id
        try:
            container.reload()
            pid = int(container.attrs.get("State", {}).get("Pid") or 0)
        except (docker.errors.APIError, requests.exceptions.RequestException, ValueError):
            return
        for path in _pids_events_paths(container.id, pid) if pid else []:
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                break
            except OSError:
                continue
        if self._fd is not None and self._read():
            self._thread = threading.Thread(target=self._loop, name="arena-pids-watch", daemon=True)
            self._thread.start()

    def sample(self) -> None:
        """Read the counter now (the container still runs: before killing it)."""
        if self._fd is not None:
            self._read()

    def _read(self) -> bool:
        try:
            data = os.pread(self._fd, 256, 0).decode("ascii", errors="replace")
        except OSError:  # the cgroup is gone: the container has exited
            return False
        for line in data.splitlines():
            key, _, value = line.partition(" ")
            if key == "max" and value.strip().isdigit():
                self.hits = max(self.hits, int(value))
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self._interval) and self._read():
            pass

    def _kernel_logged(self) -> bool:
        found = False
        for _ in range(100_000):  # bounded; each read returns one record
            try:
                record = os.read(self._kmsg, 8192)
            except BlockingIOError:
                break
            except OSError as e:  # EPIPE: records were overwritten; keep reading the rest
                if e.errno == 32:
                    continue
                break
            if not record:
                break
            if b"fork rejected by pids controller" in record and self._cid.encode() in record:
                found = True
        return found

    def _close_kmsg(self) -> None:
        if self._kmsg is not None:
            os.close(self._kmsg)
            self._kmsg = None

    def stop(self) -> int:
        """Stop watching (read once more while the cgroup may still exist); returns ``hits``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._fd is not None:
            self._read()
            os.close(self._fd)
            self._fd = None
        if self._kmsg is not None:
            if not self.hits and self._cid and self._kernel_logged():
                self.hits = 1
            self._close_kmsg()
        return self.hits


def sandbox_kwargs(image: str, *, mounts: dict[str, tuple[str, str]], limits: SandboxLimits,
                   labels: dict[str, str] | None, user: str, command: list[str] | None = None,
                   environment: dict[str, str] | None = None) -> dict:
    """docker-py ``containers.create`` arguments for one sandboxed run (see :func:`docker_run_command`)."""
    kwargs = dict(
        image=image,
        command=command,
        detach=True,
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": f"size={limits.tmp_mb}m,mode=1777"},
        user=user,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=limits.pids,
        mem_limit=f"{limits.memory_mb}m",
        memswap_limit=f"{limits.memory_mb}m",
        nano_cpus=int(limits.cpus * 1e9),
        shm_size=f"{limits.shm_mb}m",
        ipc_mode="private",
        init=True,
        ulimits=[docker.types.Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
                 docker.types.Ulimit(name="fsize", soft=limits.file_mb * 2**20, hard=limits.file_mb * 2**20),
                 docker.types.Ulimit(name="core", soft=0, hard=0)],
        volumes={host: {"bind": cpath, "mode": mode} for cpath, (host, mode) in mounts.items()},
        labels={MANAGED_LABEL: "1", **(labels or {})},
        environment=environment or {},
        # "local" (not json-file): the same 10 MB cap on disk, ~35% less dockerd CPU per byte printed;
        # that CPU is outside the container's limit (200 MB of stdout: ~4 CPU-s instead of ~6.5)
        log_config=docker.types.LogConfig(type="local", config={"max-size": "10m", "max-file": "1",
                                                                  "compress": "false"}),
        use_config_proxy=False,
    )
    return kwargs


def docker_run_command(image: str, limits: SandboxLimits, user: str, input_dir: str, output_dir: str) -> str:
    """The ``docker run`` command line equivalent to the sandbox (for participants to reproduce a run)."""
    k = sandbox_kwargs(image, mounts={"/input": (input_dir, "ro"), "/output": (output_dir, "rw")}, limits=limits,
                       labels=None, user=user)
    parts = ["docker run --rm", "--network none", "--read-only", f"--tmpfs /tmp:{k['tmpfs']['/tmp']}",
             f"--user {user}", "--cap-drop ALL", "--security-opt no-new-privileges",
             f"--pids-limit {limits.pids}", f"--memory {limits.memory_mb}m", f"--memory-swap {limits.memory_mb}m",
             f"--cpus {limits.cpus:g}", f"--shm-size {limits.shm_mb}m", "--ipc private", "--init",
             f"--ulimit nofile={limits.nofile}:{limits.nofile}",
             f"--ulimit fsize={limits.file_mb * 2**20}:{limits.file_mb * 2**20}", "--ulimit core=0:0"]
    if limits.gpu_device_ids:
        parts.append(f"--gpus '\"device={','.join(limits.gpu_device_ids)}\"'")
    parts += [f"-v {input_dir}:/input:ro", f"-v {output_dir}:/output", image]
    return " \\\n  ".join(parts)


def _read_timed_out(exc: BaseException) -> bool:
    """A docker-py read timeout (on a unix socket it arrives as a ConnectionError wrapping urllib3's
    ReadTimeoutError), as opposed to a connection the engine broke."""
    import socket

    import urllib3.exceptions

    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    return any(isinstance(a, (urllib3.exceptions.ReadTimeoutError, socket.timeout)) for a in exc.args) \
        or "read timed out" in str(exc).lower()


def run_sandboxed(client, image: str, *, mounts: dict[str, tuple[str, str]], limits: SandboxLimits,
                  labels: dict[str, str] | None = None, user: str | None = None,
                  command: list[str] | None = None, environment: dict[str, str] | None = None,
                  log_bytes: int = 64 * 1024) -> RunResult:
    """Run ``image`` once under the sandbox and wait for it (at most ``limits.time_s``).

    mounts: container path → (host path, "ro" | "rw").

    Raises :class:`arena.images.docker_client.EngineLost` when the engine breaks the connection while the
    container runs (dockerd stopped or restarted; other calls let requests' connection errors through): the
    run has no outcome to record, the caller may run it again once the engine is back (the container, if
    the engine still has it, carries ``labels``).
    """
    from arena.images.docker_client import EngineLost, engine_address
    from arena.runner.gpu import device_requests

    if user is None:
        user = effective_user(client.images.get(image).attrs.get("Config", {}).get("User", ""))
    kwargs = sandbox_kwargs(image, mounts=mounts, limits=limits, labels=labels, user=user, command=command,
                            environment=environment)
    if limits.gpu_device_ids:
        kwargs["device_requests"] = device_requests(list(limits.gpu_device_ids))
    container = None
    pids_watch: _PidsWatch | None = None
    started = time.monotonic()
    try:
        container = client.containers.create(**kwargs)
        pids_watch = _PidsWatch()
        started = time.monotonic()
        container.start()
        pids_watch.attach(container)
        monitor = ContainerMonitor(client, container, pids_limit=limits.pids,
                                   gpu_device_ids=tuple(limits.gpu_device_ids)).__enter__()
        timed_out = False
        try:
            try:
                status = container.wait(timeout=limits.time_s)
                exit_code = int(status.get("StatusCode", -1))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as e:
                if not _read_timed_out(e) and time.monotonic() - started < limits.time_s:
                    # the engine broke the connection before the limit: not a timeout of the algorithm
                    raise EngineLost(f"the Docker engine at {engine_address()} went away while the container "
                                     f"ran (dockerd stopped or restarted): {e.__class__.__name__}: {e}") from e
                timed_out = True
                pids_watch.sample()
                try:
                    container.kill()  # SIGKILL: no grace period for a process that ignores SIGTERM
                except docker.errors.APIError:
                    pass
                try:
                    exit_code = int(container.wait(timeout=30).get("StatusCode", -1))
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                    exit_code = None  # still not dead 30 s after SIGKILL; removed (force) below
        finally:
            pids_hits = pids_watch.stop()
            monitor.__exit__(None, None, None)
            stats = monitor.result()
            if stats.pids_limit_hit and not pids_hits:
                pids_hits = 1
        runtime = time.monotonic() - started
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        logs = _tail(container.logs(stdout=True, stderr=True, tail=2000), log_bytes)
        # The engine applies ``tail`` before filtering by stream: stdout printed after the error would
        # hide it. On failure read stderr whole (the log is capped at 10 MB) and keep its last lines.
        stderr = container.logs(stdout=False, stderr=True, tail="all" if exit_code != 0 else 15)
        stderr = "\n".join(stderr[-65536:].decode("utf-8", errors="replace").strip().splitlines()[-15:])
        error, failure = None, None
        last = stderr.splitlines()[-1][:300] if stderr else ""
        exited = f"the container exited with code {exit_code}" + (f": {last}" if last else "")
        pids_hit = (f"the pids limit ({limits.pids} processes and threads) was hit: the kernel refused "
                    + (f"{pids_hits} forks/clones" if pids_hits > 1 else "a fork/clone")
                    + " (a fork bomb or thread storm?)")
        if oom:
            error, failure = (f"out of memory (limit {limits.memory_mb} MB; killed by the kernel)",
                              Failure.OUT_OF_MEMORY)
        elif pids_hits and (timed_out or exit_code != 0):
            then = f"timed out after {limits.time_s:g} s (killed)" if timed_out else exited
            error, failure = f"{pids_hit}; then {then}", Failure.PIDS_EXHAUSTED
        elif timed_out:
            error, failure = f"timed out after {limits.time_s:g} s (killed)", Failure.TIMEOUT
        elif exit_code != 0:
            error, failure = exited, Failure.NON_ZERO_EXIT
        elif pids_hits:  # it recovered: not a failure, but worth a line in the log
            logs += f"\n[arena] {pids_hit}"
        return RunResult(exit_code, runtime, timed_out, oom, logs, error, failure, stderr[-4000:], stats.columns())
    except docker.errors.ImageNotFound:
        return RunResult(None, 0.0, error=f"image {image} is not present on this worker", failure=Failure.ENGINE_ERROR)
    except docker.errors.APIError as e:
        return RunResult(None, time.monotonic() - started, failure=Failure.ENGINE_ERROR,
                         error=f"the Docker engine could not run the container: {e.explanation or e}")
    finally:
        if pids_watch is not None:
            pids_watch.stop()  # idempotent; closes its files if the run ended early
        if container is not None:
            try:
                container.remove(force=True)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                pass  # engine gone: the caller removes it by its labels once the engine is back


def reap_leftovers(client, label_filter: str = MANAGED_LABEL, keep=None) -> int:
    """Remove stopped containers Arena started (left by a worker that died). Returns how many.

    keep: ``labels -> bool``; containers it accepts are left alone (another live worker sharing this engine
    has just seen its container exit and is still reading its logs and statistics)."""
    n = 0
    for status in ("exited", "created", "dead"):
        for c in client.containers.list(all=True, filters={"label": label_filter, "status": status}):
            if keep is not None and keep(c.labels or {}):
                continue
            try:
                c.remove(force=True)
                n += 1
            except docker.errors.APIError:
                pass
    return n
