"""The container contract (v1, grand-challenge compatible): laying out /input, finding outputs.

Per case: ``/input/<socket relative_path>/<uuid>.<ext>`` (one file per image socket) and
``/input/inputs.json``; the algorithm writes ``/output/<output relative_path>/<any-name>.mha``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from arena.runner.untrusted_reader import DETACHED_HEADERS

if TYPE_CHECKING:
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


def prepare_case_input(spec: TaskSpec, image_path: str | os.PathLike, input_dir: Path) -> Path:
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
        "image": {"name": target.name},  # random, like the file: never the hidden case's key
        "file": None,
        "value": None,
    }]
    (input_dir / "inputs.json").write_text(json.dumps(inputs, indent=2))
    for root, dirs, files in os.walk(input_dir):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return target


def opaque_name() -> str:
    """A random folder or file name (128 bits): what a container may see instead of a case key or id."""
    return secrets.token_hex(16)


@contextmanager
def run_area(marker: Path, root: Path) -> Iterator[Path]:
    """A fresh folder ``root/<random>`` for one container run (its ``input`` and ``output`` go below it);
    removed on leaving the block.

    The container's mount table shows only this path: no store path, evaluation id, worker or case key.
    ``marker`` (in the worker's work folder, e.g. ``work/evaluation-N/<worker>/<case>``) is made a symlink
    to it while it exists, so a later worker can clean up after one that died (:func:`clean_run_marker`).
    """
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)  # others may enter a run folder they know, never list them
    run = root / opaque_name()
    run.mkdir(mode=0o755)
    marker.parent.mkdir(parents=True, exist_ok=True)
    if marker.is_symlink() or marker.exists():
        clean_run_marker(marker)
    marker.symlink_to(run)
    try:
        yield run
    finally:
        clean_run_marker(marker)


def clean_run_marker(marker: Path) -> None:
    """Unmount what is mounted below the run folder ``marker`` points to, remove that folder and the marker
    (a plain folder at ``marker``, from an older worker, is removed like a run folder)."""
    target = Path(os.path.realpath(marker)) if marker.is_symlink() else marker
    prefix = str(target) + "/"
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    except OSError:
        mounts = []
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    if marker.is_symlink():
        marker.unlink()
    shutil.rmtree(target, ignore_errors=True)


def declared_output(spec: TaskSpec, rel: str) -> bool:
    """Whether ``rel`` (a path below /output, '/'-separated) is one of the task's declared outputs: a file
    directly in a segmentation socket's folder, or exactly a JSON socket's file. Everything else a
    container leaves in /output is counted and discarded, never kept on the worker's disk."""
    for socket in spec.outputs:
        if socket.kind == "segmentation":
            folder, _, name = rel.rpartition("/")
            if folder == socket.relative_path and name:
                return True
        elif rel == socket.relative_path:
            return True
    return False


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
    """The single image the algorithm wrote for the task's segmentation output socket, in one of the
    socket's formats (None: .mha, the contract's format, or .nii.gz / .nrrd / .tif / .tiff). Detached
    headers (.mhd, .hdr, .nhdr) count as images here, so that the header check can say why they are refused.

    ``skipped``: entries of /output that were not collected (links, devices, undeclared files), named in
    the error.
    """
    socket = spec.segmentation_output
    formats = socket.formats or ["mha", "nii.gz", "nrrd", "tif", "tiff"]
    expected = "one .mha file" if formats[0] == "mha" and (socket.formats is None or len(formats) == 1) else \
        f"one image ({', '.join('.' + f for f in formats)})"
    where = f"/output/{socket.relative_path}/"
    folder = output_root / socket.relative_path
    if not folder.is_dir():
        found = sorted(str(p.relative_to(output_root)) for p in output_root.rglob("*") if p.is_file())[:5]
        if skipped:
            also = f" (not collected: {', '.join(list(skipped)[:5])})"
        else:
            also = f" (found: {', '.join(found)})" if found else " (/output is empty)"
        raise OutputError(f"no output: expected {expected} in {where}{also}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    suffixes = tuple(f".{f}" for f in formats) + (".mha", ".nii.gz", ".nrrd", ".tif", ".tiff") + DETACHED_HEADERS
    images = [p for p in files if p.name.lower().endswith(suffixes)]
    if not images:
        raise OutputError(f"no output image in {where} (expected {expected}"
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
