"""Web platform flows through the Flask test client: accounts, teams, tokens, uploads, organizer pages."""

from __future__ import annotations

import io
import json

import pytest

from web_helpers import PASSWORD, bearer, csrf_of, fake_submission, form_post, make_task, make_user, sign_in


@pytest.fixture
def world(settings, db):
    task = make_task(db, settings)
    alice, alice_token = make_user(db, "alice", team="Team Alice")
    bob, bob_token = make_user(db, "bob", team="Team Bob")
    org, org_token = make_user(db, "org")
    task.organizers.append(org)
    admin, admin_token = make_user(db, "root", admin=True)
    sub_a = fake_submission(db, settings, task, "validation", alice, dice=0.8, label="alice-v1")
    sub_b = fake_submission(db, settings, task, "validation", bob, dice=0.6, label="bob-v1")
    db.commit()
    return {"task": task, "alice": alice_token, "bob": bob_token, "org": org_token, "admin": admin_token,
            "sub_a": sub_a.id, "sub_b": sub_b.id}


def test_signup_team_token_flow(app, settings, db):
    make_task(db, settings)
    db.commit()
    c = app.test_client()
    page = c.get("/signup").get_data(as_text=True)
    r = c.post("/signup", data={"name": "carol", "password": "short", "password2": "short",
                                "csrf_token": csrf_of(page)})
    assert r.status_code == 400 and "at least 10 characters" in r.get_data(as_text=True)
    r = c.post("/signup", data={"name": "carol", "password": PASSWORD, "password2": PASSWORD,
                                "csrf_token": csrf_of(page)})
    assert r.status_code == 302
    from arena.models import User
    from sqlalchemy import select

    carol = db.scalar(select(User).where(User.name == "carol"))
    assert carol.password_hash.startswith("scrypt:") and PASSWORD not in carol.password_hash
    # create a team, then a second user joins it with the invite code
    r = form_post(c, "/account", "/account/team", {"action": "create", "name": "Carol's Lab"})
    assert r.status_code == 302
    home = c.get("/account").get_data(as_text=True)
    assert "Carol&#39;s Lab" in home
    db.expire_all()
    code = db.scalar(select(User).where(User.name == "carol")).team.invite_code
    assert code and code in home
    d = app.test_client()
    page = d.get("/signup").get_data(as_text=True)
    d.post("/signup", data={"name": "dave", "password": PASSWORD, "password2": PASSWORD, "csrf_token": csrf_of(page)})
    assert form_post(d, "/account", "/account/team", {"action": "join", "code": "wrong"}).status_code == 302
    assert "no team has this invite code" in d.get("/account").get_data(as_text=True)
    form_post(d, "/account", "/account/team", {"action": "join", "code": code})
    db.expire_all()
    assert db.scalar(select(User).where(User.name == "dave")).team.name == "Carol's Lab"
    # a token: shown once, works on the API, revoked → refused
    r = form_post(d, "/account", "/account/tokens", {"name": "laptop"})
    token = r.get_data(as_text=True).split('id="new-token">')[1].split("<")[0]
    assert d.get("/api/v1/me", headers=bearer(token)).get_json()["team"]["name"] == "Carol's Lab"
    assert token not in d.get("/account").get_data(as_text=True)  # shown once
    db.expire_all()
    row = next(t for t in db.scalar(select(User).where(User.name == "dave")).tokens if t.name == "laptop")
    assert row.token_sha256 != token and row.last_used_at is not None
    form_post(d, "/account", f"/account/tokens/{row.id}/revoke", {})
    assert d.get("/api/v1/me", headers=bearer(token)).status_code == 401
    # leave the team: submissions stay the team's
    form_post(d, "/account", "/account/team", {"action": "leave"})
    db.expire_all()
    assert db.scalar(select(User).where(User.name == "dave")).team is None
    # sign out
    form_post(d, "/account", "/signout", {})
    assert d.get("/account").status_code == 302


