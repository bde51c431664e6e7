"""JSON API (/api/v1).

Authentication: ``Authorization: Bearer <token>`` (a personal API token). Read-only requests from a
signed-in browser session work too. Lists are paginated (``?page=1&per_page=20``, at most 100) and come
as ``{"items": [...], "page", "per_page", "total", "next"}``. Errors: ``{"error": "<what to fix>"}``
with a 4xx status. The OpenAPI 3 document: ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import json
import math
import re
from functools import partial

from flask import Blueprint, Response, abort, current_app, g, jsonify, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from arena import audit
from arena.lifecycle import EvaluationStatus
from arena.models import Evaluation, Submission, Task, User
from arena.submissions.intake import UploadError, quota, store_model_archive
from arena.tasks.spec import SLUG
from arena.tasks.store import spec_of
from arena.users import create_token, is_organizer, revoke_token, user_for_token
from arena.web import board_cache
from arena.web.auth import bearer_token, can_view_board, can_view_submission, organizer_tasks, visible_submission_view
from arena.web.boards import frozen_board, leaderboard, result_version, submission_standing
from arena.web.training import training_response, training_summary
from arena.web.uploads import TOKEN_NAME_MAX, accept_upload, text_problem
from arena.web.views import listed_status

api = Blueprint("api", __name__)


def _error(message: str, status: int):
    resp = jsonify(error=message)
    resp.status_code = status
    return resp


def _current_user() -> User | None:
    token = bearer_token()
    if token:
        return user_for_token(g.db, token)
    if request.method in ("GET", "HEAD") and current_user and current_user.is_authenticated:
        return current_user  # a signed-in browser reading (polling a status); writes need a token
    return None


def _require_user() -> User:
    if request.headers.get("Authorization") and not bearer_token():
        abort(401, description="malformed Authorization header: send 'Authorization: Bearer <token>'")
    user = _current_user()
    if user is None:
        if bearer_token():
            abort(401, description="unknown or revoked API token: create a new one on your account page")
        abort(401, description="missing API token: send 'Authorization: Bearer <token>' (arena login)")
    return user


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, description=f"query parameter {name!r} must be an integer from {lo} to {hi}, got {raw!r}")
    if not lo <= value <= hi:
        abort(400, description=f"query parameter {name!r} must be from {lo} to {hi}, got {value}")
    return value


def _paginate(query, count_query, to_dict, endpoint: str, **values):
    page = _int_arg("page", 1, 1, 10**6)
    per_page = _int_arg("per_page", 20, 1, 100)
    total = g.db.scalar(count_query) or 0
    items = [to_dict(x) for x in g.db.scalars(query.limit(per_page).offset((page - 1) * per_page))]
    nxt = url_for(endpoint, page=page + 1, per_page=per_page, **values) if page * per_page < total else None
    return jsonify(items=items, page=page, per_page=per_page, total=total, next=nxt)


def _task(slug: str) -> Task:
    task = g.db.scalar(select(Task).where(Task.slug == slug)) if re.fullmatch(SLUG, slug) else None
    return task or abort(404, description=f"no task {slug!r} (GET /api/v1/tasks lists them)")


@api.before_request
def _refuse_nul() -> None:
    """A NUL anywhere in the path or query is refused before any route sees it (PostgreSQL refuses it in a
    query parameter with an error, not an empty result)."""
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.args.items(multi=True)):
        abort(400, description="NUL characters are not allowed in the URL")


@api.get("/me")
def get_me():
    user = _require_user()
    return jsonify(id=user.id, name=user.name, is_admin=user.is_admin,
                   team={"id": user.team.id, "name": user.team.name} if user.team else None,
                   organizes=[t.slug for t in organizer_tasks(user)])


@api.get("/tasks")
def list_tasks():
    def as_dict(t: Task):
        return {"slug": t.slug, "title": t.title, "kind": t.kind, "phases": [p.slug for p in t.phases],
                "cases": len(t.cases)}

    return _paginate(select(Task).order_by(Task.slug), select(func.count(Task.id)), as_dict, "api.list_tasks")


@api.get("/tasks/<slug>")
def get_task(slug: str):
    task = _task(slug)
    spec = spec_of(task)
    user = _current_user()
    phases = []
    for p in task.phases:
        d = {"slug": p.slug, "title": p.title, "cases": len(p.cases),
             "submission_limit": p.submission_limit if p.submission_limit is not None
             else spec.phase(p.slug).submission_limit,
             "opens_at": _iso(p.opens_at), "closes_at": _iso(p.closes_at), "visibility": p.visibility,
             "accepting": p.accepting() is None, "board_public": p.board_public()}
        if user is not None and user.team is not None:
            limit, used = quota(g.db, task, p, user.team)
            d["quota_left"] = max(0, limit - used)
        phases.append(d)
    training = training_summary(task)
    if training is not None:
        training["url"] = url_for("api.get_training_data", slug=task.slug)
    return jsonify({"slug": task.slug, "title": task.title, "kind": task.kind, "spec": task.spec, "phases": phases,
                    "training_data": training})


@api.get("/tasks/<slug>/training-data")
def get_training_data(slug: str):
    """The task's training data: an uncompressed tar streamed with its Content-Length (any signed-in user)."""
    _require_user()
    return training_response(_task(slug))


