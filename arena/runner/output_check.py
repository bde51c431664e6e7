"""Checking a segmentation output against its case image before it is scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from arena.runner.contract import OutputError

SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


def read_image(path: Path, what: str) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise OutputError(f"{what} {path.name} is not a readable image ({first[:200]})") from None


def check_segmentation(output: sitk.Image, reference: sitk.Image, labels: set[int]) -> np.ndarray:
    """Return the output as an integer array (z, y, x) if it matches the reference's geometry and labels.

    Raises OutputError naming the first mismatch: dimension, size, spacing, origin, direction,
    pixel type (must be an integer type with one component) or label values outside ``labels`` ∪ {0}.
    """
    if output.GetDimension() != reference.GetDimension():
        raise OutputError(f"the output is {output.GetDimension()}-D, the case image {reference.GetDimension()}-D")
    if output.GetSize() != reference.GetSize():
        raise OutputError(f"output size {output.GetSize()} differs from the case image's {reference.GetSize()} (x, y, z)")
    if not np.allclose(output.GetSpacing(), reference.GetSpacing(), rtol=SPACING_RTOL, atol=0):
        raise OutputError(f"output spacing {tuple(round(s, 6) for s in output.GetSpacing())} mm differs from the "
                          f"case image's {tuple(round(s, 6) for s in reference.GetSpacing())} mm")
    if not np.allclose(output.GetOrigin(), reference.GetOrigin(), rtol=0, atol=ORIGIN_ATOL_MM):
        raise OutputError(f"output origin {tuple(round(s, 4) for s in output.GetOrigin())} mm differs from the "
                          f"case image's {tuple(round(s, 4) for s in reference.GetOrigin())} mm")
    if not np.allclose(output.GetDirection(), reference.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        raise OutputError("output direction cosines differ from the case image's")
    if output.GetNumberOfComponentsPerPixel() != 1:
        raise OutputError(f"the output has {output.GetNumberOfComponentsPerPixel()} components per voxel, expected 1")
    arr = sitk.GetArrayFromImage(output)  # a copy: a view would dangle once the image is freed
    if not np.issubdtype(arr.dtype, np.integer):
        raise OutputError(f"the output's pixel type is {output.GetPixelIDTypeAsString()}: expected an integer label map "
                          "(e.g. uint8)")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise OutputError(f"the output has negative label values (min {lo})")
    values = np.flatnonzero(np.bincount(arr.ravel())) if hi < 65536 else np.unique(arr)
    extra = sorted(int(v) for v in values if v != 0 and int(v) not in labels)
    if extra:
        raise OutputError(f"the output has label values not in the task's label map: {extra[:10]}")
    return arr
