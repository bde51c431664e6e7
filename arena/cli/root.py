"""The ``arena`` command."""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

import click

from arena import __version__
from arena.config import load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = REPO_ROOT / "examples" / "threshold-segmenter"
DEMO_TASK_DIR = REPO_ROOT / "tasks" / "han-oar-22"


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(2)


@click.group()
@click.version_option(__version__, prog_name="arena")
def main() -> None:
    """Arena: challenges and model evaluation for medical image AI."""


@main.command()
def init() -> None:
    """Create ARENA_HOME and create/upgrade the database schema."""
    from arena.db import upgrade

    settings = load_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    click.echo(f"database ready: {settings.database_url}")


# -- tasks ------------------------------------------------------------------------------------
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


# -- users ------------------------------------------------------------------------------------
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


# -- submissions ------------------------------------------------------------------------------
def _watch(settings, submission_id: int, timeout: float | None = None) -> str:
    """Poll a submission until it is finished, with a case i/N progress bar; returns its status."""
    from tqdm import tqdm

    from arena.db import session_scope
    from arena.models import Submission

    bar = None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with session_scope(settings.database_url) as s:
            sub = s.get(Submission, submission_id)
            status, ev = sub.display_status, sub.latest_evaluation
            total, done = (ev.cases_total, ev.cases_done) if ev else (0, 0)
            finished = sub.status.value == "failed" or (ev is not None and ev.status.finished)
        if ev is not None and bar is None and total:
            bar = tqdm(total=total, desc=f"submission {submission_id}", unit="case")
        if bar is not None:
            bar.update(done - bar.n)
            bar.set_postfix_str(status)
        if finished:
            if bar is not None:
                bar.close()
            return status
        if deadline is not None and time.monotonic() > deadline:
            return status
        time.sleep(0.5)


