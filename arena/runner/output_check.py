"""Checking a segmentation output against its case image before it is scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from arena.metrics.files import geometry_mismatch
from arena.runner.contract import OutputError



def read_checked_output(path: Path, reference: sitk.Image, labels: set[int]) -> np.ndarray:
    """Check the output file's header (geometry, pixel type) against the case image BEFORE reading its
    voxels, then read and check labels. A 1 MB compressed file whose header claims 1024³ voxels is
    refused without inflating it."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise OutputError(f"the output {path.name} is not a readable image ({last[:200]})") from None
    problem = geometry_mismatch(reader, reference, "the output", "the case image")
    if problem:
        raise OutputError(problem)
    if reader.GetNumberOfComponents() != 1:
        raise OutputError(f"the output has {reader.GetNumberOfComponents()} components per voxel, expected 1")
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if "integer" not in pixel:
        raise OutputError(f"the output's pixel type is {pixel}: expected an integer label map (e.g. uint8)")
    try:
        image = reader.Execute()
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise OutputError(f"the output {path.name} could not be read ({last[:200]})") from None
    return check_segmentation(image, reference, labels)


def check_segmentation(output: sitk.Image, reference: sitk.Image, labels: set[int]) -> np.ndarray:
    """Return the output as an integer array (z, y, x) if it matches the reference's geometry and labels.

    Raises OutputError naming the first mismatch: dimension, size, spacing, origin, direction,
    pixel type (must be an integer type with one component) or label values outside ``labels`` ∪ {0}.
    """
    problem = geometry_mismatch(output, reference, "the output", "the case image")
    if problem:
        raise OutputError(problem)
    if output.GetNumberOfComponentsPerPixel() != 1:
        raise OutputError(f"the output has {output.GetNumberOfComponentsPerPixel()} components per voxel, expected 1")
    arr = sitk.GetArrayFromImage(output)  # a copy: a view would dangle once the image is freed
    if not np.issubdtype(arr.dtype, np.integer):
        raise OutputError(f"the output's pixel type is {output.GetPixelIDTypeAsString()}: expected an integer label map "
                          "(e.g. uint8)")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise OutputError(f"the output has negative label values (min {lo})")
    values = np.flatnonzero(np.bincount(arr.ravel())) if hi < 65536 else np.unique(arr)
    extra = sorted(int(v) for v in values if v != 0 and int(v) not in labels)
    if extra:
        raise OutputError(f"the output has label values not in the task's label map: {extra[:10]}")
    return arr


# --------------------------------------------------------------------------------------------------
# tile (pathology) outputs: grand-challenge bounding-box JSON, value JSON, 2-D masks
# --------------------------------------------------------------------------------------------------

BOXES_TYPE = "Multiple 2D bounding boxes"


