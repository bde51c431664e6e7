"""Taking an upload, shared by the API and the browser: checks, a quota slot reserved before the body is
read, the body streamed to disk, the submission recorded and its intake queued. Also the free-text rules
the API and its OpenAPI document share."""

from __future__ import annotations

import re
import time
from typing import Callable

from flask import current_app, g, jsonify, request, url_for

from arena.config import Settings
from arena.models import User
from arena.submissions.intake import (
    UploadError,
    create_submission,
    find_model_archive,
    find_task_phase,
    refresh_slot,
    release_slot,
    reserve_slot,
    store_upload,
)
from arena.web.auth import upload_rate_limited, visible_submission_view

# Free text a user sends (labels, file names, token names): no control characters (PostgreSQL cannot store
# NUL; the others only garble pages and logs). The OpenAPI document states the same pattern.
PLAIN_TEXT = r"^[^\x00-\x1f\x7f-\x9f]*$"
LABEL_MAX, FILENAME_MAX, TOKEN_NAME_MAX = 200, 300, 100  # the columns' lengths


def text_problem(name: str, value: str | None, max_len: int) -> str | None:
    """Why ``value`` is not acceptable as ``name`` (more than ``max_len`` characters, or a control
    character), or None when it is (None is)."""
    if value is not None and (len(value) > max_len or not re.fullmatch(PLAIN_TEXT, value)):
        return f"{name} must be at most {max_len} characters, none of them control characters"
    return None



def _error(message: str, status: int):
    resp = jsonify(error=message)
    resp.status_code = status
    return resp


def accept_upload(user: User, slug: str, phase_slug: str, label: str | None, filename: str | None,
                  model: str | None = None):
    """Shared by the API and the browser upload: checks, a quota slot reserved, then the body streamed to
    disk, then intake. The slot is given back whatever stops the upload (refusal, abort, invalid archive)."""
    settings = current_app.config["ARENA"]
    reservation = None
    try:
        task, phase = find_task_phase(g.db, slug, phase_slug)  # fail fast, before reading the body
        problem = text_problem("label", label, LABEL_MAX) or text_problem("filename", filename, FILENAME_MAX)
        if problem:
            raise UploadError(problem)
        if request.content_length == 0:
            raise UploadError("the upload is empty: send the image tarball as the request body")
        if model and user.team is not None:
            find_model_archive(g.db, user.team, model)  # fail fast, before reading the body
        reservation = reserve_slot(g.db, settings, task, phase, user)
        limited = upload_rate_limited(g.db, user)
        if limited:
            raise UploadError(limited, 429)
        upload = store_upload(request.stream, settings, progress=_keep_alive(settings, reservation))
        try:
            sub = create_submission(g.db, slug, phase_slug, user, upload, upload_name=filename, label=label,
                                    settings=settings, reservation=reservation, model=model)
            g.db.commit()
            reservation = None  # it is the submission now
        except BaseException:
            upload.path.unlink(missing_ok=True)
            raise
    except UploadError as e:
        g.db.rollback()
        return _error(str(e), e.status)
    finally:
        if reservation is not None:
            release_slot(g.db, reservation)
    from arena.runner.jobs import enqueue_intake

    try:
        enqueue_intake(settings, sub.id)
    except Exception as e:  # Redis down: the upload is kept, an organizer can re-queue
        return _error(f"submission {sub.id} stored, but the queue is unreachable: {e}", 503)
    body = visible_submission_view(sub, user)
    body["url"] = url_for("pages.submission", submission_id=sub.id, _external=True)
    return jsonify(body), 202


def _keep_alive(settings: Settings, reservation: int) -> Callable[[int], None]:
    """A progress callback for store_upload that refreshes the upload's quota reservation now and then."""
    last = time.monotonic()

    def progress(_n: int) -> None:
        nonlocal last
        if time.monotonic() - last > settings.upload_reservation_s / 4:
            refresh_slot(g.db, settings, reservation)
            last = time.monotonic()

    return progress
