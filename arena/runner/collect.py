"""Copying a container's /output without following links: regular files only, with caps.

A container can leave symlinks (to /etc/shadow, say) or device nodes in /output; a naive copy run
as root would follow them. Here every entry is checked with lstat and opened with O_NOFOLLOW.

A container can also leave a tree built to hurt the walker: directories nested thousands of levels
deep (paths past PATH_MAX, recursion limits), hundreds of thousands of empty directories or links
(no bytes, so a size cap never sees them), names that are not text. The walk is iterative, works on
directory file descriptors (``openat``; no path is ever longer than one name), and stops with a
:class:`CollectError` at a depth, entry-count, path-length, file-count or byte cap.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class CollectError(ValueError):
    """The output is over a cap; the message says which."""


@dataclass
class Collected:
    files: list[str] = field(default_factory=list)  # relative paths copied
    skipped: list[str] = field(default_factory=list)  # "path (why)" not copied
    total_bytes: int = 0
    discarded: list[str] = field(default_factory=list)  # regular files not copied: not a declared output
    discarded_bytes: int = 0


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO never hangs us


def _printable(name: str) -> bool:
    """A name that is valid UTF-8 (no surrogate escapes) without control characters."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return name.isprintable()


def collect_outputs(src: Path, dest: Path, max_files: int = 1000, max_bytes: int = 2 * 1024**3, *,
                    max_depth: int = 32, max_entries: int | None = None, max_path: int = 1024,
                    keep: Callable[[str], bool] | None = None) -> Collected:
    """Copy regular files below ``src`` into ``dest`` (same relative paths); never follow links.

    ``keep(relative_path)``: which regular files to copy (default all); the others are counted in
    ``discarded`` / ``discarded_bytes`` (their size from lstat, never read) and left behind.

    Caps (CollectError when passed): ``max_files`` regular files, ``max_bytes`` in all, directories
    ``max_depth`` levels deep, ``max_entries`` entries of any kind (default 10 × ``max_files``), relative
    paths of ``max_path`` bytes. Symlinks, FIFOs, sockets, devices and entries with unprintable names
    are skipped and listed in ``skipped``. Files are copied in name order, depth first.
    """
    out = Collected()
    entry_cap = max_entries if max_entries is not None else 10 * max_files
    dest.mkdir(parents=True, exist_ok=True)
    try:
        root = os.open(src, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return out
    except OSError as e:  # /output itself a link (ELOOP) or unreadable
        raise CollectError(f"/output could not be read ({e.strerror})") from None

    entries = files = 0

    def listing(fd: int, rel: str) -> list[str]:
        nonlocal entries, files
        names = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    entries += 1
                    files += entry.is_file(follow_symlinks=False)  # d_type: no extra system call
                    if files > max_files:
                        raise CollectError(f"more than {max_files} files in /output")
                    if entries > entry_cap:
                        raise CollectError(f"/output holds more than {entry_cap} entries (files, directories "
                                           "and links)")
                    names.append(entry.name)
        except OSError as e:
            raise CollectError(f"/output/{rel} could not be listed ({e.strerror})") from None
        return sorted(names)

    # Depth-first, in name order, with at most max_depth + 1 directories open at a time.
    try:
        stack: list[tuple[int, str, list[str]]] = [(root, "", listing(root, ""))]
    except BaseException:
        os.close(root)
        raise
    try:
        while stack:
            fd, rel, names = stack[-1]
            if not names:
                os.close(fd)
                stack.pop()
                continue
            name = names.pop(0)
            rpath = f"{rel}/{name}" if rel else name
            if not _printable(name):
                out.skipped.append(f"{rpath!a} (name is not printable UTF-8)")
                continue
            if len(rpath.encode()) > max_path:
                raise CollectError(f"a path in /output is longer than {max_path} bytes ({rpath[:60]}…)")
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError as e:
                raise CollectError(f"/output/{rpath} could not be read ({e.strerror})") from None
            if stat.S_ISDIR(st.st_mode):
                if len(stack) >= max_depth:
                    raise CollectError(f"/output nests directories more than {max_depth} levels deep "
                                       f"({rpath[:60]}…)")
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    raise CollectError(f"/output/{rpath} could not be opened ({e.strerror})") from None
                try:
                    stack.append((child, rpath, listing(child, rpath)))
                except BaseException:
                    os.close(child)
                    raise
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                out.skipped.append(f"{rpath} ({kind})")
                continue
            if keep is not None and not keep(rpath):
                out.discarded.append(rpath)
                out.discarded_bytes += st.st_size
                continue
            if len(out.files) + 1 > max_files:
                raise CollectError(f"more than {max_files} files in /output")
            if out.total_bytes + st.st_size > max_bytes:
                raise CollectError(f"/output holds more than {max_bytes / 2**20:.0f} MB")
            if _copy(fd, name, rpath, dest, out, max_bytes):
                out.files.append(rpath)
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return out


def _copy(dir_fd: int, name: str, rpath: str, dest: Path, out: Collected, max_bytes: int) -> bool:
    """Copy one regular file (opened relative to its directory, without following links); False if skipped."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        raise CollectError(f"/output/{rpath} could not be opened ({e.strerror})") from None
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):  # swapped since the lstat: never copy it
            out.skipped.append(f"{rpath} (not a regular file)")
            return False
        target = dest / rpath
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fout:
            while chunk := fin.read(1 << 20):
                out.total_bytes += len(chunk)
                if out.total_bytes > max_bytes:  # grew since the lstat
                    raise CollectError(f"/output holds more than {max_bytes / 2**20:.0f} MB")
                fout.write(chunk)
    return True
