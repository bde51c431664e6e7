#!/usr/bin/env python3
"""Train AnatomyNet on the OpenKBP *train* split (han-oar-openkbp, 7 organs) on a CPU, and export it.

    nice -n 10 python reference_models/anatomynet/train_openkbp.py train --minutes 24 --max-wall-minutes 50
    python reference_models/anatomynet/train_openkbp.py export          # .pt -> .onnx

Data: the 170 OpenKBP train patients, read only through ``openkbp_split.read_train_case`` (a validation
or test patient raises SplitViolation before any file is opened). Each CT and label map is resampled
once onto the 4 mm working grid of ``openkbp_grid.py`` (64 x 72 in-plane, the whole scan along z).

Recipe (README.md): one thread; batch 1; each step a random 48-slice (192 mm) z-crop around a random
contoured slice, random left-right flip (parotid labels swapped), +-5 % intensity jitter; the hybrid
Dice + 0.5 x focal loss of model.py, masked for organs not contoured in that patient (and for the
background when any organ is missing), organ weights proportional to 1 / (number of train patients
with that organ contoured), normalised to mean 1; Adam lr 2e-3 with a cosine decay to 2 % over a fixed
CPU-time budget (capped in wall time). Weights: ``weights/han-oar-openkbp/anatomynet.pt`` (fp16) and ``anatomynet.onnx``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "_shared"))  # refio.py, openkbp_split.py

import torch  # noqa: E402

import openkbp_grid as grid  # noqa: E402
import openkbp_split as split  # noqa: E402
from model import AnatomyNet, count_parameters, hybrid_loss, load  # noqa: E402, F401 (load: the tests use it)
from model import export as model_export  # noqa: E402

N_CLASSES = 1 + len(split.ORGANS)
OUT_DIR = os.path.join(HERE, "weights", "han-oar-openkbp")
CROP_Z = 48
SWAP_LR = (0, 1, 2, 4, 3, 5, 6, 7)  # label map under a left-right flip: RightParotid <-> LeftParotid


def default_data_root() -> str:
    from arena.tasks.store import shared_data_root

    return str(shared_data_root())


def load_train_set(data_root: str, patients: list[str] | None = None, say=print):
    """Train patients on the working grid: lists of (z, y, x) float16 inputs, uint8 labels, and an
    (N, 8) float32 matrix of contoured classes (column 0 = 1; hybrid_loss masks the background itself)."""
    cases = split.load_cases(data_root)
    patients = patients or split.split_patients(cases, split.TRAIN_SPLIT)
    xs, ys, present = [], [], []
    for p in patients:
        ct, lab, entry = split.read_train_case(data_root, p, cases)
        ref = grid.reference_grid(ct)
        xs.append(grid.ct_on_grid(ct, ref).astype(np.float16))
        ys.append(grid.labels_on_grid(lab, ref))
        row = np.zeros(N_CLASSES, np.float32)
        row[0] = 1.0
        row[split.present_ids(entry)] = 1.0
        present.append(row)
    say(f"data: {len(xs)} OpenKBP train patients on the 4 mm grid (z sizes {min(x.shape[0] for x in xs)}-"
        f"{max(x.shape[0] for x in xs)}, in-plane {xs[0].shape[1:]})")
    return xs, ys, np.stack(present)


def organ_weights(present: np.ndarray) -> np.ndarray:
    """Per class: 1 for the background, organs proportional to 1 / (patients with the organ contoured),
    normalised to a mean of 1 over the organs."""
    counts = present[:, 1:].sum(axis=0).clip(min=1)
    w = 1.0 / counts
    return np.concatenate([[1.0], w / w.mean()]).astype(np.float32)


def sample(x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """One augmented training crop: (1, 1, CROP_Z, H, W) float32 and (1, CROP_Z, H, W) int64."""
    nz = x.shape[0]
    fg = np.flatnonzero(y.reshape(nz, -1).any(axis=1))
    centre = int(rng.choice(fg)) if len(fg) else nz // 2
    z0 = int(np.clip(centre - CROP_Z // 2 + rng.integers(-8, 9), 0, max(0, nz - CROP_Z)))
    xc = np.full((CROP_Z,) + x.shape[1:], x.min(), np.float32)
    yc = np.zeros((CROP_Z,) + y.shape[1:], np.int64)
    n = min(CROP_Z, nz - z0)
    xc[:n], yc[:n] = x[z0:z0 + n], y[z0:z0 + n]
    if rng.random() < 0.5:  # left-right flip, the parotids swap names
        xc, yc = xc[:, :, ::-1], np.asarray(SWAP_LR)[yc[:, :, ::-1]]
    xc = xc * (1 + 0.05 * rng.standard_normal()) + 0.05 * rng.standard_normal()
    return (torch.from_numpy(np.ascontiguousarray(xc))[None, None],
            torch.from_numpy(np.ascontiguousarray(yc))[None])


def train(args) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    log = open(os.path.join(args.out, "anatomynet_train_log.txt"), "w")

    def say(msg: str) -> None:
        line = f"[{time.time() - t0:7.1f}s] {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    say(f"machine: {os.cpu_count()}-core CPU, no GPU; torch {torch.__version__}, 1 thread")
    xs, ys, present = load_train_set(args.data, None, say)
    weights = organ_weights(present)
    say("organ weights (1 / contoured count, mean 1): " + json.dumps(
        {name: round(float(w), 3) for name, w in zip(("background",) + split.ORGANS, weights)}))
    model = AnatomyNet(N_CLASSES)
    say(f"AnatomyNet: {count_parameters(model)} parameters ({N_CLASSES} classes)")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    wt = torch.from_numpy(weights)
    budget, wall_cap = args.minutes * 60.0, args.max_wall_minutes * 60.0
    start, cpu0 = time.time(), time.process_time()
    step, losses = 0, []
    # the budget is this process's CPU time (one thread): on a shared machine wall time says little
    while time.process_time() - cpu0 < budget and time.time() - start < wall_cap:
        frac = max((time.process_time() - cpu0) / budget, (time.time() - start) / wall_cap)
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        i = int(rng.integers(len(xs)))
        x, y = sample(xs[i].astype(np.float32), ys[i], rng)
        loss = hybrid_loss(model.logits(x), y, present=torch.from_numpy(present[i:i + 1]), weights=wt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 25 == 0:
            say(f"step {step} loss {np.mean(losses[-25:]):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"cpu {(time.process_time() - cpu0) / 60:.1f} min")
    say(f"final: {step} steps ({step / len(xs):.2f} epochs) in {(time.process_time() - cpu0) / 60:.1f} min CPU, "
        f"{(time.time() - start) / 60:.1f} min wall; last-50 loss {np.mean(losses[-50:]):.4f}")
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "n_classes": N_CLASSES, "steps": step, "organs": list(split.ORGANS)},
               os.path.join(args.out, "anatomynet.pt"))
    say("saved anatomynet.pt (fp16 state dict)")
    export(os.path.join(args.out, "anatomynet.pt"), os.path.join(args.out, "anatomynet.onnx"))
    say("exported anatomynet.onnx")


def export(pt_path: str, onnx_path: str) -> None:
    model_export(pt_path, onnx_path, (80, grid.SIZE_Y, grid.SIZE_X))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--minutes", type=float, default=24.0, help="CPU-time budget of the optimisation loop")
    t.add_argument("--max-wall-minutes", type=float, default=50.0, help="and its wall-time cap")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--data", default=None, help="shared data folder (default: arena's ARENA_SHARED_DATA)")
    t.add_argument("--out", default=OUT_DIR)
    e = sub.add_parser("export")
    e.add_argument("pt", nargs="?", default=os.path.join(OUT_DIR, "anatomynet.pt"))
    e.add_argument("onnx", nargs="?", default=os.path.join(OUT_DIR, "anatomynet.onnx"))
    args = ap.parse_args()
    if args.cmd == "train":
        args.data = args.data or default_data_root()
        train(args)
    else:
        export(args.pt, args.onnx)


if __name__ == "__main__":
    main()
