"""The server's side of site workers: sites, their scoped worker tokens, and the service functions behind
/api/v1/site/ (arena/web/site_api.py is only the HTTP edge; the CLI's ``arena site`` uses the same).

A worker token is ``arena-site-<43 url-safe characters>``; only its sha256 is stored (``worker_tokens``),
it is shown once, and a revoked token is refused at once. Its scope: its site, and the phases it was issued
for that are assigned to that site (``phases.site_id``).

A claimed evaluation's ``worker`` is ``site:<site>:<worker>:<lease>``; the lease is ``<token id>.<random>``,
so only the token that claimed it holds it. Heartbeats go to the same Redis key local workers beat
(arena.runner.liveness), so the local sweeper re-queues a silent site evaluation like any other; a claim
first re-queues its own site's lapsed leases. Results are accepted only from the lease holder, once per
case, for cases the phase has; the row stored is the one local workers store (jobs.add_case_result), and
the final status follows the same rule (jobs.settle).
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from arena.config import Settings
from arena.db import session_scope
from arena.lifecycle import EvaluationStatus
from arena.models import (
    Case,
    CaseResult,
    Evaluation,
    ModelArchive,
    Phase,
    Site,
    Submission,
    Task,
    WorkerToken,
    phase_cases,
    utcnow,
)
from arena.runner.failures import Failure, Fault
from arena.services import redis_client
from arena.site.protocol import (
    CASE_KEY,
    TOKEN_PREFIX,
    CaseReport,
    CasesRequest,
    CasesResponse,
    ClaimResponse,
    FinishRequest,
    ImageRef,
)

SITE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$"
CLAIM_CANDIDATES = 50  # queued evaluations looked at per claim (oldest first)
LAST_USED_RESOLUTION_S = 60.0  # a token's last_used_at is updated at most this often (seconds)
REGISTER_TRIES = 5  # a registration that lost a race with another worker's is read again this often


class SiteError(Exception):
    """A refusal: ``status`` is the HTTP status the API answers with, the message says what is wrong."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- organizer side (CLI) ----------------------------------------------------------------------------

def add_site(s: Session, name: str) -> Site:
    """A new site called ``name`` (letters, digits, '.', '_', '-'; 60 at most); ValueError if taken."""
    if not re.fullmatch(SITE_NAME, name or ""):
        raise ValueError(f"site name {name!r}: use 1–60 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit")
    if s.scalar(select(Site).where(Site.name == name)) is not None:
        raise ValueError(f"a site called {name!r} exists already")
    site = Site(name=name)
    s.add(site)
    s.flush()
    return site


def get_site(s: Session, name: str) -> Site:
    site = s.scalar(select(Site).where(Site.name == name))
    if site is None:
        raise LookupError(f"no site {name!r} (arena site add {name} first; arena site list shows them)")
    return site


def get_phase(s: Session, ref: str) -> Phase:
    """The phase ``TASK_SLUG/PHASE_SLUG``; LookupError naming what is missing."""
    task_slug, sep, phase_slug = ref.partition("/")
    if not sep or not task_slug or not phase_slug:
        raise LookupError(f"{ref!r}: expected TASK_SLUG/PHASE_SLUG, e.g. han-oar-22/test")
    task = s.scalar(select(Task).where(Task.slug == task_slug))
    if task is None:
        raise LookupError(f"no task {task_slug!r}")
    phase = next((p for p in task.phases if p.slug == phase_slug), None)
    if phase is None:
        raise LookupError(f"task {task_slug!r} has no phase {phase_slug!r} (it has: "
                          f"{', '.join(p.slug for p in task.phases)})")
    return phase


def assign_phase(s: Session, site_name: str, phase_ref: str) -> Phase:
    """Serve ``TASK/PHASE`` by the site's workers only (local workers stop taking its evaluations).
    Refused while the phase has cases stored on the server (their pixels would be here, not at the site)
    or evaluations running."""
    site = get_site(s, site_name)
    phase = get_phase(s, phase_ref)
    local = [c.key for c in phase.cases if c.image_path or c.reference_path]
    if local:
        raise ValueError(f"phase {phase_ref} holds {len(local)} case(s) stored on the server ({', '.join(local[:5])}"
                         f"{', ...' if len(local) > 5 else ''}): remove them first (arena task remove-case); a "
                         "site phase's cases stay at the site")
    running = s.scalar(select(Evaluation.id).join(Submission).where(
        Submission.phase_id == phase.id,
        Evaluation.status.in_([EvaluationStatus.RUNNING, EvaluationStatus.SCORING])).limit(1))
    if running is not None:
        raise ValueError(f"phase {phase_ref} has evaluation {running} running: wait for it (or cancel it) first")
    phase.site_id = site.id
    return phase


