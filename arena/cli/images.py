"""``arena images build-base|base-tag|build-example``: build images locally (no registry needed)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from arena import __version__
from arena.cli.root import REPO_ROOT, _fail, main
from arena.config import load_settings

EXAMPLE_DIR = REPO_ROOT / "examples" / "threshold-segmenter"


@main.group()
def images() -> None:
    """Build images locally (no registry needed)."""


@images.command("build-base")
@click.option("--force", is_flag=True, help="rebuild even if the tag exists")
def images_build_base(force: bool) -> None:
    """Build arena/base:<version>-<contents> with mmdebstrap + docker import."""
    from arena.images.base import BASE_TAG, build_base_image

    t0 = time.monotonic()
    image_id = build_base_image(force=force, log=click.echo)
    click.echo(f"base image {BASE_TAG} ({image_id[:19]}) ready in {time.monotonic() - t0:.1f} s")


@images.command("base-tag")
def images_base_tag() -> None:
    """Print the base image's tag (for `docker build --build-arg BASE_IMAGE=$(arena images base-tag)`)."""
    from arena.images.base import BASE_TAG

    click.echo(BASE_TAG)


@images.command("build-example")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to write the docker save tarball (default: ARENA_HOME/examples/)")
@click.option("--task", "task", default=None,
              help="a task slug or folder: build for its label map (the example's mode with the same label ids "
                   "and names; e.g. a task.yaml of your own with OpenKBP's labels gets the han-oar-openkbp mode)")
def images_build_example(output: Path | None, task: str | None) -> None:
    """Build the example algorithm (examples/threshold-segmenter) and save it as a tarball."""
    mode = None
    if task is not None:
        try:
            mode = example_mode_for(_task_spec(task))
        except ValueError as e:
            _fail(str(e))
        click.echo(f"example algorithm for {task}: mode {mode} (--build-arg TASK={mode})")
    path = build_example(load_settings(), output, log=click.echo, mode=mode)
    click.echo(str(path))


def _task_spec(task: str):
    """The spec of a task folder, or of a slug: tasks/<slug>, else the task in the database."""
    from sqlalchemy import select

    from arena.db import session_scope
    from arena.models import Task
    from arena.tasks.spec import TaskSpecError, load_spec
    from arena.tasks.store import spec_of

    folder = Path(task) if Path(task).is_dir() else REPO_ROOT / "tasks" / task
    if (folder / "task.yaml").is_file():
        try:
            return load_spec(folder)
        except TaskSpecError as e:
            raise ValueError(str(e)) from None
    with session_scope(load_settings().database_url) as s:
        t = s.scalar(select(Task).where(Task.slug == task))
        if t is None:
            raise ValueError(f"no task folder {folder} and no task {task!r} in the database")
        return spec_of(t)


def example_modes() -> tuple[str, ...]:
    """The example's task modes (``TASK_MODES`` in examples/threshold-segmenter/algorithm.py)."""
    import ast
    import re

    m = re.search(r"^TASK_MODES = (\(.*?\))$", (EXAMPLE_DIR / "algorithm.py").read_text(), re.M)
    return tuple(ast.literal_eval(m.group(1))) if m else ("han-oar-22",)


def example_mode_for(spec) -> str:
    """The example's mode whose label map (tasks/<mode>/task.yaml: ids and names, case-insensitive) is the
    task's, or its own slug when that is a mode; ValueError naming the modes when none fits."""
    from arena.tasks.spec import TaskSpecError, load_spec

    modes = example_modes()
    if spec.slug in modes:
        return spec.slug
    want = {k: v.name.lower() for k, v in spec.labels.items()}
    for mode in modes:
        try:
            other = load_spec(REPO_ROOT / "tasks" / mode)
        except (TaskSpecError, FileNotFoundError):
            continue
        if {k: v.name.lower() for k, v in other.labels.items()} == want:
            return mode
    raise ValueError(f"the example algorithm has no mode for {spec.slug}'s label map ({len(want)} labels); its "
                     f"modes are {', '.join(modes)} (the label maps of those tasks)")


def build_example(settings, output: Path | None = None, log=print, mode: str | None = None) -> Path:
    """Build examples/threshold-segmenter (``--build-arg TASK=mode`` when ``mode`` is given) and save it as
    a gzip'd docker-save tarball; returns its path."""
    from arena.images.base import BASE_TAG, build_base_image
    from arena.images.build import build_image, save_image

    build_base_image(log=log)
    suffix = f"-{mode}" if mode else ""
    tag = f"arena/example-threshold-segmenter{suffix}:{__version__}"
    build_image(str(EXAMPLE_DIR), tag, BASE_TAG, log=lambda line: None,
                buildargs={"TASK": mode} if mode else None)
    output = output or settings.home / "examples" / f"threshold-segmenter{suffix}.tar.gz"
    output.parent.mkdir(parents=True, exist_ok=True)
    save_image(tag, str(output), compress=True)
    log(f"example algorithm saved: {output} ({output.stat().st_size / 1e6:.1f} MB)")
    return output
