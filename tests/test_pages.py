"""Pages as participants and organizers read them (Flask test client, real SQLite, no Docker): the score
and rank at the top of a submission page under each disclosure rule, the progress line while running,
the test-phase wording, no Submit link without submissions left, the queue's error text and the audit
trail's filters and pages."""

from __future__ import annotations

import datetime as dt
import html as html_lib
import re

import pytest

from web_helpers import fake_submission, form_post, make_task, make_user, sign_in


@pytest.fixture
def world(settings, db):
    """han-oar-22 (2 cases per phase); alice's v1 (Dice 0.8) and v2 (0.5), bob's v1 (0.6) on validation."""
    task = make_task(db, settings)
    alice, _ = make_user(db, "alice", team="Team Alice")
    bob, _ = make_user(db, "bob", team="Team Bob")
    org, _ = make_user(db, "org")
    task.organizers.append(org)
    make_user(db, "root", admin=True)
    subs = {"a1": fake_submission(db, settings, task, "validation", alice, dice=0.8, label="alice-v1"),
            "a2": fake_submission(db, settings, task, "validation", alice, dice=0.5, label="alice-v2"),
            "b1": fake_submission(db, settings, task, "validation", bob, dice=0.6, label="bob-v1")}
    db.commit()
    return {"task": task, "alice": alice, "bob": bob, **{k: s.id for k, s in subs.items()}}


def _text(html: str, element_id: str) -> str:
    """The text of the element with ``element_id`` (tags dropped, spaces collapsed)."""
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</(div|p|span)>', html, re.S)
    assert m, f"no #{element_id} in the page"
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", m.group(1))).split())


def _phase(db, slug: str):
    from sqlalchemy import select

    from arena.models import Phase

    return db.scalar(select(Phase).where(Phase.slug == slug))


def _weighted(dice: float) -> str:
    """What the board shows for a fake submission: Dice ``dice`` on labels 1 and 2, 0 on han-oar-22's others,
    label-weighted."""
    from arena.tasks.spec import load_spec

    from web_helpers import REPO

    w = {k: lab.weight for k, lab in load_spec(REPO / "tasks" / "han-oar-22").labels.items()}
    return "%.3f" % (dice * (w[1] + w[2]) / sum(w.values()))


def _board_score(client, submission_id: int, phase: str = "validation") -> str:
    rows = client.get(f"/api/v1/tasks/han-oar-22/leaderboard?phase={phase}").get_json()["rows"]
    return "%.3f" % next(r["dice"] for r in rows if r.get("submission_id") == submission_id)


def test_submission_page_shows_score_and_rank_on_top(app, world):
    """The board's weighted mean Dice over the 22 organs (the fakes score 2 of them; the others count 0)."""
    alice = sign_in(app.test_client(), "alice")
    html = alice.get(f"/submissions/{world['a1']}").get_data(as_text=True)
    shown = _text(html, "standing-score")
    assert shown == _board_score(alice, world["a1"]) and 0 < float(shown) < 0.8
    assert _text(html, "standing-rank") == "#1 of 2"
    assert html.index('id="standing"') < html.index("Evaluation ")  # on top, before the evaluations
    # alice's weaker v2 is not her team's entry: its own score, scored the same way; no rank, and the note
    # names the submission that is ranked
    html = alice.get(f"/submissions/{world['a2']}").get_data(as_text=True)
    assert _text(html, "standing-score") == "%.3f" % (float(shown) * 0.5 / 0.8)
    assert _text(html, "standing-rank") == "–"
    assert f"submission {world['a1']}, ranked #1" in _text(html, "standing-note")
    bob = sign_in(app.test_client(), "bob")
    assert _text(bob.get(f"/submissions/{world['b1']}").get_data(as_text=True), "standing-rank") == "#2 of 2"


def test_the_api_and_arena_status_give_the_same_score_and_rank_as_the_page(app, settings, db, world):
    from click.testing import CliRunner

    from arena.cli import main

    alice = sign_in(app.test_client(), "alice")
    page = _text(alice.get(f"/submissions/{world['a2']}").get_data(as_text=True), "standing-score")
    st = alice.get(f"/api/v1/submissions/{world['a2']}").get_json()["standing"]
    assert "%.3f" % st["score"] == page and st["rank"] is None and st["ranked"] == 2
    assert f"submission {world['a1']}, ranked #1" in st["note"]
    st = alice.get(f"/api/v1/submissions/{world['a1']}").get_json()["standing"]
    assert (st["rank"], st["ranked"], "%.3f" % st["score"]) == (1, 2, _board_score(alice, world["a1"]))
    out = CliRunner().invoke(main, ["status", str(world["a1"])], catch_exceptions=False).output
    assert f"mean dice {_board_score(alice, world['a1'])}, rank 1 of 2" in out


