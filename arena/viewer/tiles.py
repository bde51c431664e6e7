"""Pathology tiles in the viewer: the tile with the reference boxes and a model's boxes, each coloured by what
the task's matching made of it at a chosen probability threshold.

Boxes are ``x0, y0, x1, y1`` in tile pixels (x right, y down), as :mod:`arena.metrics.detection` reads them;
matching is :func:`arena.metrics.detection.match_detections` with the task's criterion, threshold and
matching rule, on the boxes whose probability is at least ``min_probability`` — the scoring code itself.

Colours: a reference box that was found is green, a missed one red; a model box that hit is cyan
(dashed), a false positive yellow (dashed).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from arena.metrics.detection import match_detections

HIT_REFERENCE = (40, 200, 70)
MISSED = (230, 30, 30)
HIT_PREDICTION = (0, 200, 230)
FALSE_POSITIVE = (250, 210, 0)
MAX_SIDE = 1024


@dataclass(frozen=True)
class TileMatch:
    """Per reference box: found (True) or missed; per kept model box: hit (True) or false positive; the
    model boxes below the threshold are left out (``kept`` indexes the input rows)."""

    reference_found: np.ndarray
    kept: np.ndarray
    prediction_hit: np.ndarray

    def counts(self) -> dict[str, int]:
        return {"reference": int(self.reference_found.size), "hit": int(self.reference_found.sum()),
                "missed": int((~self.reference_found).sum()), "predicted": int(self.kept.size),
                "true_positive": int(self.prediction_hit.sum()),
                "false_positive": int((~self.prediction_hit).sum())}


def _table(boxes: Any, with_probability: bool):
    import pandas as pd

    df = pd.DataFrame(boxes).reset_index(drop=True)
    need = ["x0", "y0", "x1", "y1"] + (["probability"] if with_probability else [])
    missing = [c for c in need if c not in df.columns]
    if missing and len(df):
        raise ValueError(f"boxes: columns {missing} missing (have {list(df.columns)})")
    df = df.reindex(columns=need)
    df["image"] = "tile"
    return df


def match_tile(reference: Any, predictions: Any, criterion: str, threshold: float | None, matching: str = "greedy",
               min_probability: float = 0.0) -> TileMatch:
    """Match the model boxes with probability ≥ ``min_probability`` (in [0, 1]) to the reference boxes
    (tables with ``x0, y0, x1, y1`` and, for predictions, ``probability``)."""
    if not 0.0 <= min_probability <= 1.0:
        raise ValueError(f"min_probability: expected a probability in [0, 1], got {min_probability}")
    ref = _table(reference, False)
    pred = _table(predictions, True)
    kept = np.flatnonzero(pred["probability"].to_numpy(float) >= min_probability) if len(pred) else np.zeros(0, int)
    if len(ref) == 0 and len(kept) == 0:
        return TileMatch(np.zeros(0, bool), kept, np.zeros(0, bool))
    m = match_detections(pred.iloc[kept], ref, criterion=criterion, threshold=threshold,  # type: ignore[arg-type]
                         matching=matching, images=["tile"])  # type: ignore[arg-type]
    return TileMatch(m.gt_pred >= 0, kept, m.pred_status == 1)


def check_region(width: int, height: int, region: Sequence[float] | None) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` in tile pixels, clipped to the tile (None: the whole tile); ValueError when empty."""
    if region is None:
        return 0, 0, width, height
    x, y, w, h = (int(round(float(v))) for v in region)
    x0, y0 = max(0, min(x, width - 1)), max(0, min(y, height - 1))
    x1, y1 = max(x0 + 1, min(x + w, width)), max(y0 + 1, min(y + h, height))
    if w <= 0 or h <= 0:
        raise ValueError(f"region: width and height must be positive, got {w}×{h}")
    return x0, y0, x1 - x0, y1 - y0


def render_tile(tile: np.ndarray, reference: Any, predictions: Any, match: TileMatch | None,
                region: Sequence[float] | None = None, max_side: int = MAX_SIDE) -> Image.Image:
    """The ``region`` (x, y, w, h in tile pixels; None: all) of an RGB (or grey) ``tile`` array, scaled to
    at most ``max_side`` pixels on its longer side, with the boxes drawn (colours: see the module). Without
    ``match`` (no model chosen) the reference boxes are drawn green."""
    arr = np.asarray(tile)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"tile: expected an (H, W, 3) image, got shape {arr.shape}")
    height, width = arr.shape[:2]
    x, y, w, h = check_region(width, height, region)
    scale = min(1.0, max_side / max(w, h)) if max(w, h) > max_side else max_side / max(w, h)
    scale = min(scale, 8.0)  # no more than 8 screen pixels per tile pixel
    out = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(np.ascontiguousarray(arr[y:y + h, x:x + w, :3]).astype(np.uint8)).resize(
        out, Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)

    def rect(row, colour, dashed: bool, width_px: int) -> None:
        x0, y0 = (row["x0"] - x) * scale, (row["y0"] - y) * scale
        x1, y1 = (row["x1"] - x) * scale, (row["y1"] - y) * scale
        if x1 < 0 or y1 < 0 or x0 > out[0] or y0 > out[1]:
            return
        if not dashed:
            draw.rectangle((x0, y0, x1, y1), outline=colour, width=width_px)
            return
        corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))
        for (ax, ay), (bx, by) in zip(corners, corners[1:]):
            n = max(1, int(np.hypot(bx - ax, by - ay) // 6))
            for k in range(0, n, 2):
                t0, t1 = k / n, min(1.0, (k + 1) / n)
                draw.line((ax + (bx - ax) * t0, ay + (by - ay) * t0, ax + (bx - ax) * t1, ay + (by - ay) * t1),
                          fill=colour, width=width_px)

    ref = _table(reference, False)
    found = match.reference_found if match is not None else np.ones(len(ref), bool)
    for k, row in ref.iterrows():
        rect(row, HIT_REFERENCE if found[k] else MISSED, False, 2)
    if match is not None and predictions is not None:
        pred = _table(predictions, True)
        for hit, idx in zip(match.prediction_hit, match.kept):
            rect(pred.iloc[int(idx)], HIT_PREDICTION if hit else FALSE_POSITIVE, True, 2)
    return img


@lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> np.ndarray:
    from arena.datasets.slides import read_level

    return read_level(path, 0)


def read_tile(path: Path) -> np.ndarray:
    """A tile image (TIFF as the case store keeps it, level 0) as an (H, W, 3) array; the last few are kept
    per process (zoom and pan ask for the same tile again and again). Errors name the file."""
    path = Path(path)
    try:
        st = path.stat()
        return _read(str(path), st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable tile ({e})") from None
