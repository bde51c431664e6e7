"""RQ jobs: submission intake and evaluation. Workers run them (``arena worker``).

Jobs take IDs, never objects, and read settings from the worker's environment, so any number of
workers on any number of machines can share one database, one Redis and one submission store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

from redis import Redis
from rq import Callback, Queue
from sqlalchemy import select

from arena.config import Settings, load_settings
from arena.db import session_scope
from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
from arena.models import CaseResult, Evaluation, MetricValue, Submission
from arena.runner.failures import Failure, Fault
from arena.services import redis_client
from arena.runner.keys import queue_name, team_lock_key
from arena.runner.monitor import STAT_COLUMNS
from arena.tasks.store import spec_of

log = logging.getLogger("arena.runner")

INTAKE_TIMEOUT_S = 3600


def get_queue(settings: Settings, gpu: bool = False) -> Queue:
    return Queue(queue_name(settings, gpu), connection=Redis.from_url(settings.redis_url))


def enqueue_intake(settings: Settings, submission_id: int) -> str:
    job = get_queue(settings).enqueue(intake_submission, submission_id, job_timeout=INTAKE_TIMEOUT_S,
                                      description=f"intake submission {submission_id}",
                                      on_failure=Callback(intake_job_failed))
    return job.id


def create_evaluation(settings: Settings, submission_id: int) -> int:
    """Add a queued evaluation of a validated submission and put it on the queue. Returns its ID.

    A re-run is just another call: earlier evaluations and their results stay as they are.
    """
    with session_scope(settings.database_url) as s:
        sub = s.get(Submission, submission_id)
        if sub is None:
            raise LookupError(f"no submission {submission_id}")
        if sub.status != SubmissionStatus.VALIDATED:
            raise ValueError(f"submission {submission_id} is {sub.status.value}, not validated: nothing to run")
        n = len(sub.phase.cases)
        ev = Evaluation(submission=sub, status=EvaluationStatus.QUEUED, cases_total=n)
        s.add(ev)
        s.flush()
        ev_id = ev.id
    enqueue_evaluation(settings, ev_id)
    return ev_id


def enqueue_evaluation(settings: Settings, evaluation_id: int) -> str:
    """Put a queued evaluation on its queue (GPU tasks on the GPU queue); records the job id.

    An evaluation of a site phase (``phases.site_id`` set) is not put on RQ: being ``queued`` in the
    database is its queue, from which the site's workers claim it over HTTP (arena.site.server.claim).
    Returns "" then."""
    with session_scope(settings.database_url) as s:
        ev = s.get(Evaluation, evaluation_id)
        if ev.submission.phase.site_id is not None:
            return ""
        spec = spec_of(ev.submission.task)
        n = len(ev.submission.phase.cases)
        submission_id = ev.submission_id
    timeout = int(n * (spec.resources.time_per_case_s + 60) + 600)
    if spec.resources.time_per_evaluation_s:
        timeout = min(timeout, int(spec.resources.time_per_evaluation_s + 120 + 60 * min(n, 10)))
    job = get_queue(settings, gpu=spec.resources.gpu).enqueue(run_evaluation, evaluation_id, job_timeout=timeout,
                                      description=f"evaluation {evaluation_id} of submission {submission_id}",
                                      on_failure=Callback(evaluation_job_failed))
    with session_scope(settings.database_url) as s:
        s.get(Evaluation, evaluation_id).job_id = job.id
    return job.id


def evaluation_job_failed(job, connection, exc_type=None, exc_value=None, tb=None) -> None:
    """RQ failure callback: a job that died leaves its evaluation re-queued or failed with the reason,
    never stuck in ``running``.

    A job RQ found abandoned (its worker vanished: host lost, worker killed) is platform-caused: the
    evaluation is re-queued (finished cases kept) up to MAX_REQUEUES times. A job timeout or any other
    error fails it."""
    from rq.exceptions import AbandonedJobError

    evaluation_id = job.args[0]
    reason = f"{exc_type.__name__}: {exc_value}" if exc_type else "the worker running it died"
    settings = load_settings()
    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
        if requeue_evaluation(settings, evaluation_id, "its job was abandoned (worker lost)", only_job=job_id_of(job)):
            return
        with session_scope(settings.database_url) as s:  # lost before it even started: put the job back
            ev = s.get(Evaluation, evaluation_id)
            again = ev is not None and ev.status == EvaluationStatus.QUEUED and not _stale_job(ev, job)
        if again:
            enqueue_evaluation(settings, evaluation_id)
        return
    with session_scope(settings.database_url) as s:
        ev = s.get(Evaluation, evaluation_id)
        if ev is None or ev.status.finished or _stale_job(ev, job):
            return
        ev.set_status(EvaluationStatus.FAILED, error=f"evaluation job failed: {reason}", fault=Fault.PLATFORM)


def _stale_job(ev: Evaluation, job) -> bool:
    """The evaluation was re-queued as another job since ``job`` started."""
    return bool(ev.job_id and job_id_of(job) and ev.job_id != job_id_of(job))


def job_id_of(job) -> str | None:
    return getattr(job, "id", None)


def intake_job_failed(job, connection, exc_type=None, exc_value=None, tb=None) -> None:
    """RQ failure callback: an intake that crashed (engine unreachable, worker killed) fails the
    submission with the reason instead of leaving it ``uploaded``; it does not count against quota."""
    submission_id = job.args[0]
    reason = f"{exc_type.__name__}: {exc_value}" if exc_type else "the worker running it died"
    settings = load_settings()
    with session_scope(settings.database_url) as s:
        sub = s.get(Submission, submission_id)
        if sub is not None and sub.status == SubmissionStatus.UPLOADED:
            sub.set_status(SubmissionStatus.FAILED, error=f"intake failed: {reason}")


def intake_submission(submission_id: int) -> None:
    """Check the uploaded archive, load it into this worker's engine, then queue an evaluation."""
    from arena.images.docker_client import docker_client
    from arena.submissions.archive import InvalidImageArchive
    from arena.submissions.loading import submission_tag

    settings = load_settings()
    with session_scope(settings.database_url) as s:
        sub = s.get(Submission, submission_id)
        if sub is None or sub.status != SubmissionStatus.UPLOADED:
            return
        path = sub.upload_path
    try:
        image_id = _load_from_store(docker_client(), path, submission_tag(settings.instance_id(), submission_id))
    except InvalidImageArchive as e:
        with session_scope(settings.database_url) as s:
            s.get(Submission, submission_id).set_status(SubmissionStatus.FAILED, error=f"invalid image archive: {e}")
        return
    with session_scope(settings.database_url) as s:
        sub = s.get(Submission, submission_id)
        sub.image_id, sub.image_tag = image_id, submission_tag(settings.instance_id(), submission_id)
        sub.set_status(SubmissionStatus.VALIDATED)
    create_evaluation(settings, submission_id)