@main.command()
@click.argument("tarball", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--task", "task_slug", required=True)
@click.option("--phase", "phase_slug", required=True)
@click.option("--user", "user_name", envvar="ARENA_USER", help="submitting user, local mode (env ARENA_USER)")
@click.option("--label", help="algorithm name / version shown on the leaderboard")
@click.option("--wait/--no-wait", default=False, help="follow the evaluation until it finishes")
@click.option("--server", default=None, help="upload over HTTP to this server (default without --user: arena login's)")
@click.option("--model", "model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="a model archive (tar/tar.gz of the weights), uploaded beside the image and extracted "
                   "read-only at /opt/ml/model (grand-challenge's layout)")
def submit(tarball: Path, task_slug: str, phase_slug: str, user_name: str | None, label: str | None, wait: bool,
           server: str | None = None, model: Path | None = None) -> None:
    """Submit a `docker save` TARBALL (optionally gzipped) to a task's phase (over HTTP without --user)."""
    if user_name is None:
        from arena.cli_client import client_settings, submit_http

        conf = client_settings(server)
        if conf is None:
            _fail("give --user NAME (local mode) or run `arena login` / pass --server (HTTP mode)")
        return submit_http(*conf, tarball, task_slug, phase_slug, label, wait, model=model)
    from sqlalchemy import select

    from arena.db import session_scope
    from arena.models import User
    from arena.runner.jobs import enqueue_intake
    from arena.submissions.intake import (
        UploadError,
        create_submission,
        find_task_phase,
        store_model_archive,
        store_upload,
    )

    settings = load_settings()
    try:
        with session_scope(settings.database_url) as s:
            u = s.scalar(select(User).where(User.name == user_name))
            if u is None:
                raise UploadError(f"no user {user_name!r} (arena user add {user_name} --team TEAM)")
            find_task_phase(s, task_slug, phase_slug)
            sha = None
            if model is not None:
                if u.team is None:
                    raise UploadError(f"user {user_name!r} is in no team; add them to one first")
                with open(model, "rb") as f:
                    sha = store_model_archive(s, settings, u.team, f).sha256
                click.echo(f"model archive {model.name}: sha256 {sha[:12]}")
            with open(tarball, "rb") as f:
                upload = store_upload(f, settings)
            try:
                sub = create_submission(s, task_slug, phase_slug, u, upload, upload_name=tarball.name, label=label,
                                        settings=settings, model=sha)
            except BaseException:
                upload.path.unlink(missing_ok=True)
                raise
            sub_id = sub.id
    except UploadError as e:
        _fail(str(e))
    enqueue_intake(settings, sub_id)
    click.echo(f"submission {sub_id} queued ({upload.size / 1e6:.1f} MB, sha256 {upload.sha256[:12]})")
    if wait:
        click.echo(f"submission {sub_id}: {_watch(settings, sub_id)}")


@main.command()
@click.argument("submission_id", type=int, required=False)
@click.option("--watch", "follow", is_flag=True, help="follow it until it finishes (case i/N)")
@click.option("--server", default=None, help="ask this server (default: arena login's; none: the local database)")
def status(submission_id: int | None, follow: bool = False, server: str | None = None) -> None:
    """Show a submission's status and per-case results (no ID: your recent submissions, over HTTP)."""
    from arena.cli_client import client_settings, status_http

    conf = client_settings(server)
    if conf is not None:
        return status_http(*conf, submission_id, follow)
    if submission_id is None:
        _fail("give a submission ID (listing needs a server: arena login)")
    if follow:
        _watch(load_settings(), submission_id)
    from arena.db import session_scope
    from arena.models import Submission
    from arena.web.views import submission_view

    with session_scope(load_settings().database_url) as s:
        sub = s.get(Submission, submission_id)
        if sub is None:
            _fail(f"no submission {submission_id}")
        view = submission_view(sub, viewer_is_organizer=True)
    click.echo(f"submission {view['id']} ({view['team']}, {view['task']}/{view['phase']}): {view['status']}")
    if view["error"]:
        click.echo(f"  error: {view['error']}")
    for ev in view["evaluations"]:
        click.echo(f"  evaluation {ev['id']}: {ev['status']} {ev['cases_done']}/{ev['cases_total']}"
                   + (f" — {ev['error']}" if ev["error"] else ""))
        for c in ev.get("cases", []):
            dice = [v.get("dice") for v in c["scores"].values() if v.get("dice") is not None]
            mean = f"mean Dice {sum(dice) / len(dice):.3f}" if dice else ""
            click.echo(f"    {c['case']}: {c['status']} {c['runtime_s'] or 0:.1f}s {mean} {c['error'] or ''}")


@main.command()
@click.argument("submission_id", type=int)
def rerun(submission_id: int) -> None:
    """Evaluate a submission again (a new evaluation; earlier results are kept)."""
    from arena.runner.jobs import create_evaluation

    try:
        ev = create_evaluation(load_settings(), submission_id)
    except (LookupError, ValueError) as e:
        _fail(str(e))
    click.echo(f"evaluation {ev} queued")


# -- services ---------------------------------------------------------------------------------
@main.command()
@click.option("--burst", is_flag=True, help="exit when the queue is empty")
@click.option("--gpu", "gpu", default=None, help="GPU device(s) this worker owns, e.g. 0 or 0,1: it then also "
              "takes GPU tasks (their own queue) and pins their containers to these devices")
def worker(burst: bool, gpu: str | None) -> None:
    """Run an RQ worker that takes intake and evaluation jobs (one worker per GPU in production)."""
    import logging

    from arena.runner.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_worker(load_settings(), burst=burst, gpu=gpu, say=click.echo)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=0, type=int, help="gunicorn worker processes (0: Flask's server)")
@click.option("--prod", is_flag=True, help="gunicorn with 2 × cores + 1 workers (production)")
def serve(host: str, port: int, workers: int, prod: bool) -> None:
    """Serve the web pages and the API."""
    from arena.db import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    if prod and not workers:
        import os as _os

        workers = 2 * (_os.cpu_count() or 1) + 1
    if workers:
        import os

        os.execvp("gunicorn", ["gunicorn", "-w", str(workers), "-b", f"{host}:{port}", "arena.web.wsgi:app"])
    from arena.web import create_app

    click.echo(f"Arena at http://{host}:{port}/")
    create_app(settings).run(host=host, port=port, threaded=True)


