"""``arena task check``: validate a whole task folder (not just task.yaml) and summarize it.

Checks: task.yaml validates; README.md is there; literature.csv (when declared) parses with the expected
columns and labels; the cases: the generator writes a small case whose labels are the task's; the loader
lists real cases; an import folder (``--cases``) holds cases; or, for a task whose cases come from a folder
or the web (no loader, no generator), the cases already in the database. Every volumetric case passes
:func:`arena.tasks.case_check.check_case` (labels in the task's map, reference on the image's grid, label
map present, DICOM slices evenly spaced). Missing shared data is reported as skipped, not as a failure.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from arena.config import load_settings
from arena.db import session_scope
from arena.kinds import kind_for
from arena.models import Task
from arena.tasks.case_check import CaseCheckError, check_case, label_values
from arena.tasks.convert import read_image
from arena.tasks.importing import find_cases
from arena.tasks.spec import TaskSpec, TaskSpecError, load_spec
from arena.tasks.store import DataUnavailable, list_real_cases, list_training_cases


@dataclass
class CheckResult:
    task_dir: Path
    spec: TaskSpec | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)  # one line per case checked

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> list[str]:
        s = self.spec
        if s is None:
            return []
        r = s.resources
        lines = [f"{s.slug}: {s.title}",
                 f"  kind {s.kind}, modality {s.modality}, io mode {s.io_mode}, inputs "
                 + ", ".join(f"/input/{i.relative_path} ({'/'.join(i.formats)})" for i in s.inputs),
                 f"  labels ({len(s.labels)}): " + ", ".join(
                     f"{k} {v.name}" + (f" w{v.weight:g}" if v.weight != 1 else "") + (" [small]" if v.small else "")
                     for k, v in s.labels.items()),
                 "  metrics: " + ", ".join(m.name + (f" ({m.convention}, p{m.percentile:g})" if m.name.startswith("hd")
                                                     else "") for m in s.metrics),
                 f"  empty masks: both empty → {s.empty_policy.both_empty}, one empty → distance "
                 f"{s.empty_policy.one_empty_distance}, label absent from the reference → "
                 f"{'not scored' if s.empty_policy.reference_empty == 'exclude' else 'scored'}",
                 f"  ranking: {s.ranking.method}, primary {s.ranking.primary}"
                 + (f", metrics {s.ranking.metrics}" if s.ranking.metrics else "")
                 + (", label-weighted" if s.ranking.label_weights else ""),
                 "  phases: " + "; ".join(
                     f"{p.slug} ({p.submission_limit}/day, "
                     f"{'per-case scores shown' if p.show_case_results else 'per-case results hidden: coarse outcome only'}"
                     f", board {p.visibility}, "
                     + (f"opens {p.opens:%Y-%m-%d %H:%M} UTC" if p.opens else "starts closed") + ")" for p in s.phases),
                 f"  limits: {r.time_per_case_s:g} s/case, {r.memory_mb} MB, {r.cpus:g} CPU, pids {r.pids}, "
                 f"output {r.output_mb} MB" + (", GPU" if r.gpu else ""),
                 f"  literature: {s.literature or 'none'}"]
        if self.cases:
            lines.append(f"  cases ({len(self.cases)} checked):")
            lines += [f"    {c}" for c in self.cases]
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _case_line(key: str, phases: str, report, n_labels: int, source: str) -> str:
    g = report.geometry
    grid = ("same grid" if not (report.reoriented or report.resampled) else
            "same voxels, stored in another axis order" if report.reoriented else
            "reference resampled onto the image grid (opted in)")
    return (f"{key} [{phases}]: {'×'.join(map(str, g['size']))} voxels, "
            f"{'×'.join(f'{s:.3g}' for s in g['spacing'])} mm, {len(report.labels_present)}/{n_labels} labels "
            f"present, {grid} ({source})")


def check_task(task_dir: Path | str, data_root: Path | None = None, generate: bool = True,
               cases_folder: Path | None = None, database_url: str | None = None) -> CheckResult:
    """Check a task folder and its cases (see the module).

    Which cases: the loader's (``data.loader``; ``data_root`` is its data folder, ``--data``), the cases
    of an import folder (``cases_folder``, ``--cases``; the layouts of :mod:`arena.tasks.importing`), the
    generator's (one small synthetic case) and, for a task with neither loader nor generator, the cases
    already in the database at ``database_url`` (loaded by ``arena task import-cases`` or the organizer
    pages). Every volumetric case goes through :func:`arena.tasks.case_check.check_case`.
    """

    task_dir = Path(task_dir)
    res = CheckResult(task_dir)
    try:
        spec = res.spec = load_spec(task_dir)
    except TaskSpecError as e:
        res.problems += [f"task.yaml: {p}" for p in e.problems]
        return res
    readme = task_dir / "README.md"
    if not readme.is_file() or len(readme.read_text().strip()) < 200:
        res.problems.append("README.md: missing or nearly empty (clinical context, label map, metrics and "
                            "policies, ranking, source challenge and citation, data attribution)")
    if (task_dir / "literature.csv").is_file() and not spec.literature:
        res.notes.append("literature.csv is there but task.yaml does not declare it (literature: literature.csv)")
    if spec.literature:
        from arena.tasks.literature import load_literature

        lit = load_literature(task_dir / spec.literature, spec)
        res.notes.append(f"literature: {len(lit)} published rows from "
                         f"{lit['source'].nunique() if 'source' in lit else '?'} sources")
    kind = kind_for(spec)
    n_labels = len(spec.labels)
    has_loader = bool(spec.data is not None and spec.data.loader)
    checked_any = False
    if has_loader:
        try:
            sources = list_real_cases(task_dir, spec, data_root)
        except DataUnavailable as e:
            res.notes.append(f"real cases skipped: {e}")
            sources = []
        except Exception as e:  # a loader that raises is a broken task folder
            res.problems.append(f"data.loader: {type(e).__name__}: {e}")
            sources = []
        for c in sources:
            checked_any = True
            if not kind.volumetric:  # tiles: the files are there (the loader checked); their kind reads them
                res.cases.append(f"{c.key} [{c.phase}]: {Path(c.image).name} + {Path(c.reference).name}")
                continue
            try:
                rep = check_case(c.key, c.image, c.reference, spec.labels, label_map=c.label_map,
                                 resample_reference=c.resample_reference)
            except CaseCheckError as e:
                res.problems += e.problems
                continue
            res.cases.append(_case_line(c.key, c.phase, rep, n_labels, Path(c.image).name))
        if sources:
            counts = {p.slug: sum(c.phase == p.slug for c in sources) for p in spec.phases}
            res.notes.append("real cases per phase: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
            try:
                training = list_training_cases(task_dir, spec, data_root)
            except Exception as e:
                res.problems.append(f"data.loader training(): {type(e).__name__}: {e}")
                training = []
            if training:
                res.notes.append(f"training data: {len(training)} cases (never scored; "
                                 f"`arena task training-data {spec.slug}`)")
    if cases_folder is not None:
        checked_any = True
        _check_folder(res, spec, Path(cases_folder))
    explicit_generator = spec.data is not None and bool(spec.data.generator)
    if explicit_generator or not has_loader:
        with tempfile.TemporaryDirectory(prefix="arena-check-") as tmp:
            try:
                stratum = kind.demo_strata(spec, 1)[0]
                demo = kind.write_demo_case(spec, Path(tmp), "check-000", 0, "small", stratum) if generate else None
                checked_any = True
            except ValueError as e:
                demo = None
                if explicit_generator:
                    res.problems.append(str(e))
                    return res
                res.notes.append(f"synthetic cases skipped: {e}")
            if demo is not None and kind.volumetric:
                ids = set(label_values(read_image(demo.reference), demo.reference))
                extra = sorted(ids - set(spec.labels))
                if extra:
                    res.problems.append(f"generator {demo.meta.get('generator')}: labels {extra} not in the task's "
                                        "label map")
                res.cases.append(f"generated by {demo.meta.get('generator')!r} (seed 1000, small): "
                                 f"{'×'.join(map(str, demo.meta['shape']))} voxels, {len(ids)}/{n_labels} labels "
                                 "present")
            elif demo is not None:
                ref = kind.load_reference(spec, demo.reference, demo.image)
                res.cases.append(f"generated one synthetic tile ({kind.title}, small): {ref.width}×{ref.height} px")
    if not checked_any and generate:
        _check_database(res, spec, database_url)
    return res


def _check_folder(res: CheckResult, spec: TaskSpec, folder: Path) -> None:
    """Check an import folder's cases as ``arena task import-cases`` would (without the database)."""

    found, problems = find_cases(folder)
    res.problems += problems
    for c in found:
        try:
            rep = check_case(c.key, c.image, c.reference, spec.labels)
        except CaseCheckError as e:
            res.problems += e.problems
            continue
        res.cases.append(_case_line(c.key, "folder", rep, len(spec.labels), str(Path(c.image).relative_to(folder))))
    res.notes.append(f"{len(found)} case(s) in {folder}")


