"""Accounts: sign up, sign in/out, the team (create, join with an invite code, leave), API tokens."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import login_required, login_user, logout_user
from sqlalchemy import select

from arena import audit
from arena.auth import client_address, me, over_limit, rate_hit, signin_limit
from arena.models import Submission, User
from arena.users import (check_password, create_team, create_token, join_team, leave_team, new_invite_code,
                         revoke_token, set_password, validate_username)

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
        keys = [f"signin:name:{name.lower()}", f"signin:ip:{client_address()}"]
        if over_limit(g.db, keys, signin_limit()):
            error, status = "Too many failed sign-ins: wait 15 minutes and try again.", 429
        else:
            user = g.db.scalar(select(User).where(User.name == name))
            if check_password(user, request.form.get("password", "")):
                login_user(user, remember=bool(request.form.get("remember")))
                return redirect(_safe_next(url_for("account.home")))
            for k in keys:
                rate_hit(g.db, k)
            audit.record(g.db, None, "user.signin_failed", "user", name[:100], address=client_address())
            g.db.commit()
            error, status = "Unknown user name or wrong password.", 401
    return render_template("signin.html", error=error), status


@account.post("/signout")
def signout():
    logout_user()
    return redirect(url_for("pages.index"))


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
