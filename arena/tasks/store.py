"""Loading a task folder into the database, and its cases into the case store (ARENA_HOME/cases)."""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from arena.config import Settings
from arena.models import Case, Phase, Task
from arena.tasks.spec import TaskSpec, load_spec


def spec_of(task: Task) -> TaskSpec:
    """The validated spec snapshot stored with the task (validated once per task version and process)."""
    import json

    return _spec_from_json(json.dumps(task.spec, sort_keys=True))


@lru_cache(maxsize=256)
def _spec_from_json(text: str) -> TaskSpec:
    import json

    return TaskSpec.model_validate(json.loads(text))


def upsert_task(session: Session, task_dir: Path) -> Task:
    """Create or update the task (and its phases) from ``task_dir/task.yaml``."""
    spec = load_spec(task_dir)
    task = session.scalar(select(Task).where(Task.slug == spec.slug))
    if task is None:
        task = Task(slug=spec.slug, title=spec.title, kind=spec.kind, spec_path="", spec={})
        session.add(task)
    task.title, task.kind = spec.title, spec.kind
    task.spec_path = str(Path(task_dir).resolve())
    task.spec = spec.model_dump(mode="json")
    existing = {p.slug: p for p in task.phases}
    for p in spec.phases:
        phase = existing.get(p.slug)
        if phase is None:
            phase = Phase(slug=p.slug, title=p.title)
            task.phases.append(phase)
        phase.title = p.title
    session.flush()
    return task


def add_case(session: Session, settings: Settings, task: Task, key: str, image: Path, reference: Path,
             phases: Iterable[Phase], meta: dict | None = None) -> Case:
    """Copy a case's image and reference into the case store and register it in ``phases``."""
    dest = settings.cases_dir / task.slug / key
    dest.mkdir(parents=True, exist_ok=True)
    img_dst, ref_dst = dest / f"image{_ext(image)}", dest / f"reference{_ext(reference)}"
    if Path(image).resolve() != img_dst.resolve():
        shutil.copyfile(image, img_dst)
    if Path(reference).resolve() != ref_dst.resolve():
        shutil.copyfile(reference, ref_dst)
    case = session.scalar(select(Case).where(Case.task_id == task.id, Case.key == key))
    if case is None:
        case = Case(task=task, key=key, image_path="", reference_path="")
        session.add(case)
    case.image_path, case.reference_path, case.meta = str(img_dst), str(ref_dst), meta or {}
    for phase in phases:
        if case not in phase.cases:
            phase.cases.append(case)
    session.flush()
    return case


def _ext(path: Path) -> str:
    name = Path(path).name
    return ".nii.gz" if name.endswith(".nii.gz") else Path(path).suffix


def load_demo_cases(session: Session, settings: Settings, task: Task, n: int, size: str = "small",
                    progress: Callable[[int, int, str], None] | None = None) -> list[Case]:
    """Generate ``n`` synthetic head-and-neck cases (seeded, deterministic) and add them to the task.

    Cases go to the phases round-robin (case i → phase i mod P), unless a phase lists its cases.
    """
    from arena.datasets.phantom import write_case

    spec = spec_of(task)
    by_slug = {p.slug: p for p in task.phases}
    open_phases = [by_slug[p.slug] for p in spec.phases if p.cases is None]
    cases = []
    for i in range(n):
        key = f"demo-{i:03d}"
        if progress:
            progress(i, n, key)
        meta = write_case(settings.cases_dir / task.slug, key, seed=1000 + i, size=size)
        dest = settings.cases_dir / task.slug / key
        listed = [by_slug[p.slug] for p in spec.phases if p.cases and key in p.cases]
        phases = listed or ([open_phases[i % len(open_phases)]] if open_phases else [])
        cases.append(add_case(session, settings, task, key, dest / "image.mha", dest / "reference.mha", phases,
                              meta={"synthetic": True, **{k: v for k, v in meta.items() if k != "case_id"}}))
    if progress:
        progress(n, n, "")
    return cases
