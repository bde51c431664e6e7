"""Leaderboard plots as SVG text (or PNG bytes), made with matplotlib's object API and the Agg/SVG
backends — no pyplot state, so safe in a multi-threaded web server.

- :func:`rank_distribution_svg`: bootstrap rank distribution per entry, one row per entry in board order
  (circle area = probability of each rank, bar = 95% rank interval, cross = full-data rank, P(first) on
  the right), from :func:`bootstrap_ranks`.
- :func:`forest_plot_svg`: entry A − entry B per organ (mean paired difference, t interval, Holm p),
  from :func:`pairwise_compare`.
- :func:`boxplot_svg`: per-organ horizontal boxplots across cases for selected entries, from a long score
  table; the individual cases drawn over the box when there are few, penalties drawn apart.
- :func:`froc_svg`: FROC curves of several detection entries on one plot.

Each ``*_svg`` function has a ``*_figure`` twin returning the matplotlib Figure; :func:`figure_svg`
and :func:`figure_png` render any of them. SVG output is deterministic (fixed ids, no date) and keeps
text as text. Figures are sized for a 1280 px browser window at their natural size (at most about 9 in
wide, 96 px per inch); they grow in height with the number of entries or organs instead of squeezing.

Names, labels, titles and metric names come from teams and organizers: every such string goes through
:func:`plain` before matplotlib sees it, so a ``$`` is drawn as a dollar sign and never starts math text
(a team called ``$\\sqrt{$`` once made every plot of its board fail). A name longer than
:data:`NAME_CHARS` characters is cut with "…"; the SVG keeps the full name in a ``<title>`` (the
browser's tooltip where the SVG is inline or opened by itself). Axis labels carry each metric's unit
from :data:`arena.metrics.directions.UNITS`.
"""

from __future__ import annotations

import io
from typing import Any, Iterable, Mapping, Sequence
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.cbook import boxplot_stats
from matplotlib.colors import to_rgba
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

from arena.leaderboard.ranking import _check_scores, _label_name, default_higher_is_better
from arena.leaderboard.statistics import NOT_INFORMATIVE
from arena.metrics.directions import unit

__all__ = ["MIN_BOX", "NAME_CHARS", "POINTS_UP_TO", "axis_label", "boxplot_figure", "boxplot_svg", "figure_png",
           "figure_svg", "forest_plot_figure", "forest_plot_svg", "froc_figure", "froc_svg", "plain",
           "rank_distribution_figure", "rank_distribution_svg", "shorten"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]
