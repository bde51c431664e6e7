"""An entry's public summary (issue 16): what anyone who may read a board may see of one of its entries.

``/tasks/<slug>/entries/<submission id>`` shows the entry's board row (rank, rank interval, P(first), the
means with their penalty marks, runtime and memory), its team, label, badge and provenance, and its mean per
organ and metric. With ``?organ=NAME&metric=M`` it lists that organ's per-case values of the entry, worst
first, penalties marked, and links each case into the case viewer.

Who sees what:

* the page itself: whoever may read the live board of the entry's phase (public or revealed boards; hidden
  or frozen boards: organizers only); anything else, a submission that is not on the board (an older
  submission of a team, a failed one) and a published (literature) row answer 404, the same answer as for
  no such submission;
* per-case values: only where the phase shows its cases to this visitor, the viewer's rule
  (:func:`arena.web.viewer.case_pixels_visible`): a phase that hides its cases (a test phase) shows
  participants only the aggregates its board shows, whoever's entry it is;
* a viewer link per case: only where the viewer would open it (:func:`viewer_cases`);
* a link to the full submission page: its own team and organizers (this page is rendered per request; the
  board, shared by every visitor, links here instead).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from flask import Blueprint, abort, g, render_template, request, url_for
from sqlalchemy import select

from arena.lifecycle import EvaluationStatus
from arena.metrics.directions import DISTANCE_METRICS
from arena.models import Case, CaseResult, Evaluation, Phase, Submission, Task, User
from arena.tasks.spec import TaskSpec
from arena.tasks.store import spec_of
from arena.users import is_organizer
from arena.web.auth import can_view_board, can_view_submission, me
from arena.web.boards import leaderboard
from arena.web.viewer import case_pixels_visible, model_visible, viewer_kind

if TYPE_CHECKING:
    import pandas as pd  # imported where used: processes that only take uploads never load pandas (boards.py)

entries = Blueprint("entries", __name__)


def _num(v: Any) -> float | None:
    """A board cell as a float, None for missing/NaN (pandas gives NaN where a row lacks a column)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def viewer_cases(user: User | None, phase: Phase, subs: list[Submission]) -> set[str]:
    """The keys of ``phase``'s cases on which the case viewer opens for ``user`` with all of ``subs`` shown
    (as models a and b): none when the task has no viewer, the phase hides its case pixels from ``user``
    (:func:`~arena.web.viewer.case_pixels_visible`) or one of ``subs`` is not theirs to see
    (:func:`~arena.web.viewer.model_visible`); else the cases where every one of ``subs`` has a stored output
    from a succeeded evaluation (the viewer answers 404 without one). One query per submission."""
    if (viewer_kind(phase.task) is None or not case_pixels_visible(user, phase)
            or not all(model_visible(user, s) for s in subs)):
        return set()
    keys: set[str] | None = None
    for sub in subs:
        found = set(g.db.scalars(
            select(Case.key).join(CaseResult, CaseResult.case_id == Case.id)
            .join(Evaluation, Evaluation.id == CaseResult.evaluation_id)
            .where(Evaluation.submission_id == sub.id, Evaluation.status == EvaluationStatus.SUCCEEDED,
                   CaseResult.output_path.is_not(None))))
        keys = found if keys is None else keys & found
    return keys or set()


def case_view_url(phase: Phase, case_key: str, a: int, b: int | None = None, organ: int | None = None) -> str:
    """The viewer's URL for ``case_key`` with model ``a`` (and ``b``), opening on organ label id ``organ``
    (viewer.js shows that organ alone and steps to the slice where model A disagrees most with the
    reference). Link to it only for cases :func:`viewer_cases` returned."""
    args: dict[str, Any] = {"a": a}
    if b is not None:
        args["b"] = b
    if organ is not None:
        args["organ"] = organ
    return url_for("viewer.page", slug=phase.task.slug, phase_slug=phase.slug, case_key=case_key, **args)


