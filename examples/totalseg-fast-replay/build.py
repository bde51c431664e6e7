"""Build the totalseg-fast-replay image: a temporary build context with Dockerfile, replay.py and the fast
model's segmentation read from the shared data folder (``ARENA_SHARED_DATA`` or ../shared/data)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEGMENTATION = "totalseg/example_seg_fast.nii.gz"


def build(base_image: str, tag: str = "arena/example-totalseg-fast-replay:latest", data_root: Path | None = None,
          log=print) -> str:
    """Build the image; return its id. Raises FileNotFoundError when the shared data is missing."""
    from arena.images.build import build_image
    from arena.tasks.store import shared_data_root

    src = Path(data_root or shared_data_root()) / SEGMENTATION
    if not src.is_file():
        raise FileNotFoundError(f"{src}: the fast model's segmentation is not there (set ARENA_SHARED_DATA)")
    with tempfile.TemporaryDirectory(prefix="arena-replay-") as ctx:
        for name in ("Dockerfile", "replay.py"):
            shutil.copyfile(HERE / name, Path(ctx) / name)
        shutil.copyfile(src, Path(ctx) / "segmentation.nii.gz")
        return build_image(ctx, tag, base_image, log=log)


if __name__ == "__main__":
    import sys

    from arena.images.base import BASE_TAG, build_base_image

    build_base_image(log=print)
    print(build(BASE_TAG, *(sys.argv[1:2] or [])))
