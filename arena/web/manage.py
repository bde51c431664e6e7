"""Organizer pages: tasks from task.yaml, cases from a server folder (listed, removed, moved), phase
schedule, freeze and reveal, quotas, visibility, the queue (cancel, re-run), exports and the audit trail;
for administrators, the users (one-time password reset, disable, enable)."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.orm import selectinload

from arena import audit
from arena.disclosure import OUTCOMES
from arena.lifecycle import EvaluationStatus
from arena.models import PHASE_VISIBILITY, AuditEvent, Evaluation, Phase, Submission, Task, User, utcnow
from arena.tasks.case_admin import CaseAdminError, list_cases, move_case, remove_case
from arena.tasks.case_check import CaseCheckError
from arena.tasks.importing import LAYOUT_HELP, import_cases
from arena.tasks.spec import TaskSpecError, load_spec
from arena.tasks.store import spec_of, upsert_task
from arena.users import ONE_TIME_PASSWORD_DAYS, set_disabled, set_one_time_password
from arena.web import export
from arena.web.auth import admin_required, me, organizer_tasks, require_organizer
from arena.web.boards import snapshot_board

manage = Blueprint("manage", __name__)


@manage.before_request
def _signed_in():
    if me() is None:
        return redirect(url_for("account.signin", next=request.full_path))
    return None


def _task(slug: str) -> Task:
    task = g.db.scalar(select(Task).where(Task.slug == slug))
    if task is None:
        abort(404, description=f"no task {slug!r}")
    require_organizer(task)
    return task


@manage.get("/")
def index():
    user = me()
    tasks = organizer_tasks(user)
    if not tasks and not user.is_admin:
        abort(403, description="you organize no task; an administrator can add you to one")
    return render_template("manage/index.html", tasks=tasks, errors=None)


# -- tasks ------------------------------------------------------------------------------------
def _tasks_root() -> Path:
    root = current_app.config["ARENA"].home / "tasks"
    root.mkdir(parents=True, exist_ok=True)
    return root


@manage.post("/tasks")
def upload_task():
    """Create or update a task from an uploaded task.yaml (and optional literature CSV)."""
    user = me()
    f = request.files.get("task_yaml")
    if f is None or not f.filename:
        return _index_error(["choose a task.yaml file to upload"])
    data = f.read(256 * 1024 + 1)
    if len(data) > 256 * 1024:
        return _index_error(["task.yaml is larger than 256 KiB"])
    try:
        import yaml

        raw = yaml.safe_load(data.decode("utf-8", "replace"))
        slug = raw.get("slug") if isinstance(raw, dict) else None
    except Exception:
        slug = None
    import re

    folder = slug if isinstance(slug, str) and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", slug) else "task"
    with tempfile.TemporaryDirectory(dir=_tasks_root(), prefix=".upload-") as tmp:
        tmp_dir = Path(tmp) / folder  # the spec wants its folder named after its slug
        tmp_dir.mkdir()
        (tmp_dir / "task.yaml").write_bytes(data)
        lit = request.files.get("literature")
        existing = g.db.scalar(select(Task).where(Task.slug == slug)) if isinstance(slug, str) else None
        if existing is not None:
            require_organizer(existing)
            old_dir = Path(existing.spec_path)
            if old_dir.is_dir():  # keep the task's other files (literature.csv, samples) beside the new yaml
                for p in old_dir.iterdir():
                    if p.is_file() and p.name != "task.yaml":
                        shutil.copyfile(p, tmp_dir / p.name)
        elif not user.is_admin:
            abort(403, description="only administrators create new tasks")
        if lit is not None and lit.filename:
            name = Path(lit.filename).name
            if not name.endswith(".csv"):
                return _index_error(["the literature file must be a .csv"])
            lit.save(tmp_dir / name)
        try:
            spec = load_spec(tmp_dir)
        except TaskSpecError as e:
            return _index_error([p.replace(str(tmp_dir / "task.yaml"), "task.yaml") for p in e.problems])
        dest = _tasks_root() / spec.slug
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(tmp_dir, dest)
    task = upsert_task(g.db, dest)
    audit.record(g.db, user, "task.upload", "task", task.slug, created=existing is None, title=task.title,
                 phases=[p.slug for p in task.phases])
    g.db.commit()
    closed = [p.slug for p in task.phases if p.accepting() or p.visibility != "public"]
    flash(f"Task {task.slug} {'created' if existing is None else 'updated'} from task.yaml."
          + (f" Closed or not public: {', '.join(closed)} (new phases start closed and hidden unless task.yaml sets "
             "opens and visibility; open them below)." if closed and existing is None else ""))
    return redirect(url_for("manage.task", slug=task.slug))


def _index_error(errors: list[str]):
    return render_template("manage/index.html", tasks=organizer_tasks(me()), errors=errors), 400


@manage.get("/tasks/<slug>")
def task(slug: str):
    return _render_task(_task(slug))


def _when(name: str) -> dt.datetime | None:
    raw = (request.form.get(name) or "").strip()
    if not raw:
        return None
    try:
        return dt.datetime.fromisoformat(raw.replace("Z", "")).replace(tzinfo=None, second=0, microsecond=0)
    except ValueError:
        abort(400, description=f"{name}: expected a date and time like 2026-05-01T12:00 (UTC), got {raw!r}")


@manage.post("/tasks/<slug>/phases/<phase_slug>")
def phase(slug: str, phase_slug: str):
    """Schedule, quota, visibility, freeze and reveal of one phase; or a quick action (open/close/freeze/reveal now)."""
    task = _task(slug)
    user = me()
    ph = next((p for p in task.phases if p.slug == phase_slug), None) or abort(404, description="no such phase")
    now = utcnow().replace(second=0, microsecond=0)
    action = request.form.get("action", "save")
    before = {k: getattr(ph, k) for k in ("opens_at", "closes_at", "submission_limit", "visibility", "frozen_at",
                                           "reveal_at")}
    if action == "open-now":
        ph.opens_at, ph.closes_at = now, (ph.closes_at if ph.closes_at and ph.closes_at > now else None)
    elif action == "close-now":
        ph.closes_at = now
    elif action == "freeze-now":
        ph.frozen_at = now
        if ph.reveal_at and ph.reveal_at <= now:
            ph.reveal_at = None
        snapshot_board(ph)
    elif action == "reveal-now":
        ph.reveal_at = now
    elif action == "save":
        ph.opens_at, ph.closes_at = _when("opens_at"), _when("closes_at")
        if ph.opens_at and ph.closes_at and ph.closes_at <= ph.opens_at:
            abort(400, description="the phase must close after it opens")
        limit = (request.form.get("submission_limit") or "").strip()
        if limit:
            if not limit.isdigit() or int(limit) > 10000:
                abort(400, description="submission limit: a whole number from 0 to 10000, or empty for task.yaml's")
            ph.submission_limit = int(limit)
        else:
            ph.submission_limit = None
        visibility = request.form.get("visibility", ph.visibility)
        if visibility not in PHASE_VISIBILITY:
            abort(400, description=f"visibility must be one of {PHASE_VISIBILITY}")
        ph.visibility = visibility
        frozen_at = _when("frozen_at")
        if frozen_at != ph.frozen_at:
            ph.frozen_board = None  # the snapshot is taken at the first look after the freeze begins
            if frozen_at and frozen_at <= now:
                ph.frozen_at = frozen_at
                snapshot_board(ph)
        ph.frozen_at = frozen_at
        ph.reveal_at = _when("reveal_at")
    else:
        abort(400, description="unknown phase action")
    after = {k: getattr(ph, k) for k in before}
    changed = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    kinds = {"open-now": "phase.open", "close-now": "phase.close", "freeze-now": "phase.freeze",
             "reveal-now": "phase.reveal"}
    name = kinds.get(action, "phase.update")
    if action == "save" and set(changed) == {"visibility"}:
        name = "phase.visibility"
    audit.record(g.db, user, name, "phase", f"{task.slug}/{ph.slug}", changes=changed)
    g.db.commit()
    flash(f"Phase {ph.slug}: " + ("; ".join(f"{k} → {v[1] if v[1] is not None else '—'}" for k, v in changed.items())
                                  or "nothing changed"))
    return redirect(url_for("manage.task", slug=task.slug))


@manage.post("/tasks/<slug>/organizers")
def organizers(slug: str):
    task = _task(slug)
    user = me()
    if not user.is_admin:
        abort(403, description="only administrators choose a task's organizers")
    name = request.form.get("name", "").strip()
    other = g.db.scalar(select(User).where(User.name == name))
    if other is None:
        flash(f"no user {name!r}", "error")
        return redirect(url_for("manage.task", slug=slug))
    if request.form.get("action") == "remove":
        if other in task.organizers:
            task.organizers.remove(other)
        audit.record(g.db, user, "task.organizer_remove", "task", slug, user=other.name)
    elif other not in task.organizers:
        task.organizers.append(other)
        audit.record(g.db, user, "task.organizer_add", "task", slug, user=other.name)
    g.db.commit()
    return redirect(url_for("manage.task", slug=slug))


# -- cases ------------------------------------------------------------------------------------
def _import_roots() -> list[Path]:
    """Folders organizers may load cases from: ARENA_IMPORT_ROOTS (':'-separated), default ARENA_HOME/import."""
    settings = current_app.config["ARENA"]
    return [r.resolve() for r in (settings.import_roots or (settings.home / "import",))]


def _render_task(task: Task, case_errors: list[str] | None = None, status: int = 200):
    spec = spec_of(task)
    counts = dict(g.db.execute(select(Submission.phase_id, func.count(Submission.id))
                               .where(Submission.task_id == task.id).group_by(Submission.phase_id)).all())
    return render_template("manage/task.html", task=task, spec=spec, counts=counts, visibilities=PHASE_VISIBILITY,
                           import_roots=_import_roots(), case_errors=case_errors, now=utcnow(),
                           case_rows=list_cases(g.db, task), label_names={k: v.name for k, v in spec.labels.items()},
                           layout_help=LAYOUT_HELP, outcomes=OUTCOMES), status


@manage.post("/tasks/<slug>/cases")
def load_cases(slug: str):
    """Import a server folder's cases (:func:`arena.tasks.importing.import_cases`: all checked, then all
    written, or none); the phases from the checkboxes, or per case from an uploaded case,phase CSV."""
    task = _task(slug)
    user = me()
    settings = current_app.config["ARENA"]
    raw = (request.form.get("folder") or "").strip()
    phases = [p.slug for p in task.phases if p.slug in request.form.getlist("phases")]
    csv_upload = request.files.get("phases_csv")
    errors = []
    folder = Path(raw).resolve() if raw else None
    if folder is None:
        errors.append("give the folder's path on the server")
    elif not any(folder == r or r in folder.parents for r in _import_roots()):
        errors.append(f"{raw}: not below an import folder ({', '.join(map(str, _import_roots()))}; "
                      "set ARENA_IMPORT_ROOTS to allow others)")
    elif not folder.is_dir():
        errors.append(f"{raw}: no such folder on the server")
    has_csv = csv_upload is not None and bool(csv_upload.filename)
    if not phases and not has_csv:
        errors.append("choose at least one phase for the cases, or upload a case,phase CSV")
    if errors:
        return _render_task(task, errors, 400)
    with tempfile.TemporaryDirectory(prefix="arena-phases-") as tmp:
        csv_path = None
        if has_csv:
            csv_path = Path(tmp) / "phases.csv"
            data = csv_upload.read(1024 * 1024 + 1)
            if len(data) > 1024 * 1024:
                return _render_task(task, ["the phases CSV is larger than 1 MiB"], 400)
            csv_path.write_bytes(data)
        try:
            res = import_cases(g.db, settings, task, folder, phases, csv_path, meta={"imported_by": user.name})
        except CaseCheckError as e:
            g.db.rollback()
            problems = [p.replace(str(csv_path), f"phases CSV {csv_upload.filename}") if csv_path else p
                        for p in e.problems]
            return _render_task(_task(slug), problems, 400)
    audit.record(g.db, user, "task.cases_load", "task", task.slug, folder=str(folder), cases=res.loaded,
                 phases=sorted({p for ps in res.phases.values() for p in ps}))
    g.db.commit()
    by_phase: dict[str, int] = {}
    for k in res.loaded:
        for p in res.phases[k]:
            by_phase[p] = by_phase.get(p, 0) + 1
    flash(f"Loaded {len(res.loaded)} case(s) (" + ", ".join(f"{n} into {p}" for p, n in sorted(by_phase.items()))
          + f"): {', '.join(res.loaded[:10])}" + (" …" if len(res.loaded) > 10 else "")
          + (f"; replaced {len(res.replaced)}" if res.replaced else ""))
    return redirect(url_for("manage.task", slug=slug, _anchor="cases"))


@manage.post("/tasks/<slug>/cases/<key>/remove")
def remove_case_view(slug: str, key: str):
    """Remove one case (rows and stored files); a scored case only with ``force`` (its results go too)."""
    task = _task(slug)
    force = request.form.get("force") == "1"
    try:
        n = remove_case(g.db, current_app.config["ARENA"], task, key, force=force)
    except CaseAdminError as e:
        g.db.rollback()
        return _render_task(_task(slug), [f"{e}; nothing was removed"], 400)
    audit.record(g.db, me(), "task.case_remove", "task", task.slug, case=key, results_deleted=n)
    g.db.commit()
    flash(f"Case {key} removed" + (f" with {n} result(s)." if n else "."))
    return redirect(url_for("manage.task", slug=slug, _anchor="case-list"))


@manage.post("/tasks/<slug>/cases/<key>/move")
def move_case_view(slug: str, key: str):
    """Move one case into the phase ``to`` (out of the others); a scored case only with ``force``."""
    task = _task(slug)
    to = request.form.get("to") or ""
    try:
        left = move_case(g.db, task, key, to, force=request.form.get("force") == "1")
    except CaseAdminError as e:
        g.db.rollback()
        return _render_task(_task(slug), [f"{e}; nothing was moved"], 400)
    audit.record(g.db, me(), "task.case_move", "task", task.slug, case=key, to=to, left=left)
    g.db.commit()
    flash(f"Case {key} moved to {to}" + (f" (out of {', '.join(left)})." if left else "."))
    return redirect(url_for("manage.task", slug=slug, _anchor="case-list"))


# -- queue ------------------------------------------------------------------------------------
@manage.get("/queue")
def queue():
    user = me()
    tasks = organizer_tasks(user)
    if not tasks:
        abort(403, description="only organizers see the queue")
    status = request.args.get("status") or ""
    page = max(1, request.args.get("page", 1, type=int) or 1)
    per_page = 50
    q = (select(Evaluation).join(Submission, Submission.id == Evaluation.submission_id)
         .where(Submission.task_id.in_([t.id for t in tasks])))
    if status:
        try:
            q = q.where(Evaluation.status == EvaluationStatus(status))
        except ValueError:
            abort(400, description=f"unknown status {status!r}")
    total = g.db.scalar(select(func.count()).select_from(q.subquery()))
    evs = g.db.scalars(q.options(selectinload(Evaluation.submission)).order_by(Evaluation.id.desc())
                       .limit(per_page).offset((page - 1) * per_page)).all()
    counts = dict(g.db.execute(select(Evaluation.status, func.count(Evaluation.id))
                               .join(Submission, Submission.id == Evaluation.submission_id)
                               .where(Submission.task_id.in_([t.id for t in tasks])).group_by(Evaluation.status)).all())
    return render_template("manage/queue.html", evs=evs, status=status, page=page, per_page=per_page, total=total,
                           counts={(k.value if hasattr(k, "value") else k): v for k, v in counts.items()},
                           statuses=[s.value for s in EvaluationStatus], now=utcnow())


@manage.post("/evaluations/<int(max=2147483647):evaluation_id>/cancel")
def cancel(evaluation_id: int):
    from arena.runner.cancel import cancel_evaluation

    ev = g.db.get(Evaluation, evaluation_id) or abort(404, description="no such evaluation")
    user = me()
    require_organizer(ev.submission.task)
    g.db.rollback()
    try:
        res = cancel_evaluation(current_app.config["ARENA"], evaluation_id)
    except ValueError as e:
        flash(str(e), "error")
        return redirect(request.referrer or url_for("manage.queue"))
    audit.record(g.db, user, "evaluation.cancel", "evaluation", evaluation_id, previous=res.previous_status,
                 job=res.job, containers=res.containers_stopped)
    g.db.commit()
    flash(f"Evaluation {evaluation_id} cancelled (was {res.previous_status}; job {res.job}"
          + (f"; stopped {len(res.containers_stopped)} container(s)" if res.containers_stopped else "") + ").")
    return redirect(request.referrer or url_for("manage.queue"))


@manage.post("/submissions/<int(max=2147483647):submission_id>/rerun")
def rerun(submission_id: int):
    from arena.runner.jobs import create_evaluation

    sub = g.db.get(Submission, submission_id) or abort(404, description="no such submission")
    user = me()
    require_organizer(sub.task)
    try:
        ev_id = create_evaluation(current_app.config["ARENA"], sub.id)
    except (ValueError, LookupError) as e:
        flash(str(e), "error")
        return redirect(request.referrer or url_for("manage.queue"))
    except Exception as e:
        flash(f"the queue is unreachable: {e}", "error")
        return redirect(request.referrer or url_for("manage.queue"))
    audit.record(g.db, user, "evaluation.rerun", "submission", sub.id, evaluation_id=ev_id)
    g.db.commit()
    flash(f"Submission {sub.id}: evaluation {ev_id} queued (earlier results kept).")
    return redirect(request.referrer or url_for("manage.queue"))


# -- users (administrators) --------------------------------------------------------------------
@manage.get("/users")
@admin_required
def users():
    rows = g.db.scalars(select(User).options(selectinload(User.team)).order_by(User.name)).all()
    return render_template("manage/users.html", users=rows, one_time=None, now=utcnow())


@manage.post("/users/<int(max=2147483647):user_id>")
@admin_required
def user_action(user_id: int):
    """``action``: ``reset`` (a one-time password, shown once on the answer: hand it over in person),
    ``disable`` or ``enable``. Reset and disable end the user's sessions."""
    admin = me()
    user = g.db.get(User, user_id) or abort(404, description="no such user")
    action = request.form.get("action")
    one_time = None
    if action == "reset":
        one_time = set_one_time_password(g.db, user)
        audit.record(g.db, admin, "user.password_reset", "user", user.id, name=user.name)
    elif action in ("disable", "enable"):
        if user.id == admin.id:
            abort(400, description="you cannot disable yourself")
        set_disabled(g.db, user, action == "disable")
        audit.record(g.db, admin, f"user.{action}", "user", user.id, name=user.name)
        flash(f"{user.name} {action}d" + (": signed out everywhere, tokens refused." if action == "disable" else "."))
    else:
        abort(400, description="unknown user action")
    g.db.commit()
    if one_time is None:
        return redirect(url_for("manage.users"))
    rows = g.db.scalars(select(User).options(selectinload(User.team)).order_by(User.name)).all()
    return render_template("manage/users.html", users=rows, now=utcnow(),
                           one_time={"user": user.name, "password": one_time, "days": ONE_TIME_PASSWORD_DAYS})


