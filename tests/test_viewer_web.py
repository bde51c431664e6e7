"""The case viewer's pages: who sees which case's pixels and which model's outputs (docs/security.md, "The case
viewer"), the slice and JSON endpoints' answers to good and bad requests."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from viewer_helpers import viewer_task
from web_helpers import sign_in

VAL = "/tasks/han-oar-22/phases/validation/cases/validation-000"
TEST = "/tasks/han-oar-22/phases/test/cases/test-000"


@pytest.fixture
def world(app, db, settings):
    task, subs = viewer_task(db, settings)
    return app, {k: s.id for k, s in subs.items()}


def _png(r):
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    assert r.mimetype == "image/png"
    return Image.open(io.BytesIO(r.data))


def test_anyone_who_may_read_the_board_sees_validation_cases_and_reference_models(world):
    app, subs = world
    c = app.test_client()
    assert c.get(VAL + "/view").status_code == 200
    _png(c.get(VAL + "/slice.png?view=coronal&i=20&window=bone"))
    img = _png(c.get(VAL + f"/slice.png?view=axial&i=6&a={subs['reference']}"))
    assert max(img.size) >= 512
    d = c.get(VAL + f"/viewer.json?a={subs['reference']}").get_json()
    assert d["geometry"]["views"]["axial"]["slices"] == 16
    (m,) = d["models"]
    assert m["reference"] and m["metrics"]["1"]["dice"] == pytest.approx(0.9) and m["metrics"]["1"]["nsd"] == 0.5
    t = c.get(VAL + f"/targets.json?a={subs['reference']}").get_json()["models"][0]["targets"]
    assert t["1"]["disagreement"]["axial"]["voxels"] > 0 and t["1"]["hd95"]["voxel"]
    assert m["worst"]["1"]["case"] in ("validation-000", "validation-001")
    # a team's own output is not for anonymous viewers, whether or not it exists
    assert c.get(VAL + f"/slice.png?a={subs['alice']}").status_code == 404
    assert c.get(VAL + "/slice.png?a=999999").status_code == 404


def test_a_participant_gets_404_for_hidden_cases_and_other_teams_outputs(world):
    app, subs = world
    alice = sign_in(app.test_client(), "alice")
    for path in (TEST + "/view", TEST + "/slice.png?view=axial&i=3", TEST + "/viewer.json", TEST + "/targets.json",
                 TEST + f"/slice.png?a={subs['alice-test']}", TEST + f"/viewer.json?a={subs['alice-test']}"):
        r = alice.get(path)
        assert r.status_code == 404, path
        assert r.mimetype != "image/png"  # never its pixels
    assert alice.get("/tasks/han-oar-22/phases/test/cases/no-such-case/slice.png").status_code == 404  # same answer
    _png(alice.get(VAL + f"/slice.png?a={subs['alice']}&b={subs['reference']}"))
    assert alice.get(VAL + f"/slice.png?a={subs['bob']}").status_code == 404
    assert alice.get(VAL + f"/viewer.json?a={subs['alice']}&b={subs['bob']}").status_code == 404
    # a submission of another phase is not shown with this phase's case
    assert alice.get(VAL + f"/slice.png?a={subs['alice-test']}").status_code == 404
    page = alice.get(VAL + "/view").get_data(as_text=True)
    assert ">#%d alpha" % subs["alice"] in page and ">#%d Reference models" % subs["reference"] in page
    assert "beta" not in page


def test_organizers_see_hidden_cases_with_any_model(world):
    app, subs = world
    org = sign_in(app.test_client(), "org")
    assert org.get(TEST + "/view").status_code == 200
    _png(org.get(TEST + f"/slice.png?view=sagittal&i=30&a={subs['alice-test']}"))
    d = org.get(TEST + f"/viewer.json?a={subs['alice-test']}").get_json()
    assert d["models"][0]["team"] == "alpha"
    _png(org.get(VAL + f"/slice.png?a={subs['bob']}&b={subs['alice']}"))


def test_a_hidden_board_hides_its_cases_from_everyone_but_organizers(world, db):
    app, subs = world
    from arena.models import Phase

    phase = db.query(Phase).filter_by(slug="validation").one()
    phase.visibility = "hidden"
    db.commit()
    assert app.test_client().get(VAL + "/slice.png").status_code == 404
    assert sign_in(app.test_client(), "alice").get(VAL + f"/slice.png?a={subs['alice']}").status_code == 404
    _png(sign_in(app.test_client(), "org").get(VAL + "/slice.png"))


def test_bad_requests_are_answered_clearly(world):
    app, _ = world
    c = app.test_client()
    r = c.get(VAL + "/slice.png?view=oblique")
    assert r.status_code == 400 and b"view" in r.data
    assert c.get(VAL + "/slice.png?window=liver").status_code == 400
    r = c.get(VAL + "/slice.png?view=axial&i=99")
    assert r.status_code == 400 and b"outside 0..15" in r.data
    assert c.get(VAL + "/slice.png?i=x").status_code == 400
    assert c.get(VAL + "/slice.png?organs=1,x").status_code == 400
    assert c.get(VAL + "/slice.png?a=-1").status_code == 404


def test_organ_toggles_change_the_drawing(world):
    app, subs = world
    c = app.test_client()
    import numpy as np

    def colours(q):
        img = np.asarray(_png(c.get(VAL + "/slice.png?view=axial&i=6" + q)))
        return {tuple(p) for p in img.reshape(-1, 3) if not (p[0] == p[1] == p[2])}  # non-grey: contours

    from arena.viewer.render import organ_colour

    assert organ_colour(1) in colours("") and organ_colour(2) in colours("")
    only2 = colours("&organs=2")
    assert organ_colour(2) in only2 and organ_colour(1) not in only2
    assert colours("&organs=") == set()


def test_the_submission_page_links_its_cases_to_the_viewer_where_it_opens(world):
    app, subs = world
    alice = sign_in(app.test_client(), "alice")
    page = alice.get(f"/submissions/{subs['alice']}").get_data(as_text=True)
    link = f"{VAL}/view?a={subs['alice']}"
    assert f'href="{link}"' in page
    assert alice.get(link).status_code == 200
    hidden = alice.get(f"/submissions/{subs['alice-test']}").get_data(as_text=True)
    assert "/view?a=" not in hidden  # the test phase's cases: no link to a page that answers 404
    org = sign_in(app.test_client(), "org").get(f"/submissions/{subs['alice-test']}").get_data(as_text=True)
    assert f'{TEST}/view?a={subs["alice-test"]}' in org


# -- pathology tiles --------------------------------------------------------------------------------
TILE_VAL = "/tasks/signet-ring-cells/phases/validation/cases/validation-000"
TILE_TEST = "/tasks/signet-ring-cells/phases/test/cases/test-000"


@pytest.fixture
def tile_world(app, db, settings):
    from viewer_helpers import tile_task

    task, subs = tile_task(db, settings)
    return app, {k: s.id for k, s in subs.items()}


def test_tiles_colour_boxes_by_the_tasks_matching_at_the_chosen_threshold(tile_world):
    import numpy as np

    from arena.viewer.tiles import FALSE_POSITIVE, HIT_PREDICTION, MISSED

    app, subs = tile_world
    alice = sign_in(app.test_client(), "alice")
    assert alice.get(TILE_VAL + f"/view?a={subs['alice']}").status_code == 200
    d = alice.get(TILE_VAL + f"/tile.json?a={subs['alice']}&p=0.5").get_json()
    n = d["counts"]["reference"]
    assert d["counts"] == {"reference": n, "hit": n - 1, "missed": 1, "predicted": n - 1, "true_positive": n - 1,
                           "false_positive": 0}
    low = alice.get(TILE_VAL + f"/tile.json?a={subs['alice']}&p=0.2").get_json()["counts"]
    assert low["false_positive"] == 1 and low["predicted"] == n  # the 0.3 box counts below 0.3 only
    img = np.asarray(_png(alice.get(TILE_VAL + f"/tile.png?a={subs['alice']}&p=0.2")))
    colours = {tuple(p) for p in img.reshape(-1, 3)}
    assert MISSED in colours and HIT_PREDICTION in colours and FALSE_POSITIVE in colours
    zoomed = _png(alice.get(TILE_VAL + f"/tile.png?a={subs['alice']}&x=0&y=0&w=50&h=50&size=400"))
    assert zoomed.size == (400, 400)
    assert alice.get(TILE_VAL + "/tile.png?p=2").status_code == 400
    assert alice.get(TILE_VAL + "/tile.png?x=0&y=0&w=0&h=5").status_code == 400


def test_tiles_follow_the_viewer_access_rules(tile_world):
    app, subs = tile_world
    alice = sign_in(app.test_client(), "alice")
    for path in (TILE_TEST + "/view", TILE_TEST + "/tile.png", TILE_TEST + f"/tile.json?a={subs['alice-test']}"):
        assert alice.get(path).status_code == 404, path
    assert alice.get(TILE_VAL + f"/tile.png?a={subs['bob']}").status_code == 404
    assert app.test_client().get(TILE_VAL + f"/tile.png?a={subs['alice']}").status_code == 404
    _png(app.test_client().get(TILE_VAL + "/tile.png"))  # the public validation tile with its reference boxes
    _png(sign_in(app.test_client(), "org").get(TILE_TEST + f"/tile.png?a={subs['alice-test']}"))
    assert app.test_client().get(TILE_VAL + "/slice.png").status_code == 404  # no CT slices of a tile



def test_the_viewer_cache_keeps_to_its_budget_setting(db, settings, monkeypatch):
    """ARENA_VIEWER_CACHE_GB bounds ARENA_HOME/viewer-cache: under a budget that holds one case's volumes,
    looking at a second case drops the first (least recently used); the default budget keeps both."""
    import shutil

    from arena.config import load_settings
    from arena.viewer import volumes
    from arena.web import create_app

    viewer_task(db, settings)
    cases = settings.home / "viewer-cache" / "cases"

    def look(app) -> dict[str, int]:
        """Open both validation cases' first slice; the cache's case folders and their sizes (bytes)."""
        shutil.rmtree(settings.home / "viewer-cache", ignore_errors=True)
        volumes.forget_open()
        c = app.test_client()
        for case in ("validation-000", "validation-001"):
            _png(c.get(f"/tasks/han-oar-22/phases/validation/cases/{case}/slice.png?view=axial&i=3"))
        volumes.wait_for_writes(30)
        return {d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in cases.iterdir()}

    assert settings.viewer_cache_bytes == 4 * 1024**3  # the default
    both = look(create_app(settings))
    assert len(both) == 2 and all(both.values()), both
    one = max(both.values())
    monkeypatch.setenv("ARENA_VIEWER_CACHE_GB", str(1.5 * one / 1024**3))
    small = load_settings()
    assert abs(small.viewer_cache_bytes - 1.5 * one) <= 1
    kept = look(create_app(small))
    assert len(kept) == 1 and sum(kept.values()) <= small.viewer_cache_bytes, (kept, both)
