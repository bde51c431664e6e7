#!/usr/bin/env python3
"""FocusNetv2 inference entrypoint (Arena container contract v1, per-case and batch mode).

1. S-Net + SOL-Net (snet.onnx) on the canonical grid (136 x 136 x 80 at 2 x 2 x 3 mm; S-Net itself
   works on it average-pooled to 4 x 4 x 6 mm and up-samples its class probabilities back): class
   probabilities for all organs, one centre heat map per small organ and S-Net's last decoder features;
2. for each of the six small organs, an ROI of 8 x 48 x 48 voxels at 1 x 1 x 2.5 mm around its heat
   map's peak: S-Net's features ROI-pooled onto it (trilinear, :func:`roi_pool`) and the *input* CT
   resampled onto it, concatenated, segmented by SOS-Net (sos.onnx);
3. S-Net's labels are resampled (nearest) onto the input grid; each small organ's S-Net voxels are
   replaced by its SOS-Net segmentation (resampled nearest from the ROI grid).
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "_shared"))  # refio.py in the repo; beside infer.py in the image
import refio  # noqa: E402

NAME = "focusnetv2"
SMALL_ORGANS = (4, 5, 6, 7, 8, 11)  # as model.SMALL_ORGANS (no torch in the image): lenses, optic nerves, chiasm, pituitary
ROI_SIZE_XYZ = (48, 48, 8)
ROI_SPACING_XYZ = (1.0, 1.0, 2.5)
SNET_POOL = 2  # S-Net's grid = the canonical grid average-pooled by 2 (model.SNet.input_pool)
WEIGHTS = os.environ.get("FOCUSNETV2_WEIGHTS", os.path.join(HERE, "weights"))


def setup():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    prov = ["CPUExecutionProvider"]
    return (ort.InferenceSession(os.path.join(WEIGHTS, "snet.onnx"), opts, providers=prov),
            ort.InferenceSession(os.path.join(WEIGHTS, "sos.onnx"), opts, providers=prov))


def decode_heatmaps(heat):
    """(K, d, h, w) heat maps on S-Net's grid -> (K, 3) canonical continuous voxel indices (z, y, x):
    the peak refined by the heat-weighted mean of its 3 x 3 x 3 neighbourhood."""
    out = np.zeros((heat.shape[0], 3), np.float64)
    for k in range(heat.shape[0]):
        z, y, x = np.unravel_index(int(np.argmax(heat[k])), heat[k].shape)
        sl = tuple(slice(max(0, v - 1), v + 2) for v in (z, y, x))
        patch = heat[k][sl]
        grids = np.meshgrid(*[np.arange(s.start, s.start + n) for s, n in zip(sl, patch.shape)], indexing="ij")
        out[k] = [float((g * patch).sum() / (patch.sum() + 1e-8)) * SNET_POOL + 0.5 * (SNET_POOL - 1)
                  for g in grids]
    return out


def roi_pool(feat, points):
    """Trilinear sampling of ``feat`` (C, d, h, w) at continuous voxel indices ``points`` (..., 3) as
    (z, y, x); corners outside the grid count as zero (as torch grid_sample, zeros padding,
    align_corners=True; model.roi_pool). Returns (C, *points.shape[:-1]) float32."""
    shape = np.asarray(feat.shape[1:])
    last = np.ascontiguousarray(feat.reshape(feat.shape[0], -1).T)  # (voxels, C): a contiguous row per voxel
    p = points.reshape(-1, 3).astype(np.float64)
    i0 = np.floor(p).astype(np.int64)
    f = p - i0
    out = np.zeros((len(p), feat.shape[0]), np.float32)
    for corner in range(8):
        off = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        idx = i0 + off
        w = np.prod(np.where(off == 1, f, 1 - f), axis=1).astype(np.float32)
        ok = np.all((idx >= 0) & (idx < shape), axis=1)
        flat = (idx[ok, 0] * shape[1] + idx[ok, 1]) * shape[2] + idx[ok, 2]
        out[ok] += last[flat] * w[ok, None]
    return out.T.reshape(feat.shape[0], *points.shape[:-1])


def roi_points(grid, ref):
    """(z, y, x, 3) continuous indices on S-Net's grid of the voxel centres of the ROI image ``grid``
    (both grids axis-aligned, as canonical_reference builds them)."""
    axes = []
    for a in range(3):
        phys = grid.GetOrigin()[a] + np.arange(grid.GetSize()[a]) * grid.GetSpacing()[a]
        canon = (phys - ref.GetOrigin()[a]) / ref.GetSpacing()[a]
        axes.append((canon - 0.5 * (SNET_POOL - 1)) / SNET_POOL)
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return np.stack([zz, yy, xx], -1)


def segment(img, sessions):
    import SimpleITK as sitk

    snet, sos = sessions
    ref = refio.canonical_reference(img)
    x = refio.normalize(refio.resample_ct(img, ref))[None, None]
    lab, heat, feat = snet.run(None, {"ct": x})
    lab = lab[0].astype(np.uint8)
    feat = feat[0]
    out = sitk.GetArrayFromImage(refio.labels_to_input_grid(lab, ref, img))
    centres = decode_heatmaps(heat[0])
    rois, grids = [], []
    for k in range(len(SMALL_ORGANS)):
        cz, cy, cx = centres[k]
        phys = ref.TransformContinuousIndexToPhysicalPoint((float(cx), float(cy), float(cz)))
        g = refio.canonical_reference(img, ROI_SIZE_XYZ, ROI_SPACING_XYZ, centre=phys)
        ct = refio.normalize(refio.resample_ct(img, g))
        rois.append(np.concatenate([roi_pool(feat, roi_points(g, ref)), ct[None]], 0))
        grids.append(g)
    fg = sos.run(None, {"rois": np.stack(rois).astype(np.float32)})[0][:, 0] > 0.5
    for k, organ in enumerate(SMALL_ORGANS):
        m = sitk.GetImageFromArray(fg[k].astype(np.uint8))
        m.CopyInformation(grids[k])
        inside = sitk.GetArrayFromImage(sitk.Resample(m, img, sitk.Transform(), sitk.sitkNearestNeighbor, 2,
                                                      sitk.sitkUInt8))
        roi = inside != 2  # voxels the ROI covers: SOS-Net decides there
        out[roi & (out == organ)] = 0
        out[roi & (inside == 1)] = organ
    res = sitk.GetImageFromArray(out.astype(np.uint8))
    res.CopyInformation(img)
    return res


if __name__ == "__main__":
    sys.exit(refio.run_contract(NAME, segment, setup))
