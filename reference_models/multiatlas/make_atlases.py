#!/usr/bin/env python3
"""Write the multi-atlas baseline's atlases for one task.

* ``--task han-oar-22`` (the committed ``atlases/``): han-oar-22 training phantoms (seeds 0..N-1,
  disjoint from the demo cases' seeds 1000+). CT on the demo's "small" grid (2.8 x 2.8 x 6 mm;
  registration only), labels on the 2 x 2 x 3 mm grid ("135x135x80"; one seed is one anatomy at every size).
* ``--task han-oar-openkbp`` (run by `arena reference build --task han-oar-openkbp` into the image's build
  context, never committed): OpenKBP *train* patients read from the shared data folder through
  openkbp_split.read_train_case (validation and test patients are refused). The pool is the N train
  patients with the most organs contoured (ties: lower patient number); per atlas the CT coarsened to
  the registration grid (6 mm, int16) and the label map on its own grid, plus ``index.json`` (patient,
  contoured label ids, files, how many atlases a case uses).

    python reference_models/multiatlas/make_atlases.py --n 5
    python reference_models/multiatlas/make_atlases.py --task han-oar-openkbp --n 24 --out /tmp/atlases
"""
import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(1, os.path.join(HERE, "..", "_shared"))  # openkbp_split.py
sys.path.insert(2, HERE)

import SimpleITK as sitk  # noqa: E402

import openkbp_split as split  # noqa: E402

OPENKBP_SELECT = 4  # atlases registered per case (the most similar ones; multiatlas.py)


def phantom_atlases(n: int, out: str) -> None:
    from arena.datasets.phantom import generate_case

    for seed in range(n):
        ct, _ = generate_case(seed, "small")
        _, lab = generate_case(seed, "135x135x80")
        sitk.WriteImage(ct, os.path.join(out, f"atlas-{seed:03d}-ct.mha"), True)
        sitk.WriteImage(lab, os.path.join(out, f"atlas-{seed:03d}-labels.mha"), True)
        print(f"atlas {seed}")


def openkbp_pool(cases: dict, n: int) -> list[str]:
    """The ``n`` train patients with the most organs contoured (ties: lower patient number)."""
    train = split.split_patients(cases, split.TRAIN_SPLIT)
    return sorted(train, key=lambda p: (-len(split.present_ids(cases[p])), int(p[3:])))[:n]


def openkbp_atlases(n: int, out: str, data_root: str) -> None:
    import multiatlas

    cases = split.load_cases(data_root)
    entries = []
    for p in openkbp_pool(cases, n):
        ct, lab, entry = split.read_train_case(data_root, p, cases)
        work = sitk.Cast(sitk.Round(multiatlas.work_grid(ct, multiatlas.OPENKBP_SPACING)), sitk.sitkInt16)
        names = {"ct": f"{p}-ct.mha", "labels": f"{p}-labels.mha"}
        sitk.WriteImage(work, os.path.join(out, names["ct"]), True)
        sitk.WriteImage(sitk.Cast(lab, sitk.sitkUInt8), os.path.join(out, names["labels"]), True)
        entries.append({"patient": p, "present": split.present_ids(entry), **names})
        print(f"atlas {p}: organs {split.present_ids(entry)}")
    index = {"task": "han-oar-openkbp", "source": "OpenKBP train split (Babier et al., Med Phys 2021), MIT",
             "select": OPENKBP_SELECT, "n_labels": len(split.ORGANS), "atlases": entries}
    with open(os.path.join(out, "index.json"), "w", encoding="utf-8") as fh:
        json.dump(index, fh, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="han-oar-22", choices=("han-oar-22", "han-oar-openkbp"))
    ap.add_argument("--n", type=int, default=None, help="atlases (default 5 phantoms, 24 OpenKBP patients)")
    ap.add_argument("--out", default=os.path.join(HERE, "atlases"))
    ap.add_argument("--data", default=None, help="shared data folder (default: arena's ARENA_SHARED_DATA)")
    a = ap.parse_args()
    if a.task == "han-oar-22":
        os.makedirs(a.out, exist_ok=True)
        phantom_atlases(a.n or 5, a.out)
        return
    if os.path.abspath(a.out) == os.path.abspath(os.path.join(HERE, "atlases")):
        sys.exit("OpenKBP atlases are CT data: write them into a build context (--out), not into the repository")
    if a.data is None:
        from arena.tasks.store import shared_data_root

        a.data = str(shared_data_root())
    shutil.rmtree(a.out, ignore_errors=True)  # the phantom atlases a staged context copied in
    os.makedirs(a.out)
    openkbp_atlases(a.n or 24, a.out, a.data)


if __name__ == "__main__":
    main()
