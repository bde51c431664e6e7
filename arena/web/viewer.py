"""The case viewer's pages (issue 16): a case's CT with the reference's and one or two models' contours.

Who sees what (docs/security.md, "The case viewer"): a case's pixels only where its phase shows case
results to everyone who may read the board (a public or revealed board, ``show_case_results: true``, scores
not hidden until a reveal), and to the task's organizers; a model's output only to its own team, to
organizers, and — for reference models — to everyone who may read the board. Anything else answers 404,
whether or not the case or submission exists. The drawing itself is :mod:`arena.viewer` (pure core).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NoReturn

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, request, url_for
from sqlalchemy import select

from arena.kinds import kind_for
from arena.lifecycle import EvaluationStatus
from arena.metrics.detection import read_detections
from arena.models import Case, CaseResult, Evaluation, Phase, Submission, Task, User
from arena.tasks.store import spec_of
from arena.users import is_organizer
from arena.viewer import render, tiles
from arena.viewer.case import CaseFiles, ModelOutput, ViewerCache
from arena.web.auth import can_view_board, me

viewer = Blueprint("viewer", __name__)

SHOWN_METRICS = ("dice", "hd95", "nsd")
CASE_URL = "/tasks/<slug>/phases/<phase_slug>/cases/<case_key>"


def case_pixels_visible(user: User | None, phase: Phase) -> bool:
    """May ``user`` see the images of ``phase``'s cases? Organizers always; others where the board is
    readable by everyone (public or revealed), the phase shows per-case results and no scores wait for a
    reveal. A phase whose board is hidden or whose case results are withheld (a test phase) shows its
    case pixels to organizers only."""
    if is_organizer(user, phase.task):
        return True
    return (phase.board_public() and not phase.scores_hidden_from_teams()
            and spec_of(phase.task).phase(phase.slug).show_case_results)


def model_visible(user: User | None, sub: Submission) -> bool:
    """May ``user`` see ``sub``'s outputs (given they may see the case)? Its team, organizers, and anyone
    who may read the board for a reference model."""
    if is_organizer(user, sub.task):
        return True
    if user is not None and user.team_id is not None and user.team_id == sub.team_id:
        return True
    return bool(sub.team.is_reference) and can_view_board(user, sub.phase)


def _cache() -> ViewerCache:
    settings = current_app.config["ARENA"]
    return ViewerCache(settings.home / "viewer-cache", settings.results_dir, settings.viewer_cache_bytes)


def _case_or_404(slug: str, phase_slug: str, case_key: str, kind: str = "volume") -> tuple[Task, Phase, Case]:
    """The case if this visitor may see its pixels (404 otherwise, the same answer as for no such case)."""
    task = g.db.scalar(select(Task).where(Task.slug == slug))
    phase = next((p for p in task.phases if p.slug == phase_slug), None) if task is not None else None
    case = next((c for c in phase.cases if c.key == case_key), None) if phase is not None else None
    if case is None or not case_pixels_visible(me(), phase):
        abort(404, description=f"no case {case_key!r} in {slug}/{phase_slug} that you can see")
    if viewer_kind(task) != kind:
        abort(404, description=f"no {kind} view of this task's cases")
    return task, phase, case


def viewer_kind(task: Task) -> str | None:
    """``"volume"`` (CT/MR: slices), ``"tiles"`` (pathology tiles with boxes), or None (no viewer yet)."""
    spec = spec_of(task)
    if kind_for(spec).volumetric:
        return "volume"
    return "tiles" if spec.output_of_kind("bounding-boxes") is not None else None


def _output(sub: Submission, case: Case) -> tuple[Evaluation, CaseResult] | None:
    """The latest succeeded evaluation of ``sub`` with an output for ``case``, and that case's result."""
    for ev in reversed(sub.evaluations):
        if ev.status != EvaluationStatus.SUCCEEDED:
            continue
        cr = next((r for r in ev.case_results if r.case_id == case.id), None)
        if cr is not None and cr.output_path:
            return ev, cr
    return None