def largest_difference_views(board: Any, phase: Phase, user: User | None, a: int, b: int, metric: str
                             ) -> dict[Any, dict[str, Any]]:
    """For the compare page: per label id, the case where ``phase``'s board entries ``a`` and ``b``
    (evaluation ids) differ most on ``metric`` (largest |a − b| of their per-case values as the board has
    them, penalties included; ties: the first case key; none where they agree on every case), as
    ``{"case", "diff", "url"}`` with ``url`` the viewer showing A and B on that case and organ. Only cases
    :func:`viewer_cases` allows for ``user`` are considered, so a label is absent where the viewer would
    not open (hidden cases, another team's outputs, no viewer). ``phase`` is this request's (a cached
    board's own ORM objects belong to the session that computed it)."""
    ents = board.entries.set_index("entry")
    if a not in ents.index or b not in ents.index or board.scores.empty:
        return {}
    subs = [g.db.get(Submission, int(ents.loc[e, "submission_id"])) for e in (a, b)]
    keys = viewer_cases(user, phase, subs)
    s = board.scores
    s = s[(s["metric"] == metric) & s["entry"].isin([a, b]) & s["case"].isin(keys)]
    if s.empty:
        return {}
    wide = s.pivot_table(index=["label", "case"], columns="entry", values="value", aggfunc="first")
    if a not in wide.columns or b not in wide.columns:
        return {}
    diff = (wide[a] - wide[b]).abs().dropna().sort_index()
    out: dict[Any, dict[str, Any]] = {}
    for (label, case), d in diff.items():
        if d > 0 and (label not in out or d > out[label]["diff"]):  # equal everywhere: nothing to look at
            out[label] = {"case": str(case), "diff": float(d)}
    for label, v in out.items():
        v["url"] = case_view_url(phase, v["case"], subs[0].id, subs[1].id if b != a else None, label)
    return out


