"""The case viewer's pure core (arena/viewer): orientation, spacing, contours, jump-to targets, the cache."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from arena.config import Settings
from arena.metrics.segmentation import score_segmentation
from arena.viewer import jump, render, volumes
from arena.viewer.case import CaseFiles, ModelOutput, ViewerCache


def _write(path, arr, spacing_xyz=(1.0, 1.0, 1.0), direction=None):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing_xyz)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path), True)
    return path


# -- orientation and geometry ---------------------------------------------------------------------
def test_each_view_shows_the_voxel_where_radiologists_expect_it():
    vol = np.zeros((4, 5, 6), np.int16)  # z, y, x
    vol[3, 1, 2] = 7  # superior slice, anterior row, column 2 (patient's right half)
    assert render.extract(vol, "axial", 3)[1, 2] == 7  # rows y (anterior on top), columns x
    cor = render.extract(vol, "coronal", 1)
    assert cor.shape == (4, 6) and cor[0, 2] == 7  # superior at the top: z = 3 is row 0
    sag = render.extract(vol, "sagittal", 2)
    assert sag.shape == (4, 5) and sag[0, 1] == 7  # rows z (superior on top), columns y
    with pytest.raises(IndexError, match="outside 0..3"):
        render.extract(vol, "axial", 4)
    with pytest.raises(ValueError, match="view"):
        render.extract(vol, "oblique", 0)


def test_reading_reorients_to_lps(tmp_path):
    arr = np.zeros((3, 4, 5), np.int16)
    arr[0, 0, 0] = 100
    # x flipped: array column 0 lies at the patient's left; LPS puts it at the last column
    _write(tmp_path / "ct.mha", arr, direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    v = volumes.read_volume(tmp_path / "ct.mha", "image")
    assert v.array[0, 0, 4] == 100 and v.array[0, 0, 0] == 0


def test_coronal_and_sagittal_views_keep_the_physical_aspect():
    shape, spacing = (100, 512, 512), (2.5, 0.9, 0.9)  # z, y, x in mm
    h, w = render.display_size(shape, spacing, "coronal")
    assert abs(h / w - (100 * 2.5) / (512 * 0.9)) < 0.01  # not 100/512: no squashed coronal view
    h, w = render.display_size(shape, spacing, "axial")
    assert (h, w) == (512, 512)
    img = render.render_slice(np.zeros(shape[:1] + (64, 64), np.int16), (2.5, 0.9, 0.9), "sagittal", 10)
    assert abs(img.size[1] / img.size[0] - (100 * 2.5) / (64 * 0.9)) < 0.01 and max(img.size) >= render.MIN_SIDE


def test_window_presets_map_hounsfield_units_to_grey():
    hu = np.array([[-1000, 40 - 200, 40, 40 + 200, 3000]], np.int16)
    g = render.window_to_gray(hu, "soft-tissue")
    assert g.tolist() == [[0, 0, 127, 255, 255]]
    assert render.window_to_gray(np.array([[-600]]), "lung")[0, 0] == 127
    assert set(render.WINDOWS) >= {"soft-tissue", "bone", "brain", "lung"}
    with pytest.raises(ValueError, match="window"):
        render.window_to_gray(hu, "liver")


# -- contours -------------------------------------------------------------------------------------
def test_the_contour_of_a_square_runs_between_its_voxels_and_the_background():
    mask = np.zeros((10, 12), bool)
    mask[2:6, 3:7] = True  # rows 2..5, columns 3..6
    (line,) = render.contours(mask)
    assert np.allclose(line[0], line[-1])  # closed
    assert line[:, 0].min() == 1.5 and line[:, 0].max() == 5.5
    assert line[:, 1].min() == 2.5 and line[:, 1].max() == 6.5
    assert render.contours(np.zeros((4, 4), bool)) == []
    two = np.zeros((10, 10), bool)
    two[1:3, 1:3] = two[6:9, 6:9] = True
    assert len(render.contours(two)) == 2


def test_rendered_contours_use_the_organ_colour_and_follow_the_toggle():
    ct = np.full((3, 32, 32), -1000, np.int16)  # black at every window
    lab = np.zeros(ct.shape, np.uint8)
    lab[1, 8:24, 8:24] = 3
    lab[1, 2:5, 2:5] = 1
    img = np.asarray(render.render_slice(ct, (1, 1, 1), "axial", 1, "soft-tissue", [render.Overlay(lab)]))
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert render.organ_colour(3) in colours and render.organ_colour(1) in colours
    only1 = np.asarray(render.render_slice(ct, (1, 1, 1), "axial", 1, "soft-tissue", [render.Overlay(lab)], organs=[1]))
    colours1 = {tuple(c) for c in only1.reshape(-1, 3)}
    assert render.organ_colour(1) in colours1 and render.organ_colour(3) not in colours1
    # the organ's outline lies on its edge (display scale 16: voxel edge 8 → pixel 128), not inside
    scale = img.shape[0] / 32
    edge_row = int(8 * scale)
    assert tuple(img[edge_row, int(16 * scale)]) == render.organ_colour(3)
    assert tuple(img[int(16 * scale), int(16 * scale)]) == (0, 0, 0)
    png = render.png_bytes(render.render_slice(ct, (1, 1, 1), "axial", 1))
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_models_are_drawn_in_distinct_line_styles():
    ct = np.full((1, 64, 64), -1000, np.int16)
    lab = np.zeros(ct.shape, np.uint8)
    lab[0, 16:48, 16:48] = 2
    counts = {}
    for style in render.STYLES:
        img = np.asarray(render.render_slice(ct, (1, 1, 1), "axial", 0, "soft-tissue", [render.Overlay(lab, style)]))
        counts[style] = int(np.all(img == render.organ_colour(2), axis=-1).sum())
    assert counts["solid"] > counts["dashed"] > counts["dotted"] > 0  # longer gaps: fewer coloured pixels
    with pytest.raises(ValueError, match="shape"):
        render.render_slice(ct, (1, 1, 1), "axial", 0, overlays=[render.Overlay(lab[:, :10])])


def test_organ_colours_are_fixed_by_label_id():
    assert render.organ_colour(1) == render.PALETTE[0]
    assert render.organ_colour(len(render.PALETTE) + 1) == render.PALETTE[0]
    assert render.organ_hex(1).startswith("#") and len(render.organ_hex(1)) == 7
    with pytest.raises(ValueError):
        render.organ_colour(0)


# -- jump-to targets ------------------------------------------------------------------------------
def test_the_largest_disagreement_is_found_on_the_planted_slice():
    ref = np.zeros((20, 30, 30), bool)
    ref[5:15, 10:20, 10:20] = True
    pred = ref.copy()
    pred[12, 5:25, 5:25] = True  # 300 extra voxels on axial slice 12
    pred[7, 10:12, 10:12] = False  # 4 missing on slice 7
    d = jump.disagreement_slices(pred, ref)
    assert d["axial"] == {"index": 12, "voxels": 300}
    assert d["coronal"]["index"] in range(5, 25) and d["sagittal"]["index"] in range(5, 25)
    assert jump.disagreement_slices(ref, ref) == {}


def test_the_hd95_point_is_a_boundary_voxel_at_the_hd95_distance():
    ref = np.zeros((20, 40, 40), bool)
    ref[5:15, 10:30, 10:30] = True
    pred = ref.copy()
    pred[5:15, 10:30, 30:36] = True  # the prediction bulges 6 voxels toward +x
    spacing = (2.0, 1.0, 1.0)
    pt = jump.hd95_point(pred, ref, spacing)
    hd95 = score_segmentation(pred.view(np.uint8), ref.view(np.uint8), spacing, [1])[1]["hd95"]
    assert pt["hd95_mm"] == pytest.approx(hd95)
    z, y, x = pt["voxel"]
    mask = pred if pt["on"] == "prediction" else ref
    assert mask[z, y, x]  # a voxel of that mask ...
    assert pt["distance_mm"] == pytest.approx(hd95, abs=1.0)  # ... whose distance is the HD95
    assert pt["on"] == "prediction" and x > 30  # the bulge is where the HD95 lies
    assert jump.hd95_point(pred, np.zeros_like(ref), spacing) is None


def test_jump_targets_list_the_labels_present():
    ref = np.zeros((6, 10, 10), np.uint8)
    ref[1:4, 2:6, 2:6] = 1
    pred = ref.copy()
    pred[4, 2:6, 2:6] = 1
    t = jump.jump_targets(pred, ref, (1, 1, 1), [1, 2])
    assert set(t) == {"1"} and t["1"]["disagreement"]["axial"]["index"] == 4
    json.dumps(t)  # JSON-ready


# -- the cache ------------------------------------------------------------------------------------
def _case(tmp_path, shift=0):
    ct = np.zeros((8, 24, 24), np.int16)
    ct[:, 4:20, 4:20] = 60
    ref = np.zeros(ct.shape, np.uint8)
    ref[2:6, 6:14, 6:14] = 1
    pred = np.roll(ref, shift, axis=2)
    d = tmp_path / "store"
    d.mkdir(exist_ok=True)
    spacing = (0.8, 0.8, 2.5)
    files = CaseFiles(1, _write(d / "image.mha", ct, spacing), _write(d / "reference.mha", ref, spacing))
    res = tmp_path / "results" / "evaluation-5" / "case-1"
    res.mkdir(parents=True, exist_ok=True)
    return files, ModelOutput(5, _write(res / "pred.mha", pred, spacing))


def test_the_cache_serves_slices_and_targets_and_rebuilds_on_change(tmp_path):
    files, model = _case(tmp_path, shift=2)
    cache = ViewerCache(tmp_path / "viewer-cache", tmp_path / "results", Settings.viewer_cache_bytes)
    png = cache.slice_png(files, [model], "coronal", 10, "bone", organs=[1])
    assert max(Image.open(io.BytesIO(png)).size) >= render.MIN_SIDE
    volumes.wait_for_writes()  # the cache files are written in the background
    assert (tmp_path / "viewer-cache" / "cases" / "1" / "ct.npy").is_file()
    assert (tmp_path / "viewer-cache" / "evaluations" / "5" / "1" / "prediction.npy").is_file()
    t = cache.targets(files, model, [1])
    assert t["1"]["disagreement"]["sagittal"]["index"] in (6, 7, 14, 15)
    with pytest.MonkeyPatch.context() as mp:  # stored targets: served without opening a volume
        mp.setattr(volumes, "cached_volume", lambda *a, **k: pytest.fail("targets opened a volume"))
        assert cache.targets(files, model, [1]) == t
    geo = cache.geometry(files)
    assert geo["shape"] == [8, 24, 24] and geo["views"]["axial"]["slices"] == 8
    # a new output under the same name: the cache sees the change
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(files.reference)))
    _write(model.prediction, ref, (0.8, 0.8, 2.5))
    os.utime(model.prediction, ns=(1, 1))
    again = cache.targets(files, model, [1])["1"]
    assert again["disagreement"] == {} and again["hd95"]["hd95_mm"] == 0.0  # now it matches the reference


def test_a_prediction_on_another_grid_is_refused_by_name(tmp_path):
    files, model = _case(tmp_path)
    _write(model.prediction, np.zeros((8, 24, 20), np.uint8), (0.8, 0.8, 2.5))
    os.utime(model.prediction, ns=(2, 2))
    cache = ViewerCache(tmp_path / "viewer-cache", tmp_path / "results", Settings.viewer_cache_bytes)
    with pytest.raises(ValueError, match="pred.mha: shape"):
        cache.slice_png(files, [model], "axial", 0)


def test_bad_files_give_errors_naming_them(tmp_path):
    (tmp_path / "x.mha").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="x.mha"):
        volumes.read_volume(tmp_path / "x.mha", "image")
    with pytest.raises(FileNotFoundError, match="missing.mha"):
        volumes.read_volume(tmp_path / "missing.mha", "image")
    _write(tmp_path / "neg.mha", np.full((2, 2, 2), -1, np.int16))
    with pytest.raises(ValueError, match="neg.mha: label maps hold labels"):
        volumes.read_volume(tmp_path / "neg.mha", "labels")


def test_prune_drops_removed_evaluations_and_keeps_the_budget(tmp_path):
    files, model = _case(tmp_path)
    root, results = tmp_path / "viewer-cache", tmp_path / "results"
    cache = ViewerCache(root, results, Settings.viewer_cache_bytes)
    cache.slice_png(files, [model], "axial", 3)
    volumes.wait_for_writes()
    import shutil
    shutil.rmtree(results / "evaluation-5")  # the evaluation's outputs are gone ...
    removed = volumes.prune(root, results, Settings.viewer_cache_bytes)
    assert root / "evaluations" / "5" in removed and not (root / "evaluations" / "5").exists()  # ... so are ours
    assert (root / "cases" / "1" / "ct.npy").exists()
    volumes.prune(root, results, max_bytes=1000)  # over budget: least recently used entries go
    assert not (root / "cases" / "1").exists()


def test_jump_targets_of_an_organ_only_one_map_has():
    ref = np.zeros((6, 10, 10), np.uint8)
    ref[1:3, 1:3, 1:3] = 2
    pred = np.zeros_like(ref)
    pred[4, 6:9, 6:9] = 1  # label 1: only predicted; label 2: only in the reference
    t = jump.jump_targets(pred, ref, (1, 1, 1), [1, 2, 3])
    assert t["1"]["disagreement"]["axial"] == {"index": 4, "voxels": 9} and t["1"]["hd95"] is None
    assert t["2"]["disagreement"]["sagittal"]["index"] == 1 and t["2"]["hd95"] is None
    assert "3" not in t


def test_a_slice_outlives_the_volume_it_was_read_from(tmp_path):
    """Volumes are views of SimpleITK's pixel buffer (no copy): a slice taken from one must keep it alive."""
    import gc

    arr = (np.arange(4 * 64 * 64) % 251).astype(np.uint8).reshape(4, 64, 64)
    _write(tmp_path / "lab.mha", arr)
    vol = volumes.read_volume(tmp_path / "lab.mha", "labels")
    plane = render.extract(vol.array, "axial", 2)
    del vol
    gc.collect()
    _ = [np.full(64 * 64 * 4, 7, np.uint8) for _ in range(50)]  # reuse freed memory, if any was freed
    assert np.array_equal(plane, arr[2])


