"""Users, teams, passwords and personal API tokens.

A token is shown once; only its sha256 is stored (``api_tokens``), with a name, creation and last-use
times; a revoked token is refused. Passwords are hashed with werkzeug's scrypt.

Sessions end on the server: a user's ``session_generation`` is part of every session and remember
cookie; :func:`end_sessions` bumps it (sign-out, password change, disabling), which signs the user out
of every browser. A disabled user cannot sign in and their tokens are refused. An administrator's
password reset is a one-time password (:func:`set_one_time_password`): it works for a few days and only
to choose a new password.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from arena.models import ApiToken, Task, Team, User, utcnow

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,39}$")
MIN_PASSWORD = 10
ONE_TIME_PASSWORD_DAYS = 3


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_invite_code() -> str:
    return secrets.token_urlsafe(12)


def get_or_create_team(session: Session, name: str, is_reference: bool | None = None) -> Team:
    """The team called ``name`` (created if new); ``is_reference`` marks bundled reference models."""
    team = session.scalar(select(Team).where(Team.name == name))
    if team is None:
        team = Team(name=name, is_reference=bool(is_reference), invite_code=new_invite_code())
        session.add(team)
        session.flush()
    elif is_reference is not None:
        team.is_reference = is_reference
    return team


def create_token(session: Session, user: User, name: str = "cli") -> tuple[ApiToken, str]:
    """A new personal API token for ``user``; returns the row and the token (shown once, never stored)."""
    token = "arena_" + secrets.token_urlsafe(24)
    row = ApiToken(user=user, name=(name or "token")[:100], token_sha256=hash_token(token))
    session.add(row)
    session.flush()
    return row, token


def revoke_token(session: Session, user: User, token_id: int) -> ApiToken:
    """Revoke one of ``user``'s tokens (LookupError if it is not theirs)."""
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise LookupError(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def validate_username(name: str) -> None:
    if not USERNAME.match(name or ""):
        raise ValueError("user names are 2–40 letters, digits, '_', '.' or '-', starting with a letter or digit")


def set_password(user: User, password: str) -> None:
    from werkzeug.security import generate_password_hash

    if len(password or "") < MIN_PASSWORD:
        raise ValueError(f"passwords need at least {MIN_PASSWORD} characters")
    user.password_hash = generate_password_hash(password, method="scrypt")


def check_password(user: User | None, password: str) -> bool:
    from werkzeug.security import check_password_hash

    if user is None or not user.password_hash:
        check_password_hash(_DUMMY_HASH, password or "")  # same work whether or not the user exists
        return False
    ok = check_password_hash(user.password_hash, password or "")
    return ok and (user.password_expires_at is None or user.password_expires_at > utcnow())


def end_sessions(session: Session, user: User) -> None:
    """End every session and remember cookie of ``user``, on every browser: bump their session generation
    in one UPDATE (two requests doing it at once both count)."""
    session.execute(update(User).where(User.id == user.id).values(session_generation=User.session_generation + 1))
    session.refresh(user)


def change_password(session: Session, user: User, password: str) -> None:
    """Set ``user``'s own password (ValueError if too short); ends their other sessions."""
    set_password(user, password)
    user.password_expires_at = None
    session.flush()
    end_sessions(session, user)


def set_one_time_password(session: Session, user: User) -> str:
    """An administrator's reset: a random password that works for ONE_TIME_PASSWORD_DAYS days, only to
    choose a new one; ends the user's sessions. Returns it (shown once, to hand over in person)."""
    password = secrets.token_urlsafe(12)
    set_password(user, password)
    user.password_expires_at = utcnow() + dt.timedelta(days=ONE_TIME_PASSWORD_DAYS)
    session.flush()
    end_sessions(session, user)
    return password


def set_disabled(session: Session, user: User, disabled: bool) -> None:
    """Disable (no sign-in, sessions ended, tokens refused) or enable ``user`` again."""
    user.disabled_at = (user.disabled_at or utcnow()) if disabled else None
    session.flush()
    if disabled:
        end_sessions(session, user)


_DUMMY_HASH = "scrypt:32768:8:1$" + "x" * 16 + "$" + "0" * 128


def create_user(session: Session, name: str, team: str | None = None, is_admin: bool = False,
                email: str | None = None, reference_team: bool | None = None,
                password: str | None = None) -> tuple[User, str]:
    """Create a user (optionally in ``team``, created if needed); returns the user and a new API token."""
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ValueError(f"user {name!r} exists already")
    user = User(name=name, email=email, is_admin=is_admin,
                team=get_or_create_team(session, team, reference_team) if team else None)
    if password is not None:
        set_password(user, password)
    session.add(user)
    session.flush()
    _, token = create_token(session, user, "cli")
    return user, token


def user_for_token(session: Session, token: str) -> User | None:
    """The user a (non-revoked) token belongs to; records when it was last used."""
    if not token:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token)))
    if row is None or row.revoked_at is not None or not row.user.is_active:
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now  # at most one write a minute per token
        session.commit()
    return row.user


def create_team(session: Session, user: User, name: str) -> Team:
    name = (name or "").strip()
    if not 2 <= len(name) <= 100:
        raise ValueError("team names are 2–100 characters")
    if user.team is not None:
        raise ValueError(f"you are in team {user.team.name!r} already; leave it first")
    if session.scalar(select(Team).where(Team.name == name)) is not None:
        raise ValueError(f"a team called {name!r} exists already; ask its members for the invite code")
    team = Team(name=name, invite_code=new_invite_code())
    session.add(team)
    user.team = team
    session.flush()
    return team


def join_team(session: Session, user: User, invite_code: str) -> Team:
    if user.team is not None:
        raise ValueError(f"you are in team {user.team.name!r} already; leave it first")
    team = session.scalar(select(Team).where(Team.invite_code == (invite_code or "").strip())) if invite_code else None
    if team is None or team.is_reference:
        raise ValueError("no team has this invite code (ask a member for the current one)")
    user.team = team
    session.flush()
    return team


def leave_team(session: Session, user: User) -> None:
    """Leave the team; its submissions stay the team's."""
    if user.team is None:
        raise ValueError("you are in no team")
    user.team = None
    session.flush()


def is_organizer(user: User | None, task: Task) -> bool:
    """Admins organize every task; organizers the tasks they are listed on."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    return bool(user.is_admin or any(o.id == user.id for o in task.organizers))
