"""The entry summary page (arena/web/entries.py) and the board's links to it: who sees which entry, which
per-case values and which viewer links (docs/security.md, "The case viewer"); the compare page's viewer link.
Flask test client, real SQLite, synthetic volumes with real outputs (tests/viewer_helpers.py)."""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd
import pytest

from viewer_helpers import viewer_task
from web_helpers import sign_in


@pytest.fixture
def world(app, db, settings):
    task, subs = viewer_task(db, settings)
    return app, db, task, {k: s.id for k, s in subs.items()}


def _entry(slug: str, sub: int, **q) -> str:
    args = "&".join(f"{k}={v}" for k, v in q.items())
    return f"/tasks/{slug}/entries/{sub}" + (f"?{args}" if args else "")


def _ok(r) -> str:
    assert r.status_code == 200, r.get_data(as_text=True)[:400]
    return r.get_data(as_text=True)


def _viewer_links(html: str) -> list[str]:
    return re.findall(r'href="([^"]*/cases/[^"]*/view\?[^"]*)"', html.replace("&amp;", "&"))


def test_anyone_sees_another_teams_entry_with_its_board_numbers_but_not_its_submission_page(world):
    app, _, task, subs = world
    bob = sign_in(app.test_client(), "bob")
    html = _ok(bob.get(_entry(task.slug, subs["alice"])))
    assert "alpha" in html and "v1" in html
    assert "0.700" in html  # the fake submission's Dice of BrainStem and Eye_L, as on the board
    assert re.search(r"\d+ pen\.", html)  # organs alice never segmented: HD95 penalties, marked
    assert f"/submissions/{subs['alice']}\"" not in html  # that page answers 404 to bob
    assert bob.get(f"/submissions/{subs['alice']}").status_code == 404
    own = _ok(sign_in(app.test_client(), "alice").get(_entry(task.slug, subs["alice"])))
    assert f'href="/submissions/{subs["alice"]}"' in own
    org = _ok(sign_in(app.test_client(), "org").get(_entry(task.slug, subs["alice"])))
    assert f'href="/submissions/{subs["alice"]}"' in org
    anon = _ok(app.test_client().get(_entry(task.slug, subs["reference"])))  # the board is public: no account
    assert "Reference models" in anon


def test_per_case_values_worst_first_with_viewer_links_only_where_the_viewer_opens(world):
    app, db, task, subs = world
    bob = sign_in(app.test_client(), "bob")
    html = _ok(bob.get(_entry(task.slug, subs["alice"], organ="BrainStem", metric="dice")))
    assert 'id="entry-cases"' in html
    assert _viewer_links(html) == []  # alice's outputs are not bob's to see, though the case is
    alice = sign_in(app.test_client(), "alice")
    html = _ok(alice.get(_entry(task.slug, subs["alice"], organ="BrainStem", metric="dice")))
    links = _viewer_links(html)
    assert len(links) == 2 and all(f"a={subs['alice']}" in u and re.search(r"organ=1(&|$)", u) for u in links)
    assert all(alice.get(u).status_code == 200 for u in links)  # each link opens
    # the reference model's outputs are everyone's: links for an anonymous visitor too
    anon = _ok(app.test_client().get(_entry(task.slug, subs["reference"], organ="Eye_L", metric="dice")))
    assert len(_viewer_links(anon)) == 2
    # worst first: make validation-001 alice's worse BrainStem case
    from arena.models import Submission

    ev = db.get(Submission, subs["alice"]).evaluations[-1]
    for cr in ev.case_results:
        for mv in cr.metrics:
            if mv.label == 1 and mv.metric == "dice":
                mv.value = 0.2 if cr.case.key == "validation-001" else 0.9
    ev.finished_at = dt.datetime(2030, 1, 1)  # a new result version: the board is recomputed
    db.commit()
    html = _ok(alice.get(_entry(task.slug, subs["alice"], organ="BrainStem", metric="dice")))
    assert re.findall(r'data-case="([^"]+)"', html) == ["validation-001", "validation-000"]
    html = _ok(alice.get(_entry(task.slug, subs["alice"], organ="BrainStem", metric="hd95")))
    assert 'id="entry-cases"' in html
    # a missed organ's HD95 is the penalty distance: marked, and the worst
    html = _ok(alice.get(_entry(task.slug, subs["alice"], organ="Lens_L", metric="hd95")))
    assert html.count('class="penalty"') == 2


def test_a_hidden_test_phase_shows_participants_only_the_boards_aggregates(world):
    app, _, task, subs = world
    for who in ("alice", "bob"):  # its own team included: the phase hides its cases from participants
        c = sign_in(app.test_client(), who)
        html = _ok(c.get(_entry(task.slug, subs["alice-test"], organ="BrainStem", metric="dice")))
        assert 'id="cases-hidden"' in html and 'id="entry-cases"' not in html
        assert "test-000" not in html and "test-001" not in html  # no case key leaks
        assert _viewer_links(html) == []
        assert "0.500" in html  # the organ's mean, as the board shows it
    org = sign_in(app.test_client(), "org")
    html = _ok(org.get(_entry(task.slug, subs["alice-test"], organ="BrainStem", metric="dice")))
    assert re.findall(r'data-case="([^"]+)"', html) and len(_viewer_links(html)) == 2