def test_browser_upload_is_streamed_and_queued(app, settings, db, world, monkeypatch):
    """The upload page's XHR target: raw body, CSRF header, refused archive → JSON error, nothing stored."""
    c = sign_in(app.test_client(), "alice")
    page = c.get("/tasks/han-oar-22/submit?phase=validation").get_data(as_text=True)
    assert "submissions left (10 per 24 h)" in page and "upload-button" in page
    token = csrf_of(page)
    url = "/tasks/han-oar-22/phases/validation/upload?label=x&filename=img.tar"
    r = c.post(url, data=b"not a tar" * 1000, headers={"X-CSRFToken": token, "Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and "invalid image archive" in r.get_json()["error"]
    assert r.status_code != 500
    assert [p.name for p in settings.uploads_dir.iterdir() if p.name.startswith(".partial")] == []
    # a real (tiny) docker-save archive goes through to the queue
    queued = []
    monkeypatch.setattr("arena.runner.jobs.enqueue_intake", lambda s, sid: queued.append(sid) or "job")
    from arena.submissions import intake

    monkeypatch.setattr(intake, "check_archive", lambda *a, **k: None)
    r = c.post(url, data=b"x" * 3_000_000, headers={"X-CSRFToken": token, "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert queued == [body["id"]] and body["url"].endswith(f"/submissions/{body['id']}")
    assert body["upload_bytes"] == 3_000_000


def test_submission_page_live_status_and_results(app, world):
    c = sign_in(app.test_client(), "alice")
    html = c.get(f"/submissions/{world['sub_a']}").get_data(as_text=True)
    assert "succeeded" in html and "validation-000" in html and "secret log line" in html
    assert "Peak memory" in html
    api = c.get(f"/api/v1/submissions/{world['sub_a']}")  # the page's polling: session cookie, GET
    assert api.status_code == 200 and api.get_json()["evaluations"][0]["cases_done"] == 2
    rows = c.get(f"/api/v1/submissions/{world['sub_a']}/results").get_json()["rows"]
    assert {r["label_name"] for r in rows} == {"BrainStem", "Eye_L"} and rows[0]["dice"] == 0.8
    csv = c.get(f"/api/v1/submissions/{world['sub_a']}/results?format=csv").get_data(as_text=True)
    assert csv.splitlines()[0].startswith("evaluation_id,submission_id,team,phase,case")


def test_organizer_phase_settings_and_visibility(app, db, world):
    from arena.models import AuditEvent, Phase
    from sqlalchemy import select

    org = sign_in(app.test_client(), "org")
    viewer = app.test_client()
    alice = sign_in(app.test_client(), "alice")
    assert "alice-v1" in viewer.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    # hide the board: viewers and participants no longer see it, organizers do
    r = form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation",
                  {"action": "save", "visibility": "hidden", "submission_limit": "2"})
    assert r.status_code == 302
    assert "alice-v1" not in viewer.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    assert viewer.get("/api/v1/tasks/han-oar-22/leaderboard?phase=validation").status_code == 404
    assert viewer.get("/tasks/han-oar-22/leaderboard.csv?phase=validation").status_code == 404
    assert "bob-v1" in org.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    assert alice.get(f"/api/v1/submissions/{world['sub_a']}").get_json()["evaluations"][0]["cases"]
    # private: the team sees status only until the reveal
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation",
              {"action": "save", "visibility": "private", "submission_limit": "2"})
    view = alice.get(f"/api/v1/submissions/{world['sub_a']}").get_json()
    assert view["scores_hidden"] and "cases" not in view["evaluations"][0]
    assert "secret log line" not in alice.get(f"/submissions/{world['sub_a']}").get_data(as_text=True)
    assert alice.get(f"/api/v1/submissions/{world['sub_a']}/results").get_json()["rows"] == []
    # reveal now: everything visible again
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation", {"action": "reveal-now"})
    assert alice.get(f"/api/v1/submissions/{world['sub_a']}").get_json()["evaluations"][0]["cases"]
    assert "alice-v1" in viewer.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    # quota override shows on the task API; close the phase: uploads refused with the reason
    phases = alice.get("/api/v1/tasks/han-oar-22").get_json()["phases"]
    val = next(p for p in phases if p["slug"] == "validation")
    assert val["submission_limit"] == 2 and val["quota_left"] == 1
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation", {"action": "close-now"})
    r = alice.post("/api/v1/tasks/han-oar-22/phases/validation/submissions", data=b"x",
                   headers=bearer(world["alice"]))
    assert r.status_code == 403 and "closed" in r.get_json()["error"]
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation", {"action": "open-now"})
    db.expire_all()
    ph = db.scalar(select(Phase).where(Phase.slug == "validation"))
    assert ph.accepting() is None
    actions = [e.action for e in db.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert {"phase.update", "phase.reveal", "phase.close", "phase.open"} <= set(actions)


def test_freeze_shows_snapshot_until_reveal(app, settings, db, world):
    from arena.models import Phase, User
    from sqlalchemy import select

    org = sign_in(app.test_client(), "org")
    viewer = app.test_client()
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation", {"action": "freeze-now"})
    task = world["task"]
    alice = db.scalar(select(User).where(User.name == "alice"))
    fake_submission(db, settings, db.merge(task), "validation", alice, dice=0.95, label="alice-late")
    db.commit()
    page = viewer.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    assert "frozen" in page and "alice-v1" in page and "alice-late" not in page
    assert viewer.get("/api/v1/tasks/han-oar-22/leaderboard?phase=validation").get_json()["frozen_at"]
    assert "alice-late" in org.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation", {"action": "reveal-now"})
    assert "alice-late" in viewer.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    db.expire_all()
    assert db.scalar(select(Phase).where(Phase.slug == "validation")).frozen_board


def test_task_yaml_upload_errors_and_update(app, db, world):
    admin = sign_in(app.test_client(), "root")
    bad = b"slug: Not A Slug\ntitle: x\n"
    r = form_post(admin, "/manage/", "/manage/tasks", {"task_yaml": (io.BytesIO(bad), "task.yaml")},
                  content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "task.yaml was not accepted" in html and "slug" in html
    from web_helpers import REPO

    text = (REPO / "tasks" / "han-oar-22" / "task.yaml").read_text().replace("slug: han-oar-22", "slug: han-oar-copy")
    text = text.replace("literature: literature.csv\n", "")  # a task.yaml uploaded alone has no literature file
    r = form_post(admin, "/manage/", "/manage/tasks", {"task_yaml": (io.BytesIO(text.encode()), "task.yaml")},
                  content_type="multipart/form-data")
    assert r.status_code == 302 and r.headers["Location"].endswith("/manage/tasks/han-oar-copy")
    assert "han-oar-copy" in admin.get("/api/v1/tasks").get_data(as_text=True)
    # an organizer of another task cannot create tasks
    org = sign_in(app.test_client(), "org")
    text2 = text.replace("slug: han-oar-copy", "slug: han-oar-other")
    r = form_post(org, "/manage/", "/manage/tasks", {"task_yaml": (io.BytesIO(text2.encode()), "task.yaml")},
                  content_type="multipart/form-data")
    assert r.status_code == 403


def test_load_cases_from_server_folder(app, settings, db, world):
    import numpy as np
    import SimpleITK as sitk

    root = settings.home / "import" / "batch1"
    for key in ("case-a", "case-b"):
        (root / key).mkdir(parents=True)
        img = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
        sitk.WriteImage(img, str(root / key / "image.nrrd"))
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), str(root / key / "reference.nii.gz"))
    org = sign_in(app.test_client(), "org")
    r = form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/cases",
                  {"folder": "/etc", "phases": ["test"]})
    assert r.status_code == 400 and "not below an import folder" in r.get_data(as_text=True)
    r = form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/cases",
                  {"folder": str(root), "phases": ["test"]})
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]
    from arena.models import AuditEvent, Task
    from sqlalchemy import select

    db.expire_all()
    task = db.scalar(select(Task).where(Task.slug == "han-oar-22"))
    test = next(p for p in task.phases if p.slug == "test")
    assert {"case-a", "case-b"} <= {c.key for c in test.cases}
    ev = db.scalar(select(AuditEvent).where(AuditEvent.action == "task.cases_load"))
    assert ev.detail["cases"] == ["case-a", "case-b"]