def image_cache(settings: Settings, client):
    """This host's LRU of submission images (state file per host: ARENA_HOME may be shared)."""
    from arena.runner.image_cache import ImageCache
    from arena.submissions.loading import submission_repo

    return ImageCache(client, settings.home / f"image-cache-{socket.gethostname()}.json",
                      settings.image_cache_bytes, repo=submission_repo(settings.instance_id()), grace_s=300)


def _load_from_store(client, upload_path: str, tag: str) -> str:
    """Check the stored archive again (the store is shared; trust nothing) and load it tag-stripped."""
    from arena.submissions.archive import inspect_image_archive
    from arena.submissions.loading import load_image_archive

    return load_image_archive(client, upload_path, inspect_image_archive(upload_path), tag, log=log.info)


def _ensure_image(client, sub: Submission, settings: Settings | None = None) -> str:
    """The submission's image on this worker, loading it from the submission store when absent
    (evicted by the LRU, or never loaded on this machine)."""
    from arena.submissions.loading import image_present, submission_tag

    if not image_present(client, sub.image_id):
        _load_from_store(client, sub.upload_path, sub.image_tag or submission_tag(settings.instance_id(), sub.id))
    if settings is not None:
        image_cache(settings, client).touch(sub.image_id)
    return sub.image_id


def _worker_name() -> str:
    """``host:pid`` of the process running this job (the RQ work-horse itself, not its parent: a horse
    can outlive a killed parent and still finish), so a worker restarted on the same host can tell
    that an evaluation's process is dead."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    """True for a running process; False when gone or a zombie (dead, not yet reaped by init)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[-1][:1] not in ("Z", "X")
    except OSError:
        return True


SITE_WORKER_PREFIX = "site:"  # evaluation.worker of a site worker's lease: site:<site>:<worker>:<lease>


def _local_pid(worker: str | None) -> int | None:
    """The pid of ``worker`` (``host:pid``) when it names a process of this host, else None (a site
    worker's ``site:...`` name never names a local process)."""
    if (worker or "").startswith(SITE_WORKER_PREFIX):
        return None
    host, _, pid = (worker or "").rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def _dead_local_worker(worker: str | None) -> bool:
    pid = _local_pid(worker)
    return pid is not None and not _pid_alive(pid)


def live_local_worker(worker: str | None) -> bool:
    """Whether ``worker`` (``host:pid``) is a running worker process on this host."""
    pid = _local_pid(worker)
    return pid is not None and _pid_alive(pid)


MAX_REQUEUES = 2