@main.command("try")
@click.argument("image_or_tarball")
@click.option("--task", "task_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="the task folder (tasks/<slug>)")
@click.option("--cases", default=2, show_default=True, help="how many sample cases")
@click.option("--size", default="small", show_default=True, help="phantom size when the task has no samples")
def try_cmd(image_or_tarball: str, task_dir: Path, cases: int, size: str) -> None:
    """Run an image (name or docker-save tarball) on a task's sample cases, exactly as the platform would."""
    import math

    from arena.runner.harness import try_image
    from arena.submissions.archive import InvalidImageArchive
    from arena.tasks.spec import TaskSpecError

    try:
        res = try_image(image_or_tarball, task_dir, cases, size, log=click.echo,
                        progress=lambda i, n, key: click.echo(f"case {i + 1}/{n}: {key} ..."))
    except (ValueError, InvalidImageArchive, TaskSpecError) as e:
        _fail(str(e))
    failed = 0
    for key, out in res.cases:
        dice = [v["dice"] for v in out.scores.values() if v.get("dice") is not None and not math.isnan(v["dice"])]
        found = [v["dice"] for v in out.scores.values() if v.get("dice")]
        mean = f"mean Dice {sum(dice) / len(dice):.3f} over {len(dice)} organs ({len(found)} found)" if dice else ""
        stats = out.stats or {}
        mem = f", peak {stats['peak_memory_mb']:.0f} MB" if stats.get("peak_memory_mb") else ""
        if out.ok:
            click.secho(f"  {key}: ok in {out.runtime_s or 0:.1f} s{mem}; {mean}", fg="green")
        else:
            failed += 1
            click.secho(f"  {key}: FAILED [{out.failure.value if out.failure else '?'}] {out.error}", fg="red")
            if out.log_tail:
                click.echo("    last log lines:\n      " + "\n      ".join(out.log_tail.strip().splitlines()[-8:]))
    click.echo(f"\n{len(res.cases) - failed}/{len(res.cases)} cases ok. The platform runs it like this:\n")
    click.echo(res.docker_run)
    if failed:
        sys.exit(1)


# -- metrics ----------------------------------------------------------------------------------
@main.group()
def metrics() -> None:
    """Score files directly, without a task or a server."""


@metrics.command("seg")
@click.argument("prediction", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("reference", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--labels", help="label ids, e.g. 1,2,5-7 (default: every label in either file)")
@click.option("--convention", type=click.Choice(["medpy", "max-directed", "mean-directed", "deepmind"]),
              default="medpy", show_default=True, help="surface-distance convention for HD95/ASSD/NSD")
@click.option("--percentile", type=float, default=95.0, show_default=True)
@click.option("--tolerance", type=float, default=1.0, show_default=True, help="NSD tolerance (mm)")
@click.option("--json", "as_json", is_flag=True, help="print {label: {metric: value}} as JSON")
def metrics_seg(prediction: Path, reference: Path, labels: str | None, convention: str, percentile: float,
                tolerance: float, as_json: bool) -> None:
    """Score a PREDICTION label map against a REFERENCE (any SimpleITK format; same grid required)."""
    import json
    import math

    from arena.metrics.files import parse_labels, score_files

    try:
        scores = score_files(prediction, reference, parse_labels(labels), convention, percentile, tolerance)
    except ValueError as e:
        _fail(str(e))
    if as_json:
        clean = {str(lab): {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                            for k, v in vals.items()} for lab, vals in scores.items()}
        click.echo(json.dumps(clean, indent=2))
        return
    cols = ["dice", "jaccard", "hd95", "hd", "assd", "nsd", "volume_ref", "volume_pred"]
    units = {"hd95": "mm", "hd": "mm", "assd": "mm", "volume_ref": "mm³", "volume_pred": "mm³"}
    click.echo(f"convention {convention}, HD{percentile:g}, NSD at {tolerance:g} mm")
    click.echo(f"{'label':>6} " + " ".join(f"{c + (' ' + units[c] if c in units else ''):>15}" for c in cols))
    for lab, vals in scores.items():
        cells = ["–" if vals[c] is None else f"{vals[c]:.4f}" if c in ("dice", "jaccard", "nsd") else f"{vals[c]:.2f}"
                 for c in cols]
        click.echo(f"{lab:>6} " + " ".join(f"{x:>15}" for x in cells))


@metrics.command("det")
@click.argument("ground_truth", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("predictions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--criterion", type=click.Choice(["distance", "inside-radius", "iou", "centre-in-box"]),
              default="distance", show_default=True, help="what makes a prediction hit a finding")
@click.option("--threshold", type=float, help="distance (mm/px) or IoU for the criterion")
@click.option("--matching", type=click.Choice(["greedy", "luna16"]), default="greedy", show_default=True,
              help="greedy one-to-one by probability, or the LUNA16 script's rule")
@click.option("--score-threshold", type=float, default=0.5, show_default=True,
              help="probability cut-off for precision / recall / F1")
@click.option("--json", "as_json", is_flag=True, help="print every number as JSON")
def metrics_det(ground_truth: Path, predictions: Path, criterion: str, threshold: float | None, matching: str,
                score_threshold: float, as_json: bool) -> None:
    """Score detections (grand-challenge JSON or LUNA16-style CSV) against GROUND_TRUTH."""
    import json

    from arena.metrics.detection import read_detections, score_detection

    try:
        gt = read_detections(ground_truth, default_diameter_mm=10.0)
        pred = read_detections(predictions)
        images = sorted(set(gt["image"]) | set(pred["image"]), key=str)
        res = score_detection(pred, gt, criterion=criterion, threshold=threshold, matching=matching,
                              images=images, score_threshold=score_threshold)
    except ValueError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(res, indent=2, default=str))
        return
    froc = res["froc"]
    click.echo(f"{res['counts']}")
    click.echo("FROC sensitivity at FPs/image: " + ", ".join(
        f"{r:g}: {s:.3f}" for r, s in zip(froc["fp_rates"], froc["sensitivity_interpolated"])))
    click.echo(f"CPM interpolated {froc['cpm_interpolated']:.4f}, nearest {froc['cpm_nearest']:.4f}")
    click.echo(f"AP ({'all-point'}) {res['ap']:.4f}; at p ≥ {score_threshold:g}: " + ", ".join(
        f"{k} {v:.3f}" for k, v in res["at_threshold"].items() if isinstance(v, float)))


# -- images -----------------------------------------------------------------------------------
@main.group()
def images() -> None:
    """Build images locally (no registry needed)."""


@images.command("build-base")
@click.option("--force", is_flag=True, help="rebuild even if the tag exists")
def images_build_base(force: bool) -> None:
    """Build arena/base:<version>-<contents> with mmdebstrap + docker import."""
    from arena.images.base import BASE_TAG, build_base_image

    t0 = time.monotonic()
    image_id = build_base_image(force=force, log=click.echo)
    click.echo(f"base image {BASE_TAG} ({image_id[:19]}) ready in {time.monotonic() - t0:.1f} s")


@images.command("base-tag")
def images_base_tag() -> None:
    """Print the base image's tag (for `docker build --build-arg BASE_IMAGE=$(arena images base-tag)`)."""
    from arena.images.base import BASE_TAG

    click.echo(BASE_TAG)


@images.command("build-example")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to write the docker save tarball (default: ARENA_HOME/examples/)")
def images_build_example(output: Path | None) -> None:
    """Build the example algorithm (examples/threshold-segmenter) and save it as a tarball."""
    path = build_example(load_settings(), output, log=click.echo)
    click.echo(str(path))


def build_example(settings, output: Path | None = None, log=print) -> Path:
    from arena.images.base import BASE_TAG, build_base_image
    from arena.images.build import build_image, save_image

    build_base_image(log=log)
    tag = f"arena/example-threshold-segmenter:{__version__}"
    build_image(str(EXAMPLE_DIR), tag, BASE_TAG, log=lambda line: None)
    output = output or settings.home / "examples" / "threshold-segmenter.tar.gz"
    output.parent.mkdir(parents=True, exist_ok=True)
    save_image(tag, str(output), compress=True)
    log(f"example algorithm saved: {output} ({output.stat().st_size / 1e6:.1f} MB)")
    return output


# -- demo -------------------------------------------------------------------------------------
#: ``arena demo --all-tasks``: (task folder, phase, example build-arg TASK or "replay" or None, real data)
DEMO_CT_TASKS = (("han-oar-9", "validation", "han-oar-9", False),
                 ("thoracic-oar-6", "validation", "thoracic-oar-6", False),
                 ("han-oar-openkbp", "test", "han-oar-openkbp", True),
                 ("abdomen-totalseg", "test", "replay", True))


def build_example_variant(settings, mode: str, log=print) -> Path:
    """The example algorithm built for another task's label ids (``--build-arg TASK=mode``), saved as a tarball."""
    from arena.images.base import BASE_TAG, build_base_image
    from arena.images.build import build_image, save_image

    build_base_image(log=log)
    tag = f"arena/example-threshold-segmenter-{mode}:{__version__}"
    build_image(str(EXAMPLE_DIR), tag, BASE_TAG, log=lambda line: None, buildargs={"TASK": mode})
    output = settings.home / "examples" / f"threshold-segmenter-{mode}.tar.gz"
    output.parent.mkdir(parents=True, exist_ok=True)
    save_image(tag, str(output), compress=True)
    return output


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


def _demo_all_tasks(settings, ctx, cases: int, size: str, step) -> list[tuple[str, str, int]]:
    """Set up every shipped task besides han-oar-22 and submit its example; returns (slug, phase, submission)."""
    from sqlalchemy import select

    from arena.db import session_scope
    from arena.models import Submission
    from arena.tasks.store import DataUnavailable, list_real_cases
    from arena.tasks.spec import load_spec

    out = []
    for slug, phase_slug, mode, real in DEMO_CT_TASKS:
        task_dir = REPO_ROOT / "tasks" / slug
        if real:
            try:
                list_real_cases(task_dir, load_spec(task_dir))
            except DataUnavailable as e:
                click.secho(f"  {slug}: skipped ({e})", fg="yellow")
                continue
        step(f"task {slug}" + (" with its real cases" if real else f" with {cases} synthetic cases ({size})"))
        ctx.invoke(task_load, task_dir=task_dir, demo=0 if real else cases, size=size, real=True)
        if mode == "replay":
            tarball, label = build_replay(settings, log=click.echo), "TotalSegmentator fast (replayed)"
        else:
            tarball, label = build_example_variant(settings, mode, log=click.echo), f"threshold-segmenter {__version__}"
        ctx.invoke(submit, tarball=tarball, task_slug=slug, phase_slug=phase_slug, user_name="demo", label=label,
                   wait=False)
        with session_scope(settings.database_url) as s:
            out.append((slug, phase_slug, s.scalar(select(Submission.id).order_by(Submission.id.desc()))))
    step("pathology tasks (signet-ring-cells, colon-tissue)")
    from arena.tasks.store import load_demo_cases, upsert_task

    with session_scope(settings.database_url) as s:
        for pslug in ("signet-ring-cells", "colon-tissue"):
            ptask = upsert_task(s, REPO_ROOT / "tasks" / pslug)
            load_demo_cases(s, settings, ptask, max(cases, 8), size="small")
            click.echo(f"task {pslug}: " + ", ".join(f"{p.slug} {len(p.cases)} tiles" for p in ptask.phases))
        out.append(("signet-ring-cells", "validation", None))  # its entry: the cell_detector reference model
    return out


#: The bundled reference models the demo runs, per task and phase (cell_detector only with --all-tasks).
DEMO_REFERENCE = (("han-oar-22", "validation", ("anatomynet", "focusnetv2", "multiatlas")),
                  ("signet-ring-cells", "validation", ("cell_detector",)))


def _demo_reference(settings, tasks: set[str], step) -> list[int]:
    """Build the reference models of the demo's tasks and submit them as "Reference models" entries
    (idempotent: an image already submitted to the phase is not submitted again); returns submission IDs."""
    from arena import reference
    from arena.images.base import BASE_TAG

    runs = [(slug, phase, names) for slug, phase, names in DEMO_REFERENCE if slug in tasks]
    names = [n for _, _, ns in runs for n in ns]
    step(f"reference models: building {', '.join(names)}")
    reference.build(BASE_TAG, names, log=click.echo)
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
@click.option("--cases", default=4, show_default=True, help="synthetic cases (split over the phases)")
@click.option("--size", default="small", show_default=True, help="phantom size (small | medium | realistic)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--serve/--no-serve", default=True, help="serve the leaderboard at the end")
@click.option("--all-tasks", is_flag=True, help="also set up every shipped task with a board: han-oar-9, "
              "thoracic-oar-6 (synthetic), han-oar-openkbp, abdomen-totalseg (real shared data) and the pathology "
              "tasks, each with an example or replay submission where one exists")
@click.option("--reference/--no-reference", "with_reference", default=True, show_default=True,
              help="build the bundled reference models and run them as reference entries: AnatomyNet, FocusNetv2 "
              "and the multi-atlas baseline on han-oar-22, cell_detector on signet-ring-cells (with --all-tasks)")
def demo(cases: int, size: str, host: str, port: int, serve: bool, all_tasks: bool, with_reference: bool) -> None:
    """Everything end to end: services, base image, demo task, example submission, the bundled reference
    models, run, leaderboard."""
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
    step("example algorithm image")
    tarball = build_example(settings, log=click.echo)
    step(f"task han-oar-22 with {cases} synthetic cases ({size})")
    ctx = click.get_current_context()
    ctx.invoke(task_load, task_dir=DEMO_TASK_DIR, demo=cases, size=size)
    with session_scope(settings.database_url) as s:
        if s.scalar(select(User).where(User.name == "demo")) is None:
            create_user(s, "demo", team="Arena examples")
    step("submitting the example algorithm to phase 'validation'")
    ctx.invoke(submit, tarball=tarball, task_slug="han-oar-22", phase_slug="validation", user_name="demo",
               label=f"threshold-segmenter {__version__}", wait=False)
    with session_scope(settings.database_url) as s:
        from arena.models import Submission

        sub_id = s.scalar(select(Submission.id).order_by(Submission.id.desc()))
    more = _demo_all_tasks(settings, ctx, cases, size, step) if all_tasks else []
    refs = _demo_reference(settings, {"han-oar-22", *(slug for slug, _, _ in more)}, step) if with_reference else []
    worker_log = settings.home / "demo-worker.log"
    step(f"running a worker until the queue is empty (log: {worker_log})")
    with open(worker_log, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker", "--burst"], stdout=logf,
                                stderr=subprocess.STDOUT)
        for other in [sub_id, *(o for _, _, o in more if o is not None), *refs]:
            click.echo(f"submission {other}: {_watch(settings, other)}")
        if proc.wait() != 0:
            _fail(f"the worker exited with code {proc.returncode}; see {worker_log}")
    if not _print_board(settings, "han-oar-22", "validation", step):
        _fail("the example submission produced no result; see `arena status 1`")
    url = f"http://{host}:{port}/tasks/han-oar-22?phase=validation"
    for slug, phase_slug, _ in more:
        _print_board(settings, slug, phase_slug, step)
        click.echo(f"  http://{host}:{port}/tasks/{slug}?phase={phase_slug}")
    click.secho(f"Leaderboard: {url}", fg="green", bold=True)
    if serve:
        from arena.web import create_app

        create_app(settings).run(host=host, port=port, threaded=True)


from arena.cli_backup import export_cmd, import_cmd  # noqa: E402

main.add_command(export_cmd)
main.add_command(import_cmd)

from arena.cli_client import login, results  # noqa: E402

main.add_command(login)
main.add_command(results)
from arena.cli_reference import reference as _reference  # noqa: E402
main.add_command(_reference)


if __name__ == "__main__":
    main()
