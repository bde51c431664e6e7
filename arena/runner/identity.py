"""Which user a submission's container runs as (no docker needed: the web's upload checks use it too)."""

from __future__ import annotations

NOBODY = "65534:65534"


def effective_user(image_user: str) -> str:
    """The image's own USER when it is not root, else nobody (65534:65534). Empty, ``root``, ``0`` and
    ``0:<gid>`` count as root."""
    u = (image_user or "").strip()
    if not u or u.split(":")[0] in ("root", "0"):
        return NOBODY
    return u