def _iso(v):
    return v.isoformat() + "Z" if v is not None else None


@api.post("/tasks/<slug>/phases/<phase>/submissions")
def submit(slug: str, phase: str):
    """Upload a ``docker save`` tarball (optionally gzipped) as the raw request body.

    Streams to disk in 1 MiB chunks. Query: ``label`` (algorithm name/version), ``filename``.
    Returns 202 with the submission; its intake and evaluation run on the workers.
    """
    user = _require_user()
    return accept_upload(user, slug, phase, request.args.get("label"), request.args.get("filename"),
                         request.args.get("model"))


@api.post("/models")
def upload_model():
    """Upload a model archive (a tar or tar.gz of the model's files) as the raw request body; it is checked
    (regular files and directories only, no links, no paths out, size caps) and stored once per content for
    your team. A submission names it with ``?model=<sha256>``; it is extracted read-only at /opt/ml/model."""
    user = _require_user()
    if user.team is None:
        return _error(f"user {user.name!r} is in no team; join one first", 403)
    settings = current_app.config["ARENA"]
    try:
        archive = store_model_archive(g.db, settings, user.team, request.stream)
        g.db.commit()
    except UploadError as e:
        g.db.rollback()
        return _error(str(e), e.status)
    audit.record(g.db, user, "model.upload", "model_archive", archive.id, sha256=archive.sha256, bytes=archive.bytes)
    g.db.commit()
    return jsonify(sha256=archive.sha256, bytes=archive.bytes, unpacked_bytes=archive.unpacked_bytes,
                   files=archive.files), 201


def _submission_summary(s: Submission, viewer: User) -> dict:
    return {"id": s.id, "task": s.task.slug, "phase": s.phase.slug, "team": s.team.name, "label": s.label,
            "status": listed_status(s, viewer), "created_at": _iso(s.created_at)}


@api.get("/submissions")
def list_submissions():
    """Your team's submissions; an organizer's also include every submission to their tasks."""
    user = _require_user()
    q = select(Submission)
    cq = select(func.count(Submission.id))
    conds = []
    if not user.is_admin:
        organized = [t.id for t in organizer_tasks(user)]
        own = Submission.team_id == user.team_id if user.team_id is not None else None
        org = Submission.task_id.in_(organized) if organized else None
        parts = [c for c in (own, org) if c is not None]
        if not parts:
            return jsonify(items=[], page=1, per_page=20, total=0, next=None)
        from sqlalchemy import or_

        conds.append(or_(*parts))
    values = {}
    if "task" in request.args:  # an empty or unknown task is a 404, not "every task"
        conds.append(Submission.task_id == _task(request.args["task"]).id)
        values["task"] = request.args["task"]
    for c in conds:
        q, cq = q.where(c), cq.where(c)
    q = q.options(selectinload(Submission.evaluations), selectinload(Submission.team)).order_by(Submission.id.desc())
    return _paginate(q, cq, partial(_submission_summary, viewer=user), "api.list_submissions", **values)


def _visible_submission(submission_id: int) -> tuple[Submission, User]:
    user = _require_user()
    sub = g.db.get(Submission, submission_id)
    if sub is None or not can_view_submission(user, sub):
        abort(404, description=f"no submission {submission_id} that you can see (your team's, or a task you "
                               "organize)")
    return sub, user


@api.get("/submissions/<int(max=2147483647):submission_id>")
def get_submission(submission_id: int):
    """The submission as its viewer may see it, with ``standing``: its score and rank on the board (what the
    submission page shows on top; ``note`` says why one is missing)."""
    sub, user = _visible_submission(submission_id)
    return jsonify({**visible_submission_view(sub, user),
                    "standing": submission_standing(g.db, sub, is_organizer(user, sub.task))})


