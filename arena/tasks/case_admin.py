"""Listing, removing and moving a task's cases (``arena task cases|remove-case|move-case`` and the
organizer page's case table).

Scored cases are protected: removing or moving a case that an evaluation has already scored is refused
unless ``force`` is given, because it changes boards that teams have seen. With ``force``:

* **remove** deletes the case's results (its per-case scores and metric values) with it, so every board
  of the phase is recomputed without the case for all entries alike; the evaluations themselves and their
  other cases' results are kept. The stored image and reference are deleted.
* **move** keeps the results with the evaluations that produced them; boards show only a phase's current
  cases, so the case leaves its old phase's boards, and in its new phase entries evaluated before the
  move count it as missing until they are re-run. (Moving a scored validation case into a hidden test
  phase would disclose it: that is why it needs ``force``.)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from arena.config import Settings
from arena.models import Case, CaseResult, Phase, Task


class CaseAdminError(ValueError):
    """A case operation refused; the message says why and what to do."""


@dataclass(frozen=True)
class CaseRow:
    """One line of a task's case list. ``size`` in voxels and ``spacing`` in mm (ITK x, y, z order), None
    for tiles and cases loaded before geometry was recorded; ``labels_present``: task label ids in the
    reference (None: not recorded); ``results``: evaluations that scored the case."""

    key: str
    phases: list[str]
    size: list[int] | None
    spacing: list[float] | None
    labels_present: list[int] | None
    results: int
    synthetic: bool

    def as_dict(self) -> dict:
        return {"case": self.key, "phases": self.phases, "size": self.size, "spacing_mm": self.spacing,
                "labels_present": self.labels_present, "scored_by_evaluations": self.results,
                "synthetic": self.synthetic}


def list_cases(session: Session, task: Task, phase: str | None = None) -> list[CaseRow]:
    """The task's cases by id (only those of ``phase`` when given) with phases, geometry and labels."""
    in_phase: dict[int, list[str]] = {}
    for ph in task.phases:
        for c in ph.cases:
            in_phase.setdefault(c.id, []).append(ph.slug)
    scored = dict(session.execute(select(CaseResult.case_id, func.count(func.distinct(CaseResult.evaluation_id)))
                                  .join(Case, Case.id == CaseResult.case_id).where(Case.task_id == task.id)
                                  .group_by(CaseResult.case_id)).all())
    rows = []
    for c in session.scalars(select(Case).where(Case.task_id == task.id).order_by(Case.key)):
        phases = in_phase.get(c.id, [])
        if phase is not None and phase not in phases:
            continue
        meta = c.meta or {}
        geom = meta.get("geometry") or {}
        rows.append(CaseRow(c.key, phases, geom.get("size"), [round(s, 4) for s in geom["spacing"]]
                            if geom.get("spacing") else None, meta.get("labels_present"), scored.get(c.id, 0),
                            bool(meta.get("synthetic", str(c.key).startswith("demo-")))))
    return rows


def _case(session: Session, task: Task, key: str) -> Case:
    case = session.scalar(select(Case).where(Case.task_id == task.id, Case.key == key))
    if case is None:
        raise CaseAdminError(f"task {task.slug} has no case {key!r}")
    return case


def _results(session: Session, case: Case) -> list[CaseResult]:
    return list(session.scalars(select(CaseResult).where(CaseResult.case_id == case.id)))


def remove_case(session: Session, settings: Settings, task: Task, key: str, force: bool = False) -> int:
    """Remove case ``key`` from ``task``: its phases, its row and its stored files. Refused
    (:class:`CaseAdminError`) when evaluations scored it, unless ``force``: then its results go too.
    Returns how many case results were deleted. Files are deleted after the rows are flushed."""
    case = _case(session, task, key)
    results = _results(session, case)
    if results and not force:
        n = len({r.evaluation_id for r in results})
        raise CaseAdminError(f"case {key} of {task.slug} was scored by {n} evaluation(s); removing it changes "
                             "their boards. Use --force to remove it with its results")
    for r in results:
        session.delete(r)  # metric values go with it (cascade)
    for ph in task.phases:
        if case in ph.cases:
            ph.cases.remove(case)
    folders = {Path(p).parent for p in (case.image_path, case.reference_path) if p}
    session.delete(case)
    session.flush()
    store = (settings.cases_dir / task.slug).resolve()
    for d in folders | {settings.cases_dir / task.slug / key}:
        d = d.resolve()
        if d.is_dir() and store in d.parents:  # only inside the case store, never a source folder
            shutil.rmtree(d, ignore_errors=True)
    return len(results)


def move_case(session: Session, task: Task, key: str, to: str, force: bool = False) -> list[str]:
    """Put case ``key`` in phase ``to`` only (out of every other phase). Refused when evaluations scored
    it, unless ``force`` (see the module). Returns the phases it left."""
    case = _case(session, task, key)
    target = next((p for p in task.phases if p.slug == to), None)
    if target is None:
        raise CaseAdminError(f"task {task.slug} has no phase {to!r} (phases: {', '.join(p.slug for p in task.phases)})")
    results = _results(session, case)
    left: list[Phase] = [p for p in task.phases if case in p.cases and p is not target]
    if results and not force and left:
        n = len({r.evaluation_id for r in results})
        raise CaseAdminError(f"case {key} of {task.slug} was scored by {n} evaluation(s) in "
                             f"{', '.join(p.slug for p in left)}; moving it changes boards teams have seen. Use "
                             "--force to move it anyway (its results stay with their evaluations)")
    for p in left:
        p.cases.remove(case)
    if case not in target.cases:
        target.cases.append(case)
    session.flush()
    return [p.slug for p in left]
