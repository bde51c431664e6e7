"""Checks on uploaded ``docker save`` tarballs, before anything reaches the Docker engine.

The archive is read as a stream, once: no seeking, nothing large held in memory. It must be a
(gzip/bzip2/xz-compressed or plain) tar holding exactly one image (``manifest.json`` with one entry),
only regular files, directories and relative in-archive symlinks, no absolute or ``..`` paths, and
stay under size caps. The image ID is the sha256 of its config JSON, computed before loading.

Uploaded tags are never trusted (an archive tagged ``python:3.11-slim`` would take that tag over on
``docker load``): :func:`sanitized_tar_chunks` re-streams the archive with its tags removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

GIB = 1024**3
_SMALL_FILE = 4 * 1024 * 1024  # json/config blobs are kept in memory up to this size


class InvalidImageArchive(ValueError):
    """The upload is not a usable docker image archive; the message says why."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_uncompressed_bytes: int = 32 * GIB
    max_ratio: float = 100.0  # uncompressed / compressed, for compressed uploads
    max_members: int = 200_000


@dataclass
class ImageArchiveInfo:
    image_id: str  # "sha256:<hex>", the engine's ID for the image
    config_name: str
    layers: list[str]
    repo_tags: list[str]
    uncompressed_bytes: int
    members: int
    compression: str  # "none" | "gzip" | "bzip2" | "xz"
    labels: dict[str, str] = field(default_factory=dict)
    user: str = ""
    architecture: str = ""