def issue_token(s: Session, site_name: str, phase_refs: list[str]) -> tuple[WorkerToken, str]:
    """A new worker token of the site for ``phase_refs`` (each TASK/PHASE, assigned to that site); returns the
    row and the token, which is shown once and never stored."""
    site = get_site(s, site_name)
    if not phase_refs:
        raise ValueError("name at least one phase the token may serve (--phase TASK/PHASE)")
    ids = []
    for ref in phase_refs:
        phase = get_phase(s, ref)
        if phase.site_id != site.id:
            raise ValueError(f"phase {ref} is not assigned to site {site.name!r} (arena site assign {site.name} {ref})")
        ids.append(phase.id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = WorkerToken(site_id=site.id, token_sha256=hash_token(token), phase_ids=sorted(set(ids)))
    s.add(row)
    s.flush()
    return row, token


def revoke_worker_token(s: Session, token_id: int) -> WorkerToken:
    """Revoke a worker token (refused from the next request on); LookupError if there is none."""
    row = s.get(WorkerToken, token_id)
    if row is None:
        raise LookupError(f"no worker token {token_id} (arena site list shows them)")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def list_sites(s: Session) -> list[dict]:
    """Every site with its phases (``task/phase``) and tokens (id, phases, created, last used, revoked)."""
    all_phases = list(s.scalars(select(Phase)))
    phases = {p.id: f"{p.task.slug}/{p.slug}" for p in all_phases}
    out = []
    for site in s.scalars(select(Site).order_by(Site.name)):
        out.append({
            "name": site.name,
            "phases": sorted(phases[p.id] for p in all_phases if p.site_id == site.id),
            "tokens": [{"id": t.id, "phases": [phases.get(i, f"#{i}") for i in t.phase_ids],
                        "created_at": t.created_at, "last_used_at": t.last_used_at, "revoked_at": t.revoked_at}
                       for t in site.tokens],
        })
    return out


# -- the worker side: authentication and scope ---------------------------------------------------------

@dataclass(frozen=True)
class Caller:
    """A worker token that passed authentication: its id, site and phases."""

    token_id: int
    site_id: int
    site: str
    phase_ids: frozenset[int]


def authenticate(settings: Settings, token: str) -> Caller:
    """The caller of ``token``; SiteError 401 when it is missing, unknown or revoked. Notes its last use."""
    if not token:
        raise SiteError("missing worker token: send 'Authorization: Bearer <worker token>'", 401)
    if not token.startswith(TOKEN_PREFIX):
        raise SiteError("not a worker token (they start with 'arena-site-'; arena site token issues one)", 401)
    with session_scope(settings.database_url) as s:
        row = s.scalar(select(WorkerToken).where(WorkerToken.token_sha256 == hash_token(token)))
        if row is None or row.revoked_at is not None:
            raise SiteError("unknown or revoked worker token", 401)
        now = utcnow()
        if row.last_used_at is None or (now - row.last_used_at).total_seconds() >= LAST_USED_RESOLUTION_S:
            row.last_used_at = now  # not on every heartbeat: one write a minute per token is enough
        return Caller(row.id, row.site_id, row.site.name, frozenset(row.phase_ids))


def _in_scope(caller: Caller, phase: Phase) -> bool:
    return phase.id in caller.phase_ids and phase.site_id == caller.site_id


def _scoped_phase(s: Session, caller: Caller, task_slug: str, phase_slug: str) -> Phase:
    phase = s.scalar(select(Phase).join(Task).where(Task.slug == task_slug, Phase.slug == phase_slug))
    if phase is None or not _in_scope(caller, phase):
        raise SiteError(f"phase {task_slug}/{phase_slug} is not in this worker token's scope", 403)
    return phase


def worker_name(caller: Caller, worker: str, lease: str) -> str:
    """``site:<site>:<worker>:<lease>``: what ``evaluation.worker`` holds while the lease does."""
    return f"site:{caller.site}:{worker}:{lease}"


def _lease_of(ev: Evaluation) -> str | None:
    w = ev.worker or ""
    return w.rpartition(":")[2] if w.startswith("site:") else None


def _leased(s: Session, caller: Caller, evaluation_id: int, lease: str) -> Evaluation:
    """The evaluation, checked: in the token's scope (else 404: its existence does not leak), and held by
    ``lease`` of this token (else 409 "lease lost")."""
    ev = s.get(Evaluation, evaluation_id)
    if ev is None or not _in_scope(caller, ev.submission.phase):
        raise SiteError(f"no evaluation {evaluation_id} in this worker token's scope", 404)
    if ev.status not in (EvaluationStatus.RUNNING, EvaluationStatus.SCORING):
        raise SiteError(f"lease lost: evaluation {evaluation_id} is {ev.status.value}", 409)
    held = _lease_of(ev)
    if held != lease or not lease.startswith(f"{caller.token_id}.") or \
            not (ev.worker or "").startswith(f"site:{caller.site}:"):
        raise SiteError(f"lease lost: evaluation {evaluation_id} is held by another lease (re-queued or taken over)",
                        409)
    return ev


# -- the protocol's calls -------------------------------------------------------------------------------

def register_cases(settings: Settings, caller: Caller, req: CasesRequest) -> CasesResponse:
    """Record the site's cases of a phase (keys and checksums; the files stay at the site). A known key with
    other checksums (or a case stored on the server) is refused with 409 and nothing is written.

    Idempotent: workers of one site start together and register the same cases; the request that loses the
    race (a unique-key conflict, or SQLite's stale-snapshot "database is locked") is rolled back and read
    again, then finds the winner's rows unchanged. Up to ``REGISTER_TRIES`` tries with short random pauses."""
    for attempt in range(1, REGISTER_TRIES):
        try:
            return _register_cases_once(settings, caller, req)
        except (IntegrityError, OperationalError) as e:
            if isinstance(e, OperationalError) and "locked" not in str(e.orig):
                raise  # the database away, not a lost race
            time.sleep(random.uniform(0.02, 0.1) * attempt)
    return _register_cases_once(settings, caller, req)


def _register_cases_once(settings: Settings, caller: Caller, req: CasesRequest) -> CasesResponse:
    added = unchanged = 0
    with session_scope(settings.database_url) as s:
        phase = _scoped_phase(s, caller, req.task, req.phase)
        task = phase.task
        known = {c.key: c for c in task.cases}
        in_phase = {c.id for c in phase.cases}  # a set: a phase may hold up to 100,000 cases
        seen: set[str] = set()
        for c in req.cases:
            if c.key in seen:
                raise SiteError(f"case {c.key!r} is listed twice", 400)
            seen.add(c.key)
            sums = {"image": c.image_sha256, "reference": c.reference_sha256}
            old = known.get(c.key)
            if old is not None:
                site_meta = (old.meta or {}).get("site") or {}
                if old.image_path or old.reference_path or site_meta.get("sha256") != sums \
                        or site_meta.get("site") != caller.site:
                    raise SiteError(f"case {c.key!r} of task {task.slug} is known with other files (changed at the "
                                    "site?): the organizer must remove it first (arena task remove-case); nothing "
                                    "was registered", 409)
                if old.id not in in_phase:
                    phase.cases.append(old)
                    added += 1
                else:
                    unchanged += 1
                continue
            case = Case(task=task, key=c.key, image_path="", reference_path="",
                        meta={"site": {"site": caller.site, "sha256": sums}})
            s.add(case)
            phase.cases.append(case)
            added += 1
    return CasesResponse(added=added, unchanged=unchanged)


def _requeue_lapsed(settings: Settings, caller: Caller, conn: Redis) -> list[int]:
    """Re-queue this site's running evaluations whose lease lapsed, by the local workers' sweeper rule
    (:func:`arena.runner.liveness.find_silent`: no heartbeat for ``stale_after_s`` since first seen silent)."""
    from arena.runner.jobs import requeue_evaluation
    from arena.runner.keys import suspects_key
    from arena.runner.liveness import find_silent

    silent = find_silent(settings, conn=conn, worker_prefix=f"site:{caller.site}:")
    if not silent:
        return []
    with session_scope(settings.database_url) as s:
        holders = dict(s.execute(select(Evaluation.id, Evaluation.worker).where(Evaluation.id.in_(silent))).all())
    reason = f"site lease lapsed (no heartbeat for {settings.stale_after_s:g} s)"
    out = []
    for ev_id in silent:
        conn.hdel(suspects_key(settings), ev_id)  # the next lease of it starts with a clean record
        if requeue_evaluation(settings, ev_id, reason, only_worker=holders.get(ev_id)):
            out.append(ev_id)
    return out


def claim(settings: Settings, caller: Caller, worker: str) -> ClaimResponse | None:
    """Hand the oldest queued evaluation of the token's site phases to ``worker`` (None: nothing to do),
    honouring ARENA_TEAM_CONCURRENCY through the same claim local workers use. Lapsed leases of the site are
    re-queued first. The claimed evaluation is ``running`` with a fresh heartbeat."""
    from arena.runner.jobs import _claim
    from arena.runner.liveness import beat

    conn = redis_client(settings.redis_url)
    _requeue_lapsed(settings, caller, conn)
    with session_scope(settings.database_url) as s:
        candidates = list(s.scalars(select(Evaluation.id).join(Submission).join(Phase, Submission.phase_id == Phase.id)
                                    .where(Evaluation.status == EvaluationStatus.QUEUED,
                                           Phase.site_id == caller.site_id,
                                           Phase.id.in_(sorted(caller.phase_ids) or [-1]))
                                    .order_by(Evaluation.id).limit(CLAIM_CANDIDATES)))
    for ev_id in candidates:
        lease = f"{caller.token_id}.{secrets.token_urlsafe(12)}"
        name = worker_name(caller, worker, lease)
        if _claim(settings, ev_id, name, site_id=caller.site_id) != "run":
            continue
        beat(conn, settings, ev_id, name)
        with session_scope(settings.database_url) as s:
            ev = s.get(Evaluation, ev_id)
            sub, phase = ev.submission, ev.submission.phase
            archive = sub.model_archive
            done = {cr.case_id for cr in ev.case_results}
            ev.cases_total = len(phase.cases)
            size = sub.upload_bytes
            if size is None and sub.upload_path and Path(sub.upload_path).is_file():
                size = Path(sub.upload_path).stat().st_size
            return ClaimResponse(
                evaluation=ev.id, lease=lease, heartbeat_s=settings.heartbeat_s, stale_after_s=settings.stale_after_s,
                task=sub.task.slug, phase=phase.slug, submission=sub.id,
                image=ImageRef(sha256=sub.upload_sha256, size=int(size or 0),
                               url=f"/api/v1/site/images/{sub.upload_sha256}"),
                model=None if archive is None else ImageRef(sha256=archive.sha256, size=archive.bytes,
                                                            url=f"/api/v1/site/models/{archive.sha256}"),
                cases=[c.key for c in phase.cases if c.id not in done], cases_total=len(phase.cases),
                done=len(done), spec=sub.task.spec)
    return None


def heartbeat(settings: Settings, caller: Caller, evaluation_id: int, lease: str) -> None:
    """Beat the evaluation's liveness key; SiteError 409 "lease lost" when ``lease`` no longer holds it."""
    from arena.runner.liveness import beat

    with session_scope(settings.database_url) as s:
        worker = _leased(s, caller, evaluation_id, lease).worker
    beat(redis_client(settings.redis_url), settings, evaluation_id, worker)


def image_file(settings: Settings, caller: Caller, sha256: str) -> Path:
    """The stored image tarball with this sha256, for a submission of an evaluation this token holds a lease
    on right now; SiteError 404 otherwise (whether such an image exists does not leak)."""
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(Evaluation).join(Submission).where(
            Submission.upload_sha256 == sha256,
            Evaluation.status.in_([EvaluationStatus.RUNNING, EvaluationStatus.SCORING]),
            Evaluation.worker.startswith(f"site:{caller.site}:", autoescape=True)))
        for ev in rows:
            held_here = (_lease_of(ev) or "").startswith(f"{caller.token_id}.")
            if held_here and _in_scope(caller, ev.submission.phase) and ev.submission.upload_path \
                    and Path(ev.submission.upload_path).is_file():
                return Path(ev.submission.upload_path)
    raise SiteError(f"no image {sha256} for this worker token (only images of evaluations it holds a lease on)",
                    404)


