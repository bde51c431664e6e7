"""Fit the cell detector's candidate scorer (logistic regression over detector features).

Two scorers, each in its own file next to this one:

- ``--data digestpath`` (default) → ``weights.json``: fitted on the real DigestPath 2019 tiles of the *fit*
  patients only (tasks/signet-ring-cells/loader.py deals the patients to fit / real-validation / real-test);
  a tile of a held-out patient is refused (:func:`checked_fit_tiles`). The tiles are read from the shared data
  folder as the case store holds them (JPEG → tiled TIFF at 0.25 µm/px, arena.tasks.tiles_import) and
  averaged down to the detector's working 0.5 µm/px. Candidates: dark round blobs; features: ring and colour
  features (detector.FEATURES). The box scale is chosen on the fit tiles (the one whose candidate boxes reach
  most annotated cells at IoU 0.3), the operating threshold so that the fit patients' negative tiles get
  about ``--fp-per-normal-tile`` boxes each.
- ``--data synthetic`` → ``weights_synthetic.json``: the synthetic training tiles (seeds 100.., 512 px, half
  positive), pale-blob candidates and the 7 ring features, as before real data came.

A candidate is positive when its box has IoU >= 0.3 with an annotated box (the task's hit criterion); the
DigestPath annotations are incomplete, so some "negatives" are unlabelled cells.

    python reference_models/cell_detector/train.py [--data digestpath|synthetic] [--data-folder DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import detector  # noqa: E402

TASK = REPO / "tasks" / "signet-ring-cells"
REAL_FEATURES = detector.FEATURES
BOX_SCALES = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.5)
DARK = {"candidates": "dark", "radii": [8, 10, 13, 16, 20], "floor": 0.02}


def iou_max(box, gt: np.ndarray) -> float:
    if not len(gt):
        return 0.0
    x0 = np.maximum(box[0], gt[:, 0])
    y0 = np.maximum(box[1], gt[:, 1])
    x1 = np.minimum(box[2], gt[:, 2])
    y1 = np.minimum(box[3], gt[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) - inter
    return float((inter / union).max())


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50,
                 sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """IRLS (Newton) on standardised features; returns weights and bias on the raw features."""
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = np.c_[(X - mu) / sd, np.ones(len(X))]
    sw = np.ones(len(X)) if sample_weight is None else sample_weight
    w = np.zeros(Z.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(Z @ w, -50, 50)))
        g = Z.T @ (sw * (p - y)) + l2 * np.r_[w[:-1], 0]
        H = (Z * (sw * p * (1 - p))[:, None]).T @ Z + l2 * np.eye(len(w))
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[:-1] / sd
    bias = float(w[-1] - (w[:-1] * mu / sd).sum())
    return weights, bias


# -- real data: the fit patients only ----------------------------------------------------------------


def task_loader():
    """tasks/signet-ring-cells/loader.py (the split lives there, one place)."""
    spec = importlib.util.spec_from_file_location("signet_ring_cells_loader", TASK / "loader.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def checked_fit_tiles(data_folder: Path, tiles: list[str]) -> list[str]:
    """``tiles`` (file names) when every one belongs to a fit patient; ValueError naming the first tile of a
    held-out patient (real-validation / real-test) or a tile the index does not list."""
    L = task_loader()
    entries = L.entries(data_folder)
    roles = L.split(entries)
    for t in tiles:
        role = roles.get(t)
        if role is None:
            raise ValueError(f"{t}: not a tile of {L.folder_of(data_folder) / 'tiles.json'}")
        if role != L.FIT:
            raise ValueError(f"{t}: its patient is held out ({role}); the cell detector is fitted on the fit "
                             "patients only")
    return list(tiles)


def _tile_as_stored(src: Path, mpp: float, tmp: Path) -> tuple[np.ndarray, float | None]:
    """The tile as a container sees it: converted like the case store does, then read back."""
    from arena.tasks.tiles_import import jpeg_to_tiled_tiff

    dst = jpeg_to_tiled_tiff(src, tmp / "tile.tif", mpp)
    rgb, got_mpp, _ = detector.read_tile(str(dst))
    return rgb, got_mpp


def _candidate_table(tiles, folder: Path, mpp: float, log) -> list[dict]:
    """Per tile: its GT boxes and candidates (x, y, r in working px, features), the working factor."""
    out = []
    model = {**DARK, "features": list(REAL_FEATURES)}
    with tempfile.TemporaryDirectory(prefix="cell-detector-fit-") as tmp:
        for i, e in enumerate(tiles):
            t0 = time.time()
            rgb, got = _tile_as_stored(folder / "tiles" / e.tile, mpp, Path(tmp))
            f = detector.working_factor(got)
            cands = detector.scored_candidates(detector.downsample(rgb, f), model)
            out.append({"tile": e.tile, "gt": np.asarray(e.boxes, float), "f": f, "cands": cands,
                        "negative": not e.positive})
            log(f"  {i + 1}/{len(tiles)} {e.tile}: {len(cands)} candidates, {len(e.boxes)} boxes, "
                f"{time.time() - t0:.1f} s")
    return out


def _boxes(row: dict, scale: float) -> np.ndarray:
    f = row["f"]
    return np.array([(x * f + (f - 1) / 2 - r * scale * f, y * f + (f - 1) / 2 - r * scale * f,
                      x * f + (f - 1) / 2 + r * scale * f, y * f + (f - 1) / 2 + r * scale * f)
                     for x, y, r, _ in row["cands"]]).reshape(-1, 4)


def _labels(row: dict, scale: float) -> np.ndarray:
    return np.array([float(iou_max(b, row["gt"]) >= 0.3) for b in _boxes(row, scale)])


def _reached(row: dict, scale: float) -> int:
    """Annotated boxes with some candidate box at IoU >= 0.3 (an upper bound of the detector's recall)."""
    gt, bx = row["gt"], _boxes(row, scale)
    return sum(1 for g in gt if len(bx) and iou_max(g, bx) >= 0.3)


def fit_real(folder: Path, fp_per_normal_tile: float, log=print) -> dict:
    L = task_loader()
    tiles = L.tiles_of(folder, L.FIT)
    checked_fit_tiles(folder, [e.tile for e in tiles])
    t0 = time.time()
    log(f"fit tiles: {len(tiles)} ({sum(e.positive for e in tiles)} positive, "
        f"{sum(len(e.boxes) for e in tiles)} boxes) of slides {sorted({e.slide for e in tiles})}")
    rows = _candidate_table(tiles, folder, L.MPP, log)
    n_gt = sum(len(r["gt"]) for r in rows)
    reach = {s: sum(_reached(r, s) for r in rows if len(r["gt"])) / n_gt for s in BOX_SCALES}
    scale = max(BOX_SCALES, key=lambda s: (reach[s], -abs(s - 1)))
    log(f"box scale {scale} (candidate boxes reaching an annotated cell at IoU 0.3: "
        + ", ".join(f"{s}: {v:.3f}" for s, v in reach.items()) + ")")
    X = np.array([feats for r in rows for *_, feats in r["cands"]])
    Y = np.concatenate([_labels(r, scale) for r in rows])
    neg_tile = np.concatenate([np.full(len(r["cands"]), r["negative"]) for r in rows])
    w, b = fit_logistic(X, Y)
    p = 1 / (1 + np.exp(-np.clip(X @ w + b, -50, 50)))
    n_neg_tiles = sum(r["negative"] for r in rows)
    neg_scores = np.sort(p[neg_tile])[::-1]
    k = int(round(fp_per_normal_tile * n_neg_tiles))
    thr = float(neg_scores[k]) if k < len(neg_scores) else 0.0
    thr = float(np.nextafter(thr, 1.0))  # strictly above the (k+1)-th normal-tile score
    doc = {"name": "real", **DARK, "box_scale": scale, "min_probability": round(thr, 6),
           "features": list(REAL_FEATURES), "weights": [round(float(v), 6) for v in w], "bias": round(b, 6)}
    doc["training"] = {
        "data": "DigestPath 2019 signet ring cell tiles (Li et al., IPMI 2019; Da et al., MedIA 80:102485, 2022)",
        "split": "tasks/signet-ring-cells/loader.py, role 'fit'",
        "slides": sorted({e.slide for e in tiles}),
        "tiles": len(tiles), "positive_tiles": int(sum(e.positive for e in tiles)), "boxes": int(n_gt),
        "mpp_assumed": L.MPP, "working_mpp": detector.WORK_MPP, "candidates": int(len(Y)),
        "positives": int(Y.sum()), "accuracy_at_0.5": round(float(((p >= 0.5) == (Y == 1)).mean()), 4),
        "fp_per_normal_tile_target": fp_per_normal_tile, "seconds": round(time.time() - t0, 1),
        "machine": "2-core CPU (shared), numpy only"}
    doc["provenance"] = (f"cell_detector fitted on DigestPath 2019 tiles of the fit patients "
                         f"({len(tiles)} tiles, slides {', '.join(sorted({e.slide for e in tiles}))}); evaluated on "
                         "the held-out patients' tiles (signet-ring-cells real-validation and real-test)")
    return doc


# -- synthetic tiles ----------------------------------------------------------------------------------


def fit_synthetic(n_tiles: int, size: int) -> dict:
    from arena.datasets.pathology import signet_tile

    t0 = time.time()
    model = {"candidates": "pale", "radii": [10, 13, 16, 20, 25], "floor": 0.05,
             "features": list(detector.LEGACY_FEATURES)}
    X, Y = [], []
    for i in range(n_tiles):
        t = signet_tile(100 + i, size, positive=i % 2 == 0)
        for x, y, r, feats in detector.scored_candidates(t.image, model):
            X.append(feats[: len(detector.LEGACY_FEATURES)])
            Y.append(float(iou_max((x - r, y - r, x + r, y + r), t.boxes) >= 0.3))
    X, Y = np.array(X), np.array(Y)
    w, b = fit_logistic(X, Y)
    p = 1 / (1 + np.exp(-(X @ w + b)))
    return {"name": "synthetic", **{k: v for k, v in model.items() if k != "features"}, "box_scale": 1.0,
            "min_probability": 0.3, "features": model["features"], "weights": [round(float(v), 6) for v in w],
            "bias": round(b, 6),
            "training": {"tiles": n_tiles, "size": size, "candidates": int(len(Y)), "positives": int(Y.sum()),
                         "accuracy_at_0.5": round(float(((p >= 0.5) == (Y == 1)).mean()), 4),
                         "seconds": round(time.time() - t0, 1), "seeds": f"100..{100 + n_tiles - 1}",
                         "data": "Arena's synthetic signet tiles (arena.datasets.pathology.signet_tile), "
                                 f"{size} px at 0.5 µm/px"},
            "provenance": f"fitted on {n_tiles} synthetic tiles (seeds 100..{100 + n_tiles - 1}, {size} px); used for "
                          "tiles whose description says synthetic: true"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("digestpath", "synthetic"), default="digestpath")
    ap.add_argument("--data-folder", type=Path, default=None,
                    help="DigestPath folder (default: digestpath/ below the shared data root)")
    ap.add_argument("--fp-per-normal-tile", type=float, default=2.0,
                    help="operating threshold: about this many boxes per fit-set normal tile")
    ap.add_argument("--tiles", type=int, default=24, help="synthetic: number of training tiles")
    ap.add_argument("--size", type=int, default=512, help="synthetic: tile size in px")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.data == "digestpath":
        from arena.tasks.store import shared_data_root

        folder = a.data_folder or shared_data_root() / "digestpath"
        doc = fit_real(folder, a.fp_per_normal_tile)
        out = a.out or HERE / "weights.json"
    else:
        doc = fit_synthetic(a.tiles, a.size)
        out = a.out or HERE / "weights_synthetic.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["training"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
