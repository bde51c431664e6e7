"""Sign-in sessions (Flask-Login), CSRF (Flask-WTF), API tokens, rate limits and who may see what.

- Pages: a session cookie (HttpOnly, SameSite=Lax, Secure with ARENA_SECURE_COOKIES=1); every POST form
  carries a CSRF token (``csrf_token()`` in templates; ``X-CSRFToken`` header for the upload XHR).
- API: ``Authorization: Bearer <token>``; CSRF-exempt because browsers never attach it by themselves.
  A page request may also authenticate with a Bearer token (scripts, tests).
- Rate limits: counted in the database (``rate_hits``) so every web worker shares them.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import wraps

from flask import Flask, abort, g, redirect, request, url_for
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import delete, func, select

from arena.models import RateHit, Submission, Task, User, utcnow
from arena.users import is_organizer, user_for_token

login_manager = LoginManager()
csrf = CSRFProtect()

SIGNIN_LIMIT = (10, 15 * 60)  # failed sign-ins per user name (and per address) per 15 minutes
UPLOAD_LIMIT = (6, 60)  # uploads per user per minute (beside the phase's daily quota)


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else ""


def init_auth(app: Flask) -> None:
    secure = os.environ.get("ARENA_SECURE_COOKIES", "").strip().lower() in ("1", "true", "yes")
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_NAME="arena_session",
        REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax", REMEMBER_COOKIE_SECURE=secure,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(days=14),
        WTF_CSRF_TIME_LIMIT=None, WTF_CSRF_SSL_STRICT=secure,
    )
    login_manager.init_app(app)
    login_manager.login_view = "account.signin"
    login_manager.login_message = "Sign in to see this page."
    csrf.init_app(app)

    @login_manager.user_loader
    def _load(user_id: str) -> User | None:
        return g.db.get(User, int(user_id)) if user_id.isdigit() else None

    @login_manager.request_loader
    def _from_bearer(req) -> User | None:
        token = bearer_token()
        return user_for_token(g.db, token) if token else None


def me() -> User | None:
    """The signed-in user (session or Bearer token), or None for a viewer."""
    return current_user if current_user and current_user.is_authenticated else None


def admin_required(view):
    @wraps(view)
    def wrapper(*a, **kw):
        user = me()
        if user is None:
            return redirect(url_for("account.signin", next=request.full_path))
        if not user.is_admin:
            abort(403, description="only administrators can do this")
        return view(*a, **kw)
    return wrapper


def organizer_tasks(user: User | None) -> list[Task]:
    if user is None:
        return []
    if user.is_admin:
        return list(g.db.scalars(select(Task).order_by(Task.slug)))
    return sorted(user_tasks_organized(user), key=lambda t: t.slug)


def user_tasks_organized(user: User) -> list[Task]:
    from arena.models import task_organizers

    return list(g.db.scalars(select(Task).join(task_organizers, task_organizers.c.task_id == Task.id)
                             .where(task_organizers.c.user_id == user.id)))


def require_organizer(task: Task) -> User:
    user = me()
    if user is None:
        abort(401, description="sign in as an organizer of this task")
    if not is_organizer(user, task):
        abort(403, description=f"only organizers of {task.slug!r} can do this")
    return user


def can_view_submission(user: User | None, sub: Submission) -> bool:
    """Members of the submitting team, the task's organizers and admins; nobody else."""
    if user is None:
        return False
    return bool(user.team_id is not None and user.team_id == sub.team_id) or is_organizer(user, sub.task)


def visible_submission_view(sub: Submission, user: User | None) -> dict:
    from arena.web.views import submission_view

    organizer = is_organizer(user, sub.task)
    return submission_view(sub, viewer_is_organizer=organizer,
                           hide_scores=not organizer and sub.phase.scores_hidden_from_teams())


def can_view_board(user: User | None, phase) -> bool:
    return phase.board_public() or is_organizer(user, phase.task)


# -- rate limits -------------------------------------------------------------------------------
def client_address() -> str:
    return request.remote_addr or "?"


def rate_count(session, key: str, window_s: float) -> int:
    since = utcnow() - dt.timedelta(seconds=window_s)
    return session.scalar(select(func.count(RateHit.id)).where(RateHit.key == key, RateHit.at >= since)) or 0


def rate_hit(session, key: str) -> None:
    session.add(RateHit(key=key[:200]))
    if os.urandom(1)[0] < 3:  # now and then, forget hits older than a day
        session.execute(delete(RateHit).where(RateHit.at < utcnow() - dt.timedelta(days=1)))


def over_limit(session, keys: list[str], limit: tuple[int, float]) -> bool:
    return any(rate_count(session, k, limit[1]) >= limit[0] for k in keys)


def upload_rate_limited(session, user: User) -> str | None:
    """Count an upload attempt of ``user``; a message when over the per-minute limit (nothing counted)."""
    n, window = upload_limit()
    key = f"upload:user:{user.id}"
    if rate_count(session, key, window) >= n:
        return f"too many uploads: at most {n} per {window:g} s per user; wait a minute and retry"
    rate_hit(session, key)
    session.commit()
    return None


def upload_limit() -> tuple[int, float]:
    return int(os.environ.get("ARENA_UPLOAD_RATE", UPLOAD_LIMIT[0])), UPLOAD_LIMIT[1]


def signin_limit() -> tuple[int, float]:
    return int(os.environ.get("ARENA_SIGNIN_RATE", SIGNIN_LIMIT[0])), SIGNIN_LIMIT[1]