def test_queue_cancel_rerun_export(app, settings, db, world, monkeypatch):
    from arena.lifecycle import EvaluationStatus
    from arena.models import AuditEvent, Evaluation, Submission
    from sqlalchemy import select

    org = sign_in(app.test_client(), "org")
    queued = fake_submission(db, settings, db.merge(world["task"]), "validation",
                             db.get(Submission, world["sub_a"]).user, status="queued", label="waiting")
    db.commit()
    ev_id = queued.evaluations[0].id
    page = org.get("/manage/queue").get_data(as_text=True)
    assert f'data-evaluation="{ev_id}"' in page and "test-worker" in page
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    r = form_post(org, "/manage/queue", f"/manage/evaluations/{ev_id}/cancel", {})
    assert r.status_code == 302
    db.expire_all()
    assert db.get(Evaluation, ev_id).status == EvaluationStatus.CANCELLED
    created = []

    def fake_create(s, sid):
        created.append(sid)
        return 999

    monkeypatch.setattr("arena.runner.jobs.create_evaluation", fake_create)
    form_post(org, "/manage/queue", f"/manage/submissions/{world['sub_a']}/rerun", {})
    assert created == [world["sub_a"]]
    assert {"evaluation.cancel", "evaluation.rerun"} <= {e.action for e in db.scalars(select(AuditEvent))}
    rows = json.loads(org.get("/manage/tasks/han-oar-22/export/results.json").get_data(as_text=True))
    assert {r["team"] for r in rows} == {"Team Alice", "Team Bob"} and all("dice" in r for r in rows)
    csv = org.get("/manage/tasks/han-oar-22/export/evaluations.csv").get_data(as_text=True)
    assert csv.startswith("evaluation_id,") and "cancelled" in csv
    subs = org.get("/manage/tasks/han-oar-22/export/submissions.csv").get_data(as_text=True)
    assert "alice-v1" in subs and "bob-v1" in subs
    assert "evaluation.cancel" in org.get("/manage/audit").get_data(as_text=True)


