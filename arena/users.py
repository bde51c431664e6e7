"""Users, teams and API tokens (the token is shown once; only its sha256 is stored)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from arena.models import Team, User


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def get_or_create_team(session: Session, name: str, is_reference: bool | None = None) -> Team:
    """The team called ``name`` (created if new); ``is_reference`` marks bundled reference models."""
    team = session.scalar(select(Team).where(Team.name == name))
    if team is None:
        team = Team(name=name, is_reference=bool(is_reference))
        session.add(team)
        session.flush()
    elif is_reference is not None:
        team.is_reference = is_reference
    return team


def create_user(session: Session, name: str, team: str | None = None, is_admin: bool = False,
                email: str | None = None, reference_team: bool | None = None) -> tuple[User, str]:
    """Create a user (optionally in ``team``, created if needed); returns the user and a new API token."""
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ValueError(f"user {name!r} exists already")
    token = "arena_" + secrets.token_urlsafe(24)
    user = User(name=name, email=email, is_admin=is_admin, token_sha256=hash_token(token),
                team=get_or_create_team(session, team, reference_team) if team else None)
    session.add(user)
    session.flush()
    return user, token


def user_for_token(session: Session, token: str) -> User | None:
    if not token:
        return None
    return session.scalar(select(User).where(User.token_sha256 == hash_token(token)))
