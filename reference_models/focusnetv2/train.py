#!/usr/bin/env python3
"""Train FocusNetv2 on han-oar-22 phantoms in the paper's stages, export it to ONNX, and score it.

    nice -n 10 python train.py all --cases 40 --minutes 20 2 6 3   # S-Net, SOL-Net, SOS-Net, joint
    python train.py export                                         # weights/*.pt -> weights/*.onnx
    python train.py evaluate --seeds 1000-1005                     # held-out phantoms, arena.metrics

Stages (each starts from the previous one's weights; all with Adam and a cosine learning-rate decay):

1. **S-Net** on crops of 32 x 48 x 48 canonical voxels (2 x 2 x 3 mm) centred on a random organ voxel;
   loss = weighted focal + generalized Dice on S-Net's own grid (4 x 4 x 6 mm) against the
   average-pooled one-hot labels (soft targets).
2. **SOL-Net** with S-Net frozen, on cached S-Net features of each training case (one crop around the
   small organs, one elsewhere): weighted L2 between sigmoid heat maps and Gaussians on the centres.
3. **SOS-Net** with S-Net frozen: ROIs of 8 x 48 x 48 at 1 x 1 x 2.5 mm around each small organ's
   centre (jittered by SOL-Net's expected error), input = ROI-pooled S-Net features + the CT ROI;
   loss = binary focal + generalized Dice + λ1 x shape loss (eq. 5, 8); the shape autoencoder is
   trained alongside on ground truth and predictions with the latent distance maximised (eq. 4),
   after a short warm-up on ground-truth masks alone.
4. **Joint fine-tuning** of S-Net, SOL-Net and SOS-Net together (all three losses), ROIs pooled from
   the features of the S-Net crop being trained, learning rate a tenth of stage 1's.

CPU only here: ``torch.set_num_threads(1)``; every stage stops at its time budget (minutes).
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

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import infer  # noqa: E402
import phantom_data as pdata  # noqa: E402
import refio  # noqa: E402
from model import (LAMBDA_SHAPE, ROI_SIZE_XYZ, ROI_SPACING_XYZ, SMALL_ORGANS, SNet, SNetExport, SOSNet,  # noqa: E402
                   ShapeAE,
                   binary_focal_gdl_loss, count_parameters, focal_gdl_loss, heatmap_targets, roi_pool,
                   shape_ae_loss, shape_loss)

WEIGHTS = os.path.join(HERE, "weights")
CROP = (32, 48, 48)  # canonical voxels (z, y, x) of an S-Net training crop; even, so pooling aligns
POOL = 2  # S-Net's input pooling (model.SNet.input_pool)
CANON_ORIGIN_XYZ = -np.asarray(refio.CANON_OFFSET_XYZ)  # the phantoms are centred on (0, 0, 0) mm
JITTER_MM_XYZ = (3.0, 3.0, 2.0)


# ------------------------------------------------------------------ helpers


class Logger:
    def __init__(self, path: str):
        self.t0 = time.time()
        self.f = open(path, "a")

    def __call__(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()


def cosine_lr(opt, base: float, frac: float) -> None:
    for g in opt.param_groups:
        g["lr"] = base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def class_weights(Y: np.ndarray) -> torch.Tensor:
    """Focal-loss α per class: (f_background / f_c)^(1/4), clipped to [1, 10] (our choice)."""
    f = np.bincount(Y.ravel(), minlength=pdata.N_CLASSES).astype(np.float64) + 1.0
    return torch.tensor(np.clip((f[0] / f) ** 0.25, 1.0, 10.0), dtype=torch.float32)


def soft_targets(y: torch.Tensor) -> torch.Tensor:
    """(N, z, y, x) canonical labels -> (N, C, z/2, y/2, x/2) class fractions on S-Net's grid."""
    return F.avg_pool3d(F.one_hot(y.long(), pdata.N_CLASSES).movedim(-1, 1).float(), POOL)


