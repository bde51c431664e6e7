"""Collecting and checking container outputs: links are never followed, geometry and labels must match."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

from arena.runner.collect import CollectError, collect_outputs
from arena.runner.contract import OutputError, find_segmentation_output, prepare_case_input
from arena.runner.output_check import check_segmentation, read_checked_output
from arena.tasks.spec import load_spec
from pathlib import Path

SPEC = load_spec(Path(__file__).resolve().parents[1] / "tasks" / "han-oar-22")


def test_collect_skips_links_and_devices(tmp_path):
    src, dest = tmp_path / "out", tmp_path / "dest"
    (src / "images" / "oar-segmentation").mkdir(parents=True)
    (src / "images" / "oar-segmentation" / "output.mha").write_bytes(b"data")
    os.symlink("/etc/passwd", src / "passwd")
    os.symlink("/etc", src / "etc-dir")
    os.mkfifo(src / "fifo")
    got = collect_outputs(src, dest)
    assert got.files == ["images/oar-segmentation/output.mha"]
    assert sorted(s.split(" ")[0] for s in got.skipped) == ["etc-dir", "fifo", "passwd"]
    assert not (dest / "passwd").exists() and not (dest / "etc-dir").exists()
    assert (dest / "images/oar-segmentation/output.mha").read_bytes() == b"data"


def test_collect_caps(tmp_path):
    src = tmp_path / "out"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"x" * 100)
    with pytest.raises(CollectError, match="more than 3 files"):
        collect_outputs(src, tmp_path / "d1", max_files=3)
    with pytest.raises(CollectError, match="more than"):
        collect_outputs(src, tmp_path / "d2", max_bytes=250)


def test_prepare_input_layout(tmp_path):
    img = tmp_path / "case.mha"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(img))
    target = prepare_case_input(SPEC, img, tmp_path / "input", original_name="demo-000.mha")
    assert target.parent == tmp_path / "input" / "images" / "ct" and target.suffix == ".mha"
    import json

    inputs = json.loads((tmp_path / "input" / "inputs.json").read_text())
    assert inputs[0]["interface"]["slug"] == "ct-image" and inputs[0]["image"]["name"] == "demo-000.mha"
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_find_output_errors(tmp_path):
    with pytest.raises(OutputError, match="no output: expected one .mha file in /output/images/oar-segmentation/ "
                                         r"\(/output is empty\)"):
        find_segmentation_output(tmp_path, SPEC)
    (tmp_path / "wrong.mha").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"found: wrong.mha"):
        find_segmentation_output(tmp_path, SPEC)
    d = tmp_path / "images" / "oar-segmentation"
    d.mkdir(parents=True)
    (d / "a.mha").write_bytes(b"x")
    (d / "b.mha").write_bytes(b"x")
    with pytest.raises(OutputError, match="2 images"):
        find_segmentation_output(tmp_path, SPEC)


def _img(arr, spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0)):
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing(spacing)
    im.SetOrigin(origin)
    return im


def test_check_segmentation():
    ref = _img(np.zeros((4, 5, 6), np.uint8))
    good = _img(np.full((4, 5, 6), 3, np.uint8))
    assert check_segmentation(good, ref, {3}).shape == (4, 5, 6)
    cases = [
        (_img(np.zeros((4, 5, 7), np.uint8)), "output size \\(7, 5, 4\\) differs"),
        (_img(np.zeros((4, 5, 6), np.uint8), spacing=(1, 1, 2.5)), "output spacing"),
        (_img(np.zeros((4, 5, 6), np.uint8), origin=(0, 0, 1)), "output origin"),
        (_img(np.zeros((4, 5, 6), np.float32)), "expected an integer label map"),
        (_img(np.full((4, 5, 6), 40, np.uint8)), r"label values not in the task's label map: \[40\]"),
        (_img(np.full((4, 5, 6), -1, np.int16)), "negative label values"),
        (_img(np.zeros((5, 6), np.uint8), spacing=(1, 1)), "2-D"),
    ]
    for out, msg in cases:
        with pytest.raises(OutputError, match=msg):
            check_segmentation(out, ref, {3})


def test_unreadable_output(tmp_path):
    p = tmp_path / "output.mha"
    p.write_bytes(b"not an image")
    with pytest.raises(OutputError, match="is not a readable image"):
        read_checked_output(p, _img(np.zeros((4, 5, 6), np.uint8)), {1})


def test_checked_array_outlives_the_image(tmp_path):
    """Regression: the array once was a view into a freed SimpleITK buffer (scores of 0 at random)."""
    import gc

    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1:3, 1:4, 2:5] = 3
    p = tmp_path / "out.mha"
    sitk.WriteImage(_img(arr), str(p))
    got = read_checked_output(p, _img(np.zeros_like(arr)), {3})
    gc.collect()
    _ = [np.ones(10_000) for _ in range(100)]
    assert got.flags.writeable and got.flags.owndata  # a copy, not a view into the image
    assert (got == arr).all()