def _load_json(path: Path, max_mb: float, name: str):
    import json

    size = path.stat().st_size
    if size > max_mb * 2**20:
        raise OutputError(f"{name}: {size / 2**20:.1f} MB, over the task's {max_mb:g} MB limit for a JSON output")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OutputError(f"{name}: not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise OutputError(f"{name}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise OutputError(f"{name}: not valid JSON (nested too deeply)") from None


def _number(v, where: str) -> float:
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise OutputError(f"{where}: expected a number, got {type(v).__name__} {str(v)[:40]!r}")
    v = float(v)
    if not math.isfinite(v):
        raise OutputError(f"{where}: expected a finite number, got {v}")
    return v


def read_checked_boxes(path: Path, width: int, height: int, *, max_boxes: int = 5000, max_mb: float = 16,
                       image=None):
    """Read a grand-challenge "Multiple 2D bounding boxes" output and check it for a ``width`` × ``height``
    tile; returns a table ``image, x0, y0, x1, y1, probability`` (pixels, arena.metrics.detection's form).

    Every box needs 4 corners ``[x, y]`` or ``[x, y, z]`` (numbers; z equal on all corners and otherwise
    ignored: a tile is 2-D), a positive area, all corners inside the image (0 ≤ x ≤ width, 0 ≤ y ≤ height)
    and a ``probability`` in [0, 1]. Errors name the file, the box index and the key.
    """
    import pandas as pd

    name = path.name
    doc = _load_json(path, max_mb, name)
    if not isinstance(doc, dict):
        raise OutputError(f'{name}: expected a JSON object {{"type": "{BOXES_TYPE}", "boxes": [...]}}, '
                          f"got a {type(doc).__name__}")
    if doc.get("type") != BOXES_TYPE:
        raise OutputError(f'{name}: "type" must be "{BOXES_TYPE}", got {doc.get("type")!r}')
    boxes = doc.get("boxes")
    if not isinstance(boxes, list):
        raise OutputError(f'{name}: "boxes" must be a list, got {type(boxes).__name__}')
    if len(boxes) > max_boxes:
        raise OutputError(f"{name}: {len(boxes)} boxes, more than the task's limit of {max_boxes} per image")
    rows = []
    for k, b in enumerate(boxes):
        where = f"{name}: boxes[{k}]"
        if not isinstance(b, dict):
            raise OutputError(f"{where}: expected an object with 'corners' and 'probability'")
        corners = b.get("corners")
        if not isinstance(corners, list) or len(corners) != 4:
            raise OutputError(f"{where}.corners: expected 4 points [x, y] or [x, y, z], got {str(corners)[:80]}")
        xs, ys, zs = [], [], set()
        for c, pt in enumerate(corners):
            if not isinstance(pt, list) or len(pt) not in (2, 3):
                raise OutputError(f"{where}.corners[{c}]: expected [x, y] or [x, y, z], got {str(pt)[:60]}")
            xs.append(_number(pt[0], f"{where}.corners[{c}][0]"))
            ys.append(_number(pt[1], f"{where}.corners[{c}][1]"))
            if len(pt) == 3:
                zs.add(_number(pt[2], f"{where}.corners[{c}][2]"))
        if len(zs) > 1:
            raise OutputError(f"{where}.corners: corners on different z {sorted(zs)}")
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise OutputError(f"{where}: box ({x0:g}, {y0:g})–({x1:g}, {y1:g}) is not inside the "
                              f"{width}×{height} image (pixels, 0 ≤ x ≤ {width}, 0 ≤ y ≤ {height})")
        if x1 <= x0 or y1 <= y0:
            raise OutputError(f"{where}: empty box ({x0:g}, {y0:g})–({x1:g}, {y1:g}): width and height must be > 0")
        if "probability" not in b:
            raise OutputError(f"{where}: missing 'probability' (a number in [0, 1])")
        p = _number(b["probability"], f"{where}.probability")
        if not 0.0 <= p <= 1.0:
            raise OutputError(f"{where}.probability: expected a number in [0, 1], got {p:g}")
        rows.append((x0, y0, x1, y1, p))
    df = pd.DataFrame(rows, columns=["x0", "y0", "x1", "y1", "probability"], dtype=float)
    df.insert(0, "image", image if image is not None else name)
    return df


def read_checked_value(path: Path, *, low: float = 0.0, high: float = 1.0, max_mb: float = 1) -> float:
    """A grand-challenge value output: a bare JSON number (``0.83``) in [low, high]."""
    v = _load_json(path, max_mb, path.name)
    if isinstance(v, dict) and set(v) == {"value"}:  # tolerated: {"value": 0.83}
        v = v["value"]
    p = _number(v, path.name)
    if not low <= p <= high:
        raise OutputError(f"{path.name}: expected a number in [{low:g}, {high:g}], got {p:g}")
    return p


def read_checked_tile_mask(path: Path, width: int, height: int, labels: set[int]) -> np.ndarray:
    """A 2-D label mask (TIFF, PNG or 2-D .mha) for a ``width`` × ``height`` tile: the size is checked from
    the header before the pixels are read; then integer type and label values (0 or the task's)."""
    suffix = path.name.lower().rsplit(".", 1)[-1]
    try:
        if suffix in ("tif", "tiff"):
            from arena.datasets.slides import slide_info

            info = slide_info(path)
            shape, samples = (info.dimensions[1], info.dimensions[0]), info.samples
        elif suffix == "png":
            from PIL import Image

            with Image.open(path) as im:
                shape, samples = (im.size[1], im.size[0]), len(im.getbands())
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            size = reader.GetSize()
            if len(size) == 3 and size[2] == 1:
                size = size[:2]
            if len(size) != 2:
                raise OutputError(f"the output mask {path.name} is {len(size)}-D: expected a 2-D image")
            shape, samples = (size[1], size[0]), reader.GetNumberOfComponents()
    except OutputError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is the output's fault
        raise OutputError(f"the output mask {path.name} is not a readable image ({str(e)[:160]})") from None
    if shape != (height, width):
        raise OutputError(f"the output mask is {shape[1]}×{shape[0]} pixels: expected the tile's {width}×{height}")
    if samples != 1:
        raise OutputError(f"the output mask has {samples} channels per pixel: expected 1 (a label map)")
    try:
        if suffix in ("tif", "tiff"):
            from arena.datasets.slides import read_level

            arr = read_level(path, 0)
        elif suffix == "png":
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
        else:
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).reshape(height, width)
    except Exception as e:  # noqa: BLE001
        raise OutputError(f"the output mask {path.name} could not be read ({str(e)[:160]})") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise OutputError(f"the output mask's pixel type is {arr.dtype}: expected integers (e.g. uint8)")
    values = np.unique(arr)
    extra = sorted(int(v) for v in values if v != 0 and int(v) not in labels)
    if extra:
        raise OutputError(f"the output mask has values not in the task's label map {sorted(labels)}: {extra[:10]}")
    return arr
