#!/usr/bin/env python3
"""Classical multi-atlas segmentation (no deep learning): Arena container contract v1, per-case and batch.

Two atlas sets (one image per task; build arg TASK, tasks.json):

* han-oar-22 (``atlases/atlas-*-{ct,labels}.mha``, committed): 5 phantoms, every atlas used, majority vote.
* han-oar-openkbp (``atlases/index.json`` + OpenKBP train patients, written into the build context by
  make_atlases.py from the shared data): the ``select`` atlases most similar to the case are used. An
  atlas is placed on the case in-plane by the body centroids and along z by the shift that maximises the
  normalised cross-correlation of coarse (8 x 8 x 6 mm) CTs (z_signature, match_z); the best
  correlations choose the atlases. Registration as below on a 6 mm grid; fusion per organ among the
  atlases that have that organ contoured (a voxel takes the organ most of them vote for, if at least
  half of them do), each organ then kept as its largest connected component.

For each atlas (a training phantom with its 22-organ labels): affine registration of the atlas CT to
the case (Mattes mutual information, multi-resolution, gradient descent; initialised on the image
centres), then deformable registration by fast symmetric-forces demons on the case's (coarsened) grid;
the atlas labels are warped through both transforms (nearest neighbour) onto the case's grid and the N
label maps are fused by majority voting (SimpleITK LabelVoting; ties -> background).
This is the "Multi-Atlas" baseline of FocusNetv2's Table 1.
"""
import glob
import json
import os
import sys

import numpy as np
import SimpleITK as sitk

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "_shared"))  # refio.py in the repo; beside it in the image
import refio  # noqa: E402

NAME = "multiatlas"
ATLAS_DIR = os.environ.get("MULTIATLAS_DIR", os.path.join(HERE, "atlases"))
WORK_SPACING = (2.8, 2.8, 6.0)  # registration grid (mm): the case is coarsened to at least this
OPENKBP_SPACING = (6.0, 6.0, 6.0)  # registration grid of the OpenKBP atlas set (mm)
OPENKBP_REGISTRATION = {"iterations": 60, "sampling": 0.05, "demons_iterations": 40}
SIG_SIZE, SIG_STEP_MM = 32, (8.0, 6.0)  # z signatures: 32 x 32 in-plane at 8 mm, slices every 6 mm
BODY_HU = -500.0


def load_atlases(limit=None):
    cts = sorted(glob.glob(os.path.join(ATLAS_DIR, "atlas-*-ct.mha")))[:limit]
    return [(sitk.ReadImage(c, sitk.sitkFloat32), sitk.ReadImage(c.replace("-ct.mha", "-labels.mha")))
            for c in cts]


class AtlasSet:
    """OpenKBP atlases (index.json): per atlas its coarse CT, label map, contoured ids and z_signature."""

    def __init__(self, folder: str, limit=None):
        with open(os.path.join(folder, "index.json"), encoding="utf-8") as fh:
            index = json.load(fh)
        self.select = int(os.environ.get("MULTIATLAS_SELECT", "0") or 0) or int(index["select"])
        self.n_labels = int(index["n_labels"])
        self.atlases = []
        for e in index["atlases"][:limit]:
            ct = sitk.ReadImage(os.path.join(folder, e["ct"]), sitk.sitkFloat32)
            lab = sitk.ReadImage(os.path.join(folder, e["labels"]), sitk.sitkUInt8)
            self.atlases.append({"patient": e["patient"], "present": list(e["present"]), "ct": ct, "labels": lab,
                                 "signature": z_signature(ct), "centre": body_centroid(ct)})


def setup():
    n = int(os.environ.get("MULTIATLAS_N", "0") or 0) or None
    if os.path.isfile(os.path.join(ATLAS_DIR, "index.json")):
        return AtlasSet(ATLAS_DIR, n)
    return load_atlases(n)


