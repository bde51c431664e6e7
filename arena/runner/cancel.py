"""Cancelling an evaluation: the database first, then the queue, then any running container.

1. The evaluation becomes ``cancelled`` (through :mod:`arena.lifecycle`; a finished one or one already
   scoring cannot be cancelled). Its case results so far are kept.
2. Its RQ job: cancelled if still queued; if a worker runs it, RQ's stop-job command makes that worker
   stop the work-horse (the job's failure callback leaves a cancelled evaluation as it is).
3. Containers labelled ``arena.evaluation=<id>`` on this host's engine are killed and removed, so
   the case in progress ends now. (A worker on another host stops at its next case: the runner
   checks for cancellation before storing a case; its leftover containers are reaped at its restart.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from arena.config import Settings
from arena.db import session_scope
from arena.lifecycle import EvaluationStatus
from arena.models import Evaluation

log = logging.getLogger(__name__)


@dataclass
class CancelResult:
    evaluation_id: int
    previous_status: str
    job: str = "none"  # none | cancelled | stop-sent | finished | unreachable
    containers_stopped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def cancel_evaluation(settings: Settings, evaluation_id: int, *, docker=None) -> CancelResult:
    """Cancel evaluation ``evaluation_id``. Raises LookupError (unknown) or ValueError (not cancellable)."""
    with session_scope(settings.database_url) as s:
        ev = s.get(Evaluation, evaluation_id)
        if ev is None:
            raise LookupError(f"no evaluation {evaluation_id}")
        previous = ev.status
        if previous not in (EvaluationStatus.QUEUED, EvaluationStatus.RUNNING):
            raise ValueError(f"evaluation {evaluation_id} is {previous.value}: only queued or running evaluations "
                             "can be cancelled")
        ev.set_status(EvaluationStatus.CANCELLED, error="cancelled by an organizer")
        job_id = ev.job_id
    result = CancelResult(evaluation_id, previous.value)
    if job_id:
        result.job = _cancel_job(settings, job_id, result)
    result.containers_stopped = _stop_containers(evaluation_id, settings.queue_name, docker, result)
    log.info("evaluation %s cancelled (was %s; job %s; containers %s)", evaluation_id, previous.value, result.job,
             result.containers_stopped)
    return result


def _cancel_job(settings: Settings, job_id: str, result: CancelResult) -> str:
    try:
        from redis import Redis
        from rq.command import send_stop_job_command
        from rq.exceptions import InvalidJobOperation, NoSuchJobError
        from rq.job import Job, JobStatus

        conn = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            return "none"
        status = job.get_status(refresh=True)
        if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            job.cancel()
            return "cancelled"
        if status == JobStatus.STARTED:
            try:
                send_stop_job_command(conn, job_id)
            except InvalidJobOperation as e:
                result.notes.append(str(e))
                return "finished"
            return "stop-sent"
        return "finished"
    except Exception as e:  # Redis down: the database says cancelled; the runner stops at its next case
        result.notes.append(f"queue unreachable: {e}")
        return "unreachable"


def _stop_containers(evaluation_id: int, queue: str, docker, result: CancelResult) -> list[str]:
    try:
        if docker is None:
            from arena.images.docker_client import docker_client

            docker = docker_client()
        containers = docker.containers.list(all=True, filters={"label": [f"arena.evaluation={evaluation_id}",
                                                                        f"arena.queue={queue}"]})
    except Exception as e:  # no engine on the web host: the worker's own checks stop it
        result.notes.append(f"docker engine unreachable here: {e}")
        return []
    stopped = []
    for c in containers:
        try:
            c.remove(force=True)  # kill + remove; the runner sees the case end and stores nothing
            stopped.append(c.name)
        except Exception as e:
            result.notes.append(f"container {c.name}: {e}")
    return stopped
