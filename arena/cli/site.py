"""``arena site add|assign|token|revoke|list`` (the organizer, on the server) and ``arena site-worker`` (at the
data owner's site: evaluates a site phase's submissions on the site's own cases, over HTTP only).

Organizer changes are recorded in the audit trail (actor: the command line).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from arena.cli.root import _fail, main
from arena.config import load_settings


def _settings():
    from arena.db import upgrade

    settings = load_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    return settings


@main.group()
def site() -> None:
    """Sites: machines at a data owner's site that evaluate a phase's hidden cases where they live."""


@site.command("add")
@click.argument("name")
def site_add(name: str) -> None:
    """Add a site called NAME."""
    from arena import audit
    from arena.db import session_scope
    from arena.site.server import add_site

    settings = _settings()
    try:
        with session_scope(settings.database_url) as s:
            add_site(s, name)
            audit.record(s, None, "site.add", "site", name)
    except ValueError as e:
        _fail(str(e))
    click.echo(f"site {name} added; next: arena site assign {name} TASK/PHASE")


@site.command("assign")
@click.argument("name")
@click.argument("phase", metavar="TASK_SLUG/PHASE_SLUG")
def site_assign(name: str, phase: str) -> None:
    """Serve PHASE by site NAME's workers only (its cases stay at the site; local workers stop running it)."""
    from arena import audit
    from arena.db import session_scope
    from arena.site.server import assign_phase

    settings = _settings()
    try:
        with session_scope(settings.database_url) as s:
            assign_phase(s, name, phase)
            audit.record(s, None, "site.assign", "site", name, phase=phase)
    except (LookupError, ValueError) as e:
        _fail(str(e).strip("'\""))
    click.echo(f"phase {phase} is served by site {name}; next: arena site token {name} --phase {phase}")


@site.command("token")
@click.argument("name")
@click.option("--phase", "phases", multiple=True, required=True, metavar="TASK/PHASE",
              help="a phase the token may serve (repeatable; each assigned to the site)")
def site_token(name: str, phases: tuple[str, ...]) -> None:
    """Issue a worker token for site NAME and print it (shown once; only its sha256 is kept)."""
    from arena import audit
    from arena.db import session_scope
    from arena.site.server import issue_token

    settings = _settings()
    try:
        with session_scope(settings.database_url) as s:
            row, token = issue_token(s, name, list(phases))
            s.flush()
            audit.record(s, None, "site.token", "worker_token", row.id, site=name, phases=list(phases))
            token_id = row.id
    except (LookupError, ValueError) as e:
        _fail(str(e).strip("'\""))
    click.echo(f"worker token {token_id} of site {name} (shown once; arena site revoke {token_id} ends it):",
               err=True)
    click.echo(token)


@site.command("revoke")
@click.argument("token_id", type=int)
def site_revoke(token_id: int) -> None:
    """Revoke worker token TOKEN_ID: refused from its next request on (its leases lapse and are re-queued)."""
    from arena import audit
    from arena.db import session_scope
    from arena.site.server import revoke_worker_token

    settings = _settings()
    try:
        with session_scope(settings.database_url) as s:
            revoke_worker_token(s, token_id)
            audit.record(s, None, "site.revoke", "worker_token", token_id)
    except LookupError as e:
        _fail(str(e).strip("'\""))
    click.echo(f"worker token {token_id} revoked")


@site.command("list")
def site_list() -> None:
    """Sites, their phases and their tokens (id, phases, last used, revoked)."""
    from arena.db import session_scope
    from arena.site.server import list_sites

    settings = _settings()
    with session_scope(settings.database_url) as s:
        sites = list_sites(s)
    if not sites:
        click.echo("no sites (arena site add NAME)")
    for site_ in sites:
        click.echo(f"{site_['name']}: phases {', '.join(site_['phases']) or '(none)'}")
        for t in site_["tokens"]:
            state = f"revoked {t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "active"
            used = f"{t['last_used_at']:%Y-%m-%d %H:%M}" if t["last_used_at"] else "never"
            click.echo(f"  token {t['id']}: {state}; phases {', '.join(t['phases'])}; last used {used}")


@main.command("site-worker")
@click.option("--server", required=True, help="the Arena server's URL, e.g. https://arena.example.org")
@click.option("--token", default=None, help="the worker token (default: ARENA_SITE_TOKEN)")
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="the site's case folder: TASK/PHASE/ below it (default: ARENA_SITE_DATA or ARENA_HOME/site-data)")
@click.option("--gpu", default=None, help="GPU(s) this worker owns, e.g. 0 or 0,1")
@click.option("--once", is_flag=True, help="exit when there is nothing left to do")
@click.option("--name", default=None, help="this worker's name (default: the host name)")
def site_worker(server: str, token: str | None, data: Path | None, gpu: str | None, once: bool,
                name: str | None) -> None:
    """Evaluate the token's phases here: claim, run each case on this site's cases, report scores only."""
    from arena.site.worker import SiteWorkerError, run_site_worker

    settings = load_settings()
    token = token or settings.site_token
    if not token:
        _fail("no worker token: pass --token or set ARENA_SITE_TOKEN (the organizer's `arena site token` prints one)")
    try:
        run_site_worker(settings, server, token, data=data, gpu=gpu, once=once, name=name,
                        say=lambda m: click.echo(m, err=True))
    except SiteWorkerError as e:
        _fail(str(e))
    sys.exit(0)