def model_file(settings: Settings, caller: Caller, sha256: str) -> Path:
    """The stored model archive with this sha256, of a submission of an evaluation this token holds a lease
    on right now; SiteError 404 otherwise (as :func:`image_file`)."""
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(Evaluation).join(Submission).join(ModelArchive).where(
            ModelArchive.sha256 == sha256,
            Evaluation.status.in_([EvaluationStatus.RUNNING, EvaluationStatus.SCORING]),
            Evaluation.worker.startswith(f"site:{caller.site}:", autoescape=True)))
        for ev in rows:
            held_here = (_lease_of(ev) or "").startswith(f"{caller.token_id}.")
            archive = ev.submission.model_archive
            if held_here and _in_scope(caller, ev.submission.phase) and Path(archive.path).is_file():
                return Path(archive.path)
    raise SiteError(f"no model archive {sha256} for this worker token (only those of evaluations it holds a "
                    "lease on)", 404)


def _outcome(report: CaseReport):
    """The CaseOutcome a local worker would have made of the same case (output_path: none, the outputs
    stay at the site)."""
    from arena.runner.outcome import CaseOutcome

    try:
        failure = Failure(report.failure) if report.failure else None
    except ValueError:
        raise SiteError(f"unknown failure {report.failure!r} (one of {', '.join(f.value for f in Failure)})", 400)
    try:
        scores = {int(lab): dict(vals) for lab, vals in report.scores.items()}
    except ValueError:
        raise SiteError("scores: label ids must be whole numbers (as strings)", 400)
    return CaseOutcome(ok=report.status == "succeeded", error=report.error, failure=failure,
                       exit_code=report.exit_code, runtime_s=report.runtime_s, log_tail=report.log_tail or "",
                       scores=scores, stats=dict(report.stats))


