"""`arena reference build|run`: the bundled reference models (see arena/reference.py)."""

from __future__ import annotations

import click


@click.group()
def reference() -> None:
    """Bundled reference models (AnatomyNet, FocusNetv2, multi-atlas, ...), run like any submission."""


@reference.command("build")
@click.option("--name", "names", multiple=True, help="only this model (repeatable); default: every one with a Dockerfile")
@click.option("--base-image", default=None, help="base image tag (default: Arena's, built if missing)")
def build_cmd(names: tuple[str, ...], base_image: str | None) -> None:
    """Build the image of every reference_models/<name>/ that has a Dockerfile."""
    from arena import reference
    from arena.images.base import BASE_TAG, build_base_image

    if base_image is None:
        base_image = BASE_TAG
        build_base_image(base_image, log=lambda line: None)
    try:
        built = reference.build(base_image, list(names) or None, log=click.echo)
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
