#!/usr/bin/env python3
"""Write the multi-atlas baseline's atlases: han-oar-22 training phantoms (seeds 0..N-1, disjoint from
the demo cases' seeds 1000+). CT on the demo's "small" grid (2.8 x 2.8 x 6 mm; registration only),
labels on the 2 x 2 x 3 mm grid ("135x135x80"; the same anatomy, one seed is one anatomy at every size).

    python reference_models/multiatlas/make_atlases.py --n 5
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))

import SimpleITK as sitk  # noqa: E402

from arena.datasets.phantom import generate_case  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "atlases"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for seed in range(a.n):
        ct, _ = generate_case(seed, "small")
        _, lab = generate_case(seed, "135x135x80")
        sitk.WriteImage(ct, os.path.join(a.out, f"atlas-{seed:03d}-ct.mha"), True)
        sitk.WriteImage(lab, os.path.join(a.out, f"atlas-{seed:03d}-labels.mha"), True)
        print(f"atlas {seed}")


if __name__ == "__main__":
    main()