def record_case(settings: Settings, caller: Caller, evaluation_id: int, key: str, report: CaseReport) -> None:
    """Store one case's outcome, once: SiteError 404 for a key the phase does not have, 409 when the lease is
    not held or the case is already recorded for this evaluation (nothing is overwritten)."""
    from arena.runner.jobs import add_case_result

    out = _outcome(report)
    try:
        with session_scope(settings.database_url) as s:
            ev = _leased(s, caller, evaluation_id, report.lease)
            # two indexed lookups, not the phase's cases and the evaluation's results loaded per report
            # (that made a whole evaluation's reports O(n²) in its case count)
            case_id = s.scalar(select(Case.id).join(phase_cases).where(
                phase_cases.c.phase_id == ev.submission.phase_id, Case.key == key)) \
                if re.fullmatch(CASE_KEY, key) else None
            if case_id is None:
                raise SiteError(f"phase {ev.submission.phase.slug} has no case {key!r}", 404)
            if s.scalar(select(CaseResult.id).where(CaseResult.evaluation_id == ev.id, CaseResult.case_id == case_id)):
                raise SiteError(f"case {key!r} is already recorded for evaluation {evaluation_id}; nothing was "
                                "overwritten", 409)
            add_case_result(s, ev, case_id, out)
            s.flush()
            ev.cases_done = s.scalar(select(func.count(CaseResult.id)).where(CaseResult.evaluation_id == ev.id))
    except IntegrityError:  # another request recorded it between the check and the insert
        raise SiteError(f"case {key!r} is already recorded for evaluation {evaluation_id}; nothing was overwritten",
                        409) from None


