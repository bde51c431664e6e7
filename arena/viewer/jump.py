"""Where to look in a case: per organ, the slice of largest disagreement between a model and the
reference in each view, and the location of the HD95 point. The distances come from
:mod:`arena.metrics.segmentation` (the scoring code itself), never from a second implementation.

Coordinates are array indices ``(z, y, x)`` of the LPS volume (:mod:`arena.viewer.volumes`); the slice of
a view is the index along its axis (:data:`arena.viewer.render.AXIS`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from arena.metrics.segmentation import _boundary, _crop_box, _label_boxes, directed_distances, score_segmentation
from arena.viewer.render import AXIS


def _box(mask_a: np.ndarray, mask_b: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of two binary masks together (the scoring code's box finder); None if both are empty."""
    a, b = _label_boxes(mask_a.view(np.uint8), 1)[0], _label_boxes(mask_b.view(np.uint8), 1)[0]
    return None if a is None and b is None else _crop_box(a, b)


def disagreement_slices(prediction: np.ndarray, reference: np.ndarray) -> dict[str, dict[str, int]]:
    """For binary masks of one organ: per view, the slice with the most voxels where the two differ
    (``{"axial": {"index": z, "voxels": n}, ...}``; the lowest index on ties). Empty when they agree
    everywhere."""
    p, r = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if p.shape != r.shape or p.ndim != 3:
        raise ValueError(f"prediction/reference: expected two 3-D masks of one shape, got {p.shape} and {r.shape}")
    diff = p ^ r
    if not diff.any():
        return {}
    out = {}
    for view, axis in AXIS.items():
        per = diff.sum(axis=tuple(a for a in range(3) if a != axis))
        i = int(np.argmax(per))
        out[view] = {"index": i, "voxels": int(per[i])}
    return out


def hd95_point(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
               convention: str = "medpy", percentile: float = 95.0) -> dict[str, Any] | None:
    """The boundary voxel whose distance to the other mask's boundary is the organ's HD95.

    HD95 is computed by :func:`arena.metrics.segmentation.score_segmentation` in ``convention``; the point
    is the boundary voxel (of either mask, medpy's ``mask XOR erosion``) whose nearest-boundary distance
    is closest to it (the larger distance on ties, the prediction's point before the reference's).
    Returns ``{"voxel": [z, y, x], "distance_mm", "hd95_mm", "on": "prediction"|"reference"}``, or None
    when either mask is empty (no surface distance exists)."""
    p, r = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if not p.any() or not r.any():
        return None
    box = _box(p, r)
    assert box is not None
    pad = [(1, 1)] * p.ndim  # the boundary at the crop's edge as in the full image
    pc, rc = np.pad(p[box], pad), np.pad(r[box], pad)
    hd95 = score_segmentation(pc.view(np.uint8), rc.view(np.uint8), spacing, [1],
                              convention=convention,  # type: ignore[arg-type]
                              percentile=percentile)[1]["hd95"]
    d_pr, d_rp = directed_distances(pc, rc, spacing)
    best = None
    for on, mask, d in (("prediction", pc, d_pr), ("reference", rc, d_rp)):
        pts = np.argwhere(_boundary(mask))
        gap = np.abs(d - hd95)
        i = int(np.lexsort((-d, gap))[0])
        cand = (float(gap[i]), -float(d[i]), on, pts[i], float(d[i]))
        if best is None or cand[:2] < best[:2]:
            best = cand
    assert best is not None
    _, _, on, pt, dist = best
    voxel = [int(pt[k] - 1 + box[k].start) for k in range(3)]
    return {"voxel": voxel, "distance_mm": dist, "hd95_mm": float(hd95), "on": on}


def jump_targets(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float], labels: Sequence[int],
                 convention: str = "medpy", percentile: float = 95.0) -> dict[str, dict[str, Any]]:
    """Per label id (as a string, JSON-ready): ``{"disagreement": disagreement_slices(...),
    "hd95": hd95_point(...)}`` for every label present in either map, in whole-volume indices. Label maps
    of one shape (z, y, x); each label is worked on inside its bounding box only."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction: shape {prediction.shape} differs from the reference's {reference.shape}")
    labels = [int(lab) for lab in labels]
    top = max(labels, default=0)
    boxes_p, boxes_r = _label_boxes(np.asarray(prediction), top), _label_boxes(np.asarray(reference), top)
    out: dict[str, dict[str, Any]] = {}
    for lab in labels:
        if lab <= 0 or (boxes_p[lab - 1] is None and boxes_r[lab - 1] is None):
            continue
        box = _crop_box(boxes_p[lab - 1], boxes_r[lab - 1])
        p, r = prediction[box] == lab, reference[box] == lab
        dis = {view: {"index": d["index"] + box[AXIS[view]].start, "voxels": d["voxels"]}
               for view, d in disagreement_slices(p, r).items()}
        pt = hd95_point(p, r, spacing, convention, percentile)
        if pt is not None:
            pt["voxel"] = [v + b.start for v, b in zip(pt["voxel"], box)]
        out[str(lab)] = {"disagreement": dis, "hd95": pt}
    return out
