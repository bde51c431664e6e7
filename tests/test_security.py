"""Attacks, tried and refused: IDOR through pages and API, viewers submitting, hidden data served,
brute-force sign-in and upload floods, CSRF, revoked and foreign tokens."""

from __future__ import annotations

import pytest

from web_helpers import bearer, csrf_of, fake_submission, make_task, make_user, sign_in


@pytest.fixture
def world(settings, db):
    task = make_task(db, settings)
    alice, alice_token = make_user(db, "alice", team="Team Alice")
    bob, bob_token = make_user(db, "bob", team="Team Bob")
    org, org_token = make_user(db, "org")
    sub_a = fake_submission(db, settings, task, "validation", alice, label="alice-v1", log="ALICE-LOG")
    sub_t = fake_submission(db, settings, task, "test", alice, label="alice-test", log="HIDDEN-TEST-LOG")
    db.commit()
    return {"alice": alice_token, "bob": bob_token, "org": org_token, "sub_a": sub_a.id, "sub_t": sub_t.id,
            "ev_a": sub_a.evaluations[0].id}


def test_idor_pages_and_api(app, world):
    """Bob guesses Alice's submission ids: every path to her data answers 404, and says nothing."""
    bob = sign_in(app.test_client(), "bob")
    anon = app.test_client()
    for sid in (world["sub_a"], world["sub_t"]):
        for path in (f"/submissions/{sid}", f"/submissions/{sid}/upload"):
            r = bob.get(path)
            assert r.status_code == 404 and "ALICE-LOG" not in r.get_data(as_text=True)
        for path in (f"/api/v1/submissions/{sid}", f"/api/v1/submissions/{sid}/results",
                     f"/api/v1/submissions/{sid}/results?format=csv"):
            r = anon.get(path, headers=bearer(world["bob"]))
            assert r.status_code == 404 and "ALICE" not in r.get_data(as_text=True)
            assert anon.get(path).status_code == 401
        assert anon.get(f"/submissions/{sid}").status_code == 302  # viewers: sign in first
        assert anon.get(f"/submissions/{sid}/upload").status_code == 404
    # nonexistent ids look the same as foreign ones
    assert bob.get("/submissions/99999").status_code == 404
    # Bob's list of submissions holds none of Alice's; his queue access is refused
    assert anon.get("/api/v1/submissions", headers=bearer(world["bob"])).get_json()["total"] == 0
    assert anon.get("/api/v1/evaluations", headers=bearer(world["bob"])).status_code == 403
    assert bob.get("/manage/queue").status_code == 403
    assert bob.get("/manage/tasks/han-oar-22").status_code == 403
    assert bob.get("/manage/tasks/han-oar-22/export/results.csv").status_code == 403
    # the owner does see it all, including her upload
    alice = sign_in(app.test_client(), "alice")
    assert "ALICE-LOG" in alice.get(f"/submissions/{world['sub_a']}").get_data(as_text=True)
    assert alice.get(f"/submissions/{world['sub_a']}/upload").data.startswith(b"not really an image")


def test_foreign_token_cannot_act_for_another_team(app, world):
    c = app.test_client()
    # Bob's token cannot re-run, cancel or revoke Alice's things
    assert c.post(f"/api/v1/submissions/{world['sub_a']}/evaluations", headers=bearer(world["bob"])).status_code == 403
    assert c.post(f"/api/v1/evaluations/{world['ev_a']}/cancel", headers=bearer(world["bob"])).status_code == 403
    alice_tokens = c.get("/api/v1/tokens", headers=bearer(world["alice"])).get_json()["items"]
    assert c.delete(f"/api/v1/tokens/{alice_tokens[0]['id']}", headers=bearer(world["bob"])).status_code == 404
    assert c.get("/api/v1/me", headers=bearer(world["alice"])).status_code == 200
    # an upload with Bob's token lands in Bob's team, never Alice's (team comes from the token, not the request)
    me = c.get("/api/v1/me", headers=bearer(world["bob"])).get_json()
    assert me["team"]["name"] == "Team Bob"
    # an organizer of no task is no organizer
    assert c.post(f"/api/v1/submissions/{world['sub_a']}/evaluations", headers=bearer(world["org"])).status_code == 403


def test_viewer_and_teamless_user_cannot_submit(app, settings, db, world):
    url = "/api/v1/tasks/han-oar-22/phases/validation/submissions"
    c = app.test_client()
    assert c.post(url, data=b"x" * 100).status_code == 401
    assert c.post("/tasks/han-oar-22/phases/validation/upload", data=b"x").status_code == 400  # no CSRF token
    r = c.get("/tasks/han-oar-22/submit")
    assert r.status_code == 302 and "/signin" in r.headers["Location"]
    _, loner = make_user(db, "loner")
    db.commit()
    r = c.post(url, data=b"x" * 100, headers=bearer(loner))
    assert r.status_code == 403 and "no team" in r.get_json()["error"]
    assert len(list(settings.uploads_dir.iterdir())) == 2  # only the fixtures' two: nothing was stored


