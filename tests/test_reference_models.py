"""Reference models (reference_models/): networks, losses, ONNX exports, the multi-atlas baseline, the
containers through the real runner, and `arena reference run` through intake."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "reference_models"
torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    for m in ("model", "refio", "phantom_data"):  # each folder has its own model.py
        sys.modules.pop(m, None)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


@pytest.fixture(scope="module")
def an():
    return _load("ref_anatomynet_model", MODELS / "anatomynet" / "model.py")


@pytest.fixture(scope="module")
def fn():
    return _load("ref_focusnetv2_model", MODELS / "focusnetv2" / "model.py")


def test_anatomynet_parameters_and_forward(an):
    assert an.count_parameters(an.AnatomyNet(n_classes=10)) == 734_417  # the paper's 0.73M for 9 organs
    model = an.AnatomyNet(n_classes=23).eval()
    with torch.no_grad():
        p = model(torch.randn(1, 1, 8, 16, 16))
    assert p.shape == (1, 23, 8, 16, 16)
    torch.testing.assert_close(p.sum(1), torch.ones(1, 8, 16, 16))
    lab = p.argmax(1)
    assert int(lab.min()) >= 0 and int(lab.max()) <= 22


def test_focusnetv2_parameters_and_forward(fn):
    # widths, pools, dilations, the six small organs and the ONNX export: tests/test_focusnetv2.py
    assert fn.SNet(n_classes=23).snet_parameters() == 1_018_047  # S-Net at Table 10's widths 32/48/64
    model = fn.SNet(n_classes=23).eval()
    with torch.no_grad():
        p, heat, feat = model(torch.randn(1, 1, 8, 16, 16))
    assert p.shape == (1, 23, 8, 16, 16) and heat.shape == (1, len(fn.SMALL_ORGANS), 4, 8, 8)
    assert feat.shape == (1, fn.FEATURE_CHANNELS, 4, 8, 8)
    assert 0 <= int(p.argmax(1).min()) and int(p.argmax(1).max()) <= 22
    sos = fn.SOSNet().eval()
    with torch.no_grad():
        fg = sos(torch.randn(len(fn.SMALL_ORGANS), fn.FEATURE_CHANNELS + 1, *fn.ROI_SIZE_XYZ[::-1]))
    assert fg.shape == (len(fn.SMALL_ORGANS), 1, *fn.ROI_SIZE_XYZ[::-1]) and float(fg.min()) >= 0 and float(fg.max()) <= 1


def test_hybrid_loss_masks_missing_annotations(an):
    logits = torch.randn(2, 4, 4, 8, 8)
    target = torch.randint(0, 4, (2, 4, 8, 8))
    full = an.hybrid_loss(logits, target)
    present = torch.ones(2, 4)
    present[0, 2] = 0  # organ 2 not annotated in sample 0
    masked = an.hybrid_loss(logits, target, present=present)
    assert torch.isfinite(full) and torch.isfinite(masked) and not torch.isclose(full, masked)
    # a masked class does not contribute: changing its target changes nothing
    t2 = target.clone()
    t2[0][t2[0] == 2] = 3
    present2 = present.clone()
    assert torch.isfinite(an.hybrid_loss(logits, t2, present=present2))


@pytest.mark.parametrize("which", ["anatomynet", "snet"])
def test_training_step_reduces_loss(an, fn, which):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, 16, 16)
    y = (x[:, 0] > 0.5).long() + (x[:, 0] > 1.2).long()
    model = an.AnatomyNet(n_classes=3) if which == "anatomynet" else fn.SNet(n_classes=3)
    opt = torch.optim.RMSprop(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        out = model.logits(x)
        seg = out[0] if isinstance(out, tuple) else out
        loss = an.hybrid_loss(seg, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def _onnx_agrees(model, inputs: dict, path: Path, atol=1e-4):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        want = model(*inputs.values())
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=atol)


def test_shipped_onnx_matches_torch_weights():
    pytest.importorskip("onnxruntime")
    tr_an = _load("ref_anatomynet_train", MODELS / "anatomynet" / "train.py")
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (1, 1, 16, 32, 32)).astype(np.float32))
    model = tr_an.load(str(MODELS / "anatomynet" / "weights" / "anatomynet.pt"))
    _onnx_agrees(model, {"ct": x}, MODELS / "anatomynet" / "weights" / "anatomynet.onnx")
    # FocusNetv2's exports (arg-max labels, heat maps, features; SOS-Net): tests/test_focusnetv2.py


def test_weights_are_small():
    for f in MODELS.glob("*/weights/*"):
        assert f.stat().st_size < 20 * 2**20, f
    for f in MODELS.glob("multiatlas/atlases/*"):
        assert f.stat().st_size < 20 * 2**20, f


def _mean_dice(pred, ref, labels=range(1, 23)):
    out = []
    for lab in labels:
        p, r = pred == lab, ref == lab
        s = p.sum() + r.sum()
        if s:
            out.append(2.0 * (p & r).sum() / s)
    return float(np.mean(out))


def test_multiatlas_beats_trivial_baselines():
    import SimpleITK as sitk

    from arena.datasets.phantom import generate_case

    ma = _load("ref_multiatlas", MODELS / "multiatlas" / "multiatlas.py")
    atlases = ma.load_atlases(3)
    ct, lab = generate_case(1003, "small")
    ref = sitk.GetArrayFromImage(lab)
    fused = sitk.GetArrayFromImage(ma.segment(ct, atlases))
    assert set(np.unique(fused)) <= set(range(23))
    # trivial baselines: all background (Dice 0) and a single atlas copied without registration
    atlas_lab = sitk.Resample(atlases[0][1], ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    copy = _mean_dice(sitk.GetArrayFromImage(atlas_lab), ref)
    got = _mean_dice(fused, ref)
    assert got > copy + 0.1 and got > 0.6, (got, copy)


# ---------------------------------------------------------------- containers through the real runner


@pytest.fixture(scope="module")
def reference_images(docker_engine, base_image):
    from arena import reference

    return {b.name: b for b in reference.build(base_image, ["anatomynet", "focusnetv2", "multiatlas"],
                                               log=lambda m: None, tasks=["han-oar-22"])}


@pytest.fixture(scope="module")
def batch_task(tmp_path_factory):
    d = tmp_path_factory.mktemp("task") / "han-oar-22"
    shutil.copytree(REPO / "tasks" / "han-oar-22", d)
    y = (d / "task.yaml").read_text().replace("io_mode: per-case", "io_mode: batch")
    (d / "task.yaml").write_text(y)
    return d


README_ENTRY = re.compile(r"\*\*(?P<name>\w+) \(reference\)\*\* on (?P<task>[\w-]+)/(?P<phase>[\w-]+) "
                          r"\((?P<cases>\d+) cases\): weighted mean dice (?P<dice>[\d.]+), "
                          r"weighted mean hd95 (?P<hd95>[\d.]+) mm")


def readme_board(name: str) -> tuple[dict, dict[str, float]]:
    """What reference_models/<name>/README.md says the demo board shows: the entry line and per-organ Dice."""
    text = (MODELS / name / "README.md").read_text()
    block = text[text.index("<!-- board:begin -->"):text.index("<!-- board:end -->")]
    m = README_ENTRY.search(block)
    assert m, f"{name}/README.md: no board line in the board block"
    organs = {a: float(b) for a, b in re.findall(r"^\| (\w+) \| ([\d.]+) \|", block, flags=re.M)}
    return m.groupdict(), organs


@pytest.mark.docker
@pytest.mark.slow
def test_reference_entries_on_the_demo_board_match_their_readmes(reference_images, batch_task, settings, db,
                                                                  redis_url, arena_env):
    """The three CT reference models, submitted with `arena reference run`'s code and run by a real worker in
    batch mode on the demo's validation cases (`arena demo`: 4 "small" cases, validation = seeds 1000, 1002),
    are each a reference row of the board, and the numbers in their READMEs are the board's."""
    from arena import reference
    from arena.leaderboard.query import compute_leaderboard
    from arena.models import Submission
    from arena.tasks.store import load_demo_cases, upsert_task

    task = upsert_task(db, batch_task)
    load_demo_cases(db, settings, task, 4, size="small")
    db.commit()
    names = ["anatomynet", "focusnetv2", "multiatlas"]
    runs = reference.submit(settings, "han-oar-22", ["validation"], names, log=lambda m: None)
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}
    res = subprocess.run([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env, capture_output=True,
                         text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    db.expire_all()
    for r in runs:
        ev = db.get(Submission, r.submission_id).latest_evaluation
        assert ev.status.value == "succeeded", (r.name, ev.error)
        for cr in ev.case_results:
            assert cr.status.value == "succeeded", (r.name, cr.error, (cr.log_tail or "")[-2000:])
    val = next(p for p in task.phases if p.slug == "validation")
    board = compute_leaderboard(db, task, val).table.set_index("label")
    assert (board["badge"] == "reference").sum() == 3  # one row per model, not one for the team
    for name in names:
        row = board.loc[f"{name} (reference)"]
        claimed, organs = readme_board(name)
        assert (claimed["task"], claimed["phase"], int(claimed["cases"])) == ("han-oar-22", "validation", 2)
        assert float(claimed["dice"]) == pytest.approx(row["dice"], abs=0.01), name
        assert len(organs) == 22, name
        for organ, dice in organs.items():
            assert dice == pytest.approx(row[f"dice:{organ}"], abs=0.05), (name, organ)
        assert row["runtime_s"] > 0 and row["peak_memory_mb"] > 0


@pytest.mark.docker
@pytest.mark.slow
def test_reference_run_is_idempotent(reference_images, base_image, settings, db):
    from sqlalchemy import select

    from arena import reference
    from arena.models import Submission, Team
    from arena.tasks.store import upsert_task

    upsert_task(db, REPO / "tasks" / "han-oar-22")
    db.commit()
    first = reference.submit(settings, "han-oar-22", ["validation", "test"], ["multiatlas", "anatomynet"],
                             log=lambda m: None, enqueue=False)
    assert len(first) == 4 and all(r.created for r in first)  # quota (2 in test) does not apply
    again = reference.submit(settings, "han-oar-22", None, ["multiatlas", "anatomynet"], log=lambda m: None,
                             enqueue=False)
    assert not any(r.created for r in again)
    assert {r.submission_id for r in again} == {r.submission_id for r in first}
    db.expire_all()
    subs = db.scalars(select(Submission)).all()
    assert len(subs) == 4
    for sub in subs:  # each says what it was trained on (reference_models/<name>/tasks.json)
        assert sub.provenance == reference.provenance(sub.label.split()[0], "han-oar-22"), sub.label
        assert "phantom" in sub.provenance

    # a task with its own variant gets that variant's image (and provenance), not the default one
    (kbp,) = reference.build(base_image, ["anatomynet"], log=lambda m: None, tasks=["han-oar-openkbp"])
    upsert_task(db, REPO / "tasks" / "han-oar-openkbp")
    db.commit()
    (run,) = reference.submit(settings, "han-oar-openkbp", ["validation"], ["anatomynet"], log=lambda m: None,
                              enqueue=False)
    db.expire_all()
    sub = db.get(Submission, run.submission_id)
    assert sub.image_id == kbp.image_id != reference_images["anatomynet"].image_id
    assert "OpenKBP train patients" in sub.provenance
    team = db.scalar(select(Team).where(Team.name == reference.REFERENCE_TEAM))
    assert team.is_reference and all(s.team_id == team.id for s in subs)
    assert {s.image_id for s in subs} == {reference_images[n].image_id for n in ("multiatlas", "anatomynet")}
