"""Detection metrics: matching, FROC (LUNA16, MONAI/CAMELYON, DigestPath), AP, P/R/F1 — pure functions.

Everything here is a pure function of its arguments (no I/O except :func:`read_detections`).

Data conventions
----------------
Predictions and ground truth are tables, one row per object, given as a pandas DataFrame, a mapping
``column name -> 1-D array``, or a 2-D numpy array whose columns are in the order listed below.

=====================  =========================================================================
table                  columns (order for a 2-D numpy array)
=====================  =========================================================================
point predictions      ``image, x, y[, z], probability``
box predictions        ``image, x0, y0, x1, y1, probability`` (optional ``z``: DataFrame only)
point ground truth     ``image, x, y[, z]`` (+ ``radius`` last for ``criterion="inside-radius"``)
box ground truth       ``image, x0, y0, x1, y1`` (optional ``z``: DataFrame only)
=====================  =========================================================================

- ``image``: any hashable id (compared by equality). Images with neither predictions nor ground truth
  are only known if listed in ``images=``; they still count in FP-per-image denominators.
- Coordinates are in whatever unit the task uses (mm for world coordinates, px for pixels); the
  criterion ``threshold`` (distance) and ``radius`` are in the same unit. ``x0 <= x1``, ``y0 <= y1``;
  box coordinates are continuous (area = (x1-x0)*(y1-y0), no "+1 pixel" convention, as pycocotools).
- ``probability``: any finite float (higher = more confident); a prediction counts at score
  threshold ``t`` when ``probability >= t``.
- ``radius`` (ground truth, ``inside-radius`` only): >= 0, same unit as the coordinates.
- ``ignore`` (ground truth, optional, boolean): an "irrelevant finding" / "don't care" region (LUNA16's
  ``annotations_excluded.csv``). It is not a target (never counted in sensitivity/recall); predictions
  that hit it and no available target are *ignored* (neither TP nor FP). It can absorb any number of
  predictions.
- For box tables with a ``z`` column in *both* tables (grand-challenge "2D bounding boxes" in a 3-D
  image), a box matches only boxes on the same ``z``.
- Under a point criterion, a table given as boxes is reduced to the box centres.

Hit criteria (``criterion``; the pair prediction ``p`` / ground truth ``g`` can match when):

- ``"distance"``: Euclidean distance ``d(p, g) <= threshold`` (inclusive; computed as
  ``dx²+dy²[+dz²] <= threshold²``). Best match = nearest.
- ``"inside-radius"``: ``d(p, g)² < radius_g²`` — strictly inside the GT's own radius, exactly as
  LUNA16's evaluation script (``dist < (diameter/2)²``). Best match = nearest. ``threshold`` must be None.
- ``"iou"``: box IoU ``>= threshold`` (``0 < threshold <= 1``; pycocotools' rule). Best match = highest IoU.
- ``"centre-in-box"``: the prediction's point (or box centre) lies in the GT box, borders included.
  Best match = nearest GT box centre. ``threshold`` must be None.

Matching (``matching``), per image:

- ``"greedy"`` (default; COCO/VOC): predictions in descending probability (ties: input order, a stable
  sort), each takes the best *still unmatched* target it hits (ties between equally good targets go to
  the later GT row, pycocotools' rule). One-to-one: a second prediction on an already taken target is
  a FP (unless it also hits an ``ignore`` region, then it is ignored). A target's score is the
  probability of the prediction matched to it.
- ``"luna16"``: LUNA16 evaluation-script semantics (noduleCADEvaluationLUNA16.py and the
  grand-challenge CPM calculator): a target is hit by *every* candidate that satisfies the criterion;
  its score is the highest of their probabilities and that candidate is the TP; the other candidates
  on it are ignored (neither TP nor FP, LUNA16's "double detections"); a candidate inside two targets
  counts for both (LUNA16 prints "This is strange" and goes on); candidates in ``ignore`` findings are
  ignored. Use with ``criterion="inside-radius"`` and ``ignore`` rows from ``annotations_excluded.csv``
  (LUNA16 gives them 10 mm diameter when the file says -1: ``read_detections(..., default_diameter_mm=10)``).

Curves
------
FROC (:func:`froc_curve`): at each distinct probability threshold ``t`` (descending), sensitivity =
(targets with score >= t) / (number of targets) and FPs per image = (FPs with probability >= t) /
(number of images). The point list follows sklearn's ``roc_curve`` as LUNA16 uses it: it starts at
(0, 0, threshold +inf) and, with ``drop_intermediate=True``, drops collinear points exactly like sklearn
(this matters for the "nearest" read-out). Read-outs at stated FP rates (:func:`sensitivity_at`):

- ``"interpolated"``: ``np.interp`` on the curve (LUNA16 evaluation script; what papers report);
  beyond the last point the last sensitivity is kept (flat extension).
- ``"nearest"``: the curve point whose FP rate is nearest the stated rate (first one on ties), but only
  if that distance is < ``max(fps_per_image)``; otherwise 0 — the grand-challenge LUNA16 CPM
  calculator's ``getCPM`` (the leaderboard number). A system without any FP reads 0 everywhere.

CPM (:func:`cpm`) = mean of the read-out sensitivities, by default at 1/8, 1/4, 1/2, 1, 2, 4, 8 FPs/image.
The MONAI/CAMELYON16 FROC (:func:`monai_froc_curve`, :func:`monai_froc_score`) is a separate, exact
port (thresholds = sorted unique probabilities except the lowest; (0, 0) appended; ``np.interp``).
DigestPath's "normal region" FROC counts only FPs on negative images (no targets) per negative image
(:func:`froc_curve` with ``fp_on="negative"``), read at 1, 2, 4, 8, 16, 32.

Average precision (:func:`average_precision`), on the precision/recall points at each distinct
threshold (tied probabilities form one point, so results do not depend on input order; pycocotools
instead takes tied detections one by one in input order):

- ``"all-point"``: VOC2010+ — precision made monotone (max to the right), summed over recall steps.
- ``"step"``: sklearn ``average_precision_score`` / picai_eval — Σ (R_k − R_{k−1}) · P_k, no envelope.
- ``"coco101"``: pycocotools — mean over recall thresholds ``linspace(0, 1, 101)`` of the monotone
  precision at the first point reaching that recall (0 when never reached).
- ``"voc2007"``: 11-point — mean over recall 0, 0.1, …, 1 of the max precision at recall >= r.

Empty cases
-----------
- No targets (all images negative): sensitivity, recall, AP, F1 are NaN (undefined); FP counts and
  FP rates are still reported; precision is 0 if there are predictions.
- No predictions: sensitivity 0, AP 0, recall 0, precision NaN (0/0), F1 0 (when there are targets).
- Targets but none detected: sensitivity 0 at every rate, CPM 0 (LUNA16's calculator's guard).
- No images at all: ValueError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

__all__ = [
    "AP_METHODS",
    "CRITERIA",
    "DIGESTPATH_FP_RATES",
    "LUNA16_FP_RATES",
    "MATCHINGS",
    "MONAI_FP_RATES",
    "READOUTS",
    "DetectionMatch",
    "FROCCurve",
    "PRCurve",
    "average_precision",
    "best_f1",
    "cpm",
    "digestpath_numbers",
    "digestpath_recall",
    "froc_curve",
    "froc_curve_from_scores",
    "match_detections",
    "monai_fp_tp_probs",
    "monai_froc_curve",
    "monai_froc_score",
    "operating_point",
    "pr_curve",
    "pr_curve_from_scores",
    "read_detections",
    "recall_at_precision",
    "score_detection",
    "sensitivity_at",
]

Criterion = Literal["distance", "inside-radius", "iou", "centre-in-box"]
Matching = Literal["greedy", "luna16"]
Readout = Literal["interpolated", "nearest"]
APMethod = Literal["all-point", "step", "coco101", "voc2007"]

CRITERIA: tuple[str, ...] = ("distance", "inside-radius", "iou", "centre-in-box")
MATCHINGS: tuple[str, ...] = ("greedy", "luna16")
READOUTS: tuple[str, ...] = ("interpolated", "nearest")
AP_METHODS: tuple[str, ...] = ("all-point", "step", "coco101", "voc2007")

LUNA16_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MONAI_FP_RATES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DIGESTPATH_FP_RATES: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

BOX_COLUMNS: tuple[str, ...] = ("x0", "y0", "x1", "y1")
_POINT_CRITERIA = ("distance", "inside-radius")

TP, FP, IGNORED = 1, 0, -1


# --------------------------------------------------------------------------------------------------
# input parsing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    image: np.ndarray  # object/int ids, one per row
    points: np.ndarray | None  # (n, d) float, or None for boxes
    boxes: np.ndarray | None  # (n, 4) float x0 y0 x1 y1, or None for points
    z: np.ndarray | None  # box plane (boxes only)
    probability: np.ndarray | None
    radius: np.ndarray | None
    ignore: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.image)

    def centres(self) -> np.ndarray:
        if self.points is not None:
            return self.points
        b = self.boxes
        return np.column_stack([(b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0])


def _array_columns(ncol: int, name: str, role: str, criterion: str) -> list[str]:
    """Column names for a 2-D numpy array input (see the module docstring)."""
    if role == "pred":
        if ncol == 6:
            return ["image", *BOX_COLUMNS, "probability"]
        if ncol in (4, 5) and criterion != "iou":
            return ["image", "x", "y", *(["z"] if ncol == 5 else []), "probability"]
        expect = "6 (image, x0, y0, x1, y1, probability)" if criterion == "iou" else (
            "4 or 5 (image, x, y[, z], probability) or 6 (image, x0, y0, x1, y1, probability)")
        raise ValueError(f"{name}: a 2-D array needs {expect} columns, got {ncol}")
    if criterion in ("iou", "centre-in-box"):
        if ncol == 5:
            return ["image", *BOX_COLUMNS]
        raise ValueError(f"{name}: a 2-D array needs 5 columns (image, x0, y0, x1, y1), got {ncol}")
    extra = ["radius"] if criterion == "inside-radius" else []
    d = ncol - 1 - len(extra)
    if d not in (2, 3):
        what = "image, x, y[, z]" + (", radius" if extra else "")
        raise ValueError(f"{name}: a 2-D array needs {3 + len(extra)} or {4 + len(extra)} columns ({what}), got {ncol}")
    return ["image", "x", "y", *(["z"] if d == 3 else []), *extra]


def _as_frame(obj: Any, name: str, role: str, criterion: str) -> pd.DataFrame:
    if isinstance(obj, pd.DataFrame):
        return obj
    if isinstance(obj, Mapping):
        try:
            return pd.DataFrame({k: np.asarray(v) for k, v in obj.items()})
        except ValueError as e:
            raise ValueError(f"{name}: columns of a mapping must be 1-D arrays of one length ({e})") from None
    if isinstance(obj, (np.ndarray, list, tuple)):
        arr = np.asarray(obj)
        if arr.size == 0:
            arr = arr.reshape(0, arr.shape[-1] if arr.ndim == 2 else 0)
        if arr.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array (rows = objects), got shape {arr.shape}")
        cols = _array_columns(arr.shape[1], name, role, criterion)
        df = pd.DataFrame(arr, columns=cols)
        img = df["image"]
        if arr.dtype.kind == "f" and len(img) and np.all(np.mod(img.to_numpy(dtype=float), 1) == 0):
            df["image"] = img.to_numpy(dtype=float).astype(np.int64)
        return df
    raise ValueError(f"{name}: expected a pandas DataFrame, a mapping of columns or a 2-D numpy array, "
                     f"got {type(obj).__name__}")


def _float_col(df: pd.DataFrame, col: str, name: str) -> np.ndarray:
    try:
        v = pd.to_numeric(df[col], errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name}: column '{col}' is not numeric ({e})") from None
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: column '{col}' has {int(bad.sum())} non-finite value(s) (NaN/inf), "
                         f"first at row {i}: {v[i]!r}")
    return v


def _require(df: pd.DataFrame, cols: Sequence[str], name: str, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing} for {what}; has {list(map(str, df.columns))}")


def _parse(obj: Any, name: str, role: str, criterion: str) -> _Table:
    df = _as_frame(obj, name, role, criterion)
    _require(df, ["image"], name, "the image id")
    cols = set(df.columns)
    has_points = {"x", "y"} <= cols
    has_boxes = set(BOX_COLUMNS) <= cols
    want_boxes = criterion == "iou" or (criterion == "centre-in-box" and role == "gt")
    if want_boxes:
        _require(df, BOX_COLUMNS, name, f"criterion={criterion!r} (boxes)")
        use_boxes = True
    elif has_points:
        use_boxes = False
    elif has_boxes:
        use_boxes = True  # reduced to centres
    else:
        _require(df, ["x", "y"], name, f"criterion={criterion!r} (points, or boxes x0, y0, x1, y1)")
        use_boxes = False  # unreachable
    points = boxes = z = None
    if use_boxes:
        b = np.column_stack([_float_col(df, c, name) for c in BOX_COLUMNS]) if len(df) else np.zeros((0, 4))
        for lo, hi in ((0, 2), (1, 3)):
            bad = b[:, hi] < b[:, lo]
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{name}: column '{BOX_COLUMNS[hi]}' < '{BOX_COLUMNS[lo]}' in {int(bad.sum())} "
                                 f"row(s), first at row {i} ({b[i, hi]!r} < {b[i, lo]!r})")
        boxes = b
        if "z" in cols:
            z = _float_col(df, "z", name)
    else:
        axes = ["x", "y", "z"] if "z" in cols else ["x", "y"]
        points = np.column_stack([_float_col(df, c, name) for c in axes]) if len(df) else np.zeros((0, len(axes)))
    prob = radius = None
    if role == "pred":
        _require(df, ["probability"], name, "predictions")
        prob = _float_col(df, "probability", name)
    if role == "gt" and criterion == "inside-radius":
        _require(df, ["radius"], name, "criterion='inside-radius'")
        radius = _float_col(df, "radius", name)
        bad = radius < 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}: column 'radius' must be >= 0; {int(bad.sum())} negative value(s), "
                             f"first at row {i}: {radius[i]!r}")
    ignore = np.zeros(len(df), dtype=bool)
    if role == "gt" and "ignore" in cols:
        ig = df["ignore"].to_numpy()
        if ig.dtype != bool:
            try:
                igf = pd.to_numeric(pd.Series(ig), errors="raise").to_numpy(dtype=float)
            except (ValueError, TypeError):
                raise ValueError(f"{name}: column 'ignore' must be boolean (or 0/1)") from None
            if not np.isin(igf, (0.0, 1.0)).all():
                raise ValueError(f"{name}: column 'ignore' must be boolean (or 0/1)")
            ig = igf.astype(bool)
        ignore = ig.astype(bool)
    image = df["image"].to_numpy()
    if len(image) and pd.isna(image).any():
        raise ValueError(f"{name}: column 'image' has missing ids")
    return _Table(image=image, points=points, boxes=boxes, z=z, probability=prob, radius=radius, ignore=ignore)


def _image_codes(images: Iterable[Hashable] | None, pred: _Table, gt: _Table) -> tuple[list, np.ndarray, np.ndarray]:
    if images is None:
        idx = pd.Index(pred.image, dtype=object).append(pd.Index(gt.image, dtype=object)).unique()
    else:
        idx = pd.Index(list(images), dtype=object)
        if idx.has_duplicates:
            dup = idx[idx.duplicated()].unique().tolist()[:5]
            raise ValueError(f"images: duplicate image ids {dup}")
    if len(idx) == 0:
        raise ValueError("images: no images to score (no predictions, no ground truth and no `images`)")
    codes = []
    for name, t in (("predictions", pred), ("ground_truth", gt)):
        c = idx.get_indexer(pd.Index(t.image, dtype=object)) if len(t) else np.zeros(0, dtype=np.int64)
        if (c < 0).any():
            unknown = pd.unique(t.image[c < 0])[:5].tolist()
            raise ValueError(f"{name}: image id(s) not in `images`: {unknown}")
        codes.append(c.astype(np.int64))
    return idx.tolist(), codes[0], codes[1]


# --------------------------------------------------------------------------------------------------
# candidate pairs
# --------------------------------------------------------------------------------------------------


def _pairs_within(a: np.ndarray, b: np.ndarray, ga: np.ndarray, gb: np.ndarray, r: float,
                  p: float) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with ga[i] == gb[j] and ||a_i - b_j||_p <= r (a superset: the caller filters exactly).

    One KD-tree over all images: the group code becomes an extra coordinate spaced 2r+1 apart, so
    points of different groups are always farther than r (no precision is lost: within a group that
    coordinate is identical)."""
    empty = np.zeros(0, dtype=np.int64)
    if len(a) == 0 or len(b) == 0:
        return empty, empty
    rq = float(r) * (1 + 1e-9) + 1e-12
    grid = _grid_pairs(a, b, ga, gb, rq)
    if grid is not None:
        return grid
    big = 2.0 * rq + 1.0
    ta = cKDTree(np.column_stack([a, ga.astype(float) * big]))
    tb = cKDTree(np.column_stack([b, gb.astype(float) * big]))
    s = ta.sparse_distance_matrix(tb, rq, p=p, output_type="ndarray")
    return s["i"].astype(np.int64), s["j"].astype(np.int64)