def _clean_work_dir(path: Path) -> None:
    """Remove the run folders a dead worker's markers below ``path`` point to (unmounting their /output
    tmpfs), then ``path`` itself."""
    from arena.runner.contract import clean_run_marker

    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                if os.path.islink(os.path.join(root, name)):
                    clean_run_marker(Path(root) / name)
    clean_run_marker(path)  # a plain folder: unmounts what is below it and removes it


def requeue_evaluation(settings: Settings, evaluation_id: int, reason: str, only_worker: str | None = None,
                       only_job: str | None = None, counted: bool = True) -> bool:
    """Put a running (or scoring) evaluation whose worker is gone back on the queue; finished cases are
    kept and skipped by the next run. After MAX_REQUEUES re-queues it fails with the reason instead (a
    submission that kills every worker must not loop). With ``only_worker`` / ``only_job`` it acts only while
    that worker still owns the evaluation / that job is still its job. ``counted=False``: a re-queue nobody's
    failure caused (a site added cases while it ran), noted but not counted toward MAX_REQUEUES. Returns True
    when re-queued."""
    with session_scope(settings.database_url) as s:
        ev = s.get(Evaluation, evaluation_id)
        if ev is None or ev.status not in (EvaluationStatus.RUNNING, EvaluationStatus.SCORING):
            return False
        if only_worker is not None and ev.worker != only_worker:
            return False
        if only_job is not None and ev.job_id and ev.job_id != only_job:
            return False
        tries = (ev.error or "").count("re-queued")
        if counted and tries >= MAX_REQUEUES:
            ev.set_status(EvaluationStatus.FAILED, error=f"{reason}; gave up after {tries} re-queues",
                          fault=Fault.PLATFORM)
            return False
        ev.set_status(EvaluationStatus.QUEUED)
        ev.error = ((ev.error + "; ") if ev.error else "") + (f"re-queued: {reason}" if counted
                                                               else f"queued again: {reason}")
        ev.worker = None  # the old process, should it wake, no longer owns it (see _owns)
    enqueue_evaluation(settings, evaluation_id)
    return True


def sweep_silent_evaluations(settings: Settings, log=log.info) -> list[int]:
    """Re-queue running evaluations with no heartbeat for ``stale_after_s`` (any host's). Run periodically
    by every worker; safe to run from several at once."""
    from arena.runner.liveness import sweep

    return sweep(settings, lambda ev_id, reason: requeue_evaluation(settings, ev_id, reason), log=log)


def remove_dead_workers_containers(client) -> int:
    """Kill and remove the still-running containers of this host's dead worker processes (their
    ``arena.worker`` label names a ``host:pid`` of this host that is gone). Returns how many."""
    import docker.errors

    n = 0
    for c in client.containers.list(filters={"label": "arena.managed", "status": "running"}):
        if _dead_local_worker(c.labels.get("arena.worker")):
            try:
                c.remove(force=True)
                n += 1
            except docker.errors.APIError:
                pass
    return n


def recover_dead_workers(settings: Settings, client, log=log.info) -> tuple[int, int]:
    """Clean up after workers of this host that died (SIGKILL, OOM, reboot): kill and remove their
    still-running containers, and re-queue their running evaluations (finished cases are kept and
    skipped; after MAX_REQUEUES the evaluation fails with the reason). Returns (containers, evaluations)."""
    n_containers = remove_dead_workers_containers(client)
    with session_scope(settings.database_url) as s:
        dead = [(ev.id, ev.worker) for ev in s.scalars(select(Evaluation).where(
            Evaluation.status.in_([EvaluationStatus.RUNNING, EvaluationStatus.SCORING]))) if _dead_local_worker(ev.worker)]
    requeue = []
    for ev_id, worker in dead:
        _clean_work_dir(settings.work_dir / f"evaluation-{ev_id}")
        if requeue_evaluation(settings, ev_id, f"worker {worker} died", only_worker=worker):
            requeue.append(ev_id)
    if n_containers or requeue:
        log(f"recovered after dead workers: removed {n_containers} container(s), re-queued evaluations {requeue}")
    return n_containers, len(requeue)


