"""The board wrappers the pages, the API and the organizer pages share: the board of a phase (its
leaderboard module imported on first use, so that processes that only take uploads never load pandas
and scipy) and the snapshot a frozen phase shows."""

from __future__ import annotations

import math

from flask import g

from arena.tasks.store import spec_of
from arena.web.views import entry_score, standing_view


def leaderboard(*a, **kw):  # imported on first use: pandas/scipy stay out of processes that only take uploads
    from arena.leaderboard.query import leaderboard as _leaderboard

    return _leaderboard(*a, **kw)


def result_version(*a, **kw):
    from arena.leaderboard.query import result_version as _result_version

    return _result_version(*a, **kw)


def penalty_cells(sub) -> set[tuple[int, str, str, str]]:
    """``(evaluation id, case key, label name, metric)`` of every distance value of a submission that is a
    penalty (a missed or hallucinated organ: the empty-mask policy's distance, e.g. the image diagonal),
    not a measurement — the submission page marks them (arena.leaderboard.ranking.is_penalty)."""
    from arena.leaderboard.query import penalty_distance
    from arena.leaderboard.ranking import is_penalty
    from arena.metrics.directions import DISTANCE_METRICS

    spec = spec_of(sub.task)
    out: set[tuple[int, str, str, str]] = set()
    pens: dict[int, float | None] = {}  # per case: a re-run scores the same cases again
    for ev in sub.evaluations:
        for cr in ev.case_results:
            dist = [mv for mv in cr.metrics if mv.metric in DISTANCE_METRICS and mv.value is not None]
            if not dist:
                continue
            if cr.case_id not in pens:
                pens[cr.case_id] = penalty_distance(spec, cr.case)
            pen = pens[cr.case_id]
            for mv in dist:
                if is_penalty(mv.value, pen):
                    name = spec.labels[mv.label].name if mv.label in spec.labels else str(mv.label)
                    out.add((ev.id, cr.case.key, name, mv.metric))
    return out


def frozen_board(phase) -> list[dict]:
    """The board as it was when the freeze began (taken at the first look after ``frozen_at``)."""
    if phase.frozen_board is None:
        snapshot_board(phase)
        g.db.commit()
    return phase.frozen_board or []


def snapshot_board(phase) -> None:
    """Store the phase's board as it is now in ``phase.frozen_board`` (plain JSON values, NaN as None)."""
    board = leaderboard(g.db, phase.task, phase)
    spec = spec_of(phase.task)
    keep = ["rank", "team", "label", "submission_id", "cases", "badge", "provenance", *[m.name for m in spec.metrics],
            "dataset", "caveats", "uncertainty", *[f"penalties:{m.name}" for m in spec.metrics]]
    rows = []
    for row in board.table.to_dict(orient="records"):
        rows.append({k: _plain(row.get(k)) for k in keep if k in row})
    phase.frozen_board = rows


def _plain(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


def submission_standing(session, sub, organizer: bool) -> dict:
    """Score and rank of ``sub`` as its viewer may see them (:func:`arena.web.views.standing_view`), for the
    top of its page, the API's submission and ``arena status``: from the live board for organizers and on
    public boards, from the frozen snapshot for participants while frozen; nothing from a hidden board."""
    phase = sub.phase
    readable = organizer or phase.board_public()
    frozen = readable and phase.frozen() and not organizer

    def rows() -> list[dict] | None:
        if not readable:
            return None
        if frozen:
            return frozen_board(phase)
        return leaderboard(session, sub.task, phase).table.to_dict(orient="records")

    return standing_view(sub, organizer=organizer, rows=rows, frozen=frozen, own_score=lambda: entry_score(session, sub))
