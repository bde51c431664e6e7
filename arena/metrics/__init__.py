"""Arena's metrics: pure functions on numpy arrays (see segmentation.py for the conventions)."""

from arena.metrics.segmentation import (
    CONVENTIONS,
    METRICS,
    EmptyPolicy,
    mean_over_labels,
    score_segmentation,
    score_segmentation_conventions,
)

__all__ = ["CONVENTIONS", "METRICS", "EmptyPolicy", "mean_over_labels", "score_segmentation",
           "score_segmentation_conventions"]
