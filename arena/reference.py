"""Bundled reference models (reference_models/<name>/): build their images and submit them to a task.

They are packaged exactly as a participant would package them (a Dockerfile taking ``ARG BASE_IMAGE``,
the container contract of docs/contract.md) and go through the normal path: ``docker save`` tarball ->
upload store -> archive check -> intake job -> runner. They are submitted by a reserved user of the
reserved team "Reference models" (``Team.is_reference``), so boards mark them with the reference badge.
The team's daily quota does not apply (one task may get several reference models per phase), and a
re-run is idempotent: an image (by ID) that the team already has in a phase is not submitted again.

Modules shared by several models live once in ``reference_models/_shared/`` and are copied into each
model's build context.

One folder per architecture, one image per task: a model's optional ``tasks.json`` maps task slugs to
variants (``{"<task>": {"default": bool, "provenance": str, "prepare": [script, args...]}}``). Each variant
is built with ``--build-arg TASK=<task>`` (the Dockerfile picks its weights or atlases by it); the default
variant keeps the plain tag ``arena-reference/<name>:<version>``, the others are tagged
``arena-reference/<name>-<task>:<version>``. ``prepare`` runs with the host's Python in the model folder
before the build, with ``{context}`` replaced by the staged build context and ``{data}`` by the shared
data folder (e.g. the multi-atlas baseline's OpenKBP atlases: built from the train split, never committed).
``provenance`` says what a variant was trained on and evaluated on (:func:`provenance`). A model without
tasks.json has a single image, built without TASK. Python packages a model needs (its ``requirements.txt``) are installed from the host into ``_site/``
of a temporary copy of the model's folder (no pip inside ``docker build``; docs/sandbox.md), which the
Dockerfile copies into the image's ``dist-packages``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import arena
from arena.config import load_settings

REFERENCE_TEAM = "Reference models"
REFERENCE_USER = "reference-models"
REPO = Path(__file__).resolve().parents[1]


def default_models_dir() -> Path:
    """The reference models' folder: ARENA_REFERENCE_MODELS, else reference_models/ of the repository."""
    return load_settings().reference_models or REPO / "reference_models"

TAG_PREFIX = "arena-reference/"
SHARED_DIR = "_shared"  # modules several models use (refio.py), copied into each build context
PIP_PLATFORM = ("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64")
STAGE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pt", "*_log.txt", "train.py", "train_*.py", "phantom_data.py",
                                      "make_atlases.py", "evaluate_*.py", "README.md", "_site")
TASKS_FILE = "tasks.json"  # a model's per-task variants (module docstring)

#: The reference models ``arena demo`` runs, per task and phase (cell_detector only with --all-tasks);
#: scripts/reference_readmes.py writes their board numbers into their READMEs.
DEMO_REFERENCE = (("han-oar-22", "validation", ("anatomynet", "focusnetv2", "multiatlas")),
                  ("han-oar-openkbp", "validation", ("anatomynet", "multiatlas")),
                  ("signet-ring-cells", "validation", ("cell_detector",)))

Log = Callable[[str], None]


@dataclass
class BuiltModel:
    name: str
    tag: str
    image_id: str
    task: str | None = None  # the variant (tasks.json); None: the model's only or default image


def discover(models_dir: Path | None = None, names: list[str] | tuple[str, ...] | None = None) -> list[Path]:
    """Folders of ``reference_models/`` that have a Dockerfile (optionally only ``names``)."""
    root = Path(models_dir or default_models_dir())
    found = sorted(p for p in root.iterdir() if p.is_dir() and (p / "Dockerfile").is_file()) if root.is_dir() else []
    if names:
        unknown = set(names) - {p.name for p in found}
        if unknown:
            raise ValueError(f"no reference model(s) {sorted(unknown)} in {root} (have {[p.name for p in found]})")
        found = [p for p in found if p.name in names]
    return found


