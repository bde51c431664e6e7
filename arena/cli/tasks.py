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
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="the data folder the task's loader reads (default: data.folder below ARENA_SHARED_DATA)")
@click.option("--limit-cases", type=click.IntRange(min=1), default=None,
              help="load only the first N real cases of each phase (a quick board; says so)")
def task_load(task_dir: Path, demo: int, size: str, real: bool, data_dir: Path | None = None,
              limit_cases: int | None = None) -> None:
    """Create or update a task from TASK_DIR/task.yaml (its real cases, and demo cases with --demo-data).

    Real cases are read from the data folder (``--data``) and converted into the case store; a reload
    skips cases whose files did not change. The loader's training cases are recorded for the task's
    training-data archive (``arena task training-data``)."""
    from tqdm import tqdm

    from arena.db import session_scope, upgrade
    from arena.tasks.convert import CaseFormatError
    from arena.tasks.spec import TaskSpecError
    from arena.tasks.store import DataUnavailable, load_demo_cases, load_real_cases, spec_of, upsert_task
    from arena.tasks.training import read_manifest

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
                    bar = tqdm(desc="real cases", unit="case", disable=None)
                    n_real = len(load_real_cases(s, settings, t, task_dir, data_root=data_dir, limit=limit_cases,
                                                 progress=lambda i, n, key: _tick(bar, i, n)))
                    bar.close()
                    notes.append(f"{n_real} real cases loaded" + (f" (at most {limit_cases} per phase: --limit-cases)"
                                                                  if limit_cases else ""))
                    manifest = read_manifest(settings, t.slug)
                    if manifest:
                        notes.append(f"training data: {manifest['cases']} cases (`arena task training-data {t.slug} "
                                     "--out DIR`, or the task page)")
                except DataUnavailable as e:
                    if data_dir is not None:
                        raise ValueError(str(e)) from None
                    notes.append(f"real cases skipped: {e}")
            if demo:
                bar = tqdm(total=demo, desc="generating cases", unit="case")
                load_demo_cases(s, settings, t, demo, size=size,
                                progress=lambda i, n, key: bar.update(i - bar.n))
                bar.close()
            summary = f"task {t.slug}: " + ", ".join(f"{p.slug} {len(p.cases)} cases" for p in t.phases)
    except (TaskSpecError, CaseFormatError) as e:
        _fail(str(e))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    for n in notes:
        click.echo(n)
    click.echo(summary)


@task.command("check")
@click.argument("task_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--no-generate", is_flag=True, help="do not run the generator (spec, README, literature, loader only)")
@click.option("--data", "data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="the data folder the task's loader reads (as for arena task load --data)")
@click.option("--cases", "cases", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="check an import folder's cases (as arena task import-cases would, nothing is written)")
def task_check(task_dirs: tuple[Path, ...], no_generate: bool, data: Path | None, cases: Path | None) -> None:
    """Validate task folders (task.yaml, README, literature.csv) and their cases, and summarize them.

    Cases: the loader's (data.loader), the generator's, an import folder's (--cases) or, for a task whose
    cases come from a folder or the web, those already loaded into the database.
    """
    from arena.tasks.check import check_task

    failed = 0
    for d in task_dirs:
        res = check_task(d, data_root=data, generate=not no_generate, cases_folder=cases)
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


def _tick(bar, i: int, n: int) -> None:
    bar.total = n
    bar.update(i - bar.n)


@task.command("training-data")
@click.argument("slug")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="folder to write images/, labels/, labels.json, cases.json and SHA256SUMS into")
@click.option("--server", default=None, help="download from this Arena server (default: `arena login`'s, "
              "else this machine's installation)")
def task_training_data(slug: str, out_dir: Path, server: str | None) -> None:
    """Download a task's training data (the cases its organizers publish for training; never scored)."""
    from tqdm import tqdm

    from arena.cli.client import client_settings
    from arena.tasks.training import TrainingDataError, extract_to

    remote = client_settings(server)
    try:
        if remote:
            chunks, total = _remote_training(remote, slug)
        else:
            chunks, total = _local_training(slug)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"{slug} training data", disable=None)

        def counted():
            for c in chunks:
                bar.update(len(c))
                yield c

        files = extract_to(counted(), out_dir)
        bar.close()
    except TrainingDataError as e:
        _fail(str(e))
    n = len({f.stem.split(".")[0] for f in files if f.parent.name == "images"})
    click.echo(f"{n} training cases written to {out_dir / f'{slug}-training'}")


def _local_training(slug: str):
    from sqlalchemy import select

    from arena.db import session_scope
    from arena.models import Task
    from arena.tasks.store import spec_of
    from arena.tasks.training import archive_size, iter_archive, read_manifest

    settings = load_settings()
    with session_scope(settings.database_url) as s:
        t = s.scalar(select(Task).where(Task.slug == slug))
        if t is None:
            _fail(f"no task {slug!r} (arena task list)")
        labels = {k: v.name for k, v in spec_of(t).labels.items()}
    manifest = read_manifest(settings, slug)
    if manifest is None:
        _fail(f"task {slug!r} has no training data (its loader lists none, or `arena task load` has not run)")
    return iter_archive(manifest, labels), archive_size(manifest, labels)


def _remote_training(remote: tuple[str, str], slug: str):
    import requests

    server, token = remote
    r = requests.get(f"{server}/api/v1/tasks/{slug}/training-data", headers={"Authorization": f"Bearer {token}"},
                     stream=True, timeout=60)
    if r.status_code != 200:
        _fail(f"{server}: training data of {slug}: HTTP {r.status_code} {r.text[:200]}")
    total = int(r.headers.get("Content-Length") or 0) or None
    return r.iter_content(1 << 20), total
