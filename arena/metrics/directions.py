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


#: each metric's unit as plots and tables print it: surface distances in mm, volumes in mm³; Dice, Jaccard and
#: AUC are unitless in 0..1; NSD, recall and the FROC (a mean sensitivity) are fractions in 0..1; the DigestPath
#: FP score is points (max(fp_score_max - FPs, 0), 0..100 by default)
UNITS: dict[str, str] = {
    **{m: "mm" for m in DISTANCE_METRICS},
    **{m: "mm³" for m in ("volume_ref", "volume_pred", "volume_diff")},
    **{m: "unitless, 0–1" for m in ("dice", "jaccard", "auc")},
    **{m: "fraction, 0–1" for m in ("nsd", "recall", "froc")},
    "fp_score": "points",
}


def unit(metric: str) -> str:
    """The unit of ``metric`` (see UNITS), e.g. "mm" for hd95; "" for a name UNITS does not know."""
    return UNITS.get(metric, "")


def higher_is_better(metric: str) -> bool:
    """True for metrics where a larger value is a better result (see HIGHER_IS_BETTER)."""
    return metric in HIGHER_IS_BETTER
