"""Cases of han-oar-openkbp: the OpenKBP head-and-neck CTs with their clinical 7-OAR label maps, read from
the data folder the organizer names (``arena task load tasks/han-oar-openkbp --data DIR``; default
``openkbp`` below the shared data root) and never copied into the repository.

The folder holds ``pt_<N>_ct.nii.gz`` and ``pt_<N>_oars.nii.gz`` per patient and ``cases.json`` with
OpenKBP's own split (``openkbp_split``: train / validation / test). OpenKBP validation patients form the
``validation`` phase, OpenKBP test patients the hidden ``test`` phase, and the train patients are the
task's training data (``training``), which is never scored. A patient listed in cases.json whose files are
missing is an error naming the file (nothing is loaded).
"""

import json
from pathlib import Path

from arena.tasks.store import CaseSource

ATTRIBUTION = "OpenKBP (Babier et al., Med Phys 2021), MIT; images from TCIA head-and-neck collections"
PHASE_OF_SPLIT = {"validation": "validation", "test": "test"}


def _patients(folder: Path) -> list[dict]:
    index = Path(folder) / "cases.json"
    try:
        rows = json.loads(index.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{index}: not found (the OpenKBP folder lists its patients and split there)")
    except ValueError as e:
        raise ValueError(f"{index}: not valid JSON ({e})")
    bad = [r for r in rows if not isinstance(r, dict) or "patient" not in r or "openkbp_split" not in r]
    if not isinstance(rows, list) or bad:
        raise ValueError(f"{index}: expected a list of objects with 'patient' and 'openkbp_split'")
    return sorted(rows, key=_order)


def _order(row: dict) -> tuple[int, str]:
    """Patients in numeric order (pt_2 before pt_10)."""
    digits = "".join(ch for ch in str(row["patient"]) if ch.isdigit())
    return (int(digits) if digits else -1, str(row["patient"]))


def _source(folder: Path, row: dict, phase: str) -> CaseSource:
    p = str(row["patient"])
    return CaseSource(key=p.replace("_", "-"), image=Path(folder) / f"{p}_ct.nii.gz",
                      reference=Path(folder) / f"{p}_oars.nii.gz", phase=phase,
                      meta={"source": "openkbp", "patient": p, "openkbp_split": row["openkbp_split"],
                            "contoured": row.get("present", []), "not_contoured": row.get("missing", []),
                            "attribution": ATTRIBUTION})


def cases(folder: Path) -> list[CaseSource]:
    """OpenKBP validation patients (phase ``validation``) and test patients (phase ``test``)."""
    return [_source(folder, r, PHASE_OF_SPLIT[r["openkbp_split"]]) for r in _patients(folder)
            if r["openkbp_split"] in PHASE_OF_SPLIT]


def training(folder: Path) -> list[CaseSource]:
    """OpenKBP train patients: the task's training data (offered for download, never scored)."""
    return [_source(folder, r, "training") for r in _patients(folder) if r["openkbp_split"] == "train"]
