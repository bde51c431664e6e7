"""A phase that hides its cases leaks no per-case side channel to participants (issue 17, finding 2).

The audit's container exited with a function of its hidden input and read it back from the diagnosis.
Here a real submission of such a container runs on a real worker in han-oar-22's test phase
(``show_case_results: false``); every place a participant can look (API, submission page, results CSV,
``arena status`` / ``arena results``, the submission list while it runs, the board) is checked against
what the organizer sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import SimpleITK as sitk
from click.testing import CliRunner
from werkzeug.serving import make_server

from arena.cli import main
from arena.disclosure import PARTICIPANT_FAULT, coarse
from arena.tasks.store import load_demo_cases, upsert_task
from arena.web import create_app
from fixtures_docker import unavailable
from runner_helpers import build_tiny_image, save_image, tiny_images_available
from web_helpers import bearer, fake_submission, make_task, make_user, sign_in

REPO = Path(__file__).resolve().parents[1]


def _exit_code_of(image_path: str) -> int:
    """What the ``exitcode`` image exits with on this case: its voxel count % 250 + 2."""
    x, y, z = sitk.ReadImage(image_path).GetSize()
    return x * y * z % 250 + 2


@pytest.fixture
def hidden_run(settings, db, redis_url, docker_engine, tmp_path, monkeypatch):
    """A submission of the ``exitcode`` image to the test phase, uploaded through the API of a real server
    and run by a real worker (burst); the participant's and the organizer's polls while it ran."""
    if not tiny_images_available():
        unavailable("no static busybox or docker CLI for the tiny images")
    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    load_demo_cases(db, settings, task, 4, size="small")  # 2 cases per phase
    _, alice = make_user(db, "alice", team="Team Alice")
    org_user, org = make_user(db, "org")
    task.organizers.append(org_user)
    db.commit()
    tag = build_tiny_image("exitcode", variant=uuid.uuid4().hex[:12], env={"SLOW_S": "2"})
    tarball = save_image(tag, tmp_path / "exitcode.tar")
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    r = requests.post(f"{base}/api/v1/tasks/han-oar-22/phases/test/submissions?label=leaky",
                      data=tarball.read_bytes(), headers=bearer(alice), timeout=120)
    assert r.status_code == 202, r.text
    sub_id = r.json()["id"]
    worker = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    polls: dict[str, list] = {"alice": [], "org": []}
    deadline = time.monotonic() + 240
    while worker.poll() is None and time.monotonic() < deadline:
        for who, token in (("alice", alice), ("org", org)):
            one = requests.get(f"{base}/api/v1/submissions/{sub_id}", headers=bearer(token), timeout=30).json()
            listed = requests.get(f"{base}/api/v1/submissions", headers=bearer(token), timeout=30).json()
            polls[who].append((one, next(s["status"] for s in listed["items"] if s["id"] == sub_id)))
        time.sleep(0.2)
    out = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, out[-3000:]
    yield {"base": base, "sub": sub_id, "alice": alice, "org": org, "polls": polls, "tag": tag,
           "cases": {c.key: c.image_path for c in next(p for p in task.phases if p.slug == "test").cases}}
    server.shutdown()
    docker_engine.images.remove(tag, force=True)


@pytest.mark.docker
@pytest.mark.redis
def test_exit_codes_of_hidden_cases_reach_organizers_only(hidden_run, app, tmp_path, monkeypatch):
    run, base, sub_id = hidden_run, hidden_run["base"], hidden_run["sub"]
    org = requests.get(f"{base}/api/v1/submissions/{sub_id}", headers=bearer(run["org"]), timeout=30).json()
    org_cases = org["evaluations"][-1]["cases"]
    # the channel is real: each hidden case's exit code is a function of that case, and organizers see it
    assert {c["case"]: c["exit_code"] for c in org_cases} == {k: _exit_code_of(p) for k, p in run["cases"].items()}
    secrets = [c["case"] for c in org_cases] + [c["error"] for c in org_cases]

    view = requests.get(f"{base}/api/v1/submissions/{sub_id}", headers=bearer(run["alice"]), timeout=30).json()
    text = json.dumps(view)
    assert not any(s in text for s in secrets) and "exit_code" not in text and "runtime_s" not in text, text
    ev = view["evaluations"][-1]
    assert ev["status"] == "failed" and ev["outcome"] == PARTICIPANT_FAULT
    assert ev["diagnosis"] == [{"outcome": PARTICIPANT_FAULT, "cases": len(run["cases"])}]
    assert ev["started_at"] is None and ev["finished_at"] is None and ev["error"] is None
    assert ev["duration_s"] is not None and ev["duration_s"] == coarse(ev["duration_s"])

    # while it ran: the organizer saw "case i/N" progress; the participant only "running", 0 cases done
    assert any("(case " in status for _, status in run["polls"]["org"])
    running = [(one, status) for one, status in run["polls"]["alice"] if one["evaluations"]
               and one["evaluations"][-1]["status"] in ("running", "scoring")]
    assert running, "the participant's polls never saw the evaluation run"
    for one, status in running:
        assert status in ("running", "scoring") and one["status"] == status
        assert one["evaluations"][-1]["cases_done"] == 0 and "progress" not in one["evaluations"][-1]

    # the submission page, signed in as alice, and the organizer's
    page = sign_in(app.test_client(), "alice").get(f"/submissions/{sub_id}").get_data(as_text=True)
    assert PARTICIPANT_FAULT in page and not any(s in page for s in secrets)
    org_page = sign_in(app.test_client(), "org").get(f"/submissions/{sub_id}").get_data(as_text=True)
    assert all(s in org_page for s in secrets)

    # results CSV and the CLI (which read the API)
    csv_text = requests.get(f"{base}/api/v1/submissions/{sub_id}/results?format=csv", headers=bearer(run["alice"]),
                            timeout=30).text
    assert csv_text == ""
    monkeypatch.setenv("ARENA_CONFIG", str(tmp_path / "creds"))
    runner = CliRunner()
    assert runner.invoke(main, ["login", "--server", base, "--token", run["alice"]]).exit_code == 0
    status = runner.invoke(main, ["status", str(sub_id)])
    assert status.exit_code == 0 and PARTICIPANT_FAULT in status.output, status.output
    assert not any(s in status.output for s in secrets), status.output
    results = runner.invoke(main, ["results", str(sub_id)])
    assert results.exit_code == 0 and not any(s in results.output for s in secrets), results.output


def test_boards_of_hidden_phases_show_coarse_resources(settings, db, app):
    """The board of a phase that hides its cases shows runtime and memory to one significant digit (a
    per-case maximum of memory is a channel too); a phase that shows its cases keeps them exact."""
    task = make_task(db, settings)
    alice, _ = make_user(db, "alice", team="Team Alice")
    for phase in ("validation", "test"):
        sub = fake_submission(db, settings, task, phase, alice, label=f"{phase}-v1")
        for cr in sub.evaluations[0].case_results:
            cr.runtime_s, cr.peak_memory_mb = 1.37, 123.4
    db.commit()
    client = app.test_client()
    rows = {p: [r for r in client.get(f"/api/v1/tasks/han-oar-22/leaderboard?phase={p}").get_json()["rows"]
                if r.get("badge") != "published"]  # han-oar-22's published rows have no runtimes
            for p in ("validation", "test")}
    assert (rows["validation"][0]["runtime_s"], rows["validation"][0]["peak_memory_mb"]) == (1.37, 123.4)
    assert (rows["test"][0]["runtime_s"], rows["test"][0]["peak_memory_mb"]) == (coarse(1.37), coarse(123.4))
    assert coarse(1.37) != 1.37 and coarse(123.4) != 123.4


def test_per_case_plots_of_hidden_phases_are_for_organizers(settings, db, app):
    """The distributions boxplots draw one point per case and the compare page tests per-case differences:
    in a phase that hides its cases (han-oar-22's test phase) a participant gets neither (404, and the board
    does not link them), an organizer gets both; a phase that shows its cases shows them to everyone."""
    task = make_task(db, settings, n_cases=3)
    alice, _ = make_user(db, "alice", team="Team Alice")
    bob, _ = make_user(db, "bob", team="Team Bob")
    boss, _ = make_user(db, "boss", admin=True)
    for phase in ("validation", "test"):
        fake_submission(db, settings, task, phase, alice, dice=0.8, label=f"{phase}-a")
        fake_submission(db, settings, task, phase, bob, dice=0.6, label=f"{phase}-b")
    db.commit()
    pages = ("distributions", "compare")
    participant, organizer = app.test_client(), app.test_client()
    sign_in(participant, "alice")
    sign_in(organizer, "boss")
    for path in pages:
        assert participant.get(f"/tasks/han-oar-22/{path}?phase=validation").status_code == 200
        hidden = participant.get(f"/tasks/han-oar-22/{path}?phase=test")
        assert hidden.status_code == 404 and b"no per-case results" in hidden.data
        assert organizer.get(f"/tasks/han-oar-22/{path}?phase=test").status_code == 200
    board = participant.get("/tasks/han-oar-22?phase=test").get_data(as_text=True)
    assert "/tasks/han-oar-22/distributions" not in board and "/tasks/han-oar-22/compare" not in board
    assert "/tasks/han-oar-22/distributions" in participant.get("/tasks/han-oar-22?phase=validation").get_data(
        as_text=True)