def variants(model_dir: Path) -> dict[str, dict]:
    """The model's per-task variants from its tasks.json ({} without one). ValueError naming the file
    when it is not an object of task -> object with optional bool ``default``, str ``provenance`` and
    list-of-str ``prepare``, or when more than one variant is the default."""
    path = Path(model_dir) / TASKS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    ok = isinstance(data, dict) and all(
        isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("default", False), bool)
        and isinstance(v.get("provenance", ""), str)
        and (isinstance(v.get("prepare", []), list) and all(isinstance(a, str) for a in v.get("prepare", [])))
        for k, v in data.items())
    if not ok:
        raise ValueError(f"{path}: expected {{task: {{default?: bool, provenance?: str, prepare?: [str]}}}}")
    if sum(bool(v.get("default")) for v in data.values()) > 1:
        raise ValueError(f"{path}: more than one default variant")
    return data


def variant_for(model_dir: Path, task: str | None) -> str | None:
    """The variant that serves ``task``: the task itself when the model has a non-default variant for it,
    else None (the plain image: the default variant, or the only image of a model without tasks.json)."""
    v = variants(model_dir)
    return task if task in v and not v[task].get("default") else None


def provenance(name: str, task: str, models_dir: Path | None = None) -> str | None:
    """What reference model ``name`` was trained on and evaluated on for ``task`` (its tasks.json), or None."""
    return variants(Path(models_dir or default_models_dir()) / name).get(task, {}).get("provenance") or None


def tag_for(name: str, task: str | None = None) -> str:
    """Image tag of a model (``task``: a non-default variant, see :func:`variant_for`)."""
    return f"{TAG_PREFIX}{name}{f'-{task}' if task else ''}:{arena.__version__}"


