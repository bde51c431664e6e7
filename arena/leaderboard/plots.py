"""Leaderboard plots as SVG text (or PNG bytes), made with matplotlib's object API and the Agg/SVG
backends — no pyplot state, so safe in a multi-threaded web server.

- :func:`rank_distribution_svg`: bootstrap rank distribution per entry (a "blob plot": circle area =
  probability of each rank, bar = 95% rank interval, cross = full-data rank), from :func:`bootstrap_ranks`.
- :func:`forest_plot_svg`: entry A − entry B per organ (mean paired difference, t interval, Holm p),
  from :func:`pairwise_compare`.
- :func:`boxplot_svg`: per-organ boxplots across cases for selected entries, from a long score table.
- :func:`froc_svg`: FROC curves of several detection entries on one plot.

Each ``*_svg`` function has a ``*_figure`` twin returning the matplotlib Figure; :func:`figure_svg`
and :func:`figure_png` render any of them. SVG output is deterministic (fixed ids, no date) and keeps
text as text.

Names, labels, titles and metric names come from teams and organizers: every such string goes through
:func:`plain` before matplotlib sees it, so a ``$`` is drawn as a dollar sign and never starts math text
(a team called ``$\\sqrt{$`` once made every plot of its board fail).
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from arena.leaderboard.ranking import _check_scores, _label_name, default_higher_is_better
from arena.leaderboard.statistics import NOT_INFORMATIVE

__all__ = ["boxplot_figure", "boxplot_svg", "figure_png", "figure_svg", "forest_plot_figure", "forest_plot_svg",
           "froc_figure", "froc_svg", "plain", "rank_distribution_figure", "rank_distribution_svg"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]
_RC = {"svg.hashsalt": "arena", "svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False}


def figure_svg(fig: Figure) -> str:
    """The figure as SVG text (deterministic ids, no creation date)."""
    buf = io.StringIO()
    with rc_context(_RC):
        FigureCanvasSVG(fig)
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


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


def _name(names: Mapping[Any, str] | None, entry: Any) -> str:
    return plain((names or {}).get(entry, entry))


# --------------------------------------------------------------------------------------------------
# rank distribution
# --------------------------------------------------------------------------------------------------


def rank_distribution_figure(boot: pd.DataFrame, *, names: Mapping[Any, str] | None = None, max_entries: int = 25,
                             title: str | None = None) -> Figure:
    """Blob plot of a :func:`arena.leaderboard.statistics.bootstrap_ranks` table (its
    ``attrs["rank_counts"]``): one column per entry (board order, the first ``max_entries``), circle
    area ∝ P(rank), vertical bar = the rank interval, cross = full-data rank; P(first) under each name."""
    counts = boot.attrs.get("rank_counts")
    if counts is None or not boot.attrs.get("n"):
        raise ValueError("boot: a bootstrap_ranks() table with n > 0 resamples (attrs['rank_counts'])")
    interval = [c for c in boot.columns if c.startswith("rank_p")]
    lo_col, hi_col = interval[0], interval[-1]
    k = min(len(boot), max_entries)
    n = int(boot.attrs["n"])
    probs = np.asarray(counts, dtype=float)[:k] / n
    ymax = int(max(boot[hi_col].iloc[:k].max(), k)) if k else 1
    with rc_context(_RC):
        fig = Figure(figsize=(max(4.0, 0.42 * k + 1.6), max(3.0, min(9.0, 0.22 * ymax + 1.8))))
        ax = fig.add_subplot()
        for i in range(k):
            ranks = np.flatnonzero(probs[i] > 0)
            ax.vlines(i, boot[lo_col].iloc[i], boot[hi_col].iloc[i], color="#555555", lw=1.2, zorder=1)
            ax.scatter(np.full(ranks.size, i), ranks + 1, s=420 * probs[i, ranks], color=_COLORS[0], alpha=0.65,
                       edgecolors="none", zorder=2)
            ax.scatter([i], [boot["rank"].iloc[i]], marker="x", color="black", s=28, lw=1.2, zorder=3)
        ax.set_xticks(range(k))
        ticks = [f"{_name(names, e)}\n{p:.0%}" for e, p in zip(boot["entry"].iloc[:k], boot["p_first"].iloc[:k])]
        ax.set_xticklabels(ticks,
                           rotation=60 if k > 8 else 0, ha="right" if k > 8 else "center", fontsize=8)
        ax.set_ylim(ymax + 0.7, 0.3)
        ax.set_xlim(-0.7, k - 0.3)
        ax.set_ylabel("rank (bootstrap over cases)")
        ax.yaxis.get_major_locator().set_params(integer=True)
        level = boot.attrs.get("level", 0.95)
        tau = boot.attrs.get("kendall_tau", float("nan"))
        ax.set_title(plain(title) if title else f"Rank distribution ({n} resamples; bar: {level:.0%} interval; "
                     f"x: rank; Kendall τ = {tau:.3f})", fontsize=9)
        ax.grid(axis="y", color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
        fig.text(0.01, 0.01, "under each name: P(first)", fontsize=7, color="#555555")
        if boot.attrs.get("informative") is False:
            fig.text(0.99, 0.01, f"{boot.attrs.get('n_cases', '')} cases — {NOT_INFORMATIVE}", fontsize=8,
                     color="#b00020", ha="right")
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
    Holm p on the right; the axis says which side favours which entry."""
    a = plain(a_name or compare.attrs.get("a", "A"))
    b = plain(b_name or compare.attrs.get("b", "B"))
    metric = compare.attrs.get("metric", "")
    hib = compare.attrs.get("higher_is_better", default_higher_is_better(metric) if metric else True)
    k = len(compare)
    with rc_context(_RC):
        fig = Figure(figsize=(6.4, max(2.2, 0.32 * k + 1.3)))
        ax = fig.add_subplot()
        y = np.arange(k)[::-1]
        md = compare["mean_diff"].to_numpy(dtype=float)
        lo, hi = compare["ci_low"].to_numpy(dtype=float), compare["ci_high"].to_numpy(dtype=float)
        sig = compare["significant"].to_numpy(dtype=bool)
        ax.axvline(0, color="#888888", lw=0.8)
        ax.hlines(y, np.where(np.isfinite(lo), lo, md), np.where(np.isfinite(hi), hi, md), color="#333333", lw=1.2)
        ax.scatter(md[sig], y[sig], marker="s", color=_COLORS[1], s=36, zorder=3, label="Holm p < "
                   f"{compare.attrs.get('alpha', 0.05):g}")
        ax.scatter(md[~sig], y[~sig], marker="s", facecolors="white", edgecolors="#333333", s=36, zorder=3,
                   label="not significant")
        ax.set_yticks(y)
        ax.set_yticklabels([plain(x) for x in compare["label_name"]])
        ax.set_ylim(-0.8, k - 0.2)
        few = ~compare["informative"].to_numpy(dtype=bool) if "informative" in compare.columns else np.zeros(k, bool)
        for yi, (n, p), f in zip(y, zip(compare["n"], compare["p_holm"]), few):
            text = f"n={n}  p={p:.3g}" if np.isfinite(p) else f"n={n}"
            ax.annotate(f"{text}  ({NOT_INFORMATIVE})" if f else text, xy=(1.01, yi),
                        xycoords=("axes fraction", "data"), va="center", fontsize=7.5, color="#444444")
        better_right = a if hib else b
        better_left = b if hib else a
        ax.set_xlabel(f"{plain(metric)} difference {a} − {b} (mean, {compare.attrs.get('level', 0.95):.0%} CI)\n"
                      f"← favours {better_left}  |  favours {better_right} →")
        ax.set_title(plain(title) if title else f"{a} vs {b}: paired Wilcoxon per organ, Holm-corrected", fontsize=9)
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.06), ncol=2, frameon=False, fontsize=7.5)
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
    """Per-organ boxplots of ``metric`` across cases, one box per selected entry in each organ group
    (NaN values, i.e. excluded, left out; whiskers 1.5 IQR, outliers as dots).

    Penalties are not measurements: rows flagged in a boolean ``penalty`` column of ``scores`` (e.g. a
    missed organ's HD95 = the image diagonal, :func:`arena.leaderboard.ranking.penalty_mask`) are left
    out of the boxes and counted apart — "k pen." above the box — and the figure says so."""
    _check_scores(scores)
    entries = list(entries)
    if not entries:
        raise ValueError("entries: at least one entry to plot")
    s = scores[(scores["metric"] == metric) & scores["entry"].isin(entries)]
    labels = list(labels) if labels is not None else sorted(s["label"].unique().tolist())
    ne = len(entries)
    width = 0.8 / ne
    with rc_context(_RC):
        fig = Figure(figsize=(max(5.0, 0.28 * ne * len(labels) + 1.8), 3.8))
        ax = fig.add_subplot()
        pen = (s["penalty"].fillna(False).to_numpy(dtype=bool) if "penalty" in s.columns
               else np.zeros(len(s), dtype=bool))
        measured, penalised = s[~pen], s[pen]
        grouped = {k: pd.to_numeric(g["value"], errors="coerce").dropna().to_numpy(dtype=float)
                   for k, g in measured.groupby(["entry", "label"])}
        n_pen = penalised.groupby(["entry", "label"]).size().to_dict()
        for j, e in enumerate(entries):
            data = [grouped.get((e, lab), np.array([])) for lab in labels]
            pos = np.arange(len(labels)) - 0.4 + width * (j + 0.5)
            color = _COLORS[j % len(_COLORS)]
            bp = ax.boxplot([d if d.size else [np.nan] for d in data], positions=pos, widths=width * 0.85,
                            patch_artist=True, manage_ticks=False,
                            flierprops={"marker": ".", "markersize": 3, "markerfacecolor": color,
                                        "markeredgecolor": color},
                            medianprops={"color": "black", "lw": 1})
            for patch in bp["boxes"]:
                patch.set_facecolor(color)
                patch.set_alpha(0.55)
            for x, lab in zip(pos, labels):
                if n_pen.get((e, lab)):
                    ax.annotate(f"{n_pen[(e, lab)]} pen.", xy=(x, 0.98), xycoords=("data", "axes fraction"),
                                ha="center", va="top", fontsize=6.5, color="#b00020", rotation=90)
            ax.plot([], [], color=color, lw=6, alpha=0.55, label=_name(names, e))
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels([plain(_label_name(label_names, lab)) for lab in labels],
                           rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
        ax.set_ylabel(plain(metric))
        ax.set_title(plain(title or f"{metric} per organ across cases"), fontsize=9)
        ax.legend(frameon=False, fontsize=7.5, ncol=min(ne, 4), loc="lower left", bbox_to_anchor=(0, 1.04))
        if n_pen:
            fig.text(0.01, 0.01, f"measured values only; {len(penalised)} penalty values (missed organ or failed "
                     "case: the penalty distance, not a measurement) counted apart as 'k pen.'", fontsize=7,
                     color="#b00020")
        ax.grid(axis="y", color="#e5e5e5", lw=0.6)
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
    interpolate linearly)."""
    with rc_context(_RC):
        fig = Figure(figsize=(5.2, 3.6))
        ax = fig.add_subplot()
        for i, (name, curve) in enumerate(curves.items()):
            fps, sens = (curve["fps_per_image"], curve["sensitivity"]) if isinstance(curve, Mapping) else curve
            f, s = np.asarray(fps, dtype=float), np.asarray(sens, dtype=float)
            keep = f > 0
            ax.plot(f[keep], s[keep], color=_COLORS[i % len(_COLORS)], lw=1.4, label=plain(name))
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        for r in fp_rates or ():
            ax.axvline(r, color="#dddddd", lw=0.6, zorder=0)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(plain(xlabel))
        ax.set_ylabel("sensitivity")
        ax.set_title(plain(title or "FROC"), fontsize=9)
        ax.legend(frameon=False, fontsize=7.5, loc="lower right")
        fig.tight_layout()
    return fig


def froc_svg(curves: Mapping[str, Any], *,
             fp_rates: Sequence[float] | None = (1, 2, 4, 8, 16, 32), xlabel: str = "false positives per image",
             title: str | None = None) -> str:
    """SVG of :func:`froc_figure`."""
    return figure_svg(froc_figure(curves, fp_rates=fp_rates, xlabel=xlabel, title=title))
