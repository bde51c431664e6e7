#!/usr/bin/env python3
"""Replays TotalSegmentator's *fast* model output as an Arena algorithm (abdomen-totalseg).

The image ships one real segmentation, ``/opt/replay/segmentation.nii.gz`` (the fast model's output for the
TotalSegmentator example CT, copied from the shared data folder into the build context at build time).
For each input CT it writes that segmentation put on the input's grid by physical coordinates (nearest
neighbour), so any grid covering the same anatomy works; the container never sees the reference.
Per-case (grand-challenge) and batch layouts, like examples/threshold-segmenter.
"""

import os
import sys

import SimpleITK as sitk

SEGMENTATION = os.environ.get("REPLAY_SEGMENTATION", "/opt/replay/segmentation.nii.gz")


def log(msg: str) -> None:
    print(f"[totalseg-fast-replay] {msg}", flush=True)


def segment_case(input_dir: str, output_dir: str) -> None:
    ct_dir = os.path.join(input_dir, "images", "ct")
    files = sorted(f for f in os.listdir(ct_dir) if f.endswith((".mha", ".nii.gz")))
    if len(files) != 1:
        print(f"expected one CT in {ct_dir}, found {files}", file=sys.stderr)
        sys.exit(2)
    ct = sitk.ReadImage(os.path.join(ct_dir, files[0]))
    seg = sitk.ReadImage(SEGMENTATION)
    out = sitk.Resample(seg, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    for k in out.GetMetaDataKeys():
        out.EraseMetaData(k)
    dest = os.path.join(output_dir, "images", "oar-segmentation")
    os.makedirs(dest, exist_ok=True)
    sitk.WriteImage(out, os.path.join(dest, "output.mha"), True)
    log(f"{files[0]}: size {ct.GetSize()}, wrote the fast model's segmentation")


def main() -> int:
    input_dir = os.environ.get("ARENA_INPUT_DIR", "/input")
    output_dir = os.environ.get("ARENA_OUTPUT_DIR", "/output")
    if os.path.isdir(os.path.join(input_dir, "images")):
        segment_case(input_dir, output_dir)
        return 0
    for case in sorted(os.listdir(input_dir)):
        if os.path.isfile(os.path.join(input_dir, case, "inputs.json")):
            segment_case(os.path.join(input_dir, case), os.path.join(output_dir, case))
    return 0


if __name__ == "__main__":
    sys.exit(main())
