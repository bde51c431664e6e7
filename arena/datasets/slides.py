"""Slide and tile I/O: pyramidal tiled TIFF (tifffile) with microns-per-pixel, plain PNG/TIFF tiles.

Pyramids are written the way tifffile, tiffslide and OME-TIFF readers expect: full resolution in the
first IFD (tiled), the reduced levels (each half the size of the previous one, 2×2 mean) as SubIFDs of
it with ``NewSubfileType = 1``. The pixel size is stored in the TIFF resolution tags (XResolution /
YResolution in pixels per centimetre, ``ResolutionUnit = CENTIMETER``) and, redundantly, as JSON in
the ImageDescription (``{"mpp": 0.5, ...}``), so readers that ignore one still find the other.

Reading a region decodes only the tiles it covers (:func:`read_region`), so a region of a 100k × 100k
slide costs what the region costs. Plain tiles (PNG via Pillow, single-page TIFF) are read with
:func:`read_tile`; :func:`read_image` reads any of them to an (H, W[, C]) array.

Coordinates: ``(x, y)`` = (column, row) in level-0 pixels for :func:`read_region`'s ``location``, like
OpenSlide; ``size`` = (width, height) in pixels of the requested level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SlideInfo", "write_slide", "slide_info", "read_level", "read_region", "read_tile", "write_tile",
           "read_image", "image_size"]

TILE_EXTENSIONS = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class SlideInfo:
    """What a slide reader needs first: level sizes as (width, height), downsamples, pixel size."""

    path: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None  # microns per pixel at level 0 (None when the file does not say)
    samples: int  # 3 for RGB, 1 for a label mask
    dtype: str
    tiled: bool
    description: dict[str, Any]

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)


def _tifffile():
    try:
        import tifffile
    except ImportError as e:  # pragma: no cover - tifffile is a dependency
        raise ImportError("slide I/O needs tifffile (pip install tifffile)") from e
    return tifffile


def _downsample2(a: np.ndarray) -> np.ndarray:
    """Half size, 2×2 mean (labels: 2×2 top-left sample, so values stay labels)."""
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    a = a[:h, :w]
    if a.dtype.kind in "ui" and (a.ndim == 2):
        return a[::2, ::2].copy()
    x = a.reshape(h // 2, 2, w // 2, 2, *a.shape[2:]).astype(np.float32).mean(axis=(1, 3))
    return np.round(x).astype(a.dtype) if a.dtype.kind in "ui" else x.astype(a.dtype)


def write_slide(path: str | Path, image: np.ndarray, mpp: float | None = 0.5, *, tile: int = 256,
                min_level_size: int = 256, compression: str | None = "zlib", levels: int | None = None,
                description: dict[str, Any] | None = None) -> Path:
    """Write ``image`` ((H, W, 3) uint8 RGB, or (H, W) labels/grey) as a pyramidal tiled TIFF.

    Args:
        mpp: microns per pixel at full resolution (resolution tags + description); None: not recorded.
        tile: tile edge in pixels (a multiple of 16, TIFF's rule).
        min_level_size: stop adding levels once the next one would be smaller than this (both sides).
        compression: ``"zlib"`` (deflate; no extra codec package needed), ``None`` (raw) or any codec
            tifffile supports.
        levels: exact number of levels (1 = no pyramid); default: from ``min_level_size``.
        description: extra JSON-able metadata stored in ImageDescription next to ``mpp``.
    """
    tifffile = _tifffile()
    path = Path(path)
    image = np.ascontiguousarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"image: expected (H, W) or (H, W, 3|4), got shape {image.shape}")
    if tile % 16:
        raise ValueError(f"tile: a multiple of 16, got {tile}")
    pyramid = [image]
    while (levels is None and min(pyramid[-1].shape[:2]) // 2 >= min_level_size) or \
            (levels is not None and len(pyramid) < levels):
        if min(pyramid[-1].shape[:2]) < 2:
            break
        pyramid.append(_downsample2(pyramid[-1]))
    meta = {"mpp": mpp, **(description or {})}
    kw: dict[str, Any] = {"photometric": "rgb" if image.ndim == 3 else "minisblack", "compression": compression,
                          "metadata": None}
    if mpp:
        kw["resolution"] = (1e4 / mpp, 1e4 / mpp)
        kw["resolutionunit"] = "CENTIMETER"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tw:
        for k, level in enumerate(pyramid):
            tiled = min(level.shape[:2]) >= tile
            extra: dict[str, Any] = {"tile": (tile, tile)} if tiled else {}
            if k == 0:
                extra["subifds"] = len(pyramid) - 1
                extra["description"] = json.dumps(meta)
            else:
                extra["subfiletype"] = 1
                if mpp:
                    extra["resolution"] = (1e4 / (mpp * 2 ** k), 1e4 / (mpp * 2 ** k))
            tw.write(level, **{**kw, **extra})
    return path


def _mpp_of(page) -> float | None:
    tags = page.tags
    try:
        unit = int(tags["ResolutionUnit"].value)
        num, den = tags["XResolution"].value
    except (KeyError, TypeError, ValueError):
        return None
    if not num or not den or unit not in (2, 3):
        return None
    per_unit = num / den
    return (1e4 if unit == 3 else 25400.0) / per_unit


def _description(page) -> dict[str, Any]:
    try:
        d = json.loads(page.description or "{}")
    except (ValueError, TypeError):
        return {}
    return d if isinstance(d, dict) else {}


def _levels(tf) -> list:
    series = tf.series[0]
    return [lvl.pages[0] if hasattr(lvl, "pages") else lvl for lvl in series.levels]


def slide_info(path: str | Path) -> SlideInfo:
    """Level sizes, downsamples and microns per pixel, from the headers only."""
    tifffile = _tifffile()
    with tifffile.TiffFile(path) as tf:
        pages = _levels(tf)
        first = pages[0]
        dims = tuple((int(p.imagewidth), int(p.imagelength)) for p in pages)
        mpp = _mpp_of(first)
        desc = _description(first)
        if mpp is None and isinstance(desc.get("mpp"), (int, float)):
            mpp = float(desc["mpp"])
        return SlideInfo(str(path), dims, tuple(dims[0][0] / d[0] for d in dims), mpp, int(first.samplesperpixel),
                         str(first.dtype), bool(first.is_tiled), desc)


def read_level(path: str | Path, level: int = 0) -> np.ndarray:
    """A whole pyramid level as an array ((H, W, C) or (H, W))."""
    tifffile = _tifffile()
    with tifffile.TiffFile(path) as tf:
        pages = _levels(tf)
        if not 0 <= level < len(pages):
            raise ValueError(f"level: the slide has levels 0..{len(pages) - 1}, got {level}")
        return pages[level].asarray()


def read_region(path: str | Path, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
    """The region of ``size`` (width, height) at ``level`` whose top-left is ``location`` (x, y) in
    level-0 pixels (OpenSlide's convention). Only the tiles covering it are decoded; parts outside the
    slide are 0."""
    tifffile = _tifffile()
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"size: expected positive (width, height), got {size}")
    with tifffile.TiffFile(path) as tf:
        pages = _levels(tf)
        if not 0 <= level < len(pages):
            raise ValueError(f"level: the slide has levels 0..{len(pages) - 1}, got {level}")
        page = pages[level]
        ds = pages[0].imagewidth / page.imagewidth
        x0, y0 = int(round(location[0] / ds)), int(round(location[1] / ds))
        H, W = int(page.imagelength), int(page.imagewidth)
        spp = int(page.samplesperpixel)
        out = np.zeros((h, w, spp) if spp > 1 else (h, w), dtype=page.dtype)
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + h, H), min(x0 + w, W)
        if ys >= ye or xs >= xe:
            return out
        if not page.is_tiled:
            arr = page.asarray()
            out[ys - y0:ye - y0, xs - x0:xe - x0] = arr[ys:ye, xs:xe]
            return out
        th, tw = int(page.tilelength), int(page.tilewidth)
        across = (W + tw - 1) // tw
        fh = tf.filehandle
        for ty in range(ys // th, (ye - 1) // th + 1):
            for tx in range(xs // tw, (xe - 1) // tw + 1):
                index = ty * across + tx
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                fh.seek(offset)
                data = fh.read(count)
                segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
                seg = np.asarray(segment).reshape(th, tw, spp) if spp > 1 else np.asarray(segment).reshape(th, tw)
                ty0, tx0 = ty * th, tx * tw
                a0, a1 = max(ys, ty0), min(ye, ty0 + th)
                b0, b1 = max(xs, tx0), min(xe, tx0 + tw)
                out[a0 - y0:a1 - y0, b0 - x0:b1 - x0] = seg[a0 - ty0:a1 - ty0, b0 - tx0:b1 - tx0]
        return out


def write_tile(path: str | Path, image: np.ndarray, mpp: float | None = None) -> Path:
    """A plain tile: ``.png`` (Pillow) or single-level ``.tif``/``.tiff`` (tifffile, mpp in the tags)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(image)).save(path)
        return path
    return write_slide(path, image, mpp, levels=1)


def read_tile(path: str | Path) -> np.ndarray:
    """A plain tile (PNG/JPEG via Pillow, TIFF via tifffile: its full-resolution level)."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_level(path, 0)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


read_image = read_tile


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a tile or slide (level 0) from its header."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return slide_info(path).dimensions
    from PIL import Image

    with Image.open(path) as im:
        return im.size
