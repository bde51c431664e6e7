"""The case viewer in a real browser (Debian's chromium, headless, driven by Playwright) against a real server on
127.0.0.1: an organizer steps slices with the keyboard, switches views, toggles an organ, switches models and
jumps to the largest disagreement; a participant gets 404 for a hidden case's page and slices. Real OpenKBP
CTs and clinical contours when the shared data is there (read in place), else synthetic volumes. The
screenshot goes to $ARENA_SCREENSHOTS (default /tmp/arena-screenshots) as viewer.png."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from test_browser import ARGS, SHOTS, chromium  # noqa: F401  (the fixture)
from viewer_helpers import viewer_task
from web_helpers import PASSWORD

pytestmark = [pytest.mark.slow]
SHARED = Path(os.environ.get("ARENA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@contextmanager
def _serve(settings):
    """The app on a free port of 127.0.0.1, in a thread; yields its base URL."""
    from werkzeug.serving import make_server

    from arena.web import create_app

    srv = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()


@contextmanager
def _browser(chromium: str, height: int):
    """A headless chromium page (throwaway profile) and the list its uncaught page errors go to."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="arena-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=ARGS, headless=True,
                                                       viewport={"width": 1280, "height": height})
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
            ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def live_viewer(settings, db):
    openkbp = SHARED / "openkbp"
    task, subs = viewer_task(db, settings, openkbp if (openkbp / "cases.json").is_file() else None)
    with _serve(settings) as base:
        yield base, task.slug, {k: s.id for k, s in subs.items()}


def _sign_in(page, base: str, name: str) -> None:
    page.goto(f"{base}/signin")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/account")


def test_the_viewer_in_a_browser(chromium, live_viewer):  # noqa: F811
    from playwright.sync_api import expect

    base, slug, subs = live_viewer
    val = f"{base}/tasks/{slug}/phases/validation/cases/validation-000"
    test = f"{base}/tasks/{slug}/phases/test/cases/test-000"
    with _browser(chromium, 900) as (page, errors):
        page.on("console", lambda m: errors.append(f"{m.text} {m.location.get('url', '')}")
                if m.type == "error" and "favicon" not in m.location.get("url", "") else None)
        _sign_in(page, base, "org")
        page.goto(f"{val}/view?a={subs['alice']}")
        img = page.locator("#vw-img")
        expect(img).to_have_attribute("data-shown", re.compile(r"^axial:\d+$"))
        start = int(img.get_attribute("data-shown").split(":")[1])
        n = int(page.locator("#vw-slider").get_attribute("max")) + 1
        assert start == n // 2
        # keyboard stepping
        page.keyboard.press("ArrowUp")
        expect(img).to_have_attribute("data-shown", f"axial:{start + 1}")
        page.keyboard.press("PageDown")
        expect(img).to_have_attribute("data-shown", f"axial:{start - 9}")
        expect(page.locator("#vw-index")).to_contain_text(f"axial {start - 8} / {n}")
        # organ toggle: the slice is asked for without that organ, its rows leave the score table
        scores = page.locator("#vw-scores tbody")
        first_organ = page.locator("#vw-organs input").first
        name = first_organ.get_attribute("data-organ")
        expect(scores).to_contain_text(name)
        first_organ.uncheck()
        expect(img).to_have_attribute("src", re.compile("organs="))
        expect(scores).not_to_contain_text(name)
        first_organ.check()
        # models: B added, then A switched to the reference model
        page.select_option("#vw-b", str(subs["bob"]))
        expect(scores).to_contain_text("B · beta")
        page.select_option("#vw-a", str(subs["reference"]))
        expect(scores).to_contain_text("A · Reference models")
        expect(img).to_have_attribute("src", re.compile(f"a={subs['reference']}&"))
        assert f"b={subs['bob']}" in img.get_attribute("src")
        # views and jump-to
        page.click("#vw-views [data-view=coronal]")
        expect(img).to_have_attribute("data-shown", re.compile("^coronal:"))
        page.locator("#vw-scores button", has_text="disagreement").first.click()
        page.click("#vw-views [data-view=axial]")
        page.locator("#vw-scores button", has_text="disagreement").first.click()
        expect(img).to_have_attribute("data-shown", re.compile("^axial:"))
        natural = img.evaluate("el => [el.naturalWidth, el.naturalHeight]")
        assert max(natural) >= 512
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "viewer.png"), full_page=False)
        assert (SHOTS / "viewer.png").stat().st_size < 400_000
        # the organizer sees the hidden test case
        r = page.request.get(f"{test}/slice.png?view=axial&i=1")
        assert r.status == 200 and r.headers["content-type"] == "image/png"
        assert not errors, errors

        # a participant: 404 for the hidden case's page and pixels; their own and the reference model only
        page.context.clear_cookies()
        _sign_in(page, base, "alice")
        resp = page.goto(f"{test}/view")
        assert resp is not None and resp.status == 404
        assert page.request.get(f"{test}/slice.png?view=axial&i=1").status == 404
        assert page.request.get(f"{test}/slice.png?a={subs['alice-test']}").status == 404
        page.goto(f"{val}/view?a={subs['alice']}")
        expect(img).to_have_attribute("data-shown", re.compile(r"^axial:\d+$"))
        mid = int(img.get_attribute("data-shown").split(":")[1])
        page.keyboard.press("ArrowDown")
        expect(img).to_have_attribute("data-shown", f"axial:{mid - 1}")
        options = page.locator("#vw-b option").all_text_contents()
        assert any("alpha" in o for o in options) and any("Reference models" in o for o in options)
        assert not any("beta" in o for o in options)
        assert page.request.get(f"{val}/slice.png?a={subs['bob']}").status == 404


@pytest.fixture
def live_tiles(settings, db):
    from viewer_helpers import tile_task

    task, subs = tile_task(db, settings)
    with _serve(settings) as base:
        yield base, {k: s.id for k, s in subs.items()}


def test_the_tile_viewer_zooms_pans_and_counts(chromium, live_tiles):  # noqa: F811
    from playwright.sync_api import expect

    base, subs = live_tiles
    val = f"{base}/tasks/signet-ring-cells/phases/validation/cases/validation-000"
    with _browser(chromium, 1000) as (page, errors):
        _sign_in(page, base, "alice")
        page.goto(f"{val}/view?a={subs['alice']}")
        img = page.locator("#tv-img")
        expect(page.locator("#tv-counts")).to_contain_text("1 missed")
        expect(img).to_have_attribute("data-region", re.compile(r"^0,0,\d+,\d+$"))
        whole = img.get_attribute("data-region").split(",")
        page.click("#tv-in")
        expect(img).not_to_have_attribute("data-region", ",".join(whole))
        x, y, w, h = (int(v) for v in img.get_attribute("data-region").split(","))
        assert w == int(whole[2]) // 2 and x == int(whole[2]) // 4
        box = page.locator(".tile-frame").bounding_box()
        page.mouse.move(box["x"] + 300, box["y"] + 300)
        page.mouse.down()
        page.mouse.move(box["x"] + 400, box["y"] + 300, steps=4)
        page.mouse.up()
        expect(img).not_to_have_attribute("data-region", f"{x},{y},{w},{h}")
        assert int(img.get_attribute("data-region").split(",")[0]) < x  # dragged right: moved left
        page.locator("#tv-p").fill("0.2")
        page.locator("#tv-p").dispatch_event("change")
        expect(page.locator("#tv-counts")).to_contain_text("1 false positive")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "viewer-tiles.png"), full_page=False)
        assert not errors, errors
