"""``arena task validate|load|check|list``: task folders and their cases."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from arena.cli.root import _fail, main
from arena.config import load_settings


@main.group()
def task() -> None:
    """Define tasks and load their cases."""


@task.command("validate")
@click.argument("task_dir", type=click.Path(exists=True, path_type=Path))
def task_validate(task_dir: Path) -> None:
    """Check a task folder's task.yaml and print what it declares."""
    from arena.tasks.spec import TaskSpecError, load_spec

    try:
        spec = load_spec(task_dir)
    except TaskSpecError as e:
        _fail(str(e))
    click.echo(f"{spec.slug}: {spec.kind}, {len(spec.labels)} labels, metrics "
               f"{[m.name for m in spec.metrics]}, phases {[p.slug for p in spec.phases]}: valid")


@task.command("load")
@click.argument("task_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--demo-data", "demo", type=int, default=0, show_default=True,
              help="generate this many synthetic cases with the task's generator (seeded phantoms)")
@click.option("--size", default="small", show_default=True,
              help="phantom size: small | medium | realistic | XxYxZ voxels")
@click.option("--real/--no-real", default=True, show_default=True,
              help="load the real cases the task folder's data.loader lists (shared data; skipped when absent)")
def task_load(task_dir: Path, demo: int, size: str, real: bool) -> None:
    """Create or update a task from TASK_DIR/task.yaml (its real cases, and demo cases with --demo-data)."""
    from tqdm import tqdm

    from arena.db import session_scope, upgrade
    from arena.tasks.convert import CaseFormatError
    from arena.tasks.spec import TaskSpecError
    from arena.tasks.store import DataUnavailable, load_demo_cases, load_real_cases, spec_of, upsert_task

    settings = load_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    notes = []
    try:
        with session_scope(settings.database_url) as s:
            t = upsert_task(s, task_dir)
            spec = spec_of(t)
            if real and spec.data is not None and spec.data.loader:
                try:
                    n_real = len(load_real_cases(s, settings, t, task_dir))
                    notes.append(f"{n_real} real cases loaded")
                except DataUnavailable as e:
                    notes.append(f"real cases skipped: {e}")
            if demo:
                bar = tqdm(total=demo, desc="generating cases", unit="case")
                load_demo_cases(s, settings, t, demo, size=size,
                                progress=lambda i, n, key: bar.update(i - bar.n))
                bar.close()
            summary = f"task {t.slug}: " + ", ".join(f"{p.slug} {len(p.cases)} cases" for p in t.phases)
    except (TaskSpecError, CaseFormatError) as e:
        _fail(str(e))
    except ValueError as e:
        _fail(str(e))
    for n in notes:
        click.echo(n)
    click.echo(summary)


@task.command("check")
@click.argument("task_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--no-generate", is_flag=True, help="do not run the generator (spec, README, literature, loader only)")
def task_check(task_dirs: tuple[Path, ...], no_generate: bool) -> None:
    """Validate task folders (task.yaml, README, literature.csv, generator / loader) and summarize them."""
    from arena.tasks.check import check_task

    failed = 0
    for d in task_dirs:
        res = check_task(d, generate=not no_generate)
        for line in res.summary():
            click.echo(line)
        for p in res.problems:
            click.secho(f"  problem: {p}", fg="red")
        click.secho(f"{d}: {'ok' if res.ok else f'{len(res.problems)} problem(s)'}", fg="green" if res.ok else "red")
        failed += not res.ok
    if failed:
        sys.exit(1)


@task.command("list")
def task_list() -> None:
    """List the tasks in the database."""
    from sqlalchemy import select

    from arena.db import session_scope
    from arena.models import Task

    with session_scope(load_settings().database_url) as s:
        for t in s.scalars(select(Task).order_by(Task.slug)):
            click.echo(f"{t.slug:24} {t.kind:13} {len(t.cases):4} cases  {t.title}")
