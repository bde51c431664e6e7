"""Arena's metrics: pure functions on numpy arrays (see segmentation.py for the conventions)."""

from arena.metrics.classification import roc_auc
from arena.metrics.detection import (
    DIGESTPATH_FP_RATES,
    LUNA16_FP_RATES,
    DetectionMatch,
    FROCCurve,
    PRCurve,
    match_detections,
    read_detections,
    score_detection,
)
from arena.metrics.segmentation import (
    CONVENTIONS,
    METRICS,
    EmptyPolicy,
    mean_over_labels,
    score_segmentation,
    score_segmentation_conventions,
)

__all__ = ["CONVENTIONS", "METRICS", "EmptyPolicy", "mean_over_labels", "score_segmentation",
           "score_segmentation_conventions", "score_detection", "match_detections", "read_detections",
           "DetectionMatch", "FROCCurve", "PRCurve", "LUNA16_FP_RATES", "DIGESTPATH_FP_RATES", "roc_auc"]