def _grid_pairs(a: np.ndarray, b: np.ndarray, ga: np.ndarray, gb: np.ndarray,
                r: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Uniform-grid join (cell side r): every (i, j) in the same group whose cells are neighbours,
    a superset of the pairs within Chebyshev (hence Euclidean) distance r. Pure numpy: one sort of
    ``b``'s cell keys and ``3**d`` ``searchsorted`` calls. None when the keys would not fit in int64
    (tiny r over a huge extent); the caller then uses a KD-tree."""
    d = a.shape[1]
    lo = np.minimum(a.min(axis=0), b.min(axis=0))
    hi = np.maximum(a.max(axis=0), b.max(axis=0))
    # cells slightly larger than r, and at most 2**24 per axis, so that the rounding of (a - lo) / r
    # (< 1e-8 cell) can never drop a pair at distance exactly r
    r = r * (1 + 1e-6)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ncell = np.floor((hi - lo) / r) + 3  # +1 margin each side for the neighbour offsets
    ngroups = float(max(ga.max(), gb.max()) + 1)
    if (not np.isfinite(ncell).all() or (ncell > 2**24).any()
            or ngroups * float(np.prod(ncell)) > 2.0**62):
        return None
    ncell = ncell.astype(np.int64)
    # key = ((g * n0 + c0) * n1 + c1) * n2 + c2: mult[k] multiplies cell index k, gmult the group
    mult = np.ones(d, dtype=np.int64)
    for k in range(d - 2, -1, -1):
        mult[k] = mult[k + 1] * ncell[k + 1]
    gmult = mult[0] * ncell[0]
    ca = np.floor((a - lo) / r).astype(np.int64) + 1
    cb = np.floor((b - lo) / r).astype(np.int64) + 1
    kb = gb.astype(np.int64) * gmult + cb @ mult
    ob = np.argsort(kb, kind="stable")
    ukeys, ustart, ucount = np.unique(kb[ob], return_index=True, return_counts=True)
    ka = ga.astype(np.int64) * gmult + ca @ mult
    oa = np.argsort(ka, kind="stable")
    kas = ka[oa]  # sorted needles: searchsorted is much faster on them
    offsets = np.array(np.meshgrid(*([[-1, 0, 1]] * d), indexing="ij")).reshape(d, -1).T @ mult
    ii, starts, counts = [], [], []
    for off in offsets.tolist():
        q = kas + off
        pos = np.minimum(np.searchsorted(ukeys, q, side="left"), ukeys.size - 1)
        hit = np.flatnonzero(ukeys[pos] == q)
        ii.append(oa[hit])
        starts.append(ustart[pos[hit]])
        counts.append(ucount[pos[hit]])
    i0, st, cnt = np.concatenate(ii), np.concatenate(starts), np.concatenate(counts)
    total = int(cnt.sum())
    if total == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e
    i = np.repeat(i0, cnt)
    j = ob[np.repeat(st - (np.cumsum(cnt) - cnt), cnt) + np.arange(total, dtype=np.int64)]
    return i, j


def _box_iou_pairs(pb: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """IoU of row-aligned box pairs (continuous coordinates; 0 when the union is empty)."""
    iw = np.minimum(pb[:, 2], gb[:, 2]) - np.maximum(pb[:, 0], gb[:, 0])
    ih = np.minimum(pb[:, 3], gb[:, 3]) - np.maximum(pb[:, 1], gb[:, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = (pb[:, 2] - pb[:, 0]) * (pb[:, 3] - pb[:, 1]) + (gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _candidate_pairs(pred: _Table, gt: _Table, pc: np.ndarray, gc: np.ndarray, criterion: str,
                     threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pred index, gt index, quality (higher = better), value) for every pair meeting the criterion.

    ``value`` is the IoU (iou) or the distance (other criteria) of the pair."""
    if criterion in _POINT_CRITERIA:
        a, b = pred.centres(), gt.centres()
        if len(pred) and len(gt) and a.shape[1] != b.shape[1]:
            raise ValueError(f"predictions: {a.shape[1]}-D points but ground_truth has {b.shape[1]}-D points "
                             f"(column 'z' in one table only)")
        r = float(threshold) if criterion == "distance" else (float(gt.radius.max()) if len(gt) else 0.0)
        i, j = _pairs_within(a, b, pc, gc, r, 2.0)
        diff = b[j] - a[i]
        d2 = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1]
        if diff.shape[1] == 3:
            d2 = d2 + diff[:, 2] * diff[:, 2]
        if criterion == "distance":
            keep = d2 <= r * r
        else:
            rg = gt.radius[j]
            keep = d2 < rg * rg
        i, j, d2 = i[keep], j[keep], d2[keep]
        return i, j, -d2, np.sqrt(d2)
    # box ground truth: group by image (and z plane when both tables have z)
    if pred.z is not None and gt.z is not None:
        keys = pd.MultiIndex.from_arrays([np.r_[pc, gc], np.r_[pred.z, gt.z]])
        codes = pd.factorize(keys)[0].astype(np.int64)
        pg, gg = codes[: len(pred)], codes[len(pred):]
    else:
        pg, gg = pc, gc
    g = gt.boxes
    gcen = np.column_stack([(g[:, 0] + g[:, 2]) / 2.0, (g[:, 1] + g[:, 3]) / 2.0])
    ghalf = np.column_stack([(g[:, 2] - g[:, 0]) / 2.0, (g[:, 3] - g[:, 1]) / 2.0])
    if criterion == "iou":
        p = pred.boxes
        pcen = np.column_stack([(p[:, 0] + p[:, 2]) / 2.0, (p[:, 1] + p[:, 3]) / 2.0])
        phalf = np.column_stack([(p[:, 2] - p[:, 0]) / 2.0, (p[:, 3] - p[:, 1]) / 2.0])
        r = (float(phalf.max()) if len(p) else 0.0) + (float(ghalf.max()) if len(g) else 0.0)
        i, j = _pairs_within(pcen, gcen, pg, gg, r, np.inf)
        iou = _box_iou_pairs(p[i], g[j])
        keep = iou >= threshold
        return i[keep], j[keep], iou[keep], iou[keep]
    # centre-in-box
    a = pred.centres()
    r = float(ghalf.max()) if len(g) else 0.0
    i, j = _pairs_within(a, gcen, pg, gg, r, np.inf)
    pa, gb = a[i], g[j]
    keep = (pa[:, 0] >= gb[:, 0]) & (pa[:, 0] <= gb[:, 2]) & (pa[:, 1] >= gb[:, 1]) & (pa[:, 1] <= gb[:, 3])
    i, j = i[keep], j[keep]
    diff = gcen[j] - a[i]
    d2 = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1]
    return i, j, -d2, np.sqrt(d2)


