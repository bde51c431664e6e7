"""Downloading a submission's image tarball (or model archive) by digest into the site worker's own cache folder.

A download goes to ``<sha256>.tar.part`` and resumes from its size (HTTP ``Range: bytes=N-``) after a
broken connection or a restart; the whole file's sha256 must be the digest asked for, else it is deleted
and downloaded once more from the start; only a checked file is renamed to ``<sha256>.tar``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Iterator

import requests

from arena.site.client import SiteClient
from arena.site.protocol import ImageRef

log = logging.getLogger("arena.site")

CHUNK = 1024 * 1024
MAX_BREAKS = 20  # connections broken off mid-body before the download gives up


class DownloadError(Exception):
    """The image could not be downloaded intact (the message says why)."""


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def image_lock(folder: Path, sha256: str) -> Iterator[None]:
    """Hold ``folder/<sha256>.lock`` (several workers may share one ARENA_HOME: one fetches and loads an image,
    the others wait for it, then find it loaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{sha256}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def download_image(client: SiteClient, ref: ImageRef, folder: Path, say: Callable[[str], None] = log.info,
                   what: str = "image") -> Path:
    """``folder/<sha256>.tar``, checked against ``ref.sha256``, downloading (or resuming) it when absent.
    Raises DownloadError when the bytes never match the digest or the connection keeps breaking. ``what``
    names the file in messages ("image", "model archive")."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{ref.sha256}.tar"
    if final.is_file():
        return final
    part = folder / f"{ref.sha256}.tar.part"
    breaks = 0
    for attempt in (1, 2):  # a second, fresh attempt after a checksum mismatch
        while True:
            have = part.stat().st_size if part.exists() else 0
            if ref.size and have > ref.size:  # longer than the image: start again
                part.unlink()
                have = 0
            if ref.size and have == ref.size:
                break
            if have:
                say(f"{what} {ref.sha256[:12]}: resuming at {have} of {ref.size} bytes")
            try:
                resp = client.image(ref.url, offset=have)
                with resp, open(part, "ab" if resp.status_code == 206 else "wb") as f:
                    for block in resp.iter_content(CHUNK):
                        f.write(block)
                    f.flush()
                    os.fsync(f.fileno())
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                breaks += 1
                if breaks > MAX_BREAKS:
                    raise DownloadError(f"{what} {ref.sha256}: the connection broke {breaks} times ({e})") from e
                say(f"{what} {ref.sha256[:12]}: the download broke off ({str(e).splitlines()[0][:120]}); resuming")
                continue
            if not ref.size:
                break
            if part.stat().st_size < ref.size:
                breaks += 1  # the body ended early: resume from where it stopped
                if breaks > MAX_BREAKS:
                    raise DownloadError(f"{what} {ref.sha256}: the body kept ending early")
                continue
        got = file_sha256(part)
        if got == ref.sha256:
            part.rename(final)
            return final
        say(f"{what} {ref.sha256[:12]}: checksum mismatch (got {got[:12]}); " +
            ("downloading it again from the start" if attempt == 1 else "giving up"))
        part.unlink()
    raise DownloadError(f"{what} {ref.sha256}: the downloaded bytes do not match its sha256 (twice)")
