"""Datasets: the synthetic head-and-neck CT phantom (see :mod:`arena.datasets.phantom`)."""

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