# --------------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionMatch:
    """Result of :func:`match_detections`. Row indices refer to the input tables' row order.

    Attributes:
        images: all image ids; ``pred_image``/``gt_image`` are indices into it.
        pred_status: per prediction, 1 = TP, 0 = FP, -1 = ignored (hit an ``ignore`` region, or a
            LUNA16 double detection).
        pred_gt: per prediction, the GT row it is matched to (TP), or the GT/ignore row that made it
            ignored; -1 for a FP.
        pred_value: per prediction, IoU (``iou``) or distance (other criteria) to ``pred_gt``; NaN if none.
        gt_score: per GT row, the probability at which it is detected (the matched prediction's; LUNA16:
            the max over the candidates hitting it); NaN if missed or if the row is an ``ignore`` region.
        gt_max_probability: per GT row, the max probability of *any* prediction meeting the criterion
            with it (greedy matching may have given that prediction to another target); NaN if none.
        gt_pred: per GT row, the matched prediction's row, -1 if none.
    """

    images: list
    criterion: str
    threshold: float | None
    matching: str
    pred_image: np.ndarray
    pred_probability: np.ndarray
    pred_status: np.ndarray
    pred_gt: np.ndarray
    pred_value: np.ndarray
    gt_image: np.ndarray
    gt_ignore: np.ndarray
    gt_score: np.ndarray
    gt_max_probability: np.ndarray
    gt_pred: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def n_gt(self) -> int:
        """Number of targets (GT rows that are not ``ignore`` regions)."""
        return int((~self.gt_ignore).sum())

    @property
    def is_tp(self) -> np.ndarray:
        return self.pred_status == TP

    @property
    def is_fp(self) -> np.ndarray:
        return self.pred_status == FP

    @property
    def negative_images(self) -> np.ndarray:
        """Boolean per image: True when the image has no target (``ignore`` regions do not count)."""
        neg = np.ones(self.n_images, dtype=bool)
        neg[self.gt_image[~self.gt_ignore]] = False
        return neg


