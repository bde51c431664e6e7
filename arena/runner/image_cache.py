"""A worker-side LRU of submission images, so that workers' disks do not fill up.

Every run ``touch``-es its image; ``evict`` then removes the least recently used images tagged
``<repo>:*`` until their total size fits the budget. An evicted image is simply reloaded from the
stored upload the next time it is needed (the runner already does that when an image is absent).

The last-use times live in one JSON file per host (``state_path``), shared by all the worker
processes there: every read-modify-write holds an exclusive ``fcntl`` lock on ``<state_path>.lock``
and replaces the file atomically (write to a temporary file, fsync, ``os.replace``).

Never removed: images in ``keep``; images any container uses (running, stopped or just created);
images without a ``<repo>:*`` tag; images that also carry a tag outside ``<repo>`` (the engine refuses
a non-forced removal by ID). Images never touched count as the oldest, by their ``Created`` time.

Sizes are the engine's ``Size`` of each image, which includes layers shared with other images (the
base image): the total overstates the disk they use, so the budget errs on the safe side.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import docker.errors

log = logging.getLogger("arena.runner")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ImageCache:
    def __init__(self, client, state_path: Path, budget_bytes: int, repo: str, *,
                 grace_s: float = 0.0):
        """grace_s: images touched less than this many seconds ago are not evicted either (another
        worker process on this host may be about to create a container from one)."""
        self.client = client
        self.state_path = Path(state_path)
        self.lock_path = self.state_path.with_name(self.state_path.name + ".lock")
        self.budget_bytes = int(budget_bytes)
        self.repo = repo.rstrip(":")
        self.grace_s = float(grace_s)

    # -- public ----------------------------------------------------------------------------------

    def touch(self, image_id: str) -> None:
        """Record that ``image_id`` (an ID, ``sha256:…`` or bare hex, or a name) was used now."""
        key = self._normalize(image_id)
        with self._locked():
            state = self._load()
            state[key] = time.time()
            self._save(state)

    def evict(self, keep: Iterable[str] = ()) -> list[str]:
        """Remove LRU ``<repo>:*`` images until their total size is within the budget; the removed IDs."""
        keep_ids = {self._normalize(k) for k in keep}
        removed: list[str] = []
        with self._locked():
            state = self._load()
            images = self._repo_images()
            total = sum(size for _, _, size, _ in images)
            if total <= self.budget_bytes:
                return removed
            in_use = self._images_in_use()
            now = time.time()

            def age_key(img):
                image_id, created, _, _ = img
                used = state.get(image_id)
                return (0, float(created)) if used is None else (1, float(used))

            for image_id, _, size, tags in sorted(images, key=age_key):
                if total <= self.budget_bytes:
                    break
                used = state.get(image_id)
                if image_id in keep_ids or image_id in in_use:
                    continue
                if used is not None and self.grace_s > 0 and now - used < self.grace_s:
                    continue
                if self._remove(image_id, tags):
                    removed.append(image_id)
                    total -= size
                    state.pop(image_id, None)
            # forget images the engine no longer has (removed by hand, pruned, …)
            present = self._all_image_ids()
            if present is not None:
                for image_id in list(state):
                    if image_id not in present:
                        state.pop(image_id)
            self._save(state)
        if removed:
            log.info("image cache: removed %d image(s) of %s (now %.0f MB, budget %.0f MB)", len(removed),
                     self.repo, total / 1e6, self.budget_bytes / 1e6)
        return removed

    def usage_bytes(self) -> int:
        """Total size of the images tagged ``<repo>:*`` (shared layers counted in each)."""
        return sum(size for _, _, size, _ in self._repo_images())

    # -- engine ----------------------------------------------------------------------------------

    def _repo_images(self) -> list[tuple[str, int, int, list[str]]]:
        """(id, created, size, tags) of every image with at least one ``<repo>:<tag>`` tag."""
        out = []
        for img in self.client.api.images(name=self.repo):
            tags = [t for t in (img.get("RepoTags") or []) if t and t != "<none>:<none>"]
            if not any(t.rpartition(":")[0] == self.repo for t in tags):
                continue
            out.append((img["Id"], int(img.get("Created") or 0), int(img.get("Size") or 0), tags))
        return out

    def _images_in_use(self) -> set[str]:
        """IDs of the images of all containers, whatever their state."""
        return {c.get("ImageID") for c in self.client.api.containers(all=True) if c.get("ImageID")}

    def _all_image_ids(self) -> set[str] | None:
        try:
            return {img["Id"] for img in self.client.api.images(all=True)}
        except docker.errors.APIError:
            return None

    def _remove(self, image_id: str, tags: list[str]) -> bool:
        """Remove one image without force; False (and nothing else) when the engine refuses."""
        try:
            if len(tags) > 1 and all(t.rpartition(":")[0] == self.repo for t in tags):
                # Several tags, all ours (one image loaded for several submissions): the engine will
                # not remove it by ID without force, but removing the last tag removes the image.
                for tag in tags:
                    self.client.images.remove(tag, force=False)
            else:
                self.client.images.remove(image_id, force=False)
            return True
        except docker.errors.ImageNotFound:
            return True  # gone already
        except docker.errors.APIError as e:  # in use (a container appeared), other tags, …
            log.debug("image cache: not removing %s: %s", image_id[:19], e.explanation or e)
            return False

    def _normalize(self, image: str) -> str:
        image = image.strip()
        if image.startswith("sha256:") and _HEX64.match(image[7:]):
            return image
        if _HEX64.match(image):
            return "sha256:" + image
        try:  # a short ID or a name
            return self.client.api.inspect_image(image)["Id"]
        except (docker.errors.APIError, KeyError, TypeError):
            return image

    # -- state file ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.state_path.read_text())
            used = data.get("last_used", {}) if isinstance(data, dict) else {}
            return {str(k): float(v) for k, v in used.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("image cache: ignoring unreadable state %s: %s", self.state_path, e)
            return {}

    def _save(self, state: dict[str, float]) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.state_path.name + ".", suffix=".tmp", dir=self.state_path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": 1, "repo": self.repo, "last_used": state}, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
