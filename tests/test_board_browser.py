"""The board in a real browser (headless chromium driven by Playwright) against a real server on 127.0.0.1, as a
participant: sort a column by clicking its header, scroll the organ columns sideways with the team column
still in view, open another team's entry (its summary page, not a 404), follow a per-organ cell to the entry's
cases and from there into the case viewer on that organ, and find no viewer link for a hidden test case.
Synthetic volumes with real outputs (tests/viewer_helpers.py). Screenshots go to $ARENA_SCREENSHOTS (default
/tmp/arena-screenshots) as board-sorted.png, board-scrolled.png and
entry.png."""

from __future__ import annotations

import re

import pytest

from test_browser import SHOTS, chromium  # noqa: F401  (the fixture)
from test_viewer_browser import _browser, _serve, _sign_in
from viewer_helpers import viewer_task

pytestmark = [pytest.mark.slow]


@pytest.fixture
def live_board(settings, db):
    task, subs = viewer_task(db, settings)
    evs = {k: s.evaluations[-1].id for k, s in subs.items()}  # board entries (the compare page's a and b)
    with _serve(settings) as base:
        yield base, task.slug, {k: s.id for k, s in subs.items()}, evs


def _column(page, header: str) -> list[float | None]:
    """The shown values of the board column whose header contains ``header``, top to bottom (None: "–")."""
    return page.evaluate("""(h) => {
        const t = document.querySelector('table.board');
        const col = [...t.tHead.rows[0].cells].findIndex(c => c.textContent.includes(h));
        return [...t.tBodies[0].rows].map(r => {
            const v = parseFloat(r.cells[col].textContent); return isNaN(v) ? null : v; });
    }""", header)


