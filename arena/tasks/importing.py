"""Importing a folder of cases into a task: the one implementation behind ``arena task import-cases`` and
the organizer page's "Load cases from a server folder".

Folder layouts (file names are case ids; ``.mha``/``.mhd``, ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``, or a
folder holding one DICOM series in place of an image file):

* ``images/<case>.<ext>`` with ``labels/<case>.<ext>`` (or ``references/`` or ``masks/``), or
* ``<case>/image.<ext>`` with ``<case>/reference.<ext>`` (``<case>/image/`` may be a DICOM series folder).

Phases: every case goes to the phases given (``--phase``), unless a CSV (``--phases-csv``, columns
``case,phase``; a case may have several rows) assigns it. All cases are checked first
(:func:`arena.tasks.case_check.check_case`: label values in the task's map, reference on the image's grid,
label map present, DICOM slices evenly spaced) and the problems of all of them are reported together; only
when there is none is anything written. A failure while writing removes what this import wrote (case
files, case rows, phase assignments) and puts replaced cases' files back: nothing is left half-loaded.

A case id already in the task is replaced (files and phases), unless an evaluation has scored it: such a
case must be removed first (:func:`arena.tasks.case_admin.remove_case` with ``force``), so that scores
never silently refer to other files.
"""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from arena.config import Settings
from arena.models import Case, CaseResult, Task
from arena.tasks import convert
from arena.tasks.case_check import CaseCheckError, CaseReport, check_case

CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
REFERENCE_DIRS = ("labels", "references", "masks")
LAYOUT_HELP = ("use <case>/image.<ext> + <case>/reference.<ext>, or images/<case>.<ext> + labels/<case>.<ext> "
               f"(<ext>: {', '.join(s.lstrip('.') for s in convert.FILE_SUFFIXES)}; an image may be a DICOM "
               "series folder)")


@dataclass(frozen=True)
class FolderCase:
    """One case found in an import folder; ``reference`` may not exist (reported as a missing label map)."""

    key: str
    image: Path
    reference: Path


@dataclass
class ImportResult:
    loaded: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    phases: dict[str, list[str]] = field(default_factory=dict)  # case id → phase slugs
    reports: dict[str, CaseReport] = field(default_factory=dict)


def case_key(path: Path) -> str:
    """The case id of ``images/<case>.<ext>``: the name without a known image suffix."""
    name = path.name
    for ext in convert.FILE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _is_volume(p: Path) -> bool:
    return (p.is_file() and convert.suffix(p) in convert.FILE_SUFFIXES) or p.is_dir()


def _pick(folder: Path, stem: str) -> Path | None:
    for p in sorted(folder.iterdir()):
        if p.name.lower().split(".")[0] == stem and _is_volume(p):
            return p
    return None


def find_cases(folder: Path) -> tuple[list[FolderCase], list[str]]:
    """The cases in ``folder`` (either layout, see the module) and the problems with its layout, each
    naming the file or folder. An image without a reference is returned with a reference path that does
    not exist, so that the case check reports the missing label map for it."""
    folder = Path(folder)
    if not folder.is_dir():
        return [], [f"{folder}: no such folder"]
    found: list[FolderCase] = []
    problems: list[str] = []
    images_dir = folder / "images"
    refs_dir = next((folder / n for n in REFERENCE_DIRS if (folder / n).is_dir()), None)
    if images_dir.is_dir():
        if refs_dir is None:
            return [], [f"{folder}: images/ but no labels/ (or references/, masks/) folder: the label maps are "
                        "missing"]
        refs = {case_key(p): p for p in refs_dir.iterdir() if _is_volume(p)}
        keys = set()
        for img in sorted(images_dir.iterdir()):
            if not _is_volume(img):
                problems.append(f"{img}: not an image ({LAYOUT_HELP})")
                continue
            key = case_key(img)
            keys.add(key)
            found.append(FolderCase(key, img, refs.get(key, refs_dir / f"{key}{convert.suffix(img)}")))
        problems += [f"{refs[k]}: a label map without an image images/{k}.*" for k in sorted(set(refs) - keys)]
        return found, problems
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        img, ref = _pick(sub, "image"), _pick(sub, "reference")
        if img is None:
            problems.append(f"{sub}/: no image.<ext> ({LAYOUT_HELP})")
            continue
        found.append(FolderCase(sub.name, img, ref if ref is not None else sub / f"reference{convert.suffix(img)}"))
    if not found and not problems:
        problems.append(f"{folder}: no cases found: {LAYOUT_HELP}")
    return found, problems


