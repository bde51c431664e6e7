#!/usr/bin/env python3
"""FocusNetv2 inference entrypoint (Arena container contract v1, per-case and batch mode).

1. S-Net + SOL-Net (snet.onnx) on the canonical grid (136 x 136 x 80 at 2 x 2 x 3 mm): class
   probabilities for all organs and one centre heat map per small organ;
2. for each small organ, an ROI of 8 x 64 x 64 voxels at 1 x 1 x 2.5 mm around the heat map's peak
   is resampled from the *input* CT and segmented by that organ's SOS-Net branch (sos.onnx);
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
SMALL_ORGANS = (4, 5, 6, 7, 8, 11, 14, 15, 16, 17)  # as model.SMALL_ORGANS (no torch in the image)
ROI_SIZE_XYZ = (64, 64, 8)
ROI_SPACING_XYZ = (1.0, 1.0, 2.5)
WEIGHTS = os.environ.get("FOCUSNETV2_WEIGHTS", os.path.join(HERE, "weights"))


def setup():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    prov = ["CPUExecutionProvider"]
    return (ort.InferenceSession(os.path.join(WEIGHTS, "snet.onnx"), opts, providers=prov),
            ort.InferenceSession(os.path.join(WEIGHTS, "sos.onnx"), opts, providers=prov))


def decode_heatmaps(heat):
    """(K, d, h, w) half-resolution heat maps -> (K, 3) canonical voxel coordinates (z, y, x)."""
    out = np.zeros((heat.shape[0], 3), np.float64)
    for k in range(heat.shape[0]):
        z, y, x = np.unravel_index(int(np.argmax(heat[k])), heat[k].shape)
        sl = tuple(slice(max(0, v - 1), v + 2) for v in (z, y, x))
        patch = heat[k][sl]
        grids = np.meshgrid(*[np.arange(s.start, s.start + n) for s, n in zip(sl, patch.shape)], indexing="ij")
        out[k] = [float((g * patch).sum() / (patch.sum() + 1e-8)) * 2.0 for g in grids]
    return out


def segment(img, sessions):
    import SimpleITK as sitk

    snet, sos = sessions
    ref = refio.canonical_reference(img)
    x = refio.normalize(refio.resample_ct(img, ref))[None, None]
    prob, heat = snet.run(None, {"ct": x})
    lab = np.argmax(prob[0], axis=0).astype(np.uint8)
    del prob
    out = sitk.GetArrayFromImage(refio.labels_to_input_grid(lab, ref, img))
    centres = decode_heatmaps(heat[0])
    rois, grids = [], []
    for k in range(len(SMALL_ORGANS)):
        cz, cy, cx = centres[k]
        phys = ref.TransformContinuousIndexToPhysicalPoint((float(cx), float(cy), float(cz)))
        g = refio.canonical_reference(img, ROI_SIZE_XYZ, ROI_SPACING_XYZ, centre=phys)
        rois.append(refio.normalize(refio.resample_ct(img, g)))
        grids.append(g)
    fg = sos.run(None, {"rois": np.stack(rois)[:, None].astype(np.float32)})[0][:, 0] > 0.5
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
