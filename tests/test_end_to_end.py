"""End to end on real parts: build the example image, upload it through the API, run an RQ worker in
burst mode against the real Docker engine and Redis, and check every score against medpy."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]

# A container never learns which case it runs (the input's name is random): this one tells the cases
# apart by a fingerprint of their voxels, which the test bakes into the image (/behaviour.json).
BROKEN = r"""
import hashlib, json, os, sys
import numpy as np
import SimpleITK as sitk
src = [os.path.join("/input/images/ct", f) for f in os.listdir("/input/images/ct")][0]
img = sitk.ReadImage(src)
name = json.load(open("/behaviour.json")).get(hashlib.sha256(sitk.GetArrayFromImage(img).tobytes()).hexdigest(), "")
os.makedirs("/output/images/oar-segmentation", exist_ok=True)
if name.startswith("demo-000"):
    print("cannot find my weights", file=sys.stderr)
    sys.exit(2)
if name.startswith("demo-002"):
    wrong = sitk.Image(7, 7, 7, sitk.sitkUInt8)
    sitk.WriteImage(wrong, "/output/images/oar-segmentation/out.mha")
    sys.exit(0)
empty = sitk.Image(img.GetSize(), sitk.sitkUInt8)
empty.CopyInformation(img)
sitk.WriteImage(empty, "/output/images/oar-segmentation/out.mha")
"""


def _worker(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture
def loaded_task(settings, db):
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    load_demo_cases(db, settings, task, 6, size="small")  # validation: demo-000, -002, -004
    _, token = create_user(db, "alice", team="Team Alice")
    _, admin_token = create_user(db, "org", is_admin=True)
    db.commit()
    return token, admin_token


def _fingerprints(settings) -> dict[str, str]:
    """sha256 of each stored case image's voxels → its case key."""
    from sqlalchemy import select

    from arena.db import session_scope
    from arena.models import Case

    with session_scope(settings.database_url) as s:
        return {hashlib.sha256(sitk.GetArrayFromImage(sitk.ReadImage(c.image_path)).tobytes()).hexdigest(): c.key
                for c in s.scalars(select(Case))}


