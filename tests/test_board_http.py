"""The board as visitors without an account get it, pre-rendered (arena/web/board_cache.py): ETag and 304,
gzip equal to the raw body, a new result changing body and tag, signed-in visitors' own pages, and hidden or
frozen boards kept as they are through the cache."""

from __future__ import annotations

import datetime as dt
import gzip

import pytest
from sqlalchemy import create_engine, insert, select

from web_helpers import bearer, csrf_of, fake_submission, make_task, make_user, sign_in

PAGE = "/tasks/han-oar-22?phase=validation"
JSON = "/api/v1/tasks/han-oar-22/leaderboard?phase=validation"
GZIP = {"Accept-Encoding": "gzip, deflate"}


@pytest.fixture
def world(settings, db):
    from arena.web import board_cache

    board_cache.clear()
    task = make_task(db, settings)
    alice, alice_token = make_user(db, "alice", team="Team Alice")
    bob, bob_token = make_user(db, "bob", team="Team Bob")
    org, org_token = make_user(db, "org")
    task.organizers.append(org)
    fake_submission(db, settings, task, "validation", alice, dice=0.8, label="alice-v1")
    fake_submission(db, settings, task, "validation", bob, dice=0.6, label="bob-v1")
    db.commit()
    return {"task": task, "alice": alice_token, "bob": bob_token, "org": org_token}


def _phase(db, slug: str = "validation"):
    from arena.models import Phase

    db.expire_all()
    return db.scalar(select(Phase).where(Phase.slug == slug))


def _result_from_another_process(settings, label: str, dice: float) -> None:
    """A finished evaluation written the way the evaluation worker's process writes it: through a database
    connection of its own, so no session of this process commits (the cache's shortcut is not ended)."""
    from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
    from arena.models import Case, CaseResult, Evaluation, MetricValue, Phase, Submission, User, utcnow

    engine = create_engine(settings.database_url)
    try:
        with engine.begin() as c:
            phase = c.execute(select(Phase.id, Phase.task_id).where(Phase.slug == "validation")).one()
            user = c.execute(select(User.id, User.team_id).where(User.name == "bob")).one()
            sub = c.execute(insert(Submission).values(
                task_id=phase.task_id, phase_id=phase.id, team_id=user.team_id, user_id=user.id, label=label,
                status=SubmissionStatus.VALIDATED, image_id=f"sha256:{label}").returning(Submission.id)).scalar_one()
            cases = c.execute(select(Case.id).where(Case.key.like("validation-%"))).scalars().all()
            ev = c.execute(insert(Evaluation).values(
                submission_id=sub, status=EvaluationStatus.SUCCEEDED, cases_total=len(cases), cases_done=len(cases),
                finished_at=utcnow()).returning(Evaluation.id)).scalar_one()
            for case_id in cases:
                cr = c.execute(insert(CaseResult).values(evaluation_id=ev, case_id=case_id, status=CaseStatus.SUCCEEDED)
                               .returning(CaseResult.id)).scalar_one()
                c.execute(insert(MetricValue), [{"case_result_id": cr, "label": lab, "metric": m, "value": v}
                                                for lab in (1, 2) for m, v in (("dice", dice), ("hd95", 2.0))])
    finally:
        engine.dispose()


