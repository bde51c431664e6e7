"""Report the cell detector on the real DigestPath tiles: the held-out patients (signet-ring-cells phases
real-validation and real-test) and, for comparison, the fit patients it was fitted on.

Each tile goes the way a container sees it: converted as the case store does (arena.tasks.tiles_import:
tiled TIFF at 0.25 µm/px), run through inference.run_case (the container's entrypoint code, in this process),
its output read and checked by the task kind (read_output) and scored under the task's own DigestPath rules
(TileDetection.score_case per tile, entry_metrics over the phase: recall at precision > 0.2, FP score,
normal-region FROC).

    python reference_models/cell_detector/evaluate_real.py [--phase real-validation real-test fit] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import inference  # noqa: E402
from train import TASK, task_loader  # noqa: E402


def run_tile(entry, folder: Path, mpp: float, work: Path) -> tuple[Path, Path, float]:
    """(output JSON, reference JSON, detector seconds) for one tile, through the contract's files."""
    from arena.tasks.tiles_import import import_tile

    case = work / "case"
    img, ref = import_tile(folder / "tiles" / entry.tile, folder / "tiles.json", case, mpp)
    inp = work / "input" / "images" / "histopathology-roi"
    inp.mkdir(parents=True, exist_ok=True)
    for old in inp.iterdir():
        old.unlink()
    img.replace(inp / "tile.tif")
    t0 = time.time()
    inference.run_case(work / "input", work / "output")
    return work / "output" / inference.OUTPUT_NAME, ref, time.time() - t0


def evaluate(phase: str, folder: Path, log=print, tiles: list | None = None) -> dict:
    """The phase's DigestPath numbers (recall, normal FPs, fp_score, FROC, ...) and what was scored;
    ``tiles``: only these index entries of the phase (default: all of them)."""
    import pandas as pd

    from arena.kinds import kind_for
    from arena.tasks.spec import load_spec

    L = task_loader()
    spec = load_spec(TASK)
    kind = kind_for(spec)
    tiles = L.tiles_of(folder, phase) if tiles is None else tiles
    rows, seconds, targets = [], [], {}
    with tempfile.TemporaryDirectory(prefix="cell-detector-eval-") as tmp:
        for i, e in enumerate(tiles):
            work = Path(tmp) / "w"
            out, ref_path, s = run_tile(e, folder, L.MPP, work)
            ref = kind.load_reference(spec, ref_path)
            pred = kind.read_output(spec, out, work / "output", ref, [], [])
            key = L.case_key(e)
            targets[key] = {"targets": float(len(ref.boxes))}
            for lab, metrics in kind.score_case(spec, pred, ref).items():
                rows += [{"entry": "cell_detector", "case": key, "label": lab, "metric": m, "value": v}
                         for m, v in metrics.items()]
            seconds.append(s)
            log(f"  {phase} {i + 1}/{len(tiles)} {key}: {len(pred.boxes)} boxes, {len(ref.boxes)} annotated, {s:.1f} s")
    scores = pd.DataFrame(rows)
    board = kind.entry_metrics(scores, spec, [m.name for m in spec.metrics], ["cell_detector"], list(targets), targets)
    row = board.iloc[0].to_dict()
    out = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in row.items() if k != "entry"}
    out.update(phase=phase, tiles=len(tiles), positive_tiles=int(sum(e.positive for e in tiles)),
               negative_tiles=int(sum(not e.positive for e in tiles)),
               annotated_cells=int(sum(len(e.boxes) for e in tiles)), slides=sorted({e.slide for e in tiles}),
               detector_s_per_tile=round(sum(seconds) / max(len(seconds), 1), 2))
    return out


def main(argv=None) -> int:
    from arena.tasks.store import shared_data_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", nargs="+", default=["real-validation", "real-test"],
                    choices=["fit", "real-validation", "real-test"])
    ap.add_argument("--data-folder", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    folder = a.data_folder or shared_data_root() / "digestpath"
    t0 = time.time()
    results = [evaluate(p, folder) for p in a.phase]
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "slides"}))
    print(f"wall time {time.time() - t0:.0f} s")
    if a.out:
        a.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
