"""The working grid of AnatomyNet on OpenKBP CTs (han-oar-openkbp), shared by training and the container.

OpenKBP CTs are 128^3 voxels at 2.7-5.1 mm in-plane and 1.5-3.3 mm between slices, with the organs
anywhere along z (the scans start and end at different heights). The network works on a grid of
4 x 4 x 4 mm voxels (the CPU training budget; README.md):

* in-plane 64 (x) x 72 (y) voxels = 256 x 288 mm, centred on the in-plane centroid of the body
  (voxels above -500 HU); on the 170 train patients every organ lies within it;
* along z the whole scan: ``2 * ceil(extent / 8 mm)`` slices centred on the image centre (even, for
  the network's single down-sampling).

Input intensity ``asinh(HU / 100)`` (refio.normalize); CT linear, labels nearest neighbour.
"""

from __future__ import annotations

import math

import numpy as np

import refio

SPACING_MM = 4.0
SIZE_X, SIZE_Y = 64, 72
BODY_HU = -500.0


def body_centre(img) -> tuple[float, float, float]:
    """Physical (x, y, z) mm: in-plane centroid of voxels > -500 HU, z of the image centre (the image
    centre in x and y too when no voxel is above -500 HU)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(img)
    centre_idx = [0.5 * (n - 1) for n in img.GetSize()]
    mask = arr > BODY_HU
    if mask.any():
        idx_zyx = np.argwhere(mask).mean(axis=0)
        centre_idx = [float(idx_zyx[2]), float(idx_zyx[1]), centre_idx[2]]
    cx, cy, _ = img.TransformContinuousIndexToPhysicalPoint(centre_idx)
    _, _, cz = img.TransformContinuousIndexToPhysicalPoint([0.5 * (n - 1) for n in img.GetSize()])
    return float(cx), float(cy), float(cz)


def reference_grid(img):
    """Empty SimpleITK image of the working grid for CT ``img`` (identity direction)."""
    extent_z = img.GetSize()[2] * img.GetSpacing()[2]
    nz = max(2, 2 * math.ceil(extent_z / (2 * SPACING_MM)))
    return refio.canonical_reference(img, (SIZE_X, SIZE_Y, nz), (SPACING_MM,) * 3, centre=body_centre(img))


def ct_on_grid(img, ref) -> np.ndarray:
    """Network input (z, y, x) float32: CT resampled (linear, air outside) and normalised."""
    return refio.normalize(refio.resample_ct(img, ref))


def labels_on_grid(lab, ref) -> np.ndarray:
    """A label image resampled (nearest) onto the grid, (z, y, x) uint8."""
    import SimpleITK as sitk

    out = sitk.Resample(lab, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)


def keep_largest_components(lab: np.ndarray, n_labels: int) -> np.ndarray:
    """Each organ reduced to its largest 26-connected component (one organ, one blob: stray voxels far
    from the organ would dominate HD95)."""
    import SimpleITK as sitk

    out = np.zeros_like(lab)
    for k in range(1, n_labels + 1):
        m = lab == k
        if not m.any():
            continue
        cc = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(
            sitk.GetImageFromArray(m.astype(np.uint8)), True)))
        out[cc == 1] = k
    return out
