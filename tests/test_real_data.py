"""Real data end to end through the real runner (Docker, RQ worker): the example algorithm on han-oar-9,
thoracic-oar-6 (synthetic, small) and the real OpenKBP CTs; and the real TotalSegmentator fast model
(replayed in a container) on abdomen-totalseg, whose board must equal Dice computed here with NumPy."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.openkbp_helpers import openkbp_folder

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def _worker(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env, capture_output=True,
                          text=True, timeout=1200)


def _submit(settings, db, user, slug: str, phase: str, tarball: Path, label: str) -> int:
    from arena.runner.jobs import enqueue_intake
    from arena.submissions.intake import create_submission, store_upload

    with open(tarball, "rb") as f:
        upload = store_upload(f, settings)
    sub = create_submission(db, slug, phase, user, upload, upload_name=tarball.name, label=label, settings=settings)
    db.commit()
    enqueue_intake(settings, sub.id)
    return sub.id


def _board(db, slug: str, phase: str):
    from sqlalchemy import select

    from arena.leaderboard.query import compute_leaderboard
    from arena.models import Task

    db.expire_all()
    task = db.scalar(select(Task).where(Task.slug == slug))
    return compute_leaderboard(db, task, next(p for p in task.phases if p.slug == phase), bootstrap=False)


def _case_scores(db, sub_id: int) -> dict[str, dict[str, dict]]:
    from arena.models import Submission
    from arena.tasks.store import spec_of

    db.expire_all()
    sub = db.get(Submission, sub_id)
    names = {lab: s.name for lab, s in spec_of(sub.task).labels.items()}
    ev = sub.latest_evaluation
    out = {}
    for cr in ev.case_results:
        assert cr.status.value == "succeeded", (cr.case.key, cr.error, cr.log_tail)
        per: dict[str, dict] = {}
        for mv in cr.metrics:
            per.setdefault(names[mv.label], {})[mv.metric] = mv.value
        out[cr.case.key] = per
    return out


def test_example_algorithm_on_ct_tasks(settings, db, redis_url, docker_engine, base_image, shared_data, tmp_path,
                                       arena_env):
    from arena.images.build import build_image, save_image
    from arena.tasks.store import load_demo_cases, load_real_cases, upsert_task
    from arena.users import create_user

    user, _ = create_user(db, "ct", team="CT examples")
    subs = {}
    for slug, phase in (("han-oar-9", "validation"), ("thoracic-oar-6", "validation"), ("han-oar-openkbp", "test")):
        task = upsert_task(db, REPO / "tasks" / slug)
        if slug == "han-oar-openkbp":  # two OpenKBP test patients with a contoured mandible
            openkbp_folder(shared_data, tmp_path / "kbp", patients=["pt_243", "pt_307"])
            assert len(load_real_cases(db, settings, task, REPO / "tasks" / slug, data_root=tmp_path / "kbp")) == 2
        else:
            load_demo_cases(db, settings, task, 4, size="small")
        db.commit()
        tag = f"arena-test/threshold-{slug}:ct"
        build_image(str(REPO / "examples" / "threshold-segmenter"), tag, base_image, log=lambda line: None,
                    buildargs={"TASK": slug})
        tar = tmp_path / f"{slug}.tar"
        save_image(tag, str(tar), compress=False)
        subs[slug] = _submit(settings, db, user, slug, phase, tar, f"threshold {slug}")
    res = _worker({**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    s9 = _case_scores(db, subs["han-oar-9"])
    assert set(s9) == {"demo-000", "demo-002"}
    for per in s9.values():
        assert per["Mandible"]["dice"] > 0.9
        assert per["BrainStem"]["dice"] == 0.0  # not attempted: missed, per the empty policy
    # demo-002 lacks one submandibular gland: absent from both masks → not scored
    missing = [n for n in ("Submandibular_L", "Submandibular_R") if s9["demo-002"].get(n, {}).get("dice") is None]
    assert len(missing) == 1

    st = _case_scores(db, subs["thoracic-oar-6"])
    for per in st.values():
        assert per["Lung_L"]["dice"] > 0.9 and per["Lung_R"]["dice"] > 0.9 and per["Trachea"]["dice"] > 0.4
        assert per["Heart"]["dice"] == 0.0
    board = _board(db, "thoracic-oar-6", "validation").table
    assert len(board) == 1 and board.iloc[0]["rank"] == 1

    so = _case_scores(db, subs["han-oar-openkbp"])
    assert set(so) == {"pt-243", "pt-307"}
    assert so["pt-243"]["Mandible"]["dice"] > 0.65 and so["pt-307"]["Mandible"]["dice"] > 0.45
    for organ in ("Esophagus", "Larynx"):  # not contoured for pt-243: not scored
        assert so["pt-243"].get(organ, {}).get("dice") is None, so["pt-243"].get(organ)
    # scores agree with a direct computation on the stored files (real clinical contours)
    from arena.models import Submission

    ev = db.get(Submission, subs["han-oar-openkbp"]).latest_evaluation
    for key in ("pt-243", "pt-307"):
        (out,) = (settings.results_dir / f"evaluation-{ev.id}" / key / "images" / "oar-segmentation").glob("*.mha")
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) == 7
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(settings.cases_dir / "han-oar-openkbp" / key
                                                         / "reference.mha"))) == 7
        assert so[key]["Mandible"]["dice"] == pytest.approx(2 * (pred & ref).sum() / (pred.sum() + ref.sum()),
                                                            abs=1e-9)


def _numpy_dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else math.nan


def test_totalseg_fast_model_board(settings, db, redis_url, docker_engine, base_image, shared_data, tmp_path,
                                   arena_env):
    from arena.images.build import save_image
    from arena.tasks.spec import load_spec
    from arena.tasks.store import load_real_cases, upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "abdomen-totalseg")
    (case,) = load_real_cases(db, settings, task, REPO / "tasks" / "abdomen-totalseg")
    db.commit()
    user, _ = create_user(db, "ts", team="TotalSegmentator")
    spec = importlib.util.spec_from_file_location("replay_build", REPO / "examples" / "totalseg-fast-replay" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(base_image, "arena-test/totalseg-fast:real", data_root=shared_data, log=lambda line: None)
    tar = tmp_path / "fast.tar"
    save_image("arena-test/totalseg-fast:real", str(tar), compress=False)
    sub_id = _submit(settings, db, user, "abdomen-totalseg", "test", tar, "TotalSegmentator fast")
    res = _worker({**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    # independent: Dice straight from the two NIfTI files
    normal = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "totalseg" / "example_seg.nii.gz")))
    fast = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "totalseg" / "example_seg_fast.nii.gz")))
    tspec = load_spec(REPO / "tasks" / "abdomen-totalseg")
    expected = {s.name: _numpy_dice(fast == lab, normal == lab) for lab, s in tspec.labels.items()}
    found = [v for v in expected.values() if v > 0]
    assert expected["lung_middle_lobe_right"] == 0.0  # the lobe the fast model misses
    assert 0.75 < min(found) and max(found) < 0.99

    scores = _case_scores(db, sub_id)["totalseg-example"]
    for name, want in expected.items():
        assert scores[name]["dice"] == pytest.approx(want, abs=1e-6), name
    diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(case.meta["geometry"]["size"], case.meta["geometry"]["spacing"])))
    assert scores["lung_middle_lobe_right"]["hd95"] == pytest.approx(diag)  # the task's empty policy

    board = _board(db, "abdomen-totalseg", "test")
    row = board.table.iloc[0]
    assert row["dice"] == pytest.approx(float(np.mean(list(expected.values()))), abs=1e-6)
    for name, want in expected.items():
        col = next((c for c in board.table.columns if c in (f"dice:{name}", f"dice_{name}")), None)
        if col is not None:
            assert row[col] == pytest.approx(want, abs=1e-6), name