def work_grid(img, spacing=WORK_SPACING):
    sp = [max(a, b) for a, b in zip(img.GetSpacing(), spacing)]
    size = [max(8, int(round(n * s / w))) for n, s, w in zip(img.GetSize(), img.GetSpacing(), sp)]
    centre = img.TransformContinuousIndexToPhysicalPoint([0.5 * (n - 1) for n in img.GetSize()])
    ref = refio.canonical_reference(img, size, sp, centre=centre)
    return sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, -1024.0)


def z_signature(img) -> tuple[float, np.ndarray]:
    """(z of the first slice in mm, (n, 32, 32) array): the CT on an 8 mm in-plane grid centred on its body
    centroid, every 6 mm along the whole scan, HU clipped to [-300, 1300] (soft tissue and bone). ``img``
    axis-aligned."""
    cx, cy = body_centroid(img)
    size = img.GetSize()
    extent = (size[2] - 1) * img.GetSpacing()[2]
    z0 = img.GetOrigin()[2]
    ref = sitk.Image([SIG_SIZE, SIG_SIZE, int(extent // SIG_STEP_MM[1]) + 1], sitk.sitkFloat32)
    ref.SetSpacing([SIG_STEP_MM[0], SIG_STEP_MM[0], SIG_STEP_MM[1]])
    half = 0.5 * (SIG_SIZE - 1) * SIG_STEP_MM[0]
    ref.SetOrigin([cx - half, cy - half, z0])
    arr = sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32))
    return float(z0), np.clip(arr, -300.0, 1300.0)


def match_z(case: tuple[float, np.ndarray], atlas: tuple[float, np.ndarray]):
    """(correlation, dz, dy, dx): the shift (mm, case -> atlas) that maximises the normalised
    cross-correlation of the two signatures (z_signature) over the case's body voxels (above -250 HU:
    OpenKBP CTs are often blanked to -1024 HU outside a box around the target, so only the case's own
    tissue is compared). z first, over overlaps of at least 60 % of the shorter scan (and 150 mm), then
    in-plane within +-24 mm at that z; (-1, 0, 0, 0) when no shift overlaps enough."""
    (z0c, c), (z0a, a) = case, atlas
    need = max(int(150.0 / SIG_STEP_MM[1]), int(0.6 * min(len(c), len(a))))

    def ncc(k: int, dy: int = 0, dx: int = 0) -> float:
        i0, i1 = max(0, k), min(len(c), len(a) + k)
        if i1 - i0 < need:
            return -1.0
        u = c[i0:i1]
        v = np.roll(a[i0 - k:i1 - k], (-dy, -dx), axis=(1, 2))
        m = u > -250.0
        if m.sum() < 200:
            return -1.0
        u, v = u[m] - u[m].mean(), v[m] - v[m].mean()
        return float((u * v).sum() / (np.sqrt((u * u).sum() * (v * v).sum()) + 1e-9))

    r, k = max((ncc(k), k) for k in range(-len(a) + need, len(c) - need + 1))
    r, dy, dx = max((ncc(k, dy, dx), dy, dx) for dy in range(-3, 4) for dx in range(-3, 4))
    if r <= -1.0:
        return (-1.0, 0.0, 0.0, 0.0)
    return (r, (z0a - k * SIG_STEP_MM[1]) - z0c, dy * SIG_STEP_MM[0], dx * SIG_STEP_MM[0])


def body_crop(img, margin: int = 2):
    """``img`` cropped in-plane to the bounding box of its voxels above -500 HU plus ``margin`` voxels
    (registration time scales with the grid; most of an OpenKBP field of view is air)."""
    arr = sitk.GetArrayViewFromImage(img)
    idx = np.argwhere(arr > BODY_HU)
    if not len(idx):
        return img
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, arr.shape)
    lo[0], hi[0] = 0, arr.shape[0]  # the whole scan along z (z_signature needs it)
    size = [int(h - l) for l, h in zip(lo[::-1], hi[::-1])]
    return sitk.RegionOfInterest(img, size, [int(v) for v in lo[::-1]])