def test_the_board_sorts_scrolls_and_links_entries_into_the_viewer(chromium, live_board):  # noqa: F811
    from playwright.sync_api import expect

    base, slug, subs, evs = live_board
    with _browser(chromium, 800) as (page, errors):
        _sign_in(page, base, "bob")
        page.goto(f"{base}/tasks/{slug}?phase=validation")
        board = page.locator("table.board")
        expect(board).to_be_visible()

        # sort: mean dice best first, then the other way; the marker follows
        th = board.locator("thead th", has_text=re.compile(r"mean dice"))
        th.click()
        expect(th).to_have_attribute("aria-sort", "descending")
        values = _column(page, "mean dice")
        assert values == sorted(values, reverse=True) and len(values) == 8  # 3 entries, 5 published rows
        assert "▼" in th.evaluate("el => getComputedStyle(el, '::after').content")
        th.click()
        expect(th).to_have_attribute("aria-sort", "ascending")
        assert _column(page, "mean dice") == sorted(values)
        teams = board.locator("tbody td.s2")
        ours = board.locator("tbody tr:not(.published) td.s2").all_inner_texts()
        assert [t.split()[0] for t in ours] == ["beta", "alpha", "Reference"]  # Dice 0.6, 0.7, 0.9
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "board-sorted.png"), full_page=True)

        # scroll the organ columns sideways: rank, team and submission stay where they were
        scroller = page.locator(".scroll", has=board)
        before = teams.first.bounding_box()
        organ = board.locator("tbody tr").first.locator("td").nth(8)
        organ_before = organ.bounding_box()
        scrolled = scroller.evaluate("el => { el.scrollLeft = el.scrollWidth; return el.scrollLeft; }")
        assert scrolled > 200  # 22 organ columns do not fit in 1280 px
        page.wait_for_function("() => document.querySelector('.scroll').scrollLeft > 200")
        after = teams.first.bounding_box()
        box = scroller.bounding_box()
        assert abs(after["x"] - before["x"]) < 1 and after["x"] >= box["x"]
        assert organ.bounding_box()["x"] < organ_before["x"] - 200  # the organ cells did move
        centre = (after["x"] + after["width"] / 2, after["y"] + after["height"] / 2)
        on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('td').className", list(centre))
        assert "s2" in on_top  # not covered by the scrolled cells
        page.screenshot(path=str(SHOTS / "board-scrolled.png"), full_page=False)
        scroller.evaluate("el => { el.scrollLeft = 0; }")

        # another team's entry: its summary, not the submission page (which would be a 404 for bob)
        alpha = board.locator("tbody tr", has_text="alpha")
        resp_url = alpha.locator("td.s3 a").get_attribute("href")
        assert resp_url == f"/tasks/{slug}/entries/{subs['alice']}"
        with page.expect_navigation() as nav:
            alpha.locator("td.s3 a").click()
        assert nav.value is not None and nav.value.status == 200
        expect(page.locator("h1")).to_contain_text("alpha")
        expect(page.locator("#entry-summary")).to_contain_text("mean dice")
        page.go_back()

        # bob's own BrainStem Dice cell → that organ's cases → the viewer on BrainStem at its worst slice
        row = board.locator("tbody tr", has_text="beta")
        link = row.locator("td a", has_text=re.compile(r"^0\.600$")).first
        colours = link.evaluate("a => [getComputedStyle(a).color, getComputedStyle(a.closest('td')).color]")
        assert colours[0] == colours[1]  # a score's link reads like the score on its colour, not link-blue
        link.click()
        expect(page).to_have_url(re.compile(rf"/entries/{subs['bob']}\?organ=BrainStem&metric=dice"))
        cases = page.locator("#entry-cases tbody tr")
        expect(cases).to_have_count(2)
        page.screenshot(path=str(SHOTS / "entry.png"), full_page=True)
        link = cases.first.locator("a.view")
        case = cases.first.get_attribute("data-case")
        assert case.startswith("validation-")
        link.click()
        expect(page).to_have_url(re.compile(rf"/phases/validation/cases/{case}/view"))
        img = page.locator("#vw-img")
        targets = page.request.get(f"{base}/tasks/{slug}/phases/validation/cases/{case}/targets.json?a={subs['bob']}")
        worst = targets.json()["models"][0]["targets"]["1"]["disagreement"]["axial"]["index"]
        expect(img).to_have_attribute("data-shown", f"axial:{worst}")  # stepped to BrainStem's disagreement
        checked = page.locator("#vw-organs input:checked")
        expect(checked).to_have_count(1)
        assert checked.get_attribute("data-organ") == "BrainStem"

        # compare bob's entry with the reference model: each organ opens both on the case where they differ most
        page.goto(f"{base}/tasks/{slug}/compare?phase=validation&a={evs['bob']}&b={evs['reference']}&metric=dice")
        views = page.locator("td.viewer a.view")
        expect(views).to_have_count(2)  # BrainStem and Eye_L: on the other organs both score 0 on every case
        page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
        href = views.first.get_attribute("href")
        assert re.search(rf"/cases/validation-00[01]/view\?a={subs['bob']}&b={subs['reference']}&organ=1$", href)
        views.first.click()
        expect(page).to_have_url(re.compile(rf"/view\?a={subs['bob']}&b={subs['reference']}"))
        expect(page.locator("#vw-organs input:checked")).to_have_count(1)  # BrainStem alone
        expect(page.locator("#vw-scores")).to_contain_text("B · Reference models")
        expect(page.locator("#vw-img")).to_have_attribute("data-shown", re.compile(r"^axial:\d+$"))

        # the hidden test phase: the entry page shows the board's means, no case and no viewer link
        page.goto(f"{base}/tasks/{slug}?phase=test")
        page.locator("table.board tbody tr", has_text="alpha").locator("td a", has_text="0.500").first.click()
        expect(page.locator("#cases-hidden")).to_be_visible()
        assert page.locator("a.view").count() == 0 and page.locator("#entry-cases").count() == 0
        assert "test-000" not in page.content()
        assert not errors, errors
