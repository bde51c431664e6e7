"""The root of the ``arena`` command: the group every command module registers on, and what they share."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from arena import __version__

REPO_ROOT = Path(__file__).resolve().parents[2]


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(2)


@click.group()
@click.version_option(__version__, prog_name="arena")
def main() -> None:
    """Arena: challenges and model evaluation for medical image AI."""