def test_standing_follows_the_phase_settings(app, db, world):
    org = sign_in(app.test_client(), "org")
    alice = sign_in(app.test_client(), "alice")
    page = f"/submissions/{world['a1']}"
    # private, reveal date set: nothing before the reveal; the organizer still sees score and rank
    reveal = (dt.datetime.utcnow() + dt.timedelta(days=3)).replace(second=0, microsecond=0)
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation",
              {"action": "save", "visibility": "private", "submission_limit": "",
               "reveal_at": reveal.strftime("%Y-%m-%dT%H:%M")})
    html = alice.get(page).get_data(as_text=True)
    assert _text(html, "standing-score") == "–" and _text(html, "standing-rank") == "–"
    assert f"hidden until the reveal on {reveal:%Y-%m-%d %H:%M} UTC" in _text(html, "standing-note")
    assert _weighted(0.8) not in html
    assert _text(org.get(page).get_data(as_text=True), "standing-rank") == "#1 of 2"
    # hidden board (not private): the team sees its score (the phase shows per-case scores), not a rank
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation",
              {"action": "save", "visibility": "hidden", "submission_limit": ""})
    html = alice.get(page).get_data(as_text=True)
    assert _text(html, "standing-score") == _weighted(0.8) and _text(html, "standing-rank") == "–"
    assert "board is hidden" in _text(html, "standing-note")
    # public again, then frozen: a submission made after the freeze is not ranked yet
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation",
              {"action": "save", "visibility": "public", "submission_limit": ""})
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation", {"action": "freeze-now"})
    from sqlalchemy import select

    from arena.models import Task, User

    late = fake_submission(db, app.config["ARENA"], db.scalar(select(Task)), "validation",
                           db.scalar(select(User).where(User.name == "alice")), dice=0.95, label="alice-late")
    db.commit()
    html = alice.get(f"/submissions/{late.id}").get_data(as_text=True)
    assert _text(html, "standing-rank") == "–" and "Not ranked yet: the board is frozen" in html
    assert _text(html, "standing-score") == _weighted(0.95)  # validation shows per-case scores anyway
    html = alice.get(page).get_data(as_text=True)
    assert _text(html, "standing-rank") == "#1 of 2" and "frozen on" in _text(html, "standing-note")
    assert _text(org.get(f"/submissions/{late.id}").get_data(as_text=True), "standing-rank") == "#1 of 2"


def test_hidden_test_phase_shows_board_score_only(app, settings, db, world):
    """In a test phase (show_case_results: false) the team sees the score the board publishes, and no
    score for an entry the board does not show."""
    from sqlalchemy import select

    from arena.models import Task, User

    task = db.scalar(select(Task))
    alice = db.scalar(select(User).where(User.name == "alice"))
    best = fake_submission(db, settings, task, "test", alice, dice=0.7, label="t1")
    worse = fake_submission(db, settings, task, "test", alice, dice=0.4, label="t2")
    db.commit()
    c = sign_in(app.test_client(), "alice")
    html = c.get(f"/submissions/{best.id}").get_data(as_text=True)
    assert _text(html, "standing-score") == _weighted(0.7) and _text(html, "standing-rank") == "#1 of 1"
    assert "validation-000" not in html and "test-000" not in html
    html = c.get(f"/submissions/{worse.id}").get_data(as_text=True)
    assert _text(html, "standing-score") == "–" and "only the board shows a score" in html
    assert _weighted(0.4) not in html


def test_running_evaluation_shows_a_progress_line_not_empty_tables(app, settings, db, world):
    from sqlalchemy import select

    from arena.lifecycle import CaseStatus, EvaluationStatus
    from arena.models import CaseResult, MetricValue, Task, User

    task = db.scalar(select(Task))
    alice = db.scalar(select(User).where(User.name == "alice"))
    sub = fake_submission(db, settings, task, "validation", alice, status="running", label="running")
    db.commit()
    c = sign_in(app.test_client(), "alice")
    html = c.get(f"/submissions/{sub.id}").get_data(as_text=True)
    assert "0 of 2 cases scored so far" in html
    assert "dice per case" not in html and "<table" not in html.split('id="standing"')[1]
    assert "appear when the evaluation finishes" in _text(html, "standing-note")
    ev = sub.evaluations[0]
    cr = CaseResult(evaluation=ev, case=_phase(db, "validation").cases[0], status=CaseStatus.SUCCEEDED, runtime_s=1.0)
    cr.metrics = [MetricValue(label=1, metric="dice", value=0.9)]
    ev.cases_done, ev.status = 1, EvaluationStatus.RUNNING
    db.add(cr)
    db.commit()
    html = c.get(f"/submissions/{sub.id}").get_data(as_text=True)
    assert "1 of 2 cases scored so far" in html and "dice per case" in html and 'class="cases"' in html


