"""Model archives: a tarball of weights uploaded beside the image and extracted read-only at /opt/ml/model.

grand-challenge lets a participant upload the model separately from the algorithm image and extracts it
at ``/opt/ml/model`` (its templates read their weights from there). Arena does the same, with the checks
an untrusted tarball needs: a (gzip/bzip2/xz-compressed or plain) tar of regular files and directories
only — no symbolic or hard links, no devices, FIFOs or sockets, no absolute or ``..`` paths — under caps
on the unpacked size, the member count and the compression ratio. The archive is read as a stream
(:func:`inspect_model_archive`) before it is stored; the worker extracts it with tarfile's ``data`` filter
besides (:func:`extract_model_archive`), world-readable and without special bits.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from arena.submissions.archive import GIB, _decompressor, _sniff_compression

MODEL_MOUNT = "/opt/ml/model"  # where a container finds its model (grand-challenge's path)


class InvalidModelArchive(ValueError):
    """The upload is not a usable model archive; the message says why, naming the member."""


@dataclass(frozen=True)
class ModelLimits:
    max_unpacked_bytes: int = 16 * GIB
    max_members: int = 100_000
    max_ratio: float = 200.0  # unpacked / compressed bytes, for compressed archives (a zip bomb is refused)


@dataclass(frozen=True)
class ModelArchiveInfo:
    bytes: int  # the archive's size
    unpacked_bytes: int
    files: int
    compression: str  # "none" | "gzip" | "bzip2" | "xz"


def _member_name(name: str) -> str:
    """A member's normalised relative path; InvalidModelArchive for absolute or escaping names."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise InvalidModelArchive(f"member {name[:100]!r}: absolute paths and backslashes are not allowed")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        raise InvalidModelArchive(f"member {name[:100]!r}: a path outside the archive ('..')")
    return norm


def inspect_model_archive(path: str | os.PathLike, limits: ModelLimits = ModelLimits()) -> ModelArchiveInfo:
    """Read the archive once, as a stream, and check every member; returns its sizes (the upload path
    hashed the file already: :func:`arena.submissions.intake.store_upload`).

    Raises InvalidModelArchive: not a tar (or compressed tar), an empty archive, a link, device, FIFO or
    socket member, an absolute or ``..`` path, more than ``limits.max_members`` members, more than
    ``limits.max_unpacked_bytes`` unpacked, or (compressed) more than ``limits.max_ratio`` times its size.
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        compression = _sniff_compression(path)
    except ValueError as e:
        raise InvalidModelArchive(str(e).replace("the output of `docker save`, optionally gzipped",
                                                 "a tar or tar.gz of the model's files")) from None
    unpacked = files = members = 0
    with open(path, "rb") as raw:
        stream = _decompressor(compression, raw)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for m in tar:
                    members += 1
                    if members > limits.max_members:
                        raise InvalidModelArchive(f"more than {limits.max_members} members")
                    _member_name(m.name)
                    if m.issym() or m.islnk():
                        raise InvalidModelArchive(f"member {m.name[:100]!r} is a link (to {m.linkname[:100]!r}): "
                                                  "a model archive holds regular files and directories only")
                    if not (m.isreg() or m.isdir()):
                        raise InvalidModelArchive(f"member {m.name[:100]!r} is not a regular file or directory "
                                                  "(device, FIFO or socket)")
                    if m.isreg():
                        files += 1
                        unpacked += m.size
                    if unpacked > limits.max_unpacked_bytes:
                        raise InvalidModelArchive(f"unpacks to more than {limits.max_unpacked_bytes / GIB:g} GiB")
                    if compression != "none" and unpacked > limits.max_ratio * max(size, 1) + 1024**2:
                        raise InvalidModelArchive(f"unpacks to more than {limits.max_ratio:g} times its size "
                                                  "(a compression bomb?)")
        except tarfile.TarError as e:
            raise InvalidModelArchive(f"not a tar archive ({e})") from None
        except (OSError, EOFError) as e:
            raise InvalidModelArchive(f"a broken {compression} stream ({e})") from None
    if files == 0:
        raise InvalidModelArchive("the archive holds no files")
    return ModelArchiveInfo(size, unpacked, files, compression)


def extract_model_archive(path: str | os.PathLike, dest: Path) -> int:
    """Extract a checked model archive into ``dest`` (created), world-readable: directories 0755, files 0644
    (0755 when executable), no set-id bits, owned by the extracting user. Returns the number of files.
    tarfile's ``data`` filter refuses links out, devices and absolute paths a second time."""
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(path, mode="r:*") as tar:
        for m in tar:
            if not (m.isreg() or m.isdir()):
                raise InvalidModelArchive(f"member {m.name[:100]!r} is not a regular file or directory")
            tar.extract(m, dest, filter="data", set_attrs=False)
            if m.isreg():
                n += 1
                os.chmod(dest / _member_name(m.name), 0o755 if m.mode & stat.S_IXUSR else 0o644)
    os.chmod(dest, 0o755)
    for root, dirs, _ in os.walk(dest):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    return n