def _model_or_404(raw: str | None, phase: Phase, case: Case) -> tuple[Submission, Evaluation, CaseResult] | None:
    if raw in (None, ""):
        return None
    if not raw.isdigit() or int(raw) > 2**31 - 1:
        abort(404, description=f"no submission {raw!r}")
    sub = g.db.get(Submission, int(raw))
    if sub is None or sub.phase_id != phase.id or not model_visible(me(), sub):
        abort(404, description=f"no submission {raw} in this phase that you can see")
    found = _output(sub, case)
    if found is None:
        abort(404, description=f"submission {raw} has no output for case {case.key!r}")
    results = Path(current_app.config["ARENA"].results_dir).resolve()
    if results not in Path(found[1].output_path).resolve().parents:  # only the runner's own results folder
        abort(404, description=f"submission {raw} has no stored output for case {case.key!r}")
    return sub, found[0], found[1]


def _models(phase: Phase, case: Case) -> list[tuple[Submission, Evaluation, CaseResult]]:
    out = [m for m in (_model_or_404(request.args.get(k), phase, case) for k in ("a", "b")) if m is not None]
    if len(out) == 2 and out[0][0].id == out[1][0].id:
        out = out[:1]
    return out


def _cannot_show(case: Case, e: Exception, what: str = "images") -> NoReturn:
    """404 for a case whose files cannot be read or drawn; the reason goes to the server log, not the visitor."""
    current_app.logger.warning("viewer: case %s: %s", case.key, e)
    abort(404, description=f"this case's {what} cannot be shown (organizers: see the server log)")


def _files(case: Case) -> CaseFiles:
    return CaseFiles(case.id, Path(case.image_path), Path(case.reference_path))


def _choices(phase: Phase, case: Case) -> list[dict[str, Any]]:
    """The submissions of ``phase`` this visitor may show with ``case`` (newest first)."""
    user = me()
    with_output = set(g.db.scalars(  # one query, not one per submission: a phase may hold hundreds
        select(Evaluation.submission_id).join(CaseResult, CaseResult.evaluation_id == Evaluation.id)
        .where(CaseResult.case_id == case.id, CaseResult.output_path.is_not(None),
               Evaluation.status == EvaluationStatus.SUCCEEDED)))
    subs = g.db.scalars(select(Submission).where(Submission.phase_id == phase.id, Submission.id.in_(with_output))
                        .order_by(Submission.id.desc()))
    return [{"id": s.id, "team": s.team.name, "label": s.label or "", "reference": bool(s.team.is_reference)}
            for s in subs if model_visible(user, s)]


@viewer.app_template_global("viewer_url")
def viewer_url(sub: Submission, case_key: str) -> str | None:
    """The viewer of ``sub``'s output on case ``case_key`` for this visitor, or None where it would answer
    404 (tiles, a case whose pixels they may not see, no stored output): pages link only where it opens."""
    if viewer_kind(sub.task) is None or not case_pixels_visible(me(), sub.phase) or not model_visible(me(), sub):
        return None
    case = next((c for c in sub.phase.cases if c.key == case_key), None)
    if case is None or _output(sub, case) is None:
        return None
    return url_for("viewer.page", slug=sub.task.slug, phase_slug=sub.phase.slug, case_key=case_key, a=sub.id)


def _organs(task: Task) -> list[dict[str, Any]]:
    """The task's labels with their names and contour colours, by label id (the page's list, viewer.json's)."""
    labels = sorted(spec_of(task).labels.items())
    return [{"id": lab, "name": ls.name, "colour": render.organ_hex(lab)} for lab, ls in labels]


def _base_url(slug: str, phase_slug: str, case_key: str) -> str:
    """The case's URL, to which viewer.js adds ``/slice.png``, ``/viewer.json``, ``/tile.png`` ..."""
    return url_for("viewer.page", slug=slug, phase_slug=phase_slug, case_key=case_key).removesuffix("/view")


@viewer.get(CASE_URL + "/view")
def page(slug: str, phase_slug: str, case_key: str):
    task = g.db.scalar(select(Task).where(Task.slug == slug))
    if task is not None and viewer_kind(task) == "tiles":
        return tile_page(slug, phase_slug, case_key)
    task, phase, case = _case_or_404(slug, phase_slug, case_key)
    models = _models(phase, case)
    return render_template("viewer.html", task=task, phase=phase, case=case, organs=_organs(task),
                           choices=_choices(phase, case), a=models[0][0].id if models else None,
                           b=models[1][0].id if len(models) > 1 else None, windows=render.WINDOW_TITLES,
                           base=_base_url(slug, phase_slug, case_key))


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        abort(400, description=f"{name}: expected an integer, got {raw!r}")


