#!/bin/sh
# Build the cell detector image from Arena's base image (no registry needed) and save it as a
# `docker save` tarball that `arena submit` accepts.
#   reference_models/cell_detector/build.sh [TAG] [OUT.tar.gz]
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
tag="${1:-arena/reference-cell-detector:0.1.0}"
out="${2:-}"
cd "$here/../.."
python3 - "$here" "$tag" "$out" <<'PY'
import sys
from arena.images import base
from arena.images.build import build_image, save_image
here, tag, out = sys.argv[1:4]
base.build_base_image(base.BASE_TAG, log=print)  # returns at once when it exists
print("image", build_image(here, tag, base.BASE_TAG, log=print))
if out:
    print("saved", save_image(tag, out))
PY
