"""Classical signet ring cell detector (Arena reference model): colour deconvolution + multi-scale LoG
blob detection of pale vacuoles + a crescent-nucleus ring score. numpy only.

Method
------
1. Optical density OD = -log10((I + 1) / 256) per RGB channel, and Ruifrok & Johnston's colour
   deconvolution (H&E-DAB stain vectors) into haematoxylin (nuclei) and eosin densities.
2. Candidate vacuoles: scale-normalised Laplacian of Gaussian of the *pale* map (negative total OD) at
   radii 10–26 px (σ = r/√2, computed in the Fourier domain); 3-D local maxima (space × scale) above a
   floor, closer than the radius suppressed (non-maximum suppression).
3. Each candidate is scored from the haematoxylin density sampled on rings around it: a signet ring
   cell has a pale, nucleus-free centre and a *crescent* of nucleus against its membrane, i.e. one
   dense arc (≈100°) on the rim and not a full ring (gland lumen) nor nothing (fat) nor a central dot
   (goblet cell / mimic). score = sigmoid(w · features); the box is the candidate's circle.

Input: the tile (TIFF with tifffile when installed, otherwise the small built-in reader for
uncompressed / deflate tiled or stripped TIFF; PNG via Pillow when installed). Output: grand-challenge
"Multiple 2D bounding boxes" with a probability per box.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

# Ruifrok & Johnston (2001) stain vectors: haematoxylin, eosin, DAB (rows, normalised)
_STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_STAINS = _STAINS / np.linalg.norm(_STAINS, axis=1, keepdims=True)
_UNMIX = np.linalg.inv(_STAINS)


# -- reading -------------------------------------------------------------------------------------

_TYPES = {1: "B", 2: "c", 3: "H", 4: "I", 16: "Q"}


def _read_tiff_minimal(path: str) -> np.ndarray:
    """First IFD of a little/big-endian classic TIFF, 8-bit, uncompressed or deflate, tiles or strips."""
    with open(path, "rb") as f:
        data = f.read()
    bo = "<" if data[:2] == b"II" else ">"
    if struct.unpack(bo + "H", data[2:4])[0] != 42:
        raise ValueError("not a classic TIFF (BigTIFF needs tifffile)")
    off = struct.unpack(bo + "I", data[4:8])[0]
    n = struct.unpack(bo + "H", data[off:off + 2])[0]
    tags = {}
    for k in range(n):
        e = off + 2 + 12 * k
        tag, typ, count = struct.unpack(bo + "HHI", data[e:e + 8])
        fmt = _TYPES.get(typ)
        if fmt is None:
            continue
        size = struct.calcsize(fmt) * count
        raw = data[e + 8:e + 12] if size <= 4 else data[struct.unpack(bo + "I", data[e + 8:e + 12])[0]:][:size]
        tags[tag] = struct.unpack(bo + fmt * count, raw[:size]) if fmt != "c" else raw
    w, h = tags[256][0], tags[257][0]
    spp = tags.get(277, (1,))[0]
    comp = tags.get(259, (1,))[0]
    if comp not in (1, 8, 32946) or tags.get(258, (8,))[0] != 8 or tags.get(284, (1,))[0] != 1:
        raise ValueError("unsupported TIFF layout (needs tifffile)")
    pred = tags.get(317, (1,))[0]

    def chunk(o, c, shape):
        b = data[o:o + c]
        if comp != 1:
            b = zlib.decompress(b)
        a = np.frombuffer(b, np.uint8)[: int(np.prod(shape))].reshape(shape)
        if pred == 2:
            a = np.cumsum(a, axis=1, dtype=np.uint8)
        return a

    out = np.zeros((h, w, spp), np.uint8)
    if 322 in tags:
        tw, th = tags[322][0], tags[323][0]
        across = (w + tw - 1) // tw
        for i, (o, c) in enumerate(zip(tags[324], tags[325])):
            ty, tx = divmod(i, across)
            t = chunk(o, c, (th, tw, spp))
            y0, x0 = ty * th, tx * tw
            out[y0:y0 + th, x0:x0 + tw] = t[: h - y0, : w - x0]
    else:
        rps = tags.get(278, (h,))[0]
        for i, (o, c) in enumerate(zip(tags[273], tags[279])):
            rows = min(rps, h - i * rps)
            out[i * rps:i * rps + rows] = chunk(o, c, (rows, w, spp))
    return out if spp > 1 else out[..., 0]


def read_rgb(path: str) -> np.ndarray:
    if path.lower().endswith((".tif", ".tiff")):
        try:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                img = tf.pages[0].asarray()
        except ImportError:
            img = _read_tiff_minimal(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


# -- filtering -----------------------------------------------------------------------------------


def _freq(h: int, w: int):
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return (2 * math.pi) ** 2 * (fy * fy + fx * fx)


def _gauss(F: np.ndarray, w2: np.ndarray, sigma: float, shape) -> np.ndarray:
    return np.fft.irfft2(F * np.exp(-0.5 * sigma * sigma * w2), s=shape)


def _max_filter(a: np.ndarray, k: int) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    p = np.pad(a, ((k, k), (0, 0)), mode="edge")
    a = sliding_window_view(p, 2 * k + 1, axis=0).max(axis=-1)
    p = np.pad(a, ((0, 0), (k, k)), mode="edge")
    return sliding_window_view(p, 2 * k + 1, axis=1).max(axis=-1)


def stain_densities(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    od = -np.log10((rgb.astype(np.float32) + 1.0) / 256.0)
    c = od.reshape(-1, 3) @ _UNMIX.astype(np.float32)
    c = c.reshape(*rgb.shape[:2], 3)
    return np.clip(c[..., 0], 0, None), np.clip(c[..., 1], 0, None), od.sum(axis=2)


FEATURES = ("crescent", "rim_q25", "centre", "inner", "paleness", "rim_max", "radius")


def _load_weights():
    """Logistic-regression weights over FEATURES, fitted by train.py (weights.json next to this file)."""
    import json
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.json")
    with open(path) as f:
        doc = json.load(f)
    if doc["features"] != list(FEATURES):
        raise ValueError(f"weights.json is for features {doc['features']}, expected {list(FEATURES)}")
    return np.asarray(doc["weights"], dtype=float), float(doc["bias"])


WEIGHTS, BIAS = _load_weights()


def candidate_features(hs: np.ndarray, best: np.ndarray, x: int, y: int, r: float, angles: np.ndarray) -> np.ndarray:
    h, w = hs.shape

    def ring(frac):
        px = np.clip(np.round(x + frac * r * np.cos(angles)).astype(int), 0, w - 1)
        py = np.clip(np.round(y + frac * r * np.sin(angles)).astype(int), 0, h - 1)
        return hs[py, px]

    rim = np.maximum(ring(0.7), ring(0.85))
    centre = float(hs[min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)])
    inner = float(ring(0.35).mean())
    arc = np.convolve(np.r_[rim, rim[:9]], np.ones(10) / 10, mode="valid")[:36]
    k = int(np.argmax(arc))
    crescent = float(arc[k]) - float(arc[(k + 18) % 36])
    return np.array([crescent, float(np.percentile(rim, 25)), centre, inner, float(best[y, x]), float(arc[k]),
                     r / 20.0])


def candidates(rgb: np.ndarray, radii=(10, 13, 16, 20, 25), floor: float = 0.05, limit: int = 12000):
    """(haematoxylin map, blob response, angles, [(x, y, r)]) of the vacuole candidates."""
    h, w = rgb.shape[:2]
    hema, _eos, od = stain_densities(rgb)
    F = np.fft.rfft2(-od)
    w2 = _freq(h, w)
    resp = np.stack([np.fft.irfft2(F * (s * s) * w2 * np.exp(-0.5 * s * s * w2), s=(h, w))
                     for s in (r / math.sqrt(2) for r in radii)])
    best = resp.max(axis=0)
    arg = resp.argmax(axis=0)
    peaks = (best == _max_filter(best, 6)) & (best > floor)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-best[ys, xs])[:limit]
    hs = _gauss(np.fft.rfft2(hema), w2, 1.0, (h, w))
    kept: list[tuple[int, int, float]] = []
    for y, x in zip(ys[order], xs[order]):
        r = float(radii[arg[y, x]])
        if any((x - a) ** 2 + (y - b) ** 2 < (0.9 * (r + q)) ** 2 for a, b, q in kept):
            continue
        kept.append((int(x), int(y), r))
    return hs, best, np.linspace(0, 2 * math.pi, 36, endpoint=False), kept


def detect(rgb: np.ndarray, max_boxes: int = 3000, min_probability: float = 0.01):
    """Returns a list of (x0, y0, x1, y1, probability), most probable first."""
    h, w = rgb.shape[:2]
    hs, best, angles, kept = candidates(rgb)
    out = []
    for x, y, r in kept:
        f = candidate_features(hs, best, x, y, r, angles)
        z = float(np.dot(WEIGHTS, f) + BIAS)
        p = 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
        out.append((max(x - r, 0.0), max(y - r, 0.0), min(x + r, float(w)), min(y + r, float(h)), p))
    out = [b for b in out if b[4] >= min_probability]
    out.sort(key=lambda b: -b[4])
    return out[:max_boxes]
