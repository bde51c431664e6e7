"""Shared helpers of Arena's reference models (identical copy in each reference_models/<name>/).

* the container contract (docs/contract.md, v1): per-case mode (``/input/images/ct/<uuid>.mha``) and
  Arena's batch mode (``/input/<case-id>/images/ct/...`` -> ``/output/<case-id>/images/...``);
* the canonical grid the networks work on: 136 x 136 x 80 voxels (x, y, z) at 2 x 2 x 3 mm,
  identity direction, its voxel (67, 67, 39.5) on the centre of the input image (272 x 272 x 240 mm,
  the head; a phantom generated as "135x135x80" lies exactly on it, plus one voxel of air);
* intensity normalisation: ``asinh(HU / 100)`` (soft tissue stays linear, bone and air compressed).

SimpleITK is used in the containers; the NumPy/SciPy twins (``*_np``) are used by the training
scripts, which may run where SimpleITK is missing. Keep the copies identical
(tests/test_reference_models.py checks it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

import numpy as np

CANON_SIZE_XYZ = (136, 136, 80)
CANON_SPACING_XYZ = (2.0, 2.0, 3.0)
#: physical offset (mm) from the canonical grid's first voxel to the centre of the input image
CANON_OFFSET_XYZ = (134.0, 134.0, 118.5)
OUTPUT_RELATIVE_PATH = os.path.join("images", "oar-segmentation")
AIR_HU = -1024.0


def normalize(hu: np.ndarray) -> np.ndarray:
    """CT in HU -> network input (float32)."""
    return np.arcsinh(np.asarray(hu, np.float32) / np.float32(100.0)).astype(np.float32)


# ------------------------------------------------------------------ canonical grid, NumPy (training)


def canonical_axes_np(shape_xyz, spacing_xyz, origin_xyz):
    """For an axis-aligned source grid: per axis (z, y, x), the continuous source index of each
    canonical voxel centre (canonical grid centred on the source grid's centre)."""
    idx = []
    for n_src, s_src, o_src, n_c, s_c, off in zip(shape_xyz, spacing_xyz, origin_xyz, CANON_SIZE_XYZ,
                                                   CANON_SPACING_XYZ, CANON_OFFSET_XYZ):
        centre = o_src + 0.5 * (n_src - 1) * s_src
        phys = centre - off + np.arange(n_c) * s_c
        idx.append((phys - o_src) / s_src)
    return idx[2], idx[1], idx[0]


def to_canonical_np(arr_zyx: np.ndarray, spacing_xyz, origin_xyz, order: int = 1, cval: float = AIR_HU) -> np.ndarray:
    """Resample an axis-aligned (z, y, x) array onto the canonical grid (linear or nearest)."""
    from scipy import ndimage

    iz, iy, ix = canonical_axes_np(arr_zyx.shape[::-1], spacing_xyz, origin_xyz)
    if order == 0:
        iz, iy, ix = (np.rint(a).astype(np.int64) for a in (iz, iy, ix))
        ok = [(a >= 0) & (a < n) for a, n in zip((iz, iy, ix), arr_zyx.shape)]
        out = np.full((len(iz), len(iy), len(ix)), cval, arr_zyx.dtype)
        sub = arr_zyx[np.ix_(np.clip(iz, 0, arr_zyx.shape[0] - 1)[ok[0]], np.clip(iy, 0, arr_zyx.shape[1] - 1)[ok[1]],
                             np.clip(ix, 0, arr_zyx.shape[2] - 1)[ok[2]])]
        out[np.ix_(ok[0], ok[1], ok[2])] = sub
        return out
    grid = np.meshgrid(iz, iy, ix, indexing="ij")
    return ndimage.map_coordinates(arr_zyx.astype(np.float32), grid, order=1, mode="constant",
                                   cval=cval).astype(np.float32)


def from_canonical_np(lab_canon: np.ndarray, shape_xyz, spacing_xyz, origin_xyz) -> np.ndarray:
    """Nearest-neighbour resampling of a canonical label map back onto an axis-aligned grid."""
    out_axes = []
    for n_src, s_src, o_src, s_c, off in zip(shape_xyz, spacing_xyz, origin_xyz, CANON_SPACING_XYZ,
                                              CANON_OFFSET_XYZ):
        centre = o_src + 0.5 * (n_src - 1) * s_src
        c_origin = centre - off
        phys = o_src + np.arange(n_src) * s_src
        out_axes.append(np.rint((phys - c_origin) / s_c).astype(np.int64))
    ix, iy, iz = out_axes
    ok = [(a >= 0) & (a < n) for a, n in zip((iz, iy, ix), lab_canon.shape)]
    out = np.zeros((len(iz), len(iy), len(ix)), lab_canon.dtype)
    out[np.ix_(ok[0], ok[1], ok[2])] = lab_canon[np.ix_(iz[ok[0]], iy[ok[1]], ix[ok[2]])]
    return out


# ------------------------------------------------------------------ canonical grid, SimpleITK (containers)


def canonical_reference(img, size_xyz=CANON_SIZE_XYZ, spacing_xyz=CANON_SPACING_XYZ, centre=None, offset=None):
    """An empty SimpleITK image of a grid placed on ``img``'s centre (or ``centre``): the canonical
    grid by default; another size/spacing is centred unless ``offset`` (mm, first voxel to centre)."""
    import SimpleITK as sitk

    if centre is None:
        centre = img.TransformContinuousIndexToPhysicalPoint([0.5 * (n - 1) for n in img.GetSize()])
    ref = sitk.Image([int(v) for v in size_xyz], sitk.sitkFloat32)
    ref.SetSpacing([float(v) for v in spacing_xyz])
    if offset is None:
        offset = CANON_OFFSET_XYZ if (tuple(size_xyz), tuple(spacing_xyz)) == (CANON_SIZE_XYZ, CANON_SPACING_XYZ) \
            else [0.5 * (n - 1) * s for n, s in zip(size_xyz, spacing_xyz)]
    ref.SetOrigin([float(c - o) for c, o in zip(centre, offset)])
    return ref


def resample_ct(img, ref):
    """CT resampled onto ``ref``'s grid (linear, air outside) as a float32 (z, y, x) array in HU."""
    import SimpleITK as sitk

    out = sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, AIR_HU,
                        sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def labels_to_input_grid(lab_zyx: np.ndarray, ref, img):
    """A label array on ``ref``'s grid, resampled (nearest) onto the input image's grid (uint8 image)."""
    import SimpleITK as sitk

    lab = sitk.GetImageFromArray(lab_zyx.astype(np.uint8))
    lab.CopyInformation(ref)
    return sitk.Resample(lab, img, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


# ------------------------------------------------------------------ the container contract


def log(name: str, message: str) -> None:
    print(f"[{name}] {message}", flush=True)


def find_ct(case_dir: str) -> str:
    ct_dir = os.path.join(case_dir, "images", "ct")
    files = sorted(f for f in os.listdir(ct_dir) if f.lower().endswith((".mha", ".nii.gz", ".nii")))
    if len(files) != 1:
        raise RuntimeError(f"expected exactly one image in {ct_dir}, found {len(files)}")
    return os.path.join(ct_dir, files[0])


def cases(input_dir: str, output_dir: str) -> list[tuple[str, str, str]]:
    """(case name, input case dir, output case dir) for per-case or batch mode."""
    if os.path.isdir(os.path.join(input_dir, "images")):
        return [("case", input_dir, output_dir)]
    found = sorted(d for d in os.listdir(input_dir)
                   if os.path.isdir(os.path.join(input_dir, d, "images")) or
                   os.path.isfile(os.path.join(input_dir, d, "inputs.json")))
    if not found:
        raise RuntimeError(f"no input: neither {input_dir}/images/ct/ nor batch case folders")
    return [(d, os.path.join(input_dir, d), os.path.join(output_dir, d)) for d in found]


def run_contract(name: str, segment: Callable, setup: Callable | None = None) -> int:
    """Main loop: ``state = setup()`` once (model loading), then ``segment(img, state) -> label image``
    for each case; writes ``<out>/images/oar-segmentation/output.mha``. Returns the exit code."""
    import SimpleITK as sitk

    input_dir = os.environ.get("ARENA_INPUT_DIR", "/input")
    output_dir = os.environ.get("ARENA_OUTPUT_DIR", "/output")
    t0 = time.time()
    state = setup() if setup else None
    todo = cases(input_dir, output_dir)
    log(name, f"{len(todo)} case(s); setup {time.time() - t0:.1f} s")
    failed = 0
    for case, cin, cout in todo:
        t1 = time.time()
        try:
            path = find_ct(cin)
            img = sitk.ReadImage(path)
            if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
                raise RuntimeError(f"expected a 3-D scalar CT, got {img.GetDimension()}-D")
            lab = segment(img, state)
            out = os.path.join(cout, OUTPUT_RELATIVE_PATH)
            os.makedirs(out, exist_ok=True)
            sitk.WriteImage(lab, os.path.join(out, "output.mha"), True)
            present = sorted(int(v) for v in np.unique(sitk.GetArrayViewFromImage(lab)) if v)
            log(name, f"{case}: size {img.GetSize()}, labels {present} in {time.time() - t1:.1f} s")
        except Exception as exc:  # one bad case must not sink the batch
            failed += 1
            print(f"[{name}] {case}: error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    return 1 if failed == len(todo) else 0


def read_inputs_json(case_dir: str) -> list:
    try:
        with open(os.path.join(case_dir, "inputs.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return []
