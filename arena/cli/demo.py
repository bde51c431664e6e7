"""``arena demo``: everything end to end (services, base image, tasks, the example and the reference models,
a worker, the boards), orchestrated from the other commands."""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

import click

from arena import __version__
from arena.cli.images import build_example
from arena.cli.root import REPO_ROOT, _fail, main
from arena.cli.submissions import _watch, submit
from arena.cli.tasks import task_load
from arena.config import load_settings

#: The demo's main board: real OpenKBP validation patients (default) or han-oar-22 phantoms (--synthetic):
#: (task folder, phase, example build-arg TASK or None for the default build, real data)
REAL_MAIN = ("han-oar-openkbp", "validation", "han-oar-openkbp", True)
SYNTHETIC_MAIN = ("han-oar-22", "validation", None, False)

#: ``arena demo --all-tasks``: cell_detector also on the real DigestPath tiles of held-out patients (the first
#: --cases tiles of the public real phase; its README's numbers cover the whole phase, so this entry is not
#: one of arena.reference.DEMO_REFERENCE's README boards)
REAL_TILE_REFERENCE = ("signet-ring-cells", "real-validation", ("cell_detector",))

#: ``arena demo --all-tasks``: the other CT tasks (the main one is left out), same tuple
DEMO_CT_TASKS = (REAL_MAIN, SYNTHETIC_MAIN,
                 ("han-oar-9", "validation", "han-oar-9", False),
                 ("thoracic-oar-6", "validation", "thoracic-oar-6", False),
                 ("abdomen-totalseg", "test", "replay", True))


def build_replay(settings, log=print) -> Path:
    """examples/totalseg-fast-replay built from the shared data and saved as a tarball."""
    import importlib.util

    from arena.images.base import BASE_TAG, build_base_image
    from arena.images.build import save_image

    build_base_image(log=log)
    path = REPO_ROOT / "examples" / "totalseg-fast-replay" / "build.py"
    mod_spec = importlib.util.spec_from_file_location("arena_totalseg_replay_build", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)  # type: ignore[union-attr]
    tag = f"arena/example-totalseg-fast-replay:{__version__}"
    mod.build(BASE_TAG, tag, log=lambda line: None)
    output = settings.home / "examples" / "totalseg-fast-replay.tar.gz"
    output.parent.mkdir(parents=True, exist_ok=True)
    save_image(tag, str(output), compress=True)
    return output


def _real_data_available(slug: str) -> str | None:
    """None when the task's real data is there, else why not."""
    from arena.tasks.spec import load_spec
    from arena.tasks.store import DataUnavailable, list_real_cases

    task_dir = REPO_ROOT / "tasks" / slug
    try:
        list_real_cases(task_dir, load_spec(task_dir))
    except DataUnavailable as e:
        return str(e)
    return None


def _demo_task(settings, ctx, entry: tuple, cases: int, size: str, step) -> tuple[str, str, int | None] | None:
    """Load one CT task (its real cases, at most ``cases`` per phase, or ``cases`` phantoms) and submit its
    example; returns (slug, phase, submission) or None when its real data is missing."""
    from sqlalchemy import select

    from arena.db import session_scope
    from arena.models import Submission

    slug, phase_slug, mode, real = entry
    task_dir = REPO_ROOT / "tasks" / slug
    if real:
        why = _real_data_available(slug)
        if why:
            click.secho(f"  {slug}: skipped ({why})", fg="yellow")
            return None
    step(f"task {slug}" + (f" with its real cases (at most {cases} per phase)" if real
                           else f" with {cases} synthetic cases ({size})"))
    ctx.invoke(task_load, task_dir=task_dir, demo=0 if real else cases, size=size, real=True,
               limit_cases=cases if real else None)
    if mode == "replay":
        tarball, label = build_replay(settings, log=click.echo), "TotalSegmentator fast (replayed)"
    else:
        tarball, label = build_example(settings, log=click.echo, mode=mode), f"threshold-segmenter {__version__}"
    ctx.invoke(submit, tarball=tarball, task_slug=slug, phase_slug=phase_slug, user_name="demo", label=label,
               wait=False)
    with session_scope(settings.database_url) as s:
        return slug, phase_slug, s.scalar(select(Submission.id).order_by(Submission.id.desc()))


