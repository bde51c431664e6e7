"""Copying a container's /output without following links: regular files only, with caps.

A container can leave symlinks (to /etc/shadow, say) or device nodes in /output; a naive copy run
as root would follow them. Here every entry is checked with lstat and opened with O_NOFOLLOW.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path


class CollectError(ValueError):
    """The output is over a cap; the message says which."""


@dataclass
class Collected:
    files: list[str] = field(default_factory=list)  # relative paths copied
    skipped: list[str] = field(default_factory=list)  # "path (why)" not copied
    total_bytes: int = 0


def collect_outputs(src: Path, dest: Path, max_files: int = 1000, max_bytes: int = 2 * 1024**3) -> Collected:
    """Copy regular files below ``src`` into ``dest`` (same relative paths); never follow links."""
    out = Collected()
    dest.mkdir(parents=True, exist_ok=True)

    def walk(rel: str) -> None:
        here = src / rel if rel else src
        with os.scandir(here) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rpath = f"{rel}/{entry.name}" if rel else entry.name
            st = os.lstat(entry.path)
            if stat.S_ISDIR(st.st_mode):
                walk(rpath)
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = "symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                out.skipped.append(f"{rpath} ({kind})")
                continue
            if len(out.files) + 1 > max_files:
                raise CollectError(f"more than {max_files} files in /output")
            if out.total_bytes + st.st_size > max_bytes:
                raise CollectError(f"/output holds more than {max_bytes / 2**20:.0f} MB")
            target = dest / rpath
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                with os.fdopen(fd, "rb") as fin, open(target, "wb") as fout:
                    fd = -1
                    while chunk := fin.read(1 << 20):
                        fout.write(chunk)
                        out.total_bytes += len(chunk)
            finally:
                if fd != -1:
                    os.close(fd)
            out.files.append(rpath)

    if src.is_dir():
        walk("")
    return out
