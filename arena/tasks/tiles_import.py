"""Real pathology tiles (JPEG/PNG with a JSON index of boxes) into the container contract's form.

Containers of tile tasks receive a tiled TIFF with the pixel size in its resolution tags
(:func:`arena.datasets.slides.write_slide`); real data sets ship JPEG tiles and a box list instead. This module
turns one into the other, at load time, straight into the case store:

- :func:`read_tile_index` reads and checks a ``tiles.json`` index (DigestPath's layout: per tile ``tile``,
  ``slide``, ``kind`` positive/negative, ``width``, ``height``, ``boxes_xyxy`` in pixels, x right, y down).
  Every entry is checked before anything is returned: the tile file is there, its header gives the size the
  index states, every box lies inside the tile (1 px of slack for an annotation tool counting from 1) and has
  positive width and height. A problem raises :class:`TileImportError` naming the file, so a loader that
  calls it lists no case at all when one entry is wrong (nothing half-loaded).
- :func:`jpeg_to_tiled_tiff` decodes a JPEG/PNG once (Pillow) and writes its pixels losslessly (deflate) as a
  pyramidal tiled TIFF with the pixel size (µm/px) in the resolution tags and the description.
- :func:`boxes_reference` gives a tile's reference in the tile kind's JSON format (grand-challenge "Multiple
  2D bounding boxes" plus ``image_size``); boxes are clipped to the tile (the 1 px slack above).
- :func:`import_tile` does both for one case into a case-store folder, each file written to a temporary
  name first and renamed, so an interrupted import leaves no half-written case file.

Pure: files in, files out; no database, no settings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from arena.datasets.pathology import boxes_to_gc
from arena.datasets.slides import write_slide

__all__ = ["SOURCE_SUFFIXES", "TileEntry", "TileImportError", "read_tile_index", "tile_entry", "jpeg_to_tiled_tiff",
           "boxes_reference", "import_tile", "BOX_SLACK_PX"]

#: Tile files this module converts (anything else is stored as it is by the case store).
SOURCE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: Boxes may reach this many pixels past the tile's edge (annotation tools that count pixels from 1).
BOX_SLACK_PX = 1.0
KINDS = ("positive", "negative")


class TileImportError(ValueError):
    """A tile index or tile that cannot be imported; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TileEntry:
    """One tile of an index: file name, slide, kind, size in pixels and its boxes ((N, 4) x0, y0, x1, y1)."""

    tile: str
    slide: str
    kind: str
    width: int
    height: int
    boxes: np.ndarray = field(repr=False)
    positive: bool = False  # kind "positive": the tile holds annotated cells


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except OSError as e:
        raise TileImportError(f"{path}: not a readable image ({e})") from None


def _entry(index: Path, i: int, row: Any) -> TileEntry:
    where = f"{index}: entry {i}"
    if not isinstance(row, dict):
        raise TileImportError(f"{where}: expected an object, got {type(row).__name__}")
    missing = [k for k in ("tile", "slide", "kind", "width", "height", "boxes_xyxy") if k not in row]
    if missing:
        raise TileImportError(f"{where}: missing {', '.join(missing)}")
    name = row["tile"]
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise TileImportError(f"{where}: 'tile' must be a plain file name, got {name!r}")
    where = f"{index}: tile {name}"
    if row["kind"] not in KINDS:
        raise TileImportError(f"{where}: kind must be one of {list(KINDS)}, got {row['kind']!r}")
    try:
        w, h = int(row["width"]), int(row["height"])
        boxes = np.asarray(row["boxes_xyxy"], dtype=float).reshape(-1, 4)
    except (TypeError, ValueError):
        raise TileImportError(f"{where}: width/height must be integers and boxes_xyxy a list of [x0, y0, x1, y1]") \
            from None
    if w <= 0 or h <= 0:
        raise TileImportError(f"{where}: width and height must be positive, got {w}×{h}")
    if not np.isfinite(boxes).all():
        raise TileImportError(f"{where}: boxes_xyxy holds a non-finite number")
    s = BOX_SLACK_PX
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        if not (x1 > x0 and y1 > y0):
            raise TileImportError(f"{where}: box {k} {[x0, y0, x1, y1]} has no positive width and height")
        if x0 < -s or y0 < -s or x1 > w + s or y1 > h + s:
            raise TileImportError(f"{where}: box {k} {[x0, y0, x1, y1]} lies outside the {w}×{h} px tile")
    if (row["kind"] == "negative") != (len(boxes) == 0):
        raise TileImportError(f"{where}: a {row['kind']} tile with {len(boxes)} boxes (positive tiles have boxes, "
                              "negative tiles none)")
    return TileEntry(name, str(row["slide"]), row["kind"], w, h, boxes, positive=row["kind"] == "positive")


