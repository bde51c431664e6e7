"""Site workers, the core (arena/site, arena/web/site_api.py): tokens and their scope, the protocol's refusals,
and one real round trip of a site worker over HTTP with a tiny image."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import tarfile
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import Base, CaseResult, Evaluation, Phase, WorkerToken

REPO = Path(__file__).resolve().parents[1]
SUMS = {"image_sha256": "a" * 64, "reference_sha256": "b" * 64}


def _cli(*args: str):
    from arena.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def world(settings, db):
    """han-oar-22 with no cases; site "hospital" serves its test phase; a token for it; one validated
    submission to the test phase whose image tarball is stored (random bytes)."""
    from arena.tasks.store import upsert_task
    from arena.users import create_user

    upsert_task(db, REPO / "tasks" / "han-oar-22")
    create_user(db, "bob", team="B")
    db.commit()
    assert _cli("site", "add", "hospital").exit_code == 0
    assert _cli("site", "assign", "hospital", "han-oar-22/test").exit_code == 0
    r = _cli("site", "token", "hospital", "--phase", "han-oar-22/test")
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    return {"token": token}


def _submission(settings, db, phase: str = "test", payload: bytes = b"") -> int:
    from arena.models import User
    from arena.submissions.intake import StoredUpload, create_submission

    payload = payload or hashlib.sha256(phase.encode()).digest() * 1000
    path = settings.uploads_dir / f"{hashlib.sha256(payload).hexdigest()}.tar"
    path.write_bytes(payload)
    user = db.scalar(select(User).where(User.name == "bob"))
    sub = create_submission(db, "han-oar-22", phase, user,
                            StoredUpload(path, hashlib.sha256(payload).hexdigest(), len(payload)))
    sub.set_status(SubmissionStatus.VALIDATED)
    db.commit()
    return sub.id


def _h(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_token_cli_scope_and_revocation(settings, db, app, world):
    c = app.test_client()
    token = world["token"]
    assert token.startswith("arena-site-") and len(token) == len("arena-site-") + 43
    row = db.scalar(select(WorkerToken))
    assert row.token_sha256 == hashlib.sha256(token.encode()).hexdigest()  # only the hash is stored
    stored = [repr(r) for t in Base.metadata.sorted_tables for r in db.execute(t.select())]  # every row (audit too)
    assert stored and not any(token in r for r in stored)
    body = {"task": "han-oar-22", "phase": "test", "cases": [{"key": "c1", **SUMS}]}
    assert c.post("/api/v1/site/cases", json=body).status_code == 401  # no token
    assert c.get("/api/v1/site/images/a%00b", headers=_h(token)).status_code == 400  # the API's NUL guard
    assert c.post("/api/v1/site/cases", json=body, headers=_h("arena-site-" + "x" * 43)).status_code == 401
    r = c.post("/api/v1/site/cases", json={**body, "phase": "validation"}, headers=_h(token))
    assert r.status_code == 403 and "scope" in r.get_json()["error"]  # a stolen token used for another phase
    r = c.post("/api/v1/site/cases", json=body, headers=_h(token))
    assert r.status_code == 200 and r.get_json() == {"added": 1, "unchanged": 0}
    # a token of the same site for a phase not assigned to it cannot be issued
    r = _cli("site", "token", "hospital", "--phase", "han-oar-22/validation")
    assert r.exit_code == 2 and "not assigned to site" in r.output
    listing = _cli("site", "list").output
    assert "hospital: phases han-oar-22/test" in listing and f"token {row.id}: active" in listing
    assert _cli("site", "revoke", str(row.id)).exit_code == 0
    r = c.post("/api/v1/site/cases", json=body, headers=_h(token))
    assert r.status_code == 401 and "revoked" in r.get_json()["error"]  # revocation is immediate
    assert f"token {row.id}: revoked" in _cli("site", "list").output


def test_cases_registration_never_changes_a_known_case(settings, db, app, world):
    c = app.test_client()
    h = _h(world["token"])
    body = {"task": "han-oar-22", "phase": "test", "cases": [{"key": "c1", **SUMS}, {"key": "c2", **SUMS}]}
    assert c.post("/api/v1/site/cases", json=body, headers=h).get_json() == {"added": 2, "unchanged": 0}
    assert c.post("/api/v1/site/cases", json=body, headers=h).get_json() == {"added": 0, "unchanged": 2}
    changed = {**body, "cases": [{"key": "c3", **SUMS}, {"key": "c2", **SUMS, "image_sha256": "c" * 64}]}
    r = c.post("/api/v1/site/cases", json=changed, headers=h)
    assert r.status_code == 409 and "c2" in r.get_json()["error"]
    db.expire_all()
    phase = db.scalar(select(Phase).where(Phase.slug == "test"))
    assert [x.key for x in phase.cases] == ["c1", "c2"]  # nothing of the refused request was written (no c3)
    assert all(x.image_path == "" and x.reference_path == "" for x in phase.cases)
    assert phase.cases[1].meta["site"] == {"site": "hospital", "sha256": {"image": "a" * 64, "reference": "b" * 64}}
    r = c.post("/api/v1/site/cases", json={**body, "cases": [{"key": "../x", **SUMS}]}, headers=h)
    assert r.status_code == 400 and "key" in r.get_json()["error"]


def test_two_workers_registering_the_same_cases_at_once_both_succeed(settings, db, world):
    """Two workers of one site start together and register the same new cases: both are answered (the
    loser of the race sees the winner's rows as unchanged), never a 500 that stops a worker."""
    from arena.site import server
    from arena.site.protocol import CasesRequest

    caller = server.authenticate(settings, world["token"])
    req = CasesRequest.model_validate({"task": "han-oar-22", "phase": "test",
                                       "cases": [{"key": f"c{i:02d}", **SUMS} for i in range(40)]})
    n = 4
    gate, answers = threading.Barrier(n), []

    def register() -> None:
        gate.wait()
        try:
            answers.append(server.register_cases(settings, caller, req))
        except Exception as e:  # noqa: BLE001 - the assertion below names it
            answers.append(e)

    threads = [threading.Thread(target=register) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not isinstance(a, Exception) for a in answers), answers
    assert all(a.added + a.unchanged == 40 for a in answers), answers
    assert sum(a.added for a in answers) == 40  # each case added once, by whichever request won
    db.expire_all()
    phase = db.scalar(select(Phase).where(Phase.slug == "test"))
    assert sorted(c.key for c in phase.cases) == [f"c{i:02d}" for i in range(40)]


def _report(lease: str, status: str = "succeeded", dice: float = 0.9) -> dict:
    return {"lease": lease, "status": status, "scores": {"1": {"dsc": dice, "hd95": None}}, "error": None,
            "failure": None if status == "succeeded" else "non-zero-exit", "exit_code": 0, "runtime_s": 1.5,
            "stats": {"cpu_s": 0.5, "peak_memory_mb": 12.0}, "log_tail": "hello from the site"}


def test_claim_record_finish_and_every_refusal(settings, db, app, world):
    from arena.runner.jobs import _claim, create_evaluation

    c = app.test_client()
    h = _h(world["token"])
    body = {"task": "han-oar-22", "phase": "test", "cases": [{"key": "c1", **SUMS}, {"key": "c2", **SUMS}]}
    assert c.post("/api/v1/site/cases", json=body, headers=h).status_code == 200
    assert c.post("/api/v1/site/claim", json={"worker": "w1"}, headers=h).status_code == 204  # nothing queued
    sub_id = _submission(settings, db)
    ev_id = create_evaluation(settings, sub_id)
    db.expire_all()
    assert db.get(Evaluation, ev_id).job_id is None  # a site phase's evaluation is not put on RQ
    assert _claim(settings, ev_id, "somehost:1") == "elsewhere"  # a local worker never runs it
    r = c.post("/api/v1/site/claim", json={"worker": "w1"}, headers=h)
    assert r.status_code == 200, r.get_json()
    claim = r.get_json()
    assert claim["evaluation"] == ev_id and claim["cases"] == ["c1", "c2"] and claim["cases_total"] == 2
    assert claim["done"] == 0 and claim["task"] == "han-oar-22" and claim["spec"]["slug"] == "han-oar-22"
    lease = claim["lease"]
    db.expire_all()
    ev = db.get(Evaluation, ev_id)
    assert ev.status == EvaluationStatus.RUNNING and ev.worker == f"site:hospital:w1:{lease}"
    # the image, whole and resumed; another image is not served
    whole = c.get(claim["image"]["url"], headers=h)
    assert whole.status_code == 200 and hashlib.sha256(whole.data).hexdigest() == claim["image"]["sha256"]
    assert len(whole.data) == claim["image"]["size"]
    part = c.get(claim["image"]["url"], headers={**h, "Range": "bytes=100-"})
    assert part.status_code == 206 and part.data == whole.data[100:]
    assert c.get("/api/v1/site/images/" + "d" * 64, headers=h).status_code == 404
    # heartbeat: the lease holder only
    assert c.post(f"/api/v1/site/evaluations/{ev_id}/heartbeat", json={"lease": lease}, headers=h).get_json() == \
        {"ok": True}
    r = c.post(f"/api/v1/site/evaluations/{ev_id}/heartbeat", json={"lease": "1.nope"}, headers=h)
    assert r.status_code == 409 and "lease lost" in r.get_json()["error"]
    assert c.post(f"/api/v1/site/evaluations/{ev_id + 99}/heartbeat", json={"lease": lease},
                  headers=h).status_code == 404
    # results: once per case, from the lease holder, for keys the phase has
    url = f"/api/v1/site/evaluations/{ev_id}/cases"
    assert c.post(f"{url}/c1", json=_report("1.nope"), headers=h).status_code == 409  # wrong lease
    r = c.post(f"{url}/zz", json=_report(lease), headers=h)
    assert r.status_code == 404 and "no case 'zz'" in r.get_json()["error"]
    assert c.post(f"{url}/c1", json=_report(lease), headers=h).status_code == 201
    r = c.post(f"{url}/c1", json=_report(lease, "failed", 0.1), headers=h)  # replayed, with other scores
    assert r.status_code == 409 and "already recorded" in r.get_json()["error"]
    db.expire_all()
    rows = list(db.scalars(select(CaseResult).where(CaseResult.evaluation_id == ev_id)))
    assert len(rows) == 1 and rows[0].status.value == "succeeded" and rows[0].log_tail == "hello from the site"
    assert {(m.label, m.metric, m.value) for m in rows[0].metrics} == {(1, "dsc", 0.9), (1, "hd95", None)}
    assert rows[0].cpu_s == 0.5 and rows[0].output_path is None
    r = c.post(f"/api/v1/site/evaluations/{ev_id}/finish", json={"lease": lease, "stop": None}, headers=h)
    assert r.status_code == 409 and "c2" in r.get_json()["error"]  # not every case recorded yet
    assert c.post(f"{url}/c2", json=_report(lease, "failed", 0.0), headers=h).status_code == 201
    r = c.post(f"/api/v1/site/evaluations/{ev_id}/finish", json={"lease": lease, "stop": None}, headers=h)
    assert r.status_code == 200 and r.get_json() == {"status": "succeeded"}
    db.expire_all()
    ev = db.get(Evaluation, ev_id)
    assert ev.status == EvaluationStatus.SUCCEEDED and ev.cases_done == 2
    assert c.post(f"{url}/c2", json=_report(lease), headers=h).status_code == 409  # late: lease gone
    assert c.post(f"/api/v1/site/evaluations/{ev_id}/heartbeat", json={"lease": lease},
                  headers=h).status_code == 409
    # a token of another site (or of the same site without this phase) sees none of it
    assert _cli("site", "add", "clinic").exit_code == 0
    assert _cli("site", "assign", "clinic", "han-oar-22/validation").exit_code == 0
    other = _cli("site", "token", "clinic", "--phase", "han-oar-22/validation").stdout.strip().splitlines()[-1]
    assert c.post(f"{url}/c1", json=_report(lease), headers=_h(other)).status_code == 404
    assert c.get(claim["image"]["url"], headers=_h(other)).status_code == 404
    r = c.post("/api/v1/site/cases", json=body, headers=_h(other))
    assert r.status_code == 403


def test_a_case_registered_after_the_claim_is_run_by_a_new_claim_keeping_the_recorded_ones(settings, db, app,
                                                                                            world):
    from arena.runner.jobs import create_evaluation

    c, h = app.test_client(), _h(world["token"])
    body = {"task": "han-oar-22", "phase": "test", "cases": [{"key": "c1", **SUMS}]}
    assert c.post("/api/v1/site/cases", json=body, headers=h).status_code == 200
    ev_id = create_evaluation(settings, _submission(settings, db))
    claim = c.post("/api/v1/site/claim", json={"worker": "w1"}, headers=h).get_json()
    assert claim["cases"] == ["c1"]
    url = f"/api/v1/site/evaluations/{ev_id}"
    assert c.post(f"{url}/cases/c1", json=_report(claim["lease"]), headers=h).status_code == 201
    body["cases"].append({"key": "c2", **SUMS})  # the site adds a case while the evaluation runs
    assert c.post("/api/v1/site/cases", json=body, headers=h).status_code == 200
    r = c.post(f"{url}/finish", json={"lease": claim["lease"], "stop": None}, headers=h)
    assert r.status_code == 409 and "added to the phase since the claim (c2); re-queued" in r.get_json()["error"]
    db.expire_all()
    assert db.get(Evaluation, ev_id).status == EvaluationStatus.QUEUED
    again = c.post("/api/v1/site/claim", json={"worker": "w1"}, headers=h).get_json()
    assert again["evaluation"] == ev_id and again["cases"] == ["c2"] and again["done"] == 1
    # the site keeps adding cases, more often than MAX_REQUEUES: each time only the new case runs, and the
    # evaluation is never given up on (nobody failed)
    for n, key in enumerate(["c3", "c4", "c5"], start=2):
        assert c.post(f"{url}/cases/{again['cases'][0]}", json=_report(again["lease"]), headers=h).status_code == 201
        body["cases"].append({"key": key, **SUMS})
        assert c.post("/api/v1/site/cases", json=body, headers=h).status_code == 200
        r = c.post(f"{url}/finish", json={"lease": again["lease"], "stop": None}, headers=h)
        assert r.status_code == 409 and f"({key}); re-queued" in r.get_json()["error"], r.get_json()
        again = c.post("/api/v1/site/claim", json={"worker": "w1"}, headers=h).get_json()
        assert again["evaluation"] == ev_id and again["cases"] == [key] and again["done"] == n
    assert c.post(f"{url}/cases/c5", json=_report(again["lease"]), headers=h).status_code == 201
    r = c.post(f"{url}/finish", json={"lease": again["lease"], "stop": None}, headers=h)
    assert r.status_code == 200 and r.get_json() == {"status": "succeeded"}
    db.expire_all()
    assert [cr.case.key for cr in db.get(Evaluation, ev_id).case_results] == ["c1", "c2", "c3", "c4", "c5"]


def test_lapsed_lease_is_requeued_and_team_concurrency_holds(settings, db, app, world):
    from redis import Redis

    from arena.runner.jobs import create_evaluation
    from arena.runner.keys import heartbeat_key, suspects_key
    from arena.runner.liveness import beat

    c = app.test_client()
    h = _h(world["token"])
    body = {"task": "han-oar-22", "phase": "test", "cases": [{"key": "c1", **SUMS}]}
    assert c.post("/api/v1/site/cases", json=body, headers=h).status_code == 200
    a = create_evaluation(settings, _submission(settings, db))
    b = create_evaluation(settings, _submission(settings, db, payload=b"other" * 100))
    first = c.post("/api/v1/site/claim", json={"worker": "w1"}, headers=h).get_json()
    assert first["evaluation"] == a
    # team B already runs one evaluation (ARENA_TEAM_CONCURRENCY 1): the second waits
    assert c.post("/api/v1/site/claim", json={"worker": "w2"}, headers=h).status_code == 204
    # w1's heartbeat key vanishes (a Redis restart, or expired long ago): first only noted as missing, since a
    # live worker beats again within heartbeat_s; re-queued once it stayed missing for stale_after_s
    conn = Redis.from_url(settings.redis_url)
    conn.delete(heartbeat_key(settings, a))
    db.expire_all()
    ev = db.get(Evaluation, a)
    ev.started_at = ev.started_at.replace(year=2020)
    db.commit()
    assert c.post("/api/v1/site/claim", json={"worker": "w2"}, headers=h).status_code == 204
    db.expire_all()
    assert db.get(Evaluation, a).status == EvaluationStatus.RUNNING
    assert conn.hget(suspects_key(settings), a) is not None
    conn.hset(suspects_key(settings), a, f"{time.time() - settings.stale_after_s - 1:.3f}")
    second = c.post("/api/v1/site/claim", json={"worker": "w2"}, headers=h).get_json()
    db.expire_all()
    assert db.get(Evaluation, a).status in (EvaluationStatus.QUEUED, EvaluationStatus.RUNNING)
    assert "re-queued: site lease lapsed" in db.get(Evaluation, a).error
    assert second["evaluation"] == a and second["lease"] != first["lease"]  # the oldest goes first again
    r = c.post(f"/api/v1/site/evaluations/{a}/cases/c1", json=_report(first["lease"]), headers=h)
    assert r.status_code == 409 and "lease lost" in r.get_json()["error"]  # the old lease holder is refused
    assert db.get(Evaluation, b).status == EvaluationStatus.QUEUED
    # a heartbeat that is there but stale: by the local sweeper's rule (arena.runner.liveness.find_silent),
    # noted as silent at the next claim, re-queued once it stayed silent for stale_after_s
    db.get(Evaluation, a).started_at = db.get(Evaluation, a).started_at.replace(year=2020)
    db.commit()
    beat(conn, settings, a, db.get(Evaluation, a).worker, now=time.time() - settings.stale_after_s - 1)
    assert c.post("/api/v1/site/claim", json={"worker": "w3"}, headers=h).status_code == 204
    assert conn.hget(suspects_key(settings), a) is not None
    conn.hset(suspects_key(settings), a, f"{time.time() - settings.stale_after_s - 1:.3f}")
    third = c.post("/api/v1/site/claim", json={"worker": "w3"}, headers=h).get_json()
    assert third["evaluation"] == a and third["lease"] != second["lease"]


@pytest.fixture
def http_server(app):
    """The app under a real HTTP server on 127.0.0.1 (werkzeug, threaded), in a thread; its base URL."""

    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    t.join(timeout=10)


@pytest.mark.docker
def test_site_worker_round_trip_over_http(settings, db, world, http_server, docker_engine, tmp_path, monkeypatch):
    """A site worker (its own ARENA_HOME holding the cases; nothing but the HTTP URL and its token) claims the
    evaluation, downloads the image and the submission's model archive, runs every case with the same code
    as local workers (the model at /opt/ml/model) and reports them: each case recorded once, the evaluation
    succeeds, the board shows it, the server never saw the files."""
    import dataclasses

    from runner_helpers import build_tiny_image, save_image, tiny_images_available

    from arena.config import load_settings
    from arena.kinds import kind_for
    from arena.runner.jobs import create_evaluation
    from arena.site.worker import case_sha256, run_site_worker
    from arena.models import Submission, Task
    from arena.submissions.intake import store_model_archive
    from arena.tasks.store import spec_of
    from arena.web import create_app

    if not tiny_images_available():
        pytest.skip("no static busybox or docker CLI for the tiny images")
    site_home = tmp_path / "site-home"
    data = site_home / "site-data" / "han-oar-22" / "test"
    spec = spec_of(db.scalar(select(Task)))
    keys = ["site-a", "site-b"]
    for i, key in enumerate(keys):
        kind_for(spec).write_demo_case(spec, data, key, 500 + i, "small")
    tag = build_tiny_image("model", variant="site-core")
    archive = save_image(tag, tmp_path / "model.tar")
    sub_id = _submission(settings, db, payload=archive.read_bytes())
    model = io.BytesIO()
    with tarfile.open(fileobj=model, mode="w:gz") as tar:
        info = tarfile.TarInfo("weights.txt")
        info.size = len(b"WEIGHTS-FROM-THE-SERVER\n")
        tar.addfile(info, io.BytesIO(b"WEIGHTS-FROM-THE-SERVER\n"))
    sub = db.get(Submission, sub_id)
    sub.model_archive = store_model_archive(db, settings, sub.team, io.BytesIO(model.getvalue()))
    db.commit()
    ev_id = create_evaluation(settings, sub_id)
    site = dataclasses.replace(load_settings({"ARENA_HOME": str(site_home), "ARENA_RUN_DIR": str(tmp_path / "site-runs"),
                                              "ARENA_QUEUE": settings.queue_name + "-site"}),
                               heartbeat_s=1.0)
    said: list[str] = []
    n = run_site_worker(site, http_server, world["token"], once=True, name="w1", say=said.append)
    assert n == 1, said
    db.expire_all()
    ev = db.get(Evaluation, ev_id)
    assert ev.status == EvaluationStatus.SUCCEEDED, (ev.error, said)
    assert ev.worker.startswith("site:hospital:w1:") and ev.cases_done == 2
    rows = list(db.scalars(select(CaseResult).where(CaseResult.evaluation_id == ev_id)))
    assert sorted(r.case.key for r in rows) == keys  # each case once
    assert all(r.status.value == "succeeded" and r.metrics and r.output_path is None for r in rows)
    assert all("WEIGHTS-FROM-THE-SERVER" in r.log_tail for r in rows)  # read from /opt/ml/model at the site
    assert not list((site_home / "site-models").glob("*.tar"))  # extracted for the run, then removed
    assert all(r.case.image_path == "" and r.case.meta["site"]["sha256"]["image"] == case_sha256(data / r.case.key /
               "image.mha") for r in rows)
    board = create_app(settings).test_client().get("/api/v1/tasks/han-oar-22/leaderboard?phase=test")
    assert board.status_code == 200 and "B" in [row["team"] for row in board.get_json()["rows"]]
    # nothing of the site's cases reached the server's store; nothing is left in the site's spool
    site_sums = {case_sha256(p) for p in data.rglob("*.mha")}
    server_files = [p for p in settings.home.rglob("*") if p.is_file() and p.stat().st_size > 1000]
    assert not {case_sha256(p) for p in server_files} & site_sums
    assert not list(site.site_spool_dir.rglob("*.json"))
    assert any("case 2/2" in m for m in said) and any("succeeded" in m for m in said)


def _claimed(settings, db, url: str, token: str, payload: bytes = b""):
    """Two registered site cases and a claimed evaluation of a submission whose tarball is ``payload``."""
    from arena.runner.jobs import create_evaluation
    from arena.site.client import SiteClient

    client = SiteClient(url, token, max_pause_s=0.2)
    client.register_cases("han-oar-22", "test", [{"key": "c1", **SUMS}, {"key": "c2", **SUMS}])
    create_evaluation(settings, _submission(settings, db, payload=payload))
    return client, client.claim("w1")


def test_image_download_resumes_and_checks_its_digest(settings, db, world, http_server, tmp_path):
    import os

    from arena.site.download import download_image

    payload = os.urandom(3 * 2**20 + 17)
    client, claim = _claimed(settings, db, http_server, world["token"], payload)
    said: list[str] = []
    folder = tmp_path / "images"
    folder.mkdir()
    part = folder / f"{claim.image.sha256}.tar.part"
    part.write_bytes(payload[:2**20])  # a download broken off after 1 MiB
    path = download_image(client, claim.image, folder, say=said.append)
    assert path.read_bytes() == payload and not part.exists()
    assert any(f"resuming at {2**20} of {len(payload)}" in m for m in said)
    path.unlink()
    part.write_bytes(b"\0" * 2**20)  # a corrupt partial file: the digest catches it, the download starts over
    said.clear()
    path = download_image(client, claim.image, folder, say=said.append)
    assert path.read_bytes() == payload
    assert any("checksum mismatch" in m for m in said)


@contextlib.contextmanager
def _failing_server():
    """A real HTTP server on 127.0.0.1 that answers every request with 500 and a JSON error (a server whose
    database is away); yields its URL."""

    class Failing(http.server.BaseHTTPRequestHandler):
        def _fail(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"error": "internal error: the database is unreachable"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _fail

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_spooled_outcomes_survive_an_outage_and_are_never_counted_twice(settings, db, world, http_server, tmp_path):
    import socket

    from arena.runner.jobs import requeue_evaluation
    from arena.runner.outcome import CaseOutcome
    from arena.site.client import Refused, SiteClient
    from arena.site.worker import Spool, flush_spool, outcome_report

    client, claim = _claimed(settings, db, http_server, world["token"])
    spool = Spool(tmp_path / "spool")
    out = CaseOutcome(ok=True, exit_code=0, runtime_s=1.0, scores={1: {"dsc": 0.8, "hd95": None}},
                      stats={"cpu_s": 0.2})
    with socket.socket() as s:  # a port nothing listens on: the server is away
        s.bind(("127.0.0.1", 0))
        down = SiteClient(f"http://127.0.0.1:{s.getsockname()[1]}", world["token"], max_pause_s=0.1)
    spool.put(claim.evaluation, "c1", outcome_report(out, claim.lease))
    assert flush_spool(down, spool, claim.evaluation, 0, print) == "pending"
    assert [e[2] for e in spool.entries()] == ["c1"]  # kept
    with _failing_server() as url:  # the server answers 500 (its database away): kept too, nothing dropped
        said: list[str] = []
        assert flush_spool(SiteClient(url, world["token"]), spool, claim.evaluation, 0, said.append) == "pending"
    assert [e[2] for e in spool.entries()] == ["c1"] and "kept in the spool" in said[0]
    assert flush_spool(client, spool, claim.evaluation, 0, print) == "done"  # the server is back
    assert spool.entries() == []
    spool.put(claim.evaluation, "c1", outcome_report(out, claim.lease))  # its answer was lost: sent again
    assert flush_spool(client, spool, claim.evaluation, 0, print) == "done" and spool.entries() == []
    db.expire_all()
    assert len(db.get(Evaluation, claim.evaluation).case_results) == 1
    # the lease lapses meanwhile (re-queued): the late report is refused and dropped, the heartbeat says so
    assert requeue_evaluation(settings, claim.evaluation, "test: lease lapsed")
    spool.put(claim.evaluation, "c2", outcome_report(out, claim.lease))
    said: list[str] = []
    assert flush_spool(client, spool, claim.evaluation, 0, said.append) == "lost" and spool.entries() == []
    assert "lease lost" in said[0]
    with pytest.raises(Refused) as e:
        client.heartbeat(claim.evaluation, claim.lease)
    assert e.value.status == 409
    db.expire_all()
    assert [cr.case.key for cr in db.get(Evaluation, claim.evaluation).case_results] == ["c1"]


@pytest.mark.docker
def test_a_lost_lease_stops_the_case_in_progress(settings, db, world, http_server, docker_engine, tmp_path):
    """Cancelled on the server while a site worker runs a slow case: the next heartbeat's 409 removes the
    case's container, nothing more is recorded, and the worker goes on (here: exits, nothing left)."""
    import dataclasses

    from runner_helpers import build_tiny_image, save_image, tiny_images_available

    from arena.config import load_settings
    from arena.kinds import kind_for
    from arena.models import Task
    from arena.runner.jobs import create_evaluation
    from arena.site.worker import run_site_worker
    from arena.tasks.store import spec_of

    if not tiny_images_available():
        pytest.skip("no static busybox or docker CLI for the tiny images")
    site_home = tmp_path / "site-home"
    spec = spec_of(db.scalar(select(Task)))
    for i, key in enumerate(["slow-a", "slow-b"]):
        kind_for(spec).write_demo_case(spec, site_home / "site-data" / "han-oar-22" / "test", key, 600 + i, "small")
    tag = build_tiny_image("slow", variant="site-core-slow", env={"SLOW_S": "120"})
    sub_id = _submission(settings, db, payload=save_image(tag, tmp_path / "slow.tar").read_bytes())
    ev_id = create_evaluation(settings, sub_id)
    site = dataclasses.replace(load_settings({"ARENA_HOME": str(site_home), "ARENA_RUN_DIR": str(tmp_path / "runs"),
                                              "ARENA_QUEUE": settings.queue_name + "-site"}))
    said: list[str] = []
    t = threading.Thread(target=run_site_worker, args=(site, http_server, world["token"]),
                         kwargs={"once": True, "name": "w1", "say": said.append}, daemon=True)
    t.start()
    label = [f"arena.evaluation={ev_id}", f"arena.queue={site.queue_name}"]
    deadline = time.monotonic() + 90
    while not docker_engine.containers.list(filters={"label": label}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert docker_engine.containers.list(filters={"label": label}), ("the case never started", said)
    ev = db.get(Evaluation, ev_id)
    ev.set_status(EvaluationStatus.CANCELLED, error="cancelled by the organizer")
    db.commit()
    t.join(timeout=100)  # the next heartbeat (every 10 s) learns it; the case would have slept 120 s
    assert not t.is_alive(), said
    assert any("lease lost" in m for m in said), said
    assert not docker_engine.containers.list(all=True, filters={"label": label})
    db.expire_all()
    assert db.get(Evaluation, ev_id).case_results == []


@pytest.mark.docker
def test_site_worker_cli_needs_a_valid_token(settings, db, world, http_server, docker_engine, tmp_path,
                                             monkeypatch):
    monkeypatch.delenv("ARENA_SITE_TOKEN", raising=False)
    r = _cli("site-worker", "--server", http_server, "--once")
    assert r.exit_code == 2 and "no worker token" in r.output
    from arena.kinds import kind_for
    from arena.models import Task
    from arena.tasks.store import spec_of

    spec = spec_of(db.scalar(select(Task)))
    kind_for(spec).write_demo_case(spec, tmp_path / "data" / "han-oar-22" / "test", "c0", 700, "small")
    monkeypatch.setenv("ARENA_SITE_TOKEN", "arena-site-" + "x" * 43)  # read through arena.config
    r = _cli("site-worker", "--server", http_server, "--once", "--data", str(tmp_path / "data"))
    assert r.exit_code == 2 and "refused the worker token" in r.output  # at the first call, before any work
    r = _cli("site-worker", "--server", http_server, "--once", "--data", str(tmp_path / "data"), "--token",
             world["token"])
    assert r.exit_code == 0 and "1 case(s) registered" in r.output and "nothing left to do" in r.output
    (tmp_path / "data" / "han-oar-22" / "test" / "c1").mkdir(parents=True)  # a case folder without an image
    r = _cli("site-worker", "--server", http_server, "--once", "--data", str(tmp_path / "data"), "--token",
             world["token"])
    assert r.exit_code == 2 and "c1/: no image" in r.output


def test_a_model_archive_is_served_only_to_the_lease_holder(settings, db, app, world):
    from arena.models import Submission
    from arena.runner.jobs import create_evaluation
    from arena.submissions.intake import store_model_archive

    c = app.test_client()
    h = _h(world["token"])
    c.post("/api/v1/site/cases", json={"task": "han-oar-22", "phase": "test", "cases": [{"key": "c1", **SUMS}]},
           headers=h)
    sub_id = _submission(settings, db)
    sub = db.get(Submission, sub_id)
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        info = tarfile.TarInfo("w.bin")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    sub.model_archive = archive = store_model_archive(db, settings, sub.team, io.BytesIO(data.getvalue()))
    db.commit()
    url = f"/api/v1/site/models/{archive.sha256}"
    assert c.get(url, headers=h).status_code == 404  # no lease on it yet
    create_evaluation(settings, sub_id)
    claim = c.post("/api/v1/site/claim", json={"worker": "w1"}, headers=h).get_json()
    assert claim["model"] == {"sha256": archive.sha256, "size": len(data.getvalue()), "url": url}
    got = c.get(url, headers=h)
    assert got.status_code == 200 and got.data == data.getvalue()
    assert c.get(url, headers={**h, "Range": "bytes=5-"}).data == data.getvalue()[5:]
    assert _cli("site", "add", "clinic").exit_code == 0
    assert _cli("site", "assign", "clinic", "han-oar-22/validation").exit_code == 0
    other = _cli("site", "token", "clinic", "--phase", "han-oar-22/validation").stdout.strip().splitlines()[-1]
    assert c.get(url, headers=_h(other)).status_code == 404  # another site's token
    assert c.get("/api/v1/site/models/" + "f" * 64, headers=h).status_code == 404


def test_spool_listing_skips_an_entry_another_worker_dropped_meanwhile(tmp_path, monkeypatch):
    """Two site workers may share one ARENA_HOME: an entry the other one reports and drops between the
    listing and the read is left out, not a crash."""
    from pathlib import Path

    from arena.runner.outcome import CaseOutcome
    from arena.site.worker import Spool, outcome_report

    spool = Spool(tmp_path / "spool")
    for key in ("c1", "c2"):
        spool.put(7, key, outcome_report(CaseOutcome(ok=True, scores={1: {"dsc": 0.5}}), "1.lease"))
    real_stat = Path.stat

    def stat(self, *a, **kw):
        if self.name == "c1.json":  # the other worker drops it just now
            self.unlink(missing_ok=True)
        return real_stat(self, *a, **kw)

    monkeypatch.setattr(Path, "stat", stat)
    assert [(ev, key) for _, ev, key, _ in spool.entries(7)] == [(7, "c2")]
    assert [key for _, _, key, _ in spool.entries()] == ["c2"]


def test_a_server_error_on_a_heartbeat_does_not_give_up_the_lease():
    """A 5xx answer to a heartbeat (the server's Redis or database briefly away) is not a lost lease: the
    worker beats again; a 409 (re-queued, taken over) is."""
    from types import SimpleNamespace

    from arena.site.client import Refused
    from arena.site.worker import _Lease

    answers = [Refused(500, "Internal Server Error"), Refused(500, "Internal Server Error"),
               Refused(409, "lease lost: re-queued")]
    beats = []
    done = threading.Event()

    class Client:
        def heartbeat(self, evaluation_id, lease):
            beats.append(lease)
            if len(beats) == len(answers):
                done.set()
            raise answers[min(len(beats), len(answers)) - 1]

    said: list[str] = []
    claim = SimpleNamespace(evaluation=3, lease="1.x", heartbeat_s=0.01)
    with _Lease(Client(), claim, said.append) as lease:
        assert done.wait(10)
        assert lease.lost.wait(10)
    assert len(beats) == 3 and "re-queued" in lease.reason
    assert sum("heartbeat failed on the server" in m for m in said) == 2


def test_a_server_error_on_registering_is_sent_again_and_a_conflict_stops_the_worker(settings, db, world,
                                                                                      http_server, tmp_path,
                                                                                      monkeypatch):
    """Registering the site's cases is idempotent: a 5xx from the real server (its database failing) is sent
    again with backoff instead of ending the worker; a 409 (a case known with other files) still ends it,
    naming the phase; a 5xx to a call that is not idempotent (a claim) is answered at once."""
    from types import SimpleNamespace

    from arena.site import server, worker
    from arena.site.client import Refused, SiteClient

    image, ref = tmp_path / "c1.nii.gz", tmp_path / "c1_ref.nii.gz"
    image.write_bytes(b"image")
    ref.write_bytes(b"reference")
    cases = {("han-oar-22", "test"): {"c1": SimpleNamespace(image=image, reference=ref)}}
    real, calls = server._register_cases_once, []

    def failing_twice(*args):
        calls.append(args)
        if len(calls) <= 2:
            raise RuntimeError("the database went away")  # Flask answers 500
        return real(*args)

    monkeypatch.setattr(server, "_register_cases_once", failing_twice)
    said: list[str] = []
    client = SiteClient(http_server, world["token"], max_pause_s=0.1, say=said.append)
    worker.register_site_cases(client, cases, said.append)
    assert len(calls) == 3 and sum("registering cases: the server is unavailable (HTTP 500)" in m for m in said) == 2
    assert said[-1] == "han-oar-22/test: 1 case(s) registered (1 new, 0 unchanged)"
    db.expire_all()
    assert [c.key for c in db.scalar(select(Phase).where(Phase.slug == "test")).cases] == ["c1"]

    ref.write_bytes(b"another reference")  # the site's file changed: the server knows c1 with other sums
    with pytest.raises(worker.SiteWorkerError, match="han-oar-22/test: the server refused.*known with other files"):
        worker.register_site_cases(client, cases, said.append)
    assert len(calls) == 4  # refused once, not sent again

    monkeypatch.setattr(server, "claim", lambda *a: 1 / 0)
    with pytest.raises(Refused) as e:
        client.claim("w1")
    assert e.value.status == 500