def finish(settings: Settings, caller: Caller, evaluation_id: int, req: FinishRequest) -> str:
    """Set the final status by the rule local workers apply (jobs.settle); every case of the phase must be
    recorded first (409 naming the missing ones). Cases the site registered after the claim handed its
    list out: the evaluation is re-queued (its recorded cases kept) so the next claim runs just those, and
    the answer is 409 saying so. Returns the status."""
    from arena.runner.jobs import requeue_evaluation, settle
    from arena.runner.keys import heartbeat_key

    stop = stop_fault = None
    if req.stop is not None:
        try:
            stop = (Failure(req.stop.failure), req.stop.message)
        except ValueError:
            raise SiteError(f"unknown failure {req.stop.failure!r}", 400) from None
        stop_fault = Fault(req.stop.fault)
    added: list[str] = []
    with session_scope(settings.database_url) as s:
        ev = _leased(s, caller, evaluation_id, req.lease)
        cases = ev.submission.phase.cases
        recorded = {cr.case_id for cr in ev.case_results}
        missing = [c.key for c in cases if c.id not in recorded]
        if missing and len(cases) > (ev.cases_total or 0):
            added, holder = missing, ev.worker  # the site registered cases after this claim handed its list out
        elif missing:
            raise SiteError(f"evaluation {evaluation_id}: cases not recorded yet: {', '.join(missing[:10])}", 409)
        else:
            status = settle(s, ev, len(cases), stop, stop_fault or Fault.PARTICIPANT)
    if added:  # its finished cases are kept; the next claim hands out just the new ones
        requeue_evaluation(settings, evaluation_id, f"{len(added)} case(s) added to the phase since the claim",
                           only_worker=holder, counted=False)  # nobody's failure: never gives up on it
        raise SiteError(f"evaluation {evaluation_id}: {len(added)} case(s) were added to the phase since the claim "
                        f"({', '.join(added[:10])}); re-queued to run them (the recorded cases are kept)", 409)
    try:
        redis_client(settings.redis_url).delete(heartbeat_key(settings, evaluation_id))
    except Exception:  # noqa: BLE001 - the key expires on its own
        pass
    return status
