"""signet-ring-cells (DigestPath 2019 task 1): the board reproduces the DigestPath ranking on a
hand-computed example, bad JSON outputs get named errors, and the cell_detector reference model runs
end to end through the real runner (docker)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from arena.datasets.pathology import boxes_to_gc
from arena.lifecycle import EvaluationStatus, SubmissionStatus
from web_helpers import PASSWORD

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "tasks" / "signet-ring-cells"

# -- the hand-computed example ------------------------------------------------------------------
# Four 256×256 tiles: c1 two cells, c2 one cell, c3 and c4 negative (normal). 3 targets, 2 normal tiles.
GT = {"c1": [(10, 10, 40, 40), (100, 100, 130, 130)], "c2": [(50, 50, 80, 80)], "c3": [], "c4": []}
FAR = [(200 + 5 * k, 200, 220 + 5 * k, 220) for k in range(6)]  # boxes that hit nothing
# per team and tile: (box, probability); a GT box itself is a true positive
PRED = {
    # recall 1 (at .4: 3 TP / 7 boxes = .43 > .2); normal FPs 3 → fp_score 97; every TP above every
    # normal FP → sensitivity 1 at every rate: froc 1
    "A": {"c1": [(GT["c1"][0], .9), (GT["c1"][1], .8), (FAR[0], .95)], "c2": [(GT["c2"][0], .7)],
          "c3": [(FAR[0], .6), (FAR[1], .4)], "c4": [(FAR[0], .5)]},
    # c1's second cell missed; one FP on a positive tile (not a normal-region FP). PR: .9T .7F .6T .3F →
    # precisions 1, .5, .67, .5 → recall 2/3. Normal FPs 1 → 99. FROC points (x = FPs / 2 normal tiles):
    # (0, 0) (0, 1/3) (0, 2/3) (.5, 2/3) → 2/3 at every rate ≥ 1: froc 2/3
    "B": {"c1": [(GT["c1"][0], .9), (FAR[0], .7)], "c2": [(GT["c2"][0], .6)], "c3": [(FAR[0], .3)], "c4": []},
    # c2 missed, five confident normal FPs above both TPs. PR: 5 F, then .5T (1/6 = .17 ≤ .2), .4T (2/7 =
    # .29 > .2) → recall 2/3. Normal FPs 5 → 95. FROC after dropping collinear points: (0, 0) (.5, 0)
    # (2.5, 0) (2.5, 2/3): rates 1 and 2 read 0, rates 4–32 read 2/3 → froc 4/6 · 2/3 = 4/9
    "C": {"c1": [(GT["c1"][0], .5), (GT["c1"][1], .4)], "c2": [],
          "c3": [(FAR[0], .9), (FAR[1], .8), (FAR[2], .7)], "c4": [(FAR[0], .6), (FAR[1], .55)]},
}
# ranks: recall A1 B2 C2 · fp_score B1 A2 C3 · froc A1 B2 C3 → mean 4/3, 5/3, 8/3 → A, B, C
EXPECTED = {"A": (1.0, 3, 97.0, 1.0, 1), "B": (2 / 3, 1, 99.0, 2 / 3, 2), "C": (2 / 3, 5, 95.0, 4 / 9, 3)}


def _write_case(root: Path, key: str) -> tuple[Path, Path]:
    from arena.datasets.slides import write_slide

    d = root / key
    d.mkdir(parents=True, exist_ok=True)
    write_slide(d / "image.tif", np.full((256, 256, 3), 230, np.uint8), 0.5)
    ref = boxes_to_gc(np.array(GT[key], dtype=float).reshape(-1, 4))
    ref["image_size"] = [256, 256]
    (d / "reference.json").write_text(json.dumps(ref))
    return d / "image.tif", d / "reference.json"


def _prediction_json(items) -> dict:
    boxes = np.array([b for b, _ in items], dtype=float).reshape(-1, 4)
    return boxes_to_gc(boxes, np.array([p for _, p in items]))


def _scored_teams(settings, db, tmp_path):
    """Three teams scored through the runner's output check and per-case scoring, stored as case results of
    the task's test phase. The tiles are registered without case info: their truth is read from the
    references. Returns the task, the phase and each team's submission."""
    from arena.tasks.store import add_tile_case
    from arena.models import CaseResult, Evaluation, MetricValue
    from arena.lifecycle import CaseStatus
    from arena.runner.evaluate import CaseOutcome, check_case_output, load_reference, score_case
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import spec_of, upsert_task
    from arena.users import create_user

    task = upsert_task(db, TASK)
    spec = spec_of(task)
    test_phase = next(p for p in task.phases if p.slug == "test")
    cases = {}
    for key in GT:
        img, ref = _write_case(tmp_path / "src", key)
        cases[key] = add_tile_case(db, settings, task, key, img, ref, [test_phase])
        assert cases[key].meta["targets"] == len(GT[key]) and cases[key].meta["positive"] == bool(GT[key])
    subs = {}
    for team, per_case in PRED.items():
        user, _ = create_user(db, f"user-{team}", team=f"Team {team}", password=PASSWORD)
        sub = create_submission(db, task.slug, "test", user, StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
        sub.set_status(SubmissionStatus.VALIDATED)
        subs[team] = sub
        ev = Evaluation(submission=sub, status=EvaluationStatus.QUEUED, cases_total=len(GT))
        db.add(ev)
        db.flush()
        for key, case in cases.items():
            out = tmp_path / "out" / team / key
            out.mkdir(parents=True)
            (out / "signet-ring-cells.json").write_text(json.dumps(_prediction_json(per_case.get(key, []))))
            ref = load_reference(spec, Path(case.reference_path))
            outcome = CaseOutcome(ok=False)
            pred = check_case_output(spec, out, ref, outcome)
            assert outcome.ok, outcome.error
            cr = CaseResult(evaluation_id=ev.id, case_id=case.id, status=CaseStatus.SUCCEEDED)
            cr.metrics = [MetricValue(label=lab, metric=m, value=v)
                          for lab, vals in score_case(spec, pred, ref).items() for m, v in vals.items()]
            db.add(cr)
        ev.set_status(EvaluationStatus.RUNNING)
        ev.set_status(EvaluationStatus.SCORING)
        ev.set_status(EvaluationStatus.SUCCEEDED)
    db.commit()
    return task, test_phase, subs


def _assert_expected(board) -> None:
    t = board.table.set_index("team")
    for team, (recall, fps, fp_score, froc, rank) in EXPECTED.items():
        row = t.loc[f"Team {team}"]
        assert row["recall"] == pytest.approx(recall, abs=1e-12), team
        assert row["normal_fps"] == fps and row["fp_score"] == fp_score, team
        assert row["froc"] == pytest.approx(froc, abs=1e-12), team
        assert row["rank"] == rank, team
    assert t.loc["Team A", "rank:recall"] == 1 and t.loc["Team B", "rank:recall"] == 2 == t.loc["Team C", "rank:recall"]
    assert list(board.table["team"]) == ["Team A", "Team B", "Team C"]
    assert (board.table["cases"] == 4).all()


def test_digestpath_board_reproduces_hand_computed_ranking(settings, db, tmp_path):
    from arena.leaderboard.query import compute_leaderboard

    task, phase, _ = _scored_teams(settings, db, tmp_path)
    _assert_expected(compute_leaderboard(db, task, phase))


def test_a_tile_nobody_has_scored_counts_by_its_reference_or_is_left_out_when_unknown(settings, db, tmp_path):
    """A tile imported after the teams were scored: its reference's cells count as missed by every team; a
    tile whose truth the server cannot know (a site's case: no reference here, no row yet) is left out for
    every team alike, instead of failing the board."""
    from arena.leaderboard.query import compute_leaderboard
    from arena.models import Case
    from arena.tasks.store import add_tile_case

    task, phase, _ = _scored_teams(settings, db, tmp_path)
    GT["c5"] = [(20, 20, 50, 50)]
    try:
        img, ref = _write_case(tmp_path / "src", "c5")
    finally:
        del GT["c5"]
    c5 = add_tile_case(db, settings, task, "c5", img, ref, [phase])
    db.commit()
    t = compute_leaderboard(db, task, phase).table.set_index("team")
    assert t.loc["Team A", "recall"] == pytest.approx(3 / 4)  # 3 of 4 targets now; the new one is missed
    site = Case(task=task, key="site-1", image_path="", reference_path="", meta={"site": {"image": "0" * 64}})
    db.add(site)
    phase.cases.append(site)
    phase.cases.remove(c5)
    db.commit()
    _assert_expected(compute_leaderboard(db, task, phase))


def test_detection_board_and_entry_pages_render_the_digestpath_numbers(app, settings, db, tmp_path):
    from web_helpers import make_user, sign_in

    task, phase, subs = _scored_teams(settings, db, tmp_path)
    make_user(db, "org", admin=True)
    db.commit()
    org = sign_in(app.test_client(), "org")
    r = org.get(f"/tasks/{task.slug}?phase={phase.slug}")
    assert r.status_code == 200, r.get_data(as_text=True)[:400]
    board = r.get_data(as_text=True)
    assert board.index("Team A") < board.index("Team B") < board.index("Team C")
    assert f"/tasks/{task.slug}/entries/{subs['B'].id}" in board
    r = org.get(f"/tasks/{task.slug}/entries/{subs['B'].id}")
    assert r.status_code == 200, r.get_data(as_text=True)[:400]
    entry = r.get_data(as_text=True)
    assert "Team B" in entry and "0.667" in entry and "99" in entry  # recall 2/3, FP score 99 (EXPECTED)
    api = org.get(f"/api/v1/tasks/{task.slug}/leaderboard?phase={phase.slug}")
    assert api.status_code == 200 and [r["team"] for r in api.get_json()["rows"]][:3] == ["Team A", "Team B",
                                                                                           "Team C"]


def test_a_failed_case_misses_its_targets(settings, db, tmp_path):
    from arena.leaderboard.set_level import set_level_rank
    from arena.runner.evaluate import load_reference, score_case
    from arena.tasks.spec import load_spec

    import pandas as pd

    spec = load_spec(TASK)
    rows = []
    for key in GT:
        _, ref_path = _write_case(tmp_path, key)
        ref = load_reference(spec, ref_path)
        for lab, vals in score_case(spec, None, ref).items():
            rows += [("X", key, lab, m, v) for m, v in vals.items()]
    board = set_level_rank(pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"]), spec, "test",
                           ["X"], list(GT))
    assert board.loc[0, "recall"] == 0 and board.loc[0, "froc"] == 0 and board.loc[0, "fp_score"] == 100


# -- bad outputs get named errors ---------------------------------------------------------------

BOX = [[10, 10, 0], [30, 10, 0], [30, 30, 0], [10, 30, 0]]


@pytest.mark.parametrize("content, message", [
    ("{not json", "signet-ring-cells.json: not valid JSON (line 1, column 2"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"type": "Multiple points", "points": []}), '"type" must be "Multiple 2D bounding boxes"'),
    (json.dumps({"type": "Multiple 2D bounding boxes"}), '"boxes" must be a list'),
    (json.dumps({"type": "Multiple 2D bounding boxes", "boxes": [{"corners": BOX}]}),
     "boxes[0]: missing 'probability'"),
    (json.dumps({"type": "Multiple 2D bounding boxes", "boxes": [{"corners": BOX, "probability": 1.2}]}),
     "boxes[0].probability: expected a number in [0, 1], got 1.2"),
    (json.dumps({"type": "Multiple 2D bounding boxes", "boxes": [{"corners": BOX, "probability": "high"}]}),
     "boxes[0].probability: expected a number, got str"),
    (json.dumps({"type": "Multiple 2D bounding boxes", "boxes": [
        {"corners": BOX, "probability": 0.5},
        {"corners": [[250, 250, 0], [300, 250, 0], [300, 300, 0], [250, 300, 0]], "probability": 0.5}]}),
     "boxes[1]: box (250, 250)–(300, 300) is not inside the 256×256 image"),
    (json.dumps({"type": "Multiple 2D bounding boxes", "boxes": [{"corners": BOX[:3], "probability": 0.5}]}),
     "boxes[0].corners: expected 4 points"),
    (json.dumps({"type": "Multiple 2D bounding boxes", "boxes": [
        {"corners": [[10, 10], [10, 10], [10, 10], [10, 10]], "probability": 0.5}]}), "boxes[0]: empty box"),
    (json.dumps({"type": "Multiple 2D bounding boxes", "boxes": [
        {"corners": [[10, 10], [float("nan"), 10], [30, 30], [10, 30]], "probability": 0.5}]}),
     "boxes[0].corners[1][0]: expected a finite number"),
    ("x" * (17 * 2**20), "over the task's 16 MB limit"),
    (json.dumps({"type": "Multiple 2D bounding boxes", "boxes": [{"corners": BOX, "probability": 0.5}] * 5001}),
     "5001 boxes, more than the task's limit of 5000"),
])
def test_bad_json_outputs_get_named_errors(tmp_path, content, message):
    from arena.runner.evaluate import CaseOutcome, check_case_output, load_reference
    from arena.tasks.spec import load_spec

    spec = load_spec(TASK)
    _, ref_path = _write_case(tmp_path / "case", "c1")
    ref = load_reference(spec, ref_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "signet-ring-cells.json").write_text(content)
    o = CaseOutcome(ok=False)
    assert check_case_output(spec, out, ref, o) is None
    assert message in o.error and o.failure.value == "invalid-output", o.error


