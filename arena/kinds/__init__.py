"""The task-kind registry: one class per kind of task, registered by name (CTFd's challenge types).

    kind_for(spec)      the kind of a task spec (from its ``kind`` and ``modality``)
    kind_named(name)    a kind by its registry name
    register(cls)       add a kind (a class decorator); adding a kind = one module + one register call
    KINDS               name -> kind instance, in registration order

The runner, the board and the case store ask the kind (``arena/kinds/base.py`` lists what a kind
answers); nothing outside this package branches on a task's kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arena.kinds.base import DemoCase, TaskKind
from arena.kinds.tiles import TileDetection, TileSegmentation
from arena.kinds.volume import VolumeSegmentation

if TYPE_CHECKING:
    from arena.tasks.spec import TaskSpec

KINDS: dict[str, TaskKind] = {}


def register(cls: type[TaskKind]) -> type[TaskKind]:
    """Register a kind class under its ``name`` (ValueError when the name is taken)."""
    if cls.name in KINDS:
        raise ValueError(f"task kind {cls.name!r} is registered already")
    KINDS[cls.name] = cls()
    return cls


for _cls in (VolumeSegmentation, TileDetection, TileSegmentation):
    register(_cls)


def kind_for(spec: TaskSpec) -> TaskKind:
    """The registered kind whose ``matches(spec)`` holds (the first, in registration order); ValueError
    naming the spec's kind and modality when none does."""
    for kind in KINDS.values():
        if kind.matches(spec):
            return kind
    raise ValueError(f"no task kind for kind {spec.kind!r} with modality {spec.modality!r} "
                     f"(registered: {', '.join(KINDS)})")


def kind_named(name: str) -> TaskKind:
    """The kind registered as ``name``; KeyError naming the registered ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"no task kind {name!r} (registered: {', '.join(KINDS)})") from None


__all__ = ["KINDS", "DemoCase", "TaskKind", "kind_for", "kind_named", "register"]