@api.get("/submissions/<int(max=2147483647):submission_id>/results")
def get_results(submission_id: int):
    """Per case, per label: every metric and the run statistics (?format=csv for CSV)."""
    from arena.web.export import result_rows, to_csv

    sub, user = _visible_submission(submission_id)
    view = visible_submission_view(sub, user)
    shown = {ev["id"] for ev in view["evaluations"] if "cases" in ev}
    rows = result_rows([sub], evaluation_ids=shown)
    fmt = request.args.get("format", "json")
    if fmt == "csv":
        return Response(to_csv(rows), mimetype="text/csv")
    if fmt != "json":
        abort(400, description="format must be 'json' or 'csv'")
    return jsonify(submission_id=sub.id, rows=rows, hidden=len(shown) < len(view["evaluations"]))


@api.post("/submissions/<int(max=2147483647):submission_id>/evaluations")
def rerun(submission_id: int):
    """Organizers: evaluate a submission again (a new evaluation; earlier results stay)."""
    from arena.runner.jobs import create_evaluation

    user = _require_user()
    sub = g.db.get(Submission, submission_id)
    if sub is None:
        abort(404, description=f"no submission {submission_id}")
    if not is_organizer(user, sub.task):
        abort(403, description="only organizers can re-run evaluations")
    try:
        ev_id = create_evaluation(current_app.config["ARENA"], sub.id)
    except ValueError as e:
        return _error(str(e), 409)
    except Exception as e:
        return _error(f"the queue is unreachable: {e}", 503)
    audit.record(g.db, user, "evaluation.rerun", "submission", sub.id, evaluation_id=ev_id)
    g.db.commit()
    return jsonify({"evaluation_id": ev_id, "submission_id": sub.id}), 202


def _evaluation_dict(e: Evaluation) -> dict:
    from arena.models import utcnow

    return {"id": e.id, "submission_id": e.submission_id, "task": e.submission.task.slug,
            "phase": e.submission.phase.slug, "team": e.submission.team.name, "status": e.status.value,
            "cases_done": e.cases_done, "cases_total": e.cases_total, "worker": e.worker,
            "created_at": _iso(e.created_at), "age_s": round((utcnow() - e.created_at).total_seconds(), 1)}


@api.get("/evaluations")
def list_evaluations():
    """The queue (organizers): every evaluation of the tasks you organize, newest first; ?status= filters."""
    user = _require_user()
    tasks = [t.id for t in organizer_tasks(user)]
    if not tasks:
        abort(403, description="only organizers see the queue")
    q = select(Evaluation).join(Submission, Submission.id == Evaluation.submission_id)
    cq = select(func.count(Evaluation.id)).join(Submission, Submission.id == Evaluation.submission_id)
    conds = [Submission.task_id.in_(tasks)]
    values = {}
    status = request.args.get("status")
    if status is not None:  # an empty status is refused like any other unknown one
        try:
            conds.append(Evaluation.status == EvaluationStatus(status))
        except ValueError:
            abort(400, description=f"status must be one of {[s.value for s in EvaluationStatus]}, got {status!r}")
        values["status"] = status
    for c in conds:
        q, cq = q.where(c), cq.where(c)
    return _paginate(q.order_by(Evaluation.id.desc()), cq, _evaluation_dict, "api.list_evaluations", **values)


@api.post("/evaluations/<int(max=2147483647):evaluation_id>/cancel")
def cancel(evaluation_id: int):
    """Organizers: cancel a queued or running evaluation (its results so far are kept)."""
    from arena.runner.cancel import cancel_evaluation

    user = _require_user()
    ev = g.db.get(Evaluation, evaluation_id)
    if ev is None:
        abort(404, description=f"no evaluation {evaluation_id}")
    if not is_organizer(user, ev.submission.task):
        abort(403, description="only organizers can cancel evaluations")
    g.db.rollback()  # let the cancel see and change the row in its own transaction
    try:
        res = cancel_evaluation(current_app.config["ARENA"], evaluation_id)
    except ValueError as e:
        return _error(str(e), 409)
    audit.record(g.db, user, "evaluation.cancel", "evaluation", evaluation_id, previous=res.previous_status,
                 job=res.job, containers=res.containers_stopped)
    g.db.commit()
    return jsonify(evaluation_id=evaluation_id, status="cancelled", previous_status=res.previous_status,
                   job=res.job, containers_stopped=res.containers_stopped)


@api.get("/tokens")
def list_tokens():
    user = _require_user()
    return jsonify(items=[{"id": t.id, "name": t.name, "created_at": _iso(t.created_at),
                           "last_used_at": _iso(t.last_used_at), "revoked_at": _iso(t.revoked_at)}
                          for t in user.tokens])


