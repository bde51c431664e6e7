"""Arena's metrics: pure functions on numpy arrays (see segmentation.py for the conventions).

The names below are loaded on first use (PEP 562): importing one submodule, e.g.
``arena.metrics.segmentation`` for ``arena metrics seg``, does not pay for the others (the detection
metrics need pandas, the classification metrics scipy.stats: together about 1 s of start-up).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "roc_auc": "classification",
    **{name: "detection" for name in ("DIGESTPATH_FP_RATES", "LUNA16_FP_RATES", "DetectionMatch", "FROCCurve",
                                      "PRCurve", "match_detections", "read_detections", "score_detection")},
    **{name: "segmentation" for name in ("CONVENTIONS", "METRICS", "EmptyPolicy", "mean_over_labels",
                                         "score_segmentation", "score_segmentation_conventions")},
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'arena.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"arena.metrics.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
