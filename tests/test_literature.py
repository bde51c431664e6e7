"""Published rows are evidence: every tasks/*/literature.csv says where each number comes from (source, table),
on which data set and under which distance convention, and han-oar-22's numbers are exactly the shared
transcription of FocusNetv2's Tables 1 and 2."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arena.leaderboard.ranking import place_literature
from arena.metrics.directions import DISTANCE_METRICS
from arena.tasks.literature import distance_conventions, load_literature
from arena.tasks.spec import load_spec
from arena.tasks.store import shared_data_root

REPO = Path(__file__).resolve().parents[1]
LITERATURE_FILES = sorted(REPO.glob("tasks/*/literature.csv"))
FOCUSNET_TABLES = "literature/focusnetv2_tables1-2_22oar.csv"


def test_there_are_literature_files():
    assert {p.parent.name for p in LITERATURE_FILES} >= {"han-oar-9", "han-oar-22"}


@pytest.mark.parametrize("path", LITERATURE_FILES, ids=lambda p: p.parent.name)
def test_every_published_row_says_source_table_dataset_and_convention(path):
    spec = load_spec(path.parent)
    assert spec.literature == path.name, f"{path.parent.name}/task.yaml does not declare its literature file"
    lit = load_literature(path, spec)
    assert len(lit), f"{path}: no published rows"
    for col in ("source", "citation", "table", "dataset", "convention"):
        empty = lit[lit[col].astype(str).str.strip() == ""]
        assert empty.empty, f"{path}: {len(empty)} rows without {col}"
    dist = lit[lit["metric"].isin(DISTANCE_METRICS)]
    assert dist["convention"].isin(distance_conventions()).all()
    assert (lit.loc[~lit["metric"].isin(DISTANCE_METRICS), "convention"] == "n/a").all()
    # a published number is never this task's measurement: the data set must not pretend otherwise
    assert not lit["evaluated_here"].any()


def _transcription() -> pd.DataFrame:
    path = shared_data_root() / FOCUSNET_TABLES
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    with path.open(newline="", encoding="utf-8") as f:
        return pd.DataFrame(list(csv.DictReader(f)))


def test_han_oar_22_numbers_equal_the_shared_transcription():
    src = _transcription()
    task = REPO / "tasks" / "han-oar-22"
    lit = load_literature(task / "literature.csv", load_spec(task))
    got = {(r.model, r.label_name, r.metric): (r.reported, r.sd) for r in lit.itertuples()}
    expected = {}
    for r in src.itertuples():
        if r.arena_label == "small_mean":  # the paper's small-organ average: not a label of the task
            continue
        for metric in ("dice", "hd95"):
            sd = getattr(r, f"{metric}_sd")
            expected[(r.method, r.arena_label, metric)] = (float(getattr(r, metric)), float(sd) if sd else np.nan)
    assert set(got) == set(expected)
    for k, (value, sd) in expected.items():
        assert got[k][0] == value, f"{k}: {got[k][0]} != {value} (transcription)"
        assert (np.isnan(sd) and np.isnan(got[k][1])) or got[k][1] == pytest.approx(sd / (100 if k[2] == "dice" else 1))
    # the two cells that look like typos in the paper are kept as printed, and flagged
    flagged = lit[lit["flag"] != ""]
    assert {(r.model, r.label_name, r.metric) for r in flagged.itertuples()} == {
        ("DeepLabv3+", "Lens_R", "dice"), ("FocusNetv2", "Mandible_R", "hd95")}
    assert flagged.set_index("model").loc["DeepLabv3+", "sd"] == pytest.approx(0.6821)
    # the authors' in-house data, not StructSeg; their 95HD is the mean of the directed percentiles
    assert lit["dataset"].str.contains("NOT StructSeg").all()
    assert (lit.loc[lit["metric"] == "hd95", "convention"] == "mean-directed").all()


def test_han_oar_22_small_organs_are_the_six_focusnetv2_names():
    spec = load_spec(REPO / "tasks" / "han-oar-22")
    assert sorted(s.name for s in spec.labels.values() if s.small) == sorted(
        ["Lens_L", "Lens_R", "OpticNerve_L", "OpticNerve_R", "OpticChiasm", "Pituitary"])


def test_han_oar_22_board_places_rows_with_their_dataset_and_convention():
    spec = load_spec(REPO / "tasks" / "han-oar-22")
    lit = load_literature(REPO / "tasks" / "han-oar-22" / "literature.csv", spec)
    names = {lab: s.name for lab, s in spec.labels.items()}
    weights = {lab: s.weight for lab, s in spec.labels.items()}
    board = pd.DataFrame({"entry": [1, 2], "rank": [1, 2], "mean_rank": [1.0, 2.0], "dice": [0.82, 0.5],
                          "hd95": [2.5, 30.0]})
    placed = place_literature(board, lit, ["dice", "hd95"], label_weights=weights, label_names=names,
                              conventions={"hd95": "medpy"}).set_index("model")
    fn2 = placed.loc["FocusNetv2"]
    assert "NOT StructSeg" in fn2["dataset"] and "data set:" in fn2["note"]
    assert fn2["convention:hd95"] == "mean-directed"
    assert "hd95: the paper's mean-directed convention, not this board's medpy" in fn2["caveats"]
    assert fn2["table"] == "Table 1; Table 2"
    # all 22 organs reported: the importance-weighted mean is computed from them, comparable
    assert fn2["comparable"] and fn2["dice"] == pytest.approx(
        sum(weights[k] * v for k, v in ((lab, lit[(lit["model"] == "FocusNetv2") & (lit["metric"] == "dice")
                                                   & (lit["label"] == lab)]["value"].item()) for lab in names))
        / sum(weights.values()))
    assert placed.loc["DeepLabv3+", "flag:dice:Lens_R"].startswith("typo?")
    assert placed.loc["FocusNetv2", "flag:hd95:Mandible_R"].startswith("typo?")
    # same convention as the board: no caveat
    same = place_literature(board, lit, ["dice", "hd95"], label_weights=weights, label_names=names,
                            conventions={"hd95": "mean-directed"}).set_index("model")
    assert "convention" not in same.loc["FocusNetv2", "caveats"]
    # flagged cells are listed among the caveats (so the CSV and JSON carry them too)
    assert "hd95 Mandible_R: typo? hd95 SD 1.26" in same.loc["FocusNetv2", "caveats"]
    # published rows sharing a position are listed best first
    assert list(placed["dice"]) == sorted(placed["dice"], reverse=True)


def test_han_oar_22_board_page_shows_dataset_convention_and_flags(settings, db, shared_data):
    """The web board of han-oar-22 (StructSeg's mean of metric ranks) with one team: the FocusNetv2-table rows
    appear as published, with their data set, their HD95 convention tag and the flagged cells."""
    from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
    from arena.models import CaseResult, Evaluation, MetricValue, Submission
    from arena.tasks.store import add_case, upsert_task
    from arena.users import create_user
    from arena.web import create_app

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    val = next(p for p in task.phases if p.slug == "validation")
    for cid in ("0522c0001", "0522c0002"):  # any real reference image serves as a case here
        ref = shared_data / "pddca" / cid / "labelmap_9oar.nii.gz"
        add_case(db, settings, task, cid, ref, ref, [val])
    user, _ = create_user(db, "alpha", team="Alpha")
    sub = Submission(task=task, phase=val, team=user.team, user=user, label="Alpha v1",
                     status=SubmissionStatus.VALIDATED, image_id="sha256:alpha")
    ev = Evaluation(submission=sub, status=EvaluationStatus.SUCCEEDED, cases_total=2, cases_done=2)
    db.add_all([sub, ev])
    db.flush()
    for case in val.cases:
        cr = CaseResult(evaluation_id=ev.id, case_id=case.id, status=CaseStatus.SUCCEEDED)
        cr.metrics = [MetricValue(label=lab, metric=m, value=0.8 if m == "dice" else 2.0)
                      for lab in range(1, 23) for m in ("dice", "hd95")]
        db.add(cr)
    db.commit()
    client = create_app(settings).test_client()
    page = client.get("/tasks/han-oar-22?phase=validation&organs=all").get_data(as_text=True)
    assert page.count('<span class="badge">published</span>') == 5
    assert "data: FocusNetv2 authors&#39; in-house nasopharyngeal-cancer CTs" in page and "NOT StructSeg" in page
    assert ">mean-directed</sup>" in page and "not this board&#39;s medpy" in page
    assert "typo? dice SD 68.21 as printed" in page
    rows = client.get("/api/v1/tasks/han-oar-22/leaderboard?phase=validation").get_json()["rows"]
    published = [r for r in rows if r.get("badge") == "published"]
    assert len(published) == 5 and all("NOT StructSeg" in r["dataset"] for r in published)
    assert all(r["convention:hd95"] == "mean-directed" for r in published)
