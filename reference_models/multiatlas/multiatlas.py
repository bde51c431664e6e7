#!/usr/bin/env python3
"""Classical multi-atlas segmentation (no deep learning): Arena container contract v1, per-case and batch.

For each atlas (a training phantom with its 22-organ labels): affine registration of the atlas CT to
the case (Mattes mutual information, multi-resolution, gradient descent; initialised on the image
centres), then deformable registration by fast symmetric-forces demons on the case's (coarsened) grid;
the atlas labels are warped through both transforms (nearest neighbour) onto the case's grid and the N
label maps are fused by majority voting (SimpleITK LabelVoting; ties -> background).
This is the "Multi-Atlas" baseline of FocusNetv2's Table 1.
"""
import glob
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


def load_atlases(limit=None):
    cts = sorted(glob.glob(os.path.join(ATLAS_DIR, "atlas-*-ct.mha")))[:limit]
    return [(sitk.ReadImage(c, sitk.sitkFloat32), sitk.ReadImage(c.replace("-ct.mha", "-labels.mha")))
            for c in cts]


def setup():
    n = int(os.environ.get("MULTIATLAS_N", "0") or 0) or None
    return load_atlases(n)


def work_grid(img):
    sp = [max(a, b) for a, b in zip(img.GetSpacing(), WORK_SPACING)]
    size = [max(8, int(round(n * s / w))) for n, s, w in zip(img.GetSize(), img.GetSpacing(), sp)]
    centre = img.TransformContinuousIndexToPhysicalPoint([0.5 * (n - 1) for n in img.GetSize()])
    ref = refio.canonical_reference(img, size, sp, centre=centre)
    return sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, -1024.0)


def register(fixed, moving):
    """Affine (MI) then demons; returns a transform mapping fixed -> moving physical points."""
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 150, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SetInitialTransform(init, inPlace=False)
    affine = reg.Execute(fixed, moving)
    moved = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, -1024.0)
    # demons on clipped intensities (soft tissue and bone edges drive it)
    clip = lambda im: sitk.Clamp(im, sitk.sitkFloat32, -300.0, 1500.0)  # noqa: E731
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(60)
    demons.SetStandardDeviations(1.5)
    field = demons.Execute(clip(fixed), clip(moved))
    disp = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.CompositeTransform([affine, disp])


def segment(img, atlases):
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
