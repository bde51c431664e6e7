"""Loading han-oar-openkbp from the OpenKBP data folder (86 validation + test patients into the case store,
170 train patients into the training manifest), beside the floor of the same work done by hand in the
same run: SimpleITK reading each NIfTI pair and writing it as .mha, nothing else.

Run: python benchmarks/bench_task_load.py [--data ../shared/data/openkbp]

Prints, for a fresh ARENA_HOME: the first `arena task load` (reads, checks, converts, hashes the training
files), a second load of the same folder (idempotent: unchanged cases are not read again) and the plain
SimpleITK copy, each in seconds and as a ratio to the plain copy. Times include the database writes but
not the process start (the load runs in this process).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "openkbp"


def _plain_copy(folder: Path, out: Path, patients: list[str]) -> float:
    t0 = time.perf_counter()
    for p in patients:
        for part in ("ct", "oars"):
            sitk.WriteImage(sitk.ReadImage(str(folder / f"{p}_{part}.nii.gz")), str(out / f"{p}_{part}.mha"), True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    args = ap.parse_args()
    rows = json.loads((args.data / "cases.json").read_text())
    scored = [r["patient"] for r in rows if r["openkbp_split"] in ("validation", "test")]
    with tempfile.TemporaryDirectory(prefix="arena-bench-load-") as tmp:
        os.environ["ARENA_HOME"] = str(Path(tmp) / "home")
        os.environ["ARENA_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'home' / 'arena.db'}"
        from arena.config import load_settings
        from arena.db import session_scope, upgrade
        from arena.tasks.store import load_real_cases, upsert_task

        settings = load_settings()
        settings.ensure_dirs()
        upgrade(settings.database_url)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            with session_scope(settings.database_url) as s:
                task = upsert_task(s, REPO / "tasks" / "han-oar-openkbp")
                n = len(load_real_cases(s, settings, task, REPO / "tasks" / "han-oar-openkbp", data_root=args.data))
            times.append(time.perf_counter() - t0)
        plain_dir = Path(tmp) / "plain"
        plain_dir.mkdir()
        plain = _plain_copy(args.data, plain_dir, scored)
    print(f"han-oar-openkbp: {n} scored cases (+ {len(rows) - len(scored)} training cases in the manifest), "
          f"{os.cpu_count()} CPUs")
    print(f"{'what':44} {'seconds':>8} {'per case':>9} {'× plain':>8}")
    for what, t in (("arena task load, first time", times[0]), ("arena task load, again (unchanged)", times[1]),
                    ("plain SimpleITK read + write .mha (floor)", plain)):
        print(f"{what:44} {t:8.2f} {1000 * t / n:7.1f}ms {t / plain:8.2f}")


if __name__ == "__main__":
    main()
