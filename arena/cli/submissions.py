"""``arena submit``, ``status``, ``results``, ``rerun`` and ``try``: submissions in local mode (the database),
or over HTTP through arena.cli.client when a server is configured."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from arena.cli.client import _request, client_settings, status_http, submit_http
from arena.cli.root import _fail, main
from arena.config import load_settings


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
    conf = client_settings(server)
    if conf is not None:
        return status_http(*conf, submission_id, follow)
    if submission_id is None:
        _fail("give a submission ID (listing needs a server: arena login)")
    if follow:
        _watch(load_settings(), submission_id)
    from arena.db import session_scope
    from arena.models import Submission
    from arena.web.boards import submission_standing
    from arena.web.views import standing_text, submission_view

    with session_scope(load_settings().database_url) as s:
        sub = s.get(Submission, submission_id)
        if sub is None:
            _fail(f"no submission {submission_id}")
        view = submission_view(sub, viewer_is_organizer=True)
        standing = submission_standing(s, sub, organizer=True)  # the local database: the organizer's view
    click.echo(f"submission {view['id']} ({view['team']}, {view['task']}/{view['phase']}): {view['status']}")
    if view["error"]:
        click.echo(f"  error: {view['error']}")
    click.echo(f"  {standing_text(standing)}")
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


@main.command()
@click.argument("submission_id", type=int)
@click.option("--csv", "as_csv", is_flag=True, help="CSV: one row per case and label, every metric a column")
@click.option("--server", default=None, help="server URL (default: from `arena login`)")
def results(submission_id: int, as_csv: bool, server: str | None) -> None:
    """Per-case, per-label results of a submission (as the phase's visibility allows)."""
    conf = client_settings(server)
    if conf is None:
        from arena.db import session_scope
        from arena.models import Submission
        from arena.web.export import result_rows, to_csv

        with session_scope(load_settings().database_url) as s:
            sub = s.get(Submission, submission_id)
            if sub is None:
                _fail(f"no submission {submission_id}")
            rows = result_rows([sub])
        text = to_csv(rows)
    else:
        text = _request("GET", *conf, f"/submissions/{submission_id}/results", params={"format": "csv"}).text
    if as_csv:
        click.echo(text, nl=False)
        return
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        click.echo("no per-case results to show (still running, or hidden in this phase)")
        return
    metrics = [k for k in rows[0] if k not in ("evaluation_id", "submission_id", "team", "phase", "case", "case_status",
                                                "failure", "runtime_s", "peak_memory_mb", "gpu_memory_peak_mb",
                                                "label", "label_name") and not k.endswith("_penalty")]
    click.echo(f"{'evaluation':>10} {'case':<16} {'label':<16} " + " ".join(f"{m:>11}" for m in metrics))
    penalties = 0
    for r in rows:
        cells = []
        for m in metrics:
            pen = r.get(f"{m}_penalty") == "True"  # the export's flag: a filled-in distance, not a measurement
            penalties += pen
            cells.append(f"{float(r[m]):>10.3f}{'*' if pen else ' '}" if r[m] else f"{'–':>10} ")
        click.echo(f"{r['evaluation_id']:>10} {r['case']:<16} {r['label_name']:<16} {' '.join(cells)}")
    if penalties:
        click.echo(f"* {penalties} penalty value(s): the empty-mask policy's distance for a missed organ or a failed "
                   "case, not a measured one")


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