def test_etag_304_and_gzip_equal_to_the_raw_body(app, world):
    c = app.test_client()
    for url, mimetype in ((PAGE, "text/html"), (JSON, "application/json")):
        raw = c.get(url)
        assert raw.status_code == 200 and raw.mimetype == mimetype, url
        assert "Content-Encoding" not in raw.headers  # not asked for gzip: not sent gzip
        assert raw.headers["Cache-Control"] == "no-cache"  # kept, but asked again each time
        assert {"Accept-Encoding", "Cookie", "Authorization"} <= {v.strip() for v in raw.headers["Vary"].split(",")}
        assert b"alice-v1" in raw.data
        zipped = c.get(url, headers=GZIP)
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(zipped.data) == raw.data
        assert len(zipped.data) < len(raw.data)
        assert int(zipped.headers["Content-Length"]) == len(zipped.data)
        assert zipped.headers["ETag"] != raw.headers["ETag"]  # two encodings: two representations
        for tag, headers in ((raw.headers["ETag"], {}), (zipped.headers["ETag"], GZIP), (raw.headers["ETag"], GZIP)):
            again = c.get(url, headers={**headers, "If-None-Match": tag})
            assert again.status_code == 304 and again.data == b"", (url, tag)
            assert again.headers["ETag"] == (zipped.headers["ETag"] if headers else raw.headers["ETag"])
        stale = c.get(url, headers={"If-None-Match": '"not-this-one"'})
        assert stale.status_code == 200 and stale.data == raw.data
    # a second app on the same database (another gunicorn worker) renders the same bytes: the same tag
    from arena.web import board_cache, create_app

    board_cache.clear()
    other = create_app(app.config["ARENA"]).test_client().get(PAGE)
    assert other.headers["ETag"] == c.get(PAGE).headers["ETag"]


def test_a_new_result_changes_body_and_etag(app, db, settings, world, monkeypatch):
    from arena.web import board_cache

    now = [1000.0]
    monkeypatch.setattr(board_cache, "_clock", lambda: now[0])
    c = app.test_client()
    first = {url: c.get(url, headers=GZIP) for url in (PAGE, JSON)}
    _result_from_another_process(settings, "bob-late", 0.99)
    for url, r in first.items():  # within FRESH_S of the check: the checked answer, no database read
        assert c.get(url, headers=GZIP).headers["ETag"] == r.headers["ETag"], url
    now[0] += board_cache.FRESH_S
    for url, r in first.items():
        new = c.get(url, headers=GZIP)
        assert new.headers["ETag"] != r.headers["ETag"], url
        assert b"bob-late" in gzip.decompress(new.data) and b"bob-late" not in gzip.decompress(r.data), url
        assert c.get(url, headers={**GZIP, "If-None-Match": r.headers["ETag"]}).status_code == 200, url
    # a result committed by this process (the clock does not move): seen at once
    from arena.models import User

    alice = db.scalar(select(User).where(User.name == "alice"))
    before = c.get(PAGE).headers["ETag"]
    fake_submission(db, settings, db.merge(world["task"]), "validation", alice, dice=0.97, label="alice-v2")
    db.commit()
    after = c.get(PAGE)
    assert after.headers["ETag"] != before and b"alice-v2" in after.data


def test_signed_in_visitors_get_their_own_page(app, db, settings, world):
    anon = app.test_client()
    public = anon.get(PAGE).get_data(as_text=True)
    assert 'name="csrf_token"' not in public and "Sign out" not in public  # nothing of any session in it
    alice = sign_in(app.test_client(), "alice")
    bob = sign_in(app.test_client(), "bob")
    pages = {}
    for name, client in (("alice", alice), ("bob", bob), ("alice", alice)):
        r = client.get(PAGE, headers=GZIP)
        assert r.status_code == 200 and "no-store" in r.headers["Cache-Control"], name
        assert "ETag" not in r.headers and "Content-Encoding" not in r.headers, name
        pages[name] = r.get_data(as_text=True)
    assert "Team Alice" in pages["alice"] and "Your team&#39;s submissions" in pages["alice"]
    assert "Team Bob" in pages["bob"]
    assert csrf_of(pages["alice"]) != csrf_of(pages["bob"])
    menu = lambda html: html.split("</header>")[0]  # noqa: E731
    assert "alice" in menu(pages["alice"]) and "alice" not in menu(pages["bob"])
    assert "bob" not in menu(pages["alice"])
    # bob's own submissions table lists bob's submission only
    own = pages["bob"].split("Your team&#39;s submissions")[1]
    assert "bob-v1" in own and "alice-v1" not in own
    # the cached page stayed the visitors' page; a Bearer token is a user too
    assert anon.get(PAGE).get_data(as_text=True) == public
    api = app.test_client().get(JSON, headers=bearer(world["bob"]))
    assert api.status_code == 200 and "no-store" in api.headers["Cache-Control"] and "ETag" not in api.headers
    # a visitor with a message waiting (a flash) gets it, and nobody else does
    flashed = app.test_client()
    with flashed.session_transaction() as s:
        s["_flashes"] = [("message", "only-for-this-visitor")]
    assert "only-for-this-visitor" in flashed.get(PAGE).get_data(as_text=True)
    assert "only-for-this-visitor" not in anon.get(PAGE).get_data(as_text=True)


