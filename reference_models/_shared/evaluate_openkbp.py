#!/usr/bin/env python3
"""Score a reference model on OpenKBP's validation and test patients with Arena's own metric code.

Runs the model's container code in-process (``anatomynet/infer.py`` with ANATOMYNET_TASK=han-oar-openkbp,
``multiatlas/multiatlas.py`` with an OpenKBP atlas folder written by its make_atlases.py from the *train*
split) on every patient of the chosen splits, and scores the label map against the clinical contours
with ``arena.metrics.score_segmentation``: Dice and HD95 (mm, medpy convention), organs 1..7, and
``reference_empty: exclude`` (an organ that was not contoured for a patient is not scored, whatever
the model predicts; a contoured organ the model misses scores Dice 0 and HD95 = the image diagonal).

    python reference_models/_shared/evaluate_openkbp.py anatomynet --splits validation test \\
        --out /tmp/anatomynet_openkbp.json
    python reference_models/_shared/evaluate_openkbp.py multiatlas --splits validation test

Prints, per split, a Markdown table (per organ: scored patients, mean Dice, mean HD95) and the time per
case (CPU-contended machines make it noisy). Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent
sys.path.insert(0, str(HERE))

import openkbp_split as split  # noqa: E402

TASK = "han-oar-openkbp"


def load_model(name: str, atlas_dir: str | None = None):
    """(setup, segment) of the model's container entrypoint, configured for han-oar-openkbp."""
    if name == "anatomynet":
        os.environ["ANATOMYNET_TASK"] = TASK
        path = MODELS / "anatomynet" / "infer.py"
    elif name == "multiatlas":
        if not atlas_dir:
            raise ValueError("multiatlas needs an OpenKBP atlas folder")
        os.environ["MULTIATLAS_DIR"] = atlas_dir
        path = MODELS / "multiatlas" / "multiatlas.py"
    else:
        raise ValueError(f"unknown model {name!r} (anatomynet or multiatlas)")
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"openkbp_eval_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.setup, mod.segment


def build_atlases(dest: str, data_root: str) -> None:
    """The multi-atlas baseline's OpenKBP atlases (train split only), as `arena reference build` makes them."""
    cmd = [sys.executable, str(MODELS / "multiatlas" / "make_atlases.py"), "--task", TASK, "--out", dest,
           "--data", data_root]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def evaluate(name: str, data_root: str, splits: list[str], atlas_dir: str | None = None,
             limit: int | None = None, log=print, out_path: str | None = None) -> dict:
    """Per split: per-patient scores {patient: {organ: {dice, hd95}}} and seconds per case.

    ``out_path``: the result is written there (JSON) after every patient, and patients already in it
    (same model) are not run again (an interrupted run resumes)."""
    import SimpleITK as sitk

    from arena.metrics.segmentation import EmptyPolicy, score_segmentation

    policy = EmptyPolicy(reference_empty="exclude", one_empty_distance="diagonal")
    cases = split.load_cases(data_root)
    setup, segment = load_model(name, atlas_dir)
    t0 = time.perf_counter()
    state = setup()
    out = {"model": name, "task": TASK, "setup_s": time.perf_counter() - t0, "splits": {}}
    done = {}
    if out_path and os.path.isfile(out_path):
        old = json.loads(Path(out_path).read_text())
        if old.get("model") == name:
            done = {sp: v for sp, v in old.get("splits", {}).items()}
    d = split.openkbp_dir(data_root)
    for sp in splits:
        patients = split.split_patients(cases, sp)[:limit]
        res = dict(done.get(sp, {}).get("patients", {}))
        secs = list(done.get(sp, {}).get("seconds", []))
        out["splits"][sp] = {"patients": res, "seconds": secs}
        for p in patients:
            if p in res:
                continue
            img = sitk.ReadImage(str(d / f"{p}_ct.nii.gz"))
            t1 = time.perf_counter()
            lab = segment(img, state)
            secs.append(time.perf_counter() - t1)
            ref = sitk.ReadImage(str(d / f"{p}_oars.nii.gz"))
            scores = score_segmentation(sitk.GetArrayFromImage(lab), sitk.GetArrayFromImage(ref),
                                        ref.GetSpacing()[::-1], range(1, 8), "medpy", empty_policy=policy)
            res[p] = {split.ORGANS[k - 1]: {"dice": v["dice"], "hd95": v["hd95"]} for k, v in scores.items()
                      if v["dice"] is not None}
            log(f"{name} {sp} {p}: " + ", ".join(f"{o} {v['dice']:.2f}" for o, v in res[p].items())
                + f" ({secs[-1]:.1f} s)")
            out["splits"][sp]["seconds_per_case"] = float(np.mean(secs))
            if out_path:
                Path(out_path).write_text(json.dumps(out, indent=1))
        out["splits"][sp]["seconds_per_case"] = float(np.mean(secs)) if secs else None
    return out