def _demo_all_tasks(settings, ctx, main_slug: str, cases: int, size: str, step) -> list[tuple[str, str, int | None]]:
    """Set up every shipped task besides the main one and submit its example; returns (slug, phase, submission)."""
    out = []
    for entry in DEMO_CT_TASKS:
        if entry[0] != main_slug:
            done = _demo_task(settings, ctx, entry, cases, size, step)
            if done:
                out.append(done)
    step("pathology tasks (signet-ring-cells, colon-tissue)")
    from arena.db import session_scope
    from arena.tasks.store import load_demo_cases, load_real_cases, upsert_task

    real_tiles = _real_data_available("signet-ring-cells") is None
    with session_scope(settings.database_url) as s:
        for pslug in ("signet-ring-cells", "colon-tissue"):
            ptask = upsert_task(s, REPO_ROOT / "tasks" / pslug)
            load_demo_cases(s, settings, ptask, max(cases, 8), size="small")
            if pslug == "signet-ring-cells" and real_tiles:  # real DigestPath tiles of held-out patients
                load_real_cases(s, settings, ptask, REPO_ROOT / "tasks" / pslug, limit=cases)
            click.echo(f"task {pslug}: " + ", ".join(f"{p.slug} {len(p.cases)} tiles" for p in ptask.phases))
    # their entries: the cell_detector reference model (DEMO_REFERENCE, and REAL_TILE_REFERENCE below)
    out.append(("signet-ring-cells", "validation", None))
    if real_tiles:
        out.append((REAL_TILE_REFERENCE[0], REAL_TILE_REFERENCE[1], None))
    return out


def _demo_reference(settings, tasks: set[str], step) -> list[int]:
    """Build the reference models of the demo's tasks and submit them as "Reference models" entries
    (idempotent: an image already submitted to the phase is not submitted again); returns submission IDs."""
    from arena import reference
    from arena.images.base import BASE_TAG

    runs = [(slug, phase, names) for slug, phase, names in reference.DEMO_REFERENCE if slug in tasks]
    if REAL_TILE_REFERENCE[0] in tasks and _real_data_available(REAL_TILE_REFERENCE[0]) is None:
        runs.append(REAL_TILE_REFERENCE)
    names = sorted({n for _, _, ns in runs for n in ns})
    step(f"reference models: building {', '.join(names)}")
    reference.build(BASE_TAG, names, log=click.echo, tasks=sorted({slug for slug, _, _ in runs}))
    ids = []
    for slug, phase, ns in runs:
        step(f"reference models: submitting to {slug}/{phase}")
        ids += [r.submission_id for r in reference.submit(settings, slug, [phase], list(ns), log=click.echo)]
    return ids


def _print_board(settings, slug: str, phase_slug: str, step) -> int:
    """Print a phase's board, a line per row (published rows unranked); returns how many entries it ranks."""
    from sqlalchemy import select

    from arena.db import session_scope
    from arena.leaderboard.query import leaderboard
    from arena.models import Task

    with session_scope(settings.database_url) as s:
        t = s.scalar(select(Task).where(Task.slug == slug))
        lb = leaderboard(s, t, next(p for p in t.phases if p.slug == phase_slug))
    step(f"leaderboard {slug} ({phase_slug})")
    weighted = "weighted " if lb.spec.ranking.label_weights else ""
    ranked = 0
    for row in lb.table.to_dict(orient="records"):
        num = partial(_present, row)
        dice = f"{weighted}mean Dice {row['dice']:.3f}" if num("dice") else ""
        hd = f", mean HD95 {row['hd95']:.1f} mm" if num("hd95") else ""
        set_level = ", ".join(f"{m} {row[m]:.3g}" for m in ("recall", "fp_score", "froc", "auc") if num(m))
        if row.get("badge") == "published":
            click.echo(f"  (published) {row.get('team')} — {row.get('label')}: {dice}{hd} on its own test set")
            continue
        ranked += 1
        runtime = f", {row['runtime_s']:.1f} s/case" if num("runtime_s") else ""
        click.echo(f"  #{int(row['rank'])} {row.get('team')} — {row.get('label')}: {dice}{hd}{set_level} "
                   f"over {int(row['cases'])} cases{runtime}")
    return ranked


