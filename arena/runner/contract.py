"""The container contract (v1, grand-challenge compatible): laying out /input, finding outputs.

Per case: ``/input/<socket relative_path>/<uuid>.<ext>`` (one file per image socket) and
``/input/inputs.json``; the algorithm writes ``/output/<output relative_path>/<any-name>.mha``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from arena.tasks.spec import TaskSpec


class OutputError(ValueError):
    """A case failed: the container's output breaks the contract (or the run failed); the message says how."""

    def __init__(self, message: str, failure=None):
        from arena.runner.failures import Failure

        super().__init__(message)
        self.failure = failure or Failure.INVALID_OUTPUT


def _ext(path: Path) -> str:
    name = path.name
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def prepare_case_input(spec: TaskSpec, image_path: str | os.PathLike, input_dir: Path,
                       original_name: str | None = None) -> Path:
    """Lay out ``input_dir`` for one case; returns the path of the image inside it.

    Files are copied (not linked: the container must not see the case store), world-readable so
    a non-root container can read them; the mount itself is read-only.
    """
    socket = spec.inputs[0]
    image_path = Path(image_path)
    target_dir = input_dir / socket.relative_path
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{uuid.uuid4()}{_ext(image_path)}"
    shutil.copyfile(image_path, target)
    inputs = [{
        "interface": {"slug": socket.slug, "relative_path": socket.relative_path, "kind": "Image",
                      "super_kind": "Image"},
        "image": {"name": original_name or image_path.name},
        "file": None,
        "value": None,
    }]
    (input_dir / "inputs.json").write_text(json.dumps(inputs, indent=2))
    for root, dirs, files in os.walk(input_dir):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return target


@contextmanager
def output_area(path: Path, size_mb: int) -> Iterator[Path]:
    """A writable /output for one run, capped at ``size_mb``.

    As root, a size-limited tmpfs is mounted on ``path`` (many small files cannot fill the host
    disk); elsewhere a plain directory is used and only the per-file size ulimit applies. The
    caller collects what it needs before leaving the block; the tmpfs is then unmounted.
    """
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        # nr_inodes: a file-count bomb fills the inode table, not the worker's memory
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,nr_inodes=20000,mode=0777,nosuid,nodev",
                              "arena-output", str(path)], capture_output=True, text=True)
        mounted = res.returncode == 0
    if not mounted:
        os.chmod(path, 0o777)
    try:
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def find_segmentation_output(output_root: Path, spec: TaskSpec, skipped: list[str] | tuple = ()) -> Path:
    """The single image the algorithm wrote for the task's segmentation output socket.

    ``skipped``: entries of /output that were not collected (links, devices), named in the error.
    """
    socket = spec.segmentation_output
    where = f"/output/{socket.relative_path}/"
    folder = output_root / socket.relative_path
    if not folder.is_dir():
        found = sorted(str(p.relative_to(output_root)) for p in output_root.rglob("*") if p.is_file())[:5]
        if skipped:
            also = f" (not collected: {', '.join(list(skipped)[:5])})"
        else:
            also = f" (found: {', '.join(found)})" if found else " (/output is empty)"
        raise OutputError(f"no output: expected one .mha file in {where}{also}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.name.endswith((".mha", ".nii.gz", ".nrrd", ".tif", ".tiff"))]
    if not images:
        raise OutputError(f"no output image in {where} (expected one .mha file"
                          + (f", found {[p.name for p in files][:5]})" if files else ")"))
    if len(images) > 1:
        raise OutputError(f"{len(images)} images in {where}: expected exactly one ({[p.name for p in images][:5]})")
    return images[0]


def find_file_output(output_root: Path, socket, skipped: list[str] | tuple = ()) -> Path:
    """The file the algorithm wrote for a JSON socket (``bounding-boxes``, ``value``, ``json``):
    exactly ``/output/<relative_path>``."""
    where = f"/output/{socket.relative_path}"
    path = output_root / socket.relative_path
    if path.is_file():
        return path
    if path.is_dir():
        raise OutputError(f"{where} is a directory: expected a JSON file there")
    lost = [s for s in skipped if s.split(" (")[0] == socket.relative_path]
    if lost:
        raise OutputError(f"no output: {where} was not collected ({lost[0]}): write a regular file, not a link")
    found = sorted(str(p.relative_to(output_root)) for p in output_root.rglob("*") if p.is_file())[:5] \
        if output_root.is_dir() else []
    also = f" (found: {', '.join(found)})" if found else " (/output is empty)"
    raise OutputError(f"no output: expected the JSON file {where}{also}")


def find_tile_mask_output(output_root: Path, socket, skipped: list[str] | tuple = ()) -> Path:
    """The single 2-D label image in ``/output/<relative_path>/`` for a tile task, in one of the socket's
    formats (default .tif, .tiff, .png, .mha)."""
    formats = socket.formats or ["tif", "tiff", "png", "mha"]
    suffixes = tuple(f".{f}" for f in formats)
    where = f"/output/{socket.relative_path}/"
    folder = output_root / socket.relative_path
    if not folder.is_dir():
        found = sorted(str(p.relative_to(output_root)) for p in output_root.rglob("*") if p.is_file())[:5] \
            if output_root.is_dir() else []
        also = (f" (not collected: {', '.join(list(skipped)[:5])})" if skipped else
                f" (found: {', '.join(found)})" if found else " (/output is empty)")
        raise OutputError(f"no output: expected one mask ({', '.join(suffixes)}) in {where}{also}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.name.lower().endswith(suffixes)]
    if not images:
        raise OutputError(f"no output mask in {where} (expected one {'/'.join(suffixes)} file"
                          + (f", found {[p.name for p in files][:5]})" if files else ")"))
    if len(images) > 1:
        raise OutputError(f"{len(images)} masks in {where}: expected exactly one ({[p.name for p in images][:5]})")
    return images[0]