def _check_database(res: CheckResult, spec: TaskSpec, database_url: str | None) -> None:
    """Check the cases already loaded for the task (the stored files), when it is in the database."""

    url = database_url or load_settings().database_url
    try:
        with session_scope(url) as s:
            task = s.scalar(select(Task).where(Task.slug == spec.slug))
            if task is None:
                res.notes.append(f"no cases checked: {spec.slug} is not in the database yet and has no loader or "
                                 "generator (arena task load, then arena task import-cases SLUG FOLDER --phase P; "
                                 "or check a folder with --cases FOLDER)")
                return
            phases = {c.id: [p.slug for p in task.phases if c in p.cases] for c in task.cases}
            counts = {p.slug: len(p.cases) for p in task.phases}
            volumetric = kind_for(spec).volumetric
            for c in sorted(task.cases, key=lambda c: c.key):
                where = ",".join(phases.get(c.id, [])) or "no phase"
                if not volumetric:
                    ok = Path(c.image_path).is_file() and Path(c.reference_path).is_file()
                    if not ok:
                        res.problems.append(f"case {c.key}: stored files missing ({c.image_path}, {c.reference_path})")
                    else:
                        res.cases.append(f"{c.key} [{where}]: {Path(c.image_path).name} (stored)")
                    continue
                try:
                    rep = check_case(c.key, c.image_path, c.reference_path, spec.labels)
                except CaseCheckError as e:
                    res.problems += e.problems
                    continue
                res.cases.append(_case_line(c.key, where, rep, len(spec.labels), "stored"))
            res.notes.append("cases in the database per phase: " + ", ".join(f"{p} {n}" for p, n in counts.items()))
            if not task.cases:
                res.notes.append(f"{spec.slug} has no cases yet (arena task import-cases {spec.slug} FOLDER --phase P)")
    except Exception as e:  # no database yet (a fresh checkout): nothing loaded to check
        res.notes.append(f"no cases checked: the database is not readable ({type(e).__name__}: {e})")
