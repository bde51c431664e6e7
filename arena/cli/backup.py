"""``arena export`` / ``arena import``: a task's results as a self-contained archive, and back."""

from __future__ import annotations

from pathlib import Path

import click

from arena.cli.root import main
from arena.config import load_settings


@main.command("export")
@click.option("--task", "slug", required=True, help="task slug")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="archive to write (default: <task>-<date>.arena.tar.gz)")
@click.option("--no-boards", is_flag=True, help="skip the leaderboard snapshots")
def export_cmd(slug: str, output: Path | None, no_boards: bool) -> None:
    """Write a task's spec, submissions, evaluations, per-case results and board snapshots to an archive."""
    import datetime as dt

    from arena.backup import BackupError, export_task
    from arena.db import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    output = output or Path(f"{slug}-{dt.date.today():%Y%m%d}.arena.tar.gz")
    try:
        counts = export_task(settings, slug, output, boards=not no_boards)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB): " +
               ", ".join(f"{n} {t}" for t, n in sorted(counts.items())))


@main.command("import")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_cmd(archive: Path) -> None:
    """Restore an archive written by ``arena export`` into this (empty) database; all or nothing."""
    from arena.backup import BackupError, import_archive
    from arena.db import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    try:
        counts = import_archive(settings, archive)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"imported {archive}: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items())))