def _check_criterion(criterion: str, threshold: float | None) -> float | None:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: unknown {criterion!r}; expected one of {list(CRITERIA)}")
    if criterion in ("inside-radius", "centre-in-box"):
        if threshold is not None:
            raise ValueError(f"threshold: must be None for criterion={criterion!r} "
                             f"({'the GT radius' if criterion == 'inside-radius' else 'the GT box'} decides)")
        return None
    if threshold is None:
        raise ValueError(f"threshold: required for criterion={criterion!r} "
                         f"({'a distance in mm/px' if criterion == 'distance' else 'an IoU in (0, 1]'})")
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold: expected a number, got {threshold!r}") from None
    if criterion == "distance" and not (math.isfinite(t) and t >= 0):
        raise ValueError(f"threshold: a distance must be finite and >= 0, got {threshold!r}")
    if criterion == "iou" and not (0 < t <= 1):
        raise ValueError(f"threshold: an IoU threshold must be in (0, 1], got {threshold!r}")
    return t


def match_detections(predictions: Any, ground_truth: Any, *, criterion: Criterion, threshold: float | None = None,
                     matching: Matching = "greedy", images: Iterable[Hashable] | None = None) -> DetectionMatch:
    """Match predictions to ground truth per image (see the module docstring for the conventions).

    Args:
        predictions: table of points or boxes with ``image`` and ``probability``.
        ground_truth: table of points (``radius`` for ``inside-radius``) or boxes, optional ``ignore``.
        criterion: ``"distance"``, ``"inside-radius"``, ``"iou"`` or ``"centre-in-box"``.
        threshold: distance (same unit as the coordinates, inclusive) or IoU (``>=``); None for
            ``inside-radius`` and ``centre-in-box``.
        matching: ``"greedy"`` (one-to-one, descending probability) or ``"luna16"``.
        images: every image id of the test set (images without predictions and GT count in the
            FP-per-image denominators). Default: the ids seen in the two tables.

    Raises:
        ValueError: unknown criterion/matching, missing columns, NaN/inf values, negative radius,
            ``x1 < x0`` / ``y1 < y0``, image ids not in ``images``, no images at all.
    """
    thr = _check_criterion(criterion, threshold)
    if matching not in MATCHINGS:
        raise ValueError(f"matching: unknown {matching!r}; expected one of {list(MATCHINGS)}")
    pred = _parse(predictions, "predictions", "pred", criterion)
    gt = _parse(ground_truth, "ground_truth", "gt", criterion)
    ids, pc, gc = _image_codes(images, pred, gt)
    n, m = len(pred), len(gt)
    prob = pred.probability
    i, j, quality, value = _candidate_pairs(pred, gt, pc, gc, criterion, thr)

    status = np.full(n, FP, dtype=np.int8)
    pred_gt = np.full(n, -1, dtype=np.int64)
    pred_value = np.full(n, np.nan)
    gt_score = np.full(m, np.nan)
    gt_pred = np.full(m, -1, dtype=np.int64)
    gt_max = np.full(m, np.nan)
    # "descending probability, ties in input order" is the sort key (-prob[i], i) on the pairs
    ign = gt.ignore
    if len(i):
        inc = ~ign[j]
        if inc.any():
            tmp = np.full(m, -np.inf)
            np.maximum.at(tmp, j[inc], prob[i[inc]])
            gt_max = np.where(np.isfinite(tmp), tmp, np.nan)
        if matching == "greedy":
            # A pair whose prediction has no other candidate and whose target no other candidate is
            # matched whatever the order: settle those at once, loop only over the contested rest.
            alone = (np.bincount(i, minlength=n)[i] == 1) & (np.bincount(j, minlength=m)[j] == 1)
            free = np.flatnonzero(alone & ~ign[j])
            rest = np.flatnonzero(~alone | ign[j])
            ir = i[rest]
            order = rest[np.lexsort((-j[rest], -quality[rest], ign[j[rest]], ir, -prob[ir]))]
            ps, gs, igs = i[order].tolist(), j[order].tolist(), ign[j[order]].tolist()
            done = bytearray(n)
            taken = bytearray(m)
            out_k, out_st = [], []
            for k, (pi, gi, ig) in enumerate(zip(ps, gs, igs)):
                if done[pi]:
                    continue
                if ig:
                    done[pi] = 1
                    out_k.append(k)
                    out_st.append(IGNORED)
                elif not taken[gi]:
                    taken[gi] = 1
                    done[pi] = 1
                    out_k.append(k)
                    out_st.append(TP)
            sel = np.r_[free, order[np.asarray(out_k, dtype=np.int64)]]
            if sel.size:
                st = np.r_[np.full(free.size, TP, dtype=np.int8), np.asarray(out_st, dtype=np.int8)]
                pi, gi = i[sel], j[sel]
                status[pi] = st
                pred_gt[pi] = gi
                pred_value[pi] = value[sel]
                tp = st == TP
                gt_pred[gi[tp]] = pi[tp]
                gt_score[gi[tp]] = prob[pi[tp]]
        else:  # luna16
            # every candidate hitting anything (target or ignore region) is at least ignored
            o_any = np.lexsort((-quality, ign[j], i))  # per prediction: targets first, then nearest
            first = np.r_[True, i[o_any][1:] != i[o_any][:-1]]
            sel = o_any[first]
            status[i[sel]] = IGNORED
            pred_gt[i[sel]] = j[sel]
            pred_value[i[sel]] = value[sel]
            if inc.any():
                ii, jj, vv = i[inc], j[inc], value[inc]
                o = np.lexsort((ii, -prob[ii], jj))  # per target: the highest-probability candidate first
                js = jj[o]
                head = np.r_[True, js[1:] != js[:-1]]
                best_p, best_g, best_v = ii[o][head], js[head], vv[o][head]
                gt_pred[best_g] = best_p
                gt_score[best_g] = prob[best_p]
                status[best_p] = TP
                pred_gt[best_p] = best_g
                pred_value[best_p] = best_v
    gt_score[ign] = np.nan
    return DetectionMatch(images=ids, criterion=criterion, threshold=thr, matching=matching, pred_image=pc,
                          pred_probability=prob, pred_status=status, pred_gt=pred_gt, pred_value=pred_value,
                          gt_image=gc, gt_ignore=ign.copy(), gt_score=gt_score, gt_max_probability=gt_max,
                          gt_pred=gt_pred)


