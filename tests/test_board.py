"""Boards from the database: completion of missing cases, rank intervals, published rows, caching, pages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
from arena.models import CaseResult, Evaluation, MetricValue, Submission

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def board_db(settings, db, shared_data):
    """han-oar-9 with two real PDDCA reference label maps as validation cases and three teams' results."""
    from arena.tasks.store import add_case, upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-9")
    val = next(p for p in task.phases if p.slug == "validation")
    keys = []
    for cid in ("0522c0001", "0522c0002", "0522c0003"):
        ref = shared_data / "pddca" / cid / "labelmap_9oar.nii.gz"
        add_case(db, settings, task, cid, ref, ref, [val])
        keys.append(cid)
    rng = np.random.default_rng(0)
    subs = {}
    for team, level in (("Alpha", 0.85), ("Beta", 0.75), ("Gamma", 0.60)):
        user, _ = create_user(db, team.lower(), team=team, reference_team=team == "Beta" or None)
        sub = Submission(task=task, phase=val, team=user.team, user=user, label=f"{team} v1",
                         status=SubmissionStatus.VALIDATED, image_id=f"sha256:{team}")
        db.add(sub)
        db.flush()
        ev = Evaluation(submission=sub, status=EvaluationStatus.SUCCEEDED, cases_total=3, cases_done=3)
        db.add(ev)
        db.flush()
        for case in val.cases:
            if team == "Gamma" and case.key == "0522c0003":
                continue  # a case with no result at all: must count as worst, not be dropped
            cr = CaseResult(evaluation_id=ev.id, case_id=case.id, status=CaseStatus.SUCCEEDED)
            cr.metrics = [MetricValue(label=lab, metric=m, value=float(level + rng.normal(0, 0.02)) if m == "dice"
                                      else float((1 - level) * 20 + rng.normal(0, 0.5)))
                          for lab in range(1, 10) for m in ("dice", "hd95")]
            db.add(cr)
        subs[team] = sub.id
    db.commit()
    return task, val, subs


def test_board_ranks_completes_and_places_published(board_db, db):
    from arena.leaderboard.query import compute_leaderboard

    task, val, _ = board_db
    board = compute_leaderboard(db, task, val)
    t = board.table
    ranked = t[t["rank"].notna()]
    assert list(ranked["team"]) == ["Alpha", "Beta", "Gamma"] and list(ranked["rank"]) == [1, 2, 3]
    gamma = ranked.set_index("team").loc["Gamma"]
    assert gamma["dice"] == pytest.approx((0.60 * 2 + 0.0) / 3, abs=0.03)  # the missing case counts as Dice 0
    filled = board.scores[board.scores["filled"]]
    assert set(filled["case"]) == {"0522c0003"} and (filled[filled["metric"] == "dice"]["value"] == 0).all()
    assert (filled[filled["metric"] == "hd95"]["value"] > 300).all()  # the image diagonal, mm
    assert {"rank_p2.5", "rank_p97.5", "p_first"} <= set(t.columns)
    assert ranked.iloc[0]["p_first"] > 0.5
    assert list(ranked["badge"]) == ["", "reference", ""]  # Beta's team is a bundled reference model
    published = t[t["badge"] == "published"]
    assert "AnatomyNet" in set(published["model"]) and published["rank"].isna().all()
    anatomynet = published.set_index("model").loc["AnatomyNet"]
    assert anatomynet["dice"] == pytest.approx(np.mean([86.65, 53.22, 92.51, 72.10, 70.64, 88.07, 87.35, 81.37,
                                                        81.30]) / 100, abs=1e-9)
    assert "not evaluated on this test set" in anatomynet["note"]


def _add_entry(db, task, phase, team_user: str, label: str, dice: float, runtime_s: float, memory_mb: float) -> int:
    from arena.models import User

    user = db.query(User).filter_by(name=team_user).one()
    sub = Submission(task=task, phase=phase, team=user.team, user=user, label=label,
                     status=SubmissionStatus.VALIDATED, image_id=f"sha256:{label}")
    ev = Evaluation(submission=sub, status=EvaluationStatus.SUCCEEDED, cases_total=3, cases_done=3)
    db.add_all([sub, ev])
    db.flush()
    for i, case in enumerate(phase.cases):
        cr = CaseResult(evaluation_id=ev.id, case_id=case.id, status=CaseStatus.SUCCEEDED,
                        runtime_s=runtime_s + i, peak_memory_mb=memory_mb + 10 * i)
        cr.metrics = [MetricValue(label=lab, metric=m, value=dice if m == "dice" else 5.0)
                      for lab in range(1, 10) for m in ("dice", "hd95")]
        db.add(cr)
    db.commit()
    return ev.id


