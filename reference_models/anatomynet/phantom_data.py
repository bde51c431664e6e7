"""Training and validation data for the reference networks: han-oar-22 phantoms on the canonical grid.

Training-time only (not copied into the images). The han-oar-22 demo cases use seeds 1000+i, so the
training split is seeds 0..N-1 (disjoint). One seed gives the same anatomy at every grid size, so a
case's CT can come from a coarser grid (the demo's "small" 2.8 x 2.8 x 6 mm or "medium") resampled onto
the canonical grid exactly as the containers do it, while its labels come from the canonical grid
itself. Works without SimpleITK (the phantom only needs it to write images).
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (HERE, os.path.abspath(os.path.join(HERE, "..", "_shared")),  # refio
           os.path.abspath(os.path.join(HERE, "..", ".."))):  # the repo, for arena.datasets
    if _p not in sys.path:
        sys.path.append(_p)

import refio  # noqa: E402

N_CLASSES = 23  # background + 22 StructSeg organs
CANON_PHANTOM = "135x135x80"  # exactly the canonical grid's spacing and centre (2 x 2 x 3 mm)
FINE_PHANTOM = "270x270x96"  # 1 x 1 x 2.5 mm, for FocusNetv2's SOS-Net ROIs
SOURCES = ("canon", "small", "medium")


def _phantom():
    from arena.datasets import phantom

    return phantom


def canonical_labels(seed: int) -> np.ndarray:
    case = _phantom().generate_case_arrays(seed, CANON_PHANTOM)
    return np.pad(case.labels, ((0, 0), (0, 1), (0, 1)))  # 80 x 135 x 135 -> 80 x 136 x 136 (air)


def canonical_case(seed: int, source: str = "canon") -> tuple[np.ndarray, np.ndarray]:
    """(network input float16 (80, 136, 136), labels uint8 (80, 136, 136)) for one training seed."""
    ph = _phantom()
    case = ph.generate_case_arrays(seed, CANON_PHANTOM)
    labels = np.pad(case.labels, ((0, 0), (0, 1), (0, 1)))
    if source == "canon":
        hu = np.pad(case.ct.astype(np.float32), ((0, 0), (0, 1), (0, 1)), constant_values=-1000.0)
    else:
        src = ph.generate_case_arrays(seed, source)
        hu = refio.to_canonical_np(src.ct, src.spacing, src.origin)
    return refio.normalize(hu).astype(np.float16), labels


def _job(args):
    seed, source = args
    return canonical_case(seed, source)


def make_dataset(seeds, sources=SOURCES, processes: int = 8):
    """Arrays X (N, 80, 136, 136) float16 and Y uint8 for every (seed, source in turn)."""
    jobs = [(int(s), sources[i % len(sources)]) for i, s in enumerate(seeds)]
    if processes > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(processes) as pool:
            out = pool.map(_job, jobs, chunksize=2)
    else:
        out = [_job(j) for j in jobs]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def validation_case(seed: int, size: str = "small"):
    """A demo-like case: (network input on the canonical grid, labels on the case's own grid, case)."""
    case = _phantom().generate_case_arrays(seed, size)
    x = refio.normalize(refio.to_canonical_np(case.ct, case.spacing, case.origin))
    return x, case.labels, case


def dice_per_label(pred: np.ndarray, ref: np.ndarray, n_classes: int = N_CLASSES) -> dict[int, float]:
    """Dice per organ present in ``ref`` or ``pred`` (both empty: left out)."""
    out = {}
    for lab in range(1, n_classes):
        p, r = pred == lab, ref == lab
        s = int(p.sum()) + int(r.sum())
        if s:
            out[lab] = 2.0 * int((p & r).sum()) / s
    return out


def organ_centres_canonical(labels: np.ndarray, organs) -> np.ndarray:
    """(K, 3) centroid voxel coordinates (z, y, x) on the canonical grid; NaN for absent organs."""
    out = np.full((len(organs), 3), np.nan, np.float32)
    for k, lab in enumerate(organs):
        idx = np.argwhere(labels == lab)
        if len(idx):
            out[k] = idx.mean(0)
    return out