# --------------------------------------------------------------------------------------------------
# FROC
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FROCCurve:
    """FROC points, descending threshold: ``fps_per_image[k]``, ``sensitivity[k]`` at ``probability >=
    thresholds[k]``. Point 0 is (0, 0) at threshold +inf. ``n_images`` is the FP denominator (1 when
    ``fp_axis="count"``); ``sensitivity`` is NaN when ``n_targets == 0``."""

    fps_per_image: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    n_targets: int
    n_images: int
    n_false_positives: int

    def as_dict(self) -> dict[str, list[float]]:
        return {"fps_per_image": self.fps_per_image.tolist(), "sensitivity": self.sensitivity.tolist(),
                "thresholds": self.thresholds.tolist()}


def froc_curve_from_scores(hit_scores: Sequence[float] | np.ndarray, fp_scores: Sequence[float] | np.ndarray,
                           n_images: int, *, drop_intermediate: bool = True) -> FROCCurve:
    """FROC curve from per-target detection scores and false-positive scores.

    Args:
        hit_scores: one value per target: the probability at which it is detected, NaN if never.
        fp_scores: the probability of every false-positive prediction (finite).
        n_images: FP denominator (> 0): images (or negative images, or 1 for absolute FP counts).
        drop_intermediate: drop collinear points as sklearn's ``roc_curve`` does (LUNA16's point list).

    The arithmetic mirrors LUNA16's ``computeFROC`` (``fpr * n_fp / n_images``, ``tpr * n_detected /
    n_targets``) so that the "nearest" read-out breaks ties exactly as the reference does.
    """
    hit = np.asarray(hit_scores, dtype=float).ravel()
    fp = np.asarray(fp_scores, dtype=float).ravel()
    if not np.isfinite(fp).all():
        raise ValueError("fp_scores: must be finite")
    if np.isinf(hit).any():
        raise ValueError("hit_scores: must be finite or NaN (missed)")
    if not n_images or n_images <= 0:
        raise ValueError(f"n_images: must be > 0, got {n_images!r}")
    det = hit[~np.isnan(hit)]
    scores = np.concatenate([det, fp])
    if scores.size:
        # sklearn's _binary_clf_curve (cumulative counts at each distinct score, descending), by sorting
        # values instead of arg-sorting: counts >= t are read off with searchsorted
        thr = np.sort(scores)[::-1]
        thr = thr[np.r_[True, thr[1:] != thr[:-1]]]
        tps = (det.size - np.searchsorted(np.sort(det), thr[::-1], side="left"))[::-1].astype(float)
        fps = (fp.size - np.searchsorted(np.sort(fp), thr[::-1], side="left"))[::-1].astype(float)
        if drop_intermediate and len(fps) > 2:
            keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
            tps, fps, thr = tps[keep], fps[keep], thr[keep]
    else:
        tps = fps = thr = np.zeros(0)
    tps, fps, thr = np.r_[0.0, tps], np.r_[0.0, fps], np.r_[np.inf, thr]
    n_fp, n_det, n_t = float(fps[-1]), float(tps[-1]), int(hit.size)
    x = (fps / n_fp) * n_fp / float(n_images) if n_fp > 0 else np.zeros(fps.size)
    if n_t == 0:
        sens = np.full(tps.size, np.nan)
    elif n_det == 0:
        sens = np.zeros(tps.size)
    else:
        sens = ((tps / n_det) * n_det) / float(n_t)
    return FROCCurve(fps_per_image=x, sensitivity=sens, thresholds=thr, n_targets=n_t, n_images=int(n_images),
                     n_false_positives=int(n_fp))


def froc_curve(match: DetectionMatch, *, fp_on: Literal["all", "negative"] = "all",
               fp_axis: Literal["per-image", "count"] = "per-image", drop_intermediate: bool = True) -> FROCCurve:
    """FROC curve of a match.

    Args:
        fp_on: ``"all"`` — FPs on every image, per image (LUNA16/CAMELYON); ``"negative"`` — only FPs
            on negative images (no targets), per negative image: DigestPath's "normal region" FPs.
            FPs on positive images are then not counted at all.
        fp_axis: ``"per-image"`` (average FPs per (negative) image) or ``"count"`` (absolute FP count).
        drop_intermediate: see :func:`froc_curve_from_scores`.

    Raises:
        ValueError: ``fp_on="negative"`` without negative images.
    """
    if fp_on not in ("all", "negative"):
        raise ValueError(f"fp_on: expected 'all' or 'negative', got {fp_on!r}")
    if fp_axis not in ("per-image", "count"):
        raise ValueError(f"fp_axis: expected 'per-image' or 'count', got {fp_axis!r}")
    fp_mask = match.pred_status == FP
    n_img = match.n_images
    if fp_on == "negative":
        neg = match.negative_images
        fp_mask &= neg[match.pred_image]
        n_img = int(neg.sum())
        if n_img == 0:
            raise ValueError("fp_on: 'negative' needs at least one negative image (an image without targets)")
    if fp_axis == "count":
        n_img = 1
    return froc_curve_from_scores(match.gt_score[~match.gt_ignore], match.pred_probability[fp_mask], n_img,
                                  drop_intermediate=drop_intermediate)


def _rates(fp_rates: Sequence[float] | np.ndarray) -> np.ndarray:
    r = np.asarray(fp_rates, dtype=float).ravel()
    if r.size == 0 or not np.isfinite(r).all() or (r < 0).any():
        raise ValueError(f"fp_rates: expected a non-empty list of finite rates >= 0, got {list(r)}")
    return r


def sensitivity_at(curve: FROCCurve, fp_rates: Sequence[float] = LUNA16_FP_RATES, *,
                   readout: Readout = "interpolated") -> np.ndarray:
    """Sensitivity at the stated FP rates: ``"interpolated"`` (np.interp, flat beyond the last point) or
    ``"nearest"`` (LUNA16 grand-challenge ``getCPM``: the nearest point's sensitivity if its distance is
    < max(fps_per_image), else 0). NaN everywhere when the curve has no targets."""
    rates = _rates(fp_rates)
    if readout not in READOUTS:
        raise ValueError(f"readout: unknown {readout!r}; expected one of {list(READOUTS)}")
    x, y = curve.fps_per_image, curve.sensitivity
    if curve.n_targets == 0:
        return np.full(rates.size, np.nan)
    if readout == "interpolated":
        return np.interp(rates, x, y)
    d = np.abs(x[None, :] - rates[:, None])
    j = np.argmin(d, axis=1)
    ok = d[np.arange(rates.size), j] < x.max()
    return np.where(ok, y[j], 0.0)


def cpm(curve: FROCCurve, fp_rates: Sequence[float] = LUNA16_FP_RATES, *, readout: Readout = "interpolated") -> float:
    """Competition performance metric: mean sensitivity at ``fp_rates`` (LUNA16 default 1/8 … 8)."""
    return float(np.mean(sensitivity_at(curve, fp_rates, readout=readout)))


# MONAI / CAMELYON16 ---------------------------------------------------------------------------------


