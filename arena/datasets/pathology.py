"""Deterministic synthetic H&E-like tiles for the DigestPath 2019 tasks (demos and tests, not science).

Two generators, one tissue renderer:

- :func:`signet_tile` — task 1 (signet ring cell detection). Pink eosin stroma with texture, glands
  (pale lumen, epithelial rim with elongated purple nuclei), scattered stromal nuclei and lymphocytes,
  and pale vacuoles without a rim nucleus (fat / goblet-cell mimics, the detector's usual false
  positives). A *positive* tile also holds signet ring cells, in clusters: a round cell whose large
  clear (mucin) cytoplasm pushes a crescent-shaped nucleus against the membrane. Ground truth is one
  box per cell ``[x0, y0, x1, y1]`` in pixels (the cell's bounding square, clipped to the tile). A
  *negative* tile has none.
- :func:`colon_tile` — task 2 (colonoscopy tissue segmentation + benign/malignant classification).
  A *malignant* tile holds a lesion region (irregular, smooth outline) with crowded irregular glands,
  large hyperchromatic nuclei and a purple cast; its mask is 1 inside the lesion. A *benign* tile has
  regular glands and an empty mask. The image label is ``mask.any()`` (DigestPath: benign tiles have
  no lesion annotation).

Proportions follow DigestPath 2019 at a configurable scale: task 1 had 687 tiles, 104 positive with
14,589 annotated cells (≈140 per positive 2000×2000 tile) and 583 negative. Task 2's data set is 872
tissue sub-images from 476 patients (about 5000×5000 px, as the SenseCare paper describes it); no
published split into tiles with and without lesions is known here, so the demo's malignant share (38 %)
is the demo's own choice. Smaller tiles get proportionally fewer cells (cells per tile ∝ area). Pixel size defaults to 0.5 µm/px; cell and gland sizes are drawn in microns.

Everything is a function of the seed (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["DIGESTPATH_SIGNET", "DIGESTPATH_COLON", "SIZE_PRESETS", "SignetTile", "ColonTile", "signet_tile",
           "colon_tile", "signet_split", "colon_split", "digestpath_scale", "write_signet_case", "write_colon_case",
           "boxes_to_gc", "parse_tile_size"]

#: DigestPath 2019 task 1 (signet ring cell detection), the released set.
DIGESTPATH_SIGNET = {"tiles": 687, "positive": 104, "negative": 583, "cells": 14589, "tile_px": 2000}
#: DigestPath 2019 task 2 (colonoscopy tissue): its size as published; the malignant share of the synthetic
#: tiles is the demo's choice, not a published proportion.
DIGESTPATH_COLON = {"images": 872, "patients": 476}
DEMO_COLON_MALIGNANT_SHARE = 0.38
CELLS_PER_POSITIVE_TILE = DIGESTPATH_SIGNET["cells"] / DIGESTPATH_SIGNET["positive"]  # ≈ 140.3 at 2000 px

SIZE_PRESETS = {"tiny": 256, "small": 384, "medium": 1000, "realistic": 2000}
DEFAULT_MPP = 0.5

# colours (RGB) of the stains
EOSIN = np.array([233, 163, 199], np.float32)
STROMA_DARK = np.array([214, 128, 176], np.float32)
LUMEN = np.array([246, 238, 244], np.float32)
CYTOPLASM = np.array([222, 150, 196], np.float32)
HEMATOXYLIN = np.array([82, 52, 136], np.float32)
LYMPHO = np.array([58, 36, 112], np.float32)
MUCIN = np.array([236, 226, 238], np.float32)
MEMBRANE = np.array([186, 112, 168], np.float32)


def parse_tile_size(size: str | int) -> int:
    """A preset name (tiny 256, small 384, medium 1000, realistic 2000) or a number of pixels."""
    if isinstance(size, int):
        px = size
    elif str(size).isdigit():
        px = int(size)
    elif size in SIZE_PRESETS:
        px = SIZE_PRESETS[size]
    else:
        raise ValueError(f"size: one of {sorted(SIZE_PRESETS)} or a number of pixels, got {size!r}")
    if not 64 <= px <= 8192:
        raise ValueError(f"size: between 64 and 8192 pixels, got {px}")
    return px


# --------------------------------------------------------------------------------------------------
# drawing helpers (local windows, soft edges)
# --------------------------------------------------------------------------------------------------


class _Canvas:
    def __init__(self, h: int, w: int, base: np.ndarray):
        self.img = base.astype(np.float32)
        self.h, self.w = h, w

    def window(self, cx: float, cy: float, r: float):
        x0, x1 = max(int(cx - r - 2), 0), min(int(cx + r + 3), self.w)
        y0, y1 = max(int(cy - r - 2), 0), min(int(cy + r + 3), self.h)
        if x0 >= x1 or y0 >= y1:
            return None
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        return (slice(y0, y1), slice(x0, x1)), xx - cx, yy - cy

    def paint(self, sl, alpha: np.ndarray, colour: np.ndarray) -> None:
        a = np.clip(alpha, 0, 1)[..., None]
        if a.size and a.max() > 0:
            self.img[sl] = self.img[sl] * (1 - a) + colour * a


def _ellipse_alpha(dx, dy, a, b, angle) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    u, v = dx * c + dy * s, -dx * s + dy * c
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return np.clip((1.0 - rho) * min(a, b) + 0.5, 0, 1)


def _ellipse(cv: _Canvas, cx, cy, a, b, angle, colour, opacity=1.0, jitter: np.ndarray | None = None) -> None:
    w = cv.window(cx, cy, max(a, b))
    if w is None:
        return
    sl, dx, dy = w
    col = colour if jitter is None else colour + jitter
    cv.paint(sl, opacity * _ellipse_alpha(dx, dy, a, b, angle), col)


def _smooth_field(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    step = max(int(sigma / 2), 1)
    small = rng.standard_normal((h // step + 2, w // step + 2)).astype(np.float32)
    small = ndimage.gaussian_filter(small, sigma / step)
    f = ndimage.zoom(small, step, order=1)[:h, :w]
    return (f - f.mean()) / (f.std() + 1e-6)


def _background(rng: np.random.Generator, h: int, w: int, purple: float = 0.0) -> np.ndarray:
    low = _smooth_field(rng, h, w, sigma=max(h, w) / 8)
    mid = _smooth_field(rng, h, w, sigma=4)
    t = np.clip(0.5 + 0.25 * low + 0.15 * mid, 0, 1)[..., None]
    img = EOSIN * (1 - t) + STROMA_DARK * t
    if purple:
        img = img * (1 - purple) + HEMATOXYLIN * purple
    # empty space (torn tissue / slide background) where the low-frequency field is high
    holes = np.clip((low - 1.6) * 3, 0, 1)[..., None]
    return img * (1 - holes) + LUMEN * holes


def _gland(cv: _Canvas, rng, cx, cy, a, b, angle, *, atypical: bool, px: float) -> None:
    """A gland: epithelial ring (cytoplasm), pale lumen, nuclei along the basal side."""
    wall = (8 if not atypical else 11) / px
    if atypical:  # irregular outline: a few lobes
        for _ in range(3):
            d = rng.uniform(0, 2 * math.pi)
            _ellipse(cv, cx + 0.5 * a * math.cos(d), cy + 0.5 * b * math.sin(d), a * 0.6, b * 0.6, angle,
                     CYTOPLASM * 0.9 + HEMATOXYLIN * 0.1)
    _ellipse(cv, cx, cy, a, b, angle, CYTOPLASM)
    _ellipse(cv, cx, cy, max(a - wall, 2), max(b - wall, 2), angle, LUMEN)
    perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    spacing = (5.5 if not atypical else 4.0) / px
    n = max(int(perimeter / spacing), 6)
    c, s = math.cos(angle), math.sin(angle)
    for k in range(n):
        t = 2 * math.pi * k / n + rng.normal(0, 0.02)
        rr = 1 - (wall * (0.75 if not atypical else rng.uniform(0.3, 1.0))) / max(min(a, b), 1)
        u, v = a * rr * math.cos(t), b * rr * math.sin(t)
        x, y = cx + u * c - v * s, cy + u * s + v * c
        na = (3.6 if not atypical else rng.uniform(4.0, 6.5)) / px
        nb = (1.6 if not atypical else rng.uniform(2.2, 3.8)) / px
        ang = math.atan2(y - cy, x - cx) + math.pi / 2 + rng.normal(0, 0.15 if not atypical else 0.6)
        col = HEMATOXYLIN * (1.0 if not atypical else 0.85)
        _ellipse(cv, x, y, na, nb, ang, col, opacity=0.95, jitter=rng.normal(0, 6, 3).astype(np.float32))


def _stromal_nuclei(cv: _Canvas, rng, n: int, *, px: float, big: bool = False) -> None:
    xs, ys = rng.uniform(0, cv.w, n), rng.uniform(0, cv.h, n)
    kinds = rng.random(n)
    for x, y, k in zip(xs, ys, kinds):
        if k < 0.45:  # lymphocyte: small, round, very dark
            r = rng.uniform(2.5, 3.5) / px * (1.4 if big else 1)
            _ellipse(cv, x, y, r, r * rng.uniform(0.85, 1), 0, LYMPHO, jitter=rng.normal(0, 5, 3).astype(np.float32))
        else:  # fibroblast / plasma cell: elongated
            a = rng.uniform(3.5, 6) / px * (1.4 if big else 1)
            _ellipse(cv, x, y, a, a * rng.uniform(0.3, 0.55), rng.uniform(0, math.pi), HEMATOXYLIN, opacity=0.85,
                     jitter=rng.normal(0, 8, 3).astype(np.float32))


def _vacuole(cv: _Canvas, rng, x, y, r, *, nucleus: str | None) -> None:
    """A pale round vacuole with a thin rim; ``nucleus``: None, ``"central"`` (mimic) or ``"crescent"``
    (signet ring cell: the nucleus pushed to the rim as a crescent)."""
    w = cv.window(x, y, r + 1)
    if w is None:
        return
    sl, dx, dy = w
    d = np.sqrt(dx * dx + dy * dy)
    cv.paint(sl, np.clip(r - d + 0.5, 0, 1), MEMBRANE)  # rim
    inner = r - max(1.0, 0.09 * r)
    cv.paint(sl, np.clip(inner - d + 0.5, 0, 1), MUCIN + rng.normal(0, 3, 3).astype(np.float32))
    if nucleus == "central":
        rn = r * rng.uniform(0.18, 0.28)
        ox, oy = rng.normal(0, 0.15 * r, 2)
        cv.paint(sl, np.clip(rn - np.sqrt((dx - ox) ** 2 + (dy - oy) ** 2) + 0.5, 0, 1), HEMATOXYLIN)
    elif nucleus == "crescent":
        t = rng.uniform(0, 2 * math.pi)
        ux, uy = math.cos(t), math.sin(t)
        rn = r * rng.uniform(0.42, 0.52)
        off = r - rn * 0.85
        dn = np.sqrt((dx - off * ux) ** 2 + (dy - off * uy) ** 2)
        nuc = np.clip(rn - dn + 0.5, 0, 1)
        vac = np.clip(r * rng.uniform(0.66, 0.74) - d + 0.5, 0, 1)  # the vacuole pushing the nucleus aside
        cell = np.clip(r - d + 0.5, 0, 1)
        cv.paint(sl, nuc * (1 - vac) * cell, HEMATOXYLIN * 0.9 + rng.normal(0, 5, 3).astype(np.float32))


def _finish(cv: _Canvas, rng, px: float) -> np.ndarray:
    img = ndimage.gaussian_filter(cv.img, sigma=(0.6, 0.6, 0))
    img += rng.normal(0, 4.0, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _tissue(rng, size: int, px: float, *, purple: float = 0.0, glands_per_mm2: float = 14.0,
            nuclei_per_mm2: float = 2200.0, atypical: bool = False) -> _Canvas:
    cv = _Canvas(size, size, _background(rng, size, size, purple))
    area_mm2 = (size * px / 1000.0) ** 2
    n_glands = rng.poisson(glands_per_mm2 * area_mm2)
    for _ in range(n_glands):
        a = rng.uniform(28, 55) / px
        b = a * rng.uniform(0.55, 0.95)
        _gland(cv, rng, rng.uniform(0, size), rng.uniform(0, size), a, b, rng.uniform(0, math.pi),
               atypical=atypical, px=px)
    _stromal_nuclei(cv, rng, rng.poisson(nuclei_per_mm2 * area_mm2), px=px, big=atypical)
    return cv


# --------------------------------------------------------------------------------------------------
# task 1: signet ring cells
# --------------------------------------------------------------------------------------------------


@dataclass
class SignetTile:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) float: x0, y0, x1, y1 in pixels
    positive: bool
    mpp: float
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)


def signet_tile(seed: int, size: str | int = "small", positive: bool = True, *, mpp: float = DEFAULT_MPP,
                cells: int | None = None) -> SignetTile:
    """One task-1 tile. ``cells``: number of signet ring cells (default: Poisson with DigestPath's mean
    per positive tile, scaled by area; at least 1 on a positive tile; 0 on a negative tile)."""
    size = parse_tile_size(size)
    rng = np.random.default_rng(seed)
    area_ratio = (size / DIGESTPATH_SIGNET["tile_px"]) ** 2
    if not positive:
        n_cells = 0
    elif cells is not None:
        n_cells = int(cells)
    else:
        n_cells = max(1, int(rng.poisson(CELLS_PER_POSITIVE_TILE * area_ratio)))
    cv = _tissue(rng, size, mpp)
    area_mm2 = (size * mpp / 1000.0) ** 2
    # mimics on every tile: pale vacuoles without a rim nucleus (fat, goblet cells)
    for _ in range(rng.poisson(60 * area_mm2)):
        r = rng.uniform(6, 11) / mpp
        _vacuole(cv, rng, rng.uniform(0, size), rng.uniform(0, size), r,
                 nucleus="central" if rng.random() < 0.5 else None)
    boxes: list[list[float]] = []
    placed: list[tuple[float, float, float]] = []
    if n_cells:
        n_clusters = max(1, int(round(n_cells / 12)))
        centres = rng.uniform(0.1 * size, 0.9 * size, (n_clusters, 2))
        spread = max(size / 10, 20 / mpp)
        tries = 0
        while len(placed) < n_cells and tries < n_cells * 60:
            tries += 1
            cx, cy = centres[rng.integers(n_clusters)] + rng.normal(0, spread, 2)
            r = rng.uniform(7, 11) / mpp
            if not (r <= cx <= size - r and r <= cy <= size - r):
                continue
            if any((cx - x) ** 2 + (cy - y) ** 2 < (r + q + 1) ** 2 for x, y, q in placed):
                continue
            placed.append((cx, cy, r))
        for cx, cy, r in placed:
            _vacuole(cv, rng, cx, cy, r, nucleus="crescent")
            boxes.append([round(cx - r, 1), round(cy - r, 1), round(cx + r, 1), round(cy + r, 1)])
    image = _finish(cv, rng, mpp)
    return SignetTile(image, np.asarray(boxes, dtype=float).reshape(-1, 4), bool(positive), mpp, seed,
                      {"cells": len(boxes), "size": size})


def digestpath_scale(scale: float = 1.0) -> dict[str, int]:
    """DigestPath task 1's tile counts at ``scale`` (1.0: 687 tiles, 104 positive, 583 negative)."""
    pos = max(1, int(round(DIGESTPATH_SIGNET["positive"] * scale)))
    neg = max(1, int(round(DIGESTPATH_SIGNET["negative"] * scale)))
    return {"tiles": pos + neg, "positive": pos, "negative": neg}


