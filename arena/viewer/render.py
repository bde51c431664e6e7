"""Slices of a CT with organ contours, as PNG: pure numpy / contourpy / Pillow (matplotlib's own dependencies).

Volumes are numpy arrays in SimpleITK's axis order ``(z, y, x)``, reoriented to LPS (x toward the
patient's left, y toward posterior, z toward superior; :func:`arena.viewer.volumes.read_volume` does it),
and ``spacing`` is in mm per array axis ``(z, y, x)``. Views are shown as radiologists read them:

- ``axial``: slice ``z = index``; rows y (anterior at the top), columns x (the patient's right on the
  left of the image);
- ``coronal``: slice ``y = index``; rows z (superior at the top), columns x;
- ``sagittal``: slice ``x = index``; rows z (superior at the top), columns y (anterior on the left).

Every view is resampled to square display pixels (the voxel spacing honoured: a 2.5 mm slice is drawn
2.5/0.9 times as tall as a 0.9 mm pixel is wide) and up to at least :data:`MIN_SIDE` pixels on its longer
side. The CT is sampled linearly, label maps by nearest neighbour. Contours are the 0.5 iso-lines of each
organ's mask on the slice (marching squares, between the voxel centres inside and outside the organ),
drawn in the organ's palette colour: the reference solid, model A dashed, model B dotted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import contourpy
import numpy as np
from PIL import Image, ImageDraw

View = Literal["axial", "coronal", "sagittal"]
VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")
AXIS: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}  # the array axis a view slices along

# name -> (width, level) in HU
WINDOWS: dict[str, tuple[float, float]] = {
    "soft-tissue": (400.0, 40.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
    "lung": (1500.0, -600.0),
}
WINDOW_TITLES: dict[str, str] = {"soft-tissue": "Soft tissue (W400/L40)", "bone": "Bone (W1800/L400)",
                                 "brain": "Brain (W80/L40)", "lung": "Lung (W1500/L−600)"}
STYLES: tuple[str, ...] = ("solid", "dashed", "dotted")  # reference, model A, model B
MIN_SIDE = 512  # display pixels on a view's longer side, at least
MAX_SIDE = 1024  # and at most

# A fixed palette keyed by label id (label 1 is PALETTE[0], label 25 is PALETTE[0] again): the same organ
# has the same colour on every page, whatever organs a task lists.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128), (255, 255, 255), (255, 99, 71), (64, 224, 208), (218, 165, 32),
)


def organ_colour(label: int) -> tuple[int, int, int]:
    """The palette colour (RGB 0–255) of ``label`` (a positive label id)."""
    if label <= 0:
        raise ValueError(f"label: expected a positive label id, got {label}")
    return PALETTE[(label - 1) % len(PALETTE)]


def organ_hex(label: int) -> str:
    """``organ_colour`` as ``#rrggbb``."""
    return "#%02x%02x%02x" % organ_colour(label)


def slice_count(shape: Sequence[int], view: str) -> int:
    """How many slices ``view`` has in a volume of array ``shape`` (z, y, x)."""
    return int(shape[_axis(view)])


def _axis(view: str) -> int:
    try:
        return AXIS[view]
    except KeyError:
        raise ValueError(f"view: expected one of {VIEWS}, got {view!r}") from None


