#!/usr/bin/env python3
"""Train AnatomyNet on han-oar-22 phantoms (training split: seeds 0..N-1) and export it.

    python reference_models/anatomynet/train.py train --minutes 6 --cases 240 --out weights/
    python reference_models/anatomynet/train.py export weights/anatomynet.pt weights/anatomynet.onnx

Recipe (README.md): whole canonical volumes (80 x 136 x 136 at 2 x 2 x 3 mm), batch 2, hybrid
masked/weighted Dice + focal loss, RMSprop lr 5e-4 (the paper's optimizer), then a cosine decay;
bf16 autocast on a GPU. Validation: Dice per organ on the demo-like "small" cases (seeds 1000+),
after resampling back to the case's own grid, as the platform scores it.
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
sys.path.insert(1, os.path.join(HERE, "..", "_shared"))  # refio.py

import torch  # noqa: E402

import phantom_data as pdata  # noqa: E402
import refio  # noqa: E402
from model import AnatomyNet, count_parameters, hybrid_loss, load  # noqa: E402, F401 (load: the tests use it)
from model import export as model_export  # noqa: E402

SMALL = (4, 5, 6, 7, 8, 11, 14, 15, 16, 17)


def class_weights(n_classes: int = pdata.N_CLASSES) -> torch.Tensor:
    w = torch.ones(n_classes)
    w[list(SMALL)] = 2.0
    return w


def validate(model, device, seeds, size="small"):
    model.eval()
    scores = []
    with torch.no_grad():
        for s in seeds:
            x, ref, case = pdata.validation_case(s, size)
            xt = torch.from_numpy(x)[None, None].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                lab = model.logits(xt).argmax(1)[0].cpu().numpy().astype(np.uint8)
            pred = refio.from_canonical_np(lab, case.shape, case.spacing, case.origin)
            scores.append(pdata.dice_per_label(pred, ref))
    model.train()
    per = {lab: float(np.mean([s.get(lab, 0.0) for s in scores])) for lab in range(1, pdata.N_CLASSES)}
    return float(np.mean(list(per.values()))), per


def train(args) -> None:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    t0 = time.time()
    log = open(os.path.join(args.out, "anatomynet_train_log.txt"), "a")

    def say(msg):
        line = f"[{time.time() - t0:7.1f}s] {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    X, Y = pdata.make_dataset(range(args.cases), processes=args.processes)
    say(f"data: {len(X)} training phantoms (seeds 0..{args.cases - 1}, CT from {pdata.SOURCES}), "
        f"{X.shape[1:]} voxels, in {time.time() - t0:.0f} s")
    Xt = torch.from_numpy(X).to(device)
    Yt = torch.from_numpy(Y).to(device)
    model = AnatomyNet(pdata.N_CLASSES).to(device)
    say(f"AnatomyNet: {count_parameters(model)} parameters ({pdata.N_CLASSES} classes); device {device}")
    opt = torch.optim.RMSprop(model.parameters(), lr=args.lr)
    weights = class_weights().to(device)
    budget = args.minutes * 60.0
    start = time.time()
    step, losses = 0, []
    rng = np.random.default_rng(0)
    next_val = args.val_every
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        idx = torch.from_numpy(rng.choice(len(X), args.batch, replace=False)).to(device)
        x = Xt[idx].float()[:, None]
        y = Yt[idx]
        if rng.random() < 0.5:  # intensity jitter
            x = x * (1 + 0.05 * torch.randn(1, device=device)) + 0.05 * torch.randn(1, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model.logits(x)
        loss = hybrid_loss(logits, y, weights=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            say(f"step {step} loss {np.mean(losses[-50:]):.4f} lr {opt.param_groups[0]['lr']:.2e}")
        if time.time() - start > next_val * 60:
            next_val += args.val_every
            mean, _ = validate(model, device, range(1000, 1000 + args.val_cases))
            say(f"step {step} validation mean Dice {mean:.3f} (small grid, seeds 1000..)")
    mean, per = validate(model, device, range(1000, 1000 + args.val_cases))
    say(f"final: {step} steps, validation mean Dice {mean:.3f} over 22 organs on {args.val_cases} 'small' "
        f"cases (seeds 1000..{999 + args.val_cases})")
    say("per organ: " + json.dumps({str(k): round(v, 3) for k, v in per.items()}))
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "n_classes": pdata.N_CLASSES, "steps": step,
                "val_mean_dice": mean, "val_dice": per}, os.path.join(args.out, "anatomynet.pt"))
    say("saved anatomynet.pt (fp16 state dict)")


def export(pt_path: str, onnx_path: str) -> None:
    model_export(pt_path, onnx_path, refio.CANON_SIZE_XYZ[::-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--minutes", type=float, default=6.0)
    t.add_argument("--cases", type=int, default=240)
    t.add_argument("--batch", type=int, default=2)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--val-every", type=float, default=1.5, help="minutes")
    t.add_argument("--val-cases", type=int, default=6)
    t.add_argument("--processes", type=int, default=6)
    t.add_argument("--device")
    t.add_argument("--out", default=os.path.join(HERE, "weights"))
    e = sub.add_parser("export")
    e.add_argument("pt")
    e.add_argument("onnx")
    args = ap.parse_args()
    if args.cmd == "train":
        os.makedirs(args.out, exist_ok=True)
        train(args)
    else:
        export(args.pt, args.onnx)


if __name__ == "__main__":
    main()
