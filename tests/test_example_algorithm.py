"""Runs the example participant algorithm (examples/threshold-segmenter) on the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from arena.datasets.phantom import generate_case

ALGORITHM = Path(__file__).resolve().parents[1] / "examples" / "threshold-segmenter" / "algorithm.py"
ALLOWED = {0, 2, 3, 4, 5, 21, 22}


def run_algorithm(input_dir: Path, output_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ARENA_INPUT_DIR=str(input_dir), ARENA_OUTPUT_DIR=str(output_dir),
               PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(ALGORITHM)], env=env, capture_output=True, text=True,
                          timeout=120)


def prepare_input(root: Path, ct: sitk.Image) -> Path:
    ct_dir = root / "input" / "images" / "ct"
    ct_dir.mkdir(parents=True)
    name = f"{uuid.uuid4()}.mha"
    sitk.WriteImage(ct, str(ct_dir / name), useCompression=True)
    inputs = [{"interface": {"slug": "ct-image", "relative_path": "images/ct", "kind": "Image",
                             "super_kind": "Image"}, "image": {"name": name}, "file": None, "value": None}]
    (root / "input" / "inputs.json").write_text(json.dumps(inputs))
    return root / "input"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


@pytest.mark.parametrize("seed", [0, 18])
def test_threshold_segmenter_on_phantom(tmp_path, seed):
    ct, reference = generate_case(seed, "small")
    input_dir = prepare_input(tmp_path, ct)
    output_dir = tmp_path / "output"
    proc = run_algorithm(input_dir, output_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wrote" in proc.stdout

    produced = [p for p in output_dir.rglob("*") if p.is_file()]
    out_path = output_dir / "images" / "oar-segmentation" / "output.mha"
    assert produced == [out_path]

    out = sitk.ReadImage(str(out_path))
    assert out.GetPixelID() == sitk.sitkUInt8
    assert out.GetSize() == ct.GetSize()
    assert np.allclose(out.GetSpacing(), ct.GetSpacing())
    assert np.allclose(out.GetOrigin(), ct.GetOrigin())
    assert np.allclose(out.GetDirection(), ct.GetDirection())

    pred = sitk.GetArrayFromImage(out)
    ref = sitk.GetArrayFromImage(reference)
    assert set(np.unique(pred).tolist()) <= ALLOWED
    for label in (2, 3, 21, 22):
        d = dice(pred == label, ref == label)
        assert d > 0.6, f"seed {seed} label {label}: Dice {d:.3f}"


def test_missing_input_fails_clearly(tmp_path):
    proc = run_algorithm(tmp_path / "nothing-here", tmp_path / "output")
    assert proc.returncode != 0
    assert "images/ct" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "output").exists()


def test_two_inputs_fail_clearly(tmp_path):
    ct, _ = generate_case(1, "16x16x8")
    input_dir = prepare_input(tmp_path, ct)
    sitk.WriteImage(ct, str(input_dir / "images" / "ct" / "second.mha"))
    proc = run_algorithm(input_dir, tmp_path / "output")
    assert proc.returncode != 0
    assert "exactly one .mha" in proc.stderr
