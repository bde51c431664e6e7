"""grand-challenge compatibility: an algorithm laid out as grand-challenge-forge generates one
(tests/gc_forge: its inference.py and Dockerfile) runs unchanged through a real submission — its model
uploaded separately and extracted read-only at /opt/ml/model, its default-geometry output adopted by a
task that allows it — and model archives are checked like images."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from arena.models import Evaluation, Submission

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


def _tar_gz(members: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


MODEL = {"threshold_hu": 300, "label": 21}  # bone above 300 HU, called Mandible_L: a "model" with a visible effect


@pytest.fixture
def adopting_task(tmp_path, settings, db):
    """han-oar-22 whose output allows adopt-default geometry, with one validation case."""
    from arena.tasks.store import load_demo_cases, upsert_task

    task_dir = tmp_path / "tasks" / "han-oar-22"
    shutil.copytree(REPO / "tasks" / "han-oar-22", task_dir)
    spec = yaml.safe_load((task_dir / "task.yaml").read_text())
    spec["outputs"][0]["geometry"] = "adopt-default"
    (task_dir / "task.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    task = upsert_task(db, task_dir)
    load_demo_cases(db, settings, task, 2)  # demo-000 → validation
    db.commit()
    return task


def test_forge_template_runs_unchanged_with_its_model(adopting_task, settings, db, app, redis_url, docker_engine,
                                                      base_image, tmp_path, arena_env, monkeypatch):
    from arena.images.build import build_image, save_image
    from arena.users import create_user

    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    app.config["ARENA"] = replace(settings, redis_url=redis_url)
    _, token = create_user(db, "gc", team="Team GC")
    db.commit()
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    c = app.test_client()

    # the model, uploaded on its own (as on grand-challenge), then named by the submission
    model = _tar_gz({"a_tarball_subdirectory/": None,
                     "a_tarball_subdirectory/some_tarball_resource.txt": b"MODEL-FROM-THE-TARBALL\n",
                     "a_tarball_subdirectory/model.json": json.dumps(MODEL).encode()})
    r = c.post("/api/v1/models", data=model, headers=auth)
    assert r.status_code == 201, r.get_data(as_text=True)
    sha = r.get_json()["sha256"]
    assert r.get_json()["files"] == 2
    assert c.post("/api/v1/models", data=model, headers=auth).get_json()["sha256"] == sha  # stored once

    build_image(str(REPO / "tests" / "gc_forge"), "arena-test/gc-forge:1", base_image, log=lambda s: None)
    tar = save_image("arena-test/gc-forge:1", str(tmp_path / "gc-forge.tar"), compress=False)
    with open(tar, "rb") as f:
        r = c.post(f"/api/v1/tasks/han-oar-22/phases/validation/submissions?label=forge&model={sha}", data=f,
                   headers=auth)
    assert r.status_code == 202, r.get_data(as_text=True)
    sub_id = r.get_json()["id"]
    assert r.get_json()["model"]["sha256"] == sha
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}
    res = subprocess.run([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    db.expire_all()
    sub = db.get(Submission, sub_id)
    assert sub.status.value == "validated", sub.error
    ev: Evaluation = sub.evaluations[-1]
    assert ev.status.value == "succeeded", ev.error
    (cr,) = ev.case_results
    assert cr.status.value == "succeeded", cr.error
    assert "MODEL-FROM-THE-TARBALL" in cr.log_tail  # read from /opt/ml/model
    assert "geometry was adopted" in cr.log_tail
    # scored on the case's own grid: the model's bone label overlaps the left mandible
    dice = {m.label: m.value for m in cr.metrics if m.metric == "dice"}
    assert dice[21] > 0.05, dice
    page = c.get(f"/api/v1/submissions/{sub_id}", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert page["model"] == {"sha256": sha, "bytes": len(model), "files": 2}
    assert not list(settings.run_root.iterdir())  # the extracted model is gone with the evaluation


@pytest.mark.parametrize("members, links, message", [
    ({"w/model.bin": b"x"}, {"w/escape": "/etc/shadow"}, "is a link"),
    ({"../outside.bin": b"x"}, None, "outside the archive"),
    ({"/abs.bin": b"x"}, None, "absolute"),
    ({"w/": None}, None, "holds no files"),
])
def test_bad_model_archives_are_refused_with_the_reason(app, settings, db, members, links, message):
    from arena.users import create_user

    _, token = create_user(db, "m", team="Team M")
    db.commit()
    r = app.test_client().post("/api/v1/models", data=_tar_gz(members, links),
                               headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and message in r.get_json()["error"], r.get_json()
    assert not [p for p in settings.uploads_dir.rglob("*") if p.is_file()]  # nothing kept of a refused archive


def test_a_submission_names_only_its_own_teams_model(app, settings, db):
    from arena.tasks.store import upsert_task
    from arena.users import create_user

    upsert_task(db, REPO / "tasks" / "han-oar-22")
    _, alice = create_user(db, "alice", team="Team A")
    _, bob = create_user(db, "bob", team="Team B")
    db.commit()
    c = app.test_client()
    sha = c.post("/api/v1/models", data=_tar_gz({"m.bin": b"alice's weights"}),
                 headers={"Authorization": f"Bearer {alice}"}).get_json()["sha256"]
    r = c.post(f"/api/v1/tasks/han-oar-22/phases/validation/submissions?model={sha}", data=b"x" * 100,
               headers={"Authorization": f"Bearer {bob}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and "no such model archive" in r.get_json()["error"]


def test_extracted_model_is_world_readable_and_has_no_special_bits(tmp_path):
    from arena.submissions.model_archive import extract_model_archive, inspect_model_archive

    p = tmp_path / "m.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("bin/run")
        info.size, info.mode = 2, 0o4700  # setuid, owner-only
        tar.addfile(info, io.BytesIO(b"#!"))
    p.write_bytes(buf.getvalue())
    assert inspect_model_archive(p).files == 1
    n = extract_model_archive(p, tmp_path / "out")
    mode = (tmp_path / "out" / "bin" / "run").stat().st_mode & 0o7777
    assert n == 1 and mode == 0o755