def test_tile_boxes_are_matched_by_the_scoring_code_at_the_threshold():
    import pandas as pd

    from arena.viewer import tiles

    ref = pd.DataFrame({"x0": [10, 100], "y0": [10, 100], "x1": [30, 120], "y1": [30, 120]})
    pred = pd.DataFrame({"x0": [11, 200, 101], "y0": [11, 200, 101], "x1": [31, 220, 121], "y1": [29, 220, 121],
                         "probability": [0.9, 0.8, 0.1]})
    m = tiles.match_tile(ref, pred, "iou", 0.3, "greedy", 0.5)  # the 0.1 box is below the threshold
    assert m.counts() == {"reference": 2, "hit": 1, "missed": 1, "predicted": 2, "true_positive": 1,
                          "false_positive": 1}
    assert tiles.match_tile(ref, pred, "iou", 0.3, "greedy", 0.0).counts()["hit"] == 2
    img = np.asarray(tiles.render_tile(np.full((256, 256, 3), 128, np.uint8), ref, pred, m, region=(0, 0, 128, 128),
                                       max_side=512))
    assert img.shape == (512, 512, 3)
    assert tuple(img[40, 60]) == tiles.HIT_REFERENCE  # box 0 (x 10..30) at scale 4: x = 40..120, y = 40
    assert tuple(img[400, 420]) == tiles.MISSED  # box 1 (x 100..120, y 100..120): x 400..480, y 400
    with pytest.raises(ValueError, match="min_probability"):
        tiles.match_tile(ref, pred, "iou", 0.3, "greedy", 1.5)