def test_entries_not_on_a_readable_board_answer_404_like_missing_ones(world, settings):
    app, db, task, subs = world
    c = sign_in(app.test_client(), "bob")
    assert c.get(_entry(task.slug, 999999)).status_code == 404
    assert c.get(_entry("no-such-task", subs["alice"])).status_code == 404
    assert c.get(_entry(task.slug, subs["alice"], organ="Spleen")).status_code == 404
    assert c.get(_entry(task.slug, subs["alice"], metric="jaccard")).status_code == 404
    from arena.models import User
    from web_helpers import fake_submission

    failed = fake_submission(db, settings, task, "validation", db.query(User).filter_by(name="alice").one(),
                             status="failed", label="broken")
    db.commit()
    assert c.get(_entry(task.slug, failed.id)).status_code == 404  # not on the board: as if it did not exist
    assert sign_in(app.test_client(), "alice").get(_entry(task.slug, failed.id)).status_code == 404
    from arena.models import Phase

    test = db.query(Phase).filter_by(task_id=task.id, slug="test").one()
    test.visibility = "hidden"
    db.commit()
    assert c.get(_entry(task.slug, subs["alice-test"])).status_code == 404
    assert sign_in(app.test_client(), "org").get(_entry(task.slug, subs["alice-test"])).status_code == 200
    val = db.query(Phase).filter_by(task_id=task.id, slug="validation").one()
    val.frozen_at = dt.datetime(2020, 1, 1)  # frozen, not revealed: the live standings are organizers' only
    db.commit()
    assert c.get(_entry(task.slug, subs["alice"])).status_code == 404


def test_the_board_links_entries_and_organ_cells_to_entry_pages_never_to_submission_pages(world):
    app, _, task, subs = world
    html = _ok(sign_in(app.test_client(), "bob").get(f"/tasks/{task.slug}?phase=validation"))
    board = html[html.index('id="leaderboard"'):html.index("</table>")]
    assert "/submissions/" not in board
    for name in ("alice", "bob", "reference"):
        assert f'href="/tasks/{task.slug}/entries/{subs[name]}"' in board
    assert f"/tasks/{task.slug}/entries/{subs['alice']}?organ=BrainStem&amp;metric=dice" in board
    assert 'data-sort="num"' in board and "board.js" in html


def test_distance_colours_span_the_measured_values_not_the_penalties():
    from arena.web.entries import cell_colour, distance_ranges

    t = pd.DataFrame({"dice": [0.8, 0.7, 0.6, 0.9], "hd95": [2.0, 4.0, 300.0, 1.0],
                      "penalties:hd95": [0, 0, 1, 0], "badge": ["", "", "", "published"]})
    span = distance_ranges(t)
    assert span == {"hd95": (2.0, 4.0)}  # no penalty, no published row: the measured range
    assert cell_colour(2.0, "hd95", span["hd95"]) == "hsl(120, 65%, 85%)"  # best: green
    assert cell_colour(4.0, "hd95", span["hd95"]) == "hsl(0, 65%, 85%)"  # worst measured: red
    assert cell_colour(3.0, "hd95", span["hd95"]) == "hsl(60, 65%, 85%)"  # not flattened by the 300 mm penalty
    assert cell_colour(float("nan"), "hd95", span["hd95"]) is None
    # fewer than two penalty-free rows: all values span the scale
    assert distance_ranges(pd.DataFrame({"hd95": [5.0, 9.0], "penalties:hd95": [1, 1]})) == {
        "hd95": (5.0, 9.0)}
    assert cell_colour(0.25, "dice") == "hsl(30, 65%, 85%)"


def test_compare_links_the_case_where_a_and_b_differ_most_when_the_viewer_allows(world):
    app, db, task, subs = world
    from arena.models import Submission

    ev = {n: db.get(Submission, subs[n]).evaluations[-1] for n in ("alice", "reference")}
    for cr in ev["alice"].case_results:  # validation-001: alice's BrainStem far from the reference model's
        for mv in cr.metrics:
            if mv.label == 1 and mv.metric == "dice":
                mv.value = 0.1 if cr.case.key == "validation-001" else 0.85
    ev["alice"].finished_at = dt.datetime(2030, 1, 1)
    db.commit()
    url = f"/tasks/{task.slug}/compare?phase=validation&a={ev['alice'].id}&b={ev['reference'].id}&metric=dice"
    links = _viewer_links(_ok(sign_in(app.test_client(), "alice").get(url)))
    brainstem = [u for u in links if re.search(r"organ=1(&|$)", u)]
    assert len(brainstem) == 1 and "/cases/validation-001/view" in brainstem[0]
    assert not any(re.search(r"organ=3(&|$)", u) for u in links)  # Eye_R: both 0 on every case, nothing to see
    assert f"a={subs['alice']}" in brainstem[0] and f"b={subs['reference']}" in brainstem[0]
    assert _viewer_links(_ok(sign_in(app.test_client(), "bob").get(url))) == []  # alice's outputs: not bob's


def test_a_hostile_team_name_is_text_on_the_entry_page(world):
    app, db, task, subs = world
    from arena.models import Submission

    sub = db.get(Submission, subs["bob"])
    sub.team.name = '<script>alert(1)</script>'
    sub.label = '"><img src=x onerror=alert(2)>'
    db.commit()
    html = _ok(app.test_client().get(_entry(task.slug, subs["bob"], organ="BrainStem", metric="dice")))
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
