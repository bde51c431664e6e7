"""Checking a participant's output against its case before it is scored.

Output images are written by untrusted code: their headers are checked byte by byte
(:func:`arena.runner.untrusted_reader.check_header`: no header may name a data file other than itself)
and their voxels are read in a bubblewrap jail (:func:`read_in_jail`) that sees only that one file, so
neither a header trick nor a parser bug reaches the case's reference or the host's files.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from arena.metrics.files import geometry_mismatch
from arena.runner import untrusted_reader
from arena.runner.contract import OutputError
from arena.runner.untrusted_reader import HeaderError, check_header

JAIL_TIMEOUT_S = 300.0  # reading one output image; a reader still busy then is killed
NOBODY = 65534
# the jailed reader's whole environment: one ITK thread, small malloc arenas, nothing of the worker's
_JAIL_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
             "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}


class ReaderUnavailable(RuntimeError):
    """The jail that reads participant outputs cannot run on this worker (a platform fault, never the
    participant's): bubblewrap is missing or namespaces are not permitted."""


def _python_roots() -> list[str]:
    """Folders the jailed Python needs (its prefixes and the site folders of numpy, SimpleITK, tifffile,
    Pillow), outside /usr, without nesting."""
    import PIL
    import tifffile

    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for mod in (np, sitk, tifffile, PIL):
        dirs.add(str(Path(mod.__file__).resolve().parent.parent))
    dirs.add(str(Path(sys.executable).resolve().parent.parent))
    keep = sorted(d for d in {os.path.realpath(d) for d in dirs} if not (d + "/").startswith("/usr/"))
    return [d for d in keep if not any(d != o and d.startswith(o + "/") for o in keep)]


@functools.lru_cache(maxsize=1)
def _jail_base() -> tuple[str, ...]:
    """The bwrap arguments shared by every read: namespaces, a read-only /usr and Python, no /etc, no
    store, no home; user nobody without capabilities when run as root."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ReaderUnavailable("bubblewrap (bwrap) is not installed; the worker reads participant outputs only "
                                "inside it: apt-get install bubblewrap (scripts/setup.sh does)")
    args = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    if os.geteuid() != 0:
        args.append("--unshare-user")  # unprivileged bwrap: a user namespace instead of setpriv
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    made = {"/", "/usr"}
    for root in _python_roots():
        parts = Path(root).parts
        for i in range(2, len(parts)):
            parent = str(Path(*parts[:i]))
            if parent not in made:
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        args += ["--ro-bind", root, root]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/"]
    return tuple(args)


def _python_as_nobody() -> list[str]:
    """The jailed program's start: as root, setpriv to nobody without capabilities first; then Python,
    isolated from the environment and the user's site folder."""
    drop = [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"] if os.geteuid() == 0 else []
    return [*drop, os.path.realpath(sys.executable), "-I"]


def _jail_command(file: Path, out_dir: Path, request: dict) -> list[str]:
    inside = f"/in/{file.name}"
    req = {**request, "path": inside, "out": "/out"}
    return [*_jail_base(), "--perms", "0755", "--dir", "/in", "--perms", "0755", "--dir", "/reader",
            "--ro-bind", str(file), inside, "--bind", str(out_dir), "/out",
            "--ro-bind", untrusted_reader.__file__, "/reader/untrusted_reader.py", "--",
            *_python_as_nobody(), "/reader/untrusted_reader.py", json.dumps(req)]


@functools.lru_cache(maxsize=1)
def jail_problem() -> str | None:
    """None when outputs can be read in the jail here; else why not, in words (checked once per process)."""
    try:
        base = _jail_base()
    except ReaderUnavailable as e:
        return str(e)
    probe = [*base, "--", *_python_as_nobody(), "-c", "import numpy, SimpleITK, tifffile, PIL"]
    try:
        r = subprocess.run(probe, capture_output=True, text=True, timeout=60, env=_JAIL_ENV)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"the output-reading jail (bubblewrap) could not start: {e}"
    if r.returncode != 0:
        return f"the output-reading jail (bubblewrap) failed: {(r.stderr.strip().splitlines() or ['?'])[-1][:300]}"
    return None


def read_in_jail(file: Path, request: dict, max_array_bytes: int) -> tuple[dict, np.ndarray | None]:
    """Read one participant output file in the jail; returns (header, array or None).

    ``request``: ``mode`` (``volume`` | ``mask``), ``formats`` and, for volumes, ``voxels`` (the case
    image's voxel count: a header claiming another size is answered without inflating anything), for
    masks ``width``/``height``. ``max_array_bytes`` caps the array file the jail may write.
    Raises OutputError (the participant's fault: unreadable, refused header, reader crashed or
    ran past JAIL_TIMEOUT_S) or ReaderUnavailable (the platform's).
    """
    problem = jail_problem()
    if problem:
        raise ReaderUnavailable(problem)
    out_dir = Path(tempfile.mkdtemp(prefix="arena-read-"))
    try:
        if os.geteuid() == 0:
            os.chown(out_dir, NOBODY, NOBODY)
        else:
            os.chmod(out_dir, 0o777)
        limit = max_array_bytes + 1024 * 1024

        def limits() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        try:
            r = subprocess.run(_jail_command(file, out_dir, request), capture_output=True, text=True,
                               timeout=JAIL_TIMEOUT_S, env=_JAIL_ENV, preexec_fn=limits)
        except subprocess.TimeoutExpired:
            raise OutputError(f"the output {file.name} could not be read within {JAIL_TIMEOUT_S:g} s") from None
        lines = r.stdout.strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            answer = None
        if r.returncode != 0 or not isinstance(answer, dict):
            how = f"signal {-r.returncode}" if r.returncode < 0 else f"exit code {r.returncode}"
            last = (r.stderr.strip().splitlines() or [""])[-1][:200]
            raise OutputError(f"the output {file.name} could not be read (the reader stopped: {how}{'; ' + last if last else ''})")
        if "error" in answer:
            raise OutputError(str(answer["error"])[:500])
        array = None
        if answer.get("array"):
            array = np.load(out_dir / "array.npy", allow_pickle=False)
            if not array.flags.owndata:  # np.load may answer a reshaped view: keep an array of its own
                array = array.copy()
        return answer.get("header") or {}, array
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


@dataclass(frozen=True)
class _Header:
    """An output's geometry as the jail reported it, in SimpleITK's accessor names (for geometry_mismatch)."""

    dimension: int
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def GetDimension(self) -> int:  # noqa: N802 - SimpleITK's names
        return self.dimension

    def GetSize(self) -> tuple[int, ...]:  # noqa: N802
        return self.size

    def GetSpacing(self) -> tuple[float, ...]:  # noqa: N802
        return self.spacing

    def GetOrigin(self) -> tuple[float, ...]:  # noqa: N802
        return self.origin

    def GetDirection(self) -> tuple[float, ...]:  # noqa: N802
        return self.direction


def _is_default_geometry(head: _Header) -> bool:
    """ITK's default header: spacing 1, origin 0, identity direction (what GetImageFromArray gives)."""
    n = head.dimension
    return (np.allclose(head.spacing, 1.0, rtol=0, atol=1e-9) and np.allclose(head.origin, 0.0, rtol=0, atol=1e-9)
            and np.allclose(np.reshape(head.direction, (n, n)), np.eye(n), rtol=0, atol=1e-9))


def read_checked_output(path: Path, reference: sitk.Image, labels: set[int],
                        formats: list[str] | None = None, geometry: str = "strict",
                        warnings: list[str] | None = None) -> np.ndarray:
    """Read a participant's segmentation output and check it against the case image.

    The header is checked in this process (:func:`check_header`: format, no detached data file); the
    image is read in the jail, which reports the header (geometry, pixel type) and reads the voxels only
    when their count matches the case image's — a 1 MB compressed file whose header claims 1024³ voxels
    is refused without inflating it. Then geometry, pixel type and label values are checked here.
    ``formats``: the task's accepted output formats (None: .mha, .nii.gz, .nrrd, .tif/.tiff).
    ``geometry``: ``strict`` or ``adopt-default`` (an output of the case image's size whose header is exactly
    the default one takes the case image's geometry; a sentence is appended to ``warnings``).
    Raises OutputError naming the first problem.
    """
    try:
        check_header(path, formats)
    except HeaderError as e:
        raise OutputError(str(e)) from None
    voxels = int(np.prod(reference.GetSize()))
    header, arr = read_in_jail(path, {"mode": "volume", "formats": formats, "voxels": voxels}, voxels * 8)
    head = _Header(int(header["dimension"]), tuple(int(v) for v in header["size"]),
                   tuple(float(v) for v in header["spacing"]), tuple(float(v) for v in header["origin"]),
                   tuple(float(v) for v in header["direction"]))
    problem = geometry_mismatch(head, reference, "the output", "the case image")
    if problem and geometry == "adopt-default" and head.size == tuple(reference.GetSize()) \
            and head.dimension == reference.GetDimension() and _is_default_geometry(head):
        if warnings is not None:
            warnings.append("the output's header has the default geometry (spacing 1 mm, origin 0, identity "
                            "direction) while the case image's differs; the case image's geometry was adopted "
                            "(the task allows it: outputs[].geometry = adopt-default). Copy the input's geometry "
                            "(SimpleITK: image.CopyInformation(input)) to silence this.")
        problem = None
    if problem:
        raise OutputError(problem)
    if int(header["components"]) != 1:
        raise OutputError(f"the output has {header['components']} components per voxel, expected 1")
    if "integer" not in str(header["pixel"]):
        raise OutputError(f"the output's pixel type is {header['pixel']}: expected an integer label map (e.g. uint8)")
    if arr is None or arr.shape != tuple(reference.GetSize()[::-1]) or not np.issubdtype(arr.dtype, np.integer):
        raise OutputError(f"the output {path.name} could not be read as a {reference.GetSize()} integer label map")
    return check_labels(arr, labels)


def check_segmentation(output: sitk.Image, reference: sitk.Image, labels: set[int]) -> np.ndarray:
    """Return the output as an integer array (z, y, x) if it matches the reference's geometry and labels.

    Raises OutputError naming the first mismatch: dimension, size, spacing, origin, direction,
    pixel type (must be an integer type with one component) or label values outside ``labels`` ∪ {0}.
    For an image already in memory (trusted); participant files go through :func:`read_checked_output`.
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
    return check_labels(arr, labels)


def check_labels(arr: np.ndarray, labels: set[int]) -> np.ndarray:
    """``arr`` unchanged when its values are 0 or in ``labels``; OutputError naming negative or unknown values."""
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


def read_checked_tile_mask(path: Path, width: int, height: int, labels: set[int],
                           formats: list[str] | None = None) -> np.ndarray:
    """A 2-D label mask (TIFF, PNG or 2-D .mha) for a ``width`` × ``height`` tile, read in the jail: the
    header is checked first (format, magic bytes, no detached data), the size and channels before the
    pixels are read; then integer type and label values (0 or the task's) here."""
    formats = formats or ["tif", "tiff", "png", "mha"]
    try:
        check_header(path, formats)
    except HeaderError as e:
        raise OutputError(str(e).replace("the output ", "the output mask ", 1)) from None
    header, arr = read_in_jail(path, {"mode": "mask", "formats": formats, "width": width, "height": height},
                              width * height * 8)
    shape, samples = tuple(header.get("shape") or (0, 0)), header.get("samples")
    if shape != (height, width):
        raise OutputError(f"the output mask is {shape[1]}×{shape[0]} pixels: expected the tile's {width}×{height}")
    if samples != 1:
        raise OutputError(f"the output mask has {samples} channels per pixel: expected 1 (a label map)")
    if arr is None or arr.shape != (height, width):
        raise OutputError(f"the output mask {path.name} could not be read as a {width}×{height} label map")
    if not np.issubdtype(arr.dtype, np.integer):
        raise OutputError(f"the output mask's pixel type is {arr.dtype}: expected integers (e.g. uint8)")
    values = np.unique(arr)
    extra = sorted(int(v) for v in values if v != 0 and int(v) not in labels)
    if extra:
        raise OutputError(f"the output mask has values not in the task's label map {sorted(labels)}: {extra[:10]}")
    return arr
