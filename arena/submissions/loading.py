"""Loading a checked image archive into the Docker engine under Arena's own name."""

from __future__ import annotations

import os
from typing import Callable

import docker.errors

from arena.submissions.archive import ImageArchiveInfo, InvalidImageArchive, sanitized_tar_chunks

def submission_repo(instance_id: str) -> str:
    """The repository an instance tags its submission images under (see Settings.instance_id)."""
    return f"arena/{instance_id}/submission"


def submission_tag(instance_id: str, submission_id: int) -> str:
    """``arena/<instance>/submission:<n>``: the tag of submission ``n``'s image on the engine."""
    return f"{submission_repo(instance_id)}:{submission_id}"


def image_present(client, image_id: str) -> bool:
    try:
        client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


def load_image_archive(client, archive: str | os.PathLike, info: ImageArchiveInfo, tag: str,
                       log: Callable[[str], None] = lambda s: None) -> str:
    """Load ``archive`` (already checked: ``info``) with its tags stripped, tag it ``tag``; return the image ID.

    Skips the load when the engine already has the image (same config digest). Raises
    InvalidImageArchive when the engine refuses the archive or loads another image than expected.
    """
    if not image_present(client, info.image_id):
        log(f"loading image {info.image_id[:19]} ({info.uncompressed_bytes / 1e6:.0f} MB)")
        try:
            for message in client.api.load_image(sanitized_tar_chunks(archive), quiet=True):
                if isinstance(message, dict) and message.get("error"):
                    raise InvalidImageArchive(f"the Docker engine refused the archive: {message['error']}")
        except docker.errors.APIError as e:
            raise InvalidImageArchive(f"the Docker engine refused the archive: {e.explanation or e}") from None
        if not image_present(client, info.image_id):
            raise InvalidImageArchive(
                f"after loading, the engine has no image {info.image_id}: the archive's config digest "
                "does not match what the engine loaded")
    image = client.images.get(info.image_id)
    repo, _, version = tag.rpartition(":")
    image.tag(repo, version)
    return image.id
