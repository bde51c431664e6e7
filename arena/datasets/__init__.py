"""Datasets: synthetic cases (the 22- and 9-organ head-and-neck phantoms, :mod:`arena.datasets.phantom`; the
thorax phantom, :mod:`arena.datasets.thorax`; pathology tiles, :mod:`arena.datasets.pathology`) and slide I/O
(:mod:`arena.datasets.slides`). Real data is read by the task folders' loaders, never copied here."""

from arena.datasets.phantom import (
    HAN_OAR_22,
    SIZE_PRESETS,
    generate_case,
    generate_case_arrays,
    parse_size,
    write_case,
)

__all__ = [
    "HAN_OAR_22",
    "SIZE_PRESETS",
    "generate_case",
    "generate_case_arrays",
    "parse_size",
    "write_case",
]