@entries.app_template_global("distance_ranges")
def distance_ranges(table: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Per distance column of a board (``hd95``, ``hd95:Brainstem``, ...: mm, lower is better), the range its
    colour scale spans: the smallest and largest value of the board's own entries without a penalty in that
    column (``penalties:<column>`` 0 or absent; published rows, measured on other data, left out), so that
    one missed organ's image-diagonal penalty does not push every measured value to the same colour. When
    fewer than two rows qualify, the range of all the column's values, published rows included (so that
    entries whose every value holds penalties still read as far from the papers'). Columns with no finite
    value are left out; a range may be a single value."""
    import pandas as pd

    out: dict[str, tuple[float, float]] = {}
    own = (table["badge"] != "published") if "badge" in table.columns else pd.Series(True, index=table.index)
    for col in table.columns:
        if str(col).split(":")[0] not in DISTANCE_METRICS:
            continue
        vals = pd.to_numeric(table[col], errors="coerce")
        pens = pd.to_numeric(table[f"penalties:{col}"], errors="coerce").fillna(0) if f"penalties:{col}" in \
            table.columns else pd.Series(0, index=table.index)
        measured = vals[own & (pens == 0) & vals.notna()]
        use = measured if len(measured) >= 2 else vals.dropna()
        if len(use):
            out[col] = (float(use.min()), float(use.max()))
    return out


@entries.app_template_global("cell_colour")
def cell_colour(value: Any, metric: str, span: tuple[float, float] | None = None) -> str | None:
    """The background of a board cell: red (worst) to green (best). Dice/NSD (0–1, higher is better) on
    their own scale; a distance metric (mm, lower is better) by where ``value`` lies in ``span`` (see
    :func:`distance_ranges`; outside it, the end's colour; a single-value span is green). None for a
    missing value, a distance without a span, or another metric."""
    v = _num(value)
    if v is None:
        return None
    if metric in DISTANCE_METRICS:
        if span is None:
            return None
        lo, hi = span
        t = 1.0 if hi <= lo else 1.0 - min(max((v - lo) / (hi - lo), 0.0), 1.0)
    elif metric in ("dice", "nsd"):
        t = min(max(v, 0.0), 1.0)
    else:
        return None
    return f"hsl({round(t * 120)}, 65%, 85%)"


def _entry(slug: str, submission_id: int) -> tuple[Task, Phase, TaskSpec, Any, dict[str, Any], Submission]:
    """(task, phase, spec, board, the entry's board row, submission) — 404 unless ``submission_id`` is an
    entry of a board this visitor may read live (the same answer whether or not the submission exists)."""
    user = me()
    sub = g.db.get(Submission, submission_id)
    missing = f"no entry {submission_id} on a board of {slug!r} that you can see"
    if sub is None or sub.task.slug != slug or not can_view_board(user, sub.phase):
        abort(404, description=missing)
    task, phase = sub.task, sub.phase
    if phase.frozen() and not is_organizer(user, task):
        abort(404, description=missing)
    board = leaderboard(g.db, task, phase)
    import pandas as pd  # the board imported it already

    t = board.table
    if t.empty or "submission_id" not in t.columns:
        abort(404, description=missing)
    hit = t[(pd.to_numeric(t["submission_id"], errors="coerce") == submission_id) & (t.get("badge") != "published")]
    if hit.empty:
        abort(404, description=missing)
    return task, phase, spec_of(task), board, hit.iloc[0].to_dict(), sub


def _organ_rows(spec: TaskSpec, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Per organ: its name, label id, weight, and per metric the board's mean and its penalty count."""
    out = []
    for lab, ls in spec.labels.items():
        cells = {}
        for m in spec.metrics:
            col = f"{m.name}:{ls.name}"
            cells[m.name] = {"value": _num(row.get(col)), "penalties": int(_num(row.get(f"penalties:{col}")) or 0)}
        out.append({"id": lab, "name": ls.name, "weight": ls.weight, "cells": cells})
    return out


def _case_rows(board: Any, spec: TaskSpec, entry: int, label: Any, metric: str) -> list[dict[str, Any]]:
    """The entry's values of organ ``label`` on each case, every metric of the task, worst ``metric`` first
    (lowest for higher-is-better metrics, highest for distances; missing values last, ties by case key)."""
    s = board.scores
    s = s[(s["entry"] == entry) & (s["label"] == label)]
    if s.empty:
        return []
    pen = s["penalty"] if "penalty" in s.columns else [False] * len(s)
    rows: dict[str, dict[str, Any]] = {}
    for case, m, v, p in zip(s["case"], s["metric"], s["value"], pen):
        r = rows.setdefault(str(case), {"case": str(case), "values": {}, "penalties": set()})
        r["values"][m] = _num(v)
        if bool(p):
            r["penalties"].add(m)
    hib = spec.higher_is_better(metric)

    def key(r: dict[str, Any]) -> tuple:
        v = r["values"].get(metric)
        return (v is None, 0.0 if v is None else (v if hib else -v), r["case"])

    return sorted(rows.values(), key=key)


@entries.get("/tasks/<slug>/entries/<int(max=2147483647):submission_id>")
def entry(slug: str, submission_id: int):
    """An entry's summary; with ``?organ=NAME&metric=M`` also that organ's per-case values (where shown)."""
    task, phase, spec, board, row, sub = _entry(slug, submission_id)
    user = me()
    organ_name, metric = request.args.get("organ"), request.args.get("metric") or spec.ranking.primary
    if metric not in [m.name for m in spec.metrics]:
        abort(404, description=f"no metric {metric!r} in task {slug!r}")
    organ = None
    if organ_name:
        organ = next(({"id": lab, "name": ls.name} for lab, ls in spec.labels.items() if ls.name == organ_name), None)
        if organ is None:
            abort(404, description=f"no organ {organ_name!r} in task {slug!r}")
    cases_shown = case_pixels_visible(user, phase)
    cases, viewable = [], set()
    if organ is not None and cases_shown:
        cases = _case_rows(board, spec, int(row["entry"]), organ["id"], metric)
        viewable = viewer_cases(user, phase, [sub])
    return render_template(
        "entry.html", task=task, phase=phase, spec=spec, row=row, sub=sub, organs=_organ_rows(spec, row),
        organ=organ, metric=metric, cases=cases, cases_shown=cases_shown, viewable=viewable,
        own=can_view_submission(user, sub), n_cases=len(phase.cases), num=_num,
        case_view_url=case_view_url, distance_metrics=DISTANCE_METRICS)
