"""Real DigestPath 2019 tiles as signet-ring-cells' real phases: the split by patient, the load through the
container contract (tiled TIFF with resolution tags, boxes as the kind's JSON), bad input refused naming the
file with nothing loaded, and the cell detector's guard against fitting on held-out tiles.

The tiles are read from the shared data folder (never copied into the repository); the bad-input fixtures are
small crops of real tiles written to tmp_path.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arena.tasks import tiles_import
from arena.tasks.tiles_import import TileImportError

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "tasks" / "signet-ring-cells"


def _module(name: str, path: Path):
    """A module loaded from its file under a name of its own (other reference models have a train.py too);
    what it adds to sys.path and its sibling imports (``detector``) are undone for the tests that follow."""
    path_before, modules_before = list(sys.path), set(sys.modules)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = path_before
        for added in ("detector", "inference"):
            if added not in modules_before:
                sys.modules.pop(added, None)
    return mod


def _loader():
    return _module("signet_loader_test", TASK / "loader.py")


DETECTOR = REPO / "reference_models" / "cell_detector"


@pytest.fixture(scope="module")
def digestpath(shared_data) -> Path:
    d = shared_data / "digestpath"
    if not (d / "tiles.json").is_file():
        pytest.skip(f"DigestPath tiles not found at {d}")
    return d


# -- the split ------------------------------------------------------------------------------------


def test_split_is_by_patient_keeps_both_kinds_and_matches_the_task_phases(digestpath):
    from arena.tasks.spec import load_spec

    L = _loader()
    entries = L.entries(digestpath)
    roles = L.split(entries)
    assert roles == L.split(list(reversed(entries)))  # order of the index does not matter
    patients: dict[str, set[str]] = {}
    for e in entries:
        patients.setdefault(L.patient_of(e.slide), set()).add(roles[e.tile])
    assert all(len(r) == 1 for r in patients.values()), "a patient's tiles straddle the split"
    assert L.patient_of("2018_68000_1-8") == L.patient_of("2018_68000_1-7") == "2018_68000"
    for role in L.ROLES:
        kinds = {e.kind for e in entries if roles[e.tile] == role}
        assert kinds == {"positive", "negative"}, role
    # the phases list exactly the loader's cases (so demo tiles never land in them); fit tiles are no case
    spec = load_spec(TASK)
    listed = {p.slug: set(p.cases or []) for p in spec.phases}
    sources = L.cases(digestpath)
    for phase in ("real-validation", "real-test"):
        assert listed[phase] == {c.key for c in sources if c.phase == phase}, phase
    fit_keys = {L.case_key(e) for e in L.tiles_of(digestpath, "fit")}
    assert fit_keys and not fit_keys & {c.key for c in sources}
    assert sum(c.meta["targets"] for c in sources) + sum(len(e.boxes) for e in L.tiles_of(digestpath, "fit")) == 2986


# -- loading through the contract -------------------------------------------------------------------


def test_real_tiles_load_as_tiled_tiffs_with_resolution_and_box_references(settings, db, digestpath):
    import tifffile

    from arena.datasets.slides import slide_info
    from arena.kinds import kind_for
    from arena.models import Case
    from arena.tasks.store import load_real_cases, spec_of, upsert_task

    task = upsert_task(db, TASK)
    cases = load_real_cases(db, settings, task, TASK, limit=2)  # 2 per phase: conversion costs ~1 s a tile
    db.commit()
    assert len(cases) == 4
    assert {p.slug: len(p.cases) for p in task.phases} == {"validation": 0, "test": 0, "real-validation": 2,
                                                         "real-test": 2}
    spec = spec_of(task)
    kind = kind_for(spec)
    positive = next(c for c in cases if c.meta["positive"])
    src = digestpath / "tiles" / next(e.tile for e in _loader().entries(digestpath)
                                      if _loader().case_key(e) == positive.key)
    assert positive.image_path.endswith("image.tif") and positive.reference_path.endswith("reference.json")
    info = slide_info(positive.image_path)
    assert info.mpp == pytest.approx(0.25) and info.tiled and info.level_count > 1
    with tifffile.TiffFile(positive.image_path) as tf:
        page = tf.pages[0]
        assert page.tags["ResolutionUnit"].value == 3 and page.is_tiled
        assert src.name not in (page.description or "")  # nothing in the file identifies the case
        pixels = page.asarray()
    with Image.open(src) as im:
        assert np.array_equal(pixels, np.asarray(im.convert("RGB")))  # lossless: the decoded JPEG's pixels
    ref = kind.load_reference(spec, Path(positive.reference_path))
    assert (ref.width, ref.height) == tuple(positive.meta["size"]) and len(ref.boxes) == positive.meta["targets"] > 0
    negative = next(c for c in cases if not c.meta["positive"])
    assert len(kind.load_reference(spec, Path(negative.reference_path)).boxes) == 0
    # reloading keeps the stored cases (unchanged sources are not converted again)
    before = Path(positive.image_path).stat().st_mtime_ns
    load_real_cases(db, settings, task, TASK, limit=2)
    db.commit()
    assert Path(positive.image_path).stat().st_mtime_ns == before
    assert db.query(Case).filter(Case.task_id == task.id).count() == 4


# -- bad input: the file named, nothing loaded -------------------------------------------------------


def _small_copy(digestpath: Path, folder: Path, n_pos: int = 1, n_neg: int = 1, size: int = 256) -> list[dict]:
    """A tiny DigestPath-like folder: crops of real tiles (top-left ``size`` px) and their boxes inside."""
    rows = json.loads((digestpath / "tiles.json").read_text())
    pos = [r for r in rows if r["kind"] == "positive"]
    chosen = []
    for r in pos:  # positive tiles with at least one box inside the crop
        inside = [b for b in r["boxes_xyxy"] if b[2] <= size and b[3] <= size]
        if inside:
            chosen.append({**r, "width": size, "height": size, "boxes_xyxy": inside})
        if len(chosen) == n_pos:
            break
    chosen += [{**r, "width": size, "height": size} for r in rows if r["kind"] == "negative"][:n_neg]
    (folder / "tiles").mkdir(parents=True)
    for r in chosen:
        with Image.open(digestpath / "tiles" / r["tile"]) as im:
            im.crop((0, 0, size, size)).save(folder / "tiles" / r["tile"], quality=90)
    (folder / "tiles.json").write_text(json.dumps(chosen))
    return chosen


def _assert_nothing_loaded(settings, db, task) -> None:
    from arena.models import Case

    db.rollback()
    assert db.query(Case).filter(Case.task_id == task.id).count() == 0
    store = settings.cases_dir / task.slug
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*") if p.name != "training.json")


@pytest.mark.parametrize("fault", ["missing-tile", "box-outside", "size-differs"])
def test_bad_tile_index_is_refused_naming_the_file_and_nothing_is_loaded(settings, db, digestpath, tmp_path, fault):
    from arena.tasks.store import load_real_cases, upsert_task

    folder = tmp_path / "digestpath"
    rows = _small_copy(digestpath, folder, n_pos=2, n_neg=2)
    bad = rows[-1]
    if fault == "missing-tile":
        (folder / "tiles" / bad["tile"]).unlink()
        expected = [str(folder / "tiles" / bad["tile"]), "not in"]
    elif fault == "box-outside":
        bad = rows[0]
        bad["boxes_xyxy"] = bad["boxes_xyxy"] + [[200.0, 200.0, 300.0, 260.0]]
        expected = [str(folder / "tiles.json"), bad["tile"], "outside the 256×256 px tile"]
    else:
        bad["width"] = 300
        expected = [str(folder / "tiles" / bad["tile"]), "256×256", "300×256"]
    (folder / "tiles.json").write_text(json.dumps(rows))
    with pytest.raises(TileImportError) as e:
        tiles_import.read_tile_index(folder / "tiles.json")
    for part in expected:
        assert part in str(e.value), (part, str(e.value))
    task = upsert_task(db, TASK)
    db.commit()
    with pytest.raises(TileImportError) as e2:
        load_real_cases(db, settings, task, TASK, data_root=folder)
    assert str(e2.value) == str(e.value)
    _assert_nothing_loaded(settings, db, task)


def test_a_good_small_folder_loads_and_a_tile_kind_reference_is_accepted(settings, db, digestpath, tmp_path):
    """The same small folder without a fault loads (so the faults above are what stops it)."""
    from arena.tasks.store import load_real_cases, upsert_task

    folder = tmp_path / "digestpath"
    _small_copy(digestpath, folder, n_pos=2, n_neg=4)
    task = upsert_task(db, TASK)
    cases = load_real_cases(db, settings, task, TASK, data_root=folder)
    db.commit()
    assert cases and all(Path(c.image_path).suffix == ".tif" for c in cases)
    # import_tile also takes a ready reference ("Multiple 2D bounding boxes") instead of an index
    entry = tiles_import.read_tile_index(folder / "tiles.json")[0]
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(tiles_import.boxes_reference(entry)))
    img, out = tiles_import.import_tile(folder / "tiles" / entry.tile, ref, tmp_path / "case", mpp=0.25)
    assert json.loads(out.read_text())["image_size"] == [256, 256] and img.is_file()
    with pytest.raises(TileImportError, match="pixel size"):
        tiles_import.import_tile(folder / "tiles" / entry.tile, ref, tmp_path / "case2", mpp=None)
    assert not (tmp_path / "case2" / "image.tif").exists()


# -- the cell detector is fitted on the fit patients only --------------------------------------------


def test_cell_detector_fit_refuses_held_out_tiles(digestpath):
    train = _module("cell_detector_train_test", DETECTOR / "train.py")
    L = _loader()
    fit = L.tiles_of(digestpath, "fit")
    held_out = L.tiles_of(digestpath, "real-test")[:1] + L.tiles_of(digestpath, "real-validation")[:1]
    assert train.checked_fit_tiles(digestpath, [e.tile for e in fit]) == [e.tile for e in fit]
    for e in held_out:
        with pytest.raises(ValueError, match=f"{e.tile}.*held out"):
            train.checked_fit_tiles(digestpath, [fit[0].tile, e.tile])


def test_cell_detector_reads_the_pixel_size_and_picks_its_scorer(digestpath, tmp_path):
    """Real tiles (converted as the case store does) are read at 0.25 µm/px and scored by the scorer fitted
    on the fit patients; Arena's synthetic tiles keep the synthetic scorer; boxes come back in tile pixels."""
    from arena.datasets.pathology import write_signet_case

    detector = _module("cell_detector_detector_test", DETECTOR / "detector.py")
    L = _loader()
    folder = tmp_path / "digestpath"
    _small_copy(digestpath, folder, n_pos=1, n_neg=0, size=512)
    entry = tiles_import.read_tile_index(folder / "tiles.json")[0]
    img, _ = tiles_import.import_tile(folder / "tiles" / entry.tile, folder / "tiles.json", tmp_path / "case", L.MPP)
    rgb, mpp, desc = detector.read_tile(str(img))
    assert rgb.shape == (512, 512, 3) and mpp == pytest.approx(0.25) and detector.working_factor(mpp) == 2
    real = detector.model_for(desc)
    assert real["name"] == "real" and real["candidates"] == "dark"
    assert set(real["training"]["slides"]) == {e.slide for e in L.tiles_of(digestpath, "fit")}
    boxes = detector.detect(rgb, mpp=mpp, model=real, min_probability=0.0)
    assert boxes and all(0 <= b[0] < b[2] <= 512 and 0 <= b[1] < b[3] <= 512 for b in boxes)
    write_signet_case(tmp_path, "synthetic", seed=5000, size="tiny", positive=True)
    _, smpp, sdesc = detector.read_tile(str(tmp_path / "synthetic" / "image.tif"))
    assert smpp == pytest.approx(0.5) and detector.model_for(sdesc)["name"] == "synthetic"