def test_hidden_ground_truth_and_case_files_never_served(app, settings, world):
    org_like = sign_in(app.test_client(), "alice")
    secret = (settings.cases_dir / "test-000" / "reference.mha").read_bytes()
    probes = ["/static/../cases/test-000/reference.mha", "/static/%2e%2e/arena.db", "/cases/test-000/reference.mha",
              f"/static/{settings.cases_dir}/test-000/reference.mha", "/api/v1/cases/1", "/tasks/han-oar-22/cases",
              "/static/..%2f..%2f..%2fetc/passwd"]
    for path in probes:
        r = org_like.get(path)
        assert r.status_code in (404, 400, 308), (path, r.status_code)
        assert secret not in r.data
    # no API view names where cases lie
    body = org_like.get("/api/v1/tasks/han-oar-22").get_data(as_text=True)
    assert str(settings.cases_dir) not in body and "reference.mha" not in body
    view = org_like.get(f"/api/v1/submissions/{world['sub_a']}").get_data(as_text=True)
    assert str(settings.cases_dir) not in view and "reference_path" not in view
    # test phase: hidden per-case results and logs for the team itself
    t = org_like.get(f"/api/v1/submissions/{world['sub_t']}").get_json()
    assert "cases" not in t["evaluations"][0] and "HIDDEN-TEST-LOG" not in str(t)
    assert "test-000" not in org_like.get(f"/submissions/{world['sub_t']}").get_data(as_text=True)
    rows = org_like.get(f"/api/v1/submissions/{world['sub_t']}/results").get_json()
    assert rows["rows"] == [] and rows["hidden"] is True


def test_signin_rate_limit(world, monkeypatch):
    from arena.config import load_settings
    from arena.web import create_app

    monkeypatch.setenv("ARENA_SIGNIN_RATE", "3")
    c = create_app(load_settings()).test_client()
    token = csrf_of(c.get("/signin").get_data(as_text=True))
    codes = [c.post("/signin", data={"name": "alice", "password": f"wrong{i}", "csrf_token": token}).status_code
             for i in range(4)]
    assert codes == [401, 401, 401, 429]
    # even the right password is refused while locked out
    r = c.post("/signin", data={"name": "alice", "password": "correct horse battery", "csrf_token": token})
    assert r.status_code == 429


def test_upload_rate_limit(world, monkeypatch):
    from arena.config import load_settings
    from arena.web import create_app

    monkeypatch.setenv("ARENA_UPLOAD_RATE", "2")
    c = create_app(load_settings()).test_client()
    url = "/api/v1/tasks/han-oar-22/phases/validation/submissions"
    codes = [c.post(url, data=b"junk", headers={**bearer(world["bob"]), "Content-Type": "application/octet-stream"}
                    ).status_code for _ in range(3)]
    assert codes == [400, 400, 429]
    r = c.post(url, data=b"junk", headers=bearer(world["bob"]))
    assert "too many uploads" in r.get_json()["error"]


def test_csrf_enforced_on_every_form(app, world):
    c = sign_in(app.test_client(), "alice")
    for path, data in [("/account/team", {"action": "leave"}), ("/account/tokens", {"name": "x"}),
                       ("/signout", {}), ("/manage/tasks/han-oar-22/phases/validation", {"action": "close-now"})]:
        assert c.post(path, data=data).status_code == 400, path
        assert c.post(path, data={**data, "csrf_token": "forged"}).status_code == 400, path
    assert c.post("/tasks/han-oar-22/phases/validation/upload", data=b"x",
                  headers={"Content-Type": "application/octet-stream"}).status_code == 400
    assert c.get("/account").status_code == 200  # still signed in, still in the team
    assert "Team Alice" in c.get("/account").get_data(as_text=True)
    anon = app.test_client()
    assert anon.post("/signin", data={"name": "alice", "password": "correct horse battery"}).status_code == 400


def test_revoked_token_refused(app, db, world):
    c = app.test_client()
    items = c.get("/api/v1/tokens", headers=bearer(world["alice"])).get_json()["items"]
    assert c.delete(f"/api/v1/tokens/{items[0]['id']}", headers=bearer(world["alice"])).status_code == 200
    for path in ("/api/v1/me", f"/api/v1/submissions/{world['sub_a']}"):
        r = c.get(path, headers=bearer(world["alice"]))
        assert r.status_code == 401 and "revoked" in r.get_json()["error"]
    assert c.get(f"/submissions/{world['sub_a']}", headers=bearer(world["alice"])).status_code == 302
    r = c.post("/api/v1/tasks/han-oar-22/phases/validation/submissions", data=b"x", headers=bearer(world["alice"]))
    assert r.status_code == 401


def test_cookies_are_hardened(app, world, monkeypatch):
    c = app.test_client()
    token = csrf_of(c.get("/signin").get_data(as_text=True))
    r = c.post("/signin", data={"name": "alice", "password": "correct horse battery", "csrf_token": token})
    cookie = r.headers.get("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    monkeypatch.setenv("ARENA_SECURE_COOKIES", "1")
    from arena.config import load_settings
    from arena.web import create_app

    secure = create_app(load_settings()).test_client()
    token = csrf_of(secure.get("/signin").get_data(as_text=True))
    r = secure.post("/signin", data={"name": "alice", "password": "correct horse battery", "csrf_token": token},
                    base_url="https://localhost", headers={"Referer": "https://localhost/signin"})
    assert "Secure" in r.headers.get("Set-Cookie", "")


def test_open_redirect_refused(app, world):
    c = app.test_client()
    token = csrf_of(c.get("/signin").get_data(as_text=True))
    r = c.post("/signin?next=//evil.example/x", data={"name": "alice", "password": "correct horse battery",
                                                       "csrf_token": token})
    assert r.status_code == 302 and "evil.example" not in r.headers["Location"]
