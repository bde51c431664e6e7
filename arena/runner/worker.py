"""The worker process: recovery at start, RQ work loop, and a sweeper thread that keeps the queue honest.

At start it removes containers and work left by dead workers of this host and re-queues their
evaluations, and re-queues what Redis lost. While it runs, a daemon thread re-queues evaluations of any
host whose heartbeat went silent and jobs that Redis lost (a Redis restart without persistence).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

from redis import Redis
from rq import Queue, Worker

from arena.config import Settings
from arena.runner.output_check import jail_problem

log = logging.getLogger("arena.worker")

SWEEP_MIN_AGE_S = 30.0  # a job younger than this may be in the middle of being enqueued: not "lost"


def sweep_once(settings: Settings, say: Callable[[str], None] = log.info) -> None:
    """One maintenance pass; errors (Redis or the database briefly down) are logged, never raised."""
    from arena.runner.jobs import requeue_lost_jobs, sweep_silent_evaluations

    steps = (lambda: sweep_silent_evaluations(settings, log=say),
             lambda: requeue_lost_jobs(settings, log=say, min_age_s=SWEEP_MIN_AGE_S))
    for name, step in zip(("silent evaluations", "lost jobs"), steps):
        try:
            step()
        except Exception as e:  # noqa: BLE001 - Redis or the database down: keep sweeping next period
            log.warning("maintenance (%s) failed: %s", name, e)


def start_sweeper(settings: Settings, period_s: float | None = None,
                  say: Callable[[str], None] = log.info) -> threading.Event:
    """Run :func:`sweep_once` every ``period_s`` (default a quarter of ``stale_after_s``, at least 2 s)
    in a daemon thread; set the returned event to stop it."""
    period = period_s or max(2.0, settings.stale_after_s / 4)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(period):
            sweep_once(settings, say)

    threading.Thread(target=loop, name="arena-sweeper", daemon=True).start()
    return stop


def pin_gpus(gpu: str, say: Callable[[str], None] = log.info) -> None:
    """Give this worker process GPU(s) ``gpu`` ("0" or "0,1"; read back through ARENA_GPU_DEVICES by
    arena.runner.gpu.worker_device_ids); warns when NVML sees no GPU at all."""
    from arena.runner.gpu import detect_gpus

    os.environ["ARENA_GPU_DEVICES"] = gpu
    if not detect_gpus():
        say(f"warning: --gpu {gpu} given but NVML sees no GPU (no NVIDIA driver?); GPU tasks will fail with 'no-gpu'")


def run_worker(settings: Settings, burst: bool = False, gpu: str | None = None,
               say: Callable[[str], None] = print) -> None:
    """Recover, then take intake and evaluation jobs until stopped (or, with ``burst``, the queues are empty)."""
    from arena.runner.jobs import live_local_worker, recover_dead_workers, requeue_lost_jobs
    from arena.runner.keys import queue_name
    from arena.runner.sandbox import reap_leftovers
    from arena.services import ensure_docker

    problem = jail_problem()
    if problem:  # never score participant outputs outside the jail
        raise SystemExit(f"arena worker: cannot start: {problem}")
    client = ensure_docker()
    # a second worker on this engine may be between its container's exit and reading its logs: leave those
    n = reap_leftovers(client, keep=lambda labels: live_local_worker(labels.get("arena.worker")))
    if n:
        say(f"removed {n} leftover container(s)")
    recover_dead_workers(settings, client, log=say)
    requeue_lost_jobs(settings, log=say)
    names = [queue_name(settings)]
    if gpu is not None:
        pin_gpus(gpu, say)
        names.insert(0, queue_name(settings, gpu=True))
    say(f"worker listening on {', '.join(names)}" + (f" with GPU {gpu}" if gpu is not None else ""))
    stop = start_sweeper(settings, say=say) if not burst else None
    conn = Redis.from_url(settings.redis_url)
    try:
        Worker([Queue(q, connection=conn) for q in names], connection=conn).work(burst=burst)
    finally:
        if stop is not None:
            stop.set()
