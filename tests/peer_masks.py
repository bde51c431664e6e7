"""Building the peer suites' masks from their JSON specs (shared/data/peer_cases)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def build_mask(spec: dict) -> np.ndarray:
    """A boolean mask from a peer-case spec: ``shape`` plus ``fill`` items (box, voxels, sphere, array)."""
    arr = np.zeros(spec["shape"], dtype=bool)
    for f in spec.get("fill", []):
        kind = f["type"]
        if kind == "box":
            arr[tuple(slice(lo, hi) for lo, hi in zip(f["lo"], f["hi"]))] = True
        elif kind == "voxels":
            for idx in f["idx"]:
                arr[tuple(idx)] = True
        elif kind == "array":
            arr[...] = np.asarray(f["data"]).astype(bool)
        elif kind == "sphere":  # MONAI's create_spherical_seg_3d: index × spacing − centre, within radius
            grids = np.ogrid[tuple(slice(0, n) for n in spec["shape"])]
            sq = sum((g.astype(float) * s - c) ** 2 for g, s, c in zip(grids, f["im_spacing"], f["centre"]))
            arr |= sq <= f["radius"] ** 2
        else:
            raise ValueError(f"unknown fill type {kind!r}")
    return arr


def matrix_masks(entry: dict, cases: dict[str, dict], shared: Path) -> tuple[np.ndarray, np.ndarray]:
    """(gt, pred) for a cross_definition_matrix entry: a peer case, a TotalSegmentator pair or a shifted PDDCA organ."""
    import SimpleITK as sitk

    cid = entry["id"]
    if cid in cases:
        return build_mask(cases[cid]["gt"]), build_mask(cases[cid]["pred"])
    if cid.startswith("totalseg_example/"):
        label = int(cid.split("/")[1].split("_")[0])
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(shared / "totalseg" / "example_seg.nii.gz"))) == label
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(shared / "totalseg" / "example_seg_fast.nii.gz"))) == label
        return (a, b) if (a.sum(), b.sum()) == (entry["n_gt"], entry["n_pred"]) else (b, a)
    m = re.match(r"pddca_(\w+)/(\w+?)_shift\((-?\d+), (-?\d+), (-?\d+)\)", cid)
    if m:
        names = ["BrainStem", "Chiasm", "Mandible", "OpticNerve_L", "OpticNerve_R", "Parotid_L", "Parotid_R",
                 "Submandibular_L", "Submandibular_R"]
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(shared / "pddca" / m.group(1) / "labelmap_9oar.nii.gz")))
        gt = arr == names.index(m.group(2)) + 1
        shift = tuple(int(m.group(i)) for i in (3, 4, 5))
        return gt, np.roll(gt, shift, axis=(0, 1, 2))
    raise KeyError(cid)
