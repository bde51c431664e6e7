"""``arena images build-base|base-tag|build-example``: build images locally (no registry needed)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from arena import __version__
from arena.cli.root import REPO_ROOT, main
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
def images_build_example(output: Path | None) -> None:
    """Build the example algorithm (examples/threshold-segmenter) and save it as a tarball."""
    path = build_example(load_settings(), output, log=click.echo)
    click.echo(str(path))


def build_example(settings, output: Path | None = None, log=print) -> Path:
    from arena.images.base import BASE_TAG, build_base_image
    from arena.images.build import build_image, save_image

    build_base_image(log=log)
    tag = f"arena/example-threshold-segmenter:{__version__}"
    build_image(str(EXAMPLE_DIR), tag, BASE_TAG, log=lambda line: None)
    output = output or settings.home / "examples" / "threshold-segmenter.tar.gz"
    output.parent.mkdir(parents=True, exist_ok=True)
    save_image(tag, str(output), compress=True)
    log(f"example algorithm saved: {output} ({output.stat().st_size / 1e6:.1f} MB)")
    return output
