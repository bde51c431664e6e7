"""``arena user add|passwd``: users, teams and passwords."""

from __future__ import annotations

import sys

import click

from arena.cli.root import _fail, main
from arena.config import load_settings


@main.group()
def user() -> None:
    """Manage users and teams."""


@user.command("add")
@click.argument("name")
@click.option("--team", help="team to put the user in (created if new)")
@click.option("--admin", is_flag=True, help="an organizer: sees hidden logs, can re-run")
@click.option("--reference", is_flag=True, help="the team's entries are reference models (badge 'reference')")
def user_add(name: str, team: str | None, admin: bool, reference: bool) -> None:
    """Create a user and print their API token (shown once)."""
    from arena.db import session_scope, upgrade
    from arena.users import create_user

    settings = load_settings()
    upgrade(settings.database_url)
    try:
        with session_scope(settings.database_url) as s:
            _, token = create_user(s, name, team=team, is_admin=admin, reference_team=reference or None)
    except ValueError as e:
        _fail(str(e))
    click.echo(token)


@user.command("passwd")
@click.argument("name")
def user_passwd(name: str) -> None:
    """Set NAME's password, so they (a CLI-made admin, say) can sign in to the web pages.

    At a terminal it is asked twice, hidden; otherwise it is read from the first line of standard input
    (for scripts: ``printf '%s\\n' "$PW" | arena user passwd alice``). Never on the command line, where
    other users of the machine could read it. Every session of NAME ends; API tokens are kept.
    """
    from sqlalchemy import select

    from arena import audit
    from arena.db import session_scope, upgrade
    from arena.models import User
    from arena.users import change_password

    settings = load_settings()
    upgrade(settings.database_url)
    if sys.stdin.isatty():
        password = click.prompt(f"New password for {name}", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        with session_scope(settings.database_url) as s:
            row = s.scalar(select(User).where(User.name == name))
            if row is None:
                raise ValueError(f"no user {name!r} (arena user add {name})")
            change_password(s, row, password)
            audit.record(s, None, "user.password_change", "user", row.id, via="arena user passwd")
    except ValueError as e:
        _fail(str(e))
    click.echo(f"password of {name} set; their sessions have ended")
