"""HTML pages: task list, task page with its leaderboard, submission page (case i/N, per-case scores)."""

from __future__ import annotations

from collections.abc import Callable

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from arena.csv_cells import frame_csv
from arena.models import Phase, Submission, Task
from arena.tasks.store import spec_of
from arena.users import is_organizer
from arena.web import board_cache
from arena.web.auth import can_view_board, can_view_submission, me, visible_submission_view
from arena.web.boards import frozen_board, leaderboard, penalty_cells, result_version, submission_standing
from arena.web.entries import largest_difference_views
from arena.web.training import training_response, training_summary
from arena.web.uploads import accept_upload
from arena.web.views import listed_status, phase_disclosure, phase_hides_cases

pages = Blueprint("pages", __name__)


@pages.app_template_global("submission_status")
def submission_status(sub: Submission) -> str:
    """A submission's status in the lists of a page, as the signed-in visitor may see it."""
    return listed_status(sub, me())


pages.add_app_template_global(phase_disclosure, "phase_disclosure")


@pages.app_template_global("team_quota")
def team_quota(phase) -> dict | None:
    """The signed-in visitor's team in ``phase``: ``limit`` and ``used`` per 24 h, ``left``, ``closed`` (why
    the phase takes no submissions now, or None) and ``frees_at`` (UTC, when no submission is left: when the
    oldest counted one leaves the 24-hour window; None otherwise). None without a team."""
    from arena.submissions.intake import quota, quota_frees_at

    user = me()
    if user is None or user.team is None:
        return None
    limit, used = quota(g.db, phase.task, phase, user.team)
    left = max(limit - used, 0)
    return {"limit": limit, "used": used, "left": left, "closed": phase.accepting(),
            "frees_at": quota_frees_at(g.db, phase, user.team) if left == 0 else None}


def _task_or_404(slug: str) -> Task:
    return g.db.scalar(select(Task).where(Task.slug == slug)) or abort(404, description=f"no task {slug!r}")


def _phase_or_404(task: Task, slug: str | None):
    if not slug:
        if not task.phases:
            abort(404, description="this task has no phases")
        return task.phases[0]
    return next((p for p in task.phases if p.slug == slug), None) or abort(404, description=f"no phase {slug!r}")


def _board_phase(task: Task, slug: str | None):
    """The phase whose board is asked for; 404 unless this visitor may see it (hidden boards: organizers)."""
    phase = _phase_or_404(task, slug)
    if not can_view_board(me(), phase):
        abort(404, description=f"the board of phase {phase.slug!r} is hidden")
    return phase


@pages.get("/")
def index():
    tasks = g.db.scalars(select(Task).order_by(Task.slug)).all()
    return render_template("index.html", tasks=tasks)


@pages.get("/tasks/<slug>")
def task(slug: str):
    """The task page with its board. Visitors without an account all get the same page: it is rendered once
    per state of what it shows and served pre-rendered (gzip, ETag, 304: :mod:`arena.web.board_cache`).
    Signed-in visitors get a page of their own (their menu, the sign-out form's CSRF token, their team's
    submissions), rendered per request around the shared board fragment (:func:`_board_fragment`)."""
    if me() is None and not session.get("_flashes"):
        return _public_task_page(slug)
    task = _task_or_404(slug)
    phase = _phase_or_404(task, request.args.get("phase"))
    spec = spec_of(task)
    return _render_task_page(task, phase, spec, _organs(spec))


def _organs(spec) -> str:
    """The board's per-organ columns asked for in ?organs=: a metric's name, "all", or "" (none: any other
    value); the task's primary metric by default."""
    organs = request.args.get("organs") or spec.ranking.primary
    return organs if organs == "all" or organs in [m.name for m in spec.metrics] else ""


