"""Checks of one volumetric case (image + reference label map) before anything is written.

Every case that enters the case store goes through :func:`check_case` first (``arena.tasks.store.add_case``,
the folder import of ``arena task import-cases`` and of the organizer pages). It refuses, with a message
that names the file:

* an image or reference that is missing or unreadable (``missing label map`` when the reference is absent);
* a DICOM series with uneven slice spacing, i.e. a missing or duplicated slice (:mod:`arena.tasks.convert`);
* a reference on another grid than its image (other spacing, origin or extent), with both geometries in
  the message, *before* any resampling. The same voxel centres stored in another axis order or sign (a
  NIfTI written y-flipped next to its DICOM series) are the same grid and pass; a task loader may opt in
  to genuine resampling with ``resample_reference=True``;
* label values that are not in the task's label map (after the loader's ``label_map``, if any), or values
  that are not whole numbers from 0 to 255.

No database, no Flask: files in, a :class:`CaseReport` or a :class:`CaseCheckError` out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import SimpleITK as sitk

from arena.tasks import convert


class CaseCheckError(convert.CaseFormatError):
    """One case (or several, from an import) refused; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class CaseReport:
    """What the check found: the image's geometry, the reference's, the task labels present (after
    ``label_map``) and whether the reference must be put on the image grid (a permutation or, opted in,
    a resampling)."""

    key: str
    image: Path
    reference: Path
    geometry: dict[str, list]
    reference_geometry: dict[str, list]
    labels_present: list[int]
    reoriented: bool = False
    resampled: bool = False
    notes: list[str] = field(default_factory=list)


def label_values(img: sitk.Image, path: Path) -> list[int]:
    """The distinct non-zero values of a label image; CaseFormatError (naming ``path``) for fractions or
    values outside 0..255."""
    arr = sitk.GetArrayViewFromImage(img)
    if arr.size == 0:
        return []
    if arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0):
        raise convert.CaseFormatError(f"{path}: a label map must hold whole numbers, found fractions "
                                      f"(pixel type {img.GetPixelIDTypeAsString()})")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 255:
        raise convert.CaseFormatError(f"{path}: label values between 0 and 255 expected, found {lo}..{hi}")
    counts = np.bincount(np.asarray(arr, dtype=np.int64).ravel(), minlength=256)
    return [int(v) for v in np.flatnonzero(counts) if v]


def check_case(key: str, image: Path | str, reference: Path | str, labels: Mapping[int, object] | Iterable[int],
               label_map: Mapping[int, int] | None = None, resample_reference: bool = False) -> CaseReport:
    """Check one case; :class:`CaseCheckError` listing every problem found (each naming its file).

    ``labels``: the task's label ids (a ``TaskSpec.labels`` mapping or ids). ``label_map``: source value →
    task id, as a loader gives it (source values not in it become background, as in
    :func:`arena.tasks.convert.convert_case`). ``resample_reference``: allow a reference on another grid
    (nearest neighbour through physical coordinates); without it such a reference is refused.
    Reads the image header (a DICOM series fully) and the whole reference.
    """
    image, reference = Path(image), Path(reference)
    task_ids = {int(k) for k in labels}
    problems: list[str] = []
    geom = ref_geom = None
    try:
        if not image.exists():
            raise convert.CaseFormatError(f"{image}: image not found")
        geom = convert.read_geometry(image)  # header only; a DICOM series is read fully
    except (convert.CaseFormatError, RuntimeError) as e:
        problems.append(f"case {key}: {e}")
    present: list[int] = []
    ref = None
    if not reference.exists():
        problems.append(f"case {key}: {reference}: label map missing (the reference segmentation of "
                        f"{image.name} is not there)")
    else:
        try:
            ref = convert.read_image(reference)
            ref_geom = convert.geometry(ref)
            values = label_values(ref, reference)
            if label_map is not None:
                unknown_targets = sorted({int(t) for t in label_map.values() if int(t) and int(t) not in task_ids})
                if unknown_targets:
                    problems.append(f"case {key}: label_map targets {unknown_targets} are not in the task's "
                                    f"label map {sorted(task_ids)}")
                present = sorted({int(label_map[v]) for v in values if label_map.get(v)})
            else:
                unknown = [v for v in values if v not in task_ids]
                if unknown:
                    problems.append(f"case {key}: {reference}: label values {unknown} are not in the task's "
                                    f"label map (ids {_ranges(sorted(task_ids))})")
                present = [v for v in values if v in task_ids]
        except (convert.CaseFormatError, RuntimeError) as e:
            problems.append(f"case {key}: {e}")
    reoriented = resampled = False
    if geom is not None and ref_geom is not None and not convert.same_grid(geom, ref_geom):
        if convert.same_lattice(geom, ref_geom):
            reoriented = True
        elif resample_reference:
            resampled = True
        else:
            problems.append(f"case {key}: {reference}: reference on another grid than its image {image} "
                            f"(refused before any resampling). Reference: {convert.describe_grid(ref_geom)}; "
                            f"image: {convert.describe_grid(geom)}")
    if problems:
        raise CaseCheckError(problems)
    assert geom is not None and ref_geom is not None
    return CaseReport(key, image, reference, geom, ref_geom, present, reoriented=reoriented, resampled=resampled)


def _ranges(ids: list[int]) -> str:
    """``[1, 2, 3, 5]`` → ``1..3, 5``."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}..{ids[j]}")
        i = j + 1
    return ", ".join(out)