@api.post("/tokens")
def new_token():
    """A new personal token (shown once in the response). JSON body: {"name": "..."} (optional)."""
    user = _require_user()
    body = request.get_json(silent=True) if request.get_data(cache=True).strip() else {}
    if not isinstance(body, dict):
        abort(400, description='the body must be empty or a JSON object such as {"name": "laptop"} '
                               "(Content-Type: application/json)")
    name = body.get("name", "token")
    if not isinstance(name, str) or not name or text_problem("name", name, TOKEN_NAME_MAX):
        abort(400, description=f"name must be a string of 1 to {TOKEN_NAME_MAX} characters, none of them control "
                               "characters")
    row, token = create_token(g.db, user, name)
    audit.record(g.db, user, "token.create", "api_token", row.id, name=row.name)
    g.db.commit()
    return jsonify(id=row.id, name=row.name, token=token), 201


@api.delete("/tokens/<int(max=2147483647):token_id>")
def delete_token(token_id: int):
    user = _require_user()
    try:
        row = revoke_token(g.db, user, token_id)
    except LookupError:
        abort(404, description=f"no token {token_id} of yours")
    audit.record(g.db, user, "token.revoke", "api_token", row.id)
    g.db.commit()
    return jsonify(id=row.id, revoked_at=_iso(row.revoked_at))


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat() + "Z"
    return v.item() if hasattr(v, "item") else v


@api.get("/tasks/<slug>/leaderboard")
def get_leaderboard(slug: str):
    """The phase's board as JSON. Requests without a user (no token, no signed-in session) all get the same
    answer: served pre-rendered with gzip and an ETag (:mod:`arena.web.board_cache`)."""
    phase_arg = request.args.get("phase")
    if not request.headers.get("Authorization") and _current_user() is None:
        seen: dict = {}

        def check():
            seen["task"], seen["phase"] = task, phase = _leaderboard_phase(slug, phase_arg, None)
            state = (phase.id, task.updated_at, board_cache.phase_times(phase), board_cache.board_state(phase))
            return state, board_cache.seconds_to_phase_change(phase)

        return board_cache.cached_response(("leaderboard", slug, phase_arg), check,
                                           lambda: _leaderboard_json(seen["task"], seen["phase"], None),
                                           "application/json")
    user = _current_user()
    task, phase = _leaderboard_phase(slug, phase_arg, user)
    return current_app.response_class(_leaderboard_json(task, phase, user), mimetype="application/json")


def _leaderboard_phase(slug: str, phase_arg: str | None, user: User | None):
    """(task, phase) of a board request; 404 for an unknown task or phase and for a board ``user`` may not
    see."""
    task = _task(slug)
    phase_slug = phase_arg or (task.phases[0].slug if task.phases else "")
    phase = next((p for p in task.phases if p.slug == phase_slug), None)
    if phase is None:
        abort(_error(f"task {slug!r} has no phase {phase_slug!r} (phases: {[p.slug for p in task.phases]})", 404))
    if not can_view_board(user, phase):
        abort(404, description=f"the board of phase {phase.slug!r} is hidden until it is revealed")
    return task, phase


def _leaderboard_json(task: Task, phase, user: User | None) -> str:
    """The board of ``phase`` as ``user`` may see it, as JSON text: the frozen snapshot while frozen (but for
    organizers), else the live board (its text cached per result version)."""
    if phase.frozen() and not is_organizer(user, task):
        return jsonify(task=task.slug, phase=phase.slug, primary=spec_of(task).ranking.primary,
                       frozen_at=_iso(phase.frozen_at), rows=frozen_board(phase)).get_data(as_text=True)
    key = (phase.id, result_version(g.db, phase))
    body = _BOARD_JSON.get(key)
    if body is None:
        board = leaderboard(g.db, task, phase)
        rows = [{k: _clean(v) for k, v in row.items()} for row in board.table.to_dict(orient="records")]
        body = json.dumps({"task": task.slug, "phase": phase.slug, "primary": board.spec.ranking.primary,
                           "rows": rows})
        if len(_BOARD_JSON) > 64:
            _BOARD_JSON.clear()
        _BOARD_JSON[key] = body
    return body


@api.get("/openapi.json")
def openapi():
    from arena.web.openapi import document

    return jsonify(document(request.host_url.rstrip("/") + "/api/v1"))


_BOARD_JSON: dict[tuple, str] = {}
