"""Every Redis name Arena uses, in one place (as RQ keeps its keys in one module).

All live under ``arena:<ARENA_QUEUE>:`` so that several Arena instances (or test runs) can share one
Redis without touching each other's keys; RQ's own keys are RQ's (``rq:...``), per queue name.
"""

from __future__ import annotations

from arena.config import Settings


def queue_name(settings: Settings, gpu: bool = False) -> str:
    """The RQ queue evaluations go to; GPU tasks have their own (only ``arena worker --gpu`` listens)."""
    return f"{settings.queue_name}-gpu" if gpu else settings.queue_name


def heartbeat_key(settings: Settings, evaluation_id: int) -> str:
    """``<worker> <unix time>`` of the evaluation's last heartbeat (expires after 3 × the stale limit)."""
    return f"arena:{settings.queue_name}:heartbeat:{evaluation_id}"


def suspects_key(settings: Settings) -> str:
    """Hash of evaluation id → when it was first seen silent (the sweeper's memory)."""
    return f"arena:{settings.queue_name}:silent-since"


def team_lock_key(settings: Settings, team_id: int) -> str:
    """The lock a team's evaluations take to respect ARENA_TEAM_CONCURRENCY."""
    return f"arena:{settings.queue_name}:team-lock:{team_id}"
