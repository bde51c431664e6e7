"""Build Dockerfile directories and save images as (gzipped) ``docker save`` tarballs."""

from __future__ import annotations

import collections
import contextlib
import gzip
import os
import time
from typing import Callable

from .docker_client import docker_client

Log = Callable[[str], None]

SAVE_CHUNK = 4 * 1024 * 1024


class ImageBuildError(RuntimeError):
    """``docker build`` failed; ``log_tail`` holds the last lines of its output."""

    def __init__(self, message: str, log_tail: list[str]):
        super().__init__(message)
        self.log_tail = log_tail


def build_image(
    context_dir: str,
    tag: str,
    base_image: str,
    log: Log = print,
    *,
    dockerfile: str | None = None,
    buildargs: dict[str, str] | None = None,
    client=None,
    tail_lines: int = 80,
) -> str:
    """Build ``context_dir`` (its Dockerfile takes ``ARG BASE_IMAGE``) as ``tag``; return the image id.

    Never pulls (no registry is reachable): ``base_image`` must exist locally. Build output
    is streamed line by line to ``log``; on failure an :class:`ImageBuildError` (a
    ``RuntimeError``) carries the last ``tail_lines`` lines.

    docker-py's ``client.images.build`` only returns the log after the build ends, so the
    low-level ``client.api.build`` is used with the same options (``rm``, ``forcerm``,
    ``pull=False``), plus ``use_config_proxy=False`` so the client's proxy settings are not
    copied into the build.
    """
    if not os.path.isdir(context_dir):
        raise FileNotFoundError(f"build context {context_dir!r} is not a directory")
    df = dockerfile or "Dockerfile"
    if not os.path.isfile(os.path.join(context_dir, df)):
        raise FileNotFoundError(f"no {df} in build context {context_dir!r}")
    client = client or docker_client()
    args = {"BASE_IMAGE": base_image, **(buildargs or {})}
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    t0 = time.monotonic()
    image_id = None
    error = None
    partial = ""

    stream = client.api.build(
        path=context_dir, tag=tag, buildargs=args, dockerfile=dockerfile,
        rm=True, forcerm=True, pull=False, decode=True, use_config_proxy=False,
    )
    for chunk in stream:
        if "stream" in chunk:
            partial += chunk["stream"]
            *lines, partial = partial.split("\n")
            for line in lines:
                line = line.rstrip("\r")
                if line.strip():
                    tail.append(line)
                    log(line)
        if "aux" in chunk and isinstance(chunk["aux"], dict) and chunk["aux"].get("ID"):
            image_id = chunk["aux"]["ID"]
        if "error" in chunk or "errorDetail" in chunk:
            error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message") or str(chunk)
            tail.append(f"ERROR: {error.strip()}")
            log(f"ERROR: {error.strip()}")
    if partial.strip():
        tail.append(partial.rstrip())
        log(partial.rstrip())

    if error is not None:
        raise ImageBuildError(
            f"docker build of {tag} (FROM {base_image}) failed after {time.monotonic() - t0:.0f} s: "
            f"{error.strip()}\n--- last build output ---\n" + "\n".join(tail),
            list(tail),
        )
    image = client.images.get(tag)
    if image_id and image.id != image_id:  # pragma: no cover - defensive
        log(f"warning: build reported {image_id} but {tag} is {image.id}")
    return image.id


def save_image(tag_or_id: str, dest_path: str, compress: bool = True, *, client=None) -> str:
    """Write ``docker save`` of one image to ``dest_path`` (gzip level 1 when ``compress``).

    The tarball is streamed chunk by chunk to a ``.part`` file, then renamed into place, so a
    failed save never leaves a truncated file under ``dest_path``. Returns ``dest_path``.
    """
    client = client or docker_client()
    image = client.images.get(tag_or_id)
    # keep the tag asked for in the archive's manifest (RepoTags); for an id, its first tag
    tags = image.tags or []
    named: bool | str = True
    if tag_or_id in tags:
        named = tag_or_id
    elif f"{tag_or_id}:latest" in tags:
        named = f"{tag_or_id}:latest"
    tmp = dest_path + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
    try:
        with open(tmp, "wb") as raw:
            out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) if compress else raw
            try:
                for chunk in image.save(chunk_size=SAVE_CHUNK, named=named):
                    out.write(chunk)
            finally:
                if out is not raw:
                    out.close()
        os.replace(tmp, dest_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest_path
