"""Which way each metric points: the one definition the spec, the kinds and the boards use."""

from __future__ import annotations

#: better when higher: overlap (dice, jaccard, nsd), detection over a test set (recall, fp_score, froc) and
#: image-level classification (auc); every other metric (distances, volumes) is better when lower
HIGHER_IS_BETTER = frozenset({"dice", "jaccard", "nsd", "recall", "fp_score", "froc", "auc"})
#: surface distances in mm: a missed organ's value is a penalty distance (the empty-mask policy's)
DISTANCE_METRICS = frozenset({"hd", "hd95", "assd", "masd", "asd_pred_to_ref", "asd_ref_to_pred"})
#: computed over a phase's whole test set per entry, not per case (detection as DigestPath scores it, AUC)
SET_METRICS = frozenset({"recall", "fp_score", "froc", "auc"})
#: bounded overlap metrics, reported as a fraction (0..1) or a percentage
OVERLAP_METRICS = frozenset({"dice", "jaccard", "nsd"})


def higher_is_better(metric: str) -> bool:
    """True for metrics where a larger value is a better result (see HIGHER_IS_BETTER)."""
    return metric in HIGHER_IS_BETTER
