#!/usr/bin/env python3
"""AnatomyNet inference entrypoint (Arena container contract v1, per-case and batch mode).

The CT is resampled onto the canonical grid (136 x 136 x 80 at 2 x 2 x 3 mm, on the image centre),
normalised (asinh(HU/100)), segmented by the ONNX export of the trained network (ONNX Runtime, CPU)
and the arg-max label map is resampled (nearest) back onto the input grid.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "_shared"))  # refio.py in the repo
import refio  # noqa: E402

NAME = "anatomynet"
WEIGHTS = os.environ.get("ANATOMYNET_ONNX", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                          "weights", "anatomynet.onnx"))


def setup():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    return ort.InferenceSession(WEIGHTS, opts, providers=["CPUExecutionProvider"])


def segment(img, session):
    ref = refio.canonical_reference(img)
    x = refio.normalize(refio.resample_ct(img, ref))[None, None]
    prob = session.run(None, {"ct": x})[0]
    lab = np.argmax(prob[0], axis=0).astype(np.uint8)
    return refio.labels_to_input_grid(lab, ref, img)


if __name__ == "__main__":
    sys.exit(refio.run_contract(NAME, segment, setup))
