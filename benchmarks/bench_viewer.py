"""Case viewer latency: first slice and next slice, cold and warm cache, beside reading the case with SimpleITK.

Run: python benchmarks/bench_viewer.py [--repeat 5] [--patient pt_201]

The case: a real OpenKBP head-and-neck CT and its clinical contours (../shared/data/openkbp, read in place),
resampled to 512×512×100 over its own extent (pt_201: 1.36 × 1.36 × 3.84 mm; linear for the CT, nearest
for the labels) and written as compressed .mha, as the case store keeps cases; two model outputs made from
the contours (a two-voxel shift along x, organ 1 grown by two voxels). Timed, median of --repeat (ms):

  baseline ReadImage CT       SimpleITK.ReadImage of the CT alone (what any viewer pays to open the case)
  baseline ReadImage all      ... of the CT, the reference and both outputs
  first slice, cold cache     an axial slice with reference + A + B contours as PNG, the cache empty: reads the
                              four volumes and renders (their .npy cache files are written in the background)
  first slice, warm cache     the same slice in a process that has not opened the case, over the filled cache
                              (memory-mapped .npy files; the OS page cache is warm: it cannot be dropped here)
  same slice, case open       the same slice again in the process that has the case open
  next slice (axial/coronal/sagittal)  the following slice of each view once the case is open
  jump targets, cold / warm   per-organ disagreement slices and HD95 points of one model (computed / from jump.json)

One process, numbers from this machine (2 shared cores): compare the columns, not other machines.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from arena.config import Settings
from arena.viewer import volumes
from arena.viewer.case import CaseFiles, ModelOutput, ViewerCache

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZE = (512, 512, 100)  # x, y, z


def resample(img: sitk.Image, size: tuple[int, int, int], labels: bool) -> sitk.Image:
    phys = [n * s for n, s in zip(img.GetSize(), img.GetSpacing())]
    spacing = [p / n for p, n in zip(phys, size)]
    out = sitk.Resample(img, list(size), sitk.Transform(), sitk.sitkNearestNeighbor if labels else sitk.sitkLinear,
                        img.GetOrigin(), spacing, img.GetDirection(), -1024 if not labels else 0, img.GetPixelID())
    return out


def make_case(folder: Path, patient: str) -> tuple[CaseFiles, list[ModelOutput]]:
    src = SHARED / "openkbp"
    ct = resample(sitk.ReadImage(str(src / f"{patient}_ct.nii.gz")), SIZE, labels=False)
    ref = resample(sitk.ReadImage(str(src / f"{patient}_oars.nii.gz")), SIZE, labels=True)
    sitk.WriteImage(ct, str(folder / "image.mha"), True)
    sitk.WriteImage(ref, str(folder / "reference.mha"), True)
    arr = sitk.GetArrayFromImage(ref)
    outs = []
    for n, pred in enumerate((np.roll(arr, 2, axis=2), np.where(ndimage.binary_dilation(arr == 1, iterations=2)
                                                                  & (arr == 0), 1, arr).astype(arr.dtype))):
        img = sitk.GetImageFromArray(pred)
        img.CopyInformation(ref)
        path = folder / "results" / f"evaluation-{n + 1}" / "case" / "o.mha"
        path.parent.mkdir(parents=True)
        sitk.WriteImage(img, str(path), True)
        outs.append(ModelOutput(n + 1, path))
    return CaseFiles(1, folder / "image.mha", folder / "reference.mha"), outs


def timed(fn, repeat: int, before=None) -> float:
    times = []
    for _ in range(repeat):
        if before:
            before()
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--patient", default="pt_201")
    args = ap.parse_args()
    if not (SHARED / "openkbp" / f"{args.patient}_ct.nii.gz").is_file():
        raise SystemExit(f"{SHARED / 'openkbp'}: OpenKBP patient {args.patient} not found (the shared data folder)")
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        folder = Path(tmp)
        case, models = make_case(folder, args.patient)
        root, results = folder / "viewer-cache", folder / "results"
        z_mid = SIZE[2] // 2
        labels = list(range(1, 8))

        def clear() -> None:
            volumes.wait_for_writes()
            volumes.forget_open()
            shutil.rmtree(root, ignore_errors=True)

        def first_slice() -> bytes:
            return ViewerCache(root, results, Settings.viewer_cache_bytes).slice_png(case, models, "axial", z_mid)

        rows = [
            ("baseline ReadImage CT", timed(lambda: sitk.ReadImage(str(case.image)), args.repeat)),
            ("baseline ReadImage all", timed(lambda: [sitk.ReadImage(str(p)) for p in
                                                      (case.image, case.reference, *[m.prediction for m in models])],
                                             args.repeat)),
            ("first slice, cold cache", timed(first_slice, args.repeat, before=clear)),
        ]
        first_slice()
        volumes.wait_for_writes()
        rows.append(("first slice, warm cache", timed(first_slice, args.repeat, before=volumes.forget_open)))
        rows.append(("same slice, case open", timed(first_slice, args.repeat)))
        cache = ViewerCache(root, results, Settings.viewer_cache_bytes)
        for view, mid in (("axial", z_mid), ("coronal", 256), ("sagittal", 256)):
            state = {"i": mid}

            def next_slice(view=view, state=state) -> None:
                state["i"] += 1
                cache.slice_png(case, models, view, state["i"])
            rows.append((f"next slice, {view}", timed(next_slice, args.repeat)))

        def drop_jump() -> None:
            (root / "evaluations" / "1" / "1" / "jump.json").unlink(missing_ok=True)

        rows.append(("jump targets, cold", timed(lambda: cache.targets(case, models[0], labels), args.repeat,
                                                 before=drop_jump)))
        rows.append(("jump targets, warm", timed(lambda: cache.targets(case, models[0], labels), args.repeat)))
        png = first_slice()
        size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    print(f"case: OpenKBP {args.patient} resampled to {SIZE[0]}×{SIZE[1]}×{SIZE[2]}, reference + 2 model outputs; "
          f"median of {args.repeat} (ms)")
    base = rows[0][1]
    print(f"{'':28s} {'ms':>9s} {'× ReadImage CT':>15s}")
    for name, ms in rows:
        print(f"{name:28s} {ms:9.1f} {ms / base:15.2f}")
    print(f"axial slice PNG: {len(png) / 1024:.0f} KiB; cache for this case: {size_mb:.0f} MiB")


if __name__ == "__main__":
    main()