def read_phase_csv(path: Path, phase_slugs: Iterable[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``case,phase`` rows (a header row is required; a case may have several rows) → case id → phases,
    and the problems (unknown phase, missing column, empty cell), each naming the file and line."""
    path = Path(path)
    known = list(phase_slugs)
    out: dict[str, list[str]] = {}
    problems: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "case" not in cols or "phase" not in cols:
                return {}, [f"{path}: expected a header row with the columns case,phase, got {reader.fieldnames}"]
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                key, phase = row.get("case", ""), row.get("phase", "")
                if not key or not phase:
                    problems.append(f"{path}:{line}: empty case or phase")
                elif phase not in known:
                    problems.append(f"{path}:{line}: case {key}: unknown phase {phase!r} (the task's phases: "
                                    f"{', '.join(known)})")
                elif phase not in out.setdefault(key, []):
                    out[key].append(phase)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return {}, [f"{path}: cannot be read as CSV ({e})"]
    return out, problems


def plan_import(session: Session, task: Task, folder: Path, phases: Iterable[str] = (),
                phase_csv: Path | None = None, resample_reference: bool = False,
                progress: Callable[[int, int, str], None] | None = None) -> ImportResult:
    """Check everything an import would do without writing: the layout, the case ids, the phase
    assignment and every case (:func:`check_case`). :class:`CaseCheckError` with all problems found."""
    from arena.tasks.store import spec_of

    spec = spec_of(task)
    slugs = [p.slug for p in task.phases]
    default = list(dict.fromkeys(phases))
    problems = [f"unknown phase {p!r} (the task's phases: {', '.join(slugs)})" for p in default if p not in slugs]
    assigned: dict[str, list[str]] = {}
    if phase_csv is not None:
        assigned, csv_problems = read_phase_csv(phase_csv, slugs)
        problems += csv_problems
    found, layout_problems = find_cases(folder)
    problems += layout_problems
    keys = {c.key for c in found}
    if phase_csv is not None:
        problems += [f"{phase_csv}: case {k} is not in {folder}" for k in sorted(set(assigned) - keys)]
    scored = _scored_keys(session, task, keys)
    result = ImportResult()
    for i, c in enumerate(found):
        if progress:
            progress(i, len(found), c.key)
        if not CASE_ID.fullmatch(c.key):
            problems.append(f"{c.image}: case id {c.key!r}: letters, digits, '-', '_' and '.' only (at most 100)")
            continue
        ph = assigned.get(c.key) or default
        if not ph:
            problems.append(f"case {c.key}: no phase (not in {phase_csv} and no --phase given)" if phase_csv
                            else f"case {c.key}: no phase given")
        if c.key in scored:
            problems.append(f"case {c.key}: already in the task and scored by {scored[c.key]} evaluation(s); "
                            "remove it first (arena task remove-case --force) to load other files under its id")
        try:
            result.reports[c.key] = check_case(c.key, c.image, c.reference, spec.labels,
                                               resample_reference=resample_reference)
        except CaseCheckError as e:
            problems += e.problems
        result.phases[c.key] = ph
    if progress:
        progress(len(found), len(found), "")
    if problems:
        raise CaseCheckError(problems + [f"nothing was loaded ({len(found)} case(s) found in {folder})"])
    return result


def import_cases(session: Session, settings: Settings, task: Task, folder: Path, phases: Iterable[str] = (),
                 phase_csv: Path | None = None, resample_reference: bool = False, meta: dict | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> ImportResult:
    """Check all cases of ``folder`` (:func:`plan_import`), then write them all (case store + rows, each
    case in exactly its assigned phases), or nothing: on a failure while writing, the session is rolled
    back, this import's files are removed, replaced cases' files restored, and :class:`CaseCheckError`
    raised. The caller commits."""
    from arena.tasks.store import add_case

    folder = Path(folder)
    plan = plan_import(session, task, folder, phases, phase_csv, resample_reference, progress)
    by_slug = {p.slug: p for p in task.phases}
    existing = {c.key: c for c in session.scalars(select(Case).where(Case.task_id == task.id,
                                                                        Case.key.in_(list(plan.phases))))}
    root = settings.cases_dir / task.slug
    written: list[Path] = []
    backups: list[tuple[Path, Path]] = []
    key = ""
    try:
        for key, report in plan.reports.items():
            dest = root / key
            if dest.exists():
                backup = root / f".replaced-{key}"
                if backup.exists():
                    shutil.rmtree(backup)
                dest.replace(backup)
                backups.append((backup, dest))
            written.append(dest)
            case = existing.get(key)
            if case is not None:
                _leave_phases(task, case)
                plan.replaced.append(key)
            add_case(session, settings, task, key, report.image, report.reference,
                     [by_slug[p] for p in plan.phases[key]], meta={"source": str(folder), **(meta or {})},
                     resample_reference=resample_reference, checked=report)
            plan.loaded.append(key)
        session.flush()
    except Exception as e:
        session.rollback()
        for dest in written:
            shutil.rmtree(dest, ignore_errors=True)
        for backup, dest in backups:
            backup.replace(dest)
        raise CaseCheckError([f"{folder}: writing case {key!r} failed ({type(e).__name__}: {e}); nothing was "
                              "loaded"]) from e
    for backup, _ in backups:
        shutil.rmtree(backup, ignore_errors=True)
    return plan


def _leave_phases(task: Task, case: Case) -> None:
    """Take a replaced case out of every phase; add_case then puts it in exactly its new ones."""
    for ph in task.phases:
        if case in ph.cases:
            ph.cases.remove(case)


def _scored_keys(session: Session, task: Task, keys: Iterable[str]) -> dict[str, int]:
    """Case id → number of evaluations with a result for it, for the ``keys`` already in ``task``."""
    keys = list(keys)
    if not keys:
        return {}
    rows = session.execute(select(Case.key, func.count(func.distinct(CaseResult.evaluation_id)))
                           .join(CaseResult, CaseResult.case_id == Case.id)
                           .where(Case.task_id == task.id, Case.key.in_(keys)).group_by(Case.key)).all()
    return {k: n for k, n in rows if n}