def requeue_lost_jobs(settings: Settings, log=log.info, min_age_s: float = 0.0) -> tuple[int, int]:
    """Put back on the queue what Redis lost (a restart without persistence, a flushed database):
    queued evaluations whose job no longer exists, and uploaded submissions whose intake job is gone.
    Rows younger than ``min_age_s`` are left alone (their creator may not have enqueued them yet: the
    periodic sweep passes a few seconds; worker start passes 0). Returns (evaluations, submissions)
    re-queued. Idempotent."""
    import datetime as dt

    from rq.job import Job

    from arena.models import utcnow

    conn = Redis.from_url(settings.redis_url)
    born_before = utcnow() - dt.timedelta(seconds=min_age_s)
    lost_evals, lost_subs = [], []
    with session_scope(settings.database_url) as s:
        for ev in s.scalars(select(Evaluation).where(Evaluation.status == EvaluationStatus.QUEUED,
                                                      Evaluation.created_at <= born_before)):
            if ev.submission.phase.site_id is not None:
                continue  # a site phase's queue is the database itself: nothing on RQ to lose
            if not ev.job_id or not Job.exists(ev.job_id, connection=conn):
                lost_evals.append(ev.id)
        queued_intakes = {j.args[0] for j in get_queue(settings).jobs if j.func_name.endswith("intake_submission")}
        started = set()
        from rq.registry import StartedJobRegistry

        for jid in StartedJobRegistry(queue=get_queue(settings)).get_job_ids():
            job = Job.fetch(jid, connection=conn) if Job.exists(jid, connection=conn) else None
            if job is not None and job.func_name.endswith("intake_submission"):
                started.add(job.args[0])
        for sub in s.scalars(select(Submission).where(Submission.status == SubmissionStatus.UPLOADED,
                                                      Submission.created_at <= born_before)):
            if sub.id not in queued_intakes and sub.id not in started:
                lost_subs.append(sub.id)
    for ev_id in lost_evals:
        enqueue_evaluation(settings, ev_id)
    for sub_id in lost_subs:
        enqueue_intake(settings, sub_id)
    if lost_evals or lost_subs:
        log(f"re-queued jobs the queue had lost: evaluations {lost_evals}, submission intakes {lost_subs}")
    return len(lost_evals), len(lost_subs)


def _owns(ev: Evaluation, worker: str) -> bool:
    """Whether ``worker`` still runs ``ev``: not cancelled, not re-queued to another worker meanwhile."""
    return ev.status in (EvaluationStatus.RUNNING, EvaluationStatus.SCORING) and ev.worker == worker


DB_RETRY_S = 120.0


def _wait_out(fn, outage, what: str, budget_s: float, max_pause_s: float):
    """Call ``fn()`` again while ``outage(exception)`` says a service is briefly away, with doubling pauses
    (0.5 s up to ``max_pause_s``) for up to ``budget_s`` seconds; then (or for any other error) raise."""
    deadline = time.monotonic() + budget_s
    pause = 0.5
    while True:
        try:
            return fn()
        except Exception as e:
            if not outage(e) or time.monotonic() > deadline:
                raise
            log.warning("%s: %s; retrying in %.1f s", what, str(e).splitlines()[0], pause)
            time.sleep(pause)
            pause = min(pause * 2, max_pause_s)


def _db_retry(fn, what: str, budget_s: float | None = None):
    """Call ``fn()`` (one whole transaction) again while the database is unreachable (a restart, a
    fail-over), for up to ``budget_s`` seconds (default DB_RETRY_S); then let the error through.
    A transaction that failed was rolled back, so retrying never writes anything twice."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    def outage(e: Exception) -> bool:  # OperationalError: server gone; other DBAPIErrors only when the link broke
        return isinstance(e, OperationalError) or (isinstance(e, DBAPIError) and e.connection_invalidated)

    return _wait_out(fn, outage, f"{what}: database unavailable", DB_RETRY_S if budget_s is None else budget_s, 10.0)


ENGINE_RETRIES = 2  # re-runs of one case (or batch) whose run the engine broke off


def _wait_for_engine(what: str, budget_s: float):
    """A connected docker client, waiting up to ``budget_s`` while the engine is unreachable (dockerd
    restarting: its socket refuses until it has restored its containers). Raises DockerUnavailable,
    naming the engine, when it does not come back in time."""
    from arena.images.docker_client import DockerUnavailable, docker_client

    try:
        return _wait_out(docker_client, lambda e: isinstance(e, DockerUnavailable),
                         f"{what}: Docker engine unavailable", budget_s, 5.0)
    except DockerUnavailable as e:
        raise DockerUnavailable(f"{what}: the Docker engine did not come back within {budget_s:g} s "
                                f"({str(e).split('. ')[0]})") from e


class _Engine:
    """The job's connection to this worker's Docker engine, re-made after the engine went away.

    :meth:`call` runs a step (a case's container run, the image check); when the engine breaks the
    connection mid-step (EngineLost: dockerd stopped, crashed or restarted) it waits for the engine
    (at most ``wait_s``: ARENA_ENGINE_WAIT_S), removes what the broken-off step left (``cleanup``), and
    runs the step again, at most ENGINE_RETRIES times. Nothing was recorded for the broken-off step, so
    nothing is recorded twice."""

    def __init__(self, what: str, wait_s: float) -> None:
        self.what, self.wait_s = what, wait_s
        self.client = _wait_for_engine(what, wait_s)

    def call(self, step, name: str, cleanup=None):
        from arena.images.docker_client import (
            EngineLost,
            connection_broke,
            engine_address,
        )

        for attempt in range(ENGINE_RETRIES + 1):
            try:
                if attempt and cleanup is not None:
                    cleanup(self.client)
                return step(self.client)
            except Exception as e:
                if not (isinstance(e, EngineLost) or connection_broke(e)):
                    raise
                if attempt >= ENGINE_RETRIES:
                    raise EngineLost(f"{name}: the Docker engine at {engine_address()} went away "
                                     f"{attempt + 1} times ({e})") from e
                log.warning("%s: %s: the Docker engine went away (%s); waiting for it, then running it again",
                            self.what, name, e)
                with contextlib.suppress(Exception):
                    self.client.close()
                self.client = _wait_for_engine(f"{self.what}: {name}", self.wait_s)


def _remove_run_containers(client, labels: dict[str, str]) -> int:
    """Remove this run's containers (all of ``labels`` match) that a broken-off step left on the engine."""
    import docker.errors

    n = 0
    for c in client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]}):
        with contextlib.suppress(docker.errors.APIError):
            c.remove(force=True)
            n += 1
    return n