def test_hidden_board_is_not_leaked_through_the_cache(app, db, world):
    org = sign_in(app.test_client(), "org")
    anon = app.test_client()
    assert b"alice-v1" in anon.get(PAGE).data and anon.get(JSON).status_code == 200
    _phase(db).visibility = "hidden"
    db.commit()  # as the manage page does: this process sees it at once
    for _ in range(2):  # the organizer's look at the live board must not fill the visitors' cache
        assert b"alice-v1" in org.get(PAGE).data and org.get(JSON).status_code == 200
        page = anon.get(PAGE, headers=GZIP)
        assert page.status_code == 200 and b"alice-v1" not in gzip.decompress(page.data)
        assert b"is hidden" in gzip.decompress(page.data)
        assert anon.get(JSON).status_code == 404


def test_frozen_board_shows_the_snapshot_and_its_tag_ignores_new_results(app, db, settings, world, monkeypatch):
    from arena.models import utcnow
    from arena.web import board_cache

    now = [1000.0]
    monkeypatch.setattr(board_cache, "_clock", lambda: now[0])
    org = sign_in(app.test_client(), "org")
    anon = app.test_client()
    phase = _phase(db)
    phase.frozen_at = utcnow() - dt.timedelta(seconds=1)
    db.commit()
    frozen = {url: anon.get(url) for url in (PAGE, JSON)}
    assert b"frozen" in frozen[PAGE].data and b"alice-v1" in frozen[PAGE].data
    assert frozen[JSON].get_json()["frozen_at"]
    _result_from_another_process(settings, "bob-late", 0.99)
    now[0] += board_cache.FRESH_S
    for url, r in frozen.items():  # not even the tag tells a visitor that results came in during the freeze
        again = anon.get(url)
        assert again.headers["ETag"] == r.headers["ETag"] and b"bob-late" not in again.data, url
    assert b"bob-late" in org.get(PAGE).data  # organizers see the live board
    assert b"bob-late" not in anon.get(PAGE).data
    _phase(db).reveal_at = utcnow()
    db.commit()
    assert b"bob-late" in anon.get(PAGE).data
    assert any(r["label"] == "bob-late" for r in anon.get(JSON).get_json()["rows"])


def test_a_set_time_ends_a_checked_answer(app, db, world, monkeypatch):
    """A freeze or a reveal at a set time shows from that moment, however long answers are otherwise reused."""
    import arena.models
    from arena.web import board_cache

    start = arena.models.utcnow()
    clock = [1000.0]
    monkeypatch.setattr(board_cache, "FRESH_S", 3600.0)
    monkeypatch.setattr(board_cache, "_clock", lambda: clock[0])
    phase = _phase(db)
    phase.frozen_at, phase.reveal_at = start + dt.timedelta(seconds=30), start + dt.timedelta(seconds=60)
    db.commit()
    anon = app.test_client()

    def at(seconds: float):
        later = start + dt.timedelta(seconds=seconds)
        monkeypatch.setattr(arena.models, "utcnow", lambda: later)
        monkeypatch.setattr(board_cache, "utcnow", lambda: later)
        clock[0] = 1000.0 + seconds
        return anon.get(PAGE).get_data(as_text=True), anon.get(JSON).get_json()

    page, board = at(0)
    assert "Rank 95% CI" in page and "reveal on" in page and "frozen_at" not in board
    page, board = at(31)
    assert "Rank 95% CI" not in page and "frozen" in page and board.get("frozen_at")
    page, board = at(61)
    assert "Rank 95% CI" in page and "revealed" in page and "frozen_at" not in board
