#!/usr/bin/env python3
"""Time per case of the OpenKBP reference models' inference on this machine (1 thread), and the time to
load a case, on real OpenKBP validation CTs (128^3) from the shared data folder. Prints a table.

The models run in-process with the code their containers run (anatomynet/infer.py with
ANATOMYNET_TASK=han-oar-openkbp; multiatlas/multiatlas.py with OpenKBP train-split atlases built by its
make_atlases.py into a temporary folder), so the numbers exclude container start-up. "load" is reading
the case as the container sees it (.mha, written once from the shared .nii.gz) and as the shared data
holds it (.nii.gz).

    python benchmarks/bench_reference_openkbp.py [--cases 5] [--model anatomynet --model multiatlas]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as in the containers (read by onnxruntime's setup)
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "reference_models" / "_shared"))

import evaluate_openkbp as ev  # noqa: E402
import openkbp_split as split  # noqa: E402

from arena.tasks.store import shared_data_root  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=5, help="first N OpenKBP validation patients")
    ap.add_argument("--model", action="append", choices=("anatomynet", "multiatlas"))
    a = ap.parse_args()
    root = shared_data_root()
    cases = split.load_cases(root)
    patients = split.split_patients(cases, "validation")[:a.cases]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-openkbp-") as tmp:
        mha, t_nii, t_mha = [], [], []
        for p in patients:
            t0 = time.perf_counter()
            img = sitk.ReadImage(str(split.openkbp_dir(root) / f"{p}_ct.nii.gz"))
            t_nii.append(time.perf_counter() - t0)
            path = os.path.join(tmp, f"{p}.mha")
            sitk.WriteImage(img, path, True)
            t0 = time.perf_counter()
            mha.append(sitk.ReadImage(path))
            t_mha.append(time.perf_counter() - t0)
        for name in a.model or ["anatomynet", "multiatlas"]:
            atlases = None
            if name == "multiatlas":
                atlases = os.path.join(tmp, "atlases")
                ev.build_atlases(atlases, str(root))
            setup, segment = ev.load_model(name, atlases)
            t0 = time.perf_counter()
            state = setup()
            t_setup = time.perf_counter() - t0
            secs = []
            for img in mha:
                t0 = time.perf_counter()
                segment(img, state)
                secs.append(time.perf_counter() - t0)
            rows.append((name, t_setup, float(np.mean(secs)), float(np.max(secs))))
    print(f"\nOpenKBP validation patients {', '.join(patients)} (128^3 CT), 1 thread, in-process (no container start)\n")
    print(f"load a case: .mha {1000 * np.mean(t_mha):.0f} ms, .nii.gz {1000 * np.mean(t_nii):.0f} ms (mean)\n")
    print("| model | setup s | inference s/case (mean) | max |")
    print("|---|---:|---:|---:|")
    for name, t_setup, mean, mx in rows:
        print(f"| {name} | {t_setup:.1f} | {mean:.1f} | {mx:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