def table(result: dict, sp: str) -> str:
    """Markdown: per organ the number of scored patients, mean Dice and mean HD95; then the mean over
    organs (of the per-organ means) and over all scored (patient, organ) pairs."""
    pats = result["splits"][sp]["patients"]
    lines = ["| organ | scored patients | Dice | HD95 (mm) |", "|---|---:|---:|---:|"]
    dice_means, hd_means, all_d, all_h = [], [], [], []
    for organ in split.ORGANS:
        vals = [p[organ] for p in pats.values() if organ in p]
        if not vals:
            lines.append(f"| {organ} | 0 | – | – |")
            continue
        d = float(np.mean([v["dice"] for v in vals]))
        h = [v["hd95"] for v in vals if v["hd95"] is not None and not math.isnan(v["hd95"])]
        hm = float(np.mean(h)) if h else float("nan")
        dice_means.append(d)
        hd_means.append(hm)
        all_d += [v["dice"] for v in vals]
        all_h += h
        lines.append(f"| {organ} | {len(vals)} | {d:.3f} | {hm:.1f} |")
    lines.append(f"| **mean over organs** | {len(pats)} patients | **{np.mean(dice_means):.3f}** | "
                 f"**{np.nanmean(hd_means):.1f}** |")
    lines.append(f"| mean over scored (patient, organ) pairs | {len(all_d)} pairs | {np.mean(all_d):.3f} | "
                 f"{np.mean(all_h):.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=("anatomynet", "multiatlas"))
    ap.add_argument("--splits", nargs="+", default=["validation", "test"], choices=("validation", "test"))
    ap.add_argument("--data", default=None, help="shared data folder (default: arena's ARENA_SHARED_DATA)")
    ap.add_argument("--atlases", default=None, help="multiatlas: an OpenKBP atlas folder (default: built now "
                    "into a temporary folder from the train split)")
    ap.add_argument("--limit", type=int, default=None, help="first N patients of each split")
    ap.add_argument("--out", default=None, help="write the per-patient scores here (JSON, after every patient; "
                    "a rerun with the same --out skips the patients already there)")
    a = ap.parse_args()
    if a.data is None:
        from arena.tasks.store import shared_data_root

        a.data = str(shared_data_root())
    with tempfile.TemporaryDirectory(prefix="openkbp-atlases-") as tmp:
        atlases = a.atlases
        if a.model == "multiatlas" and atlases is None:
            atlases = os.path.join(tmp, "atlases")
            build_atlases(atlases, a.data)
        t0 = time.time()
        res = evaluate(a.model, a.data, a.splits, atlases, a.limit, out_path=a.out)
        res["wall_s"] = time.time() - t0
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    for sp in a.splits:
        print(f"\n{a.model} on OpenKBP {sp} ({len(res['splits'][sp]['patients'])} patients), "
              f"{res['splits'][sp]['seconds_per_case']:.1f} s/case:\n")
        print(table(res, sp))
    print(f"\nwall time {res['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
