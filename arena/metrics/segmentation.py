"""Segmentation metrics on label maps: pure functions on numpy arrays.

Units: ``spacing`` is in mm per *array axis* (for a SimpleITK array ``(z, y, x)`` pass the image's
spacing reversed); every distance is in mm.

Conventions (a task names one; see DESIGN.md "Metrics"):

- ``medpy``: boundary voxels are ``mask XOR erosion(mask)`` (face connectivity, outside the image
  counts as background); distances are between voxel centres; HD95 is *one* percentile
  (numpy's linear interpolation) over the pooled distances of both directions — medpy 0.5 ``hd95``.
- ``max-directed``: the same boundary voxels; the percentile of each direction, then the max
  (MONAI ``compute_hausdorff_distance``, MetricsReloaded).
- ``mean-directed``: the mean of the two directed percentiles (FocusNetv2's definition; plastimatch).

In every convention: HD is the max over both directions; ASSD is the mean of the *pooled*
distances of both directions (medpy 0.5 ``assd``, MONAI's symmetric ASD, MetricsReloaded), not the
mean of the two directed means; NSD at tolerance τ mm is the fraction of boundary voxels of both masks
lying within τ of the other boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage

Convention = Literal["medpy", "max-directed", "mean-directed"]
CONVENTIONS: tuple[str, ...] = ("medpy", "max-directed", "mean-directed")
METRICS: tuple[str, ...] = ("dice", "hd95", "hd", "assd", "nsd")


@dataclass(frozen=True)
class EmptyPolicy:
    """What the metrics are when a label is absent from one or both masks.

    both_empty: ``"exclude"`` → every metric is None (left out of means); ``"perfect"`` → Dice 1,
        NSD 1, distances 0.
    one_empty_distance: the distance (mm) reported when exactly one mask is empty: ``"diagonal"``
        (the image diagonal in mm), ``"nan"``, or a number of mm. Dice and NSD are then 0.
    """

    both_empty: Literal["exclude", "perfect"] = "exclude"
    one_empty_distance: float | Literal["diagonal", "nan"] = "diagonal"

    def worst_distance(self, shape: Sequence[int], spacing: Sequence[float]) -> float:
        if self.one_empty_distance == "diagonal":
            return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))
        if self.one_empty_distance == "nan":
            return float("nan")
        return float(self.one_empty_distance)


def _check_inputs(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> tuple[float, ...]:
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction: shape {prediction.shape} differs from reference shape {reference.shape}")
    for name, arr in (("prediction", prediction), ("reference", reference)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"{name}: expected an integer label map, got dtype {arr.dtype}")
        if arr.ndim < 1:
            raise ValueError(f"{name}: expected a label map with at least one axis, got a scalar")
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != prediction.ndim:
        raise ValueError(f"spacing: expected {prediction.ndim} values (one per array axis), got {len(spacing_t)}")
    if not all(math.isfinite(s) and s > 0 for s in spacing_t):
        raise ValueError(f"spacing: expected positive finite mm values, got {spacing_t}")
    return spacing_t


def _boundary(mask: np.ndarray) -> np.ndarray:
    """mask XOR erosion(mask), face connectivity; outside the array counts as background."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def directed_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each boundary voxel of ``a`` to the nearest boundary voxel of ``b``, and back.

    Both masks must be non-empty. Works on the arrays as given (crop them first for speed).
    """
    ba, bb = _boundary(a), _boundary(b)
    dt_b = ndimage.distance_transform_edt(~bb, sampling=spacing)
    dt_a = ndimage.distance_transform_edt(~ba, sampling=spacing)
    return dt_b[ba], dt_a[bb]


def _crop(slices_a: tuple[slice, ...] | None, slices_b: tuple[slice, ...] | None, shape: tuple[int, ...],
          margin: int = 1) -> tuple[slice, ...]:
    boxes = [s for s in (slices_a, slices_b) if s is not None]
    return tuple(
        slice(max(0, min(b[d].start for b in boxes) - margin), min(shape[d], max(b[d].stop for b in boxes) + margin))
        for d in range(len(shape))
    )


def _distance_metrics(d_ab: np.ndarray, d_ba: np.ndarray, convention: str, percentile: float,
                      tolerance_mm: float) -> dict[str, float]:
    if convention == "medpy":
        hdp = float(np.percentile(np.concatenate([d_ab, d_ba]), percentile))
    else:
        pa, pb = float(np.percentile(d_ab, percentile)), float(np.percentile(d_ba, percentile))
        hdp = max(pa, pb) if convention == "max-directed" else (pa + pb) / 2.0
    return {
        "hd95": hdp,
        "hd": float(max(d_ab.max(), d_ba.max())),
        "assd": float((d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size)),
        "nsd": float((np.count_nonzero(d_ab <= tolerance_mm) + np.count_nonzero(d_ba <= tolerance_mm))
                     / (d_ab.size + d_ba.size)),
    }


def score_segmentation(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float],
    labels: Iterable[int],
    convention: Convention = "medpy",
    percentile: float = 95.0,
    tolerance_mm: float = 1.0,
    empty_policy: EmptyPolicy = EmptyPolicy(),
) -> dict[int, dict[str, float | None]]:
    """Score a multi-label ``prediction`` against a multi-label ``reference``, label by label.

    Returns ``{label: {"dice", "hd95", "hd", "assd", "nsd"}}``; "hd95" is the ``percentile``-th
    percentile distance (mm) in the named ``convention``. A value is None where the empty policy
    excludes it. Each label is scored on the bounding box of the pair (plus one voxel), so small
    organs in large volumes cost little.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {CONVENTIONS}, got {convention!r}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a number in (0, 100], got {percentile}")
    if not tolerance_mm > 0:
        raise ValueError(f"tolerance_mm: expected a positive number of mm, got {tolerance_mm}")
    spacing_t = _check_inputs(prediction, reference, spacing)
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    labels = [int(lab) for lab in labels]
    if any(lab <= 0 for lab in labels):
        raise ValueError(f"labels: expected positive label ids, got {labels}")
    # One pass each to find every label's bounding box.
    boxes_p = ndimage.find_objects(prediction.astype(np.int64, copy=False) if prediction.dtype == bool else prediction,
                                   max_label=max(labels, default=0))
    boxes_r = ndimage.find_objects(reference.astype(np.int64, copy=False) if reference.dtype == bool else reference,
                                   max_label=max(labels, default=0))
    worst = None
    out: dict[int, dict[str, float | None]] = {}
    for lab in labels:
        bp, br = boxes_p[lab - 1], boxes_r[lab - 1]
        if bp is None and br is None:
            if empty_policy.both_empty == "exclude":
                out[lab] = {m: None for m in METRICS}
            else:
                out[lab] = {"dice": 1.0, "hd95": 0.0, "hd": 0.0, "assd": 0.0, "nsd": 1.0}
            continue
        if bp is None or br is None:
            if worst is None:
                worst = empty_policy.worst_distance(prediction.shape, spacing_t)
            out[lab] = {"dice": 0.0, "hd95": worst, "hd": worst, "assd": worst, "nsd": 0.0}
            continue
        box = _crop(bp, br, prediction.shape)
        p = prediction[box] == lab
        r = reference[box] == lab
        n_p, n_r = np.count_nonzero(p), np.count_nonzero(r)
        dice = 2.0 * np.count_nonzero(p & r) / (n_p + n_r)
        d_pr, d_rp = directed_distances(p, r, spacing_t)
        out[lab] = {"dice": float(dice), **_distance_metrics(d_pr, d_rp, convention, percentile, tolerance_mm)}
    return out


def mean_over_labels(scores: Mapping[int, Mapping[str, float | None]], metric: str,
                     weights: Mapping[int, float] | None = None) -> float | None:
    """(Weighted) mean of one metric over labels, skipping excluded (None) and NaN values."""
    num = den = 0.0
    for lab, vals in scores.items():
        v = vals.get(metric)
        if v is None or math.isnan(v):
            continue
        w = 1.0 if weights is None else float(weights.get(lab, 1.0))
        num += w * v
        den += w
    return num / den if den else None
