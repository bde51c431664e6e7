"""Sign-in sessions (Flask-Login), CSRF (Flask-WTF), API tokens, rate limits and who may see what.

- Pages: a session cookie (HttpOnly, SameSite=Lax, Secure with ARENA_SECURE_COOKIES=1); every POST form
  carries a CSRF token (``csrf_token()`` in templates; ``X-CSRFToken`` header for the upload XHR).
- API: ``Authorization: Bearer <token>``; CSRF-exempt because browsers never attach it by themselves.
  A page request may also authenticate with a Bearer token (scripts, tests).
- Sessions end on the server: sessions and remember cookies hold the user's session generation
  (``User.get_id``), checked on every request; sign-out, a password change and disabling bump it.
- Rate limits: counted in the database (``rate_counters``, one atomic statement per attempt) so every
  web worker shares them and parallel requests cannot slip past them. Sign-ins are limited per
  (account, address), per address and per account: see :func:`signin_limits`.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import wraps

from flask import Flask, abort, current_app, flash, g, redirect, request, url_for
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from arena.config import Settings
from arena.models import RateCounter, Submission, Task, User, utcnow
from arena.users import is_organizer, user_for_token

login_manager = LoginManager()
csrf = CSRFProtect()

SIGNIN_WINDOW_S = 15 * 60  # sign-in failures are counted in fixed 15-minute windows
SIGNUP_WINDOW_S = 60 * 60
UPLOAD_WINDOW_S = 60


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else ""


def init_auth(app: Flask) -> None:
    """Sessions, remember cookies, CSRF and the one-time-password gate for ``app``."""
    settings: Settings = app.config["ARENA"]
    secure = settings.secure_cookies
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_NAME="arena_session",
        REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax", REMEMBER_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_DURATION=dt.timedelta(days=settings.remember_days),
        PERMANENT_SESSION_LIFETIME=dt.timedelta(days=settings.remember_days),
        WTF_CSRF_TIME_LIMIT=None, WTF_CSRF_SSL_STRICT=secure,
    )
    login_manager.init_app(app)
    login_manager.login_view = "account.signin"
    login_manager.login_message = "Sign in to see this page."
    csrf.init_app(app)

    @login_manager.user_loader
    def _load(session_id: str) -> User | None:
        return user_for_session(g.db, session_id)

    @login_manager.request_loader
    def _from_bearer(req) -> User | None:
        token = bearer_token()
        return user_for_token(g.db, token) if token else None

    @app.before_request
    def _one_time_password_gate():
        """A browser signed in with a one-time password may only choose a new one (or sign out)."""
        if request.endpoint in ("static", "account.password", "account.signout") or bearer_token():
            return None
        user = me()
        if user is not None and user.password_expires_at is not None:
            flash("Choose your own password to go on: the one you signed in with works only once.")
            return redirect(url_for("account.password"))
        return None


def user_for_session(session, session_id: str) -> User | None:
    """The user a session or remember cookie names (``"<id>:<generation>"``, see ``User.get_id``), if that
    generation is still theirs and the account is not disabled; None otherwise (signed out everywhere)."""
    user_id, _, generation = session_id.partition(":")
    if not (user_id.isdigit() and generation.isdigit()):
        return None  # includes cookies from before session generations: sign in again
    user = session.get(User, int(user_id))
    if user is None or not user.is_active or user.session_generation != int(generation):
        return None
    return user


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
    """The client's address: the TCP peer, or X-Forwarded-For's when ARENA_PROXY_HOPS trusts proxies
    (werkzeug's ProxyFix, set up in create_app); a forged header is ignored otherwise."""
    return request.remote_addr or "?"


def rate_take(session: Session, key: str, window_s: float) -> int:
    """Count one attempt under ``key`` in its current fixed window of ``window_s`` seconds and return the
    count including it. One statement (INSERT … ON CONFLICT DO UPDATE … RETURNING, on SQLite and
    PostgreSQL), committed at once: parallel attempts each get a count of their own, none is lost."""
    now = utcnow()
    stale = RateCounter.window_start <= now - dt.timedelta(seconds=window_s)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (insert(RateCounter).values(key=key[:200], window_start=now, n=1)
            .on_conflict_do_update(index_elements=[RateCounter.key],
                                   set_={"n": case((stale, 1), else_=RateCounter.n + 1),
                                         "window_start": case((stale, now), else_=RateCounter.window_start)})
            .returning(RateCounter.n))
    n = session.execute(stmt).scalar_one()
    if os.urandom(1)[0] < 3:  # now and then, forget counters whose window ended a day ago
        session.execute(delete(RateCounter).where(RateCounter.window_start < now - dt.timedelta(days=1)))
    session.commit()
    return n


def rate_give_back(session: Session, key: str) -> None:
    """Un-count one attempt under ``key`` (it turned out not to count: a correct password)."""
    session.execute(update(RateCounter).where(RateCounter.key == key[:200], RateCounter.n > 0)
                    .values(n=RateCounter.n - 1))


def rate_take_all(session: Session, limits: list[tuple[str, int]], window_s: float) -> list[str] | None:
    """Count an attempt under each ``(key, limit)`` in order; the keys counted, or None as soon as one is
    over its limit (the earlier ones are given back, the later ones never counted, so an attempt refused
    for one key does not use up another's allowance)."""
    taken: list[str] = []
    for key, limit in limits:
        if rate_take(session, key, window_s) > limit:
            for k in taken:
                rate_give_back(session, k)
            session.commit()
            return None
        taken.append(key)
    return taken


def signin_limits(settings: Settings, name: str, address: str) -> list[tuple[str, int]]:
    """The counters a sign-in attempt on ``name`` from ``address`` goes through, in order.

    - per address, all accounts (ARENA_SIGNIN_ADDRESS_RATE): one address cannot try many accounts;
    - per (account, address) (ARENA_SIGNIN_RATE): the brute-force limit; it locks this pair only, so
      failures on alice from one address neither lock bob out nor alice signing in from elsewhere;
    - per account, all addresses (ARENA_SIGNIN_ACCOUNT_RATE, high): a guesser spread over many addresses.
      Since one address adds at most ARENA_SIGNIN_RATE to it, locking an account out takes
      ARENA_SIGNIN_ACCOUNT_RATE / ARENA_SIGNIN_RATE addresses (10 by default), for 15 minutes.
    """
    account = name.lower()[:100]
    return [(f"signin:ip:{address}", settings.signin_address_rate),
            (f"signin:pair:{account}|{address}", settings.signin_rate),
            (f"signin:name:{account}", settings.signin_account_rate)]


def upload_rate_limited(session: Session, user: User) -> str | None:
    """Count an upload attempt of ``user``; a message when over the per-minute limit (ARENA_UPLOAD_RATE)."""
    n = current_app.config["ARENA"].upload_rate
    if rate_take(session, f"upload:user:{user.id}", UPLOAD_WINDOW_S) > n:
        return f"too many uploads: at most {n} per {UPLOAD_WINDOW_S} s per user; wait a minute and retry"
    return None
