"""A task's training data: the cases its loader lists with ``training(data_folder)`` (OpenKBP's train
patients for han-oar-openkbp), offered to participants as one streamed archive, as grand-challenge and
Codabench publish training sets.

``arena task load`` records a manifest (``ARENA_HOME/cases/<slug>/training.json``): per case its key and
the absolute path, size and SHA-256 of its image and reference, as they lie in the organizer's data folder.
Nothing is copied: the archive is streamed from those files when someone downloads it
(:func:`iter_archive`, a tar written on the fly, no temporary file), and a file that changed since the load
is refused by size and checksum rather than served silently. Files keep their own format (e.g. NIfTI);
the archive's ``README.txt`` and ``labels.json`` give the label map, the split and the attribution.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from arena.config import Settings

MANIFEST = "training.json"
CHUNK = 1 << 20  # bytes per chunk read from a training file


class TrainingDataError(RuntimeError):
    """A training file is missing or changed since ``arena task load`` recorded it (the message names it)."""


@dataclass(frozen=True)
class TrainingFile:
    """One file of the archive: where it lies, what it is called inside the archive, its size and SHA-256."""

    path: Path
    arcname: str
    size: int
    sha256: str


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _suffix(path: Path) -> str:
    name = Path(path).name
    return ".nii.gz" if name.endswith(".nii.gz") else Path(path).suffix


def manifest_path(settings: Settings, slug: str) -> Path:
    return settings.cases_dir / slug / MANIFEST


def write_manifest(settings: Settings, slug: str, sources: Iterable) -> Path | None:
    """Record ``sources`` (:class:`arena.tasks.store.CaseSource` of the training cases) as the task's
    training manifest; an empty list removes it. Checksums are reused when a file's size and mtime are
    unchanged since the last manifest (a reload does not hash 170 CTs again). Returns the manifest path or
    None."""
    path = manifest_path(settings, slug)
    sources = list(sources)
    if not sources:
        path.unlink(missing_ok=True)
        return None
    previous = {}
    if path.is_file():
        previous = {(e["path"], e["size"], e.get("mtime_ns")): e["sha256"] for e in json.loads(path.read_text())["files"]}
    files = []
    for c in sources:
        for what, p in (("images", Path(c.image)), ("labels", Path(c.reference))):
            p = p.absolute()  # as the organizer named it (a symlink replaced later is noticed)
            st = p.stat()
            sha = previous.get((str(p), st.st_size, st.st_mtime_ns)) or _sha256(p)
            files.append({"key": c.key, "kind": what, "path": str(p), "arcname": f"{what}/{c.key}{_suffix(p)}",
                          "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha,
                          "meta": {k: v for k, v in c.meta.items() if k != "attribution"}})
    attribution = sorted({str(c.meta["attribution"]) for c in sources if c.meta.get("attribution")})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"slug": slug, "cases": len(sources), "attribution": attribution, "files": files},
                              indent=1))
    os.replace(tmp, path)
    return path


_READ: dict[Path, tuple[int, dict]] = {}  # manifest path -> (mtime_ns, parsed): the task page asks on every view


def read_manifest(settings: Settings, slug: str) -> dict | None:
    """The task's training manifest, or None when the task has no training data. Parsed once per version
    of the file (its mtime): the task page shows the summary on every view. Callers must not modify it."""
    path = manifest_path(settings, slug)
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        _READ.pop(path, None)
        return None
    hit = _READ.get(path)
    if hit is None or hit[0] != mtime:
        hit = _READ[path] = (mtime, json.loads(path.read_text()))
    return hit[1]


def archive_files(manifest: dict) -> list[TrainingFile]:
    return [TrainingFile(Path(e["path"]), e["arcname"], int(e["size"]), e["sha256"]) for e in manifest["files"]]


def archive_size(manifest: dict, labels: dict[int, str]) -> int:
    """Exact byte size of the tar :func:`iter_archive` streams (for Content-Length and progress bars)."""
    def member(n: int) -> int:
        return 512 + (n + 511) // 512 * 512

    total = sum(member(f.size) for f in archive_files(manifest))
    total += sum(member(len(data)) for _, data in _extras(manifest, labels))
    return (total + 2 * 512 + tarfile.RECORDSIZE - 1) // tarfile.RECORDSIZE * tarfile.RECORDSIZE


def _extras(manifest: dict, labels: dict[int, str]) -> list[tuple[str, bytes]]:
    slug = manifest["slug"]
    meta = {e["key"]: e["meta"] for e in manifest["files"]}  # image and labels entries carry the same meta
    keys = sorted(meta)
    readme = (f"Training data of the Arena task {slug}: {len(keys)} cases.\n"
              "images/<case>.*: the images; labels/<case>.*: their reference label maps (label ids in labels.json).\n"
              "The files are as the organizer's data folder holds them; SHA-256 sums are in SHA256SUMS.\n"
              "These cases are never scored: the task's validation and test cases are other patients.\n"
              + "".join(f"Data: {a}\n" for a in manifest.get("attribution", [])))
    sums = "".join(f"{e['sha256']}  {e['arcname']}\n" for e in manifest["files"])
    return [("README.txt", readme.encode()),
            ("labels.json", json.dumps({str(k): v for k, v in sorted(labels.items())}, indent=1).encode()),
            ("cases.json", json.dumps([{"case": k, **meta[k]} for k in keys], indent=1).encode()),
            ("SHA256SUMS", sums.encode())]


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 512)


def iter_archive(manifest: dict, labels: dict[int, str], prefix: str | None = None) -> Iterator[bytes]:
    """The training data as an uncompressed tar (the files are compressed images already), in chunks of at
    most 1 MiB, read from the data folder while it is sent: memory stays at one chunk, and the byte count
    equals :func:`archive_size`. Members lie below ``prefix`` (default ``<slug>-training``).

    Raises :class:`TrainingDataError` when a file is missing, or (after its bytes, so the stream breaks
    and the receiver discards it) when its size or SHA-256 is not the manifest's.
    """
    prefix = prefix or f"{manifest['slug']}-training"
    sent = 0
    for name, data in _extras(manifest, labels):
        block = _header(f"{prefix}/{name}", len(data)) + data + _pad(len(data))
        sent += len(block)
        yield block
    for f in archive_files(manifest):
        try:
            fh = open(f.path, "rb")
        except FileNotFoundError:
            raise TrainingDataError(f"{f.path}: training file missing (run `arena task load` again)") from None
        with fh:
            if os.fstat(fh.fileno()).st_size != f.size:
                raise TrainingDataError(f"{f.path}: size changed since the task was loaded (run `arena task load` "
                                        "again)")
            head = _header(f"{prefix}/{f.arcname}", f.size)
            sent += len(head)
            yield head
            h, n = hashlib.sha256(), 0
            for block in iter(lambda: fh.read(min(CHUNK, f.size - n)), b""):
                h.update(block)
                n += len(block)
                sent += len(block)
                yield block
                if n >= f.size:
                    break
        if n != f.size or h.hexdigest() != f.sha256:
            raise TrainingDataError(f"{f.path}: content changed since the task was loaded (SHA-256 differs from the "
                                    "manifest; run `arena task load` again)")
        sent += len(_pad(f.size))
        yield _pad(f.size)
    end = b"\0" * 1024
    end += b"\0" * (-(sent + len(end)) % tarfile.RECORDSIZE)
    yield end


def extract_to(chunks: Iterable[bytes], out_dir: Path) -> list[Path]:
    """Unpack a training archive stream into ``out_dir`` (members must stay inside it); returns the files.

    Written into ``out_dir/.partial`` first and moved into place only when the whole archive arrived, so
    an interrupted download leaves no half-written training set.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / ".partial"
    if partial.exists():
        shutil.rmtree(partial)
    reader = _ChunkReader(iter(chunks))
    written = []
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for m in tar:
            if not m.isfile():
                continue
            target = (partial / m.name).resolve()
            if not str(target).startswith(str(partial.resolve()) + os.sep):
                raise TrainingDataError(f"archive member {m.name!r} would land outside {out_dir}")
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            with open(target, "wb") as fh:
                for block in iter(lambda: src.read(CHUNK), b""):
                    fh.write(block)
            written.append(target)
    final = []
    for t in written:
        dest = out_dir / t.relative_to(partial.resolve())
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(t, dest)
        final.append(dest)
    shutil.rmtree(partial, ignore_errors=True)
    return final


class _ChunkReader(io.RawIOBase):
    def __init__(self, it: Iterator[bytes]) -> None:
        self._it, self._buf = it, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
