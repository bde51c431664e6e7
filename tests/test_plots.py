"""Plots that read at a glance: names cut with the full name kept as a tooltip, units on the axes, each case
drawn when there are few, penalties drawn apart; every plot the web serves renders a ``$\\sqrt{$`` team."""

from __future__ import annotations

import gzip
import html
import math
import re
from typing import get_args

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from arena.leaderboard import plots
from arena.leaderboard.statistics import bootstrap_ranks, pairwise_compare
from arena.metrics.directions import UNITS, unit
from arena.tasks.spec import MetricName
from web_helpers import make_task, make_user, sign_in

MATH_TEAM = "$\\sqrt{$"
LONG = "Deep Learning Group of the University Hospital & Radiotherapy Division <Heidelberg>"
LONG_TEAM = f"{LONG}, Germany (DKFZ)"  # 100 characters, the most a team name may have


def _scores(n_entries: int = 3, n_cases: int = 12, labels=(1, 2, 3), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(e, c, lab, m, float(v)) for e in range(n_entries) for c in range(n_cases) for lab in labels
            for m, v in (("dice", np.clip(0.7 + 0.05 * e + rng.normal(0, 0.05), 0, 1)),
                         ("hd95", abs(rng.normal(5 + e, 1.5))))]
    return pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"])


def _group(svg: str, gid: str) -> str:
    """The SVG text of the element with id ``gid`` (its <g> up to the matching </g>)."""
    start = svg.index(f'<g id="{gid}"')
    depth, i = 0, start
    for m in re.finditer(r"<(/?)g\b", svg[start:]):
        depth += -1 if m.group(1) else 1
        if depth == 0:
            i = start + m.end()
            break
    return svg[start:i]


def _boxes(fig) -> int:
    """How many boxes the figure draws."""
    return sum(len(c) for c in fig.axes[0].containers)


def _offsets(fig, gid: str) -> np.ndarray:
    """The (x, y) data positions of the markers of the scatter ``gid``."""
    return next(c for c in fig.axes[0].collections if c.get_gid() == gid).get_offsets()