def _entries(index: Path, rows: Any) -> list[TileEntry]:
    """The checked entries of an index already parsed from ``index`` (named in the errors)."""
    if not isinstance(rows, list):
        raise TileImportError(f"{index}: expected a list of tiles, got {type(rows).__name__}")
    entries = [_entry(index, i, r) for i, r in enumerate(rows)]
    names = [e.tile for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TileImportError(f"{index}: tiles named more than once: {dup[:5]}")
    return entries


def _find(index: Path, entries: list[TileEntry], tile: str) -> TileEntry:
    for e in entries:
        if e.tile == tile:
            return e
    raise TileImportError(f"{index}: does not list the tile {tile}")


def read_tile_index(index: str | Path, tiles_dir: str | Path | None = None, check_images: bool = True) -> list[TileEntry]:
    """Read and check a tile index (``tiles.json``); returns its entries in file order.

    Args:
        index: the JSON file (a list of objects, see the module docstring).
        tiles_dir: the folder holding the tiles (default: ``tiles/`` beside the index).
        check_images: also check that each tile file exists and that its header gives the size the index
            states (reads the image headers only, not the pixels).

    Raises:
        TileImportError: naming the index or the tile file: not JSON, not a list, a malformed entry, a tile
            named twice, a tile that is not there, a size that differs, a box outside the tile.
    """
    index = Path(index)
    tiles_dir = Path(tiles_dir) if tiles_dir is not None else index.parent / "tiles"
    try:
        rows = json.loads(index.read_text())
    except FileNotFoundError:
        raise TileImportError(f"{index}: tile index not found") from None
    except ValueError as e:
        raise TileImportError(f"{index}: not valid JSON ({e})") from None
    entries = _entries(index, rows)
    if check_images:
        absent = [e.tile for e in entries if not (tiles_dir / e.tile).is_file()]
        if absent:
            more = f" (and {len(absent) - 3} more)" if len(absent) > 3 else ""
            raise TileImportError(f"{index}: names tiles that are not in {tiles_dir}: "
                                  + ", ".join(str(tiles_dir / a) for a in absent[:3]) + more)
        for e in entries:
            size = _image_size(tiles_dir / e.tile)
            if size != (e.width, e.height):
                raise TileImportError(f"{tiles_dir / e.tile}: the tile is {size[0]}×{size[1]} px but {index} says "
                                      f"{e.width}×{e.height}")
    return entries


def tile_entry(index: str | Path, tile: str) -> TileEntry:
    """The entry of ``tile`` (a file name) in ``index`` (checked as :func:`read_tile_index` does, without
    reading the images); :class:`TileImportError` when the index does not list it."""
    return _find(Path(index), read_tile_index(index, check_images=False), tile)


def boxes_reference(entry: TileEntry) -> dict[str, Any]:
    """The tile's reference in the tile kind's format: grand-challenge "Multiple 2D bounding boxes" with
    ``image_size`` = [width, height]; boxes clipped to the tile (pixels, x right, y down)."""
    b = entry.boxes.copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, entry.width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, entry.height)
    ref = boxes_to_gc(b)
    ref["image_size"] = [entry.width, entry.height]
    return ref


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def jpeg_to_tiled_tiff(src: str | Path, dst: str | Path, mpp: float, description: dict[str, Any] | None = None,
                       tile: int = 256) -> Path:
    """Write the pixels of ``src`` (JPEG/PNG, decoded once, as RGB) to ``dst`` as a pyramidal tiled TIFF
    (deflate, lossless: the container sees exactly the decoded pixels) with ``mpp`` µm/px in the resolution
    tags. ``description``: extra JSON metadata (keep case-identifying names out of it). Written under a
    temporary name and renamed: ``dst`` is either complete or absent.

    Raises:
        TileImportError: ``src`` is not a readable image, or ``mpp`` is not a positive number.
    """
    src, dst = Path(src), Path(dst)
    if not isinstance(mpp, (int, float)) or not mpp > 0:
        raise TileImportError(f"{src}: a pixel size (mpp > 0, µm/px) is needed to write the tile, got {mpp!r}")
    try:
        with Image.open(src) as im:
            rgb = np.asarray(im.convert("RGB"))
    except OSError as e:
        raise TileImportError(f"{src}: not a readable image ({e})") from None
    tmp = _tmp(dst)
    try:
        write_slide(tmp, rgb, float(mpp), tile=tile, description=description)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def import_tile(image: str | Path, reference: str | Path, dest: str | Path, mpp: float) -> tuple[Path, Path]:
    """Convert one real tile into ``dest/image.tif`` and ``dest/reference.json``.

    ``reference``: either a tile index (a JSON list, e.g. DigestPath's ``tiles.json``; the entry named like
    ``image`` is taken and checked, and the tile's size must match it) or a ready reference in the tile kind's
    format (copied, with ``image_size`` added). ``mpp``: the tile's pixel size in µm/px.

    Returns (image path, reference path). Nothing is written when a check fails.
    """
    image, reference, dest = Path(image), Path(reference), Path(dest)
    try:
        doc = json.loads(reference.read_text())
    except (OSError, ValueError) as e:
        raise TileImportError(f"{reference}: not a readable JSON reference ({e})") from None
    size = _image_size(image)
    if isinstance(doc, list):
        entry = _find(reference, _entries(reference, doc), image.name)  # the index parsed above, not read again
        if size != (entry.width, entry.height):
            raise TileImportError(f"{image}: the tile is {size[0]}×{size[1]} px but {reference} says "
                                  f"{entry.width}×{entry.height}")
        ref = boxes_reference(entry)
    elif isinstance(doc, dict) and doc.get("type") == "Multiple 2D bounding boxes":
        ref = {**doc, "image_size": [size[0], size[1]]}
    else:
        raise TileImportError(f"{reference}: expected a tile index (a list) or a \"Multiple 2D bounding boxes\" "
                              "reference")
    dest.mkdir(parents=True, exist_ok=True)
    img_dst, ref_dst = dest / "image.tif", dest / "reference.json"
    jpeg_to_tiled_tiff(image, img_dst, mpp)  # no file name in the TIFF: hidden cases stay unidentifiable
    tmp = _tmp(ref_dst)
    try:
        tmp.write_text(json.dumps(ref))
        tmp.replace(ref_dst)
    finally:
        tmp.unlink(missing_ok=True)
    return img_dst, ref_dst