def test_api_pagination_and_errors(app, world):
    c = app.test_client()
    r = c.get("/api/v1/tasks?per_page=1").get_json()
    assert r["total"] == 1 and r["items"][0]["slug"] == "han-oar-22" and r["next"] is None
    r = c.get("/api/v1/tasks?page=abc")
    assert r.status_code == 400 and "'page' must be an integer" in r.get_json()["error"]
    r = c.get("/api/v1/submissions?per_page=1", headers=bearer(world["org"])).get_json()
    assert r["total"] == 2 and len(r["items"]) == 1 and "page=2" in r["next"]
    r = c.get("/api/v1/evaluations?status=bogus", headers=bearer(world["org"]))
    assert r.status_code == 400 and "status must be one of" in r.get_json()["error"]
    r = c.get("/api/v1/me", headers={"Authorization": "Token abc"})
    assert r.status_code == 401 and "Bearer" in r.get_json()["error"]
    # ids beyond 32 bits are 404 (PostgreSQL would refuse the query: found by schemathesis)
    assert c.post("/api/v1/evaluations/2147483648/cancel", headers=bearer(world["org"])).status_code == 404
    assert c.get("/submissions/99999999999").status_code == 404
    r = c.post("/api/v1/tokens", json={"name": "ci"}, headers=bearer(world["alice"]))
    assert r.status_code == 201 and r.get_json()["token"].startswith("arena_")
