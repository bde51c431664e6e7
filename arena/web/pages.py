"""HTML pages: task list, task page with its leaderboard, submission page (case i/N, per-case scores)."""

from __future__ import annotations

import io

from flask import Blueprint, Response, abort, g, render_template, request
from sqlalchemy import select

from arena.leaderboard.query import leaderboard
from arena.models import Submission, Task
from arena.tasks.store import spec_of
from arena.web.views import submission_view

pages = Blueprint("pages", __name__)


def _task_or_404(slug: str) -> Task:
    return g.db.scalar(select(Task).where(Task.slug == slug)) or abort(404, description=f"no task {slug!r}")


def _phase_or_404(task: Task, slug: str | None):
    if not slug:
        return task.phases[0]
    return next((p for p in task.phases if p.slug == slug), None) or abort(404, description=f"no phase {slug!r}")


@pages.get("/")
def index():
    tasks = g.db.scalars(select(Task).order_by(Task.slug)).all()
    return render_template("index.html", tasks=tasks)


@pages.get("/tasks/<slug>")
def task(slug: str):
    task = _task_or_404(slug)
    phase = _phase_or_404(task, request.args.get("phase"))
    board = leaderboard(g.db, task, phase)
    spec = spec_of(task)
    recent = g.db.scalars(select(Submission).where(Submission.phase_id == phase.id)
                          .order_by(Submission.id.desc()).limit(20)).all()
    return render_template("task.html", task=task, spec=spec, phase=phase, board=board, recent=recent)


@pages.get("/tasks/<slug>/leaderboard.csv")
def leaderboard_csv(slug: str):
    task = _task_or_404(slug)
    phase = _phase_or_404(task, request.args.get("phase"))
    board = leaderboard(g.db, task, phase)
    buf = io.StringIO()
    board.table.to_csv(buf, index=False)
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={slug}-{phase.slug}-leaderboard.csv"})


@pages.get("/submissions/<int:submission_id>")
def submission(submission_id: int):
    sub = g.db.get(Submission, submission_id) or abort(404, description=f"no submission {submission_id}")
    view = submission_view(sub)
    spec = spec_of(sub.task)
    return render_template("submission.html", sub=sub, view=view, spec=spec,
                           label_names=[s.name for s in spec.labels.values()],
                           metrics=[m.name for m in spec.metrics])
