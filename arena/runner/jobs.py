"""RQ jobs: submission intake and evaluation. Workers run them (``arena worker``).

Jobs take IDs, never objects, and read settings from the worker's environment, so any number of
workers on any number of machines can share one database, one Redis and one submission store.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from redis import Redis
from rq import Callback, Queue
from sqlalchemy import select

from arena.config import Settings, load_settings
from arena.db import session_scope
from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
from arena.models import CaseResult, Evaluation, MetricValue, Submission
from arena.tasks.store import spec_of

log = logging.getLogger("arena.runner")

INTAKE_TIMEOUT_S = 3600
STAT_COLUMNS = ("cpu_s", "peak_memory_mb", "pids_peak", "gpu_memory_peak_mb", "gpu_utilization_mean")


def get_queue(settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=Redis.from_url(settings.redis_url))


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
        spec = spec_of(sub.task)
        n = len(sub.phase.cases)
        ev = Evaluation(submission=sub, status=EvaluationStatus.QUEUED, cases_total=n)
        s.add(ev)
        s.flush()
        ev_id = ev.id
    timeout = int(n * (spec.resources.time_per_case_s + 60) + 600)
    job = get_queue(settings).enqueue(run_evaluation, ev_id, job_timeout=timeout,
                                      description=f"evaluation {ev_id} of submission {submission_id}",
                                      on_failure=Callback(evaluation_job_failed))
    with session_scope(settings.database_url) as s:
        s.get(Evaluation, ev_id).job_id = job.id
    return ev_id


def evaluation_job_failed(job, connection, exc_type=None, exc_value=None, tb=None) -> None:
    """RQ failure callback: a job that died (killed work-horse, job timeout, lost worker) leaves its
    evaluation failed with the reason, never stuck in ``running``."""
    evaluation_id = job.args[0]
    reason = f"{exc_type.__name__}: {exc_value}" if exc_type else "the worker running it died"
    settings = load_settings()
    with session_scope(settings.database_url) as s:
        ev = s.get(Evaluation, evaluation_id)
        if ev is not None and not ev.status.finished:
            ev.set_status(EvaluationStatus.FAILED, error=f"evaluation job failed: {reason}")


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
    from arena.submissions.archive import InvalidImageArchive, inspect_image_archive
    from arena.submissions.loading import load_image_archive, submission_tag

    settings = load_settings()
    with session_scope(settings.database_url) as s:
        sub = s.get(Submission, submission_id)
        if sub is None or sub.status != SubmissionStatus.UPLOADED:
            return
        path = sub.upload_path
    try:
        info = inspect_image_archive(path)
        image_id = load_image_archive(docker_client(), path, info, submission_tag(submission_id), log=log.info)
    except InvalidImageArchive as e:
        with session_scope(settings.database_url) as s:
            s.get(Submission, submission_id).set_status(SubmissionStatus.FAILED, error=f"invalid image archive: {e}")
        return
    with session_scope(settings.database_url) as s:
        sub = s.get(Submission, submission_id)
        sub.image_id, sub.image_tag = image_id, submission_tag(submission_id)
        sub.set_status(SubmissionStatus.VALIDATED)
    create_evaluation(settings, submission_id)


def _ensure_image(client, sub: Submission) -> str:
    """The submission's image on this worker, loading it from the submission store when absent."""
    from arena.submissions.archive import inspect_image_archive
    from arena.submissions.loading import image_present, load_image_archive

    if not image_present(client, sub.image_id):
        info = inspect_image_archive(sub.upload_path)
        load_image_archive(client, sub.upload_path, info, sub.image_tag or f"arena/submission:{sub.id}")
    return sub.image_id


def run_evaluation(evaluation_id: int) -> str:
    """Run a queued evaluation case by case; record per-case results and the final status."""
    from arena.images.docker_client import docker_client
    from arena.runner.evaluate import evaluate_case, limits_for
    from arena.runner.gpu import worker_device_ids

    settings = load_settings()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with session_scope(settings.database_url) as s:
        ev = s.get(Evaluation, evaluation_id)
        if ev is None:
            raise LookupError(f"no evaluation {evaluation_id}")
        if ev.status != EvaluationStatus.QUEUED:
            log.warning("evaluation %s is %s; not running it again", evaluation_id, ev.status.value)
            return ev.status.value
        ev.set_status(EvaluationStatus.RUNNING)
        ev.worker = worker
        sub = ev.submission
        spec = spec_of(sub.task)
        cases = [(c.id, c.key, Path(c.image_path), Path(c.reference_path)) for c in sub.phase.cases]
        ev.cases_total = len(cases)
        done = {cr.case_id for cr in ev.case_results}
        sub_id = sub.id
    try:
        client = docker_client()
        with session_scope(settings.database_url) as s:
            image = _ensure_image(client, s.get(Submission, sub_id))
        gpus = tuple(worker_device_ids()) if spec.resources.gpu else ()
        if spec.resources.gpu and not gpus:
            raise RuntimeError("this task needs a GPU and this worker has none (no NVIDIA driver found)")
        limits = limits_for(spec, gpus)
        n_failed = 0
        for i, (case_id, key, img, ref) in enumerate(cases):
            if case_id in done:
                continue
            log.info("evaluation %s: case %d/%d (%s)", evaluation_id, i + 1, len(cases), key)
            out = evaluate_case(client, spec, image, key, img, ref,
                                work_dir=settings.work_dir / f"evaluation-{evaluation_id}" / key,
                                results_dir=settings.results_dir / f"evaluation-{evaluation_id}" / key,
                                limits=limits,
                                labels={"arena.evaluation": str(evaluation_id), "arena.case": key})
            n_failed += not out.ok
            with session_scope(settings.database_url) as s:
                ev = s.get(Evaluation, evaluation_id)
                if ev.status == EvaluationStatus.CANCELLED:
                    return ev.status.value
                cr = CaseResult(evaluation_id=evaluation_id, case_id=case_id,
                                status=CaseStatus.SUCCEEDED if out.ok else CaseStatus.FAILED,
                                error=out.error, exit_code=out.exit_code, runtime_s=out.runtime_s,
                                log_tail=out.log_tail, output_path=out.output_path,
                                failure=out.failure.value if out.failure else None,
                                **{k: v for k, v in out.stats.items() if k in STAT_COLUMNS})
                cr.metrics = [MetricValue(label=lab, metric=m, value=v)
                              for lab, vals in out.scores.items() for m, v in vals.items()]
                s.add(cr)
                ev.cases_done = i + 1
        with session_scope(settings.database_url) as s:
            ev = s.get(Evaluation, evaluation_id)
            ev.set_status(EvaluationStatus.SCORING)
        with session_scope(settings.database_url) as s:
            ev = s.get(Evaluation, evaluation_id)
            if cases and n_failed == len(cases):
                first = next((cr.error for cr in ev.case_results if cr.error), "unknown")
                ev.set_status(EvaluationStatus.FAILED, error=f"all {len(cases)} cases failed; first: {first}")
            else:
                ev.set_status(EvaluationStatus.SUCCEEDED)
            return ev.status.value
    except Exception as e:
        log.exception("evaluation %s failed", evaluation_id)
        with session_scope(settings.database_url) as s:
            ev = s.get(Evaluation, evaluation_id)
            if not ev.status.finished:
                ev.set_status(EvaluationStatus.FAILED, error=f"{e.__class__.__name__}: {e}")
        return EvaluationStatus.FAILED.value