def _texts_inside(fig) -> None:
    """Everything ``fig`` draws (texts included) lies inside the figure: nothing cut at an edge."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    drawn = fig.get_tightbbox(canvas.get_renderer())  # inches
    w, h = fig.get_size_inches()
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= w + 0.01 and drawn.y1 <= h + 0.01, (drawn, w, h)


def test_every_metric_has_a_unit_and_axes_say_it():
    assert set(get_args(MetricName)) <= set(UNITS), "a metric a task may name has no unit"
    assert unit("hd95") == "mm" and unit("assd") == "mm" and unit("volume_diff") == "mm³"
    scores = _scores()
    for metric, label in (("hd95", "hd95 (mm)"), ("dice", "dice (unitless, 0–1)")):
        fig = plots.boxplot_figure(scores, [0, 1], metric)
        assert fig.axes[0].get_xlabel() == label
    nsd = _scores().assign(metric=lambda d: d["metric"].replace({"dice": "nsd"}))
    assert plots.boxplot_figure(nsd, [0], "nsd").axes[0].get_xlabel() == "nsd (fraction, 0–1)"
    forest = plots.forest_plot_figure(pairwise_compare(scores, 0, 1, "hd95"))
    assert forest.axes[0].get_xlabel().startswith("hd95 difference A − B (mm)")
    assert "lower hd95 is better" in forest.axes[0].get_xlabel()
    boot = bootstrap_ranks(scores, n=50, primary="dice")
    assert plots.rank_distribution_figure(boot).axes[0].get_xlabel().startswith("rank (1 = best")
    assert plots.froc_figure({"a": ([1, 2], [0.5, 0.6])}).axes[0].get_ylabel() == "sensitivity (fraction, 0–1)"


def test_few_cases_draw_a_point_per_case():
    """n = 2: no box (quartiles of two values), a marker per case and the median; n = 12: box and points;
    more than POINTS_UP_TO: the box alone."""
    scores = _scores(n_entries=2, n_cases=12)
    two = scores[scores["case"] < 2]
    fig = plots.boxplot_figure(two, [0, 1], "dice")
    svg = plots.figure_svg(fig)
    for j in (0, 1):  # 3 organs × 2 cases, each case's marker in its organ's row (organ i at y = i)
        assert _group(svg, f"points-{j}").count("<use ") == 6
        assert sorted(np.round(_offsets(fig, f"points-{j}")[:, 1]).astype(int).tolist()) == [0, 0, 1, 1, 2, 2]
    assert _boxes(fig) == 0
    assert any(f"Fewer than {plots.MIN_BOX} cases" in t.get_text() for t in fig.axes[0].texts)
    # a NaN (excluded) value is no case: one point fewer
    excluded = two.copy()
    excluded.loc[(excluded["entry"] == 0) & (excluded["label"] == 1) & (excluded["case"] == 0), "value"] = np.nan
    assert _group(plots.boxplot_svg(excluded, [0], "dice"), "points-0").count("<use ") == 5
    fig12 = plots.boxplot_figure(scores, [0], "dice")
    assert _group(plots.figure_svg(fig12), "points-0").count("<use ") == 36 and _boxes(fig12) == 3
    many = _scores(n_entries=1, n_cases=plots.POINTS_UP_TO + 1)
    fig_many = plots.boxplot_figure(many, [0], "dice")
    assert 'id="points-' not in plots.figure_svg(fig_many) and _boxes(fig_many) == 3


def test_penalties_are_drawn_apart_and_do_not_stretch_the_axis():
    """HD95 with three missed organs (penalty 400 mm) for entry 0, label 2: the axis ends near the largest
    measured value, the penalties are one marker with their count beyond the break, and the note says so."""
    scores = _scores(n_entries=2, n_cases=12)
    hd = (scores["metric"] == "hd95") & (scores["entry"] == 0) & (scores["label"] == 2) & (scores["case"] < 3)
    scores.loc[hd, "value"] = 400.0
    scores["penalty"] = hd
    measured_max = scores.loc[(scores["metric"] == "hd95") & ~hd, "value"].max()
    fig = plots.boxplot_figure(scores, [0, 1], "hd95")
    ax = fig.axes[0]
    assert ax.get_xlim()[1] < 1.5 * measured_max  # 400 mm would flatten every box
    assert max(ax.get_xticks()) < ax.get_xlim()[1] and all(t <= measured_max * 1.1 for t in ax.get_xticks())
    svg = plots.figure_svg(fig)
    assert _group(svg, "penalties-0").count("<use ") == 1 and 'id="penalties-1"' not in svg
    x, y = _offsets(fig, "penalties-0")[0]
    assert round(y) == 1 and measured_max < x < ax.get_xlim()[1]  # in label 2's row, right of the measured values
    texts = [t.get_text() for t in ax.texts]
    assert "3" in texts and any(t.startswith("3 penalty values") and "not to scale" in t for t in texts)
    assert _group(svg, "points-0").count("<use ") == 36 - 3  # the penalties are not points
    no_pen = plots.boxplot_figure(scores.assign(penalty=False), [0, 1], "hd95")
    assert no_pen.axes[0].get_xlim()[1] > 400 and not any("penalty" in t.get_text() for t in no_pen.axes[0].texts)


def test_long_names_are_cut_with_the_full_name_as_tooltip():
    long_b = "Team with an extraordinarily long name that goes on and on and on"
    names = {0: LONG, 1: "short", 2: long_b}
    scores = _scores()
    boot = bootstrap_ranks(scores, n=50, primary="dice")
    figs = {"rank": plots.rank_distribution_figure(boot, names=names),
            "box": plots.boxplot_figure(scores, [0, 1, 2], "dice", names=names),
            "forest": plots.forest_plot_figure(pairwise_compare(scores, 0, 2, "dice"), a_name=f"{LONG} ({LONG})",
                                               b_name=long_b),
            "froc": plots.froc_figure({LONG: ([1, 2, 4], [0.3, 0.5, 0.7]), "short": ([1, 2], [0.2, 0.4])})}
    for what, fig in figs.items():
        svg = plots.figure_svg(fig)
        full = f"{LONG} ({LONG})" if what == "forest" else LONG
        titles = [html.unescape(t) for t in re.findall(r"<title>(.*?)</title>", svg)]
        assert any(full in t for t in titles), what  # kept whole, XML-escaped (& and <)
        assert "short" not in titles and "A = short" not in titles  # a name that fits gets no tooltip
        assert "…" in svg, what
        drawn = [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S)]
        assert not any(full in t for t in drawn), what  # the long name itself is never drawn whole
        _texts_inside(fig)
    rank = figs["rank"].axes[0]
    assert all(t.get_rotation() == 0 for t in rank.get_yticklabels())  # names read horizontally
    assert [t.get_text() for t in rank.get_yticklabels()] == [plots.plain(plots.shorten(names[e]))
                                                               for e in boot["entry"]]
    # the forest plot's size does not grow with the names: nothing in its title or axis depends on them
    short = plots.forest_plot_figure(pairwise_compare(scores, 0, 2, "dice"), a_name="a", b_name="b")
    assert tuple(short.get_size_inches()) == tuple(figs["forest"].get_size_inches())
    assert short.axes[0].get_xlabel() == figs["forest"].axes[0].get_xlabel()


def test_many_entries_rank_plot_fits_and_grows_downwards():
    """30 entries with long names: one row each, all inside the figure, taller not wider than with 3."""
    rng = np.random.default_rng(1)
    wide = pd.DataFrame(rng.uniform(0.5, 0.9, (30, 12)))
    boot = bootstrap_ranks(wide, n=50, higher_is_better=True)
    names = {e: f"{LONG} #{e}" for e in range(30)}
    fig = plots.rank_distribution_figure(boot, names=names, max_entries=30)
    small = plots.rank_distribution_figure(boot.iloc[:3].copy().__finalize__(boot), names=names, max_entries=3)
    assert fig.get_size_inches()[0] == small.get_size_inches()[0] <= 9.0
    assert fig.get_size_inches()[1] > small.get_size_inches()[1]
    assert len(fig.axes[0].get_yticklabels()) == 30
    _texts_inside(fig)


@pytest.fixture
def board(settings, db):
    """han-oar-22 validation with 12 cases: a ``$\\sqrt{$`` team, a team with a long name (one missed organ:
    HD95 = the case's image diagonal, a penalty) and a short one."""
    from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
    from arena.models import CaseResult, Evaluation, MetricValue, Submission
    from arena.submissions.intake import store_upload

    import io

    task = make_task(db, settings, n_cases=12)
    phase = next(p for p in task.phases if p.slug == "validation")
    diagonal = math.sqrt(3 * 4 ** 2)  # make_task's 4×4×4 references, spacing 1 mm
    rng = np.random.default_rng(0)
    teams = (("mathy", MATH_TEAM, 0.85), ("longy", LONG_TEAM, 0.7), ("bob", "Bob", 0.6))
    for k, (name, team, dice) in enumerate(teams):
        user, _ = make_user(db, name, team=team)
        upload = store_upload(io.BytesIO(f"upload {k}".encode()), settings)
        sub = Submission(task=task, phase=phase, team=user.team, user=user, label=f"$x$ net {k}",
                         status=SubmissionStatus.VALIDATED, upload_path=str(upload.path),
                         upload_sha256=upload.sha256, upload_bytes=upload.size, upload_name="image.tar")
        ev = Evaluation(submission=sub, status=EvaluationStatus.SUCCEEDED, cases_total=12, cases_done=12,
                        worker="test")
        db.add_all([sub, ev])
        for i, case in enumerate(phase.cases):
            cr = CaseResult(evaluation=ev, case=case, status=CaseStatus.SUCCEEDED, runtime_s=1.0, exit_code=0)
            missed = name == "longy" and i == 0
            cr.metrics = [MetricValue(label=lab, metric=m, value=v) for lab in (1, 2) for m, v in (
                ("dice", 0.0 if missed and lab == 1 else float(np.clip(dice + rng.normal(0, 0.05), 0, 1))),
                ("hd95", diagonal if missed and lab == 1 else float(1 + rng.uniform(0, 2))))]
            db.add(cr)
    db.commit()
    return task


def test_every_plot_the_web_serves_renders_dollar_names_and_long_names(app, board):
    """The rank plot, the distributions page (inline SVG) and its SVG file, the compare page: 200, the
    ``$\\sqrt{$`` team drawn literally, the long team cut with its full name in a <title>, units on the axes,
    the penalty drawn apart, and the compare table's Favours column filled for every organ."""
    c = sign_in(app.test_client(), "bob")
    base = "/tasks/han-oar-22"
    rank = c.get(f"{base}/rank-distribution.svg?phase=validation")
    dist_page = c.get(f"{base}/distributions?phase=validation&metric=hd95")
    compare = c.get(f"{base}/compare?phase=validation&metric=hd95")
    assert (rank.status_code, dist_page.status_code, compare.status_code) == (200, 200, 200)
    page = dist_page.get_data(as_text=True)
    src = html.unescape(re.search(r'href="([^"]*distributions\.svg[^"]*)"', page).group(1))
    dist = c.get(src)
    assert dist.status_code == 200 and dist.mimetype == "image/svg+xml"
    for what, r in (("rank plot", rank), ("distributions page", dist_page), ("distributions.svg", dist),
                    ("compare", compare)):
        text = html.unescape(r.get_data(as_text=True))
        assert MATH_TEAM in text, what  # drawn literally: the characters typed
        titles = [html.unescape(t) for t in re.findall(r"<title>(.*?)</title>", r.get_data(as_text=True))]
        assert any(LONG_TEAM in t for t in titles), what
    missing = 20 * 12 * 3  # organs 3..22 have no values: filled in with the penalty for every entry and case
    for r in (dist_page, dist):
        text = html.unescape(r.get_data(as_text=True))
        assert "hd95 (mm)" in text and re.search(r"(\d+) penalty values", text).group(1) == str(missing + 1)
        # a marker per organ with penalties: the 20 without values for all, and longy's missed BrainStem
        assert [_group(text, f"penalties-{j}").count("<use ") for j in range(3)] == [20, 21, 20]
    assert "hd95 difference A − B (mm)" in html.unescape(compare.get_data(as_text=True))
    rows = re.findall(r"<tr><td class=\"l\">(.*?)</tr>", compare.get_data(as_text=True), re.S)
    favours = [re.findall(r'<td class="l">(.*?)</td>', row, re.S)[-1] for row in rows]
    assert len(favours) == 22
    for cell in favours[:2]:  # the organs with values: always who the mean favours, significance apart
        assert re.fullmatch(r"(A|B)( \(p &lt; 0\.05, Holm\)|, n\.s\.)", cell), cell
    assert set(favours[2:]) == {"neither"}  # both entries have the same penalty in every case


def test_every_plot_function_draws_dollar_names_as_text():
    """The FROC plot has no page yet; with the others it draws a ``$\\sqrt{$`` name, a ``$x$`` organ and a
    ``$`` title literally (matplotlib math text would fail on the unbalanced ``{`` or render ``x`` in italics)."""
    scores = _scores()
    names = {0: MATH_TEAM, 1: "b", 2: "c"}
    labels = {1: "$x$ organ", 2: "y", 3: "z"}
    boot = bootstrap_ranks(scores, n=20, primary="dice")
    svgs = {"rank": plots.rank_distribution_svg(boot, names=names, title="$5 title"),
            "forest": plots.forest_plot_svg(pairwise_compare(scores, 0, 1, "dice", label_names=labels),
                                            a_name=MATH_TEAM, b_name="b", title="$5 title"),
            "box": plots.boxplot_svg(scores, [0, 1], "dice", label_names=labels, names=names, title="$5 title"),
            "froc": plots.froc_svg({MATH_TEAM: ([1, 2], [0.5, 0.6])}, title="$5 title")}
    for what, svg in svgs.items():
        drawn = [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S)]
        assert any(MATH_TEAM in t for t in drawn) and "$5 title" in drawn, what
        if what in ("forest", "box"):
            assert "$x$ organ" in drawn, what


def test_the_web_draws_each_plot_once_per_result_version(app, board, db, monkeypatch):
    """matplotlib takes ~1 s for a large board: the rank plot (loaded by every view of the task page), the
    distributions boxplot and the compare page's forest plot are drawn once per result version and choice,
    and drawn again after a change."""
    from arena.models import utcnow

    drawn: list[str] = []
    for name in ("rank_distribution_svg", "boxplot_svg", "forest_plot_svg"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name,
                            lambda *a, _real=real, _name=name, **kw: drawn.append(_name) or _real(*a, **kw))
    c = sign_in(app.test_client(), "bob")
    base = "/tasks/han-oar-22"
    urls = [f"{base}/rank-distribution.svg?phase=validation", f"{base}/distributions?phase=validation",
            f"{base}/distributions.svg?phase=validation&metric=dice&entry=1&entry=2", f"{base}/compare?phase=validation"]
    first = [c.get(u).get_data() for u in urls]
    again = [c.get(u).get_data() for u in urls]
    assert (again[0], again[2]) == (first[0], first[2])  # the SVGs as drawn (the page has its own CSRF token)
    assert drawn == ["rank_distribution_svg", "boxplot_svg", "boxplot_svg",  # the page's 4 entries, then 1 and 2
                     "forest_plot_svg"]
    rank = c.get(urls[0], headers={"Accept-Encoding": "gzip"})  # the page's <img>: gzipped, 304 once the browser has it
    assert rank.headers["Content-Encoding"] == "gzip" and gzip.decompress(rank.data) == first[0]
    assert c.get(urls[0], headers={"If-None-Match": rank.headers["ETag"]}).status_code == 304
    board.updated_at = utcnow()  # a new result version (a spec change; a finished evaluation alike)
    db.commit()
    assert [c.get(u).status_code for u in urls] == [200, 200, 200, 200]
    assert len(drawn) == 8