def _get(client, token, path):
    """Submissions are private to their team and the organizers: reads carry the team's token."""
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def _post(client, token, path, data):
    return client.post(path, data=data, headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/octet-stream"})


def test_submit_run_score(settings, loaded_task, redis_url, docker_engine, base_image, tmp_path, arena_env):
    from medpy.metric.binary import dc, hd95

    from arena.images.build import build_image, save_image
    from arena.web import create_app

    token, admin_token = loaded_task
    good_tar = tmp_path / "good.tar.gz"
    build_image(str(REPO / "examples" / "threshold-segmenter"), "arena-test/threshold:e2e", base_image)
    save_image("arena-test/threshold:e2e", str(good_tar))
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    (broken_dir / "run.py").write_text(BROKEN)
    (broken_dir / "behaviour.json").write_text(json.dumps(_fingerprints(settings)))
    (broken_dir / "Dockerfile").write_text('ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY run.py behaviour.json /\n'
                                           'ENTRYPOINT ["python3", "/run.py"]\n')
    build_image(str(broken_dir), "arena-test/broken:e2e", base_image)
    broken_tar = tmp_path / "broken.tar"
    save_image("arena-test/broken:e2e", str(broken_tar), compress=False)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not an image" * 100)

    app = create_app(settings)
    client = app.test_client()
    url = "/api/v1/tasks/han-oar-22/phases/validation/submissions"
    # Refusals that never reach the queue
    assert client.post(url, data=b"x").status_code == 401
    r = _post(client, token, "/api/v1/tasks/han-oar-22/phases/final/submissions", b"x")
    assert r.status_code == 404 and "no phase 'final'" in r.get_json()["error"]
    with open(good_tar, "rb") as f:
        r = _post(client, token, url + "?label=thresholds", f)
    assert r.status_code == 202, r.get_json()
    good_id = r.get_json()["id"]
    with open(broken_tar, "rb") as f:
        broken_id = _post(client, token, url + "?label=broken", f).get_json()["id"]
    r = _post(client, token, url, junk.read_bytes())  # refused at upload: nothing stored
    assert r.status_code == 400 and "invalid image archive: not a tar archive" in r.get_json()["error"]
    with open(good_tar, "rb") as f:  # the same image again: refused, naming the first
        r = _post(client, token, url, f)
    assert r.status_code == 409 and f"as submission {good_id}" in r.get_json()["error"]
    assert len(list(settings.uploads_dir.iterdir())) == 2
    assert client.get(f"/api/v1/submissions/{good_id}").status_code == 401  # anonymous: refused
    assert _get(client, token, f"/api/v1/submissions/{good_id}").get_json()["status"] == "uploaded"

    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}
    res = _worker(env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    good = _get(client, token, f"/api/v1/submissions/{good_id}").get_json()
    assert good["status"] == "succeeded", good
    ev = good["evaluations"][0]
    assert ev["cases_done"] == ev["cases_total"] == 3
    assert [c["case"] for c in ev["cases"]] == ["demo-000", "demo-002", "demo-004"]
    from arena.tasks.spec import load_spec

    spec = load_spec(REPO / "tasks" / "han-oar-22")
    checked = 0
    for case in ev["cases"]:
        assert case["status"] == "succeeded" and case["runtime_s"] > 0, case
        out_dir = settings.results_dir / f"evaluation-{ev['id']}" / case["case"] / "images" / "oar-segmentation"
        (out_file,) = list(out_dir.glob("*.mha"))
        pred_img = sitk.ReadImage(str(out_file))
        ref_img = sitk.ReadImage(str(settings.cases_dir / "han-oar-22" / case["case"] / "reference.mha"))
        pred, ref = sitk.GetArrayFromImage(pred_img), sitk.GetArrayFromImage(ref_img)
        spacing = ref_img.GetSpacing()[::-1]
        diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(ref.shape, spacing)))
        for lab, lspec in spec.labels.items():
            got = case["scores"][lspec.name]
            p, r = pred == lab, ref == lab
            if p.any() and r.any():
                assert got["dice"] == pytest.approx(dc(p, r), abs=1e-12)
                assert got["hd95"] == pytest.approx(hd95(p, r, spacing), abs=1e-9)
                checked += 1
            elif r.any():  # missed organ: Dice 0, HD95 = diagonal (task's empty policy)
                assert got["dice"] == 0.0 and got["hd95"] == pytest.approx(diag)
            elif not p.any():
                assert got["dice"] is None and got["hd95"] is None
        assert case["scores"]["Mandible_L"]["dice"] > 0.5 and case["scores"]["Eye_R"]["dice"] > 0.5
    assert checked >= 12  # at least four organs per case found and compared with medpy

    broken = _get(client, token, f"/api/v1/submissions/{broken_id}").get_json()
    assert broken["status"] == "succeeded"  # the evaluation completes; failed cases are scored as empty
    cases = {c["case"]: c for c in broken["evaluations"][0]["cases"]}
    assert cases["demo-000"]["status"] == "failed" and "exited with code 2: cannot find my weights" in cases["demo-000"]["error"]
    assert cases["demo-000"]["failure"] == "non-zero-exit" and cases["demo-002"]["failure"] == "invalid-output"
    assert "cannot find my weights" in cases["demo-000"]["log_tail"]
    assert cases["demo-002"]["status"] == "failed" and "output size (7, 7, 7) differs" in cases["demo-002"]["error"]
    assert cases["demo-004"]["status"] == "succeeded"
    assert cases["demo-000"]["scores"]["BrainStem"]["dice"] == 0.0


    board = client.get("/api/v1/tasks/han-oar-22/leaderboard?phase=validation").get_json()
    ranked = [r for r in board["rows"] if r.get("badge") != "published"]  # + FocusNetv2's table rows, unranked
    assert len(ranked) == 1  # one row per team: its best submission
    assert len(board["rows"]) - len(ranked) == 5 and all(r["rank"] is None for r in board["rows"] if r not in ranked)
    row = ranked[0]
    assert row["team"] == "Team Alice" and row["submission_id"] == good_id and row["rank"] == 1
    assert 0 < row["dice"] < 1 and row["cases"] == 3

    page = client.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    assert "Team Alice" in page and "Mandible_L" in page and "thresholds" in page
    sub_page = _get(client, token, f"/submissions/{broken_id}").get_data(as_text=True)
    assert "exited with code 2" in sub_page
    csv = client.get("/tasks/han-oar-22/leaderboard.csv?phase=validation").get_data(as_text=True)
    assert csv.splitlines()[0].startswith("entry,rank,mean_rank,dice,rank:dice,hd95,rank:hd95")  # StructSeg rule

    # A re-run is a new evaluation; the first one's results stay.
    assert _post(client, token, f"/api/v1/submissions/{good_id}/evaluations", b"").status_code == 403
    r = _post(client, admin_token, f"/api/v1/submissions/{good_id}/evaluations", b"")
    assert r.status_code == 202
    res = _worker(env)
    assert res.returncode == 0
    again = _get(client, token, f"/api/v1/submissions/{good_id}").get_json()
    assert [e["status"] for e in again["evaluations"]] == ["succeeded", "succeeded"]
    first, second = again["evaluations"]
    for a, b in zip(first["cases"], second["cases"]):
        assert a["scores"] == b["scores"]  # deterministic algorithm, same numbers, separate records
    assert not docker_engine.containers.list(all=True, filters={"label": f"arena.queue={settings.queue_name}"})
