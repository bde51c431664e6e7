"""`arena metrics seg`: files in any SimpleITK format, geometry checked, table or JSON out."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
from click.testing import CliRunner
from medpy.metric.binary import dc, hd95

from arena.cli import main


def _write(path, arr, spacing=(0.8, 0.9, 2.5), origin=(0, 0, 0)):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return path


def test_seg_json_matches_medpy(tmp_path):
    ref = np.zeros((12, 20, 22), np.uint8)
    ref[3:8, 4:12, 5:15] = 1
    ref[2:4, 14:18, 2:6] = 2
    pred = np.roll(ref, 1, axis=2)
    r = _write(tmp_path / "ref.nii.gz", ref)
    p = _write(tmp_path / "pred.mha", pred)
    res = CliRunner().invoke(main, ["metrics", "seg", str(p), str(r), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out) == {"1", "2"}
    spacing = sitk.ReadImage(str(r)).GetSpacing()[::-1]  # NIfTI stores float32 spacing
    assert out["1"]["dice"] == dc(pred == 1, ref == 1)
    assert abs(out["1"]["hd95"] - hd95(pred == 1, ref == 1, spacing)) < 1e-12
    table = CliRunner().invoke(main, ["metrics", "seg", str(p), str(r), "--labels", "2", "--convention", "deepmind"])
    assert table.exit_code == 0 and "convention deepmind" in table.output
    assert len([line for line in table.output.splitlines() if line.strip().startswith("2 ")]) == 1


def test_seg_errors(tmp_path):
    ref = np.zeros((4, 5, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    r = _write(tmp_path / "ref.nrrd", ref)
    other = _write(tmp_path / "other.mha", ref, origin=(0, 0, 5))
    res = CliRunner().invoke(main, ["metrics", "seg", str(other), str(r)])
    assert res.exit_code == 2 and "prediction origin" in res.output
    res = CliRunner().invoke(main, ["metrics", "seg", str(tmp_path / "missing.mha"), str(r)])
    assert res.exit_code == 2 and "no file" in res.output
    res = CliRunner().invoke(main, ["metrics", "seg", str(r), str(r), "--labels", "1,x"])
    assert res.exit_code == 2 and "labels: expected ids" in res.output
    (tmp_path / "junk.mha").write_bytes(b"not an image")
    res = CliRunner().invoke(main, ["metrics", "seg", str(tmp_path / "junk.mha"), str(r)])
    assert res.exit_code == 2 and "not a readable image" in res.output


def test_det_cli_luna16_json(shared_data):
    import math

    case = shared_data / "peer_cases" / "luna16" / "L1_basic"
    res = CliRunner().invoke(main, ["metrics", "det", str(case / "annotations.csv"), str(case / "predictions.csv"),
                                    "--criterion", "inside-radius", "--matching", "luna16", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["counts"]["targets"] == 3 and out["counts"]["tp"] == 3
    assert 0 <= out["froc"]["cpm_interpolated"] <= 1 and not math.isnan(out["ap"])
    bad = CliRunner().invoke(main, ["metrics", "det", str(case / "annotations.csv"), str(case / "annotations.csv"),
                                    "--criterion", "iou"])
    assert bad.exit_code == 2 and "error:" in bad.output