def _render_task_page(task: Task, phase: Phase, spec, organs: str) -> str:
    """The task page's HTML for the signed-in visitor (or none): what they may see of ``phase``'s board
    (live, frozen snapshot or hidden), and their team's recent submissions (all teams' for organizers)."""
    user = me()
    organizer = is_organizer(user, task)
    board_html = frozen_rows = None
    if can_view_board(user, phase):
        if phase.frozen() and not organizer:
            frozen_rows = frozen_board(phase)
        else:
            board_html = _board_fragment(task, phase, spec, organs)
    recent = []
    if organizer or (user is not None and user.team_id is not None):
        q = select(Submission).where(Submission.phase_id == phase.id)
        if not organizer:
            q = q.where(Submission.team_id == user.team_id)
        recent = g.db.scalars(q.options(selectinload(Submission.evaluations), selectinload(Submission.team))
                              .order_by(Submission.id.desc()).limit(20)).all()
    return render_template("task.html", task=task, spec=spec, phase=phase, board_html=board_html, recent=recent,
                           frozen_rows=frozen_rows, organizer=organizer, primary=spec.ranking.primary,
                           training=training_summary(task))


def _public_task_page(slug: str) -> Response:
    """The task page as every visitor without an account sees it (no pending flash message), from
    :func:`arena.web.board_cache.cached_response`: re-rendered only when :func:`_public_page_state` changes."""
    phase_arg, organs_arg = request.args.get("phase"), request.args.get("organs")
    seen: dict = {}

    def check():
        task = _task_or_404(slug)
        phase = _phase_or_404(task, phase_arg)
        spec = spec_of(task)
        seen.update(task=task, phase=phase, spec=spec, organs=_organs(spec))
        return _public_page_state(task, phase, seen["organs"]), board_cache.seconds_to_phase_change(phase)

    def render() -> str:
        return _render_task_page(seen["task"], seen["phase"], seen["spec"], seen["organs"])

    return board_cache.cached_response(("task page", slug, phase_arg, organs_arg), check, render, "text/html")


def _public_page_state(task: Task, phase: Phase, organs: str) -> tuple:
    """Everything the task page shows a visitor without an account depends on: the task (its spec changes
    ``updated_at``), the phase tabs, the phase's settings and which of its set times have passed (open or
    closed, frozen, revealed), the training data summary, and the board as they may see it: hidden (nothing
    of the results), the frozen snapshot (new results during the freeze change nothing) or the live board
    (its result version and the column choice). A renamed team shows from the next result, as on the board
    cache (arena.leaderboard.query.result_version). Whatever task.html starts showing visitors without an
    account must enter this state too, or they see it late."""
    return (task.id, task.updated_at, task.title, tuple((p.id, p.slug, p.title) for p in task.phases),
            phase.id, phase.title, phase.visibility, phase.opens_at, phase.closes_at, phase.frozen_at,
            phase.reveal_at, board_cache.phase_times(phase), board_cache.digest(training_summary(task)),
            board_cache.board_state(phase), organs)


@pages.get("/tasks/<slug>/training-data")
def training_data(slug: str):
    """The task's training data as one tar (signed-in users; the archive streams from the data folder)."""
    task = _task_or_404(slug)
    if me() is None:
        return redirect(url_for("account.signin", next=request.path))
    return training_response(task)


_FRAGMENTS: dict[tuple, Markup] = {}


def _board_fragment(task: Task, phase, spec, organs: str) -> Markup:
    """The board's HTML, rendered once per result version and column choice (a 200-entry board with
    per-organ columns of every metric is ~10⁴ cells). ``organs``: a metric name or "all"."""
    hides_cases = phase_hides_cases(phase)  # changes at a private phase's reveal, not with the results
    key = (phase.id, result_version(g.db, phase), organs, hides_cases)
    html = _FRAGMENTS.get(key)
    if html is None:
        from arena.leaderboard.statistics import NOT_INFORMATIVE  # computing the board imported it already

        board = leaderboard(g.db, task, phase)
        organ_metrics = [m for m in spec.metrics if organs == "all" or m.name == organs]
        html = Markup(render_template("_board.html", task=task, spec=spec, phase=phase, board=board,
                                      organ_metrics=organ_metrics, not_informative=NOT_INFORMATIVE,
                                      hides_cases=hides_cases))
        if len(_FRAGMENTS) > 64:
            _FRAGMENTS.clear()
        _FRAGMENTS[key] = html
    return html


def _live_board(slug: str):
    """(task, phase, board) for ?phase=; a frozen board's live standings are for organizers only (404)."""
    task = _task_or_404(slug)
    phase = _board_phase(task, request.args.get("phase"))
    if phase.frozen() and not is_organizer(me(), task):
        abort(404, description="the board is frozen until its reveal; the page shows the frozen standings")
    return task, phase, leaderboard(g.db, task, phase)