def test_no_submit_link_without_submissions_left(app, db, world):
    """Alice's team has 2 validation submissions in the last 24 h: with a limit of 2 the task page offers no
    Submit link and says when the next submission is possible; the upload form cannot choose the phase."""
    org = sign_in(app.test_client(), "org")
    alice = sign_in(app.test_client(), "alice")
    html = alice.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    assert 'id="submit-link"' in html and "8 of 10 submissions left" in html
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/validation",
              {"action": "save", "visibility": "public", "submission_limit": "2"})
    html = alice.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)
    assert 'id="submit-link"' not in html and "/tasks/han-oar-22/submit" not in html
    from arena.models import Submission

    oldest = min(db.get(Submission, world[k]).created_at for k in ("a1", "a2"))
    frees = oldest + dt.timedelta(days=1)
    assert (f"0 of 2 submissions left: limit reached; the next one from {frees:%Y-%m-%d %H:%M} UTC"
            in _text(html, "quota-note"))
    page = alice.get("/tasks/han-oar-22/submit?phase=validation").get_data(as_text=True)
    assert re.search(r'<option value="validation"\s+disabled>', page)
    assert re.search(r'<option value="test" selected\s*>', page)  # the phase that still takes one
    assert f"next submission is possible from {frees:%Y-%m-%d %H:%M} UTC" in page
    # the test phase closed too: no upload form at all
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/test", {"action": "close-now"})
    page = alice.get("/tasks/han-oar-22/submit").get_data(as_text=True)
    assert 'id="upload-form"' not in page and 'id="no-submission-left"' in page
    # bob's team still has submissions left in validation
    bob = sign_in(app.test_client(), "bob")
    assert 'id="submit-link"' in bob.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True)


def test_phase_wording_says_what_teams_see(app, db, world):
    alice = sign_in(app.test_client(), "alice")
    org = sign_in(app.test_client(), "org")
    rules = _text(alice.get("/tasks/han-oar-22?phase=validation").get_data(as_text=True), "phase-rules")
    assert "shows each case's scores as it finishes, with the container's log" in rules
    assert "The board is public" in rules
    rules = _text(alice.get("/tasks/han-oar-22?phase=test").get_data(as_text=True), "phase-rules")
    assert "The cases are hidden" in rules and "no per-case scores, errors or logs" in rules
    reveal = (dt.datetime.utcnow() + dt.timedelta(days=2)).replace(second=0, microsecond=0)
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/test",
              {"action": "save", "visibility": "hidden", "submission_limit": "",
               "reveal_at": reveal.strftime("%Y-%m-%dT%H:%M")})
    html = alice.get("/tasks/han-oar-22?phase=test").get_data(as_text=True)
    assert (f"The board is hidden until the reveal on {reveal:%Y-%m-%d %H:%M} UTC, so teams see no score before then"
            in _text(html, "phase-rules"))
    assert f"reveal on {reveal:%Y-%m-%d %H:%M} UTC" in html and "revealed" not in html
    form_post(org, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/phases/test",
              {"action": "save", "visibility": "private", "submission_limit": "",
               "reveal_at": reveal.strftime("%Y-%m-%dT%H:%M")})
    page = alice.get("/tasks/han-oar-22/submit").get_data(as_text=True)
    assert f"Private phase: scores, per-case results and logs stay hidden from teams until the reveal on {reveal:%Y-%m-%d %H:%M} UTC" in page


def test_queue_shows_the_evaluation_error_in_place(app, settings, db, world):
    """The error of a failed evaluation is text in the row below it (not a tooltip); a long one opens in
    place (details), its first line shown."""
    from sqlalchemy import select

    from arena.lifecycle import EvaluationStatus
    from arena.models import Evaluation, Submission

    short = db.get(Submission, world["a2"]).evaluations[0]
    long_ = db.get(Submission, world["b1"]).evaluations[0]
    short.status, short.error, short.fault = EvaluationStatus.FAILED, "no GPU on worker gpu-7", "platform"
    long_.status, long_.fault = EvaluationStatus.FAILED, "participant"
    long_.error = "all 2 cases failed: invalid-output\n" + "\n".join(f"case validation-00{i}: geometry" for i in range(2)) \
        + "\n" + "x" * 400
    db.commit()
    org = sign_in(app.test_client(), "org")
    html = org.get("/manage/queue").get_data(as_text=True)
    row = re.search(rf'<tr class="error-row" data-error-of="{short.id}">(.*?)</tr>', html, re.S).group(1)
    assert '<span class="ev-error">no GPU on worker gpu-7</span>' in row
    row = re.search(rf'<tr class="error-row" data-error-of="{long_.id}">(.*?)</tr>', html, re.S).group(1)
    assert '<summary class="ev-error">all 2 cases failed: invalid-output</summary>' in row
    assert "x" * 400 in row and "case validation-001: geometry" in row
    assert 'title="' not in row
    ok = db.scalar(select(Evaluation).where(Evaluation.status == EvaluationStatus.SUCCEEDED))
    assert f'data-error-of="{ok.id}"' not in html