def crop_start(y: np.ndarray, rng, organs=None) -> tuple[int, int, int]:
    """Even start (z, y, x) of a CROP-sized box centred near a random voxel of a random present organ."""
    labs = [o for o in (organs or range(1, pdata.N_CLASSES)) if (y == o).any()]
    idx = np.argwhere(y == rng.choice(labs))
    c = idx[rng.integers(len(idx))] + rng.integers(-8, 9, 3)
    s = [int(np.clip(c[a] - CROP[a] // 2, 0, y.shape[a] - CROP[a])) // 2 * 2 for a in range(3)]
    return tuple(s)


def small_crop_start(y: np.ndarray, rng, jitter: int = 6) -> tuple[int, int, int]:
    """Even crop start centred (± jitter voxels) on the small organs' joint centre."""
    idx = np.argwhere(np.isin(y, SMALL_ORGANS))
    c = idx.mean(0).astype(int) + rng.integers(-jitter, jitter + 1, 3)
    return tuple(int(np.clip(c[a] - CROP[a] // 2, 0, y.shape[a] - CROP[a])) // 2 * 2 for a in range(3))


def reduced_centres(y: np.ndarray, start=(0, 0, 0)) -> np.ndarray:
    """(K, 3) small-organ centres in S-Net-grid voxels (z, y, x) of a (cropped) canonical label map."""
    c = pdata.organ_centres_canonical(y, SMALL_ORGANS) - np.asarray(start, np.float32)
    return (c - 0.5) / POOL


def crop_xy(X, Y, i: int, start) -> tuple[torch.Tensor, torch.Tensor]:
    """Case ``i``'s CROP at ``start`` (canonical z, y, x): CT (1, 1, *CROP) float32 and labels (1, *CROP)."""
    sl = tuple(slice(a, a + n) for a, n in zip(start, CROP))
    return torch.from_numpy(X[i][sl].astype(np.float32))[None, None], torch.from_numpy(Y[i][sl])[None]


def roi_points_canonical(centre_xyz_mm) -> np.ndarray:
    """(8, 48, 48, 3) canonical continuous indices (z, y, x) of the ROI voxels around ``centre`` (mm)."""
    axes = []
    for a in range(3):
        phys = centre_xyz_mm[a] + (np.arange(ROI_SIZE_XYZ[a]) - 0.5 * (ROI_SIZE_XYZ[a] - 1)) * ROI_SPACING_XYZ[a]
        axes.append((phys - CANON_ORIGIN_XYZ[a]) / refio.CANON_SPACING_XYZ[a])
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return np.stack([zz, yy, xx], -1).astype(np.float32)


def sample_grid(arr, spacing, origin, centre, order=1, cval=-1024.0):
    """Resample a (z, y, x) array of an axis-aligned grid onto the ROI grid centred on ``centre`` (x, y, z mm)."""
    from scipy import ndimage

    axes = []
    for a in range(3):
        phys = centre[a] + (np.arange(ROI_SIZE_XYZ[a]) - 0.5 * (ROI_SIZE_XYZ[a] - 1)) * ROI_SPACING_XYZ[a]
        axes.append((phys - origin[a]) / spacing[a])
    grid = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return ndimage.map_coordinates(arr.astype(np.float32), grid, order=order, mode="constant", cval=cval)


def sos_rois(seed: int, n_jitter: int, rng):
    """For one training seed: per small organ and jitter, (organ index, centre mm, CT ROI, mask ROI).
    The CT comes from the fine (1 x 1 x 2.5 mm), 'small' or 'medium' phantom grid in turn, the masks
    from the fine grid."""
    ph = pdata._phantom()
    fine = ph.generate_case_arrays(seed, pdata.FINE_PHANTOM)
    src_name = ("fine", "small", "medium")[seed % 3]
    src = fine if src_name == "fine" else ph.generate_case_arrays(seed, src_name)
    out = []
    for k, lab in enumerate(SMALL_ORGANS):
        idx = np.argwhere(fine.labels == lab)
        if not len(idx):
            continue
        c = np.asarray(fine.origin) + idx.mean(0)[::-1] * np.asarray(fine.spacing)  # x, y, z mm
        mask = (fine.labels == lab).astype(np.float32)
        for j in range(n_jitter):
            cj = c + (rng.normal(0, JITTER_MM_XYZ) if j else 0.0)
            ct = refio.normalize(sample_grid(src.ct, src.spacing, src.origin, cj)).astype(np.float16)
            m = sample_grid(mask, fine.spacing, fine.origin, cj, cval=0.0) > 0.5
            out.append((k, cj, ct, m))
    return out


# ------------------------------------------------------------------ the stages


def stage_snet(args, X, Y, say) -> SNet:
    model = SNet(pdata.N_CLASSES)
    say(f"stage 1 S-Net: {model.snet_parameters()} parameters (+ SOL-Net {count_parameters(model.sol)}); "
        f"{len(X)} cases, crops {CROP} canonical voxels, Adam lr {args.lr}, {args.minutes[0]} min")
    alpha = class_weights(Y)
    say("focal α per class: " + json.dumps([round(float(a), 2) for a in alpha]))
    prior = np.bincount(Y.ravel(), minlength=pdata.N_CLASSES) + 1.0
    with torch.no_grad():  # prior initialisation of the output layer (as for the focal loss, Lin et al. 2017)
        model.head.bias.copy_(torch.from_numpy(np.log(prior / prior.sum())).float())
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("sol.")], lr=args.lr)
    rng = np.random.default_rng(1)
    budget, start, step, hist = args.minutes[0] * 60, time.time(), 0, []
    model.train()
    while time.time() - start < budget:
        cosine_lr(opt, args.lr, (time.time() - start) / budget)
        i = int(rng.integers(len(X)))
        s = crop_start(Y[i], rng)
        x, y = crop_xy(X, Y, i, s)
        _, feat = model.features(x)
        loss = focal_gdl_loss(model.head(feat), soft_targets(y), alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        hist.append(loss.item())
        step += 1
        if step % 25 == 0:
            say(f"S-Net step {step} loss {np.mean(hist[-25:]):.4f}")
    say(f"stage 1 done: {step} steps in {time.time() - start:.0f} s")
    model.alpha = alpha
    return model


def stage_sol(args, model: SNet, X, Y, say) -> None:
    t0 = time.time()
    model.eval()
    rng = np.random.default_rng(2)
    F_, C_ = [], []
    with torch.no_grad():
        for i in range(min(args.sol_cases, len(X))):
            for s in (small_crop_start(Y[i], rng), crop_start(Y[i], rng)):
                xs, feat = model.features(crop_xy(X, Y, i, s)[0])
                F_.append(torch.cat([feat, xs], 1)[0].half())
                C_.append(torch.from_numpy(reduced_centres(Y[i], s)))
    say(f"stage 2 SOL-Net: cached S-Net features of {len(F_)} crops in {time.time() - t0:.0f} s; "
        f"Adam lr {args.lr}, {args.minutes[1]} min")
    opt = torch.optim.Adam(model.sol.parameters(), lr=args.lr)
    model.sol.train()
    budget, start, step, hist = args.minutes[1] * 60, time.time(), 0, []
    while time.time() - start < budget:
        cosine_lr(opt, args.lr, (time.time() - start) / budget)
        idx = rng.choice(len(F_), 4, replace=False)
        x = torch.stack([F_[j].float() for j in idx])
        c = torch.stack([C_[j] for j in idx])
        loss = sol_loss(model.sol(x), c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append(loss.item())
        step += 1
        if step % 50 == 0:
            say(f"SOL-Net step {step} loss {np.mean(hist[-50:]):.5f}")
    say(f"stage 2 done: {step} steps in {time.time() - start:.0f} s")


def sol_loss(heat: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Weighted L2 between sigmoid heat maps and Gaussians (σ 1.5 S-Net voxels) on the centres; voxels
    near a centre weigh 51x; absent organs' maps are pushed to zero."""
    target = heatmap_targets(centres, heat.shape[2:])
    return ((torch.sigmoid(heat) - target) ** 2 * (1 + 50 * target)).mean() * 10


def stage_sos(args, model: SNet, X, Y, say):
    t0 = time.time()
    model.eval()
    rng = np.random.default_rng(3)
    feats, ks, cts, ms, cases, centres = [], [], [], [], [], []
    n_cases = min(args.sos_cases, len(X))
    with torch.no_grad():
        for i in range(n_cases):
            s = small_crop_start(Y[i], rng, jitter=0)
            _, feat = model.features(crop_xy(X, Y, i, s)[0])
            for k, centre, ct, m in sos_rois(i, args.jitter, rng):
                pts = torch.from_numpy((roi_points_canonical(centre) - np.asarray(s, np.float32) - 0.5) / POOL)
                feats.append(roi_pool(feat[0], pts).half())
                ks.append(k)
                cts.append(torch.from_numpy(ct))
                ms.append(torch.from_numpy(m))
                cases.append(i)
                centres.append(centre)
    ks = np.array(ks)
    say(f"stage 3 SOS-Net: {len(ks)} ROIs from {n_cases} cases ({args.jitter} per organ and case) in "
        f"{time.time() - t0:.0f} s; Adam lr {args.lr}, {args.minutes[2]} min")
    sos, ae = SOSNet(), ShapeAE()
    fg = float(torch.stack(ms).float().mean())
    with torch.no_grad():  # prior initialisation: every ROI starts at its mean foreground fraction
        sos.head.bias.fill_(math.log(fg / (1 - fg)))
    say(f"SOS-Net {count_parameters(sos)} parameters; shape autoencoder {count_parameters(ae)} (training only)")
    opt = torch.optim.Adam(sos.parameters(), lr=args.lr)
    opt_ae = torch.optim.Adam(ae.parameters(), lr=1e-3)
    # warm-up: the autoencoder learns ground-truth shapes before it judges predictions
    for step in range(args.ae_warmup):
        idx = rng.choice(len(ks), 12)
        gt = torch.stack([ms[j] for j in idx]).float()[:, None]
        loss, _ = shape_ae_loss(ae, gt, gt)
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
    say(f"shape autoencoder warm-up: {args.ae_warmup} steps on ground-truth masks, loss {loss.item():.4f}")
    by_k = [np.flatnonzero(ks == k) for k in range(len(SMALL_ORGANS))]
    budget, start, step, hist = args.minutes[2] * 60, time.time(), 0, []
    sos.train()
    while time.time() - start < budget:
        cosine_lr(opt, args.lr, (time.time() - start) / budget)
        idx = np.array([rng.choice(b) for b in by_k if len(b)])
        x = torch.cat([torch.stack([feats[j] for j in idx]).float(),
                       torch.stack([cts[j] for j in idx]).float()[:, None]], 1)
        y = torch.stack([ms[j] for j in idx]).float()[:, None]
        organ = torch.from_numpy(ks[idx])
        l_seg, l_shape, l_ae, dist = sos_losses(sos, ae, opt_ae, x, y, organ)
        loss = l_seg + LAMBDA_SHAPE * l_shape
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append((l_seg.item(), l_shape.item(), l_ae, dist))
        step += 1
        if step % 25 == 0:
            m = np.mean(hist[-25:], axis=0)
            say(f"SOS-Net step {step} seg {m[0]:.4f} shape {m[1]:.4f} ae {m[2]:.4f} latent dist {m[3]:.3f}")
    say(f"stage 3 done: {step} steps in {time.time() - start:.0f} s")
    rois = {"organ": ks, "case": np.array(cases), "centre": centres, "ct": cts, "mask": ms}
    return sos, ae, rois


def sos_losses(sos, ae, opt_ae, x, y, organ):
    """SOS-Net's segmentation and shape losses for one batch, after one autoencoder step (eq. 4)."""
    logit = sos.logits(x, organ)
    pred = torch.sigmoid(logit)
    l_ae, dist = shape_ae_loss(ae, y, pred)
    opt_ae.zero_grad(set_to_none=True)
    l_ae.backward()
    opt_ae.step()
    l_shape = shape_loss(ae, y, pred)
    ae.zero_grad(set_to_none=True)
    return binary_focal_gdl_loss(logit, y), l_shape, l_ae.item(), dist.item()


def stage_joint(args, model: SNet, sos: SOSNet, ae: ShapeAE, rois: dict, X, Y, say) -> None:
    lr = args.lr / 10
    say(f"stage 4 joint fine-tuning: S-Net + SOL-Net + SOS-Net, Adam lr {lr}, {args.minutes[3]} min")
    model.train()
    sos.train()
    opt = torch.optim.Adam(list(model.parameters()) + list(sos.parameters()), lr=lr)
    opt_ae = torch.optim.Adam(ae.parameters(), lr=1e-3)
    rng = np.random.default_rng(4)
    budget, start, step, hist = args.minutes[3] * 60, time.time(), 0, []
    while time.time() - start < budget:
        cosine_lr(opt, lr, (time.time() - start) / budget)
        i = int(rng.integers(min(args.sos_cases, len(X))))
        s = small_crop_start(Y[i], rng)
        x, y = crop_xy(X, Y, i, s)
        xs, feat = model.features(x)
        l_seg = focal_gdl_loss(model.head(feat), soft_targets(y), model.alpha)
        l_sol = sol_loss(model.sol(torch.cat([feat, xs], 1)), torch.from_numpy(reduced_centres(Y[i], s))[None])
        mine = np.flatnonzero(rois["case"] == i)  # this case's ROIs from stage 3 (CT, masks, centres)
        pick = rng.choice(mine, min(6, len(mine)), replace=False)
        fr = []
        for j in pick:
            pts = (roi_points_canonical(rois["centre"][j]) - np.asarray(s, np.float32) - 0.5) / POOL
            fr.append(roi_pool(feat[0], torch.from_numpy(pts)))
        xr = torch.cat([torch.stack(fr), torch.stack([rois["ct"][j] for j in pick]).float()[:, None]], 1)
        yr = torch.stack([rois["mask"][j] for j in pick]).float()[:, None]
        organ = torch.from_numpy(rois["organ"][pick])
        l_sos, l_shape, l_ae, dist = sos_losses(sos, ae, opt_ae, xr, yr, organ)
        loss = l_seg + l_sol + l_sos + LAMBDA_SHAPE * l_shape
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(sos.parameters()), 5.0)
        opt.step()
        hist.append((l_seg.item(), l_sol.item(), l_sos.item(), l_shape.item()))
        step += 1
        if step % 10 == 0:
            m = np.mean(hist[-10:], axis=0)
            say(f"joint step {step} S-Net {m[0]:.4f} SOL {m[1]:.5f} SOS {m[2]:.4f} shape {m[3]:.4f}")
    say(f"stage 4 done: {step} steps in {time.time() - start:.0f} s")


def save(model: torch.nn.Module, path: str, **meta) -> None:
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, **meta}, path)


def train_all(args) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(1)
    os.makedirs(args.out, exist_ok=True)
    say = Logger(os.path.join(args.out, "focusnetv2_train_log.txt"))
    say(f"command: {' '.join(sys.argv)}; torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    t0 = time.time()
    X, Y = pdata.make_dataset(range(args.cases), processes=1)
    say(f"data: {len(X)} training phantoms (seeds 0-{args.cases - 1}) in {time.time() - t0:.0f} s")
    t_train = time.time()
    if args.snet:  # stages 1-2 done before: start from that S-Net + SOL-Net
        model = load_snet(args.snet).train()
        model.alpha = class_weights(Y)
        say(f"stages 1-2: S-Net + SOL-Net loaded from {args.snet}")
    else:
        model = stage_snet(args, X, Y, say)
        save(model, os.path.join(args.out, "snet.pt"), stage=1)
        stage_sol(args, model, X, Y, say)
        save(model, os.path.join(args.out, "snet.pt"), stage=2)
    sos, ae, rois = stage_sos(args, model, X, Y, say)
    save(sos, os.path.join(args.out, "sos.pt"), stage=3)
    if args.minutes[3] > 0:
        stage_joint(args, model, sos, ae, rois, X, Y, say)
    save(model, os.path.join(args.out, "snet.pt"), stage=4)
    save(sos, os.path.join(args.out, "sos.pt"), stage=4)
    say(f"all stages done: training wall time {(time.time() - t_train) / 60:.1f} min; saved snet.pt, sos.pt")


# ------------------------------------------------------------------ export and evaluation


def _load(path, model):
    ck = torch.load(path, map_location="cpu")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()})
    return model.eval()


def load_snet(path):
    return _load(path, SNet(pdata.N_CLASSES))


def load_sos(path):
    return _load(path, SOSNet())


def export(src: str = WEIGHTS, dst: str = WEIGHTS) -> None:
    snet = SNetExport(load_snet(os.path.join(src, "snet.pt"))).eval()
    x = torch.zeros(1, 1, *refio.CANON_SIZE_XYZ[::-1])
    torch.onnx.export(snet, (x,), os.path.join(dst, "snet.onnx"), input_names=["ct"],
                      output_names=["labels", "heatmaps", "features"],
                      dynamic_axes={"ct": {0: "n", 2: "z", 3: "y", 4: "x"},
                                    "labels": {0: "n", 1: "z", 2: "y", 3: "x"},
                                    "heatmaps": {0: "n", 2: "hz", 3: "hy", 4: "hx"},
                                    "features": {0: "n", 2: "hz", 3: "hy", 4: "hx"}},
                      opset_version=17, dynamo=False)
    sos = load_sos(os.path.join(src, "sos.pt"))
    r = torch.zeros(len(SMALL_ORGANS), sos.enc1.conv1.in_channels, *ROI_SIZE_XYZ[::-1])
    torch.onnx.export(sos, (r,), os.path.join(dst, "sos.onnx"), input_names=["rois"], output_names=["foreground"],
                      opset_version=17, dynamo=False)
    for f in ("snet.onnx", "sos.onnx"):
        print(f"wrote {f} ({os.path.getsize(os.path.join(dst, f)) / 1e6:.1f} MB)")


def evaluate(seeds, size: str, out: str, model: str = "focusnetv2") -> dict:
    """Run ``model``'s infer.segment (the container's code, ONNX Runtime, 1 thread; ``anatomynet`` for the
    comparison) on held-out phantoms and score Dice and HD95 (medpy convention, arena.metrics) per
    organ; writes ``out`` (JSON)."""
    import importlib.util

    import SimpleITK as sitk

    from arena.datasets.phantom import generate_case
    from arena.metrics.segmentation import score_segmentation

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mod = infer
    if model != "focusnetv2":
        spec = importlib.util.spec_from_file_location(f"{model}_infer", os.path.join(HERE, "..", model, "infer.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    sessions = mod.setup()
    per_case, times = [], []
    for seed in seeds:
        ct, lab = generate_case(seed, size)
        t = time.time()
        pred = mod.segment(ct, sessions)
        times.append(time.time() - t)
        scores = score_segmentation(sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(lab),
                                    ct.GetSpacing()[::-1], range(1, pdata.N_CLASSES), "medpy")
        per_case.append({str(k): {"dice": v["dice"], "hd95": v["hd95"]} for k, v in scores.items()})
        print(f"seed {seed}: {times[-1]:.1f} s, mean Dice "
              f"{np.mean([v['dice'] for v in scores.values() if v['dice'] is not None]):.3f}", flush=True)
    summary = {}
    for k in range(1, pdata.N_CLASSES):
        d = [c[str(k)]["dice"] for c in per_case if c[str(k)]["dice"] is not None]
        h = [c[str(k)]["hd95"] for c in per_case if c[str(k)]["hd95"] is not None]
        summary[str(k)] = {"dice": float(np.mean(d)) if d else None, "hd95": float(np.mean(h)) if h else None}
    res = {"model": model, "seeds": list(seeds), "size": size, "convention": "medpy", "seconds_per_case": times,
           "per_organ_mean": summary, "per_case": per_case}
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    return res


def _seeds(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("all", help="the four training stages")
    t.add_argument("--cases", type=int, default=40, help="training phantoms: seeds 0..N-1")
    t.add_argument("--sol-cases", type=int, default=24, help="of those, the ones SOL-Net's cached crops come from")
    t.add_argument("--sos-cases", type=int, default=24, help="of those, the ones SOS-Net's ROIs come from")
    t.add_argument("--minutes", type=float, nargs=4, default=[20.0, 2.0, 6.0, 3.0],
                   help="budgets of the stages S-Net, SOL-Net, SOS-Net, joint")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--jitter", type=int, default=3, help="ROIs per organ and case (1 centred + jittered)")
    t.add_argument("--ae-warmup", type=int, default=200)
    t.add_argument("--out", default=WEIGHTS)
    t.add_argument("--snet", help="S-Net + SOL-Net weights (.pt) after stage 2: run stages 3-4 only")
    e = sub.add_parser("export")
    e.add_argument("--src", default=WEIGHTS)
    e.add_argument("--dst", default=WEIGHTS)
    v = sub.add_parser("evaluate")
    v.add_argument("--seeds", default="1000-1005")
    v.add_argument("--size", default="small")
    v.add_argument("--model", default="focusnetv2", help="or anatomynet, scored the same way for comparison")
    v.add_argument("--out", default=os.path.join(WEIGHTS, "focusnetv2_eval.json"))
    args = ap.parse_args()
    if args.cmd == "all":
        train_all(args)
    elif args.cmd == "export":
        export(args.src, args.dst)
    else:
        torch.set_num_threads(1)
        evaluate(_seeds(args.seeds), args.size, args.out, args.model)


if __name__ == "__main__":
    main()
