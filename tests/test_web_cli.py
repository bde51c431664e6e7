"""The CLI client against a real HTTP server on 127.0.0.1: login, submit with progress, status, results."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from web_helpers import fake_submission, make_task, make_user


@pytest.fixture
def server(settings, db, monkeypatch):
    from werkzeug.serving import make_server

    from arena.web import create_app

    task = make_task(db, settings)
    alice, token = make_user(db, "alice", team="Team Alice")
    sub = fake_submission(db, settings, task, "validation", alice)
    db.commit()
    monkeypatch.setattr("arena.runner.jobs.enqueue_intake", lambda s, sid: "job")
    from arena.submissions import intake

    monkeypatch.setattr(intake, "check_archive", lambda *a, **k: None)
    srv = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}", token, sub.id
    srv.shutdown()


def test_login_submit_status_results(server, tmp_path, monkeypatch):
    from arena.cli import main

    url, token, sub_id = server
    monkeypatch.setenv("ARENA_CONFIG", str(tmp_path / "creds"))
    runner = CliRunner()
    r = runner.invoke(main, ["login", "--server", url, "--token", "arena_wrong"])
    assert r.exit_code == 2 and "401" in r.output
    r = runner.invoke(main, ["login", "--server", url, "--token", token])
    assert r.exit_code == 0 and "as alice (Team Alice)" in r.output, r.output
    creds = tmp_path / "creds"
    assert json.loads(creds.read_text()) == {"server": url, "token": token}
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    tarball = tmp_path / "image.tar.gz"
    tarball.write_bytes(b"\0" * 3_000_000)
    r = runner.invoke(main, ["submit", "--task", "han-oar-22", "--phase", "validation", "--label", "cli-v1",
                             str(tarball)])
    assert r.exit_code == 0, r.output
    assert "uploading image.tar.gz" in r.output and "queued (3.0 MB" in r.output
    r = runner.invoke(main, ["submit", "--task", "han-oar-22", "--phase", "final", str(tarball)])
    assert r.exit_code == 2 and "no phase 'final'" in r.output
    r = runner.invoke(main, ["status"])
    assert r.exit_code == 0 and "cli-v1" in r.output
    r = runner.invoke(main, ["status", str(sub_id), "--watch"])
    assert r.exit_code == 0 and "succeeded 2/2" in r.output and "validation-000" in r.output
    r = runner.invoke(main, ["results", str(sub_id), "--csv"])
    assert r.exit_code == 0 and r.output.startswith("evaluation_id,submission_id") and "BrainStem" in r.output
    r = runner.invoke(main, ["results", str(sub_id)])
    assert r.exit_code == 0 and "Eye_L" in r.output
