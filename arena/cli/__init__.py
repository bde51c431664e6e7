"""The ``arena`` command: one module per command group, each registering its commands on the root group
(arena.cli.root); importing them here is what puts them on ``main``."""

from arena.cli import (  # noqa: F401 - imported for their commands, which they register on main
    backup, cases, client, demo, images, metrics, reference, services, site, submissions, tasks, users,
)
from arena.cli.root import main

__all__ = ["main"]
