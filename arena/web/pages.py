"""HTML pages: task list, task page with its leaderboard, submission page (case i/N, per-case scores)."""

from __future__ import annotations

import io

from flask import Blueprint, Response, abort, g, render_template, request
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from arena.leaderboard.query import leaderboard, result_version
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
    spec = spec_of(task)
    organs = request.args.get("organs") or spec.ranking.primary
    board_html = _board_fragment(task, phase, spec, organs)
    recent = g.db.scalars(select(Submission).where(Submission.phase_id == phase.id)
                          .options(selectinload(Submission.evaluations), selectinload(Submission.team))
                          .order_by(Submission.id.desc()).limit(20)).all()
    return render_template("task.html", task=task, spec=spec, phase=phase, board_html=board_html, recent=recent)


_FRAGMENTS: dict[tuple, Markup] = {}


def _board_fragment(task: Task, phase, spec, organs: str) -> Markup:
    """The board's HTML, rendered once per result version and column choice (a 200-entry board with
    per-organ columns of every metric is ~10⁴ cells). ``organs``: a metric name or "all"."""
    key = (phase.id, result_version(g.db, phase), organs)
    html = _FRAGMENTS.get(key)
    if html is None:
        board = leaderboard(g.db, task, phase)
        organ_metrics = [m for m in spec.metrics if organs == "all" or m.name == organs]
        html = Markup(render_template("_board.html", task=task, spec=spec, phase=phase, board=board,
                                      organ_metrics=organ_metrics))
        if len(_FRAGMENTS) > 64:
            _FRAGMENTS.clear()
        _FRAGMENTS[key] = html
    return html


@pages.get("/tasks/<slug>/leaderboard.csv")
def leaderboard_csv(slug: str):
    task = _task_or_404(slug)
    phase = _phase_or_404(task, request.args.get("phase"))
    board = leaderboard(g.db, task, phase)
    buf = io.StringIO()
    board.table.to_csv(buf, index=False)
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={slug}-{phase.slug}-leaderboard.csv"})


def _svg(svg: str) -> Response:
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "no-cache"})


@pages.get("/tasks/<slug>/rank-distribution.svg")
def rank_distribution(slug: str):
    from arena.leaderboard.plots import rank_distribution_svg

    task = _task_or_404(slug)
    phase = _phase_or_404(task, request.args.get("phase"))
    board = leaderboard(g.db, task, phase)
    if board.bootstrap is None:
        abort(404, description="no rank distribution: fewer than two entries or cases")
    teams = dict(zip(board.entries["entry"], board.entries["team"]))
    return _svg(rank_distribution_svg(board.bootstrap, names=teams,
                                      title=f"Rank distribution ({len(phase.cases)} cases bootstrapped)"))


def _board_request(slug: str):
    """(task, phase, spec, metric, board, entries) from the URL: ?phase=, ?metric= (default: the task's
    primary metric), ?entry= (repeatable; only entries on the board are kept)."""
    task = _task_or_404(slug)
    phase = _phase_or_404(task, request.args.get("phase"))
    spec = spec_of(task)
    metric = request.args.get("metric") or spec.ranking.primary
    if metric not in [m.name for m in spec.metrics]:
        abort(404, description=f"no metric {metric!r}")
    board = leaderboard(g.db, task, phase)
    entries = [int(e) for e in request.args.getlist("entry") if e.isdigit() and int(e) in board.names]
    return task, phase, spec, metric, board, entries


@pages.get("/tasks/<slug>/distributions")
def distributions(slug: str):
    """Per-organ boxplots across cases for the top entries (or those named in ?entry=)."""
    task, phase, spec, metric, board, chosen = _board_request(slug)
    chosen = chosen or [int(e) for e in board.table.dropna(subset=["rank"])["entry"].head(4)]
    return render_template("distributions.html", task=task, spec=spec, phase=phase, board=board, metric=metric,
                           chosen=chosen)


@pages.get("/tasks/<slug>/distributions.svg")
def distributions_svg(slug: str):
    from arena.leaderboard.plots import boxplot_svg

    task, phase, spec, metric, board, entries = _board_request(slug)
    if not entries or board.scores.empty:
        abort(404, description="no entries to plot")
    return _svg(boxplot_svg(board.scores, entries, metric, labels=list(spec.labels),
                            label_names={k: v.name for k, v in spec.labels.items()}, names=board.names))


@pages.get("/tasks/<slug>/compare")
def compare(slug: str):
    """Entry A vs entry B per organ: paired per-case differences, Wilcoxon signed-rank, Holm-corrected."""
    from arena.leaderboard.plots import forest_plot_svg
    from arena.leaderboard.statistics import pairwise_compare

    task, phase, spec, metric, board, _ = _board_request(slug)
    ranked = [int(e) for e in board.table.dropna(subset=["rank"])["entry"]]
    try:
        a = int(request.args.get("a") or ranked[0])
        b = int(request.args.get("b") or ranked[1])
    except (IndexError, ValueError):
        abort(404, description="comparing needs two ranked entries")
    if a not in board.names or b not in board.names:
        abort(404, description="unknown entry")
    result = pairwise_compare(board.scores, a, b, metric, label_names={k: v.name for k, v in spec.labels.items()},
                              higher_is_better=spec.higher_is_better(metric))
    svg = forest_plot_svg(result, a_name=board.names[a], b_name=board.names[b],
                          title=f"{metric}: {board.names[a]} − {board.names[b]} (per case, paired)")
    return render_template("compare.html", task=task, spec=spec, phase=phase, board=board, metric=metric, a=a, b=b,
                           result=result.to_dict(orient="records"), svg=svg)


@pages.get("/submissions/<int:submission_id>")
def submission(submission_id: int):
    sub = g.db.get(Submission, submission_id) or abort(404, description=f"no submission {submission_id}")
    view = submission_view(sub)
    spec = spec_of(sub.task)
    return render_template("submission.html", sub=sub, view=view, spec=spec,
                           label_names=[s.name for s in spec.labels.values()],
                           metrics=[m.name for m in spec.metrics])
