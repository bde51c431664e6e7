"""A small OpenKBP data folder for tests: chosen patients of the shared data, as symlinks, with their
cases.json rows (the layout `arena task load tasks/han-oar-openkbp --data DIR` reads)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def openkbp_folder(shared: Path, dest: Path, patients: list[str] | None = None,
                   per_split: dict[str, int] | None = None) -> list[dict]:
    """Write ``dest`` with ``patients`` (e.g. ``["pt_307"]``) or the first ``per_split[split]`` patients of
    each OpenKBP split; returns their cases.json rows."""
    rows = json.loads((shared / "openkbp" / "cases.json").read_text())
    if patients is not None:
        picked = [r for r in rows if r["patient"] in patients]
    else:
        picked, seen = [], {}
        for r in rows:
            if seen.get(r["openkbp_split"], 0) < (per_split or {}).get(r["openkbp_split"], 0):
                seen[r["openkbp_split"]] = seen.get(r["openkbp_split"], 0) + 1
                picked.append(r)
    dest.mkdir(parents=True)
    for r in picked:
        for part in ("ct", "oars"):
            name = f"{r['patient']}_{part}.nii.gz"
            os.symlink(shared / "openkbp" / name, dest / name)
    (dest / "cases.json").write_text(json.dumps(picked))
    return picked
