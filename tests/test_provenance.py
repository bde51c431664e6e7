"""A reference entry's provenance (what it was trained on) is on the board page, in its CSV and JSON, and
in the frozen snapshot; participants' rows carry none."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tests.web_helpers import fake_submission, make_task, make_user

REPO = Path(__file__).resolve().parents[1]
TRAINED = "trained on OpenKBP train patients only (170); 2-core CPU, reduced resolution"


def test_provenance_on_board_csv_and_json(settings, db, app):
    from arena.users import get_or_create_team
    from arena.web.boards import snapshot_board

    task = make_task(db, settings)
    ref_user, _ = make_user(db, "ref")
    ref_user.team = get_or_create_team(db, "Reference models", is_reference=True)
    alice, _ = make_user(db, "alice", team="Alice's lab")
    ref = fake_submission(db, settings, task, "validation", ref_user, dice=0.7, label="anatomynet (reference)")
    ref.provenance = TRAINED
    fake_submission(db, settings, task, "validation", alice, dice=0.6, label="mine")
    db.commit()

    client = app.test_client()
    page = client.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    assert TRAINED in page
    rows = list(csv.DictReader(io.StringIO(client.get("/tasks/han-oar-22/leaderboard.csv?phase=validation")
                                           .get_data(as_text=True))))
    by_label = {r["label"]: r for r in rows}
    assert by_label["anatomynet (reference)"]["provenance"] == TRAINED
    assert by_label["mine"]["provenance"] == ""
    board = client.get("/api/v1/tasks/han-oar-22/leaderboard?phase=validation").get_json()
    assert {r["label"]: r["provenance"] for r in board["rows"]}["anatomynet (reference)"] == TRAINED

    phase = next(p for p in task.phases if p.slug == "validation")
    with app.app_context():
        from flask import g

        g.db = db
        snapshot_board(phase)
    assert {r["label"]: r.get("provenance") for r in phase.frozen_board}["anatomynet (reference)"] == TRAINED


def test_published_rows_note_only_where_there_are_published_rows(settings, db, app):
    """Issue 16: the note explaining published rows appears on han-oar-22's board (FocusNetv2's tables) and
    not on han-oar-openkbp's, which has none."""
    from arena.models import Case
    from arena.tasks.store import upsert_task

    alice, _ = make_user(db, "alice", team="Alice's lab")
    h22 = make_task(db, settings)
    fake_submission(db, settings, h22, "validation", alice, dice=0.6)
    kbp = upsert_task(db, REPO / "tasks" / "han-oar-openkbp")
    val = next(p for p in kbp.phases if p.slug == "validation")
    folder = settings.cases_dir / "han-oar-openkbp" / "pt-1"
    folder.mkdir(parents=True)
    for name in ("image", "reference"):  # the board reads the reference's header for the penalty distance
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8)), str(folder / f"{name}.mha"))
    case = Case(task=kbp, key="pt-1", image_path=str(folder / "image.mha"),
                reference_path=str(folder / "reference.mha"), meta={})
    db.add(case)
    val.cases.append(case)
    db.flush()
    fake_submission(db, settings, kbp, "validation", alice, dice=0.5)
    db.commit()
    client = app.test_client()
    assert "Published rows (italic)" in client.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    page = client.get("/tasks/han-oar-openkbp?phase=validation").get_data(as_text=True)
    assert "Leaderboard" in page and "0.500" in page
    assert "Published rows" not in page and "distance convention" not in page