def _record(settings: Settings, evaluation_id: int, case_id: int, out, done: int, worker: str) -> bool:
    """Store one case's outcome (one transaction: the case row with all its metrics, or nothing); returns
    False, storing nothing, when the evaluation was cancelled or taken over meanwhile. Waits out a
    database outage (see _db_retry)."""
    return _db_retry(lambda: _record_once(settings, evaluation_id, case_id, out, done, worker),
                     f"evaluation {evaluation_id}: recording a case")


def _record_once(settings: Settings, evaluation_id: int, case_id: int, out, done: int, worker: str) -> bool:
    with session_scope(settings.database_url) as s:
        ev = s.get(Evaluation, evaluation_id)
        if not _owns(ev, worker):
            return False
        add_case_result(s, ev, case_id, out)
        ev.cases_done = done
    return True


def add_case_result(s, ev: Evaluation, case_id: int, out) -> CaseResult:
    """Add one case's result row with all its metrics to session ``s`` (the caller's transaction): the one
    row shape every worker stores, local or at a site. ``out``: a CaseOutcome (scores: label id → metric →
    value, None where the empty-mask policy excludes it; stats: the CaseResult columns of STAT_COLUMNS)."""
    cr = CaseResult(evaluation_id=ev.id, case_id=case_id,
                    status=CaseStatus.SUCCEEDED if out.ok else CaseStatus.FAILED,
                    error=out.error, exit_code=out.exit_code, runtime_s=out.runtime_s,
                    log_tail=out.log_tail, output_path=out.output_path,
                    failure=out.failure.value if out.failure else None,
                    **{k: v for k, v in out.stats.items() if k in STAT_COLUMNS})
    cr.metrics = [MetricValue(label=lab, metric=m, value=v) for lab, vals in out.scores.items() for m, v in vals.items()]
    s.add(cr)
    return cr


def settle(s, ev: Evaluation, n_cases: int, stop: tuple[Failure, str] | None, stop_fault: Fault) -> str:
    """The final status of an evaluation whose cases are all recorded (every worker's one rule), set in
    session ``s``: failed when every one of its ``n_cases`` cases failed (the fault from the cases'
    failures), failed when the run stopped early (``stop``: the failure and the "not run: ..." reason,
    ``stop_fault`` whose fault), else succeeded. Counts from the database: a re-queued run skipped the
    cases an earlier run recorded. Returns the status value."""
    if ev.status == EvaluationStatus.RUNNING:
        ev.set_status(EvaluationStatus.SCORING)
        s.flush()
    n_failed_all = sum(cr.status != CaseStatus.SUCCEEDED for cr in ev.case_results)
    if n_cases and n_failed_all >= n_cases:
        first = next((cr.error for cr in ev.case_results if cr.error), "unknown")
        fault = Fault.of_cases([Failure(cr.failure) for cr in ev.case_results if cr.failure])
        ev.set_status(EvaluationStatus.FAILED, error=f"all {n_cases} cases failed; first: {first}", fault=fault)
    elif stop is not None:
        ev.set_status(EvaluationStatus.FAILED, error=stop[1].replace("not run: ", "stopped: ", 1), fault=stop_fault)
    else:
        ev.set_status(EvaluationStatus.SUCCEEDED)
    return ev.status.value


