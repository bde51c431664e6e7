"""Reading a participant's output image: Arena's checked, jailed read beside a plain SimpleITK read, one run.

Run: python benchmarks/bench_output_reading.py [--repeat 5] [--size 512x512x100]

The plain read is what the worker did before (and what any tool pays): ``SimpleITK.ReadImage`` +
``GetArrayFromImage`` of a compressed .mha label map. Arena's read (arena.runner.output_check
.read_checked_output) checks the header's bytes, starts the bubblewrap jail (its own namespaces, user
nobody, Python + numpy + SimpleITK imported in there), reads the image in it, hands the array back as
.npy, and checks geometry and labels. The difference is the price of reading untrusted files safely;
it is paid once per case.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from arena.runner.output_check import jail_problem, read_checked_output


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", default="512x512x100", help="x × y × z voxels")
    args = ap.parse_args()
    x, y, z = (int(v) for v in args.size.split("x"))
    problem = jail_problem()
    if problem:
        raise SystemExit(problem)
    ref = sitk.GetImageFromArray(np.zeros((z, y, x), np.uint8))
    ref.SetSpacing((0.98, 0.98, 2.5))
    arr = np.zeros((z, y, x), np.uint8)
    rng = np.random.default_rng(0)
    for lab in range(1, 10):
        c = rng.integers((5, 40, 40), (z - 5, y - 40, x - 40))
        arr[c[0] - 4:c[0] + 4, c[1] - 20:c[1] + 20, c[2] - 20:c[2] + 20] = lab
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "output.mha"
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(ref)
        sitk.WriteImage(img, str(path), True)
        nbytes = path.stat().st_size
        plain, jailed = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            got = read_checked_output(path, ref, set(range(1, 10)))
            jailed.append(time.perf_counter() - t)
            assert np.array_equal(got, arr)
    p, j = statistics.median(plain), statistics.median(jailed)
    print(f"output {args.size} uint8, 9 labels, {nbytes / 1e3:.0f} kB compressed .mha; median of {args.repeat}")
    print(f"{'read':<52} {'s':>8}")
    print(f"{'plain SimpleITK read (no checks, no jail)':<52} {p:8.3f}")
    print(f"{'Arena: header check + jailed read + checks':<52} {j:8.3f}")
    print(f"ratio {j / p:.1f}x, {j - p:.2f} s more per case")


if __name__ == "__main__":
    main()
