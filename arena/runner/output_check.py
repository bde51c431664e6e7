"""Checking a segmentation output against its case image before it is scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from arena.metrics.files import geometry_mismatch
from arena.runner.contract import OutputError



def read_checked_output(path: Path, reference: sitk.Image, labels: set[int]) -> np.ndarray:
    """Check the output file's header (geometry, pixel type) against the case image BEFORE reading its
    voxels, then read and check labels. A 1 MB compressed file whose header claims 1024³ voxels is
    refused without inflating it."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise OutputError(f"the output {path.name} is not a readable image ({last[:200]})") from None
    problem = geometry_mismatch(reader, reference, "the output", "the case image")
    if problem:
        raise OutputError(problem)
    if reader.GetNumberOfComponents() != 1:
        raise OutputError(f"the output has {reader.GetNumberOfComponents()} components per voxel, expected 1")
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if "integer" not in pixel:
        raise OutputError(f"the output's pixel type is {pixel}: expected an integer label map (e.g. uint8)")
    try:
        image = reader.Execute()
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise OutputError(f"the output {path.name} could not be read ({last[:200]})") from None
    return check_segmentation(image, reference, labels)


def check_segmentation(output: sitk.Image, reference: sitk.Image, labels: set[int]) -> np.ndarray:
    """Return the output as an integer array (z, y, x) if it matches the reference's geometry and labels.

    Raises OutputError naming the first mismatch: dimension, size, spacing, origin, direction,
    pixel type (must be an integer type with one component) or label values outside ``labels`` ∪ {0}.
    """
    problem = geometry_mismatch(output, reference, "the output", "the case image")
    if problem:
        raise OutputError(problem)
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