def _claim(settings: Settings, evaluation_id: int, worker: str, site_id: int | None = None) -> str:
    """Take a queued evaluation for ``worker``: "run", "wait" (its team already has
    ``settings.team_concurrency`` evaluations running), "elsewhere" (its phase is served by another
    site, or by local workers when ``site_id`` is given), or the status it has when it is not queued.

    ``site_id``: None for local workers (they never run a site phase), a site's id for its workers.
    The check and the status change happen under a per-team Redis lock, so two workers on two hosts
    cannot both start a team's evaluation past the limit."""
    from contextlib import nullcontext

    from sqlalchemy import func

    with session_scope(settings.database_url) as s:
        ev = s.get(Evaluation, evaluation_id)
        if ev is None:
            raise LookupError(f"no evaluation {evaluation_id}")
        team_id = ev.submission.team_id
    limit = settings.team_concurrency
    lock = (redis_client(settings.redis_url).lock(team_lock_key(settings, team_id),
                                                    timeout=60, blocking_timeout=60) if limit > 0 else nullcontext())
    with lock:
        with session_scope(settings.database_url) as s:
            ev = s.get(Evaluation, evaluation_id)
            if ev.status != EvaluationStatus.QUEUED:
                return ev.status.value
            if ev.submission.phase.site_id != site_id:
                return "elsewhere"
            if limit > 0:
                active = s.scalar(select(func.count(Evaluation.id)).join(Submission).where(
                    Submission.team_id == team_id, Evaluation.id != evaluation_id,
                    Evaluation.status.in_([EvaluationStatus.RUNNING, EvaluationStatus.SCORING])))
                if active >= limit:
                    return "wait"
            ev.set_status(EvaluationStatus.RUNNING)
            ev.worker = worker
    return "run"


DEFER_PAUSE_S = 1.0


def run_evaluation(evaluation_id: int) -> str:
    """Run a queued evaluation; record per-case results and the final status.

    Per-case mode runs the cases in order; the first is the smoke case: if it fails because the
    platform could not run the container at all, the evaluation stops. With the task's ``fail_fast``
    the evaluation stops at the first failed case. Past ``time_per_evaluation_s`` the remaining cases
    are skipped. Skipped cases are recorded (failure "skipped"/"evaluation-timeout") and scored as
    empty predictions. Batch mode runs the container once over all cases.

    A team with ``team_concurrency`` evaluations already running waits: the job goes to the back of the
    queue ("deferred"). While it runs, the evaluation beats a heartbeat (arena.runner.liveness).
    """
    from arena.runner.liveness import heartbeat

    settings = load_settings()
    worker = _worker_name()
    claim = _claim(settings, evaluation_id, worker)
    if claim == "wait":
        # The team is at its limit: go to the back of the queue, so other teams' evaluations run first
        # (fair ordering); pause a moment so a queue holding only this team's work does not spin.
        time.sleep(DEFER_PAUSE_S)
        enqueue_evaluation(settings, evaluation_id)
        return "deferred"
    if claim == "elsewhere":
        log.warning("evaluation %s belongs to a site phase: only that site's workers run it", evaluation_id)
        return claim
    if claim != "run":
        log.warning("evaluation %s is %s; not running it again", evaluation_id, claim)
        return claim
    with heartbeat(settings, evaluation_id, worker):
        return _run_claimed(settings, evaluation_id, worker)


def _run_claimed(settings: Settings, evaluation_id: int, worker: str) -> str:
    from arena.images.docker_client import DockerUnavailable
    from arena.runner.evaluate import CaseInput

    with session_scope(settings.database_url) as s:
        ev = s.get(Evaluation, evaluation_id)
        sub = ev.submission
        spec = spec_of(sub.task)
        cases = [(c.id, CaseInput(c.key, Path(c.image_path), Path(c.reference_path))) for c in sub.phase.cases]
        ev.cases_total = len(cases)
        done = {cr.case_id for cr in ev.case_results}
        sub_id = sub.id
        model_path = sub.model_archive.path if sub.model_archive is not None else None
    started = time.monotonic()  # the evaluation's time limit counts from here (loading the image included)
    # One work directory per run: a silent process that wakes after its evaluation was re-queued
    # cannot trample the new run's inputs and outputs.
    work = settings.work_dir / f"evaluation-{evaluation_id}" / worker.replace(":", "-")
    results = settings.results_dir / f"evaluation-{evaluation_id}"
    # arena.queue tells apart evaluations of several Arena instances (or test runs) sharing one engine
    labels = {"arena.evaluation": str(evaluation_id), "arena.worker": worker, "arena.queue": settings.queue_name}
    stack = contextlib.ExitStack()
    try:
        engine = _Engine(f"evaluation {evaluation_id}", settings.engine_wait_s)
        mounts = _model_mount(stack, model_path, work / "model", settings.run_root) if model_path else {}

        def ensure(client) -> str:
            with session_scope(settings.database_url) as s:
                return _ensure_image(client, s.get(Submission, sub_id), settings)

        image = engine.call(ensure, "loading the image")
        todo = [(cid, c) for cid, c in cases if cid not in done]
        final = run_case_loop(settings, engine, spec, image, todo, n_cases=len(cases), n_done=len(done), work=work,
                              results=results, labels=labels, mounts=mounts,
                              recorder=_LocalRecorder(settings, evaluation_id, worker, len(cases)),
                              what=f"evaluation {evaluation_id}", started=started)
        return final if final is not None else _lost(settings, evaluation_id)
    except DockerUnavailable as e:
        # The engine stayed away (or kept breaking off): platform-caused, so the evaluation goes back on
        # the queue (finished cases kept) for this or another host; after MAX_REQUEUES it fails, naming
        # the engine.
        log.error("evaluation %s: %s", evaluation_id, e)
        if requeue_evaluation(settings, evaluation_id, str(e), only_worker=worker):
            return EvaluationStatus.QUEUED.value
        with session_scope(settings.database_url) as s:
            ev = s.get(Evaluation, evaluation_id)
            return ev.status.value if ev.status.finished else _lost(settings, evaluation_id)
    except Exception as e:
        log.exception("evaluation %s failed", evaluation_id)
        with session_scope(settings.database_url) as s:
            ev = s.get(Evaluation, evaluation_id)
            if not _owns(ev, worker):
                return _lost(settings, evaluation_id)
            ev.set_status(EvaluationStatus.FAILED, error=f"{e.__class__.__name__}: {e}", fault=Fault.PLATFORM)
        return EvaluationStatus.FAILED.value
    finally:
        stack.close()  # the extracted model, if any