def _present(row: dict, key: str) -> bool:
    """``row[key]`` is a number, not NaN."""
    v = row.get(key)
    return isinstance(v, (int, float)) and v == v


@main.command()
@click.option("--cases", default=4, show_default=True,
              help="real cases per phase (the first OpenKBP validation patients), or synthetic cases with --synthetic")
@click.option("--synthetic", is_flag=True, help="the main board on han-oar-22 phantoms instead of real OpenKBP CTs "
              "(also the fallback when the shared data is missing)")
@click.option("--size", default="small", show_default=True, help="phantom size (small | medium | realistic)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--serve/--no-serve", default=True, help="serve the leaderboard at the end")
@click.option("--all-tasks", is_flag=True, help="also set up every other shipped task with a board: han-oar-22, "
              "han-oar-9, thoracic-oar-6 (synthetic), han-oar-openkbp, abdomen-totalseg (real shared data) and the "
              "pathology tasks, each with an example or replay submission where one exists")
@click.option("--reference/--no-reference", "with_reference", default=True, show_default=True,
              help="build the bundled reference models and run them as reference entries (arena.reference."
              "DEMO_REFERENCE: AnatomyNet and multi-atlas on OpenKBP, with FocusNetv2 on han-oar-22, cell_detector "
              "on signet-ring-cells)")
def demo(cases: int, synthetic: bool, size: str, host: str, port: int, serve: bool, all_tasks: bool,
         with_reference: bool) -> None:
    """Everything end to end: services, base image, the real OpenKBP validation board (or phantoms with
    --synthetic), the example algorithm, the bundled reference models, a worker, the leaderboard."""
    import subprocess

    from sqlalchemy import select

    from arena.db import session_scope, upgrade
    from arena.models import User
    from arena.services import ensure_docker, ensure_redis
    from arena.users import create_user

    t0 = time.monotonic()
    settings = load_settings()
    settings.ensure_dirs()
    step = lambda msg: click.secho(f"[{time.monotonic() - t0:6.1f}s] {msg}", fg="cyan")  # noqa: E731
    step("services")
    ensure_redis(settings.redis_url, log=click.echo)
    ensure_docker(log=click.echo)
    upgrade(settings.database_url)
    step("base image")
    from arena.images.base import build_base_image

    build_base_image(log=click.echo)
    main_entry = SYNTHETIC_MAIN if synthetic else REAL_MAIN
    if not synthetic and (why := _real_data_available(REAL_MAIN[0])):
        click.secho(f"real data missing ({why}): the demo shows han-oar-22 phantoms instead", fg="yellow")
        main_entry = SYNTHETIC_MAIN
    with session_scope(settings.database_url) as s:
        if s.scalar(select(User).where(User.name == "demo")) is None:
            create_user(s, "demo", team="Arena examples")
    ctx = click.get_current_context()
    main_slug, main_phase, sub_id = _demo_task(settings, ctx, main_entry, cases, size, step)
    more = _demo_all_tasks(settings, ctx, main_slug, cases, size, step) if all_tasks else []
    refs = _demo_reference(settings, {main_slug, *(slug for slug, _, _ in more)}, step) if with_reference else []
    worker_log = settings.home / "demo-worker.log"
    step(f"running a worker until the queue is empty (log: {worker_log})")
    with open(worker_log, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker", "--burst"], stdout=logf,
                                stderr=subprocess.STDOUT)
        for other in [sub_id, *(o for _, _, o in more if o is not None), *refs]:
            click.echo(f"submission {other}: {_watch(settings, other)}")
        if proc.wait() != 0:
            _fail(f"the worker exited with code {proc.returncode}; see {worker_log}")
    if not _print_board(settings, main_slug, main_phase, step):
        _fail(f"the example submission produced no result; see `arena status {sub_id}`")
    url = f"http://{host}:{port}/tasks/{main_slug}?phase={main_phase}"
    for slug, phase_slug, _ in more:
        _print_board(settings, slug, phase_slug, step)
        click.echo(f"  http://{host}:{port}/tasks/{slug}?phase={phase_slug}")
    click.secho(f"Leaderboard: {url}", fg="green", bold=True)
    if serve:
        from arena.web import create_app

        create_app(settings).run(host=host, port=port, threaded=True)
