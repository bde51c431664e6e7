"""Heartbeats of running evaluations, and the sweep that re-queues the ones whose worker went silent.

A running evaluation's work-horse writes ``arena:<queue>:heartbeat:<evaluation id>`` = ``"<worker> <unix time>"``
to Redis every ``heartbeat_s`` seconds. Any worker, on any host, periodically sweeps: an evaluation that
is ``running``/``scoring`` and has had no fresh heartbeat for ``stale_after_s`` seconds (its worker was
SIGKILLed, its host lost power, or it hangs) is re-queued; its finished cases are kept and skipped by the
next run. The silent process, should it wake up, finds the evaluation no longer its own and stops
(``jobs._owns``), so nothing is run or written twice.

Redis restarts lose the heartbeat keys, so absence alone is not enough: the sweep only acts after it has
itself seen the heartbeat missing or stale for ``stale_after_s`` (first-seen times are kept in a Redis hash,
which a restart clears too: the clock then starts again, and live workers re-write their keys within
``heartbeat_s``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Callable, Iterator

from redis import Redis
from sqlalchemy import select

from arena.config import Settings
from arena.db import session_scope
from arena.lifecycle import EvaluationStatus
from arena.models import Evaluation, utcnow
from arena.runner.keys import heartbeat_key, suspects_key

log = logging.getLogger("arena.runner")


def beat(conn: Redis, settings: Settings, evaluation_id: int, worker: str, now: float | None = None) -> None:
    """Write one heartbeat (expires after three times the stale limit, so dead keys do not pile up)."""
    now = time.time() if now is None else now
    conn.set(heartbeat_key(settings, evaluation_id), f"{worker} {now:.3f}", ex=int(3 * settings.stale_after_s) + 1)


@contextlib.contextmanager
def heartbeat(settings: Settings, evaluation_id: int, worker: str) -> Iterator[None]:
    """Beat every ``settings.heartbeat_s`` seconds from a daemon thread while the block runs.

    A Redis outage does not stop the evaluation: failed beats are logged and retried next period."""
    conn = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                beat(conn, settings, evaluation_id, worker)
            except Exception as e:  # noqa: BLE001 - Redis down: keep running, beat again later
                log.warning("evaluation %s: heartbeat failed (%s)", evaluation_id, e)
            if stop.wait(settings.heartbeat_s):
                return

    t = threading.Thread(target=loop, name=f"arena-heartbeat-{evaluation_id}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)
        with contextlib.suppress(Exception):
            conn.delete(heartbeat_key(settings, evaluation_id))


def last_beat(conn: Redis, settings: Settings, evaluation_id: int) -> float | None:
    """Unix time of the evaluation's last heartbeat, or None when there is none."""
    raw = conn.get(heartbeat_key(settings, evaluation_id))
    if not raw:
        return None
    try:
        return float(raw.decode().rsplit(" ", 1)[-1])
    except ValueError:
        return None


def find_silent(settings: Settings, now: float | None = None, conn: Redis | None = None,
                worker_prefix: str | None = None) -> list[int]:
    """Running evaluations whose heartbeat has been missing or stale for at least ``stale_after_s``.

    Records first-seen-silent times in Redis (so the grace period holds across sweeps and workers) and
    forgets evaluations that beat again or finished. ``worker_prefix`` (e.g. ``"site:charite:"``): only
    evaluations whose worker name starts with it (a site's claim looks at its own leases by this same rule)."""
    now = time.time() if now is None else now
    conn = conn or Redis.from_url(settings.redis_url)
    limit = settings.stale_after_s
    key = suspects_key(settings)
    silent: list[int] = []
    query = select(Evaluation.id, Evaluation.started_at).where(
        Evaluation.status.in_([EvaluationStatus.RUNNING, EvaluationStatus.SCORING]))
    if worker_prefix is not None:
        query = query.where(Evaluation.worker.startswith(worker_prefix, autoescape=True))
    with session_scope(settings.database_url) as s:
        rows = s.execute(query).all()
    running = {ev_id for ev_id, _ in rows}
    for ev_id, started_at in rows:
        beat_at = last_beat(conn, settings, ev_id)
        if beat_at is not None and now - beat_at < limit:
            conn.hdel(key, ev_id)
            continue
        if started_at is not None and (utcnow() - started_at).total_seconds() < limit:
            continue  # just started: its first beat may not have landed yet
        first = conn.hget(key, ev_id)
        if first is None:
            conn.hset(key, ev_id, f"{now:.3f}")
            continue
        if now - float(first) >= limit:
            silent.append(ev_id)
    if worker_prefix is None:  # a filtered look does not know the others: it leaves their marks alone
        for stale in set(int(k) for k in conn.hkeys(key)) - running:
            conn.hdel(key, stale)
    return silent


def sweep(settings: Settings, requeue: Callable[[int, str], bool], now: float | None = None,
          log: Callable[[str], None] = log.info) -> list[int]:
    """Re-queue (through ``requeue(evaluation_id, reason)``) every silent evaluation. Returns their IDs."""
    conn = Redis.from_url(settings.redis_url)
    done = []
    for ev_id in find_silent(settings, now=now, conn=conn):
        reason = f"no heartbeat for {settings.stale_after_s:g} s"
        if requeue(ev_id, reason):
            done.append(ev_id)
        conn.hdel(suspects_key(settings), ev_id)
    if done:
        log(f"re-queued silent evaluations {done} (no heartbeat for {settings.stale_after_s:g} s)")
    return done