class _LocalRecorder:
    """Where a local worker's case loop records: the database directly (see :func:`run_case_loop`)."""

    def __init__(self, settings: Settings, evaluation_id: int, worker: str, n_cases: int) -> None:
        self.settings, self.evaluation_id, self.worker, self.n_cases = settings, evaluation_id, worker, n_cases

    def owned(self) -> bool:
        return _still_owned(self.settings, self.evaluation_id, self.worker)

    def record(self, case_id: int, out, index: int) -> bool:
        return _record(self.settings, self.evaluation_id, case_id, out, index, self.worker)

    def finish(self, stop: tuple[Failure, str] | None, stop_fault: Fault) -> str | None:
        def finish() -> str | None:
            with session_scope(self.settings.database_url) as s:
                ev = s.get(Evaluation, self.evaluation_id)
                if not _owns(ev, self.worker):
                    return None
                return settle(s, ev, self.n_cases, stop, stop_fault)

        return _db_retry(finish, f"evaluation {self.evaluation_id}: final status")


def run_case_loop(settings: Settings, engine: _Engine, spec, image: str, todo: list, *, n_cases: int, n_done: int,
                  work: Path, results: Path, labels: dict[str, str], mounts: dict[str, tuple[str, str]],
                  recorder, what: str, started: float | None = None) -> str | None:
    """Run the cases still to do of one evaluation and record each as it finishes: the one case loop of
    local workers and site workers (arena.site.worker). Returns the final status, or None when the
    evaluation was lost meanwhile (cancelled, re-queued, the lease lapsed).

    ``todo``: ``(ref, CaseInput)`` pairs in phase order; ``ref`` is the recorder's handle of the case.
    ``n_cases`` / ``n_done``: the phase's cases and those an earlier run already recorded (the first case
    run, index 1, is the smoke case). ``recorder``: ``owned()`` (checked before each case starts),
    ``record(ref, outcome, index)`` (False: lost) and ``finish(stop, stop_fault)`` (the final status, None:
    lost). Per-case mode runs the cases in order; a smoke case the engine could not run, or a failed case
    of a fail-fast task, stops the run; past ``time_per_evaluation_s`` (counted from ``started``, a
    time.monotonic() value) the remaining cases are skipped; skipped cases are recorded and scored as empty
    predictions. Batch mode runs the container once over all cases. Work folders: ``work/<key>``; kept
    outputs: ``results/<key>``; containers carry ``labels``."""
    from arena.runner.evaluate import evaluate_batch, evaluate_case, limits_for, skipped_case
    from arena.runner.gpu import worker_device_ids

    started = time.monotonic() if started is None else started
    deadline = started + spec.resources.time_per_evaluation_s if spec.resources.time_per_evaluation_s else None

    def clean_up(client, key: str, case_dirs: list[Path]) -> None:
        import shutil

        n = _remove_run_containers(client, {**labels, "arena.case": key})
        for d in case_dirs:  # whatever the broken-off run collected: the re-run starts clean
            shutil.rmtree(d, ignore_errors=True)
        log.info("%s: removed %d container(s) of the broken-off run of %s", what, n, key)
    gpus = tuple(worker_device_ids()) if spec.resources.gpu else ()
    stop: tuple[Failure, str] | None = None
    stop_fault = Fault.PARTICIPANT  # whose fault the stop is (fail-fast, the evaluation's time limit)
    if spec.resources.gpu and not gpus:
        stop = (Failure.NO_GPU, "this task needs a GPU and this worker has none (no NVIDIA driver found)")
        stop_fault = Fault.PLATFORM
    limits = limits_for(spec, gpus)
    if spec.io_mode == "batch" and todo and stop is None:
        if not recorder.owned():
            return None
        budget = limits.time_s * len(todo)
        if deadline:
            budget = min(budget, max(1.0, deadline - time.monotonic()))
        log.info("%s: batch run over %d cases", what, len(todo))
        outs = engine.call(
            lambda client: evaluate_batch(client, spec, image, [c for _, c in todo], work / "batch", results,
                                          replace(limits, time_s=budget), {**labels, "arena.case": "batch"},
                                          run_root=settings.run_root, mounts=mounts),
            "the batch run", cleanup=lambda client: clean_up(client, "batch", [results / c.key for _, c in todo]))
        for i, ((ref, _), out) in enumerate(zip(todo, outs)):
            if not recorder.record(ref, out, n_done + i + 1):
                return None
        todo = []
    for i, (ref, c) in enumerate(todo):
        index = n_done + i + 1
        if stop is None and deadline and time.monotonic() >= deadline:
            stop = (Failure.EVALUATION_TIMEOUT,
                    f"not run: the evaluation passed its {spec.resources.time_per_evaluation_s:g} s limit")
        if stop is not None:
            out = skipped_case(spec, c.reference, *stop)
        else:
            if not recorder.owned():  # cancelled or re-queued meanwhile
                return None
            log.info("%s: case %d/%d (%s)", what, index, n_cases, c.key)
            case_limits = limits
            if deadline:
                case_limits = replace(limits, time_s=max(1.0, min(limits.time_s, deadline - time.monotonic())))
            out = engine.call(
                lambda client, c=c, lim=case_limits: evaluate_case(
                    client, spec, image, c.key, c.image, c.reference, work_dir=work / c.key,
                    results_dir=results / c.key, limits=lim, labels={**labels, "arena.case": c.key},
                    run_root=settings.run_root, mounts=mounts),
                f"case {c.key}", cleanup=lambda client, key=c.key: clean_up(client, key, [results / key]))
            if not out.ok and out.failure == Failure.ENGINE_ERROR and index == 1:
                stop = (Failure.SKIPPED, f"not run: the smoke case could not be run ({out.error})")
                stop_fault = Fault.PLATFORM
            elif not out.ok and spec.resources.fail_fast:
                stop = (Failure.SKIPPED, f"not run: case {index} failed and the task fails fast")
        if not recorder.record(ref, out, index):
            return None
    try:
        removed = image_cache(settings, engine.client).evict(keep={image})
        if removed:
            log.info("image cache: removed %d least recently used image(s)", len(removed))
    except Exception:  # the cache must never fail an evaluation
        log.exception("image cache eviction failed")
    return recorder.finish(stop, stop_fault)