def body_centroid(img) -> tuple[float, float]:
    """In-plane physical centroid (x, y) of the voxels above -500 HU (the image centre if none)."""
    arr = sitk.GetArrayViewFromImage(img)
    idx = np.argwhere(arr > BODY_HU)
    ci = [0.5 * (n - 1) for n in img.GetSize()]
    if len(idx):
        ci = [float(idx[:, 2].mean()), float(idx[:, 1].mean()), ci[2]]
    x, y, _ = img.TransformContinuousIndexToPhysicalPoint(ci)
    return float(x), float(y)


def register(fixed, moving, init=None, iterations=150, sampling=0.2, demons_iterations=60, fixed_mask=None):
    """Affine (MI) then demons; returns a transform mapping fixed -> moving physical points.
    ``init``: a starting transform (default: the image centres aligned); ``iterations``: affine
    gradient-descent iterations per level; ``sampling``: fraction of voxels the MI metric samples;
    ``fixed_mask``: where the affine metric looks (default everywhere)."""
    if init is None:
        init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                 sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, iterations, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SetInitialTransform(init, inPlace=False)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    affine = reg.Execute(fixed, moving)
    moved = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, -1024.0)
    # demons on clipped intensities (soft tissue and bone edges drive it)
    clip = lambda im: sitk.Clamp(im, sitk.sitkFloat32, -300.0, 1500.0)  # noqa: E731
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(demons_iterations)
    demons.SetStandardDeviations(1.5)
    field = demons.Execute(clip(fixed), clip(moved))
    disp = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.CompositeTransform([affine, disp])


def segment_openkbp(img, aset: AtlasSet):
    """OpenKBP mode: choose and place atlases by match_z, register, fuse per organ."""
    fixed = body_crop(work_grid(img, OPENKBP_SPACING))
    sig, (cx, cy) = z_signature(fixed), body_centroid(fixed)
    body = sitk.BinaryDilate(sitk.Cast(fixed > -900.0, sitk.sitkUInt8), [2, 2, 2])  # the case's tissue
    ranked = sorted(((match_z(sig, a["signature"]), a) for a in aset.atlases), key=lambda t: -t[0][0])
    votes = np.zeros((aset.n_labels + 1,) + tuple(img.GetSize()[::-1]), np.float32)
    n_with = np.zeros(aset.n_labels + 1, np.float32)
    for (_, dz, dy, dx), a in ranked[:aset.select]:
        ax, ay = a["centre"]
        init = sitk.AffineTransform(3)
        init.SetTranslation((ax - cx + dx, ay - cy + dy, dz))
        init.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([0.5 * (n - 1) for n in fixed.GetSize()]))
        tx = register(fixed, a["ct"], init, fixed_mask=body, **OPENKBP_REGISTRATION)
        warped = sitk.GetArrayFromImage(sitk.Resample(a["labels"], img, tx, sitk.sitkNearestNeighbor, 0,
                                                      sitk.sitkUInt8))
        for k in a["present"]:
            votes[k] += warped == k
            n_with[k] += 1
    frac = votes / np.maximum(n_with, 1)[:, None, None, None]
    frac[0] = 0.499  # a voxel is an organ only where at least half of that organ's atlases say so
    lab = np.argmax(frac, axis=0).astype(np.uint8)
    out = np.zeros_like(lab)
    for k in range(1, aset.n_labels + 1):  # largest connected component per organ
        if (lab == k).any():
            cc = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(
                sitk.GetImageFromArray((lab == k).astype(np.uint8)), True)))
            out[cc == 1] = k
    res = sitk.GetImageFromArray(out)
    res.CopyInformation(img)
    return res


def segment(img, atlases):
    if isinstance(atlases, AtlasSet):
        return segment_openkbp(img, atlases)
    fixed = work_grid(img)
    warped = []
    for ct, lab in atlases:
        tx = register(fixed, ct)
        warped.append(sitk.Resample(lab, img, tx, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    if len(warped) == 1:
        return warped[0]
    fused = sitk.LabelVoting(warped, 255)  # 255: tie
    arr = sitk.GetArrayFromImage(fused)
    arr[arr == 255] = 0
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(img)
    return out


if __name__ == "__main__":
    sys.exit(refio.run_contract(NAME, segment, setup))
