"""Tiny (≈2 MB) algorithm images made from Debian's static busybox, for benchmarks that push many real
uploads through intake: a `docker save` of them is small enough that 100 uploads take seconds, not the
minutes that 400 MB Python images would.

The code lives in tests/runner_helpers.py (tests use these images too: a private dockerd has no base
image); this module keeps the names the benchmarks use. Behaviours: see ``runner_helpers.SCRIPTS``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from runner_helpers import BUSYBOX, SCRIPTS  # noqa: E402,F401
from runner_helpers import build_all_tiny_images as build_all  # noqa: E402
from runner_helpers import build_tiny_image as build  # noqa: E402,F401
from runner_helpers import save_image as save  # noqa: E402,F401
from runner_helpers import tiny_images_available as available  # noqa: E402,F401

if __name__ == "__main__":  # build and list them
    for k, p in build_all(Path(os.environ.get("OUT", "/tmp/tiny-images"))).items():
        print(k, p, f"{p.stat().st_size / 1e6:.1f} MB")