def _sniff_compression(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(262)
    if len(head) == 0:
        raise InvalidImageArchive("the file is empty")
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise InvalidImageArchive("zstd-compressed archives cannot be loaded by this Docker engine; use gzip "
                                  "(docker save IMAGE | gzip > image.tar.gz)")
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "none"
    raise InvalidImageArchive("not a tar archive (expected the output of `docker save`, optionally gzipped)")


def _decompressor(compression: str, raw):
    import bz2
    import gzip
    import lzma

    return {"gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), "bzip2": lambda f: bz2.BZ2File(f),
            "xz": lambda f: lzma.LZMAFile(f), "none": lambda f: f}[compression](raw)


class _Counting(io.RawIOBase):
    """A read-only stream that counts bytes and keeps the last 64 KiB (to check the archive's end)."""

    KEEP = 65536

    def __init__(self, inner):
        self.inner, self.count, self._tail = inner, 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        self._tail = (self._tail + data)[-self.KEEP:]
        return n

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n) if n is not None and n >= 0 else self.inner.read()
        self.count += len(data)
        self._tail = (self._tail + data)[-self.KEEP:]
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def tail_after(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes starting at ``offset``, if still kept (else b"": nothing to object to)."""
        start = offset - (self.count - len(self._tail))
        return self._tail[start:start + n] if start >= 0 else b""


def _safe_name(name: str) -> str:
    if name.startswith("/") or "\\" in name:
        raise InvalidImageArchive(f"archive entry {name!r} has an absolute or backslashed path")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise InvalidImageArchive(f"archive entry {name!r} points outside the archive ('..')")
    return norm.removeprefix("./")


def inspect_image_archive(path: str | os.PathLike, limits: ArchiveLimits = ArchiveLimits()) -> ImageArchiveInfo:
    """Walk the archive once and describe its single image; raise InvalidImageArchive otherwise."""
    path = Path(path)
    compression = _sniff_compression(path)
    compressed_size = path.stat().st_size
    small: dict[str, bytes] = {}
    names: set[str] = set()
    total = 0
    count = 0
    try:
        with open(path, "rb") as raw, _Counting(_decompressor(compression, raw)) as data, \
                tarfile.open(fileobj=data, mode="r|") as tar:
            for member in tar:
                count += 1
                if count > limits.max_members:
                    raise InvalidImageArchive(f"more than {limits.max_members} entries in the archive")
                name = _safe_name(member.name)
                if member.isdev() or member.isfifo() or member.ischr() or member.isblk():
                    raise InvalidImageArchive(f"archive entry {name!r} is a device or fifo")
                if member.islnk():
                    raise InvalidImageArchive(f"archive entry {name!r} is a hard link")
                if member.issym():
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
                    if member.linkname.startswith("/") or target.startswith(".."):
                        raise InvalidImageArchive(f"archive entry {name!r} links outside the archive")
                total += max(member.size, 0)
                if total > limits.max_uncompressed_bytes:
                    raise InvalidImageArchive(
                        f"the archive unpacks to more than {limits.max_uncompressed_bytes / GIB:.1f} GiB")
                if compression != "none" and total > 64 * 1024**2 and total / compressed_size > limits.max_ratio:
                    raise InvalidImageArchive(
                        f"the archive expands more than {limits.max_ratio:.0f}x (a compression bomb?)")
                names.add(name)
                if member.isreg() and member.size <= _SMALL_FILE and (
                        name.endswith(".json") or name.startswith("blobs/") or name == "repositories"):
                    fobj = tar.extractfile(member)
                    small[name] = fobj.read() if fobj else b""
            end = tar.offset
            data.drain()  # to the end: a compressed stream's trailer (CRC, length) is checked too
            if data.count - end < 1024 or data.tail_after(end, 1024).strip(b"\0"):
                raise EOFError(f"no end-of-archive marker after byte {end}")
    except InvalidImageArchive:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise InvalidImageArchive(f"the archive is truncated or corrupt ({e.__class__.__name__}: {e})") from None

    if "manifest.json" not in small:
        raise InvalidImageArchive("no manifest.json: not a `docker save` archive")
    try:
        manifest = json.loads(small["manifest.json"])
    except ValueError:
        raise InvalidImageArchive("manifest.json is not valid JSON") from None
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        n = len(manifest) if isinstance(manifest, list) else "?"
        raise InvalidImageArchive(f"the archive must hold exactly one image, manifest.json lists {n}")
    entry = manifest[0]
    config_name = _safe_name(str(entry.get("Config", "")))
    if config_name not in small:
        raise InvalidImageArchive(f"the image config {config_name!r} named in manifest.json is missing")
    layers = [_safe_name(str(x)) for x in entry.get("Layers") or []]
    missing = [x for x in layers if x not in names]
    if missing:
        raise InvalidImageArchive(f"layers named in manifest.json are missing: {missing[:3]}")
    try:
        config = json.loads(small[config_name])
    except ValueError:
        raise InvalidImageArchive(f"the image config {config_name!r} is not valid JSON") from None
    if "rootfs" not in config:
        raise InvalidImageArchive(f"{config_name!r} is not an image config (no rootfs)")
    arch = str(config.get("architecture") or "")
    if arch and arch not in ("amd64", "x86_64"):
        raise InvalidImageArchive(f"the image is built for {arch}; Arena's workers run amd64 images "
                                  "(docker build --platform linux/amd64)")
    cfg = config.get("config") or {}
    return ImageArchiveInfo(
        image_id="sha256:" + hashlib.sha256(small[config_name]).hexdigest(),
        config_name=config_name,
        layers=layers,
        repo_tags=list(entry.get("RepoTags") or []),
        uncompressed_bytes=total,
        members=count,
        compression=compression,
        labels=dict(cfg.get("Labels") or {}),
        user=str(cfg.get("User") or ""),
        architecture=arch,
    )


def _untagged(name: str, data: bytes) -> bytes:
    if name == "manifest.json":
        manifest = json.loads(data)
        for entry in manifest:
            entry["RepoTags"] = None
        return json.dumps(manifest).encode()
    if name == "index.json":  # OCI layout (Docker ≥ 25): tags live in annotations
        index = json.loads(data)
        for m in index.get("manifests", []):
            (m.get("annotations") or {}).pop("io.containerd.image.name", None)
            (m.get("annotations") or {}).pop("org.opencontainers.image.ref.name", None)
        return json.dumps(index).encode()
    return data


def sanitized_tar_chunks(path: str | os.PathLike, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """Yield an uncompressed tar of the archive with every tag removed (``repositories`` dropped).

    A thread re-writes the archive into a pipe while the caller streams the other end (for example
    into ``docker load``), so memory stays at a few MB whatever the image size.
    """
    r, w = os.pipe()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with os.fdopen(w, "wb", buffering=chunk_size) as out, \
                    tarfile.open(path, mode="r|*") as src, \
                    tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst:
                for member in src:
                    name = _safe_name(member.name)
                    if name == "repositories":
                        continue
                    if name in ("manifest.json", "index.json") and member.isreg():
                        data = _untagged(name, src.extractfile(member).read())
                        member.size = len(data)
                        dst.addfile(member, io.BytesIO(data))
                    elif member.isreg():
                        dst.addfile(member, src.extractfile(member))
                    else:
                        dst.addfile(member)
        except BaseException as e:  # surfaced to the reader below
            errors.append(e)

    thread = threading.Thread(target=writer, name="sanitize-tar", daemon=True)
    thread.start()
    with os.fdopen(r, "rb") as reader:
        while chunk := reader.read(chunk_size):
            yield chunk
    thread.join()
    if errors:
        raise InvalidImageArchive(f"could not re-stream the archive: {errors[0]}")