# -- the cell detector on real tiles through the real runner -----------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_cell_detector_container_scores_real_tiles_like_the_in_process_evaluation(settings, db, digestpath,
                                                                                   docker_engine, base_image):
    """Two real-validation tiles (one positive, one negative) through the container and the runner: the
    container reads the converted TIFF's pixel size, and the board's counts equal evaluate_real.py's."""
    from arena.images.build import build_image
    from arena.leaderboard.query import compute_leaderboard
    from arena.lifecycle import EvaluationStatus, SubmissionStatus
    from arena.models import Evaluation
    from arena.runner.jobs import run_evaluation
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_real_cases, upsert_task
    from arena.users import create_user

    image = build_image(str(DETECTOR), "arena-test/cell-detector:real", base_image, log=lambda s: None)
    task = upsert_task(db, TASK)
    load_real_cases(db, settings, task, TASK, limit=2)  # 1 positive + 1 negative tile per phase
    db.commit()
    user, _ = create_user(db, "detector-real", team="Reference real")
    sub = create_submission(db, task.slug, "real-validation", user,
                            StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
    sub.set_status(SubmissionStatus.VALIDATED)
    sub.image_id = image
    ev = Evaluation(submission=sub, status=EvaluationStatus.QUEUED, cases_total=len(sub.phase.cases))
    db.add(ev)
    db.commit()
    assert run_evaluation(ev.id) == "succeeded"
    db.expire_all()
    ev = db.get(Evaluation, ev.id)
    assert [cr.status.value for cr in ev.case_results] == ["succeeded", "succeeded"], \
        [(cr.error, cr.log_tail) for cr in ev.case_results]
    assert all("at 0.25 µm/px, scorer real" in (cr.log_tail or "") for cr in ev.case_results)
    row = compute_leaderboard(db, task, sub.phase).table.iloc[0]
    # the same two tiles in-process, the way evaluate_real.py runs them
    ev_mod = _module("cell_detector_evaluate_test", DETECTOR / "evaluate_real.py")
    keys = {c.key for c in sub.phase.cases}
    L = _loader()
    tiles = [e for e in L.tiles_of(digestpath, "real-validation") if L.case_key(e) in keys]
    assert len(tiles) == 2
    local = ev_mod.evaluate("real-validation", digestpath, log=lambda s: None, tiles=tiles)
    assert (row["recall"], row["fp_score"], row["froc"]) == pytest.approx(
        (local["recall"], local["fp_score"], local["froc"]), abs=1e-9)
