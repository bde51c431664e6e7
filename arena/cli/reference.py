"""`arena reference build|run`: the bundled reference models (see arena/reference.py)."""

from __future__ import annotations

import click

from arena.cli.root import main


@main.group()
def reference() -> None:
    """Bundled reference models (AnatomyNet, FocusNetv2, multi-atlas, ...), run like any submission."""


@reference.command("build")
@click.option("--name", "names", multiple=True, help="only this model (repeatable); default: every one with a Dockerfile")
@click.option("--task", "tasks", multiple=True, help="only the variants for this task (repeatable; a model's "
              "tasks.json); default: every variant")
@click.option("--base-image", default=None, help="base image tag (default: Arena's, built if missing)")
def build_cmd(names: tuple[str, ...], tasks: tuple[str, ...], base_image: str | None) -> None:
    """Build the image(s) of every reference_models/<name>/ that has a Dockerfile (one per task variant)."""
    from arena import reference
    from arena.images.base import BASE_TAG, build_base_image

    if base_image is None:
        base_image = BASE_TAG
        build_base_image(base_image, log=lambda line: None)
    try:
        built = reference.build(base_image, list(names) or None, log=click.echo, tasks=list(tasks) or None)
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{len(built)} reference image(s) built")


@reference.command("run")
@click.option("--task", "task_slug", required=True)
@click.option("--phase", "phases", multiple=True, help="phase slug (repeatable); default: every phase of the task")
@click.option("--name", "names", multiple=True, help="only this model (repeatable)")
def run_cmd(task_slug: str, phases: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Submit the built reference images to TASK as entries of the "Reference models" team (idempotent)."""
    from arena import reference
    from arena.config import load_settings
    from arena.db import upgrade
    from arena.submissions.intake import UploadError

    settings = load_settings()
    upgrade(settings.database_url)
    try:
        res = reference.submit(settings, task_slug, list(phases) or None, list(names) or None, log=click.echo)
    except (ValueError, RuntimeError, UploadError) as e:
        raise click.ClickException(str(e)) from None
    new = sum(r.created for r in res)
    click.echo(f"{new} new reference submission(s) queued, {len(res) - new} already present; run `arena worker --burst`")


@reference.command("report")
@click.option("--task", "task_slug", required=True)
@click.option("--phase", "phase_slug", default=None, help="phase slug (default: the task's first phase)")
@click.option("--name", "names", multiple=True, help="only this model (repeatable)")
def report_cmd(task_slug: str, phase_slug: str | None, names: tuple[str, ...]) -> None:
    """Print the reference entries' board numbers and per-label tables (Markdown, as in the models' READMEs)."""
    from sqlalchemy import select

    from arena import reference
    from arena.config import load_settings
    from arena.db import session_scope, upgrade
    from arena.leaderboard.query import leaderboard
    from arena.models import Task

    settings = load_settings()
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as s:
        task = s.scalar(select(Task).where(Task.slug == task_slug))
        if task is None:
            raise click.ClickException(f"no task {task_slug!r}")
        phase = next((p for p in task.phases if phase_slug in (None, p.slug)), None)
        if phase is None:
            raise click.ClickException(f"task {task_slug!r} has no phase {phase_slug!r} "
                                       f"(has {[p.slug for p in task.phases]})")
        text = reference.report(leaderboard(s, task, phase), list(names) or None)
    if not text:
        raise click.ClickException(f"no reference entries on the {task_slug}/{phase.slug} board yet: "
                                   f"`arena reference run --task {task_slug}` and a worker first")
    click.echo(text)
