"""Loading a task folder into the database, and its cases into the case store (ARENA_HOME/cases)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from arena.config import Settings, load_settings
from arena.kinds import kind_for
from arena.models import Case, Phase, Task, utcnow
from arena.tasks.case_check import CaseReport, check_case
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
    """Create or update the task (and its phases) from ``task_dir/task.yaml``.

    A phase created here takes its starting settings from task.yaml: ``visibility`` (default hidden),
    ``opens`` / ``closes`` (without ``opens`` it starts closed: ``closes_at`` is set to now, so no team
    can submit until an organizer opens it) and ``reveal``. A phase that exists already keeps its settings
    (an organizer's edits on the web are never overwritten by a re-load); only its title follows task.yaml.
    """
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
            phase = Phase(slug=p.slug, title=p.title, visibility=p.visibility, opens_at=p.opens,
                          closes_at=p.closes if p.opens is not None else utcnow().replace(microsecond=0),
                          reveal_at=p.reveal)
            task.phases.append(phase)
        phase.title = p.title
    session.flush()
    return task


def add_case(session: Session, settings: Settings, task: Task, key: str, image: Path, reference: Path,
             phases: Iterable[Phase], meta: dict | None = None, label_map: dict[int, int] | None = None,
             resample_reference: bool = False, checked: CaseReport | None = None) -> Case:
    """Store a case's image and reference in the case store and register it in ``phases``.

    ``image`` / ``reference``: .mha/.mhd, .nii/.nii.gz, .nrrd/.nhdr files or DICOM series folders. What
    containers see is written in the task's declared input format (``inputs[0].formats[0]``, normally .mha);
    a reference on another grid (e.g. a NIfTI stored y-flipped next to a DICOM series) is put on the image
    grid by physical coordinates (:mod:`arena.tasks.convert`), optionally relabelled with ``label_map``
    (source id → task id). Files already in the target format on the same grid are copied as they are.
    The image geometry (size, spacing, origin, direction) is recorded in ``case.meta["geometry"]``.

    Volumes are checked first (:func:`arena.tasks.case_check.check_case`, skipped when ``checked`` holds
    its report): label values outside the task's map, a reference on another grid (refused unless
    ``resample_reference``), a DICOM series with a missing slice, a missing label map each raise
    :class:`~arena.tasks.case_check.CaseCheckError` before anything is written. The labels present go to
    ``case.meta["labels_present"]``.
    """
    from arena.tasks import convert

    spec = spec_of(task)
    fmt = next((f for f in spec.inputs[0].formats if f in convert.OUTPUT_FORMATS), "mha")
    ext = convert.OUTPUT_FORMATS[fmt]
    dest = settings.cases_dir / task.slug / key
    image, reference = Path(image), Path(reference)
    volumetric = ((image.is_dir() or convert.suffix(image) in convert.FILE_SUFFIXES)
                  and (reference.is_dir() or not reference.exists() or convert.suffix(reference) in convert.FILE_SUFFIXES))
    report = None
    if volumetric:
        report = checked or check_case(key, image, reference, spec.labels, label_map=label_map,
                                       resample_reference=resample_reference)
    dest.mkdir(parents=True, exist_ok=True)
    if not volumetric:  # slides, tiles, JSON references: stored as they are, under their own extensions
        if label_map is not None:
            raise ValueError(f"case {key}: label_map needs volumetric images, got {image.name} / {reference.name}")
        ext_img, ext_ref = _ext(image), _ext(reference)
        img_dst, ref_dst = dest / f"image{ext_img}", dest / f"reference{ext_ref}"
    else:
        img_dst, ref_dst = dest / f"image{ext}", dest / f"reference{ext}"
    extra: dict = {}
    fast = not volumetric or (label_map is None and image.is_file() and reference.is_file()
            and convert.suffix(image) == ext and convert.suffix(reference) == ext)
    if fast and volumetric:  # the check read both headers already
        geom = report.geometry
        fast = convert.same_grid(geom, report.reference_geometry, tol=0.0)
        extra["geometry"] = geom
    if fast:
        if image.resolve() != img_dst.resolve():
            shutil.copyfile(image, img_dst)
        if reference.resolve() != ref_dst.resolve():
            shutil.copyfile(reference, ref_dst)
    else:
        tmp = dest / ".convert"
        if tmp.exists():
            shutil.rmtree(tmp)
        a, b, extra = convert.convert_case(image, reference, tmp, fmt, label_map=label_map)
        a.replace(img_dst)
        b.replace(ref_dst)
        tmp.rmdir()
    case = session.scalar(select(Case).where(Case.task_id == task.id, Case.key == key))
    if case is None:
        case = Case(task=task, key=key, image_path="", reference_path="")
        session.add(case)
    case.image_path, case.reference_path = str(img_dst), str(ref_dst)
    case.meta = {**(meta or {}), **extra}
    if report is not None:
        case.meta["labels_present"] = report.labels_present
    for phase in phases:
        if case not in phase.cases:
            phase.cases.append(case)
    session.flush()
    return case


def _ext(path: Path) -> str:
    name = Path(path).name
    return ".nii.gz" if name.endswith(".nii.gz") else Path(path).suffix


# -- synthetic cases ---------------------------------------------------------------------------
def add_tile_case(session: Session, settings: Settings, task: Task, key: str, image: Path, reference: Path,
                  phases: Iterable[Phase], meta: dict | None = None) -> Case:
    """Register a tile case: copy ``image`` (.tif/.png) and ``reference`` (.json boxes or a mask) into the
    case store as they are (no volume conversion) and add it to ``phases``. A real JPEG/PNG tile with a
    tile index or box JSON as ``reference`` is converted instead (:func:`arena.tasks.tiles_import.import_tile`:
    tiled TIFF with ``meta["mpp"]`` µm/px in its resolution tags, boxes in the kind's JSON format).
    The tile's truth (``targets``, ``positive``) is read from the stored reference into ``case.meta``, so the
    board knows it before any entry has scored the tile."""
    from arena.tasks import tiles_import

    dest = settings.cases_dir / task.slug / key
    dest.mkdir(parents=True, exist_ok=True)
    image, reference = Path(image), Path(reference)
    if image.suffix.lower() in tiles_import.SOURCE_SUFFIXES and reference.suffix.lower() == ".json":
        img_dst, ref_dst = tiles_import.import_tile(image, reference, dest, (meta or {}).get("mpp"))
    else:
        img_dst, ref_dst = dest / f"image{image.suffix.lower()}", dest / f"reference{reference.suffix.lower()}"
        if image.resolve() != img_dst.resolve():
            shutil.copyfile(image, img_dst)
        if reference.resolve() != ref_dst.resolve():
            shutil.copyfile(reference, ref_dst)
    case = session.scalar(select(Case).where(Case.task_id == task.id, Case.key == key))
    if case is None:
        case = Case(task=task, key=key, image_path="", reference_path="")
        session.add(case)
    spec = spec_of(task)
    truth = kind_for(spec).case_meta(spec, ref_dst, img_dst)  # read from the reference itself
    case.image_path, case.reference_path, case.meta = str(img_dst), str(ref_dst), {**(meta or {}), **truth}
    for phase in phases:
        if case not in phase.cases:
            phase.cases.append(case)
    session.flush()
    return case


def load_demo_cases(session: Session, settings: Settings, task: Task, n: int, size: str = "small",
                    progress: Callable[[int, int, str], None] | None = None) -> list[Case]:
    """Generate ``n`` synthetic cases (seeded, deterministic) with the task kind's generator and add them.

    Cases go to the phases round-robin (case i → phase i mod P) within their stratum (a kind may split
    them, e.g. positive and negative tiles, so that every phase gets both), unless a phase lists its cases.
    Raises ValueError when the kind has no generator for the task's labels.
    """
    spec = spec_of(task)
    kind = kind_for(spec)
    by_slug = {p.slug: p for p in task.phases}
    open_phases = [by_slug[p.slug] for p in spec.phases if p.cases is None]
    root = settings.cases_dir / task.slug
    seen: dict[object, int] = {}
    add = add_case if kind.volumetric else add_tile_case  # volumes are converted, tiles kept as they are
    cases = []
    for i, stratum in enumerate(kind.demo_strata(spec, n)):
        key = f"demo-{i:03d}"
        if progress:
            progress(i, n, key)
        demo = kind.write_demo_case(spec, root, key, i, size, stratum)
        listed = [by_slug[p.slug] for p in spec.phases if p.cases and key in p.cases]
        k = seen.get(stratum, 0)
        phases = listed or ([open_phases[k % len(open_phases)]] if open_phases else [])
        seen[stratum] = k + 1
        cases.append(add(session, settings, task, key, demo.image, demo.reference, phases, meta=demo.meta))
    if progress:
        progress(n, n, "")
    return cases


# -- real cases from the shared data -------------------------------------------------------------
class DataUnavailable(LookupError):
    """The shared data a task's loader needs is not there; the message says what is missing and where."""


def shared_data_root() -> Path:
    """``ARENA_SHARED_DATA``, else ``../shared/data`` beside the repository (never copied into it)."""
    return load_settings().shared_data or Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass
class CaseSource:
    """One real case a task loader lists: files or DICOM folders below the data root."""

    key: str
    image: Path
    reference: Path
    phase: str
    meta: dict = field(default_factory=dict)
    label_map: dict[int, int] | None = None
    resample_reference: bool = False  # explicit opt-in: a reference on another grid is resampled, not refused


def _loader_module(task_dir: Path, spec: TaskSpec):
    """The task folder's ``data.loader`` module, or None."""
    import importlib.util

    if spec.data is None or not spec.data.loader:
        return None
    path = Path(task_dir) / spec.data.loader
    if not path.is_file():
        raise ValueError(f"{path}: data.loader file not found")
    mod_name = f"arena_task_loader_{spec.slug.replace('-', '_')}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    if not callable(getattr(module, "cases", None)):
        raise ValueError(f"{path}: expected a function cases(data_root) -> list[CaseSource]")
    return module


def task_loader(task_dir: Path, spec: TaskSpec):
    """The ``cases(data_folder)`` function of the task's ``data.loader`` file, or None."""
    module = _loader_module(task_dir, spec)
    return None if module is None else module.cases


def data_folder(spec: TaskSpec, data: Path | None = None) -> Path:
    """The folder a task's loader reads: ``data`` when given (``arena task load --data DIR``), else
    ``data.folder`` below the shared data root (or the root itself when the task names no folder)."""
    if data is not None:
        return Path(data)
    root = shared_data_root()
    folder = spec.data.folder if spec.data is not None else None
    return root / folder if folder else root


def _available(spec: TaskSpec, folder: Path) -> None:
    """Raise :class:`DataUnavailable` when ``folder`` or one of ``data.requires`` below it is missing."""
    required = spec.data.requires if spec.data else []
    missing = [r for r in required if not (folder / r).exists()]
    if not folder.is_dir() or missing:
        raise DataUnavailable(f"data for {spec.slug} not found: {', '.join(missing) or '(the folder)'} under {folder} "
                              "(name the folder with --data DIR, or set ARENA_SHARED_DATA)")


def list_real_cases(task_dir: Path, spec: TaskSpec, data_root: Path | None = None) -> list[CaseSource]:
    """The cases the task's loader lists; :class:`DataUnavailable` when its data folder is missing.

    ``data_root``: the loader's data folder (``--data``); default :func:`data_folder`. Each case must name
    one of the task's phases; images and references that are not there are reported together, naming the
    files (nothing is loaded then).
    """
    fn = task_loader(task_dir, spec)
    if fn is None:
        return []
    folder = data_folder(spec, data_root)
    _available(spec, folder)
    out = list(fn(folder))
    phases = {p.slug for p in spec.phases}
    for c in out:
        if c.phase not in phases:
            raise ValueError(f"{spec.slug} loader: case {c.key} names phase {c.phase!r}, not one of {sorted(phases)}")
    _require_files(out)
    return out


def list_training_cases(task_dir: Path, spec: TaskSpec, data_root: Path | None = None) -> list[CaseSource]:
    """The task's training cases (the loader's optional ``training(data_folder)``); [] when it has none."""
    module = _loader_module(task_dir, spec)
    if module is None or not callable(getattr(module, "training", None)):
        return []
    folder = data_folder(spec, data_root)
    _available(spec, folder)
    out = list(module.training(folder))
    _require_files(out)
    return out


def _require_files(sources: list[CaseSource]) -> None:
    missing = [f"case {c.key}: {what} {p} not found" for c in sources
               for what, p in (("image", c.image), ("reference", c.reference)) if not Path(p).exists()]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise FileNotFoundError("; ".join(missing[:5]) + more + "; nothing was loaded")


def _fingerprint(source: CaseSource) -> list:
    """What identifies a source's files cheaply (path, size, mtime in ns): unchanged → the stored case is kept."""
    out = []
    for p in (Path(source.image), Path(source.reference)):
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out + [sorted((source.label_map or {}).items())]


def load_real_cases(session: Session, settings: Settings, task: Task, task_dir: Path, data_root: Path | None = None,
                    progress: Callable[[int, int, str], None] | None = None,
                    limit: int | None = None) -> list[Case]:
    """Load the real cases the task folder's loader lists (converted into the case store).

    Idempotent: a case whose source files are unchanged (path, size, mtime) and whose stored files are
    still there is not read again, so reloading 100 cases takes well under a second. ``limit``: load only
    the first ``limit`` cases of each phase (in the loader's order), e.g. for a quick demo board. The
    training cases (``training(data_folder)``) are recorded in the task's
    training manifest (:mod:`arena.tasks.training`); they are not cases of any phase.

    All or nothing: when a case fails its check (:mod:`arena.tasks.case_check`) or its conversion, the
    files of the cases this call created are removed and the error propagates (the caller's session is
    rolled back, e.g. by ``session_scope``); cases that existed before keep their files.
    """
    from arena.tasks.training import write_manifest

    spec = spec_of(task)
    sources = list_real_cases(task_dir, spec, data_root)
    if limit is not None:
        taken: dict[str, int] = {}
        kept = []
        for c in sources:
            if taken.get(c.phase, 0) < limit:
                kept.append(c)
                taken[c.phase] = taken.get(c.phase, 0) + 1
        sources = kept
    by_slug = {p.slug: p for p in task.phases}
    existing = {c.key: c for c in session.scalars(select(Case).where(Case.task_id == task.id))}
    training = list_training_cases(task_dir, spec, data_root)  # its files must be there too, before any write
    volumetric = kind_for(spec).volumetric
    cases, created = [], []
    try:
        for i, c in enumerate(sources):
            if progress:
                progress(i, len(sources), c.key)
            fp = _fingerprint(c)
            case = existing.get(c.key)
            if (case is not None and (case.meta or {}).get("source_files") == fp
                    and Path(case.image_path).is_file() and Path(case.reference_path).is_file()):
                if case not in by_slug[c.phase].cases:
                    by_slug[c.phase].cases.append(case)
            else:
                if case is None:
                    created.append(settings.cases_dir / task.slug / c.key)
                if volumetric:
                    case = add_case(session, settings, task, c.key, c.image, c.reference, [by_slug[c.phase]],
                                    meta={"synthetic": False, **c.meta}, label_map=c.label_map,
                                    resample_reference=c.resample_reference)
                else:  # tiles: kept, or converted by arena.tasks.tiles_import
                    case = add_tile_case(session, settings, task, c.key, c.image, c.reference, [by_slug[c.phase]],
                                         meta={"synthetic": False, **c.meta})
                case.meta = {**case.meta, "source_files": fp}
            cases.append(case)
        write_manifest(settings, task.slug, training)
        session.flush()
    except BaseException:  # the caller's transaction rolls the rows back; the new cases' files go too
        for d in created:
            shutil.rmtree(d, ignore_errors=True)
        raise
    if progress:
        progress(len(sources), len(sources), "")
    return cases
