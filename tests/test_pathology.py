"""Pathology tiles: slide I/O (pyramidal TIFF with mpp), the synthetic DigestPath generators, the task
folders, tile outputs through the runner's checks (named errors), the colon-tissue board (Dice + AUC)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arena.datasets import pathology as P
from arena.datasets.slides import image_size, read_level, read_region, read_tile, slide_info, write_slide, write_tile
from arena.kinds import kind_for

REPO = Path(__file__).resolve().parents[1]


# -- slide I/O ----------------------------------------------------------------------------------


def test_pyramidal_tiff_round_trip_with_mpp(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (700, 1100, 3), dtype=np.uint8)
    path = write_slide(tmp_path / "s.tif", img, mpp=0.25, tile=256, min_level_size=128)
    info = slide_info(path)
    assert info.mpp == pytest.approx(0.25)
    assert info.dimensions == (1100, 700) and info.level_count == 3 and info.tiled and info.samples == 3
    assert info.level_dimensions[1] == (550, 350) and info.level_downsamples[1] == 2.0
    assert np.array_equal(read_level(path, 0), img)
    # a region decodes only its tiles, and equals the slice of the full level
    assert np.array_equal(read_region(path, (300, 200), 0, (500, 300)), img[200:500, 300:800])
    lvl1 = read_level(path, 1)
    assert lvl1.shape == (350, 550, 3)
    expected = img[:700, :1100].reshape(350, 2, 550, 2, 3).astype(np.float32).mean(axis=(1, 3)).round()
    assert np.array_equal(lvl1, expected.astype(np.uint8))
    assert np.array_equal(read_region(path, (200, 100), 1, (64, 32)), lvl1[50:82, 100:164])
    edge = read_region(path, (1000, 600), 0, (200, 200))  # past the border: zeros
    assert np.array_equal(edge[:100, :100], img[600:, 1000:]) and not edge[100:].any() and not edge[:, 100:].any()
    # the resolution tags themselves, as other readers see them
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        num, den = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == 3 and num / den == pytest.approx(1e4 / 0.25)
        assert len(tf.series[0].levels) == 3


def test_plain_tiles_png_and_tiff(tmp_path):
    mask = (np.arange(64 * 48).reshape(48, 64) % 2).astype(np.uint8)
    for name in ("m.png", "m.tif"):
        p = write_tile(tmp_path / name, mask, mpp=0.5)
        assert np.array_equal(read_tile(p), mask) and image_size(p) == (64, 48)


# -- generators ---------------------------------------------------------------------------------


def test_signet_generator_is_deterministic_and_has_the_right_content():
    a, b = P.signet_tile(11, 256, True), P.signet_tile(11, 256, True)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    assert a.image.shape == (256, 256, 3) and a.image.dtype == np.uint8
    assert len(a.boxes) >= 1 and (a.boxes[:, 2] > a.boxes[:, 0]).all()
    assert (a.boxes >= 0).all() and (a.boxes <= 256).all()
    neg = P.signet_tile(12, 256, False)
    assert len(neg.boxes) == 0
    # H&E-like: mostly pink (red > green, blue > green), with dark purple nuclei somewhere
    mean = a.image.reshape(-1, 3).mean(0)
    assert mean[0] > mean[1] and mean[2] > mean[1]
    assert (a.image.sum(axis=2) < 300).mean() > 0.01
    # a cell's centre is pale (the clear vacuole), brighter than the tile's average
    x0, y0, x1, y1 = a.boxes[0]
    c = a.image[int((y0 + y1) / 2), int((x0 + x1) / 2)].astype(int)
    assert c.sum() > mean.sum()
    assert not np.array_equal(P.signet_tile(13, 256, True).image, a.image)


def test_digestpath_proportions_at_any_scale():
    assert P.digestpath_scale(1.0) == {"tiles": 687, "positive": 104, "negative": 583}
    assert P.digestpath_scale(0.1) == {"tiles": 68, "positive": 10, "negative": 58}
    flags = P.signet_split(687)
    assert sum(flags) == 104 and len(flags) == 687
    assert sum(P.signet_split(6)) == 2  # at least two positives so each of two phases gets one
    assert sum(P.colon_split(100)) == 38  # the demo's malignant share (no published proportion)
    # cells per positive tile: DigestPath's 14,589 / 104 at 2000 px, scaled by area
    rng = np.random.default_rng(0)
    n = [P.signet_tile(int(s), 256, True).meta["cells"] for s in rng.integers(0, 10**6, 6)]
    expected = P.CELLS_PER_POSITIVE_TILE * (256 / 2000) ** 2
    assert 0.3 * expected < np.mean(n) < 3 * expected


def test_colon_tile_mask_and_label():
    m = P.colon_tile(3, 256, True)
    b = P.colon_tile(4, 256, False)
    assert m.mask.any() and not b.mask.any() and m.mask.dtype == np.uint8 and set(np.unique(m.mask)) <= {0, 1}
    assert 0.05 < m.mask.mean() < 0.9
    # the lesion is more purple (hematoxylin) than the normal tissue around it
    inside, outside = m.image[m.mask == 1].mean(0), m.image[m.mask == 0].mean(0)
    assert inside[0] < outside[0]
    assert np.array_equal(P.colon_tile(3, 256, True).image, m.image)


# -- task folders -------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["signet-ring-cells", "colon-tissue"])
def test_task_folders_validate(slug):
    from arena.tasks.spec import load_spec

    spec = load_spec(REPO / "tasks" / slug)
    assert not kind_for(spec).volumetric and spec.has_set_metrics
    assert (REPO / "tasks" / slug / "README.md").is_file()


def test_spec_errors_for_detection_tasks():
    import yaml

    from arena.tasks.spec import TaskSpecError, parse_spec

    data = yaml.safe_load((REPO / "tasks" / "signet-ring-cells" / "task.yaml").read_text())
    bad = {**data, "outputs": [{"slug": "x", "kind": "json", "relative_path": "x.json"}]}
    with pytest.raises(TaskSpecError, match="needs an output of kind 'bounding-boxes'"):
        parse_spec(bad)
    with pytest.raises(TaskSpecError, match="ranked by 'digestpath-2019'"):
        parse_spec({**data, "ranking": {**data["ranking"], "method": "aggregate-then-rank"}})
    with pytest.raises(TaskSpecError, match="an IoU in"):
        parse_spec({**data, "detection": {"criterion": "iou", "threshold": 3}})


def test_every_shipped_task_still_validates():
    from arena.tasks.spec import load_spec

    for p in sorted((REPO / "tasks").glob("*/task.yaml")):
        load_spec(p)


# -- demo data, runner checks, colon board ------------------------------------------------------


def test_demo_cases_load_into_both_phases(settings, db):
    from arena.tasks.store import load_demo_cases, upsert_task

    task = upsert_task(db, REPO / "tasks" / "signet-ring-cells")
    cases = load_demo_cases(db, settings, task, 6, size="tiny")
    assert len(cases) == 6
    for phase in task.phases:
        if phase.slug.startswith("real-"):  # the real DigestPath phases list their own cases: no demo tiles
            assert not phase.cases, phase.slug
            continue
        kinds = {bool(c.meta["positive"]) for c in phase.cases}
        assert kinds == {True, False}, phase.slug
    c = next(c for c in cases if c.meta["positive"])
    assert c.image_path.endswith(".tif") and c.reference_path.endswith(".json")
    assert slide_info(c.image_path).mpp == pytest.approx(0.5)
    ref = json.loads(Path(c.reference_path).read_text())
    assert ref["type"] == "Multiple 2D bounding boxes" and len(ref["boxes"]) == c.meta["targets"]


def _colon_output(out: Path, mask, probability) -> None:
    (out / "images" / "lesion-segmentation").mkdir(parents=True, exist_ok=True)
    if mask is not None:
        write_tile(out / "images" / "lesion-segmentation" / "mask.png", mask)
    if probability is not None:
        (out / "malignancy-probability.json").write_text(json.dumps(probability))


def test_colon_outputs_scored_and_checked(settings, db, tmp_path):
    from arena.runner.evaluate import CaseOutcome, check_case_output, load_reference, score_case
    from arena.tasks.store import load_demo_cases, spec_of, upsert_task

    task = upsert_task(db, REPO / "tasks" / "colon-tissue")
    cases = load_demo_cases(db, settings, task, 4, size="tiny")
    spec = spec_of(task)
    mal = next(c for c in cases if c.meta["malignant"])
    ref = load_reference(spec, Path(mal.reference_path))
    assert ref.target == 1
    out = tmp_path / "ok"
    _colon_output(out, ref.mask, 0.9)
    o = CaseOutcome(ok=False)
    pred = check_case_output(spec, out, ref, o)
    assert o.ok, o.error
    assert score_case(spec, pred, ref) == {1: {"dice": 1.0, "probability": 0.9, "target": 1.0}}
    # failed case: Dice 0, the maximally wrong probability
    assert score_case(spec, None, ref) == {1: {"dice": 0.0, "probability": 0.0, "target": 1.0}}
    problems = {
        "wrong-size": (np.zeros((10, 10), np.uint8), 0.5, "expected the tile's 256×256"),
        "bad-label": (np.full((256, 256), 7, np.uint8), 0.5, "values not in the task's label map"),
        "bad-prob": (ref.mask, 1.5, "expected a number in [0, 1], got 1.5"),
        "no-prob": (ref.mask, None, "no output: expected the JSON file /output/malignancy-probability.json"),
        "no-mask": (None, 0.5, "no output mask in /output/images/lesion-segmentation/"),
    }
    for name, (mask, p, message) in problems.items():
        d = tmp_path / name
        _colon_output(d, mask, p)
        o = CaseOutcome(ok=False)
        assert check_case_output(spec, d, ref, o) is None
        assert not o.ok and message in o.error, (name, o.error)
        assert o.failure.value == "invalid-output"


def test_auc_matches_mann_whitney_and_hand_values():
    from scipy.stats import mannwhitneyu

    from arena.metrics import roc_auc

    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5  # ties count one half
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # many ties
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert roc_auc(y, s) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)


def test_colon_board_mean_rank_of_dice_and_auc():
    """Three entries over four cases (two malignant): Dice mean and AUC ranked, final = mean rank."""
    import pandas as pd

    from arena.leaderboard.set_level import set_level_rank
    from arena.tasks.spec import load_spec

    spec = load_spec(REPO / "tasks" / "colon-tissue")
    truth = {"c1": 1, "c2": 1, "c3": 0, "c4": 0}
    sub = {  # entry: per case (dice, probability)
        "A": {"c1": (0.8, 0.9), "c2": (0.6, 0.8), "c3": (1.0, 0.1), "c4": (1.0, 0.2)},  # dice .85, auc 1
        "B": {"c1": (0.9, 0.9), "c2": (0.9, 0.1), "c3": (1.0, 0.5), "c4": (1.0, 0.2)},  # dice .95, auc .5
        "C": {"c1": (0.5, 0.6), "c2": (0.5, 0.7)},  # c3, c4 failed: dice 0, p = 1 → auc 0; dice .25
    }
    rows = [(e, c, 1, m, v) for e, cs in sub.items() for c, (d, p) in cs.items()
            for m, v in (("dice", d), ("probability", p), ("target", truth[c]))]
    scores = pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"])
    board = set_level_rank(scores, spec, "test", ["A", "B", "C"], list(truth),
                           {c: {"target": t} for c, t in truth.items()})
    b = board.set_index("entry")
    assert b.loc["A", "auc"] == 1.0 and b.loc["B", "auc"] == 0.5 and b.loc["C", "auc"] == 0.0
    assert b.loc["A", "dice"] == pytest.approx(0.85) and b.loc["C", "dice"] == pytest.approx(0.25)
    # ranks: dice B1 A2 C3; auc A1 B2 C3 → mean A 1.5, B 1.5, C 3 → A and B share rank 1
    assert b["rank"].to_dict() == {"A": 1, "B": 1, "C": 3}