def _split(n: int, ratio: float, min_each: int) -> list[bool]:
    """``n`` flags, about ``ratio`` of them True (at least ``min_each`` of each kind when n allows),
    spread evenly over the sequence."""
    if n <= 0:
        return []
    k = int(round(n * ratio))
    lo = min(min_each, n // 2) if n >= 2 else 0
    k = min(max(k, lo, 1 if n == 1 else 0), n - lo if n >= 2 else n)
    flags = [False] * n
    for j in range(k):
        flags[int((j + 0.5) * n / k)] = True
    return flags


def signet_split(n: int, min_positive: int = 2) -> list[bool]:
    """Positive flags for ``n`` tiles in DigestPath's proportion (104/687), at least ``min_positive``
    positives and negatives when ``n`` allows (so each of two phases gets both kinds)."""
    return _split(n, DIGESTPATH_SIGNET["positive"] / DIGESTPATH_SIGNET["tiles"], min_positive)


def colon_split(n: int, min_each: int = 2) -> list[bool]:
    """Malignant flags for ``n`` synthetic tiles at the demo's malignant share (:data:`DEMO_COLON_MALIGNANT_SHARE`)."""
    return _split(n, DEMO_COLON_MALIGNANT_SHARE, min_each)


# --------------------------------------------------------------------------------------------------
# task 2: colon tissue
# --------------------------------------------------------------------------------------------------


@dataclass
class ColonTile:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 1 = lesion
    malignant: bool
    mpp: float
    seed: int


def colon_tile(seed: int, size: str | int = "small", malignant: bool = True, *, mpp: float = DEFAULT_MPP) -> ColonTile:
    """One task-2 tile: normal mucosa, plus a lesion region (mask 1) on a malignant tile."""
    size = parse_tile_size(size)
    rng = np.random.default_rng(seed)
    normal = _tissue(rng, size, mpp)
    mask = np.zeros((size, size), np.uint8)
    img = normal.img
    if malignant:
        field_ = _smooth_field(rng, size, size, sigma=size / 10)
        cx, cy = rng.uniform(0.3 * size, 0.7 * size, 2)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        radius = rng.uniform(0.25, 0.42) * size
        blob = 1.0 - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / radius + 0.35 * field_
        mask = (blob > 0).astype(np.uint8)
        lab, nlab = ndimage.label(mask)
        if nlab > 1:  # keep the largest component
            sizes = ndimage.sum(mask, lab, range(1, nlab + 1))
            mask = (lab == 1 + int(np.argmax(sizes))).astype(np.uint8)
        tumour = _tissue(rng, size, mpp, purple=0.28, glands_per_mm2=30, nuclei_per_mm2=5200, atypical=True)
        soft = ndimage.gaussian_filter(mask.astype(np.float32), 1.5)[..., None]
        img = img * (1 - soft) + tumour.img * soft
    out = _Canvas(size, size, img)
    image = _finish(out, rng, mpp)
    return ColonTile(image, mask, bool(malignant), mpp, seed)


# --------------------------------------------------------------------------------------------------
# writing cases, loading demo data into a task
# --------------------------------------------------------------------------------------------------


def boxes_to_gc(boxes: np.ndarray, probabilities: np.ndarray | None = None, name: str = "signet ring cell") -> dict:
    """grand-challenge "Multiple 2D bounding boxes" (corners on z = 0; ``probability`` when given)."""
    items = []
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        it: dict[str, Any] = {"name": name, "corners": [[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]]}
        if probabilities is not None:
            it["probability"] = float(probabilities[k])
        items.append(it)
    return {"type": "Multiple 2D bounding boxes", "boxes": items, "version": {"major": 1, "minor": 0}}


def write_signet_case(directory: str | Path, key: str, seed: int, size: str | int = "small",
                      positive: bool = True) -> dict[str, Any]:
    """``<directory>/<key>/image.tif`` (pyramidal TIFF with mpp) and ``reference.json`` (GT boxes)."""
    from arena.datasets.slides import write_slide

    t = signet_tile(seed, size, positive)
    d = Path(directory) / key
    d.mkdir(parents=True, exist_ok=True)
    write_slide(d / "image.tif", t.image, t.mpp, description={"case": key, "synthetic": True})
    ref = boxes_to_gc(t.boxes)
    ref["image_size"] = [int(t.image.shape[1]), int(t.image.shape[0])]
    (d / "reference.json").write_text(json.dumps(ref))
    return {"case_id": key, "positive": t.positive, "targets": int(len(t.boxes)), "size": int(t.image.shape[0]),
            "mpp": t.mpp, "seed": seed}


def write_colon_case(directory: str | Path, key: str, seed: int, size: str | int = "small",
                     malignant: bool = True) -> dict[str, Any]:
    """``<directory>/<key>/image.tif`` (RGB, mpp) and ``reference.tif`` (uint8 lesion mask)."""
    from arena.datasets.slides import write_slide

    t = colon_tile(seed, size, malignant)
    d = Path(directory) / key
    d.mkdir(parents=True, exist_ok=True)
    write_slide(d / "image.tif", t.image, t.mpp, description={"case": key, "synthetic": True})
    write_slide(d / "reference.tif", t.mask, t.mpp, levels=1)
    return {"case_id": key, "malignant": t.malignant, "lesion_pixels": int(t.mask.sum()),
            "size": int(t.image.shape[0]), "mpp": t.mpp, "seed": seed}
