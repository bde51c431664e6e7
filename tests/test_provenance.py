"""A reference entry's provenance (what it was trained on) is on the board page, in its CSV and JSON, and
in the frozen snapshot; participants' rows carry none."""

from __future__ import annotations

import csv
import io

from tests.web_helpers import fake_submission, make_task, make_user

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
