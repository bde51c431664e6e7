"""Write the reference entries' board numbers into each reference model's README.

Run after `arena demo [--all-tasks]` (same ARENA_HOME): for every reference model on the demo boards
(arena.reference.DEMO_REFERENCE) the block between ``<!-- board:<task>/<phase>:begin -->`` and
``<!-- board:<task>/<phase>:end -->`` in reference_models/<name>/README.md (or, where the README has no
such block, between ``<!-- board:begin -->`` and ``<!-- board:end -->``) is replaced by `arena reference
report` output for that model, so the READMEs quote exactly what the board shows (a model on two tasks'
boards keeps one block per task). tests/test_reference_models.py re-runs the models through
the runner on the same cases and checks the README numbers against the board.

    ARENA_HOME=/tmp/demo arena demo --no-serve --all-tasks && ARENA_HOME=/tmp/demo python scripts/reference_readmes.py
"""

from __future__ import annotations

import re
import sys

from sqlalchemy import select

from arena import reference
from arena.config import load_settings
from arena.db import session_scope
from arena.leaderboard.query import leaderboard
from arena.models import Task

BEGIN, END = "<!-- board:begin -->", "<!-- board:end -->"


def main() -> int:
    settings = load_settings()
    missing = []
    with session_scope(settings.database_url) as s:
        for slug, phase_slug, names in reference.DEMO_REFERENCE:
            task = s.scalar(select(Task).where(Task.slug == slug))
            phase = next((p for p in task.phases if p.slug == phase_slug), None) if task else None
            for name in names:
                text = reference.report(leaderboard(s, task, phase), [name]) if phase else ""
                if not text:
                    missing.append(f"{name} on {slug}/{phase_slug}")
                    continue
                readme = reference.default_models_dir() / name / "README.md"
                body = readme.read_text()
                begin, end = f"<!-- board:{slug}/{phase_slug}:begin -->", f"<!-- board:{slug}/{phase_slug}:end -->"
                if begin not in body:
                    begin, end = BEGIN, END
                if begin not in body or end not in body:
                    sys.exit(f"{readme}: no {begin} … {end} block to replace")
                block = (f"{begin}\n`arena demo --all-tasks` board, "
                         f"{slug} / {phase_slug} (`arena reference report --task {slug} --phase {phase_slug}"
                         f" --name {name}`):\n\n{text.strip()}\n{end}")
                readme.write_text(re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda m: block, body,
                                         flags=re.S))
                print(f"{readme}: updated")
    if missing:
        print("no board entry for: " + ", ".join(missing), file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
