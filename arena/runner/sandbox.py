"""Running an untrusted container under Arena's sandbox (docker-py).

No network, read-only root filesystem, non-root user, all capabilities dropped, no-new-privileges,
private IPC, an init process, and limits on pids, memory (no swap), CPU, /dev/shm, /tmp, open files,
file size and wall-clock time. /input is mounted read-only, /output read-write. The container is
always removed, whatever happens (``finally``), and labelled so a restarted worker can reap leftovers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import docker.errors
import requests

from arena.runner.failures import Failure

NOBODY = "65534:65534"
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

    @property
    def ok(self) -> bool:
        return self.error is None


def effective_user(image_user: str) -> str:
    """The image's own USER when it is not root, else nobody (65534:65534)."""
    u = (image_user or "").strip()
    if not u or u.split(":")[0] in ("root", "0"):
        return NOBODY
    return u


def _tail(data: bytes, limit: int) -> str:
    text = data[-limit:].decode("utf-8", errors="replace")
    return ("…" + text) if len(data) > limit else text


def run_sandboxed(client, image: str, *, mounts: dict[str, tuple[str, str]], limits: SandboxLimits,
                  labels: dict[str, str] | None = None, user: str | None = None,
                  command: list[str] | None = None, environment: dict[str, str] | None = None,
                  log_bytes: int = 64 * 1024) -> RunResult:
    """Run ``image`` once under the sandbox and wait for it (at most ``limits.time_s``).

    mounts: container path → (host path, "ro" | "rw").
    """
    from arena.runner.gpu import device_requests

    if user is None:
        user = effective_user(client.images.get(image).attrs.get("Config", {}).get("User", ""))
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
        log_config=docker.types.LogConfig(type="json-file", config={"max-size": "10m", "max-file": "1"}),
        use_config_proxy=False,
    )
    if limits.gpu_device_ids:
        kwargs["device_requests"] = device_requests(list(limits.gpu_device_ids))
    container = None
    started = time.monotonic()
    try:
        container = client.containers.create(**kwargs)
        started = time.monotonic()
        container.start()
        timed_out = False
        try:
            status = container.wait(timeout=limits.time_s)
            exit_code = int(status.get("StatusCode", -1))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            try:
                container.kill()
            except docker.errors.APIError:
                pass
            exit_code = int(container.wait(timeout=30).get("StatusCode", -1))
        runtime = time.monotonic() - started
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        logs = _tail(container.logs(stdout=True, stderr=True, tail=2000), log_bytes)
        stderr = container.logs(stdout=False, stderr=True, tail=15).decode("utf-8", errors="replace").strip()
        error, failure = None, None
        if timed_out:
            error, failure = f"timed out after {limits.time_s:g} s (killed)", Failure.TIMEOUT
        elif oom:
            error, failure = (f"out of memory (limit {limits.memory_mb} MB; killed by the kernel)",
                              Failure.OUT_OF_MEMORY)
        elif exit_code != 0:
            last = stderr.splitlines()[-1][:300] if stderr else ""
            error = f"the container exited with code {exit_code}" + (f": {last}" if last else "")
            failure = Failure.NON_ZERO_EXIT
        return RunResult(exit_code, runtime, timed_out, oom, logs, error, failure, stderr[-4000:])
    except docker.errors.ImageNotFound:
        return RunResult(None, 0.0, error=f"image {image} is not present on this worker", failure=Failure.ENGINE_ERROR)
    except docker.errors.APIError as e:
        return RunResult(None, time.monotonic() - started, failure=Failure.ENGINE_ERROR,
                         error=f"the Docker engine could not run the container: {e.explanation or e}")
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass


def reap_leftovers(client, label_filter: str = MANAGED_LABEL) -> int:
    """Remove stopped containers Arena started (left by a worker that died). Returns how many."""
    n = 0
    for status in ("exited", "created", "dead"):
        for c in client.containers.list(all=True, filters={"label": label_filter, "status": status}):
            try:
                c.remove(force=True)
                n += 1
            except docker.errors.APIError:
                pass
    return n
