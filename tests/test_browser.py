"""The main flows in a real browser (Debian's chromium, headless, driven by Playwright) against a real
server on 127.0.0.1, the real Docker engine, Redis and an RQ worker: sign up, create a team, upload the
example algorithm, watch it finish, find it on the board; as organizer: open a phase, re-run an
evaluation. Screenshots of the main pages go to $ARENA_SCREENSHOTS (default /tmp/arena-screenshots);
ARENA_SCREENSHOTS=docs/screenshots refreshes the sign-up, account, submit and manage-task ones in the docs.
The board, submission, queue, compare, entry and viewer screenshots in the docs show real patients and come
from scripts/screenshots.py; this test's phantom copies of them never replace those."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from web_helpers import PASSWORD, make_user

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("ARENA_SCREENSHOTS", "/tmp/arena-screenshots"))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        pytest.skip("playwright (python) not installed: pip install playwright")
    return CHROMIUM


@pytest.fixture
def live(settings, db, arena_env, redis_url):
    from werkzeug.serving import make_server

    from arena.models import utcnow
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.web import create_app

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    load_demo_cases(db, settings, task, 4, size="small")
    test = next(p for p in task.phases if p.slug == "test")
    test.closes_at = utcnow() - dt.timedelta(days=1)  # closed: the organizer opens it
    make_user(db, "organizer", admin=True)
    db.commit()
    srv = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}
    yield f"http://127.0.0.1:{srv.server_port}", env
    srv.shutdown()


def _worker(env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


#: taken on real data by scripts/screenshots.py
REAL_DATA_SHOTS = {"leaderboard", "submission", "queue", "compare", "entry", "viewer"}


def _shot(page, name: str) -> None:
    if name in REAL_DATA_SHOTS and SHOTS.resolve() == (REPO / "docs" / "screenshots").resolve():
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size < 300_000, f"{path} is larger than 300 KB"


def test_participant_and_organizer_flows(chromium, live, docker_engine, base_image, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from arena.images.build import build_image, save_image

    base, env = live
    tarball = tmp_path / "threshold-segmenter.tar.gz"
    build_image(str(REPO / "examples" / "threshold-segmenter"), "arena-test/threshold:browser", base_image)
    save_image("arena-test/threshold:browser", str(tarball))
    profile = tempfile.mkdtemp(prefix="arena-chromium-")
    workers = []
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=ARGS, headless=True,
                                                       viewport={"width": 1280, "height": 800})
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            # participant: sign up, create a team
            page.goto(f"{base}/signup")
            page.fill("#name", "alice")
            page.fill("#password", PASSWORD)
            page.fill("#password2", PASSWORD)
            _shot(page, "signup")
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/account")
            page.fill("input[name=name][placeholder='Team name']", "Team Alice")
            page.click("text=Create team")
            expect(page.locator("#team")).to_contain_text("You submit as Team Alice")
            _shot(page, "account")
            # upload the example from the browser, with the progress bar
            page.goto(f"{base}/tasks/han-oar-22/submit?phase=validation")
            page.fill("#label", "threshold-segmenter 0.1")
            page.set_input_files("#file", str(tarball))
            _shot(page, "submit")
            page.click("#upload-button")
            page.wait_for_url(f"{base}/submissions/*", timeout=120_000)
            sub_url = page.url
            workers.append(_worker(env))
            expect(page.locator("#status")).to_have_text("succeeded", timeout=600_000)  # live polling
            expect(page.locator("body")).to_contain_text("demo-000")
            _shot(page, "submission")
            page.goto(f"{base}/tasks/han-oar-22?phase=validation")
            expect(page.locator("#leaderboard")).to_contain_text("Team Alice")
            expect(page.locator("#leaderboard")).to_contain_text("threshold-segmenter 0.1")
            _shot(page, "leaderboard")
            page.click("button:has-text('Sign out')")
            # organizer: open the closed test phase, re-run the evaluation from the queue
            page.goto(f"{base}/signin")
            page.fill("#name", "organizer")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.goto(f"{base}/manage/tasks/han-oar-22")
            phase = page.locator("#phase-test")
            expect(phase.locator(".badge.closed")).to_be_visible()
            phase.locator("button:has-text('Open now')").click()
            expect(page.locator("#phase-test .badge.open")).to_be_visible()
            _shot(page, "manage-task")
            page.goto(f"{base}/manage/queue")
            page.locator("#queue button:has-text('Re-run')").first.click()
            expect(page.locator(".flash")).to_contain_text("queued (earlier results kept)")
            expect(page.locator("#queue tr[data-evaluation]")).to_have_count(2)
            workers[-1].wait(timeout=600)
            workers.append(_worker(env))
            assert workers[-1].wait(timeout=600) == 0
            page.goto(f"{base}/manage/queue?status=succeeded")
            expect(page.locator("#queue tr[data-evaluation]")).to_have_count(2)
            _shot(page, "queue")
            page.goto(sub_url)
            expect(page.locator("h2:has-text('Evaluation')")).to_have_count(2)
            ctx.close()
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def bare_server(settings, db):
    """A threaded server on 127.0.0.1 over the test's database (no task, no worker)."""
    from werkzeug.serving import make_server

    from arena.web import create_app

    srv = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_hostile_team_name_runs_no_script(chromium, bare_server, db):
    """Issue 17, finding 3: a member of the team ``x'+alert(document.domain)+'`` clicks "Leave team": the
    browser asks to confirm with the name as text and runs no script of it (no alert dialog)."""
    from playwright.sync_api import expect, sync_playwright

    hostile = "x'+alert(document.domain)+'"
    make_user(db, "mallory", team=hostile)
    db.commit()
    profile = tempfile.mkdtemp(prefix="arena-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=ARGS, headless=True)
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            dialogs = []

            def answer(dialog):
                dialogs.append((dialog.type, dialog.message))
                dialog.accept()

            page.on("dialog", answer)
            page.goto(f"{bare_server}/signin")
            page.fill("#name", "mallory")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("#team")).to_contain_text(hostile)
            page.click("button:has-text('Leave team')")
            expect(page.locator(".flash")).to_contain_text("You left the team")
            assert dialogs == [("confirm", f"Leave {hostile}?")]
            ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_over_cap_archive_is_refused_before_sending(chromium, settings, db, tmp_path):
    """Issue 16: the upload form knows the server's cap (shown as "up to 1 MB", not "up to 0 GiB") and
    refuses a larger archive in the browser with a message saying what to do; nothing reaches the server."""
    import dataclasses

    from playwright.sync_api import expect, sync_playwright
    from sqlalchemy import func, select
    from werkzeug.serving import make_server

    from arena.models import Submission
    from arena.tasks.store import upsert_task
    from arena.web import create_app

    upsert_task(db, REPO / "tasks" / "han-oar-22")
    make_user(db, "carol", team="Carol's lab")
    db.commit()
    small = dataclasses.replace(settings, max_upload_bytes=1 << 20)
    srv = make_server("127.0.0.1", 0, create_app(small), threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    big = tmp_path / "image.tar.gz"
    big.write_bytes(b"\0" * (2 << 20))
    profile = tempfile.mkdtemp(prefix="arena-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=ARGS, headless=True)
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            base = f"http://127.0.0.1:{srv.server_port}"
            page.goto(f"{base}/signin")
            page.fill("#name", "carol")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.goto(f"{base}/tasks/han-oar-22/submit")
            expect(page.locator("label[for=file]")).to_contain_text("up to 1 MB")
            page.set_input_files("#file", str(big))
            page.click("#upload-button")
            expect(page.locator("#upload-error")).to_contain_text("over this server's upload limit of 1 MB")
            expect(page.locator("#progress")).to_be_hidden()
            ctx.close()
    finally:
        srv.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    db.expire_all()
    assert db.scalar(select(func.count(Submission.id))) == 0


def test_submission_queue_and_audit_pages_at_1280(chromium, settings, db):
    """Issue 16, as a user at 1280×800: the submission page opens with the score and rank; its per-case table
    scrolls inside its box while the case column stays in view and the page itself never scrolls sideways;
    a team with no submission left gets no Submit link; the organizer reads a failed evaluation's error on
    the queue without hovering and opens the long one; the audit trail filters and pages. A running
    evaluation shows a progress line instead of empty tables, and a case scored meanwhile appears by itself."""
    from playwright.sync_api import expect, sync_playwright
    from werkzeug.serving import make_server

    from arena import audit
    from arena.lifecycle import CaseStatus
    from arena.models import CaseResult, MetricValue
    from arena.web import create_app
    from web_helpers import fake_submission, make_task

    task = make_task(db, settings, n_cases=3)
    alice, _ = make_user(db, "alice", team="Team Alice")
    bob, _ = make_user(db, "bob", team="Team Bob")
    org, _ = make_user(db, "org")
    task.organizers.append(org)
    best = fake_submission(db, settings, task, "validation", alice, dice=0.8, label="alice-v1")
    fake_submission(db, settings, task, "validation", bob, dice=0.6, label="bob-v1")
    broken = fake_submission(db, settings, task, "validation", bob, status="failed", label="bob-broken")
    broken.evaluations[0].error = "all 3 cases failed: invalid-output\n" + "output geometry differs; " * 30
    running = fake_submission(db, settings, task, "validation", alice, status="running", label="alice-running")
    next(p for p in task.phases if p.slug == "validation").submission_limit = 2
    for i in range(60):
        audit.record(db, org, "phase.update" if i % 2 else "phase.freeze", "phase", "han-oar-22/validation", i=i)
    db.commit()
    srv = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_port}"
    profile = tempfile.mkdtemp(prefix="arena-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=ARGS, headless=True,
                                                       viewport={"width": 1280, "height": 800})
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{base}/signin")
            page.fill("#name", "alice")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.goto(f"{base}/submissions/{best.id}")
            expect(page.locator("#standing-rank")).to_have_text("#1 of 2")
            assert page.locator("#standing").bounding_box()["y"] < 800  # in the first screen
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            box = page.locator(".scroll:has(table.cases) >> nth=1")
            assert box.evaluate("e => e.scrollWidth > e.clientWidth")  # 22 organs: the table scrolls in its box
            case = box.locator("td:has-text('validation-000')")
            x0 = case.bounding_box()["x"]
            assert box.evaluate("e => { e.scrollLeft = 600; return e.scrollLeft; }") > 0
            assert abs(case.bounding_box()["x"] - x0) < 1  # the case column stays put
            # while it runs: a progress line, no empty tables; a newly scored case appears without a reload by hand
            page.goto(f"{base}/submissions/{running.id}")
            expect(page.locator(".progress-line")).to_have_text(
                "0 of 3 cases scored so far; per-case results appear here as cases finish.")
            expect(page.locator("table")).to_have_count(0)
            ev = running.evaluations[0]
            cr = CaseResult(evaluation=ev, case=ev.submission.phase.cases[0], status=CaseStatus.SUCCEEDED,
                            runtime_s=2.0, metrics=[MetricValue(label=1, metric="dice", value=0.9)])
            ev.cases_done = 1
            db.add(cr)
            db.commit()
            expect(page.locator(".progress-line")).to_contain_text("1 of 3 cases scored so far", timeout=20_000)
            expect(page.locator("h3:has-text('dice per case')")).to_be_visible()
            page.goto(f"{base}/tasks/han-oar-22?phase=validation")
            expect(page.locator("#quota-note")).to_contain_text("0 of 2 submissions left: limit reached")
            expect(page.locator("a:has-text('Submit to')")).to_have_count(0)
            page.click("button:has-text('Sign out')")
            page.goto(f"{base}/signin")
            page.fill("#name", "org")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.goto(f"{base}/manage/queue")
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            summary = page.locator(f"tr[data-error-of='{broken.evaluations[0].id}'] summary")
            expect(summary).to_be_visible()
            expect(summary).to_have_text("all 3 cases failed: invalid-output")
            full = page.locator(f"tr[data-error-of='{broken.evaluations[0].id}'] pre")
            expect(full).to_be_hidden()
            summary.click()
            expect(full).to_be_visible()
            assert full.bounding_box()["x"] + full.bounding_box()["width"] <= 1280  # wrapped, not cut
            page.goto(f"{base}/manage/audit")
            expect(page.locator("#audit tr[data-event]")).to_have_count(50)
            page.select_option("select[name=action]", "phase.freeze")
            page.click("#audit-filters button[type=submit]")
            expect(page.locator("#audit tr[data-event]")).to_have_count(30)
            expect(page.locator("#audit")).not_to_contain_text("phase.update")
            page.goto(f"{base}/manage/audit")
            page.click("#audit-pages a:has-text('older')")
            expect(page.locator("#audit tr[data-event]")).to_have_count(10)
            ctx.close()
    finally:
        srv.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
