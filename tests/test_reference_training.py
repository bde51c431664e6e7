"""Reference models on real OpenKBP data: the train-only guard of training and atlas building, the per-task
variants of arena.reference, and the OpenKBP inference paths on a real 128^3 case."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from arena import reference
from arena.tasks.store import shared_data_root

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "reference_models"
OPENKBP = shared_data_root() / "openkbp"
needs_openkbp = pytest.mark.skipif(not (OPENKBP / "cases.json").is_file(), reason="no OpenKBP shared data")


def _load(name: str, path: Path):
    """Import a reference-model script with its folder and reference_models/_shared on sys.path."""
    for m in ("model", "refio", "openkbp_split", "openkbp_grid", "multiatlas"):
        sys.modules.pop(m, None)
    extra = [str(path.parent), str(MODELS / "_shared")]
    sys.path[:0] = extra
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for p in extra:
            sys.path.remove(p)
    return mod


@pytest.fixture(scope="module")
def split():
    return _load("ref_openkbp_split", MODELS / "_shared" / "openkbp_split.py")


@pytest.fixture()
def tiny_root(tmp_path):
    """A shared-data folder whose cases.json lists pt_1 (train), pt_2 (validation) and pt_3 (test) and
    holds no image at all: a refusal must come before any file is opened."""
    d = tmp_path / "openkbp"
    d.mkdir()
    entries = [{"patient": f"pt_{i}", "openkbp_split": s, "present": ["Brainstem"], "missing": []}
               for i, s in ((1, "train"), (2, "validation"), (3, "test"))]
    (d / "cases.json").write_text(json.dumps(entries))
    return tmp_path


@pytest.mark.parametrize("patient", ["pt_2", "pt-3", "3"])
def test_guard_refuses_validation_and_test_patients(split, tiny_root, patient):
    with pytest.raises(split.SplitViolation, match=r"(validation|test) split.*train split only"):
        split.read_train_case(tiny_root, patient)


def test_guard_refuses_unknown_patients_and_names_missing_files(split, tiny_root):
    with pytest.raises(split.SplitViolation, match="pt_9: not listed"):
        split.read_train_case(tiny_root, "pt_9")
    with pytest.raises(ValueError, match="not an OpenKBP patient id"):
        split.read_train_case(tiny_root, "../pt_1")
    with pytest.raises(FileNotFoundError, match="pt_1_ct.nii.gz"):  # a train patient passes the guard
        split.read_train_case(tiny_root, "pt_1")


def test_bad_cases_json_is_named(split, tmp_path):
    (tmp_path / "openkbp").mkdir()
    with pytest.raises(FileNotFoundError, match="cases.json"):
        split.load_cases(tmp_path)
    (tmp_path / "openkbp" / "cases.json").write_text(json.dumps([{"patient": "pt_1", "openkbp_split": "dev"}]))
    with pytest.raises(ValueError, match="entry 0"):
        split.load_cases(tmp_path)


@needs_openkbp
def test_anatomynet_training_reads_train_patients_only():
    pytest.importorskip("torch")
    tr = _load("ref_anatomynet_train_openkbp", MODELS / "anatomynet" / "train_openkbp.py")
    cases = tr.split.load_cases(OPENKBP.parent)
    val = tr.split.split_patients(cases, "validation")[0]
    test = tr.split.split_patients(cases, "test")[0]
    for bad in (val, test):
        with pytest.raises(tr.split.SplitViolation, match="train split only"):
            tr.load_train_set(str(OPENKBP.parent), [tr.split.split_patients(cases, "train")[0], bad], say=lambda m: None)
    assert len(tr.split.split_patients(cases, "train")) == 170


@needs_openkbp
def test_multiatlas_openkbp_atlases_are_train_patients(tmp_path):
    ma = _load("ref_make_atlases", MODELS / "multiatlas" / "make_atlases.py")
    cases = ma.split.load_cases(OPENKBP.parent)
    pool = ma.openkbp_pool(cases, 24)
    assert len(pool) == 24 and all(cases[p]["openkbp_split"] == "train" for p in pool)
    assert all(len(cases[p]["missing"]) == 0 for p in pool)  # 30 train patients have all 7 organs


def test_task_variants_tags_and_provenance(tmp_path):
    an = MODELS / "anatomynet"
    assert set(reference.variants(an)) == {"han-oar-22", "han-oar-openkbp"}
    assert reference.variant_for(an, "han-oar-22") is None  # the default variant keeps the plain tag
    assert reference.tag_for("anatomynet", reference.variant_for(an, "han-oar-22")) == reference.tag_for("anatomynet")
    assert reference.variant_for(an, "han-oar-openkbp") == "han-oar-openkbp"
    assert reference.tag_for("anatomynet", "han-oar-openkbp").startswith("arena-reference/anatomynet-han-oar-openkbp:")
    assert reference.variant_for(MODELS / "focusnetv2", "han-oar-openkbp") is None  # no tasks.json: one image
    for name in ("anatomynet", "multiatlas"):
        text = reference.provenance(name, "han-oar-openkbp")
        assert "OpenKBP train" in text and "validation" in text and "test" in text
    bad = tmp_path / "m"
    bad.mkdir()
    (bad / "tasks.json").write_text(json.dumps({"a": {"default": True}, "b": {"default": True}}))
    with pytest.raises(ValueError, match=r"tasks.json: more than one default"):
        reference.variants(bad)
    (bad / "tasks.json").write_text(json.dumps({"a": {"prepare": "make.py"}}))
    with pytest.raises(ValueError, match=r"tasks.json: expected"):
        reference.variants(bad)


@needs_openkbp
def test_multiatlas_stage_builds_openkbp_atlases_from_train_split(tmp_path):
    ctx = reference.stage(MODELS / "multiatlas", tmp_path / "ctx", log=lambda m: None, task="han-oar-openkbp",
                          data_root=OPENKBP.parent)
    index = json.loads((ctx / "atlases" / "index.json").read_text())
    cases = {c["patient"]: c for c in json.loads((OPENKBP / "cases.json").read_text())}
    assert {cases[a["patient"]]["openkbp_split"] for a in index["atlases"]} == {"train"}
    assert not list((ctx / "atlases").glob("atlas-*"))  # the phantom atlases are replaced
    assert not (ctx / "evaluate_openkbp.py").exists() and (ctx / "refio.py").is_file()


def _dice(pred: np.ndarray, ref: np.ndarray, k: int) -> float:
    p, r = pred == k, ref == k
    return 2.0 * (p & r).sum() / max(1, p.sum() + r.sum())


@needs_openkbp
def test_anatomynet_openkbp_inference_on_a_real_case(monkeypatch):
    pytest.importorskip("onnxruntime")
    sitk = pytest.importorskip("SimpleITK")
    monkeypatch.setenv("ANATOMYNET_TASK", "han-oar-openkbp")
    infer = _load("ref_anatomynet_infer_openkbp", MODELS / "anatomynet" / "infer.py")
    img = sitk.ReadImage(str(OPENKBP / "pt_201_ct.nii.gz"))  # a validation patient: scored, never trained on
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(OPENKBP / "pt_201_oars.nii.gz")))
    sys.path.insert(0, str(MODELS / "anatomynet"))
    try:
        lab = infer.segment(img, infer.setup())
    finally:
        sys.path.remove(str(MODELS / "anatomynet"))
    assert lab.GetSize() == img.GetSize() and lab.GetSpacing() == img.GetSpacing()
    arr = sitk.GetArrayFromImage(lab)
    assert set(np.unique(arr)) <= set(range(8)) and len(np.unique(arr)) >= 4
    assert _dice(arr, ref, 7) > 0.3 or _dice(arr, ref, 1) > 0.3  # mandible or brainstem found


@needs_openkbp
def test_multiatlas_openkbp_segments_a_real_case(tmp_path, monkeypatch):
    sitk = pytest.importorskip("SimpleITK")
    ma_build = _load("ref_make_atlases_case", MODELS / "multiatlas" / "make_atlases.py")
    ma_build.openkbp_atlases(3, str(tmp_path), str(OPENKBP.parent))
    monkeypatch.setenv("MULTIATLAS_DIR", str(tmp_path))
    monkeypatch.setenv("MULTIATLAS_SELECT", "2")
    ma = _load("ref_multiatlas_openkbp", MODELS / "multiatlas" / "multiatlas.py")
    aset = ma.setup()
    assert isinstance(aset, ma.AtlasSet) and aset.select == 2 and len(aset.atlases) == 3
    img = sitk.ReadImage(str(OPENKBP / "pt_201_ct.nii.gz"))  # a validation patient, never an atlas
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(OPENKBP / "pt_201_oars.nii.gz")))
    lab = ma.segment(img, aset)
    assert lab.GetSize() == img.GetSize() and lab.GetOrigin() == img.GetOrigin()
    arr = sitk.GetArrayFromImage(lab)
    assert set(np.unique(arr)) <= set(range(8))
    assert _dice(arr, ref, 1) > 0.4 and _dice(arr, ref, 7) > 0.3  # brainstem and mandible placed


def test_openkbp_onnx_matches_its_torch_weights():
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    tr = _load("ref_anatomynet_train_openkbp_onnx", MODELS / "anatomynet" / "train_openkbp.py")
    w = MODELS / "anatomynet" / "weights" / "han-oar-openkbp"
    model = tr.load(str(w / "anatomynet.pt"))
    assert model.n_classes == 8  # background + OpenKBP's 7 organs
    x = np.random.default_rng(0).normal(0, 1, (1, 1, 16, 24, 20)).astype(np.float32)
    got = ort.InferenceSession(str(w / "anatomynet.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ct": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_models_without_a_variant_for_the_task_are_not_submitted(settings):
    """`arena reference run --task han-oar-openkbp` submits only the models with weights for that task (their
    tasks.json says which), instead of sending a 22-organ FocusNetv2 or a tile detector to a 7-organ task."""
    from arena import reference

    said: list[str] = []
    runs = reference.submit(settings, "han-oar-openkbp", ["validation"], ["cell_detector", "focusnetv2"],
                            log=said.append, client=object(), enqueue=False)
    assert runs == []
    assert any("cell_detector: skipped" in m for m in said) and any("focusnetv2: skipped" in m for m in said)
    assert reference.provenance("focusnetv2", "han-oar-22") and reference.provenance("cell_detector",
                                                                                      "signet-ring-cells")