def _plane(view: str, spacing: Sequence[float]) -> tuple[float, float]:
    """(row spacing, column spacing) in mm of ``view``'s slices."""
    z, y, x = (float(s) for s in spacing)
    return {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[view]


def display_size(shape: Sequence[int], spacing: Sequence[float], view: str) -> tuple[int, int]:
    """(height, width) in display pixels of ``view``: square pixels, physical aspect kept, the longer side
    between :data:`MIN_SIDE` and :data:`MAX_SIDE` (or the native size when that is larger than MAX_SIDE
    along neither axis)."""
    axis = _axis(view)
    rows, cols = [int(n) for i, n in enumerate(shape) if i != axis]
    rs, cs = _plane(view, spacing)
    h_mm, w_mm = rows * rs, cols * cs
    px = min(rs, cs)  # the finer of the two spacings: no voxel is drawn smaller than one display pixel
    longer = max(h_mm, w_mm) / px
    target = min(max(longer, MIN_SIDE), MAX_SIDE)
    scale = target / longer
    return max(1, round(h_mm / px * scale)), max(1, round(w_mm / px * scale))


def check_index(shape: Sequence[int], view: str, index: int) -> None:
    n = slice_count(shape, view)
    if not 0 <= index < n:
        raise IndexError(f"index: {view} slice {index} is outside 0..{n - 1}")


def extract(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """The 2-D slice of ``volume`` (z, y, x) shown in ``view`` at ``index``, in display orientation
    (rows top to bottom, see the module)."""
    check_index(volume.shape, view, index)
    if view == "axial":
        return np.asarray(volume[index])
    if view == "coronal":
        return np.asarray(volume[:, index, :])[::-1]
    return np.asarray(volume[:, :, index])[::-1]


def _centres(n_src: int, n_out: int) -> np.ndarray:
    """Source coordinates (voxel-centre units) of ``n_out`` display pixel centres spread over ``n_src``."""
    return (np.arange(n_out) + 0.5) * (n_src / n_out) - 0.5


def _resample_linear(img: np.ndarray, h: int, w: int) -> np.ndarray:
    out = img.astype(np.float32, copy=False)
    for axis, n_out in ((0, h), (1, w)):
        n = out.shape[axis]
        if n == n_out:
            continue
        c = np.clip(_centres(n, n_out), 0, n - 1)
        lo = np.floor(c).astype(np.intp)
        hi = np.minimum(lo + 1, n - 1)
        f = (c - lo).astype(np.float32)
        a, b = np.take(out, lo, axis=axis), np.take(out, hi, axis=axis)
        f = f[:, None] if axis == 0 else f[None, :]
        out = a + (b - a) * f
    return out


def window_to_gray(img: np.ndarray, window: str | tuple[float, float]) -> np.ndarray:
    """HU values to 0–255 grey through a window preset name (:data:`WINDOWS`) or ``(width, level)``."""
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ValueError(f"window: expected one of {tuple(WINDOWS)}, got {window!r}")
        width, level = WINDOWS[window]
    else:
        width, level = (float(v) for v in window)
    if not width > 0:
        raise ValueError(f"window: the width must be positive, got {width}")
    lo = level - width / 2.0
    g = (np.asarray(img, dtype=np.float32) - lo) * (255.0 / width)
    return np.clip(g, 0, 255).astype(np.uint8)


def contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a 2-D binary ``mask``: a list of ``(N, 2)`` arrays of (row, column) in voxel
    units (voxel centres at integers), the 0.5 iso-lines between voxels inside and outside. An empty
    mask has none."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask: expected a 2-D mask, got {m.ndim}-D")
    if not m.any():
        return []
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    r0, c0 = rows[0], cols[0]
    crop = np.pad(m[r0:rows[-1] + 1, c0:cols[-1] + 1], 1).astype(np.float32)  # padded: outlines close
    gen = contourpy.contour_generator(z=crop, line_type=contourpy.LineType.Separate)
    return [np.column_stack([line[:, 1] + r0 - 1, line[:, 0] + c0 - 1]) for line in gen.lines(0.5)]


@dataclass(frozen=True)
class Overlay:
    """One label map (same shape as the CT) drawn as contours in ``style`` (one of :data:`STYLES`)."""

    labels: np.ndarray
    style: str = "solid"


def _dash(points: np.ndarray, on: float, off: float) -> list[np.ndarray]:
    """Split a polyline (display x, y) into dashes ``on`` px long with ``off`` px gaps."""
    seg = np.diff(points, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    total, period = cum[-1], on + off
    out = []
    start = 0.0
    while start < total:
        stop = min(start + on, total)
        ts = np.concatenate([[start], cum[(cum > start) & (cum < stop)], [stop]])
        xs = np.interp(ts, cum, points[:, 0])
        ys = np.interp(ts, cum, points[:, 1])
        out.append(np.column_stack([xs, ys]))
        start += period
    return out


def _draw(draw: ImageDraw.ImageDraw, line: np.ndarray, colour: tuple[int, int, int], style: str) -> None:
    if style == "solid":
        draw.line([tuple(p) for p in line], fill=colour, width=2)
    elif style == "dashed":
        for d in _dash(line, 7.0, 5.0):
            draw.line([tuple(p) for p in d], fill=colour, width=2)
    else:  # dotted
        for d in _dash(line, 1.0, 5.0):
            x, y = d.mean(axis=0)
            draw.ellipse((x - 1.0, y - 1.0, x + 1.0, y + 1.0), fill=colour)


def render_slice(ct: np.ndarray, spacing: Sequence[float], view: str, index: int,
                 window: str | tuple[float, float] = "soft-tissue", overlays: Sequence[Overlay] = (),
                 organs: Iterable[int] | None = None) -> Image.Image:
    """The slice ``index`` of ``view`` as an RGB image of :func:`display_size`: the CT through ``window``
    with the contours of ``organs`` (label ids; None: every label present) of each overlay.

    Raises ValueError for an unknown view or window or an overlay whose shape differs from the CT's,
    IndexError for a slice outside the volume.
    """
    for ov in overlays:
        if ov.labels.shape != ct.shape:
            raise ValueError(f"overlay: label map shape {ov.labels.shape} differs from the CT's {ct.shape}")
        if ov.style not in STYLES:
            raise ValueError(f"overlay: style {ov.style!r} is not one of {STYLES}")
    h, w = display_size(ct.shape, spacing, view)
    plane = extract(ct, view, index)
    gray = window_to_gray(_resample_linear(plane, h, w), window)
    img = Image.fromarray(gray, mode="L").convert("RGB")
    wanted = None if organs is None else {int(o) for o in organs}
    draw = ImageDraw.Draw(img)
    sy, sx = h / plane.shape[0], w / plane.shape[1]
    for ov in overlays:
        lab = extract(ov.labels, view, index)
        present = np.flatnonzero(np.bincount(lab.ravel()))  # label maps are uint8/uint16 (volumes.py)
        for label in present[present > 0]:
            if wanted is not None and int(label) not in wanted:
                continue
            for line in contours(lab == label):
                pts = np.column_stack([(line[:, 1] + 0.5) * sx, (line[:, 0] + 0.5) * sy])  # display x, y
                _draw(draw, pts, organ_colour(int(label)), ov.style)
    return img


def png_bytes(img: Image.Image) -> bytes:
    """``img`` as PNG (fast deflate: slices are made on demand)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