def _model_mount(stack: contextlib.ExitStack, archive: str, marker: Path, run_root: Path) -> dict[str, tuple[str, str]]:
    """Extract the submission's model archive once per evaluation into a random run folder (removed when
    ``stack`` closes) and return the read-only mount of it at /opt/ml/model."""
    from arena.runner.contract import run_area
    from arena.submissions.model_archive import MODEL_MOUNT, extract_model_archive

    folder = stack.enter_context(run_area(marker, run_root))
    n = extract_model_archive(archive, folder / "model")
    log.info("model archive %s: %d files extracted for %s", Path(archive).name[:16], n, MODEL_MOUNT)
    return {MODEL_MOUNT: (str(folder / "model"), "ro")}


def _still_owned(settings: Settings, evaluation_id: int, worker: str) -> bool:
    """Checked before each case starts: a cancel (from any host) stops the run between cases."""
    def check() -> bool:
        with session_scope(settings.database_url) as s:
            return _owns(s.get(Evaluation, evaluation_id), worker)

    return _db_retry(check, f"evaluation {evaluation_id}: ownership check")


def _lost(settings: Settings, evaluation_id: int) -> str:
    """What a run returns when its evaluation was cancelled or re-queued to another worker meanwhile."""
    with session_scope(settings.database_url) as s:
        status = s.get(Evaluation, evaluation_id).status
    log.warning("evaluation %s is %s and no longer this worker's: stopped", evaluation_id, status.value)
    return EvaluationStatus.CANCELLED.value if status == EvaluationStatus.CANCELLED else "taken-over"