@viewer.get(CASE_URL + "/slice.png")
def slice_png(slug: str, phase_slug: str, case_key: str):
    """One slice: ``view`` (axial/coronal/sagittal), ``i`` (slice index), ``window`` (a preset),
    ``organs`` (comma-separated label ids; absent: all, empty: none), ``a``/``b`` (submission ids),
    ``ref=0`` to leave out the reference."""
    task, phase, case = _case_or_404(slug, phase_slug, case_key)
    models = _models(phase, case)
    view, window = request.args.get("view", "axial"), request.args.get("window", "soft-tissue")
    if view not in render.VIEWS:
        abort(400, description=f"view: expected one of {render.VIEWS}, got {view!r}")
    if window not in render.WINDOWS:
        abort(400, description=f"window: expected one of {tuple(render.WINDOWS)}, got {window!r}")
    organs = None
    if "organs" in request.args:
        raw = request.args["organs"]
        try:
            organs = [int(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            abort(400, description=f"organs: expected comma-separated label ids, got {raw!r}")
    try:
        png = _cache().slice_png(_files(case), [ModelOutput(ev.id, Path(cr.output_path)) for _, ev, cr in models],
                                 view, _int_arg("i", 0), window, organs, show_reference=request.args.get("ref") != "0")
    except IndexError as e:
        abort(400, description=str(e))
    except (ValueError, FileNotFoundError) as e:
        _cannot_show(case, e)
    return Response(png, mimetype="image/png")


def _case_metrics(cr: CaseResult) -> dict[str, dict[str, float | None]]:
    """The stored Dice / HD95 (mm) / NSD of one case, per label id (None: excluded by the empty policy)."""
    out: dict[str, dict[str, float | None]] = {}
    for mv in cr.metrics:
        if mv.metric in SHOWN_METRICS:
            out.setdefault(str(mv.label), {})[mv.metric] = mv.value
    return out


def _worst_cases(ev: Evaluation, phase: Phase) -> dict[str, dict[str, Any]]:
    """Per label id, the phase case where ``ev`` scored its lowest Dice (ties: the first case key)."""
    in_phase = {c.id for c in phase.cases}
    worst: dict[str, dict[str, Any]] = {}
    for cr in sorted(ev.case_results, key=lambda r: r.case.key):
        if cr.case_id not in in_phase:
            continue
        for mv in cr.metrics:
            if mv.metric == "dice" and mv.value is not None:
                cur = worst.get(str(mv.label))
                if cur is None or mv.value < cur["dice"]:
                    worst[str(mv.label)] = {"case": cr.case.key, "dice": mv.value}
    return worst


@viewer.get(CASE_URL + "/viewer.json")
def data(slug: str, phase_slug: str, case_key: str):
    """The case's geometry, organs, and for each shown model its Dice / HD95 / NSD per organ on this case
    (the stored scores) and its worst case per organ. Fast: the jump-to targets are in ``targets.json``."""
    task, phase, case = _case_or_404(slug, phase_slug, case_key)
    models = _models(phase, case)
    try:
        geometry = _cache().geometry(_files(case))
    except (ValueError, FileNotFoundError) as e:
        _cannot_show(case, e)
    out_models = [{"role": role, "id": sub.id, "team": sub.team.name, "label": sub.label or "",
                   "reference": bool(sub.team.is_reference), "evaluation": ev.id, "metrics": _case_metrics(cr),
                   "worst": _worst_cases(ev, phase)} for role, (sub, ev, cr) in zip(("A", "B"), models)]
    return jsonify(case=case.key, task=task.slug, phase=phase.slug, geometry=geometry,
                   organs=_organs(task),
                   windows=render.WINDOW_TITLES, models=out_models)


@viewer.get(CASE_URL + "/targets.json")
def targets(slug: str, phase_slug: str, case_key: str):
    """Per shown model, per organ: the slice of largest disagreement with the reference in each view and the
    HD95 point (:mod:`arena.viewer.jump`, in the task's HD95 convention), computed once and cached."""
    task, phase, case = _case_or_404(slug, phase_slug, case_key)
    models = _models(phase, case)
    spec = spec_of(task)
    hd = next((m for m in spec.metrics if m.name == "hd95"), None)
    cache, files = _cache(), _files(case)
    try:
        out = [{"role": role, "id": sub.id,
                "targets": cache.targets(files, ModelOutput(ev.id, Path(cr.output_path)), sorted(spec.labels),
                                         hd.convention if hd else "medpy", hd.percentile if hd else 95.0)}
               for role, (sub, ev, cr) in zip(("A", "B"), models)]
    except (ValueError, FileNotFoundError) as e:
        _cannot_show(case, e)
    return jsonify(models=out)


# -- pathology tiles ------------------------------------------------------------------------------
def _float_arg(name: str, default: float) -> float:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        abort(400, description=f"{name}: expected a number, got {raw!r}")
    return v


def _tile_data(task: Task, case: Case, models: list[tuple[Submission, Evaluation, CaseResult]]):
    """The tile's reference boxes (the kind's own reader), the model's boxes, the match at ``p``."""
    spec = spec_of(task)
    try:
        ref = kind_for(spec).load_reference(spec, Path(case.reference_path), Path(case.image_path))
        pred = read_detections(Path(models[0][2].output_path), image="case") if models else None
        p = _float_arg("p", 0.5)
        if not 0 <= p <= 1:
            abort(400, description=f"p: expected a probability in [0, 1], got {p}")
        d = spec.detection
        match = tiles.match_tile(ref.boxes, pred, d.criterion, d.threshold, d.matching, p) if pred is not None else None
    except (ValueError, FileNotFoundError) as e:
        _cannot_show(case, e, "tile")
    return ref, pred, match, p


def tile_page(slug: str, phase_slug: str, case_key: str):
    task, phase, case = _case_or_404(slug, phase_slug, case_key, "tiles")
    models = _models(phase, case)
    d = spec_of(task).detection
    return render_template("viewer_tiles.html", task=task, phase=phase, case=case, choices=_choices(phase, case),
                           a=models[0][0].id if models else None, criterion=d.criterion, threshold=d.threshold,
                           base=_base_url(slug, phase_slug, case_key))


@viewer.get(CASE_URL + "/tile.png")
def tile_png(slug: str, phase_slug: str, case_key: str):
    """The tile region ``x, y, w, h`` (tile pixels; absent: all) at most ``size`` px (≤ 2048) on its longer
    side, with the reference's and model ``a``'s boxes at probability threshold ``p`` (default 0.5)."""
    task, phase, case = _case_or_404(slug, phase_slug, case_key, "tiles")
    models = _models(phase, case)[:1]
    ref, pred, match, _ = _tile_data(task, case, models)
    try:
        tile = tiles.read_tile(Path(case.image_path))
    except (ValueError, FileNotFoundError) as e:
        _cannot_show(case, e, "tile")
    region = None
    if "w" in request.args:
        region = [_float_arg(k, 0.0) for k in ("x", "y", "w", "h")]
    size = int(min(max(_float_arg("size", tiles.MAX_SIDE), 64), 2048))
    try:
        img = tiles.render_tile(tile, ref.boxes, pred, match, region, size)
    except ValueError as e:
        abort(400, description=str(e))
    return Response(render.png_bytes(img), mimetype="image/png")


@viewer.get(CASE_URL + "/tile.json")
def tile_json(slug: str, phase_slug: str, case_key: str):
    """The tile's size, the task's matching rule and, with model ``a``, the counts at threshold ``p``:
    reference boxes found / missed, model boxes hit / false positive."""
    task, phase, case = _case_or_404(slug, phase_slug, case_key, "tiles")
    models = _models(phase, case)[:1]
    ref, pred, match, p = _tile_data(task, case, models)
    d = spec_of(task).detection
    return jsonify(case=case.key, width=ref.width, height=ref.height, criterion=d.criterion, threshold=d.threshold,
                   probability=p, counts=match.counts() if match is not None else {"reference": len(ref.boxes)},
                   model=({"id": models[0][0].id, "team": models[0][0].team.name} if models else None))
