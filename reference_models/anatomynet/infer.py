#!/usr/bin/env python3
"""AnatomyNet inference entrypoint (Arena container contract v1, per-case and batch mode).

One image per task (build arg ``TASK`` -> ``ANATOMYNET_TASK``; tasks.json lists them):

* ``han-oar-22`` (default; phantom-trained, ``weights/anatomynet.onnx``): the CT is resampled onto the
  canonical grid (136 x 136 x 80 at 2 x 2 x 3 mm on the image centre, refio.py), normalised
  (asinh(HU/100)), segmented, and the arg-max label map is resampled (nearest) back onto the input grid.
* ``han-oar-openkbp`` (trained on the OpenKBP train split, ``weights/han-oar-openkbp/anatomynet.onnx``):
  the same on the 4 mm working grid of openkbp_grid.py (centred in-plane on the body, the whole scan
  along z), each organ kept as its largest connected component, 7 labels (OpenKBP's ids).

ONNX Runtime on CPU (OMP_NUM_THREADS threads).
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "_shared"))  # refio.py in the repo; beside it in the image
import refio  # noqa: E402

NAME = "anatomynet"
TASK = os.environ.get("ANATOMYNET_TASK", "han-oar-22")
WEIGHTS = {"han-oar-22": os.path.join(HERE, "weights", "anatomynet.onnx"),
           "han-oar-openkbp": os.path.join(HERE, "weights", "han-oar-openkbp", "anatomynet.onnx")}


def setup(task: str = TASK):
    """(task, ONNX Runtime session) for ``task``; ANATOMYNET_ONNX overrides the weights file."""
    import onnxruntime as ort

    if task not in WEIGHTS:
        raise RuntimeError(f"ANATOMYNET_TASK={task!r}: this image has weights for {sorted(WEIGHTS)} only")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    path = os.environ.get("ANATOMYNET_ONNX") or WEIGHTS[task]
    return task, ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def segment(img, state):
    """Label image (uint8, on ``img``'s grid) of the CT ``img`` for the state's task."""
    task, session = state
    if task == "han-oar-openkbp":
        import openkbp_grid as grid

        ref = grid.reference_grid(img)
        x = grid.ct_on_grid(img, ref)[None, None]
        prob = session.run(None, {"ct": x})[0]
        lab = grid.keep_largest_components(np.argmax(prob[0], axis=0).astype(np.uint8), prob.shape[1] - 1)
        return refio.labels_to_input_grid(lab, ref, img)
    ref = refio.canonical_reference(img)
    x = refio.normalize(refio.resample_ct(img, ref))[None, None]
    prob = session.run(None, {"ct": x})[0]
    lab = np.argmax(prob[0], axis=0).astype(np.uint8)
    return refio.labels_to_input_grid(lab, ref, img)


if __name__ == "__main__":
    sys.exit(refio.run_contract(NAME, segment, setup))
