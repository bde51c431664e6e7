"""The OpenKBP train-only guard of the reference models (training and atlas building).

The han-oar-openkbp task scores the 33 OpenKBP *validation* patients (public phase) and the 53 *test*
patients (hidden phase); its training data are the 170 *train* patients. Every script that fits a
reference model to OpenKBP data (AnatomyNet's ``train_openkbp.py``, the multi-atlas baseline's
``make_atlases.py``) reads patients only through :func:`read_train_case`, which checks the patient's
``openkbp_split`` in ``openkbp/cases.json`` *before* opening any file and raises
:class:`SplitViolation` for a validation or test patient (or one that cases.json does not list).

Data layout (the shared data folder, see arena.tasks.store.shared_data_root): ``openkbp/pt_N_ct.nii.gz``
(128^3, int16 HU), ``openkbp/pt_N_oars.nii.gz`` (uint8 label ids 1..7 in :data:`ORGANS` order, an organ
absent from a patient's map was not contoured), ``openkbp/cases.json`` (per patient ``patient``,
``openkbp_split``, ``spacing_xyz_mm``, ``present``, ``missing``).

Kept free of Arena imports: the module is also copied into the reference models' build contexts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

#: label id i + 1 -> organ name (OpenKBP's order; the task's label map)
ORGANS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
TRAIN_SPLIT = "train"
SPLITS = ("train", "validation", "test")


class SplitViolation(PermissionError):
    """A training or atlas-building script asked for a patient outside OpenKBP's train split."""


def openkbp_dir(data_root: str | Path) -> Path:
    """``<data_root>/openkbp``."""
    return Path(data_root) / "openkbp"


def patient_id(name: str) -> str:
    """``"pt_12"``, ``"pt-12"`` (an Arena case key) or ``"12"`` -> ``"pt_12"``; ValueError otherwise."""
    m = re.fullmatch(r"(?:pt[_-])?(\d+)", str(name).strip())
    if not m:
        raise ValueError(f"{name!r} is not an OpenKBP patient id (expected pt_N, pt-N or N)")
    return f"pt_{int(m.group(1))}"


def load_cases(data_root: str | Path) -> dict[str, dict]:
    """``cases.json`` as ``{patient: entry}``. FileNotFoundError when it is missing, ValueError when an
    entry lacks ``patient`` or has an unknown ``openkbp_split``."""
    path = openkbp_dir(data_root) / "cases.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: OpenKBP's cases.json is not there (set ARENA_SHARED_DATA to the "
                                "shared data folder)")
    entries = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, dict] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "patient" not in e or e.get("openkbp_split") not in SPLITS:
            raise ValueError(f"{path}: entry {i} has no patient or an openkbp_split outside {SPLITS}: {e!r}")
        out[patient_id(e["patient"])] = e
    return out


def split_patients(cases: dict[str, dict], split: str) -> list[str]:
    """Patients of ``split`` (train, validation or test), ordered by number."""
    if split not in SPLITS:
        raise ValueError(f"unknown OpenKBP split {split!r} (one of {SPLITS})")
    return sorted((p for p, e in cases.items() if e["openkbp_split"] == split), key=lambda p: int(p[3:]))


def check_train(patient: str, cases: dict[str, dict]) -> dict:
    """The cases.json entry of ``patient`` if it is a train patient; SplitViolation otherwise."""
    pid = patient_id(patient)
    entry = cases.get(pid)
    if entry is None:
        raise SplitViolation(f"{pid}: not listed in OpenKBP's cases.json, so not a train patient; refused")
    if entry["openkbp_split"] != TRAIN_SPLIT:
        raise SplitViolation(f"{pid} belongs to OpenKBP's {entry['openkbp_split']} split, which the "
                             "han-oar-openkbp task scores: reference models may be trained (or build atlases) "
                             "on the train split only; refused")
    return entry


def present_ids(entry: dict) -> list[int]:
    """Label ids (1..7) of the organs contoured for this patient (``present`` in cases.json)."""
    unknown = set(entry.get("present", [])) - set(ORGANS)
    if unknown:
        raise ValueError(f"{entry.get('patient')}: unknown organ(s) {sorted(unknown)} in 'present'")
    return [i + 1 for i, name in enumerate(ORGANS) if name in entry.get("present", [])]


def read_train_case(data_root: str | Path, patient: str, cases: dict[str, dict] | None = None):
    """``(ct, labels, entry)`` of a *train* patient as SimpleITK images (int16 HU, uint8 ids).

    The split is checked before any file is opened (SplitViolation for validation/test/unknown
    patients); FileNotFoundError names a missing image file."""
    cases = load_cases(data_root) if cases is None else cases
    entry = check_train(patient, cases)
    import SimpleITK as sitk

    pid = patient_id(patient)
    paths = [openkbp_dir(data_root) / f"{pid}_{kind}.nii.gz" for kind in ("ct", "oars")]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing for train patient {pid}")
    return sitk.ReadImage(str(paths[0])), sitk.ReadImage(str(paths[1])), entry