_PENALTY_COLOR = "#b00020"
_RC = {"svg.hashsalt": "arena", "svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False}
#: names (teams, entries) longer than this many characters are cut with "…" on plots; the SVG keeps the full name
NAME_CHARS = 34
#: boxes of at most this many cases also draw each case as a point (a box of 2 values says little by itself)
POINTS_UP_TO = 20
#: boxes need at least this many cases; fewer are drawn as their points and a median mark only
MIN_BOX = 5
#: figure attribute holding {gid: full text} for the <title> tooltips figure_svg writes
_TITLES = "_arena_titles"


def figure_svg(fig: Figure) -> str:
    """The figure as SVG text (deterministic ids, no creation date); texts cut by :func:`shorten` get a
    ``<title>`` child with their full text."""
    buf = io.StringIO()
    with rc_context(_RC):
        FigureCanvasSVG(fig)
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    for gid, full in getattr(fig, _TITLES, {}).items():
        tag = f'<g id="{gid}">'
        svg = svg.replace(tag, f"{tag}<title>{escape(full)}</title>", 1)
    return svg


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    with rc_context(_RC):
        FigureCanvasAgg(fig)
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plain(text: Any) -> str:
    """``text`` as matplotlib draws it literally: each ``$`` escaped, so no math text is parsed."""
    return str(text).replace("$", r"\$")


def shorten(text: Any, limit: int = NAME_CHARS) -> str:
    """``text`` (as str) cut to at most ``limit`` characters, the last one "…" when cut; not yet :func:`plain`."""
    s = str(text)
    return s if len(s) <= limit else s[:max(limit - 1, 1)].rstrip() + "…"


def axis_label(metric: str, what: str | None = None) -> str:
    """An axis label with the metric's unit, e.g. "hd95 (mm)", "dice (unitless, 0–1)"; ``what`` replaces
    the metric's name in front (e.g. "hd95 difference A − B"). Plain text (``$`` escaped)."""
    u = unit(metric)
    return plain(f"{what or metric} ({u})" if u else (what or metric))


def _short_names(fulls: Iterable[Any], limit: int = NAME_CHARS) -> list[str]:
    """Names as drawn: cut to ``limit`` characters (:func:`shorten`), then :func:`plain`."""
    return [plain(shorten(f, limit)) for f in fulls]


def _tooltips(fig: Figure, texts: Iterable[Text], fulls: Iterable[Any], limit: int = NAME_CHARS) -> None:
    """Give each Text whose name :func:`shorten` cuts an id, and keep its full name for the SVG's <title>."""
    titles = getattr(fig, _TITLES, None)
    if titles is None:
        titles = {}
        setattr(fig, _TITLES, titles)
    for t, full in zip(texts, fulls):
        if shorten(full, limit) != str(full):
            gid = f"arena-name-{len(titles)}"
            t.set_gid(gid)
            titles[gid] = str(full)


def _name(names: Mapping[Any, str] | None, entry: Any) -> str:
    """The display name of ``entry`` (not yet cut or escaped)."""
    return str((names or {}).get(entry, entry))


# --------------------------------------------------------------------------------------------------
# rank distribution
# --------------------------------------------------------------------------------------------------


def rank_distribution_figure(boot: pd.DataFrame, *, names: Mapping[Any, str] | None = None, max_entries: int = 25,
                             title: str | None = None) -> Figure:
    """Blob plot of a :func:`arena.leaderboard.statistics.bootstrap_ranks` table (its
    ``attrs["rank_counts"]``): one row per entry (board order from the top, the first ``max_entries``),
    rank on the x axis (1 = best), circle area ∝ P(rank), horizontal bar = the rank interval, cross =
    full-data rank; P(first) in a column on the right. Names read horizontally, cut at :data:`NAME_CHARS`."""
    counts = boot.attrs.get("rank_counts")
    if counts is None or not boot.attrs.get("n"):
        raise ValueError("boot: a bootstrap_ranks() table with n > 0 resamples (attrs['rank_counts'])")
    interval = [c for c in boot.columns if c.startswith("rank_p")]
    lo_col, hi_col = interval[0], interval[-1]
    k = min(len(boot), max_entries)
    n = int(boot.attrs["n"])
    probs = np.asarray(counts, dtype=float)[:k] / n
    rmax = int(max(boot[hi_col].iloc[:k].max(), k)) if k else 1
    level = boot.attrs.get("level", 0.95)
    tau = boot.attrs.get("kendall_tau", float("nan"))
    with rc_context(_RC):
        fig = Figure(figsize=(7.6, max(2.6, 0.27 * k + 1.7)))
        ax = fig.add_subplot()
        for i in range(k):
            ranks = np.flatnonzero(probs[i] > 0)
            ax.hlines(i, boot[lo_col].iloc[i], boot[hi_col].iloc[i], color="#555555", lw=1.2, zorder=1)
            ax.scatter(ranks + 1, np.full(ranks.size, i), s=230 * probs[i, ranks], color=_COLORS[0], alpha=0.65,
                       edgecolors="none", zorder=2)
            ax.scatter([boot["rank"].iloc[i]], [i], marker="x", color="black", s=24, lw=1.2, zorder=3)
            ax.annotate(f"{boot['p_first'].iloc[i]:.0%}", xy=(1.02, i), xycoords=("axes fraction", "data"),
                        va="center", ha="left", fontsize=8, color="#333333")
        ax.annotate("P(first)", xy=(1.02, 1.0), xycoords="axes fraction", va="bottom", ha="left", fontsize=8,
                    color="#333333")
        ax.set_yticks(range(k))
        full = [_name(names, e) for e in boot["entry"].iloc[:k]]
        _tooltips(fig, ax.set_yticklabels(_short_names(full), fontsize=8), full)
        ax.set_ylim(k - 0.4, -0.6)
        ax.set_xlim(0.4, rmax + 0.6)
        ax.xaxis.set_major_locator(MultipleLocator(1) if rmax <= 25 else MaxNLocator(integer=True))
        ax.set_xlabel("rank (1 = best; bootstrap over cases)")
        ax.set_title(plain(title) if title else "Rank distribution", fontsize=9, loc="left")
        ax.grid(axis="x", color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
        foot = (f"circle area: P(rank) over {n} resamples; bar: {level:.0%} interval\n×: rank on all cases; "
                f"board stability Kendall τ = {tau:.3f}")
        if boot.attrs.get("informative") is False:
            foot += f"\n{boot.attrs.get('n_cases', '')} cases — {NOT_INFORMATIVE}"
        ax.annotate(foot, xy=(0, 0), xycoords="axes fraction", xytext=(0, -34), textcoords="offset points",
                    va="top", ha="left", fontsize=7.5,
                    color="#b00020" if boot.attrs.get("informative") is False else "#555555")
        fig.tight_layout()
    return fig


def rank_distribution_svg(boot: pd.DataFrame, *, names: Mapping[Any, str] | None = None, max_entries: int = 25,
                          title: str | None = None) -> str:
    """SVG of :func:`rank_distribution_figure`."""
    return figure_svg(rank_distribution_figure(boot, names=names, max_entries=max_entries, title=title))


# --------------------------------------------------------------------------------------------------
# forest plot
# --------------------------------------------------------------------------------------------------


def forest_plot_figure(compare: pd.DataFrame, *, a_name: str | None = None, b_name: str | None = None,
                       title: str | None = None) -> Figure:
    """Forest plot of a :func:`arena.leaderboard.statistics.pairwise_compare` table: per organ the mean
    paired difference A − B with its interval (filled marker: Holm-significant), zero line, n and
    Holm p on the right; the axis says which side favours A and which B. The names of A and B stand on
    lines of their own above the plot, from the figure's left edge (cut at 100 characters, full name as
    tooltip), so a long name never widens the title or the axis label; ``title`` replaces the first
    header line."""
    a = str(a_name or compare.attrs.get("a", "A"))
    b = str(b_name or compare.attrs.get("b", "B"))
    metric = str(compare.attrs.get("metric", ""))
    hib = compare.attrs.get("higher_is_better", default_higher_is_better(metric) if metric else True)
    alpha = compare.attrs.get("alpha", 0.05)
    k = len(compare)
    with rc_context(_RC):
        fig = Figure(figsize=(7.4, max(2.6, 0.3 * k + 2.4)))
        ax = fig.add_subplot()
        y = np.arange(k)[::-1]
        md = compare["mean_diff"].to_numpy(dtype=float)
        lo, hi = compare["ci_low"].to_numpy(dtype=float), compare["ci_high"].to_numpy(dtype=float)
        sig = compare["significant"].to_numpy(dtype=bool)
        ax.axvline(0, color="#888888", lw=0.8)
        ax.hlines(y, np.where(np.isfinite(lo), lo, md), np.where(np.isfinite(hi), hi, md), color="#333333", lw=1.2)
        ax.scatter(md[sig], y[sig], marker="s", color=_COLORS[1], s=36, zorder=3, label=f"Holm p < {alpha:g}")
        ax.scatter(md[~sig], y[~sig], marker="s", facecolors="white", edgecolors="#333333", s=36, zorder=3,
                   label="not significant")
        ax.set_yticks(y)
        ax.set_yticklabels([plain(shorten(x, 40)) for x in compare["label_name"]])
        ax.set_ylim(-0.8, k - 0.2)
        few = ~compare["informative"].to_numpy(dtype=bool) if "informative" in compare.columns else np.zeros(k, bool)
        # n and p in columns of their own (an SVG shown in a browser collapses runs of spaces)
        for dx, head in ((0, "n"), (22, "p (Holm)")):
            ax.annotate(head, xy=(1.02, 1.0), xycoords="axes fraction", xytext=(dx, 2), textcoords="offset points",
                        va="bottom", fontsize=7.5, color="#444444")
        for yi, (n, p), f in zip(y, zip(compare["n"], compare["p_holm"]), few):
            p_text = f"{p:.2g}" if np.isfinite(p) else "–"
            for dx, text in ((0, str(n)), (22, f"{p_text}  ({NOT_INFORMATIVE})" if f else p_text)):
                ax.annotate(text, xy=(1.02, yi), xycoords=("axes fraction", "data"), xytext=(dx, 0),
                            textcoords="offset points", va="center", fontsize=7.5, color="#444444")
        right, left = ("A", "B") if hib else ("B", "A")
        level = compare.attrs.get("level", 0.95)
        better = f"{'higher' if hib else 'lower'} {plain(metric)} is better"
        ax.set_xlabel(axis_label(metric, f"{metric} difference A − B") + f", mean and {level:.0%} CI\n"
                      f"← favours {left} | favours {right} → ({better})")
        head = title or f"{metric}: A − B per organ, paired by case; Wilcoxon signed-rank, Holm-corrected"
        full = [head, f"A = {a}", f"B = {b}"]
        header = [ax.annotate(text, xy=(0.015, 1), xycoords=("figure fraction", "axes fraction"),
                              xytext=(0, 52 - 14 * i), textcoords="offset points", va="bottom",
                              fontsize=9 if i == 0 else 8.5, color="black" if i == 0 else "#222222")
                  for i, text in enumerate(_short_names(full, 100))]
        _tooltips(fig, header, full, 100)
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False, fontsize=7.5,
                  borderaxespad=0.1)
        ax.grid(axis="x", color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
        fig.tight_layout()
    return fig


def forest_plot_svg(compare: pd.DataFrame, *, a_name: str | None = None, b_name: str | None = None,
                    title: str | None = None) -> str:
    """SVG of :func:`forest_plot_figure`."""
    return figure_svg(forest_plot_figure(compare, a_name=a_name, b_name=b_name, title=title))


# --------------------------------------------------------------------------------------------------
# boxplots
# --------------------------------------------------------------------------------------------------


def boxplot_figure(scores: pd.DataFrame, entries: Sequence[Any], metric: str, *,
                   labels: Sequence[Any] | None = None, label_names: Mapping[Any, str] | None = None,
                   names: Mapping[Any, str] | None = None, title: str | None = None) -> Figure:
    """Per-organ horizontal boxplots of ``metric`` across cases: one row group per organ (``labels``
    order, top down), one box per selected entry in it (NaN values, i.e. excluded, left out; whiskers
    1.5 IQR). A box of at most :data:`POINTS_UP_TO` cases also draws every case as a jittered point
    (SVG group ``points-<entry index>``, one marker per case); larger boxes draw outliers.
    Fewer than :data:`MIN_BOX` cases (quartiles of 2 values mean nothing) draw no box: the points and a
    median mark.

    Penalties are not measurements: rows flagged in a boolean ``penalty`` column of ``scores`` (e.g. a
    missed organ's HD95 = the image diagonal, :func:`arena.leaderboard.ranking.penalty_mask`) are left
    out of the boxes, so the measured values keep the axis; each box's penalties are drawn apart, beyond
    a dashed break at the right of the axis, as one marker with their count ("not to scale"), and a
    note under the plot gives the total."""
    _check_scores(scores)
    entries = list(entries)
    if not entries:
        raise ValueError("entries: at least one entry to plot")
    s = scores[(scores["metric"] == metric) & scores["entry"].isin(entries)]
    labels = list(labels) if labels is not None else sorted(s["label"].unique().tolist())
    ne, nl = len(entries), len(labels)
    width = 0.8 / ne
    pen = (s["penalty"].fillna(False).to_numpy(dtype=bool) if "penalty" in s.columns
           else np.zeros(len(s), dtype=bool))
    measured, penalised = s[~pen], s[pen]
    grouped = {k: pd.to_numeric(g["value"], errors="coerce").dropna().to_numpy(dtype=float)
               for k, g in measured.groupby(["entry", "label"])}
    n_pen = {k: v for k, v in penalised.groupby(["entry", "label"]).size().to_dict().items() if v}
    values = [v for v in grouped.values() if v.size]
    lo = float(min(v.min() for v in values)) if values else 0.0
    hi = float(max(v.max() for v in values)) if values else 1.0
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    rng = np.random.default_rng(0)  # the jitter of the points: the same figure every time
    with rc_context(_RC):
        ncol = min(ne, 3)
        fig = Figure(figsize=(9.0, max(2.8, nl * (0.13 * ne + 0.12) + 1.9 + 0.17 * ((ne - 1) // ncol))))
        ax = fig.add_subplot()
        h = width * 0.8  # a box's height (y units)
        for j, e in enumerate(entries):  # one artist per kind and entry: 22 organs × 8 entries stay quick to draw
            color = _COLORS[j % len(_COLORS)]
            ys = np.array([i - 0.4 + width * (j + 0.5) for i in range(nl)])
            data = [grouped.get((e, lab), np.array([])) for lab in labels]
            boxed = [i for i, d in enumerate(data) if d.size >= MIN_BOX]
            if boxed:
                st = [boxplot_stats(data[i])[0] for i in boxed]
                yb = ys[boxed]
                q1, q3 = np.array([x["q1"] for x in st]), np.array([x["q3"] for x in st])
                lo_w, hi_w = np.array([x["whislo"] for x in st]), np.array([x["whishi"] for x in st])
                ax.barh(yb, q3 - q1, left=q1, height=h, color=to_rgba(color, 0.45), edgecolor="#333333", lw=0.6,
                        gid=f"boxes-{j}")
                ax.hlines(np.r_[yb, yb], np.r_[lo_w, q3], np.r_[q1, hi_w], color="#333333", lw=0.8)
                ax.vlines(np.r_[lo_w, hi_w], np.r_[yb, yb] - h / 4, np.r_[yb, yb] + h / 4, color="#333333", lw=0.8)
                big = [k for k, i in enumerate(boxed) if data[i].size > POINTS_UP_TO]
                fliers = [(f, yb[k]) for k in big for f in st[k]["fliers"]]
                if fliers:
                    ax.scatter(*zip(*fliers), marker=".", s=6, color=color, zorder=3)
            few = [i for i, d in enumerate(data) if 0 < d.size]
            if few:  # medians: across the box, or the only summary of a group too small for a box
                ax.vlines([np.median(data[i]) for i in few], ys[few] - h / 2, ys[few] + h / 2, color="black",
                          lw=1.1, zorder=3)
            shown = [i for i, d in enumerate(data) if 0 < d.size <= POINTS_UP_TO]
            if shown:
                px = np.concatenate([data[i] for i in shown])
                py = np.concatenate([ys[i] + rng.uniform(-0.3, 0.3, data[i].size) * width for i in shown])
                ax.scatter(px, py, s=9 if max(data[i].size for i in shown) > 10 else 16, color=color,
                           edgecolors="black", linewidths=0.3, zorder=4, gid=f"points-{j}")
            pen_boxes = [i for i, lab in enumerate(labels) if n_pen.get((e, lab))]
            if pen_boxes:  # one marker per box with penalties (SVG group penalties-<entry index>), its count beside
                ax.scatter(np.full(len(pen_boxes), hi + 0.09 * span), ys[pen_boxes], marker=">", s=22,
                           color=_PENALTY_COLOR, zorder=4, gid=f"penalties-{j}")
                for i in pen_boxes:
                    ax.annotate(str(n_pen[(e, labels[i])]), xy=(hi + 0.09 * span, ys[i]), xytext=(5, 0),
                                textcoords="offset points", va="center", fontsize=7, color=_PENALTY_COLOR)
            ax.plot([], [], color=color, lw=6, alpha=0.45, label=_short_names([_name(names, e)])[0])
        ax.set_yticks(np.arange(nl))
        ax.set_yticklabels([plain(shorten(_label_name(label_names, lab), 40)) for lab in labels])
        ax.set_ylim(nl - 0.5, -0.5)
        ax.set_xlabel(axis_label(metric))
        notes = []
        if n_pen:
            brk = hi + 0.045 * span
            ax.set_xlim(lo - 0.03 * span, hi + 0.16 * span)
            ax.axvline(brk, color="#999999", lw=0.8, ls="--")
            ax.annotate("penalties\n(count, not\nto scale)", xy=(hi + 0.09 * span, 0.0),
                        xycoords=("data", "axes fraction"), xytext=(0, -4), textcoords="offset points",
                        ha="center", va="top", fontsize=6.5, color=_PENALTY_COLOR)
            ticks = [t for t in MaxNLocator(nbins=8).tick_values(lo, hi) if lo - 0.03 * span <= t <= brk]
            ax.set_xticks(ticks)
            k = len(penalised)
            notes.append(f"{k} penalty value{'' if k == 1 else 's'} (missed organ or failed case: the penalty "
                         "distance, e.g. the image diagonal — not a measurement): left out of the boxes, counted at "
                         "the right, not to scale.")
        if any(0 < grouped.get((e, lab), np.array([])).size < MIN_BOX for e in entries for lab in labels):
            notes.append(f"Fewer than {MIN_BOX} cases: no box, only the cases and their median (|).")
        if notes:
            ax.annotate("\n".join(notes), xy=(0, 0), xycoords="axes fraction", xytext=(0, -34),
                        textcoords="offset points", va="top", fontsize=7, wrap=True,
                        color=_PENALTY_COLOR if n_pen else "#444444")
        for i in range(1, nl):
            ax.axhline(i - 0.5, color="#eeeeee", lw=0.6, zorder=0)
        ax.set_title(plain(title or f"{metric} per organ across cases"), fontsize=9, loc="left",
                     pad=8 + 12 * -(-ne // ncol))
        legend = ax.legend(frameon=False, fontsize=7.5, ncol=ncol, loc="lower left", bbox_to_anchor=(0, 1.0),
                           borderaxespad=0.1)
        _tooltips(fig, legend.get_texts(), [_name(names, e) for e in entries])
        ax.grid(axis="x", color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
        fig.tight_layout()
    return fig


def boxplot_svg(scores: pd.DataFrame, entries: Sequence[Any], metric: str, *, labels: Sequence[Any] | None = None,
                label_names: Mapping[Any, str] | None = None, names: Mapping[Any, str] | None = None,
                title: str | None = None) -> str:
    """SVG of :func:`boxplot_figure`."""
    return figure_svg(boxplot_figure(scores, entries, metric, labels=labels, label_names=label_names, names=names,
                                     title=title))


# --------------------------------------------------------------------------------------------------
# FROC
# --------------------------------------------------------------------------------------------------


def froc_figure(curves: Mapping[str, Any], *,
                fp_rates: Sequence[float] | None = (1, 2, 4, 8, 16, 32), xlabel: str = "false positives per image",
                title: str | None = None) -> Figure:
    """FROC curves on one log-x plot, ``fp_rates`` marked.

    ``curves``: name → (FPs per image, sensitivity), or a curve dict with ``fps_per_image`` and
    ``sensitivity`` such as ``score_detection(...)["froc"]["curve"]``; drawn as lines (the read-outs
    interpolate linearly). Names in the legend are cut at :data:`NAME_CHARS` (full name as tooltip)."""
    with rc_context(_RC):
        fig = Figure(figsize=(6.0, 3.8))
        ax = fig.add_subplot()
        for i, (name, curve) in enumerate(curves.items()):
            fps, sens = (curve["fps_per_image"], curve["sensitivity"]) if isinstance(curve, Mapping) else curve
            f, s = np.asarray(fps, dtype=float), np.asarray(sens, dtype=float)
            keep = f > 0
            ax.plot(f[keep], s[keep], color=_COLORS[i % len(_COLORS)], lw=1.4, label=_short_names([name])[0])
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        for r in fp_rates or ():
            ax.axvline(r, color="#dddddd", lw=0.6, zorder=0)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(plain(xlabel))
        ax.set_ylabel(axis_label("froc", "sensitivity"))
        ax.set_title(plain(title or "FROC"), fontsize=9)
        if curves:
            legend = ax.legend(frameon=False, fontsize=7.5, loc="lower right")
            _tooltips(fig, legend.get_texts(), list(curves))
        fig.tight_layout()
    return fig


def froc_svg(curves: Mapping[str, Any], *,
             fp_rates: Sequence[float] | None = (1, 2, 4, 8, 16, 32), xlabel: str = "false positives per image",
             title: str | None = None) -> str:
    """SVG of :func:`froc_figure`."""
    return figure_svg(froc_figure(curves, fp_rates=fp_rates, xlabel=xlabel, title=title))
