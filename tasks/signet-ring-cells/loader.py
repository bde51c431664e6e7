"""Real cases of signet-ring-cells: DigestPath 2019 signet ring cell tiles (Li et al., IPMI 2019; Da et al.,
Medical Image Analysis 80:102485, 2022), read from the shared data folder at load time and never copied into
the repository (the tiles may not be redistributed).

The folder (``digestpath/`` below the data root, or the folder itself when it holds ``tiles.json``) has
``tiles/*.jpeg`` and ``tiles.json`` (per tile: ``tile``, ``slide``, ``kind``, ``width``, ``height``,
``boxes_xyxy``). The whole index is checked before any case is listed (:mod:`arena.tasks.tiles_import`): a tile
that is not there, a size that differs from the index, a box outside its tile each stop the load with the
file named, and nothing is loaded.

Split by patient (several slides of one patient never straddle it), deterministic:
- patient = the slide id without a trailing block number ``_<n>-<m>`` (``2018_68000_1-8`` → ``2018_68000``);
  other slide ids are their own patient;
- within each kind (positive, negative), patients ordered by the SHA-256 of their id, then dealt in turn to
  ``fit`` (the cell detector's fitting set; never a case of any phase), ``real-validation`` (public scores)
  and ``real-test`` (hidden).

Each tile is stored in the case store as a tiled TIFF at its native resolution with the pixel size
:data:`MPP` in its resolution tags (see the task README for why 0.25 µm/px), and its reference is its boxes in
the tile kind's JSON format.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from arena.tasks.store import CaseSource
from arena.tasks.tiles_import import TileEntry, read_tile_index

ATTRIBUTION = ("DigestPath 2019 (Li et al., IPMI 2019; Da et al., Medical Image Analysis 80:102485, 2022); "
               "released to challenge participants, not for redistribution")
MPP = 0.25  # µm/px assumed: the tiles come from slides scanned at 40× (see the task README)
FIT, VALIDATION, TEST = "fit", "real-validation", "real-test"
ROLES = (FIT, VALIDATION, TEST)  # dealt in this order, per kind, over the patients in SHA-256 order
_BLOCK = re.compile(r"_\d+-\d+$")
_ORIGIN = re.compile(r"-lv0-(\d+)-(\d+)-\d+-\d+$")


def folder_of(data_folder: Path) -> Path:
    """The DigestPath folder: ``data_folder`` itself when it holds tiles.json, else ``data_folder/digestpath``."""
    data_folder = Path(data_folder)
    return data_folder if (data_folder / "tiles.json").is_file() else data_folder / "digestpath"


def patient_of(slide: str) -> str:
    """The patient a slide belongs to: the slide id without a trailing block number ``_<n>-<m>``."""
    return _BLOCK.sub("", slide)


def case_key(entry: TileEntry) -> str:
    """A short, readable case key: slide id and the tile's level-0 origin (``2018_68000_1-8-81540-6990``)."""
    stem = Path(entry.tile).stem
    m = _ORIGIN.search(stem)
    base = f"{entry.slide}-{m[1]}-{m[2]}" if m else stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base)


def split(entries: list[TileEntry]) -> dict[str, str]:
    """tile file name → role (``fit``, ``real-validation``, ``real-test``), by patient (module docstring)."""
    roles: dict[str, str] = {}
    for kind in ("positive", "negative"):
        patients = sorted({patient_of(e.slide) for e in entries if e.kind == kind},
                          key=lambda p: hashlib.sha256(p.encode()).hexdigest())
        role_of = {p: ROLES[i % len(ROLES)] for i, p in enumerate(patients)}
        roles.update({e.tile: role_of[patient_of(e.slide)] for e in entries if e.kind == kind})
    mixed = {patient_of(e.slide) for e in entries if e.kind == "positive"} \
        & {patient_of(e.slide) for e in entries if e.kind == "negative"}
    for p in mixed:  # a patient with both kinds: all its tiles follow its positive tiles' role
        role = next(roles[e.tile] for e in entries if e.kind == "positive" and patient_of(e.slide) == p)
        roles.update({e.tile: role for e in entries if patient_of(e.slide) == p})
    return roles


def entries(data_folder: Path) -> list[TileEntry]:
    """The checked index (every tile present, of the stated size, its boxes inside it)."""
    folder = folder_of(data_folder)
    return read_tile_index(folder / "tiles.json", folder / "tiles")


def tiles_of(data_folder: Path, role: str) -> list[TileEntry]:
    """The index entries of one role (``fit``, ``real-validation``, ``real-test``), in index order."""
    if role not in ROLES:
        raise ValueError(f"role: one of {list(ROLES)}, got {role!r}")
    es = entries(data_folder)
    roles = split(es)
    return [e for e in es if roles[e.tile] == role]


def _interleaved(es: list[TileEntry], roles: dict[str, str]) -> list[TileEntry]:
    """The held-out entries per phase, positive and negative tiles alternating (index order within a kind), so
    that the first N cases of a phase (``arena task load --limit``-style slices) hold both kinds."""
    out = []
    for role in ROLES[1:]:
        pos = [e for e in es if roles[e.tile] == role and e.positive]
        neg = [e for e in es if roles[e.tile] == role and not e.positive]
        for k in range(max(len(pos), len(neg))):
            out += pos[k:k + 1] + neg[k:k + 1]
    return out


def cases(data_folder: Path) -> list[CaseSource]:
    """The held-out tiles as cases of ``real-validation`` and ``real-test`` (the ``fit`` tiles are not cases),
    positive and negative tiles alternating within each phase."""
    folder = folder_of(data_folder)
    es = entries(folder)
    roles = split(es)
    out = [CaseSource(key=case_key(e), image=folder / "tiles" / e.tile, reference=folder / "tiles.json",
                      phase=roles[e.tile],
                      meta={"source": "digestpath", "slide": e.slide, "patient": patient_of(e.slide),
                            "positive": e.positive, "targets": int(len(e.boxes)), "mpp": MPP,
                            "size": [e.width, e.height], "attribution": ATTRIBUTION})
           for e in _interleaved(es, roles)]
    keys = [c.key for c in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"{folder / 'tiles.json'}: tiles that give the same case key: {dup[:5]}")
    return out
