"""The viewer's volumes: read once from .mha/.nii(.gz) with SimpleITK, reoriented to LPS, kept as plain
.npy files in a bounded cache and memory-mapped from then on (a slice is then a few page reads).

Cache layout under ``root`` (``ARENA_HOME/viewer-cache``):

- ``cases/<case id>/{ct,reference}.npy`` and ``.json`` (shape, spacing, the source's size and mtime);
- ``evaluations/<evaluation id>/<case id>/prediction.npy`` and ``.json``, and ``jump.json`` (the
  jump-to targets of :mod:`arena.viewer.jump`).

An entry whose source file changed (size or mtime) is rebuilt; a folder's mtime is touched on use.
:func:`prune` keeps the cache under its byte budget (least recently used entries first) and removes the
entries of evaluations whose results folder is gone, so the viewer never keeps an output the platform
no longer keeps. Writes go to a temporary name and are renamed into place: a reader never sees half a
file, and concurrent writers of the same entry both end with a complete one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import SimpleITK as sitk

from arena.tasks.convert import read_image

Kind = Literal["image", "labels"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Volume:
    """A volume in (z, y, x) LPS order with its spacing in mm per array axis."""

    array: np.ndarray
    spacing: tuple[float, float, float]


class _ImageArray(np.ndarray):
    """A numpy view of a SimpleITK image's pixels that keeps the image alive: every view taken of it
    refers back to it (numpy's ``base``), and it holds the image, so the pixels outlive no reader."""

    image: sitk.Image | None = None


def _view(img: sitk.Image) -> np.ndarray:
    arr = sitk.GetArrayViewFromImage(img).view(_ImageArray)
    arr.image = img
    return arr


def read_volume(path: Path, kind: Kind) -> Volume:
    """Read a 3-D image (``kind="image"``: CT values as int16 when they fit, else float32) or label map
    (``kind="labels"``: uint8, or uint16 above 255), reoriented to LPS. The array is read-only.

    Raises ValueError naming ``path`` for a file that is not a 3-D scalar image, a label map that is not
    integer or has negative labels; FileNotFoundError when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    img = read_image(path)  # the case reader: CaseFormatError (a ValueError) naming the file
    if not np.allclose(img.GetDirection(), np.eye(3).ravel(), atol=1e-6):  # already LPS: no copy needed
        img = sitk.DICOMOrient(img, "LPS")
    arr = _view(img)  # no copy of the pixels
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
    if kind == "labels":
        if arr.dtype in (np.uint8, np.uint16):
            return Volume(arr, spacing)  # type: ignore[arg-type]
        if not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{path}: a label map must hold integers, got {arr.dtype} values")
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0:
            raise ValueError(f"{path}: label maps hold labels ≥ 0, found {lo}")
        return Volume(arr.astype(np.uint8 if hi <= 255 else np.uint16), spacing)  # type: ignore[arg-type]
    if arr.dtype in (np.int16, np.uint8, np.int8):
        return Volume(arr, spacing)  # type: ignore[arg-type]
    if np.issubdtype(arr.dtype, np.integer) and arr.size and arr.min() >= -32768 and arr.max() <= 32767:
        return Volume(arr.astype(np.int16), spacing)  # type: ignore[arg-type]
    return Volume(arr.astype(np.float32), spacing)  # type: ignore[arg-type]


def file_stamp(source: Path) -> dict:
    """What identifies a source file's version: resolved path, size, mtime."""
    st = source.stat()
    return {"source": str(source.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Volumes this process opened lately (memory-mapped .npy files; a freshly read array until its .npy is
# written), keyed by the cache file and the source's stamp: the next slice of an open case reads no file.
_OPEN: OrderedDict[tuple[str, str], Volume] = OrderedDict()
_OPEN_MAX = 16
_LOCK = threading.Lock()
_WRITERS: list[threading.Thread] = []


def _remember(key: tuple[str, str], vol: Volume) -> None:
    with _LOCK:
        _OPEN[key] = vol
        _OPEN.move_to_end(key)
        while len(_OPEN) > _OPEN_MAX:
            _OPEN.popitem(last=False)


def forget_open() -> None:
    """Drop this process's open volumes (the next look goes to the disk cache)."""
    with _LOCK:
        _OPEN.clear()


def wait_for_writes(timeout: float | None = None) -> None:
    """Wait until the cache files being written in the background are written (tests, benchmarks)."""
    with _LOCK:
        writers = list(_WRITERS)
    for t in writers:
        t.join(timeout)


def _save_npy(f, arr: np.ndarray) -> None:
    """``np.save`` in two writes (header, then the pixels straight from memory): the file write releases the
    GIL, so a background write does not hold up the requests of the same process (``ndarray.tofile`` does)."""
    arr = np.ascontiguousarray(arr)
    np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(arr))
    f.write(memoryview(arr.reshape(-1).view(np.uint8)))


def cached_volume(folder: Path, name: str, source: Path, kind: Kind, background: bool = True,
                  on_new: Callable[[], object] | None = None) -> Volume:
    """``source`` as an array: this process's open copy, else ``folder/<name>.npy`` memory-mapped when it was
    made from this very file (same path, size and mtime), else read (:func:`read_volume`) and written there
    — in a background thread with ``background`` (the first slice does not wait for the disk; a failed
    write only means the next process reads the source again). ``on_new`` is called after a new file is
    written (the caller's chance to prune)."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    stamp = file_stamp(source)
    meta_path, npy_path = folder / f"{name}.json", folder / f"{name}.npy"
    key = (str(npy_path), json.dumps(stamp, sort_keys=True))
    with _LOCK:
        vol = _OPEN.get(key)
    if vol is not None:
        _remember(key, vol)
        return vol
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("stamp") == stamp and npy_path.is_file():
            os.utime(folder)  # recently used (prune's order)
            vol = Volume(np.load(npy_path, mmap_mode="r"), tuple(meta["spacing"]))  # type: ignore[arg-type]
            _remember(key, vol)
            return vol
    except (OSError, ValueError, KeyError):
        pass
    vol = read_volume(source, kind)
    _remember(key, vol)

    def write() -> None:
        _write_atomic(npy_path, lambda f: _save_npy(f, vol.array))
        _write_atomic(meta_path, lambda f: f.write(json.dumps({"stamp": stamp, "spacing": vol.spacing,
                                                               "shape": vol.array.shape}).encode()))
        _remember(key, Volume(np.load(npy_path, mmap_mode="r"), vol.spacing))  # the file, not the copy
        if on_new is not None:
            on_new()

    if not background:
        write()
        return vol

    def write_quietly() -> None:
        try:
            write()
        except OSError as e:  # a full disk, a pruned folder: the cache just misses next time
            log.warning("viewer cache: could not write %s: %s", npy_path, e)
            with _LOCK:
                _OPEN.pop(key, None)  # never keep a whole volume in memory for want of its file
        finally:
            with _LOCK:
                _WRITERS.remove(threading.current_thread())

    t = threading.Thread(target=write_quietly, name=f"viewer-cache {npy_path.name}", daemon=True)
    with _LOCK:
        _WRITERS.append(t)
    t.start()
    return vol


def case_folder(root: Path, case_id: int) -> Path:
    return Path(root) / "cases" / str(int(case_id))


def evaluation_folder(root: Path, evaluation_id: int, case_id: int) -> Path:
    return Path(root) / "evaluations" / str(int(evaluation_id)) / str(int(case_id))


def check_same_grid(ct: Volume, other: Volume, what: str) -> None:
    """Raise ValueError naming ``what`` when ``other`` is not on the CT's grid (shape, spacing to 1e-3 mm)."""
    if other.array.shape != ct.array.shape:
        raise ValueError(f"{what}: shape {other.array.shape} (z, y, x) differs from the CT's {ct.array.shape}")
    if not np.allclose(other.spacing, ct.spacing, atol=1e-3):
        raise ValueError(f"{what}: spacing {other.spacing} mm differs from the CT's {ct.spacing}")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    _write_atomic(Path(path), lambda f: f.write(json.dumps(data).encode()))


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def prune(root: Path, results_root: Path, max_bytes: int) -> list[Path]:
    """Keep the cache at ``root`` within ``max_bytes``; return the entry folders removed.

    First the entries of evaluations whose results folder (``results_root/evaluation-<id>``) no longer
    exists (the evaluation's outputs were removed: the viewer drops its copies with them); then, while the
    cache is over budget, the least recently used entries (a case's CT folder or one evaluation's case)."""
    root = Path(root)
    removed: list[Path] = []
    evals = root / "evaluations"
    if evals.is_dir():
        for d in evals.iterdir():
            if d.name.isdigit() and not (Path(results_root) / f"evaluation-{d.name}").is_dir():
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    entries: list[tuple[float, int, Path]] = []
    for parent in ((root / "cases"), *(sorted(evals.iterdir()) if evals.is_dir() else [])):
        if parent.is_dir():
            for d in parent.iterdir():
                if d.is_dir():
                    entries.append((d.stat().st_mtime, _size(d), d))
    total = sum(e[1] for e in entries)
    for _, size, d in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        total -= size
    return removed