def test_missing_or_linked_json_output(tmp_path):
    from arena.runner.evaluate import CaseOutcome, check_case_output, load_reference
    from arena.tasks.spec import load_spec

    spec = load_spec(TASK)
    _, ref_path = _write_case(tmp_path / "case", "c1")
    ref = load_reference(spec, ref_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "boxes.json").write_text("{}")
    o = CaseOutcome(ok=False)
    check_case_output(spec, tmp_path / "out", ref, o)
    assert o.error == "no output: expected the JSON file /output/signet-ring-cells.json (found: boxes.json)"
    o = CaseOutcome(ok=False)
    check_case_output(spec, tmp_path / "out", ref, o, ["signet-ring-cells.json (symlink)"])
    assert "was not collected (signet-ring-cells.json (symlink))" in o.error


# -- the cell detector through the real runner ---------------------------------------------------


@pytest.fixture(scope="module")
def cell_detector_image(docker_engine, base_image):
    from arena.images.build import build_image

    return build_image(str(REPO / "reference_models" / "cell_detector"), "arena-test/cell-detector:signet", base_image,
                       log=lambda s: None)


def _queued_evaluation(settings, db, image_id: str, io_mode: str, n_tiles: int) -> int:
    from arena.models import Evaluation
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    task = upsert_task(db, TASK)
    if io_mode != "per-case":
        task.spec = {**task.spec, "io_mode": io_mode}
    load_demo_cases(db, settings, task, n_tiles, size="small")
    user, _ = create_user(db, f"detector-{io_mode}", team=f"Reference {io_mode}")
    sub = create_submission(db, task.slug, "validation", user, StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
    sub.set_status(SubmissionStatus.VALIDATED)
    sub.image_id = image_id
    ev = Evaluation(submission=sub, status=EvaluationStatus.QUEUED, cases_total=len(sub.phase.cases))
    db.add(ev)
    db.commit()
    return ev.id


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("io_mode", ["per-case", "batch"])
def test_cell_detector_end_to_end_through_the_runner(settings, db, cell_detector_image, docker_engine, io_mode):
    from arena.leaderboard.query import compute_leaderboard
    from arena.models import Evaluation
    from arena.runner.jobs import run_evaluation

    ev_id = _queued_evaluation(settings, db, cell_detector_image, io_mode, 8)
    assert run_evaluation(ev_id) == "succeeded"
    db.expire_all()
    ev = db.get(Evaluation, ev_id)
    assert all(cr.status.value == "succeeded" for cr in ev.case_results), [cr.error for cr in ev.case_results]
    assert all(Path(cr.output_path).name == "signet-ring-cells.json" for cr in ev.case_results)
    phase = ev.submission.phase
    board = compute_leaderboard(db, ev.submission.task, phase)
    row = board.table.iloc[0]
    assert row["rank"] == 1 and row["cases"] == len(phase.cases) == 4
    assert row["recall"] >= 0.5 and row["froc"] >= 0.3 and row["fp_score"] >= 50, row.to_dict()
    # its README quotes the `arena demo --all-tasks` board (the same 8 tiles): those numbers are these
    readme = (REPO / "reference_models" / "cell_detector" / "README.md").read_text()
    claimed = re.search(r"\*\*cell_detector \(reference\)\*\* on signet-ring-cells/validation \((\d+) cases\): "
                        r"recall ([\d.]+), fp_score ([\d.]+), froc ([\d.]+)", readme)
    assert claimed, "reference_models/cell_detector/README.md: no board line"
    assert int(claimed[1]) == row["cases"]
    assert (float(claimed[2]), float(claimed[3]), float(claimed[4])) == pytest.approx(
        (row["recall"], row["fp_score"], row["froc"]), abs=1e-3)
    # evaluation IDs repeat across test databases sharing the engine: this run's containers carry its queue too
    assert not docker_engine.containers.list(all=True, filters={"label": [f"arena.evaluation={ev_id}",
                                                                          f"arena.queue={settings.queue_name}"]})
