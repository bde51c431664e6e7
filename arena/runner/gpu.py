"""GPU discovery (nvidia-ml-py) and Docker device requests; degrades to "no GPU" without a driver."""

from __future__ import annotations

from dataclasses import dataclass

from arena.config import load_settings


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total_mb: int


class GpuUnavailable(RuntimeError):
    """A task asked for a GPU that this worker cannot give."""


def detect_gpus() -> list[GpuInfo]:
    """The NVIDIA GPUs NVML sees; [] when nvidia-ml-py or the driver is absent."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # NVMLError_LibraryNotFound / DriverNotLoaded without a driver
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            gpus.append(GpuInfo(i, name.decode() if isinstance(name, bytes) else name,
                                uuid.decode() if isinstance(uuid, bytes) else uuid, int(mem.total // 2**20)))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def worker_device_ids(env: dict[str, str] | None = None) -> list[str]:
    """The GPU(s) this worker is pinned to: ``ARENA_GPU_DEVICES`` ("0" or "0,1"), else every GPU seen."""
    pinned = load_settings(env).gpu_devices
    if pinned:
        return list(pinned)
    return [str(g.index) for g in detect_gpus()]


def device_requests(device_ids: list[str]):
    """docker-py DeviceRequests pinning the container to ``device_ids``."""
    import docker.types

    if not device_ids:
        raise GpuUnavailable("this task needs a GPU, and this worker has none (no NVIDIA driver or "
                             "ARENA_GPU_DEVICES unset)")
    return [docker.types.DeviceRequest(device_ids=list(device_ids), capabilities=[["gpu"]])]