def monai_fp_tp_probs(probs: Sequence[float], y_coord: Sequence[float], x_coord: Sequence[float],
                      evaluation_mask: np.ndarray, labels_to_exclude: Sequence[int] | None = None,
                      resolution_level: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """MONAI ``compute_fp_tp_probs`` (CAMELYON16): points looked up in a labelled lesion mask.

    Coordinates are divided by ``2**resolution_level`` and truncated to int (pixel indices, row = y).
    A point on label 0 is a FP; on a lesion label, the lesion keeps the max probability of its points
    (0 if none); points on ``labels_to_exclude`` are ignored. Returns ``(fp_probs, tp_probs, num_targets)``
    with ``tp_probs`` of length max(label) (excluded labels stay 0) and ``num_targets = max(label) -
    len(labels_to_exclude)``.
    """
    probs_a = np.asarray(probs, dtype=float).ravel()
    ys, xs = np.asarray(y_coord).ravel(), np.asarray(x_coord).ravel()
    if not (probs_a.size == ys.size == xs.size):
        raise ValueError(f"probs: {probs_a.size} values but {ys.size} y_coord and {xs.size} x_coord")
    if not np.isfinite(probs_a).all():
        raise ValueError("probs: must be finite (no NaN)")
    mask = np.asarray(evaluation_mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"evaluation_mask: expected a 2-D integer label map, got {mask.ndim}-D {mask.dtype}")
    scale = float(pow(2, resolution_level))
    yi = (ys.astype(float) / scale).astype(int)
    xi = (xs.astype(float) / scale).astype(int)
    if ((yi < 0) | (yi >= mask.shape[0]) | (xi < 0) | (xi >= mask.shape[1])).any():
        raise ValueError(f"y_coord/x_coord: point outside evaluation_mask of shape {mask.shape} "
                         f"at resolution_level {resolution_level}")
    max_label = int(mask.max()) if mask.size else 0
    excl = [] if labels_to_exclude is None else [int(v) for v in labels_to_exclude]
    if len(set(excl)) != len(excl) or any(not 1 <= v <= max_label for v in excl):
        raise ValueError(f"labels_to_exclude: expected distinct labels in 1..{max_label}, got {excl}")
    hit = mask[yi, xi]
    fp_probs = probs_a[hit == 0]
    tp_probs = np.zeros(max_label)
    use = (hit > 0) & ~np.isin(hit, excl)
    if use.any():
        tmp = np.full(max_label, -np.inf)
        np.maximum.at(tmp, hit[use] - 1, probs_a[use])
        tp_probs = np.where(np.isfinite(tmp), tmp, 0.0)
    return fp_probs, tp_probs, max_label - len(excl)


def monai_froc_curve(fp_probs: Sequence[float], tp_probs: Sequence[float], num_targets: int,
                     num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """MONAI ``compute_froc_curve_data``: for each threshold in the sorted unique probabilities of
    ``fp_probs ∪ tp_probs`` *except the lowest*, FPs = #fp >= t and TPs = #tp >= t; then (0, 0) is
    appended. Returns ``(fps_per_image, sensitivity)`` in ascending-threshold order."""
    fp = np.asarray(fp_probs, dtype=float).ravel()
    tp = np.asarray(tp_probs, dtype=float).ravel()
    if num_targets <= 0 or num_images <= 0:
        raise ValueError(f"num_targets/num_images: must be > 0, got {num_targets}, {num_images}")
    thr = np.unique(np.concatenate([fp, tp]))[1:]
    fs, ts = np.sort(fp), np.sort(tp)
    total_fps = np.r_[fs.size - np.searchsorted(fs, thr, side="left"), 0]
    total_tps = np.r_[ts.size - np.searchsorted(ts, thr, side="left"), 0]
    return total_fps / float(num_images), total_tps / float(num_targets)


def monai_froc_score(fps_per_image: np.ndarray, sensitivity: np.ndarray,
                     eval_thresholds: Sequence[float] = MONAI_FP_RATES) -> float:
    """MONAI ``compute_froc_score``: mean of ``np.interp(eval_thresholds, fps[::-1], sens[::-1])``."""
    return float(np.mean(np.interp(_rates(eval_thresholds), np.asarray(fps_per_image)[::-1],
                                   np.asarray(sensitivity)[::-1])))


# --------------------------------------------------------------------------------------------------
# precision / recall / AP
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PRCurve:
    """Operating points at each distinct probability threshold (descending): cumulative TP and FP
    predictions and detected targets (``hits``) with ``probability >= thresholds[k]``.
    ``precision = tp/(tp+fp)``; ``recall = hits/n_gt`` (NaN when ``n_gt == 0``). With greedy matching
    ``hits == tp``; with LUNA16 matching a candidate inside two targets is one TP and two hits."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    hits: np.ndarray
    n_gt: int

    @property
    def precision(self) -> np.ndarray:
        return self.tp / np.maximum(self.tp + self.fp, 1)

    @property
    def recall(self) -> np.ndarray:
        return self.hits / self.n_gt if self.n_gt else np.full(self.hits.size, np.nan)


def _count_ge(sorted_vals: np.ndarray, thr: np.ndarray) -> np.ndarray:
    return sorted_vals.size - np.searchsorted(sorted_vals, thr, side="left")


def _pr(tp_scores: np.ndarray, fp_scores: np.ndarray, hit_scores: np.ndarray, n_gt: int) -> PRCurve:
    allp = np.concatenate([tp_scores, fp_scores])
    thr = np.unique(allp)[::-1]
    hits = hit_scores[~np.isnan(hit_scores)]
    return PRCurve(thresholds=thr, tp=_count_ge(np.sort(tp_scores), thr), fp=_count_ge(np.sort(fp_scores), thr),
                   hits=_count_ge(np.sort(hits), thr), n_gt=int(n_gt))


def pr_curve(match: DetectionMatch) -> PRCurve:
    """Precision/recall operating points of a match (ignored predictions left out)."""
    p = match.pred_probability
    return _pr(p[match.pred_status == TP], p[match.pred_status == FP], match.gt_score[~match.gt_ignore], match.n_gt)


def pr_curve_from_scores(scores: Sequence[float] | np.ndarray, is_tp: Sequence[bool] | np.ndarray,
                         n_gt: int) -> PRCurve:
    """Precision/recall points from already-matched predictions (``is_tp`` per prediction) and the
    number of targets ``n_gt`` (missed targets are simply never recalled)."""
    s = np.asarray(scores, dtype=float).ravel()
    t = np.asarray(is_tp).ravel().astype(bool)
    if s.size != t.size:
        raise ValueError(f"is_tp: {t.size} flags for {s.size} scores")
    if not np.isfinite(s).all():
        raise ValueError("scores: must be finite (no NaN)")
    if n_gt < int(t.sum()):
        raise ValueError(f"n_gt: {n_gt} targets but {int(t.sum())} true positives")
    return _pr(s[t], s[~t], s[t], n_gt)


def average_precision(curve: PRCurve, method: APMethod = "all-point") -> float:
    """Average precision. ``method``: ``"all-point"`` (VOC2010+, monotone precision envelope),
    ``"step"`` (sklearn / picai_eval, no envelope), ``"coco101"`` (pycocotools' 101 recall points),
    ``"voc2007"`` (11 points). NaN when there are no targets; 0 when there are no predictions."""
    if method not in AP_METHODS:
        raise ValueError(f"method: unknown {method!r}; expected one of {list(AP_METHODS)}")
    if curve.n_gt == 0:
        return float("nan")
    if curve.thresholds.size == 0:
        return 0.0
    r, p = curve.recall, curve.precision
    if method == "step":
        return float(np.sum(np.diff(np.r_[0.0, r]) * p))
    env = np.maximum.accumulate(p[::-1])[::-1]
    if method == "all-point":
        return float(np.sum(np.diff(np.r_[0.0, r]) * env))
    if method == "coco101":
        rs = np.linspace(0.0, 1.0, 101, endpoint=True)
    else:
        rs = np.arange(0.0, 1.1, 0.1)
    idx = np.searchsorted(r, rs, side="left")
    q = np.where(idx < r.size, env[np.minimum(idx, r.size - 1)], 0.0)
    return float(np.mean(q))


def operating_point(curve: PRCurve, score_threshold: float) -> dict[str, float]:
    """TP, FP, FN, precision, recall, F1 counting predictions with ``probability >= score_threshold``.

    precision is NaN without predictions; recall and F1 are NaN without targets; F1 = 2PR/(P+R)
    (0 when P+R = 0 or when there are targets but no predictions)."""
    t = float(score_threshold)
    if math.isnan(t):
        raise ValueError("score_threshold: must not be NaN")
    k = int(np.searchsorted(-curve.thresholds, -t, side="right"))
    tp = int(curve.tp[k - 1]) if k else 0
    fp = int(curve.fp[k - 1]) if k else 0
    hits = int(curve.hits[k - 1]) if k else 0
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = hits / curve.n_gt if curve.n_gt else float("nan")
    return {"score_threshold": t, "tp": tp, "fp": fp, "fn": curve.n_gt - hits, "precision": prec, "recall": rec,
            "f1": _f1(prec, rec)}


def _f1(p: float, r: float) -> float:
    if math.isnan(r):
        return float("nan")
    if math.isnan(p) or p + r == 0:
        return 0.0
    return 2 * p * r / (p + r)


def best_f1(curve: PRCurve) -> dict[str, float]:
    """The operating point with the highest F1 (the highest threshold among ties). NaN without
    targets; F1 0 and threshold NaN without predictions."""
    if curve.n_gt == 0:
        return {"score_threshold": float("nan"), "f1": float("nan"), "precision": float("nan"), "recall": float("nan")}
    if curve.thresholds.size == 0:
        return {"score_threshold": float("nan"), "f1": 0.0, "precision": float("nan"), "recall": 0.0}
    p, r = curve.precision, curve.recall
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    k = int(np.argmax(f))
    return {"score_threshold": float(curve.thresholds[k]), "f1": float(f[k]), "precision": float(p[k]),
            "recall": float(r[k])}


def recall_at_precision(curve: PRCurve, min_precision: float) -> float:
    """The highest recall over operating points with precision >= ``min_precision``; 0 if none; NaN
    without targets."""
    if not 0 <= min_precision <= 1:
        raise ValueError(f"min_precision: must be in [0, 1], got {min_precision!r}")
    if curve.n_gt == 0:
        return float("nan")
    ok = curve.precision >= min_precision
    return float(curve.recall[ok].max()) if ok.any() else 0.0


#: DigestPath 2019 reads its recall where precision is *more than* 20 % (strictly above 0.2).
DIGESTPATH_MIN_PRECISION = 0.2


def digestpath_recall(curve: PRCurve, min_precision: float = DIGESTPATH_MIN_PRECISION) -> float:
    """DigestPath 2019's instance-level recall — the one definition Arena uses (boards, tile kinds,
    :func:`arena.leaderboard.ranking.digestpath_metrics`).

    The highest recall over the operating points of ``curve`` (one per distinct probability, boxes of
    all images pooled) whose precision is *strictly* above ``min_precision`` (0.2); 0 if none is; NaN
    without targets. Strictly, because the challenge's evaluation page asks for the recall "when
    precision is more than 20%" (docs/metrics.md). Recall only grows as the threshold falls, so when
    all submitted boxes together have precision above 0.2 this is the recall of all of them, as the page
    computes it; otherwise it is the best operating point that clears 0.2. (:func:`recall_at_precision`
    is the general ``>=`` read-out for other uses.)
    """
    if not 0 <= min_precision < 1:
        raise ValueError(f"min_precision: must be in [0, 1), got {min_precision!r}")
    if curve.n_gt == 0:
        return float("nan")
    ok = curve.precision > min_precision
    return float(curve.recall[ok].max()) if ok.any() else 0.0


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


def score_detection(predictions: Any, ground_truth: Any, *, criterion: Criterion, threshold: float | None = None,
                    matching: Matching = "greedy", images: Iterable[Hashable] | None = None,
                    fp_rates: Sequence[float] = LUNA16_FP_RATES, normal_fp_rates: Sequence[float] = DIGESTPATH_FP_RATES,
                    score_threshold: float = 0.5, precision_targets: Sequence[float] = (0.9,),
                    ap_method: APMethod = "all-point", drop_intermediate: bool = True) -> dict[str, Any]:
    """Score a detection submission: matching, FROC/CPM, AP, P/R/F1, DigestPath normal-region FROC.

    Args: see :func:`match_detections` for ``predictions``, ``ground_truth``, ``criterion``,
        ``threshold`` (the hit criterion's distance or IoU), ``matching`` and ``images``.
        fp_rates: FP-per-image rates for the FROC read-outs and CPM (LUNA16's 1/8 … 8).
        normal_fp_rates: FP rates per negative image for the normal-region FROC (DigestPath's 1 … 32).
        score_threshold: the probability threshold of the reported operating point.
        precision_targets: report the recall at precision >= each of these.
        ap_method: the method of the headline ``"ap"`` (all four are in ``"average_precision"``).

    Returns:
        A JSON-ready dict (floats, ints, lists; NaN for undefined values, +inf as the curves' first
        threshold): ``counts``; ``froc`` (``sensitivity_interpolated``/``_nearest`` at ``fp_rates``,
        ``cpm_interpolated``/``_nearest``, ``monai_score`` at the same rates, ``curve``);
        ``normal_region_froc`` (None without negative images); ``ap``; ``average_precision`` per method;
        ``at_threshold``; ``best_f1``; ``recall_at_precision`` (precision >= p; keys as ``str(p)``);
        ``digestpath_recall`` (:func:`digestpath_recall`: precision strictly above 0.2).
    """
    if ap_method not in AP_METHODS:
        raise ValueError(f"ap_method: unknown {ap_method!r}; expected one of {list(AP_METHODS)}")
    rates, nrates = _rates(fp_rates), _rates(normal_fp_rates)
    for p in precision_targets:
        if not 0 <= p <= 1:
            raise ValueError(f"precision_targets: each must be in [0, 1], got {p!r}")
    m = match_detections(predictions, ground_truth, criterion=criterion, threshold=threshold, matching=matching,
                         images=images)
    neg = m.negative_images
    st = m.pred_status
    fp_on_neg = (st == FP) & neg[m.pred_image]
    counts = {"images": m.n_images, "negative_images": int(neg.sum()), "targets": m.n_gt,
              "ignore_regions": int(m.gt_ignore.sum()), "predictions": int(st.size), "tp": int((st == TP).sum()),
              "fp": int((st == FP).sum()), "ignored": int((st == IGNORED).sum()),
              "detected_targets": int(np.isfinite(m.gt_score).sum()),
              "fp_on_negative_images": int(fp_on_neg.sum())}
    curve = froc_curve(m, drop_intermediate=drop_intermediate)
    s_int = sensitivity_at(curve, rates, readout="interpolated")
    s_near = sensitivity_at(curve, rates, readout="nearest")
    if m.n_gt:
        tp_probs = np.nan_to_num(m.gt_score[~m.gt_ignore], nan=0.0)
        mfps, msens = monai_froc_curve(m.pred_probability[st == FP], tp_probs, m.n_gt, m.n_images)
        monai = monai_froc_score(mfps, msens, rates)
    else:
        monai = float("nan")
    froc = {"fp_rates": rates.tolist(), "sensitivity_interpolated": s_int.tolist(),
            "sensitivity_nearest": s_near.tolist(), "cpm_interpolated": float(np.mean(s_int)),
            "cpm_nearest": float(np.mean(s_near)), "monai_score": monai, "curve": curve.as_dict()}
    normal = None
    if counts["negative_images"]:
        nc = froc_curve(m, fp_on="negative", drop_intermediate=drop_intermediate)
        ns = sensitivity_at(nc, nrates, readout="interpolated")
        normal = {"fp_rates": nrates.tolist(), "sensitivity": ns.tolist(), "score": float(np.mean(ns)),
                  "sensitivity_nearest": sensitivity_at(nc, nrates, readout="nearest").tolist(),
                  "curve": nc.as_dict()}
    pr = pr_curve(m)
    aps = {meth: average_precision(pr, meth) for meth in AP_METHODS}
    return {"criterion": criterion, "threshold": m.threshold, "matching": matching, "counts": counts, "froc": froc,
            "normal_region_froc": normal, "ap_method": ap_method, "ap": aps[ap_method], "average_precision": aps,
            "at_threshold": operating_point(pr, score_threshold), "best_f1": best_f1(pr),
            "recall_at_precision": {str(float(p)): recall_at_precision(pr, float(p)) for p in precision_targets},
            "digestpath_recall": digestpath_recall(pr)}


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------

_LUNA16_RENAME = {"seriesuid": "image", "coordX": "x", "coordY": "y", "coordZ": "z"}


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{where}: expected a number, got {v!r}")  # noqa: TRY004 (bad input is a ValueError)
    return float(v)


def _read_gc(doc: Any, path: Path, image: Hashable) -> pd.DataFrame:
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: expected a JSON object with 'type', got {type(doc).__name__}")  # noqa: TRY004
    kind = doc.get("type")
    rows: list[dict[str, Any]] = []
    if kind in ("Multiple points", "Point"):
        items = doc.get("points") if kind == "Multiple points" else [doc]
        if not isinstance(items, list):
            raise ValueError(f"{path}: 'Multiple points' needs a 'points' list")
        for k, it in enumerate(items):
            where = f"{path}: points[{k}]" if kind == "Multiple points" else f"{path}"
            pt = it.get("point") if isinstance(it, Mapping) else None
            if not isinstance(pt, list) or len(pt) not in (2, 3):
                raise ValueError(f"{where}: 'point' must be a list [x, y] or [x, y, z], got {pt!r}")
            row = {"image": image, "x": _num(pt[0], where), "y": _num(pt[1], where)}
            if len(pt) == 3:
                row["z"] = _num(pt[2], where)
            if "probability" in it:
                row["probability"] = _num(it["probability"], f"{where} 'probability'")
            if "name" in it:
                row["name"] = it["name"]
            rows.append(row)
        cols = ["image", "x", "y"]
    elif kind == "Multiple 2D bounding boxes":
        items = doc.get("boxes")
        if not isinstance(items, list):
            raise ValueError(f"{path}: 'Multiple 2D bounding boxes' needs a 'boxes' list")
        for k, it in enumerate(items):
            where = f"{path}: boxes[{k}]"
            corners = it.get("corners") if isinstance(it, Mapping) else None
            if (not isinstance(corners, list) or len(corners) != 4
                    or not all(isinstance(c, list) and len(c) in (2, 3) for c in corners)):
                raise ValueError(f"{where}: 'corners' must be 4 points [x, y(, z)], got {corners!r}")
            xs = [_num(c[0], where) for c in corners]
            ys = [_num(c[1], where) for c in corners]
            row = {"image": image, "x0": min(xs), "y0": min(ys), "x1": max(xs), "y1": max(ys)}
            zs = {_num(c[2], where) for c in corners if len(c) == 3}
            if len(zs) > 1:
                raise ValueError(f"{where}: corners on different z {sorted(zs)}")
            if zs:
                row["z"] = zs.pop()
            if "probability" in it:
                row["probability"] = _num(it["probability"], f"{where} 'probability'")
            if "name" in it:
                row["name"] = it["name"]
            rows.append(row)
        cols = ["image", *BOX_COLUMNS]
    else:
        raise ValueError(f"{path}: unsupported grand-challenge type {kind!r}; expected 'Multiple points', "
                         f"'Point' or 'Multiple 2D bounding boxes'")
    df = pd.DataFrame(rows, columns=None if rows else cols)
    if "probability" in df.columns and df["probability"].isna().any():
        k = int(np.flatnonzero(df["probability"].isna().to_numpy())[0])
        raise ValueError(f"{path}: item {k} has no 'probability' while others have one")
    if "z" in df.columns and df["z"].isna().any():
        raise ValueError(f"{path}: some items have a z coordinate and others not")
    return df


def read_detections(path: str | Path, *, image: Hashable | None = None,
                    default_diameter_mm: float | None = None) -> pd.DataFrame:
    """Read detections or annotations into the table convention of this module.

    - ``.json``: a grand-challenge annotation: ``{"type": "Multiple points", "points": [{"point": [x, y,
      z], "probability": p, "name": ...}]}``, ``{"type": "Point", "point": [...]}`` or ``{"type":
      "Multiple 2D bounding boxes", "boxes": [{"corners": [[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0,
      y1, z]], "probability": p}]}``. Boxes become ``x0, y0, x1, y1`` (min/max over the corners) and
      ``z``. The ``image`` column is ``image`` or the file name without ``.json``. ``probability`` is kept
      when present (it must then be present on every item).
    - ``.csv``: LUNA16 columns (``seriesuid, coordX, coordY, coordZ`` + ``probability`` or
      ``diameter_mm``) are renamed to ``image, x, y, z``; ``diameter_mm`` gives ``radius = diameter/2``
      (mm). A negative diameter (LUNA16's -1 in ``annotations_excluded.csv``) is an error unless
      ``default_diameter_mm`` is given (LUNA16 uses 10). Other CSVs must already use this module's
      column names. Image ids are read as strings; numbers are parsed exactly (round-trip).

    Raises:
        ValueError: unknown extension or JSON type, malformed items, missing columns, negative diameter.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            doc = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        return _read_gc(doc, p, p.name[: -len(".json")] if image is None else image)
    if suffix != ".csv":
        raise ValueError(f"{p}: unsupported file type {suffix!r}; expected .json or .csv")
    kw: dict[str, Any] = {"dtype": {"seriesuid": str, "image": str}}
    if int(pd.__version__.split(".")[0]) < 3:
        kw["float_precision"] = "round_trip"
    df = pd.read_csv(p, **kw)
    df = df.rename(columns=_LUNA16_RENAME)
    if "image" not in df.columns:
        raise ValueError(f"{p}: missing column 'image' (or LUNA16 'seriesuid'); has {list(df.columns)}")
    if not ({"x", "y"} <= set(df.columns) or set(BOX_COLUMNS) <= set(df.columns)):
        raise ValueError(f"{p}: missing coordinate columns: need x, y[, z] (or LUNA16 coordX, coordY, coordZ) "
                         f"or x0, y0, x1, y1; has {list(df.columns)}")
    if image is not None:
        df["image"] = image
    if "diameter_mm" in df.columns:
        d = pd.to_numeric(df["diameter_mm"], errors="coerce").to_numpy(dtype=float)
        if np.isnan(d).any():
            raise ValueError(f"{p}: column 'diameter_mm' has missing or non-numeric values")
        neg = d < 0
        if neg.any():
            if default_diameter_mm is None:
                raise ValueError(f"{p}: column 'diameter_mm' has {int(neg.sum())} negative value(s) (LUNA16 uses -1 "
                                 f"for 'no size'); pass default_diameter_mm (LUNA16: 10)")
            d = np.where(neg, float(default_diameter_mm), d)
        df["diameter_mm"] = d
        df["radius"] = d / 2.0
    return df


def digestpath_numbers(tp: np.ndarray, fp: np.ndarray, fp_normal: np.ndarray, n_targets: int, n_negative: int, *,
                       min_precision: float = DIGESTPATH_MIN_PRECISION,
                       normal_fp_rates: Sequence[float] = (1, 2, 4, 8, 16, 32),
                       fp_score_max: float = 100.0) -> dict[str, float]:
    """DigestPath's three numbers from pooled box probabilities: ``tp`` (true positives), ``fp`` (all false
    positives), ``fp_normal`` (false positives on negative tiles, a subset of ``fp``), ``n_targets`` (all
    GT boxes) and ``n_negative`` (negative tiles). ``recall``: :func:`digestpath_recall` (precision strictly
    above ``min_precision``)."""
    tp, fp, fp_normal = (np.asarray(a, dtype=float).ravel() for a in (tp, fp, fp_normal))
    if n_targets:
        pr = pr_curve_from_scores(np.r_[tp, fp], np.r_[np.ones(tp.size, bool), np.zeros(fp.size, bool)], n_targets)
        recall = digestpath_recall(pr, min_precision)
    else:
        recall = float("nan")
    normal_fps = float(fp_normal.size)
    if n_negative and n_targets:
        hits = np.r_[tp, np.full(max(n_targets - tp.size, 0), np.nan)]
        curve = froc_curve_from_scores(hits, fp_normal, n_negative)
        froc = float(np.mean(sensitivity_at(curve, normal_fp_rates, readout="interpolated")))
    else:
        froc = float("nan")
    return {"recall": recall, "normal_fps": normal_fps, "fp_score": max(fp_score_max - normal_fps, 0.0),
            "froc": froc, "tp": float(tp.size), "fp": float(fp.size), "targets": float(n_targets)}
