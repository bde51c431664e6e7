"""JSON API (/api/v1). Authenticated with ``Authorization: Bearer <token>`` where it changes things."""

from __future__ import annotations

import json
import math

from flask import Blueprint, abort, current_app, g, jsonify, request, url_for
from sqlalchemy import select

from arena.leaderboard.query import leaderboard, result_version
from arena.models import Submission, Task, User
from arena.runner.jobs import create_evaluation, enqueue_intake
from arena.submissions.intake import UploadError, create_submission, find_task_phase, store_upload
from arena.tasks.store import spec_of
from arena.users import user_for_token
from arena.web.views import submission_view

api = Blueprint("api", __name__)


def _error(message: str, status: int):
    resp = jsonify(error=message)
    resp.status_code = status
    return resp


def _current_user() -> User | None:
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    return user_for_token(g.db, token)


def _require_user() -> User:
    user = _current_user()
    if user is None:
        abort(401, description="missing or unknown API token (send 'Authorization: Bearer <token>')")
    return user


@api.get("/tasks")
def list_tasks():
    tasks = g.db.scalars(select(Task).order_by(Task.slug)).all()
    return jsonify([{"slug": t.slug, "title": t.title, "kind": t.kind, "phases": [p.slug for p in t.phases],
                     "cases": len(t.cases)} for t in tasks])


@api.get("/tasks/<slug>")
def get_task(slug: str):
    task = g.db.scalar(select(Task).where(Task.slug == slug)) or abort(404, description=f"no task {slug!r}")
    spec = spec_of(task)
    return jsonify({"slug": task.slug, "title": task.title, "spec": task.spec,
                    "phases": [{"slug": p.slug, "title": p.title, "cases": len(p.cases),
                                "submission_limit": spec.phase(p.slug).submission_limit} for p in task.phases]})


@api.post("/tasks/<slug>/phases/<phase>/submissions")
def submit(slug: str, phase: str):
    """Upload a ``docker save`` tarball (optionally gzipped) as the raw request body.

    Streams to disk in 1 MiB chunks. Query: ``label`` (algorithm name/version), ``filename``.
    Returns 202 with the submission; its intake and evaluation run on the workers.
    """
    settings = current_app.config["ARENA"]
    user = _require_user()
    try:
        find_task_phase(g.db, slug, phase)  # fail fast, before reading the body
        if request.content_length == 0:
            raise UploadError("the upload is empty: send the image tarball as the request body")
        upload = store_upload(request.stream, settings)
        try:
            sub = create_submission(g.db, slug, phase, user, upload, upload_name=request.args.get("filename"),
                                    label=request.args.get("label"), settings=settings)
            g.db.commit()
        except BaseException:
            upload.path.unlink(missing_ok=True)
            raise
    except UploadError as e:
        return _error(str(e), e.status)
    try:
        enqueue_intake(settings, sub.id)
    except Exception as e:  # Redis down: the upload is kept, an organizer can re-queue
        return _error(f"submission {sub.id} stored, but the queue is unreachable: {e}", 503)
    body = submission_view(sub)
    body["url"] = url_for("pages.submission", submission_id=sub.id, _external=True)
    return jsonify(body), 202


@api.get("/submissions/<int:submission_id>")
def get_submission(submission_id: int):
    sub = g.db.get(Submission, submission_id) or abort(404, description=f"no submission {submission_id}")
    user = _current_user()
    return jsonify(submission_view(sub, viewer_is_organizer=bool(user and user.is_admin)))


@api.post("/submissions/<int:submission_id>/evaluations")
def rerun(submission_id: int):
    """Organizers: evaluate a submission again (a new evaluation; earlier results stay)."""
    user = _require_user()
    if not user.is_admin:
        abort(403, description="only organizers can re-run evaluations")
    sub = g.db.get(Submission, submission_id) or abort(404, description=f"no submission {submission_id}")
    try:
        ev_id = create_evaluation(current_app.config["ARENA"], sub.id)
    except ValueError as e:
        return _error(str(e), 409)
    return jsonify({"evaluation_id": ev_id, "submission_id": sub.id}), 202


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat() + "Z"
    return v.item() if hasattr(v, "item") else v


@api.get("/tasks/<slug>/leaderboard")
def get_leaderboard(slug: str):
    task = g.db.scalar(select(Task).where(Task.slug == slug)) or abort(404, description=f"no task {slug!r}")
    phase_slug = request.args.get("phase") or task.phases[0].slug
    try:
        _, phase = find_task_phase(g.db, slug, phase_slug)
    except UploadError as e:
        return _error(str(e), e.status)
    key = (phase.id, result_version(g.db, phase))
    body = _BOARD_JSON.get(key)
    if body is None:
        board = leaderboard(g.db, task, phase)
        rows = [{k: _clean(v) for k, v in row.items()} for row in board.table.to_dict(orient="records")]
        body = json.dumps({"task": slug, "phase": phase.slug, "primary": board.spec.ranking.primary, "rows": rows})
        if len(_BOARD_JSON) > 64:
            _BOARD_JSON.clear()
        _BOARD_JSON[key] = body
    return current_app.response_class(body, mimetype="application/json")


_BOARD_JSON: dict[tuple, str] = {}