def stage(model_dir: Path, dest: Path, log: Log = print, task: str | None = None,
          data_root: Path | None = None) -> Path:
    """Copy ``model_dir`` to ``dest`` (training-only files left out) with its packages in ``dest/_site``;
    for a ``task`` variant with a ``prepare`` step, run it (``data_root``: the shared data folder)."""
    shutil.copytree(model_dir, dest, ignore=STAGE_IGNORE)
    for shared in sorted((model_dir.parent / SHARED_DIR).glob("*.py")):  # one copy in the repo, one per image
        if not shared.name.startswith("evaluate_"):  # offline scoring scripts stay out of the images
            shutil.copy2(shared, dest / shared.name)
    prepare = variants(model_dir).get(task, {}).get("prepare") if task else None
    if prepare:
        if data_root is None:
            from arena.tasks.store import shared_data_root

            data_root = shared_data_root()
        args = [a.replace("{context}", str(dest)).replace("{data}", str(data_root)) for a in prepare]
        log(f"{model_dir.name} ({task}): {' '.join(prepare[:1] + args[1:])}")
        res = subprocess.run([sys.executable, *args], cwd=model_dir, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{model_dir.name} ({task}): {prepare[0]} failed:\n{(res.stdout + res.stderr)[-2000:]}")
    site = dest / "_site"
    site.mkdir()
    req = model_dir / "requirements.txt"
    pkgs = [ln.split("#")[0].strip() for ln in req.read_text().splitlines()] if req.is_file() else []
    pkgs = [p for p in pkgs if p]
    if pkgs:
        log(f"{model_dir.name}: installing {', '.join(pkgs)} from the host into the build context")
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check",
               *PIP_PLATFORM, "--target", str(site), *pkgs]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"pip install for {model_dir.name} failed:\n{res.stderr[-2000:]}")
        # numpy comes from the base image (Debian's); a second copy would shadow it
        for p in list(site.iterdir()):
            if p.name.startswith(("numpy", "bin")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    return dest


def build(base_image: str, names=None, models_dir: Path | None = None, log: Log = print, client=None,
          tasks: list[str] | tuple[str, ...] | None = None, data_root: Path | None = None) -> list[BuiltModel]:
    """Build the reference model images; returns what was built.

    A model with tasks.json gets one image per variant (``tasks``: only those; a model without a variant
    for any of them is skipped), a model without it one image. Without ``tasks``, a variant whose
    ``prepare`` step needs the shared data folder is skipped (logged) when that folder is missing."""
    from arena.images.build import build_image
    from arena.tasks.store import shared_data_root

    out = []
    for d in discover(models_dir, names):
        v = variants(d)
        todo = [t for t in v if not tasks or t in tasks] if v else [None]
        for task in todo:
            if not tasks and task and v[task].get("prepare") and not Path(data_root or shared_data_root()).is_dir():
                log(f"{d.name} ({task}): skipped, no shared data folder at {data_root or shared_data_root()}")
                continue
            var = task if task and not v[task].get("default") else None
            tag = tag_for(d.name, var)
            with tempfile.TemporaryDirectory(prefix=f"arena-ref-{d.name}-") as tmp:
                ctx = stage(d, Path(tmp) / d.name, log, task, data_root)
                image_id = build_image(str(ctx), tag, base_image, log=lambda line: None, client=client,
                                       buildargs={"TASK": task} if task else None)
            log(f"{d.name}: built {tag} ({image_id[:19]})")
            out.append(BuiltModel(d.name, tag, image_id, var))
    return out


def reference_user(session):
    """The reserved user of the reserved "Reference models" team (created if missing)."""
    from sqlalchemy import select

    from arena.models import User
    from arena.users import create_user, get_or_create_team

    team = get_or_create_team(session, REFERENCE_TEAM, is_reference=True)
    user = session.scalar(select(User).where(User.name == REFERENCE_USER))
    if user is None:
        user, _ = create_user(session, REFERENCE_USER, team=REFERENCE_TEAM, reference_team=True)
    elif user.team_id != team.id:
        user.team = team
    return user


@dataclass
class RunResult:
    name: str
    phase: str
    submission_id: int
    created: bool  # False: this image was already submitted to the phase


def submit(settings, task_slug: str, phases: list[str] | None = None, names=None, models_dir: Path | None = None,
           log: Log = print, client=None, enqueue: bool = True) -> list[RunResult]:
    """Submit the built reference images to ``task_slug`` (each phase, or ``phases``) as reference entries."""
    from sqlalchemy import select

    from arena.db import session_scope
    from arena.images.build import save_image
    from arena.images.docker_client import docker_client
    from arena.lifecycle import SubmissionStatus
    from arena.models import Submission
    from arena.runner.jobs import enqueue_intake
    from arena.submissions.intake import check_archive, find_task_phase, store_upload

    client = client or docker_client()
    results: list[RunResult] = []
    queued: list[int] = []
    for d in discover(models_dir, names):
        v = variants(d)
        if v and task_slug not in v:  # tasks.json lists the tasks a model has weights for
            log(f"{d.name}: skipped, it has no variant for {task_slug} (its tasks.json: {sorted(v)})")
            continue
        said = v.get(task_slug, {}).get("provenance") or None
        var = variant_for(d, task_slug)
        try:
            image = client.images.get(tag_for(d.name, var))
        except Exception:
            hint = f" --task {var}" if var else ""
            raise RuntimeError(f"no image {tag_for(d.name, var)}: run `arena reference build{hint}` first") from None
        tar = settings.home / "reference" / f"{d.name}-{image.id[7:19]}.tar.gz"
        with session_scope(settings.database_url) as s:
            user = reference_user(s)
            task, _ = find_task_phase(s, task_slug, phases[0]) if phases else find_task_phase(
                s, task_slug, _first_phase(s, task_slug))
            for phase in [p for p in task.phases if not phases or p.slug in phases]:
                dup = s.scalar(select(Submission.id).where(
                    Submission.phase_id == phase.id, Submission.team_id == user.team_id,
                    Submission.image_id == image.id, Submission.status != SubmissionStatus.FAILED))
                if dup is not None:
                    log(f"{d.name}: already submitted to {task_slug}/{phase.slug} as submission {dup}")
                    results.append(RunResult(d.name, phase.slug, dup, False))
                    continue
                if not tar.is_file():
                    log(f"{d.name}: docker save -> {tar}")
                    save_image(tag_for(d.name, var), str(tar), client=client)
                with open(tar, "rb") as f:
                    upload = store_upload(f, settings)
                try:
                    info = check_archive(s, settings, phase, user.team, upload.path)
                    if info.image_id != image.id:  # a stale or wrong tarball: never submit another variant
                        tar.unlink(missing_ok=True)
                        raise RuntimeError(f"{tar.name} holds image {info.image_id[:19]}, not {tag_for(d.name, var)} "
                                           f"({image.id[:19]}); removed, run again")
                    sub = Submission(task=task, phase=phase, team=user.team, user=user, label=f"{d.name} (reference)",
                                     status=SubmissionStatus.UPLOADED, upload_name=tar.name,
                                     upload_path=str(upload.path), upload_sha256=upload.sha256,
                                     upload_bytes=upload.size, image_id=info.image_id, image_user=info.user,
                                     image_bytes=info.uncompressed_bytes,
                                     provenance=said)
                    s.add(sub)
                    s.flush()
                except BaseException:
                    upload.path.unlink(missing_ok=True)
                    raise
                log(f"{d.name}: submitted to {task_slug}/{phase.slug} as submission {sub.id}")
                results.append(RunResult(d.name, phase.slug, sub.id, True))
                queued.append(sub.id)
    if enqueue:
        for sid in queued:
            enqueue_intake(settings, sid)
    return results


def _first_phase(session, task_slug: str) -> str:
    from sqlalchemy import select

    from arena.models import Task
    from arena.submissions.intake import UploadError

    task = session.scalar(select(Task).where(Task.slug == task_slug))
    if task is None or not task.phases:
        raise UploadError(f"no task {task_slug!r}", status=404)
    return task.phases[0].slug


def report(board, names=None) -> str:
    """Markdown of the reference entries of a board (``arena.leaderboard.query.Leaderboard``): per entry its
    board numbers (the task's aggregate metrics, seconds per case, peak MB) and a per-label table of the
    mean of each metric over the phase's cases — the tables the models' READMEs quote.

    ``names``: only entries whose label starts with one of these model names.
    """
    spec, table = board.spec, board.table
    if table.empty or "badge" not in table:
        return ""
    rows = table[table["badge"].eq("reference")]
    if names:
        rows = rows[rows["label"].astype(str).str.startswith(tuple(names))]
    metrics = [m.name for m in spec.metrics]
    out = []
    for row in rows.to_dict(orient="records"):
        mean = "" if spec.has_set_metrics else f"{'weighted ' if spec.ranking.label_weights else ''}mean "
        agg = ", ".join(f"{mean}{m} {_fmt(row.get(m), m)}" for m in metrics if row.get(m) is not None)
        res = "".join(f", {v:.1f} s/case" if k == "runtime_s" else f", peak {v:.0f} MB"
                      for k in ("runtime_s", "peak_memory_mb")
                      if isinstance(v := row.get(k), float) and v == v)
        out.append(f"**{row['label']}** on {board.task.slug}/{board.phase.slug} ({int(row['cases'])} cases): "
                   f"{agg}{res}\n")
        per_label = [m for m in metrics if any(f"{m}:{lab.name}" in row for lab in spec.labels.values())]
        if per_label:
            out.append("| label | " + " | ".join(per_label) + " |")
            out.append("|---|" + "---:|" * len(per_label))
            for lab in spec.labels.values():
                out.append(f"| {lab.name} | " + " | ".join(_fmt(row.get(f"{m}:{lab.name}"), m) for m in per_label) + " |")
        out.append("")
    return "\n".join(out)


def _fmt(v, metric: str) -> str:
    if v is None or v != v:
        return "–"
    if metric == "fp_score":  # DigestPath's normal-region score, 0-100
        return f"{v:.1f}"
    if metric in ("dice", "nsd", "recall", "froc", "auc"):
        return f"{v:.3f}"
    return f"{v:.2f} mm" if metric.startswith(("hd", "assd", "masd")) else f"{v:.2f}"
