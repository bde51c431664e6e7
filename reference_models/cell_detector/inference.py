"""Container entrypoint (Arena container contract v1, grand-challenge compatible).

Per-case mode: the tile is the one file in /input/images/<socket>/ (any socket folder under
/input/images); writes /output/signet-ring-cells.json. Batch mode: every /input/<case-id>/ folder
holding an images/ folder is one case; writes /output/<case-id>/signet-ring-cells.json.

The tile's pixel size comes from its TIFF resolution tags (the detector works at 0.5 µm/px and averages finer
tiles down); the scorer is the one fitted on real DigestPath tiles (weights.json), or the synthetic one
(weights_synthetic.json) for Arena's generated tiles, whose description says "synthetic": true.

Environment: CELL_DETECTOR_MIN_PROBABILITY (default: the scorer's fitted operating threshold) — boxes below
it are not written: DigestPath counts *every* box on a normal tile as a false positive, so the operating
point matters.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import detector  # noqa: E402

OUTPUT_NAME = os.environ.get("CELL_DETECTOR_OUTPUT", "signet-ring-cells.json")
MIN_P = float(os.environ["CELL_DETECTOR_MIN_PROBABILITY"]) if os.environ.get("CELL_DETECTOR_MIN_PROBABILITY") else None


def find_image(case_dir: Path) -> Path:
    files = sorted(p for p in (case_dir / "images").rglob("*") if p.is_file()
                   and p.suffix.lower() in (".tif", ".tiff", ".png", ".jpg", ".jpeg"))
    if len(files) != 1:
        raise SystemExit(f"expected one tile below {case_dir}/images, found {[str(p) for p in files][:5]}")
    return files[0]


def run_case(case_dir: Path, out_dir: Path) -> int:
    t0 = time.time()
    rgb, mpp, description = detector.read_tile(str(find_image(case_dir)))
    model = detector.model_for(description)
    boxes = detector.detect(rgb, min_probability=MIN_P, mpp=mpp, model=model)
    doc = {"type": "Multiple 2D bounding boxes", "version": {"major": 1, "minor": 0},
           "boxes": [{"name": "signet ring cell", "probability": round(p, 6),
                      "corners": [[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]]}
                     for x0, y0, x1, y1, p in boxes]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / OUTPUT_NAME).write_text(json.dumps(doc))
    print(f"{case_dir.name}: {rgb.shape[1]}x{rgb.shape[0]} px at {mpp or '?'} µm/px, scorer {model['name']}, "
          f"{len(boxes)} boxes in {time.time() - t0:.2f} s",
          flush=True)
    return len(boxes)


def main() -> int:
    inp, out = Path(os.environ.get("INPUT_DIR", "/input")), Path(os.environ.get("OUTPUT_DIR", "/output"))
    if (inp / "images").is_dir():
        run_case(inp, out)
        return 0
    cases = sorted(d for d in inp.iterdir() if d.is_dir() and (d / "images").is_dir())
    if not cases:
        raise SystemExit(f"no case under {inp} (expected {inp}/images/... or {inp}/<case-id>/images/...)")
    for d in cases:
        run_case(d, out / d.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
