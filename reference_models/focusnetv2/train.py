#!/usr/bin/env python3
"""Train FocusNetv2 on han-oar-22 phantoms (training split: seeds 0..N-1) and export it.

    python train.py snet --minutes 6 --out weights/        # S-Net + SOL-Net (+ adversarial shape AE)
    python train.py sos --minutes 6 --out weights/         # the SOS-Net branches on small-organ ROIs
    python train.py export weights/ weights/               # -> snet.onnx, sos.onnx

S-Net is trained on whole canonical volumes (80 x 136 x 136 at 2 x 2 x 3 mm) with the hybrid
Dice + focal loss (as AnatomyNet, FocusNetv2's baseline), SOL-Net jointly with a weighted L2 loss on
Gaussian centre heat maps (sigma 1.5 half-resolution voxels), and, after the first 30 % of the
budget, the adversarial shape constraint of the paper: a shape autoencoder trained on ground-truth
label maps, whose latent code of the prediction must match that of the ground truth (L2), plus a
discriminator on the latent codes that the prediction must fool. The SOS-Net branches are trained
separately on 8 x 64 x 64 ROIs at 1 x 1 x 2.5 mm around each small organ's centre, jittered by the
localisation error expected from SOL-Net, with Dice + BCE.
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
sys.path.append(os.path.join(HERE, "..", "anatomynet"))  # phantom_data.py: the training data

import importlib.util  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import phantom_data as pdata  # noqa: E402
import refio  # noqa: E402
from model import ROI_SIZE_XYZ, ROI_SPACING_XYZ, SMALL_ORGANS, SNet, SOSNet, count_parameters  # noqa: E402

_spec = importlib.util.spec_from_file_location("anatomynet_model", os.path.join(HERE, "..", "anatomynet", "model.py"))
_anatomynet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_anatomynet)
hybrid_loss = _anatomynet.hybrid_loss  # the same masked, weighted Dice + focal loss as AnatomyNet


AE_GRID = (16, 32, 32)


class ShapeAutoencoder(nn.Module):
    """The adversarial shape constraint (training only): an autoencoder of label maps (class
    probabilities, average-pooled to 16 x 32 x 32) and a discriminator on its latent codes."""

    def __init__(self, n_classes: int, latent: int = 32):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv3d(n_classes, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv3d(32, latent, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.dec = nn.Sequential(nn.ConvTranspose3d(latent, 32, 2, stride=2), nn.LeakyReLU(0.2),
                                 nn.ConvTranspose3d(32, n_classes, 2, stride=2))
        self.disc = nn.Sequential(nn.Conv3d(latent, 16, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, 1))

    @staticmethod
    def squash(p: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool3d(p, AE_GRID)

    def encode(self, p: torch.Tensor) -> torch.Tensor:
        return self.enc(self.squash(p))


def heatmap_targets(centres: torch.Tensor, shape, sigma: float = 1.5) -> torch.Tensor:
    """(N, K, 3) half-resolution voxel centres (NaN = absent) -> (N, K, D, H, W) Gaussians."""
    d, h, w = shape
    dev = centres.device
    zz = torch.arange(d, device=dev, dtype=torch.float32)[:, None, None]
    yy = torch.arange(h, device=dev, dtype=torch.float32)[None, :, None]
    xx = torch.arange(w, device=dev, dtype=torch.float32)[None, None, :]
    c = torch.nan_to_num(centres, nan=-1e4)
    r2 = ((zz - c[..., 0, None, None, None]) ** 2 + (yy - c[..., 1, None, None, None]) ** 2
          + (xx - c[..., 2, None, None, None]) ** 2)
    return torch.exp(-r2 / (2 * sigma * sigma))


def _say_factory(path):
    t0 = time.time()
    log = open(path, "a")

    def say(msg):
        line = f"[{time.time() - t0:7.1f}s] {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()
    return say


def validate_snet(model, device, seeds, size="small"):
    model.eval()
    scores, loc_err = [], []
    with torch.no_grad():
        for s in seeds:
            x, ref, case = pdata.validation_case(s, size)
            xt = torch.from_numpy(x)[None, None].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                seg, heat = model.logits(xt)
            lab = seg.argmax(1)[0].cpu().numpy().astype(np.uint8)
            scores.append(pdata.dice_per_label(refio.from_canonical_np(lab, case.shape, case.spacing, case.origin), ref))
            centres = decode_heatmaps(torch.sigmoid(heat.float())[0].cpu().numpy())
            gt = pdata.organ_centres_canonical(pdata.canonical_labels(s), SMALL_ORGANS)
            err = np.linalg.norm((centres - gt) * np.array(refio.CANON_SPACING_XYZ[::-1]), axis=1)
            loc_err.append(err)
    model.train()
    per = {lab: float(np.mean([sc.get(lab, 0.0) for sc in scores])) for lab in range(1, pdata.N_CLASSES)}
    return float(np.mean(list(per.values()))), per, float(np.nanmean(loc_err))


def decode_heatmaps(heat: np.ndarray) -> np.ndarray:
    """(K, d, h, w) half-resolution heat maps -> (K, 3) canonical voxel coordinates (z, y, x)."""
    out = np.zeros((heat.shape[0], 3), np.float32)
    for k in range(heat.shape[0]):
        z, y, x = np.unravel_index(int(np.argmax(heat[k])), heat[k].shape)
        sl = tuple(slice(max(0, v - 1), v + 2) for v in (z, y, x))
        patch = heat[k][sl]
        grids = np.meshgrid(*[np.arange(s.start, s.start + n) for s, n in zip(sl, patch.shape)], indexing="ij")
        wsum = patch.sum() + 1e-8
        out[k] = [float((g * patch).sum() / wsum) * 2.0 for g in grids]
    return out


def train_snet(args) -> None:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(1)
    say = _say_factory(os.path.join(args.out, f"focusnetv2_snet{args.tag}_train_log.txt"))
    t0 = time.time()
    X, Y = pdata.make_dataset(range(args.cases), processes=args.processes)
    C = np.stack([pdata.organ_centres_canonical(y, SMALL_ORGANS) for y in Y]) / 2.0  # half resolution
    say(f"data: {len(X)} training phantoms in {time.time() - t0:.0f} s")
    Xt, Yt, Ct = (torch.from_numpy(a).to(device) for a in (X, Y, C))
    model = SNet(pdata.N_CLASSES).to(device)
    shape = ShapeAutoencoder(pdata.N_CLASSES).to(device)
    say(f"S-Net {model.snet_parameters()} parameters + SOL-Net head {count_parameters(model) - model.snet_parameters()}; "
        f"shape AE (training only) {count_parameters(shape)}; device {device}")
    if args.optimizer == "rmsprop":  # AnatomyNet's (the paper's baseline) optimizer
        opt = torch.optim.RMSprop(model.parameters(), lr=args.lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    opt_ae = torch.optim.Adam(list(shape.enc.parameters()) + list(shape.dec.parameters()), lr=1e-3)
    opt_d = torch.optim.Adam(shape.disc.parameters(), lr=1e-4)
    weights = torch.ones(pdata.N_CLASSES, device=device)
    weights[list(SMALL_ORGANS)] = 2.0
    budget, start = args.minutes * 60.0, time.time()
    step, hist = 0, []
    rng = np.random.default_rng(1)
    next_val = args.val_every
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        idx = torch.from_numpy(rng.choice(len(X), args.batch, replace=False)).to(device)
        x, y, c = Xt[idx].float()[:, None], Yt[idx], Ct[idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            seg, heat = model.logits(x)
        seg, heat = seg.float(), heat.float()
        loss_seg = hybrid_loss(seg, y, weights=weights)
        target = heatmap_targets(c, heat.shape[2:])
        present = (~torch.isnan(c[..., 0])).float()[..., None, None, None]
        loss_sol = ((torch.sigmoid(heat) - target) ** 2 * (1 + 50 * target) * present).mean() * 10
        loss = loss_seg + args.sol_weight * loss_sol
        onehot = F.one_hot(y.long(), pdata.N_CLASSES).movedim(-1, 1).float()
        # shape autoencoder: learn ground-truth shapes every step
        z_gt = shape.encode(onehot)
        loss_ae = F.cross_entropy(shape.dec(z_gt), F.adaptive_max_pool3d(onehot, AE_GRID).argmax(1))
        opt_ae.zero_grad(set_to_none=True)
        loss_ae.backward()
        opt_ae.step()
        loss_shape = torch.zeros((), device=device)
        z_pred = None
        if args.shape and frac > 0.3:
            z_pred = shape.encode(torch.softmax(seg, 1))
            with torch.no_grad():
                z_ref = shape.encode(onehot)
            adv = F.binary_cross_entropy_with_logits(shape.disc(z_pred), torch.ones(len(z_pred), 1, device=device))
            loss_shape = F.mse_loss(z_pred, z_ref) + 0.01 * adv
            loss = loss + args.shape_weight * loss_shape
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if z_pred is not None:  # discriminator: ground-truth codes are real, predicted ones fake
            d_loss = (F.binary_cross_entropy_with_logits(shape.disc(z_ref), torch.ones(len(z_ref), 1, device=device))
                      + F.binary_cross_entropy_with_logits(shape.disc(z_pred.detach()),
                                                           torch.zeros(len(z_pred), 1, device=device)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        hist.append((loss_seg.item(), loss_sol.item(), loss_ae.item(), loss_shape.item()))
        step += 1
        if step % 50 == 0:
            m = np.mean(hist[-50:], axis=0)
            say(f"step {step} seg {m[0]:.4f} sol {m[1]:.4f} shape-ae {m[2]:.4f} shape {m[3]:.4f}")
        if time.time() - start > next_val * 60:
            next_val += args.val_every
            mean, _, err = validate_snet(model, device, range(1000, 1000 + args.val_cases))
            say(f"step {step} validation S-Net mean Dice {mean:.3f}; SOL-Net centre error {err:.1f} mm")
    mean, per, err = validate_snet(model, device, range(1000, 1000 + args.val_cases))
    say(f"final: {step} steps; S-Net alone: validation mean Dice {mean:.3f} over 22 organs on "
        f"{args.val_cases} 'small' cases; SOL-Net mean centre error {err:.1f} mm")
    say("per organ (S-Net): " + json.dumps({str(k): round(v, 3) for k, v in per.items()}))
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "n_classes": pdata.N_CLASSES, "steps": step, "val_mean_dice": mean,
                "val_dice": per, "sol_error_mm": err, "shape_constraint": bool(args.shape)},
               os.path.join(args.out, f"snet{args.tag}.pt"))
    say(f"saved snet{args.tag}.pt (fp16 state dict)")


# ------------------------------------------------------------------ SOS-Net data and training


def sample_grid(arr, spacing, origin, centre, size_xyz=ROI_SIZE_XYZ, spacing_xyz=ROI_SPACING_XYZ, order=1,
                cval=-1024.0):
    """Resample a (z, y, x) array of an axis-aligned grid onto the ROI grid centred on ``centre`` (x, y, z mm)."""
    from scipy import ndimage

    axes = []
    for a in range(3):
        phys = centre[a] - 0.5 * (size_xyz[a] - 1) * spacing_xyz[a] + np.arange(size_xyz[a]) * spacing_xyz[a]
        axes.append((phys - origin[a]) / spacing[a])
    grid = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return ndimage.map_coordinates(arr.astype(np.float32), grid, order=order, mode="constant", cval=cval)


def _sos_job(args):
    seed, source, n_jitter = args
    ph = pdata._phantom()
    fine = ph.generate_case_arrays(seed, pdata.FINE_PHANTOM)
    src = fine if source == "fine" else ph.generate_case_arrays(seed, source)
    rng = np.random.default_rng(seed + 7)
    xs, ys, ks = [], [], []
    for k, lab in enumerate(SMALL_ORGANS):
        idx = np.argwhere(fine.labels == lab)
        if not len(idx):
            continue
        c = np.asarray(fine.origin) + idx.mean(0)[::-1] * np.asarray(fine.spacing)  # x, y, z mm
        mask = (fine.labels == lab).astype(np.float32)
        for j in range(n_jitter):
            cj = c + (rng.normal(0, [3.0, 3.0, 2.0]) if j else 0.0)
            xs.append(refio.normalize(sample_grid(src.ct, src.spacing, src.origin, cj)).astype(np.float16))
            ys.append(sample_grid(mask, fine.spacing, fine.origin, cj, cval=0.0) > 0.5)
            ks.append(k)
    return xs, ys, ks


def train_sos(args) -> None:
    import multiprocessing as mp

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(2)
    say = _say_factory(os.path.join(args.out, "focusnetv2_sos_train_log.txt"))
    t0 = time.time()
    jobs = [(s, ("fine", "small", "medium")[s % 3], args.jitter) for s in range(args.cases)]
    if args.processes > 1:
        with mp.get_context("fork").Pool(args.processes) as pool:
            out = pool.map(_sos_job, jobs, chunksize=2)
    else:
        out = [_sos_job(j) for j in jobs]
    X = np.stack([x for o in out for x in o[0]])
    Y = np.stack([y for o in out for y in o[1]])
    K = np.array([k for o in out for k in o[2]])
    say(f"data: {len(X)} ROIs of {X.shape[1:]} voxels from {args.cases} phantoms in {time.time() - t0:.0f} s")
    model = SOSNet().to(device)
    say(f"SOS-Net: {len(model.branches)} branches, {count_parameters(model)} parameters; device {device}")
    Xt, Yt = torch.from_numpy(X).to(device), torch.from_numpy(Y).to(device)
    by_k = [np.flatnonzero(K == k) for k in range(len(SMALL_ORGANS))]
    val = np.random.default_rng(3)
    held = [set(val.choice(ix, max(1, len(ix) // 10), replace=False).tolist()) for ix in by_k]
    train_k = [np.array([i for i in ix if i not in h]) for ix, h in zip(by_k, held)]
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    budget, start, step, hist = args.minutes * 60.0, time.time(), 0, []
    rng = np.random.default_rng(2)
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        total = 0.0
        opt.zero_grad(set_to_none=True)
        for k, branch in enumerate(model.branches):
            idx = torch.from_numpy(rng.choice(train_k[k], args.batch)).to(device)
            x, y = Xt[idx].float()[:, None], Yt[idx].float()[:, None]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logit = branch(x)
            logit = logit.float()
            p = torch.sigmoid(logit)
            dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            loss = dice + F.binary_cross_entropy_with_logits(logit, y)
            loss.backward()
            total += loss.item()
        opt.step()
        hist.append(total / len(model.branches))
        step += 1
        if step % 100 == 0:
            say(f"step {step} loss {np.mean(hist[-100:]):.4f}")
    model.eval()
    dices = {}
    with torch.no_grad():
        for k, branch in enumerate(model.branches):
            ix = torch.from_numpy(np.array(sorted(held[k]))).to(device)
            p = torch.sigmoid(branch(Xt[ix].float()[:, None]).float()) > 0.5
            y = Yt[ix][:, None]
            dices[SMALL_ORGANS[k]] = float((2 * (p & y).sum() / (p.sum() + y.sum()).clamp_min(1)).item())
    say(f"final: {step} steps; held-out ROI Dice (1 x 1 x 2.5 mm, jittered centres) mean "
        f"{np.mean(list(dices.values())):.3f}: " + json.dumps({str(k): round(v, 3) for k, v in dices.items()}))
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "steps": step, "roi_dice": dices}, os.path.join(args.out, "sos.pt"))
    say("saved sos.pt (fp16 state dict)")


# ------------------------------------------------------------------ export


def _load(path, model):
    ck = torch.load(path, map_location="cpu")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()})
    return model.eval()


def load_snet(path):
    return _load(path, SNet(pdata.N_CLASSES))


def load_sos(path):
    return _load(path, SOSNet())


def export(src: str, dst: str) -> None:
    snet = load_snet(os.path.join(src, "snet.pt"))
    x = torch.zeros(1, 1, *refio.CANON_SIZE_XYZ[::-1])
    torch.onnx.export(snet, (x,), os.path.join(dst, "snet.onnx"), input_names=["ct"],
                      output_names=["probabilities", "heatmaps"],
                      dynamic_axes={"ct": {0: "n", 2: "z", 3: "y", 4: "x"},
                                    "probabilities": {0: "n", 2: "z", 3: "y", 4: "x"},
                                    "heatmaps": {0: "n", 2: "hz", 3: "hy", 4: "hx"}},
                      opset_version=17, dynamo=False)
    sos = load_sos(os.path.join(src, "sos.pt"))
    r = torch.zeros(len(SMALL_ORGANS), 1, *ROI_SIZE_XYZ[::-1])
    torch.onnx.export(sos, (r,), os.path.join(dst, "sos.onnx"), input_names=["rois"], output_names=["foreground"],
                      opset_version=17, dynamo=False)
    for f in ("snet.onnx", "sos.onnx"):
        print(f"wrote {f} ({os.path.getsize(os.path.join(dst, f)) / 1e6:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, minutes, lr, batch in (("snet", 6.0, 2e-3, 2), ("sos", 6.0, 1e-3, 16)):
        t = sub.add_parser(name)
        t.add_argument("--minutes", type=float, default=minutes)
        t.add_argument("--cases", type=int, default=240)
        t.add_argument("--batch", type=int, default=batch)
        t.add_argument("--lr", type=float, default=lr)
        t.add_argument("--processes", type=int, default=5)
        t.add_argument("--device")
        t.add_argument("--out", default=os.path.join(HERE, "weights"))
        if name == "snet":
            t.add_argument("--val-every", type=float, default=1.5)
            t.add_argument("--val-cases", type=int, default=6)
            t.add_argument("--shape", type=int, default=1, help="adversarial shape constraint on (1) / off (0)")
            t.add_argument("--shape-weight", type=float, default=0.1)
            t.add_argument("--sol-weight", type=float, default=1.0)
            t.add_argument("--optimizer", choices=("rmsprop", "adam"), default="rmsprop")
            t.add_argument("--tag", default="", help="suffix of the output files")
        else:
            t.add_argument("--jitter", type=int, default=4, help="ROIs per organ and case (1 centred + jittered)")
    e = sub.add_parser("export")
    e.add_argument("src")
    e.add_argument("dst")
    args = ap.parse_args()
    if args.cmd == "export":
        export(args.src, args.dst)
        return
    os.makedirs(args.out, exist_ok=True)
    (train_snet if args.cmd == "snet" else train_sos)(args)


if __name__ == "__main__":
    main()