# -- exports and audit ------------------------------------------------------------------------
@manage.get("/tasks/<slug>/export/<kind>.<fmt>")
def export_rows(slug: str, kind: str, fmt: str):
    task = _task(slug)
    if kind not in export.KINDS or fmt not in ("csv", "json"):
        abort(404, description=f"exports: {', '.join(export.KINDS)} as .csv or .json")
    rows = export.rows_for(g.db, task, kind)
    body = export.to_csv(rows) if fmt == "csv" else export.to_json(rows)
    return Response(body, mimetype="text/csv" if fmt == "csv" else "application/json",
                    headers={"Content-Disposition": f"attachment; filename={slug}-{kind}.{fmt}"})


AUDIT_PER_PAGE = 50


def _audit_day(name: str) -> dt.datetime | None:
    """The ``name`` query argument as a day (YYYY-MM-DD, UTC midnight); None when empty; 400 otherwise."""
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return dt.datetime.strptime(raw, "%Y-%m-%d")
    except ValueError:
        abort(400, description=f"{name}: expected a day like 2026-05-01, got {raw!r}")


@manage.get("/audit")
def audit_log():
    """The audit trail, newest first, filtered and paged in the database: ``action`` (one action, or a kind
    ending in "." such as ``phase.``), ``user`` (the actor's name), ``target`` (a target id, e.g. a task's
    slug with its phases ``slug/phase``), ``since`` / ``until`` (days, UTC, both included), ``page`` (50
    events a page). Administrators see every event; organizers the events of their tasks and their own."""
    user = me()
    tasks = [] if user.is_admin else organizer_tasks(user)
    if not user.is_admin and not tasks:
        abort(403, description="only organizers see the audit trail")
    scope = []
    if not user.is_admin:
        mine, task_ids = [t.slug for t in tasks], [t.id for t in tasks]
        # a co-organizer's cancel or re-run names an evaluation or a submission of the task, not the task
        their_subs = select(cast(Submission.id, String)).join(Phase, Submission.phase_id == Phase.id) \
            .where(Phase.task_id.in_(task_ids))
        their_evs = select(cast(Evaluation.id, String)).join(Submission).join(Phase, Submission.phase_id == Phase.id) \
            .where(Phase.task_id.in_(task_ids))
        scope.append(or_(AuditEvent.target_type.in_(["task", "phase"])
                         & or_(AuditEvent.target_id.in_(mine),
                               *[AuditEvent.target_id.startswith(f"{slug}/", autoescape=True) for slug in mine]),
                         (AuditEvent.target_type == "submission") & AuditEvent.target_id.in_(their_subs),
                         (AuditEvent.target_type == "evaluation") & AuditEvent.target_id.in_(their_evs),
                         AuditEvent.actor_user_id == user.id))
    f = {k: (request.args.get(k) or "").strip() for k in ("action", "user", "target", "since", "until")}
    where = list(scope)
    if f["action"]:
        where.append(AuditEvent.action.startswith(f["action"], autoescape=True) if f["action"].endswith(".")
                     else AuditEvent.action == f["action"])
    if f["user"]:
        where.append(AuditEvent.actor_user_id.in_(select(User.id).where(User.name == f["user"])))
    if f["target"]:
        where.append(or_(AuditEvent.target_id == f["target"],
                         AuditEvent.target_id.startswith(f"{f['target']}/", autoescape=True)))
    since, until = _audit_day("since"), _audit_day("until")
    if since:
        where.append(AuditEvent.at >= since)
    if until:
        where.append(AuditEvent.at < until + dt.timedelta(days=1))
    page = max(1, request.args.get("page", 1, type=int) or 1)
    total = g.db.scalar(select(func.count(AuditEvent.id)).where(*where))
    events = g.db.scalars(select(AuditEvent).where(*where).options(selectinload(AuditEvent.actor))
                          .order_by(AuditEvent.id.desc()).limit(AUDIT_PER_PAGE)
                          .offset((page - 1) * AUDIT_PER_PAGE)).all()
    actions = g.db.scalars(select(AuditEvent.action).where(*scope).distinct().order_by(AuditEvent.action)).all()
    kinds = sorted({a.split(".")[0] + "." for a in actions if "." in a})
    return render_template("manage/audit.html", events=events, total=total, page=page, per_page=AUDIT_PER_PAGE,
                           filters=f, actions=actions, kinds=kinds,
                           args={k: v for k, v in f.items() if v})
