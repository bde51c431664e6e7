"""``arena task import-cases|cases|remove-case|move-case``: an organizer's cases, from the command line.

The same core as the organizer pages (:mod:`arena.tasks.importing`, :mod:`arena.tasks.case_admin`);
every change is recorded in the audit trail (actor: the command line).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from arena.cli.root import _fail
from arena.cli.tasks import task
from arena.config import load_settings


def _open_task(s, slug: str):
    from sqlalchemy import select

    from arena.models import Task

    t = s.scalar(select(Task).where(Task.slug == slug))
    if t is None:
        raise click.ClickException(f"no task {slug!r} in the database (arena task load tasks/{slug} first)")
    return t


def _settings():
    from arena.db import upgrade

    settings = load_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    return settings


def _each_case(slug: str, keys: tuple[str, ...], action, verb: str) -> list[str]:
    """``action(session, settings, task, key)`` for every key in one transaction; its summaries. A
    :class:`~arena.tasks.case_admin.CaseAdminError` on any key rolls all back and ends the command."""
    from arena.db import session_scope
    from arena.tasks.case_admin import CaseAdminError

    settings = _settings()
    try:
        with session_scope(settings.database_url) as s:
            t = _open_task(s, slug)
            return [action(s, settings, t, key) for key in keys]
    except CaseAdminError as e:
        _fail(f"{e}; nothing was {verb}")
        raise  # not reached: _fail exits


@task.command("import-cases")
@click.argument("slug")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--phase", "phases", multiple=True, help="phase the cases go to (repeatable); cases the CSV "
              "assigns go to its phases instead")
@click.option("--phases-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with a header row and the columns case,phase (a case may have several rows)")
@click.option("--resample-reference", is_flag=True,
              help="put references on another grid onto the image grid instead of refusing them "
                   "(nearest neighbour by physical coordinates; only when you know why they differ)")
def import_cases_cmd(slug: str, folder: Path, phases: tuple[str, ...], phases_csv: Path | None,
                     resample_reference: bool) -> None:
    """Load the cases of FOLDER into task SLUG: all checked first, then all written, or none.

    FOLDER holds images/<case>.<ext> + labels/<case>.<ext>, or <case>/image.<ext> + <case>/reference.<ext>
    (.mha, .mhd, .nii, .nii.gz, .nrrd, .nhdr, or a DICOM series folder as the image). Images are stored
    as the task's input format (.mha). Refused, each naming the file: label values outside the task's map,
    a reference on another grid than its image, a missing label map, a DICOM series with a missing slice.
    """
    from arena import audit
    from arena.db import session_scope
    from arena.tasks.case_check import CaseCheckError
    from arena.tasks.importing import import_cases

    settings = _settings()
    if not phases and phases_csv is None:
        _fail("name the phase with --phase PHASE, or assign phases with --phases-csv FILE")
    try:
        with session_scope(settings.database_url) as s:
            t = _open_task(s, slug)
            res = import_cases(s, settings, t, folder, phases, phases_csv, resample_reference,
                               meta={"imported_by": "arena task import-cases"})
            audit.record(s, None, "task.cases_load", "task", t.slug, folder=str(folder.resolve()), cases=res.loaded,
                         phases=sorted({p for ps in res.phases.values() for p in ps}), via="arena task import-cases")
            counts = {p.slug: len(p.cases) for p in t.phases}
    except CaseCheckError as e:
        click.secho(f"error: {len(e.problems) - 1 or 1} problem(s) in {folder}:", fg="red", err=True)
        for p in e.problems:
            click.secho(f"  {p}", fg="red", err=True)
        raise SystemExit(2)
    by_phase: dict[str, int] = {}
    for k in res.loaded:
        for p in res.phases[k]:
            by_phase[p] = by_phase.get(p, 0) + 1
    click.echo(f"loaded {len(res.loaded)} case(s) into {slug}: "
               + ", ".join(f"{n} into {p}" for p, n in sorted(by_phase.items()))
               + (f" ({len(res.replaced)} replaced: {', '.join(res.replaced)})" if res.replaced else ""))
    click.echo(f"task {slug}: " + ", ".join(f"{p} {n} cases" for p, n in counts.items()))


@task.command("cases")
@click.argument("slug")
@click.option("--phase", default=None, help="only the cases of this phase")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table")
def cases_cmd(slug: str, phase: str | None, as_json: bool) -> None:
    """List task SLUG's cases: phases, size (voxels), spacing (mm), labels present, evaluations that scored it."""
    from arena.db import session_scope
    from arena.tasks.case_admin import list_cases
    from arena.tasks.store import spec_of

    settings = _settings()
    with session_scope(settings.database_url) as s:
        t = _open_task(s, slug)
        names = {k: v.name for k, v in spec_of(t).labels.items()}
        rows = list_cases(s, t, phase)
        if as_json:
            for r in rows:
                click.echo(json.dumps(r.as_dict()))
            return
        click.echo(f"{'case':<20} {'phases':<18} {'size':<14} {'spacing (mm)':<18} {'scored':>6}  labels present")
        for r in rows:
            size = "×".join(map(str, r.size)) if r.size else "–"
            sp = "×".join(f"{v:.3g}" for v in r.spacing) if r.spacing else "–"
            if r.labels_present is None:
                labs = "(not recorded)"
            else:
                absent = [names[k] for k in names if k not in r.labels_present]
                labs = f"{len(r.labels_present)}/{len(names)}" + (f" (absent: {', '.join(absent)})" if absent else "")
            click.echo(f"{r.key:<20} {','.join(r.phases) or '(none)':<18} {size:<14} {sp:<18} {r.results:>6}  {labs}")
        click.echo(f"{len(rows)} case(s)")


@task.command("remove-case")
@click.argument("slug")
@click.argument("keys", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="also when evaluations scored it: its results are deleted with it")
def remove_case_cmd(slug: str, keys: tuple[str, ...], force: bool) -> None:
    """Remove cases KEYS from task SLUG (rows and stored files). A scored case needs --force."""
    from arena import audit
    from arena.tasks.case_admin import remove_case

    def remove(s, settings, t, key: str) -> str:
        n = remove_case(s, settings, t, key, force=force)
        audit.record(s, None, "task.case_remove", "task", t.slug, case=key, results_deleted=n,
                     via="arena task remove-case")
        return key + (f" ({n} result(s) deleted)" if n else "")

    done = _each_case(slug, keys, remove, "removed")
    click.echo(f"removed from {slug}: {', '.join(done)}")


@task.command("move-case")
@click.argument("slug")
@click.argument("keys", nargs=-1, required=True)
@click.option("--to", "to", required=True, help="the phase the cases go to (they leave every other phase)")
@click.option("--force", is_flag=True, help="also when evaluations scored them (results stay with their evaluations)")
def move_case_cmd(slug: str, keys: tuple[str, ...], to: str, force: bool) -> None:
    """Move cases KEYS of task SLUG into phase --to. A scored case needs --force."""
    from arena import audit
    from arena.tasks.case_admin import move_case

    def move(s, settings, t, key: str) -> str:
        left = move_case(s, t, key, to, force=force)
        audit.record(s, None, "task.case_move", "task", t.slug, case=key, to=to, left=left,
                     via="arena task move-case")
        return f"{key} ({', '.join(left) or 'no phase'} → {to})"

    lines = _each_case(slug, keys, move, "moved")
    click.echo(f"moved in {slug}: {'; '.join(lines)}")
