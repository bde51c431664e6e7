"""``arena task check``: validate a whole task folder (not just task.yaml) and summarize it.

Checks: task.yaml validates; README.md is there; literature.csv (when declared) parses with the expected
columns and labels; the data section works: the generator writes a small case whose labels are the task's,
or the loader lists real cases whose files exist, whose references hold only the task's labels and lie on
(or can be put on) the image grid. Missing shared data is reported as skipped, not as a failure.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arena.tasks.spec import TaskSpec, TaskSpecError, load_spec


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
                 "  phases: " + "; ".join(f"{p.slug} ({p.submission_limit}/day, "
                                          f"{'scores shown' if p.show_case_results else 'hidden'})" for p in s.phases),
                 f"  limits: {r.time_per_case_s:g} s/case, {r.memory_mb} MB, {r.cpus:g} CPU, pids {r.pids}, "
                 f"output {r.output_mb} MB" + (", GPU" if r.gpu else ""),
                 f"  literature: {s.literature or 'none'}"]
        if self.cases:
            lines.append(f"  cases ({len(self.cases)} checked):")
            lines += [f"    {c}" for c in self.cases]
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _label_ids(path: Path, label_map: dict[int, int] | None = None) -> set[int]:
    from arena.tasks.convert import read_image

    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(read_image(path))
    ids = {int(v) for v in np.unique(arr) if v}
    if label_map is not None:
        ids = {label_map[i] for i in ids if label_map.get(i)}
    return ids


def check_task(task_dir: Path | str, data_root: Path | None = None, generate: bool = True) -> CheckResult:
    from arena.tasks import convert
    from arena.kinds import kind_for
    from arena.tasks.store import DataUnavailable, list_real_cases, list_training_cases

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
    names = set(spec.labels)
    has_loader = spec.data is not None and spec.data.loader
    if has_loader:
        try:
            sources = list_real_cases(task_dir, spec, data_root)
        except DataUnavailable as e:
            res.notes.append(f"real cases skipped: {e}")
            sources = []
        except Exception as e:  # a loader that raises is a broken task folder
            res.problems.append(f"data.loader: {type(e).__name__}: {e}")
            sources = []
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
        for c in sources:
            absent = [f"case {c.key}: {what} {p} not found"
                      for what, p in (("image", c.image), ("reference", c.reference)) if not Path(p).exists()]
            if absent:
                res.problems += absent
                continue
            try:
                g = convert.read_geometry(c.image)
                ids = _label_ids(c.reference, c.label_map)
                gr = convert.read_geometry(c.reference)
            except convert.CaseFormatError as e:
                res.problems.append(f"case {c.key}: {e}")
                continue
            extra = sorted(ids - names)
            if extra:
                res.problems.append(f"case {c.key}: reference labels {extra} are not in the task's label map")
            grid = "same grid" if convert.same_grid(g, gr) else "reference resampled onto the image grid"
            res.cases.append(f"{c.key} [{c.phase}]: {'×'.join(map(str, g['size']))} voxels, "
                             f"{'×'.join(f'{s:.3g}' for s in g['spacing'])} mm, {len(ids)}/{len(names)} labels "
                             f"present, {grid} ({Path(c.image).name})")
    if spec.data is not None and spec.data.generator or not has_loader:
        kind = kind_for(spec)
        with tempfile.TemporaryDirectory(prefix="arena-check-") as tmp:
            try:
                stratum = kind.demo_strata(spec, 1)[0]
                demo = kind.write_demo_case(spec, Path(tmp), "check-000", 0, "small", stratum) if generate else None
            except ValueError as e:
                res.problems.append(str(e))
                return res
            if demo is not None and kind.volumetric:
                ids = _label_ids(demo.reference)
                extra = sorted(ids - names)
                if extra:
                    res.problems.append(f"generator {demo.meta.get('generator')}: labels {extra} not in the task's "
                                        "label map")
                res.cases.append(f"generated by {demo.meta.get('generator')!r} (seed 1000, small): "
                                 f"{'×'.join(map(str, demo.meta['shape']))} voxels, {len(ids)}/{len(names)} labels "
                                 "present")
            elif demo is not None:
                ref = kind.load_reference(spec, demo.reference, demo.image)
                res.cases.append(f"generated one synthetic tile ({kind.title}, small): {ref.width}×{ref.height} px")
    return res