@pages.get("/tasks/<slug>/leaderboard.csv")
def leaderboard_csv(slug: str):
    _, phase, board = _live_board(slug)
    return Response(frame_csv(board.table), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={slug}-{phase.slug}-leaderboard.csv"})


@pages.get("/tasks/<slug>/rank-distribution.svg")
def rank_distribution(slug: str):
    from arena.leaderboard.plots import rank_distribution_svg

    _, phase, board = _live_board(slug)
    if board.bootstrap is None:
        abort(404, description="no rank distribution: fewer than two entries or cases")

    def draw() -> str:
        teams = {r["entry"]: r["label"] if r["badge"] == "reference" else r["team"]  # reference models: by model
                 for r in board.entries.to_dict(orient="records")}
        return rank_distribution_svg(board.bootstrap, names=teams,
                                     title=f"Rank distribution ({len(phase.cases)} cases bootstrapped)")

    return board_cache.respond(_plot(phase, ("rank",), draw))


_PLOTS: dict[tuple, board_cache.Answer] = {}


def _plot(phase: Phase, what: tuple, draw: Callable[[], str]) -> board_cache.Answer:
    """The SVG ``draw()`` makes of ``phase``'s board, drawn once per database, result version and ``what``
    (the plot and its choices) and kept gzipped with its ETag (:func:`arena.web.board_cache.respond`: a
    browser that has it gets 304): matplotlib takes ~1 s for a 200-entry board, and every view of the task
    page loads the rank plot. Like :data:`_FRAGMENTS`, a renamed team shows from the next result. Callers
    check access first: a 304 only answers a visitor who may see the plot."""
    key = (current_app.config["ARENA"].database_url, phase.id, result_version(g.db, phase), *what)
    answer = _PLOTS.get(key)
    if answer is None:
        answer = board_cache.encode(draw(), "image/svg+xml")
        if len(_PLOTS) > 64:  # ?entry= is the visitor's choice: bounded
            _PLOTS.clear()
        _PLOTS[key] = answer
    return answer


def _board_request(slug: str):
    """(task, phase, spec, metric, board, entries) from the URL: ?phase=, ?metric= (default: the task's
    primary metric), ?entry= (repeatable; only entries on the board are kept)."""
    task, phase, board = _live_board(slug)
    if phase_hides_cases(phase) and not is_organizer(me(), task):  # arena.disclosure: means only
        abort(404, description="this phase shows participants no per-case results, so no per-case "
                               "distributions or paired comparisons either; the board's means are what it shows")
    spec = spec_of(task)
    metric = request.args.get("metric") or spec.ranking.primary
    if metric not in [m.name for m in spec.metrics]:
        abort(404, description=f"no metric {metric!r}")
    entries = [int(e) for e in request.args.getlist("entry") if e.isdigit() and int(e) in board.names]
    return task, phase, spec, metric, board, entries


def _boxplot(phase: Phase, spec, metric: str, board, entries: list[int]) -> board_cache.Answer:
    """The per-organ boxplot SVG of ``entries`` on ``metric`` (penalties flagged in board.scores drawn apart),
    drawn once per result version (:func:`_plot`)."""
    from arena.leaderboard.plots import boxplot_svg

    return _plot(phase, ("box", metric, tuple(entries)), lambda: boxplot_svg(
        board.scores, entries, metric, labels=list(spec.labels),
        label_names={k: v.name for k, v in spec.labels.items()}, names=board.names))


@pages.get("/tasks/<slug>/distributions")
def distributions(slug: str):
    """Per-organ boxplots across cases for the top entries (or those named in ?entry=); the SVG inline, so
    a cut name shows in full on hover."""
    task, phase, spec, metric, board, chosen = _board_request(slug)
    chosen = chosen or [int(e) for e in board.table.dropna(subset=["rank"])["entry"].head(4)]
    svg = _boxplot(phase, spec, metric, board, chosen).raw.decode() if chosen and not board.scores.empty else None
    return render_template("distributions.html", task=task, spec=spec, phase=phase, board=board, metric=metric,
                           chosen=chosen, svg=svg)


@pages.get("/tasks/<slug>/distributions.svg")
def distributions_svg(slug: str):
    task, phase, spec, metric, board, entries = _board_request(slug)
    if not entries or board.scores.empty:
        abort(404, description="no entries to plot")
    return board_cache.respond(_boxplot(phase, spec, metric, board, entries))


@pages.get("/tasks/<slug>/compare")
def compare(slug: str):
    """Entry A vs entry B per organ: paired per-case differences, Wilcoxon signed-rank, Holm-corrected; per
    organ a link to the case viewer with A and B on the case where they differ most, where it would open."""
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
    svg = _plot(phase, ("forest", metric, a, b),
                lambda: forest_plot_svg(result, a_name=board.names[a], b_name=board.names[b])).raw.decode()
    views = largest_difference_views(board, phase, me(), a, b, metric)  # per organ, where the viewer may open
    return render_template("compare.html", task=task, spec=spec, phase=phase, board=board, metric=metric, a=a, b=b,
                           result=result.to_dict(orient="records"), svg=svg, alpha=result.attrs["alpha"],
                           views=views)


def _visible_submission(submission_id: int) -> Submission:
    """The submission if this visitor may see it; 404 otherwise (no hint whether it exists)."""
    sub = g.db.get(Submission, submission_id)
    if sub is None or not can_view_submission(me(), sub):
        abort(404, description=f"no submission {submission_id} that you can see")
    return sub


@pages.get("/submissions/<int(max=2147483647):submission_id>")
def submission(submission_id: int):
    if me() is None:
        return redirect(url_for("account.signin", next=request.full_path))
    sub = _visible_submission(submission_id)
    view = visible_submission_view(sub, me())
    spec = spec_of(sub.task)
    st = view["status"].split(" ")[0]
    organizer = is_organizer(me(), sub.task)
    return render_template("submission.html", sub=sub, view=view, spec=spec, st=st,
                           live=st in ("uploaded", "validated", "queued", "running", "scoring"),
                           label_names=[s.name for s in spec.labels.values()],
                           metrics=[m.name for m in spec.metrics], organizer=organizer,
                           standing=submission_standing(g.db, sub, organizer),
                           penalties=penalty_cells(sub) if any(e.get("cases") for e in view["evaluations"]) else set())


@pages.get("/submissions/<int(max=2147483647):submission_id>/upload")
def submission_upload(submission_id: int):
    """The uploaded image archive, for its team and the task's organizers."""
    sub = _visible_submission(submission_id)
    if not sub.upload_path:
        abort(404, description="the upload is no longer stored")
    from pathlib import Path

    path = Path(sub.upload_path)
    if not path.is_file():
        abort(404, description="the upload is no longer stored")
    return send_file(path, as_attachment=True, download_name=sub.upload_name or f"submission-{sub.id}.tar",
                     mimetype="application/x-tar")


@pages.get("/tasks/<slug>/submit")
def submit_form(slug: str):
    """The upload form: per phase, the team's submissions left (and when the next one frees), what the team
    will see of its results; phases closed or without a submission left cannot be chosen."""
    user = me()
    if user is None:
        return redirect(url_for("account.signin", next=request.full_path))
    task = _task_or_404(slug)
    phases = [{"phase": p, **(team_quota(p) or {"limit": 0, "used": 0, "left": 0, "closed": p.accepting(),
                                                 "frees_at": None})} for p in task.phases]
    open_ = [p["phase"].slug for p in phases if p["left"] and not p["closed"]]
    chosen = request.args.get("phase")
    chosen = chosen if chosen in open_ else (open_[0] if open_ else "")
    return render_template("submit.html", task=task, phases=phases, chosen=chosen, user=user,
                           max_mb=current_app.config["ARENA"].max_upload_bytes / 2**20)


@pages.post("/tasks/<slug>/phases/<phase_slug>/upload")
def upload(slug: str, phase_slug: str):
    """The browser's upload (XMLHttpRequest, CSRF token in X-CSRFToken): the raw body is the tarball,
    streamed to disk as it arrives; JSON back, as from the API."""
    user = me()
    if user is None:
        return jsonify(error="sign in first"), 401
    return accept_upload(user, slug, phase_slug, request.args.get("label"), request.args.get("filename"),
                         request.args.get("model"))
