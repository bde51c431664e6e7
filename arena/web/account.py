"""Accounts: sign up, sign in/out, password change, the team (create, join with an invite code, leave),
API tokens. Sign-out ends the user's sessions on the server (every browser); sign-in and sign-up are
rate-limited (see :func:`arena.web.auth.signin_limits`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from flask_login import login_required, login_user, logout_user
from flask_login.config import COOKIE_NAME
from sqlalchemy import select

from arena import audit
from arena.models import RateCounter, Submission, User
from arena.users import (
    change_password,
    check_password,
    create_team,
    create_token,
    end_sessions,
    join_team,
    leave_team,
    new_invite_code,
    revoke_token,
    set_password,
    validate_username,
)
from arena.web.auth import (
    SIGNIN_WINDOW_S,
    SIGNUP_WINDOW_S,
    client_address,
    me,
    rate_give_back,
    rate_take,
    rate_take_all,
    signin_limits,
)

account = Blueprint("account", __name__)


def _safe_next(default: str) -> str:
    target = request.values.get("next") or ""
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith("//") and not parts.netloc and not parts.scheme:
        return target
    return default


@account.route("/signup", methods=["GET", "POST"])
def signup():
    error = None
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        password = request.form.get("password", "")
        email = request.form.get("email", "").strip() or None
        limit = current_app.config["ARENA"].signup_rate
        if rate_take(g.db, f"signup:ip:{client_address()}", SIGNUP_WINDOW_S) > limit:
            return render_template("signup.html", error=f"Too many sign-ups from your address (at most {limit} "
                                   "an hour): try again later."), 429
        try:
            validate_username(name)
            if g.db.scalar(select(User).where(User.name == name)) is not None:
                raise ValueError(f"the name {name!r} is taken")
            if password != request.form.get("password2", ""):
                raise ValueError("the two passwords differ")
            user = User(name=name, email=email)
            set_password(user, password)
            g.db.add(user)
            g.db.flush()
            audit.record(g.db, user, "user.signup", "user", user.id)
            g.db.commit()
        except ValueError as e:
            error = str(e)
        else:
            login_user(user)
            flash(f"Welcome, {user.name}. Create a team or join one to submit.")
            return redirect(url_for("account.home"))
    return render_template("signup.html", error=error), 400 if error else 200


@account.route("/signin", methods=["GET", "POST"])
def signin():
    error = None
    status = 200
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        counted = rate_take_all(g.db, signin_limits(current_app.config["ARENA"], name, client_address()),
                                SIGNIN_WINDOW_S)
        if counted is None:
            error, status = "Too many failed sign-ins: wait 15 minutes and try again.", 429
        else:
            user = g.db.scalar(select(User).where(User.name == name))
            if check_password(user, request.form.get("password", "")):
                ip_key, pair_key, account_key = counted
                rate_give_back(g.db, ip_key)  # a correct password is no failure
                rate_give_back(g.db, account_key)
                g.db.execute(RateCounter.__table__.delete().where(RateCounter.key == pair_key))
                g.db.commit()
                if not user.is_active:
                    return render_template("signin.html", error="This account is disabled: ask an "
                                           "administrator."), 403
                login_user(user, remember=bool(request.form.get("remember")))
                return redirect(_safe_next(url_for("account.home")))
            audit.record(g.db, None, "user.signin_failed", "user", name[:100], address=client_address())
            g.db.commit()
            error, status = "Unknown user name or wrong password.", 401
    return render_template("signin.html", error=error), status


@account.post("/signout")
def signout():
    """Sign out of every browser: the session generation changes, so no copy of this session or of a
    remember cookie opens a page again."""
    user = me()
    if user is not None:
        end_sessions(g.db, user)
        audit.record(g.db, user, "user.signout", "user", user.id)
        g.db.commit()
    logout_user()
    return redirect(url_for("pages.index"))


@account.route("/account/password", methods=["GET", "POST"])
@login_required
def password():
    """Change your password (also the way out of an administrator's one-time password). Every other
    session of the account ends; this browser stays signed in."""
    user = me()
    error = None
    if request.method == "POST":
        try:
            if not check_password(user, request.form.get("current", "")):
                raise ValueError("the current password is wrong")
            new = request.form.get("password", "")
            if new != request.form.get("password2", ""):
                raise ValueError("the two new passwords differ")
            if new == request.form.get("current", ""):
                raise ValueError("choose a password different from the current one")
            change_password(g.db, user, new)
            audit.record(g.db, user, "user.password_change", "user", user.id)
            g.db.commit()
        except ValueError as e:
            g.db.rollback()
            error = str(e)
        else:
            login_user(user, remember=current_app.config.get("REMEMBER_COOKIE_NAME", COOKIE_NAME) in request.cookies)
            flash("Password changed. Other browsers signed in to this account are signed out.")
            return redirect(url_for("account.home"))
    return render_template("password.html", user=user, error=error), 400 if error else 200


@account.get("/account")
@login_required
def home():
    user = me()
    subs = []
    if user.team_id is not None:
        subs = g.db.scalars(select(Submission).where(Submission.team_id == user.team_id)
                            .order_by(Submission.id.desc()).limit(50)).all()
    return render_template("account.html", user=user, subs=subs, new_token=None)


@account.post("/account/team")
@login_required
def team():
    user = me()
    action = request.form.get("action")
    try:
        if action == "create":
            t = create_team(g.db, user, request.form.get("name", ""))
            audit.record(g.db, user, "team.create", "team", t.id, name=t.name)
            flash(f"Team {t.name} created. Invite members with the code below.")
        elif action == "join":
            t = join_team(g.db, user, request.form.get("code", ""))
            audit.record(g.db, user, "team.join", "team", t.id)
            flash(f"You joined {t.name}.")
        elif action == "leave":
            t = user.team
            leave_team(g.db, user)
            audit.record(g.db, user, "team.leave", "team", t.id if t else None)
            flash("You left the team. Its submissions stay with it.")
        elif action == "new-code" and user.team is not None:
            user.team.invite_code = new_invite_code()
            flash("New invite code: the old one no longer works.")
        else:
            abort(400, description="unknown team action")
        g.db.commit()
    except ValueError as e:
        g.db.rollback()
        flash(str(e), "error")
    return redirect(url_for("account.home"))


@account.post("/account/tokens")
@login_required
def new_token():
    user = me()
    row, token = create_token(g.db, user, request.form.get("name", "").strip() or "token")
    audit.record(g.db, user, "token.create", "api_token", row.id, name=row.name)
    g.db.commit()
    subs = []
    return render_template("account.html", user=user, subs=subs, new_token=token)


@account.post("/account/tokens/<int(max=2147483647):token_id>/revoke")
@login_required
def revoke(token_id: int):
    user = me()
    try:
        row = revoke_token(g.db, user, token_id)
    except LookupError:
        abort(404, description="no such token")
    audit.record(g.db, user, "token.revoke", "api_token", row.id)
    g.db.commit()
    flash(f"Token {row.name!r} revoked.")
    return redirect(url_for("account.home"))