def _audit_ids(client, query: str = "") -> list[int]:
    r = client.get(f"/manage/audit{query}")
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    return [int(i) for i in re.findall(r'<tr data-event="(\d+)"', r.get_data(as_text=True))]


def test_audit_filters_and_pages_in_the_database(app, db, world):
    from arena import audit
    from sqlalchemy import func, select

    from arena.models import AuditEvent, User

    org = db.scalar(select(User).where(User.name == "org"))
    root = db.scalar(select(User).where(User.name == "root"))
    day = dt.datetime(2026, 3, 1, 12, 0)
    events = []
    for i in range(120):  # org acts on han-oar-22's phases; root on another task, every other day
        actor, target = (org, f"han-oar-22/{'validation' if i % 2 else 'test'}") if i % 3 else (root, "other-task")
        e = audit.record(db, actor, "phase.update" if i % 4 else "phase.freeze", "phase", target, i=i)
        e.at = day + dt.timedelta(days=i // 10)
        events.append(e)
    audit.record(db, root, "task.upload", "task", "han-oar-22").at = day
    db.commit()
    c = sign_in(app.test_client(), "root")
    ids = _audit_ids(c)
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)  # the newest 50
    everything = ids + _audit_ids(c, "?page=2") + _audit_ids(c, "?page=3")
    assert len(everything) == len(set(everything)) == db.scalar(select(func.count(AuditEvent.id)))
    assert "page 1 of 3" in c.get("/manage/audit").get_data(as_text=True)
    want = {e.id for e in events if e.action == "phase.freeze"}
    assert set(_audit_ids(c, "?action=phase.freeze")) == want
    assert len(_audit_ids(c, "?action=phase.")) == 50  # a kind: every phase.* event, paged
    assert set(_audit_ids(c, "?user=root&action=task.upload")) == {db.scalar(select(AuditEvent.id).where(
        AuditEvent.action == "task.upload"))}
    want = {e.id for e in events if e.target_id == "han-oar-22/test" and day + dt.timedelta(days=2) <= e.at
            < day + dt.timedelta(days=4)}
    got = _audit_ids(c, "?target=han-oar-22/test&since=2026-03-03&until=2026-03-04")
    assert set(got) == want and len(want) > 0
    # the task's slug takes its phases too; the filters travel with the page links
    html = c.get("/manage/audit?target=han-oar-22&user=org").get_data(as_text=True)
    assert "page=2" in html and "target=han-oar-22" in html.split('id="audit-pages"')[1]
    assert c.get("/manage/audit?since=March").status_code == 400
    # an organizer (not admin) sees the events of their tasks and their own, not other-task's
    o = sign_in(app.test_client(), "org")
    seen = set(_audit_ids(o, "?action=phase.") + _audit_ids(o, "?action=phase.&page=2"))
    assert seen and all(db.get(AuditEvent, i).target_id.startswith("han-oar-22") for i in seen)
    assert _audit_ids(o, "?target=other-task") == []
    # ... and a co-organizer's cancel and re-run on the task's evaluations and submissions (they name those,
    # not the task); another task's evaluation stays out
    from arena.models import Evaluation

    ev_id = db.scalar(select(Evaluation.id).where(Evaluation.submission_id == world["a1"]))
    cancel = audit.record(db, root, "evaluation.cancel", "evaluation", ev_id)
    rerun = audit.record(db, root, "evaluation.rerun", "submission", world["a1"], evaluation_id=ev_id)
    foreign = audit.record(db, root, "evaluation.cancel", "evaluation", 10_000 + ev_id)
    db.commit()
    seen = set(_audit_ids(o, "?action=evaluation."))
    assert seen == {cancel.id, rerun.id}, (seen, foreign.id)
    assert foreign.id in _audit_ids(c, "?action=evaluation.")  # the administrator sees every event
