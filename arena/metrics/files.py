"""Scoring label-map files (any SimpleITK format: .mha, .nii.gz, .nrrd, ...): the I/O edge of the metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from arena.metrics.segmentation import EmptyPolicy, Scores, score_segmentation

SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


def read_label_map(path: str | Path, what: str = "image") -> sitk.Image:
    """Read an image; ValueError naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: no file {path}")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise ValueError(f"{what}: {path.name} is not a readable image ({last[:200]})") from None


def geometry_mismatch(a: sitk.Image, b: sitk.Image, a_name: str = "prediction", b_name: str = "reference") -> str | None:
    """None when two images share a voxel grid; otherwise what differs, in words (sizes x, y, z; mm)."""
    if a.GetDimension() != b.GetDimension():
        return f"{a_name} is {a.GetDimension()}-D, {b_name} {b.GetDimension()}-D"
    if a.GetSize() != b.GetSize():
        return f"{a_name} size {a.GetSize()} differs from {b_name}'s {b.GetSize()} (x, y, z)"
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=SPACING_RTOL, atol=0):
        return (f"{a_name} spacing {tuple(round(s, 6) for s in a.GetSpacing())} mm differs from {b_name}'s "
                f"{tuple(round(s, 6) for s in b.GetSpacing())} mm")
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=ORIGIN_ATOL_MM):
        return (f"{a_name} origin {tuple(round(s, 4) for s in a.GetOrigin())} mm differs from {b_name}'s "
                f"{tuple(round(s, 4) for s in b.GetOrigin())} mm")
    if not np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        return f"{a_name} direction cosines differ from {b_name}'s"
    return None


def label_array(image: sitk.Image, what: str) -> np.ndarray:
    """The image as an integer array (z, y, x); ValueError for float or multi-component images."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{what}: {image.GetNumberOfComponentsPerPixel()} components per voxel, expected 1")
    arr = sitk.GetArrayFromImage(image)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: pixel type {image.GetPixelIDTypeAsString()}, expected an integer label map")
    return arr


def _values(arr: np.ndarray) -> set[int]:
    """The distinct non-zero values of a label array. Organs fill a small part of a CT, so the unique of the
    non-zero voxels is about 30x faster than np.unique of the whole 512×512×100 volume (0.02 s vs 0.7 s)."""
    return {int(v) for v in np.unique(arr[arr != 0])}


def score_files(prediction: str | Path, reference: str | Path, labels: Iterable[int] | None = None,
                convention: str = "medpy", percentile: float = 95.0, tolerance_mm: float = 1.0,
                empty_policy: EmptyPolicy = EmptyPolicy()) -> Scores:
    """Read two label maps, check they share a grid, score them; labels default to those in either."""
    pred_img, ref_img = read_label_map(prediction, "prediction"), read_label_map(reference, "reference")
    problem = geometry_mismatch(pred_img, ref_img)
    if problem:
        raise ValueError(f"geometry: {problem}")
    pred, ref = label_array(pred_img, "prediction"), label_array(ref_img, "reference")
    if labels is None:
        labels = sorted(v for v in _values(pred) | _values(ref) if v > 0)
        if len(labels) > 255:
            raise ValueError(f"labels: {len(labels)} distinct values found: is one of these an intensity image "
                             "rather than a label map? Name the labels to score (e.g. --labels 1-22)")
    return score_segmentation(pred, ref, ref_img.GetSpacing()[::-1], labels, convention, percentile,
                              tolerance_mm, empty_policy)


def parse_labels(text: str | None) -> Sequence[int] | None:
    """'1,2,5-7' → [1, 2, 5, 6, 7]; None/'' → None."""
    if not text:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ValueError(f"labels: expected ids like '1,2,5-7', got {text!r}") from None
    return out
