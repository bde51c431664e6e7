"""Two real worker processes against one Redis and one database: a burst of evaluations, each case run
exactly once, none lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import CaseResult, Evaluation, Submission

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

WRITER = r"""
import os, time, SimpleITK as sitk
d = "/input/images/ct"; img = sitk.ReadImage(os.path.join(d, os.listdir(d)[0]))
out = sitk.Image(img.GetSize(), sitk.sitkUInt8); out.CopyInformation(img)
os.makedirs("/output/images/oar-segmentation", exist_ok=True)
time.sleep(0.5)
sitk.WriteImage(out, "/output/images/oar-segmentation/out.mha")
"""


def test_two_workers_burst(settings, db, redis_url, docker_engine, base_image, tmp_path, arena_env):
    from arena.config import load_settings
    from arena.images.build import build_image
    from arena.runner.jobs import create_evaluation
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "run.py").write_text(WRITER)
    (tmp_path / "img" / "Dockerfile").write_text('ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY run.py /run.py\n'
                                                 'ENTRYPOINT ["python3", "/run.py"]\n')
    image_id = build_image(str(tmp_path / "img"), "arena-test/writer:scale", base_image, log=lambda s: None)
    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    load_demo_cases(db, settings, task, 6)  # 3 validation cases
    sub_ids = []
    for i in range(8):
        user, _ = create_user(db, f"u{i}", team=f"Team {i}")
        sub = create_submission(db, "han-oar-22", "validation", user,
                                StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
        sub.set_status(SubmissionStatus.VALIDATED)
        sub.image_id = image_id
        sub_ids.append(sub.id)
    db.commit()
    os.environ["ARENA_REDIS_URL"] = redis_url
    s = load_settings()
    ev_ids = [create_evaluation(s, sid) for sid in sub_ids]
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}
    workers = [subprocess.Popen([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    db.expire_all()
    evs = [db.get(Evaluation, e) for e in ev_ids]
    assert [e.status for e in evs] == [EvaluationStatus.SUCCEEDED] * 8, [e.error for e in evs]
    per_eval = dict(db.execute(select(CaseResult.evaluation_id, func.count(CaseResult.id))
                               .where(CaseResult.evaluation_id.in_(ev_ids)).group_by(CaseResult.evaluation_id)).all())
    assert per_eval == {e: 3 for e in ev_ids}  # every case exactly once, no evaluation lost
    assert all("arena.runner evaluation" in out for out in outputs), outputs  # both workers ran cases
    assert not docker_engine.containers.list(all=True, filters={"label": "arena.managed"})