def test_reference_models_are_each_a_row_and_runtimes_shown(board_db, db):
    """A team shows one entry (its best); the reference team's models are each a row of their own. The
    board carries each entry's mean seconds per case and largest peak memory."""
    from arena.leaderboard.query import compute_leaderboard

    task, val, _ = board_db
    _add_entry(db, task, val, "alpha", "Alpha v2", 0.5, 10.0, 500.0)  # worse than Alpha v1: hidden
    _add_entry(db, task, val, "beta", "multiatlas (reference)", 0.7, 30.0, 400.0)
    _add_entry(db, task, val, "beta", "anatomynet (reference)", 0.8, 10.0, 1000.0)
    t = compute_leaderboard(db, task, val).table
    ranked = t[t["rank"].notna()]
    assert sorted(ranked["label"]) == ["Alpha v1", "Beta v1", "Gamma v1", "anatomynet (reference)",
                                       "multiatlas (reference)"]
    refs = ranked[ranked["badge"] == "reference"].set_index("label")
    assert len(refs) == 3 and set(refs["team"]) == {"Beta"}
    assert refs.loc["anatomynet (reference)", "runtime_s"] == pytest.approx(11.0)  # mean of 10, 11, 12 s
    assert refs.loc["anatomynet (reference)", "peak_memory_mb"] == pytest.approx(1020.0)  # the largest case
    assert refs.loc["multiatlas (reference)", "runtime_s"] == pytest.approx(31.0)
    assert np.isnan(ranked.set_index("label").loc["Alpha v1", "runtime_s"])  # not recorded for it


def test_board_cache_invalidates_on_new_result(board_db, db):
    from arena.leaderboard.query import leaderboard

    task, val, subs = board_db
    first = leaderboard(db, task, val)
    assert leaderboard(db, task, val) is first
    sub = db.get(Submission, subs["Gamma"])
    ev = Evaluation(submission=sub, status=EvaluationStatus.SUCCEEDED, cases_total=3, cases_done=3)
    db.add(ev)
    db.flush()
    for case in val.cases:
        cr = CaseResult(evaluation_id=ev.id, case_id=case.id, status=CaseStatus.SUCCEEDED)
        cr.metrics = [MetricValue(label=lab, metric=m, value=0.99 if m == "dice" else 0.5)
                      for lab in range(1, 10) for m in ("dice", "hd95")]
        db.add(cr)
    db.commit()
    second = leaderboard(db, task, val)
    assert second is not first
    assert second.table[second.table["rank"] == 1]["team"].iloc[0] == "Gamma"  # the re-run is the latest result


def test_board_pages(board_db, settings):
    from arena.web import create_app

    task, val, _ = board_db
    client = create_app(settings).test_client()
    page = client.get("/tasks/han-oar-9?phase=validation").get_data(as_text=True)
    assert "Alpha" in page and "AnatomyNet" in page and "published" in page and "Rank 95% CI" in page
    assert '<span class="badge">reference</span>' in page and "Kendall" in page
    svg = client.get("/tasks/han-oar-9/rank-distribution.svg?phase=validation")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml" and b"<svg" in svg.data
    cmp = client.get("/tasks/han-oar-9/compare?phase=validation&metric=hd95").get_data(as_text=True)
    assert "Wilcoxon" in cmp and "BrainStem" in cmp and "<svg" in cmp
    dist = client.get("/tasks/han-oar-9/distributions?phase=validation")
    assert dist.status_code == 200
    box = client.get("/tasks/han-oar-9/distributions.svg?phase=validation&metric=dice&entry=1&entry=2")
    assert box.status_code == 200 and b"<svg" in box.data
    api = client.get("/api/v1/tasks/han-oar-9/leaderboard?phase=validation").get_json()
    assert [r["team"] for r in api["rows"] if r["rank"] is not None] == ["Alpha", "Beta", "Gamma"]
    assert any(r.get("badge") == "published" for r in api["rows"])
    csv = client.get("/tasks/han-oar-9/leaderboard.csv?phase=validation").get_data(as_text=True)
    assert "AnatomyNet" in csv and "p_first" in csv.splitlines()[0]


def test_board_pages_refuse_bad_parameters(board_db, settings):
    from arena.web import create_app

    client = create_app(settings).test_client()
    assert client.get("/tasks/han-oar-9/compare?phase=validation&metric=volume").status_code == 404
    assert client.get("/tasks/han-oar-9/compare?phase=validation&a=x&b=1").status_code == 404
    assert client.get("/tasks/han-oar-9/distributions.svg?phase=validation&entry=abc").status_code == 404
    assert client.get("/tasks/han-oar-9?phase=final").status_code == 404
    assert client.get("/tasks/nope").status_code == 404
