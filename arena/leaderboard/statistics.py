"""Uncertainty and comparison for leaderboards — pure functions (pandas/numpy in, pandas out).

- :func:`bootstrap_ranks`: bootstrap over cases (resampling test cases with replacement, seeded),
  re-applying the board's ranking rule to each resample: each entry's rank distribution, its 95% rank
  interval, the probability of being first, and Kendall's tau between the full-data ranking and each
  bootstrap ranking (the board's stability).
- :func:`pairwise_compare`: two entries compared organ by organ on paired per-case differences with a
  Wilcoxon signed-rank test, Holm-corrected across organs (:func:`holm_adjust`).

Vectorised: a resample is a vector of case multiplicities ``W[b, c]``; every mean over resampled cases
is one matrix product ``S @ W.T`` (sums and counts separately, so NaN values stay excluded exactly as
on the board). Ranks come from :func:`scipy.stats.rankdata` along the entry axis.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from arena.leaderboard.ranking import (
    CaseArrays,
    SCORE_COLUMNS,
    _check_scores,
    _hib,
    _label_name,
    _weights_for,
    board_arguments,
    case_arrays,
    case_mean_ranks,
    default_higher_is_better,
    rank_min,
)

BootstrapMethod = Literal["aggregate-then-rank", "rank-then-aggregate", "mean-of-metric-ranks"]

__all__ = ["MIN_INFORMATIVE_CASES", "NOT_INFORMATIVE", "bootstrap_by_spec", "bootstrap_ranks", "holm_adjust",
           "informative", "kendall_tau_b", "pairwise_compare", "resample_counts"]

#: Fewer cases than this: bootstrap rank intervals, P(first), Kendall's tau over resamples and Wilcoxon
#: tests say nothing useful (with 2 cases a resample is one of 3 case multisets, so a clear leader gets
#: "rank 1-1, P(first) 1.00"; the exact Wilcoxon test cannot reach p < 0.05 below 6 pairs). Boards, the
#: compare page and the JSON say so beside the numbers.
MIN_INFORMATIVE_CASES = 10
NOT_INFORMATIVE = f"n < {MIN_INFORMATIVE_CASES}: not informative"


def informative(n_cases: int) -> bool:
    """Whether ``n_cases`` (paired) cases are enough for the bootstrap and test statistics to mean
    something: at least :data:`MIN_INFORMATIVE_CASES` (10)."""
    return int(n_cases) >= MIN_INFORMATIVE_CASES


# --------------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------------


def _resample(n_cases: int, n: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    idx = np.random.default_rng(seed).integers(0, n_cases, size=(n, n_cases))
    flat = idx + (np.arange(n) * n_cases)[:, None]
    return idx, np.bincount(flat.ravel(), minlength=n * n_cases).reshape(n, n_cases).astype(float)


def resample_counts(n_cases: int, n: int = 1000, seed: int | None = 0) -> np.ndarray:
    """``W[b, c]``: how often case ``c`` is drawn in resample ``b`` (``n_cases`` draws with replacement
    from ``numpy.random.default_rng(seed).integers``) — the resamples :func:`bootstrap_ranks` uses."""
    return _resample(n_cases, n, seed)[1]


def kendall_tau_b(reference: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between ``reference[e]`` and each row of ``samples[b, e]`` (as
    :func:`scipy.stats.kendalltau`, vectorised: sign matrices of all pairs, one matrix product per
    chunk of rows); NaN where either side is constant."""
    ref = np.asarray(reference, dtype=np.float32)
    s = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    n = ref.size
    out = np.full(s.shape[0], np.nan)
    if n < 2:
        return out
    sa = np.sign(ref[:, None] - ref[None, :]).ravel()
    na = float(sa @ sa)
    chunk = max(1, 4_000_000 // (n * n))
    for k in range(0, s.shape[0], chunk):
        x = s[k:k + chunk]
        sb = np.sign(x[:, :, None] - x[:, None, :]).reshape(len(x), -1)
        num = (sb @ sa).astype(float)
        nb = np.einsum("ij,ij->i", sb, sb).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k:k + chunk] = np.where((na > 0) & (nb > 0), num / np.sqrt(na * np.maximum(nb, 1)), np.nan)
    return out


def _as_arrays(per_case: Any,
               higher_is_better: Mapping[str, bool] | bool | None) -> tuple[CaseArrays, Mapping[str, bool] | None]:
    if isinstance(per_case, CaseArrays):
        return per_case, higher_is_better if not isinstance(higher_is_better, bool) else None
    if isinstance(per_case, pd.DataFrame) and set(SCORE_COLUMNS) <= set(per_case.columns):
        if isinstance(higher_is_better, bool):
            raise ValueError("higher_is_better: a mapping metric → bool for a long score table")
        return case_arrays(per_case), higher_is_better
    if isinstance(per_case, pd.DataFrame):  # wide: entries × cases, one score
        entries, cases, v = list(per_case.index), list(per_case.columns), per_case.to_numpy(dtype=float)
    else:
        v = np.asarray(per_case, dtype=float)
        if v.ndim != 2:
            raise ValueError("per_case: expected a long score table, CaseArrays, or a 2-D [entry, case] array, "
                             f"got shape {v.shape}")
        entries, cases = list(range(v.shape[0])), list(range(v.shape[1]))
    if not isinstance(higher_is_better, bool):
        raise ValueError("higher_is_better: True or False for a single per-case score (wide table or array)")
    hib = {"score": higher_is_better}
    arr = CaseArrays(entries, cases, [0], ["score"], v[None, :, None, :], ~np.isnan(v)[None, :, None, :])
    return arr, hib


def _metric_scores(v: np.ndarray, w_lab: np.ndarray, W: np.ndarray, statistic: str, pooled: bool,
                   idx: np.ndarray | None) -> np.ndarray:
    """``[b, entry]`` aggregate of ``v[entry, label, case]`` over each resample's cases, then labels."""
    E, L, C = v.shape
    ok = np.isfinite(v)
    if statistic == "median":
        out = np.empty((W.shape[0], E))
        step = max(1, 2_000_000 // max(1, E * L * C))
        for k in range(0, W.shape[0], step):
            sub = v[:, :, idx[k:k + step]]  # [E, L, b, C]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(sub, axis=3)  # [E, L, b]
            okm = np.isfinite(med)
            num = np.einsum("elb,l->be", np.where(okm, med, 0.0), w_lab)
            den = np.einsum("elb,l->be", okm.astype(float), w_lab)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[k:k + step] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
        return out
    vs = np.where(ok, v, 0.0)
    B = W.shape[0]
    if pooled:
        sc = (vs.reshape(E * L, C).T.reshape(C, E, L) @ w_lab).T  # [E, C]: weighted sums over labels
        nc = (ok.reshape(E * L, C).T.reshape(C, E, L).astype(float) @ w_lab).T
        num, den = W @ sc.T, W @ nc.T  # [b, E]
    else:
        sums = (W @ vs.reshape(E * L, C).T).reshape(B, E, L)
        cnts = (W @ ok.reshape(E * L, C).T.astype(float)).reshape(B, E, L)
        okl = cnts > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(okl, sums / np.where(okl, cnts, 1), 0.0)
        num = means @ w_lab  # [b, E]
        den = okl.astype(float) @ w_lab
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _ranks_for(arrays: CaseArrays, W: np.ndarray, idx: np.ndarray | None, method: str, metrics: list[str],
               hib: Mapping[str, bool] | None, w_lab: np.ndarray, statistic: str, pooled: bool,
               label_weights: Mapping[Any, float] | None, rt: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    if method == "rank-then-aggregate":
        rs, ws = rt
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_rank = (W @ rs.T) / (W @ ws.T)
        return rank_min(mean_rank, False, axis=1)
    per_metric = [rank_min(_metric_scores(arrays.metric(m), w_lab, W, statistic, pooled, idx), _hib(hib, m), axis=1)
                  for m in metrics]
    if method == "aggregate-then-rank":
        return per_metric[0]
    return rank_min(np.mean(per_metric, axis=0), False, axis=1)


def bootstrap_ranks(per_case: Any, n: int = 1000, seed: int | None = 0, *,
                    method: BootstrapMethod = "aggregate-then-rank", primary: str | None = None,
                    metrics: Sequence[str] | None = None,
                    higher_is_better: Mapping[str, bool] | bool | None = None,
                    label_weights: Mapping[Any, float] | None = None, statistic: Literal["mean", "median"] = "mean",
                    pooled: bool | None = None, level: float = 0.95) -> pd.DataFrame:
    """Bootstrap over cases: rank distribution per entry, rank interval, P(first), board stability.

    Each of ``n`` resamples draws the cases with replacement (``numpy.random.default_rng(seed)``; the
    same seed gives the same table) and re-applies the ranking rule:

    - ``"aggregate-then-rank"``: the ``primary`` metric (default: the only metric) aggregated over cases
      and labels with ``label_weights``: ``pooled=True`` (default; as :func:`aggregate_then_rank`'s
      mean, all (case, label) values pooled) or ``pooled=False`` (each label's mean, then the weighted
      mean over labels); ``statistic="median"``: each label's median, then the weighted mean (slower:
      resampled arrays are materialised in chunks).
    - ``"mean-of-metric-ranks"``: StructSeg — each of ``metrics`` as the weighted mean of label means
      (``pooled=False`` by default), ranked separately, then ranked on the mean rank
      (:func:`structseg_rank`).
    - ``"rank-then-aggregate"``: the per-cell ranks are fixed (they do not depend on other cases), the
      entry's mean rank over the resampled cases is ranked (:func:`rank_then_aggregate`).

    Ranks follow the boards: ties share the lower rank, NaN scores rank last.

    Args:
        per_case: a long score table (``entry, case, label, metric, value``), :class:`CaseArrays`, or a
            single per-case score as a wide DataFrame (index entries, columns cases) or a 2-D array
            ``[entry, case]`` (then ``higher_is_better`` is a bool).
        n: number of resamples (0: only the full-data ranks).
        higher_is_better: metric → bool (default: dice/jaccard/nsd higher, others lower).
        level: the rank interval's coverage (0.95: columns ``rank_p2.5``, ``rank_p97.5``).

    Returns:
        One row per entry, by full-data rank: ``entry, rank`` (full data), ``mean_rank``,
        ``median_rank``, ``rank_p<lo>``, ``rank_p<hi>`` (quantiles of the bootstrap ranks, values that
        occur), ``p_first`` (share of resamples where it ranks first, ties included). ``attrs``:
        ``n, seed, method, level``, ``n_cases``, ``informative`` (:func:`informative`: at least 10 cases;
        otherwise intervals, P(first) and tau are shown with :data:`NOT_INFORMATIVE`), ``kendall_tau``
        (mean over resamples of Kendall's tau-b between the
        full-data and the bootstrap ranking), ``kendall_tau_interval`` (its ``level`` interval),
        ``rank_counts`` (int array [entry in table order, rank-1]: how often each rank occurred).
    """
    if n < 0:
        raise ValueError(f"n: expected >= 0 resamples, got {n}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a coverage in (0, 1), got {level}")
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic: expected 'mean' or 'median', got {statistic!r}")
    arrays, hib = _as_arrays(per_case, higher_is_better)
    if method == "aggregate-then-rank":
        if primary is None:
            if len(arrays.metrics) != 1:
                raise ValueError(f"primary: which metric to rank (metrics: {arrays.metrics})")
            primary = arrays.metrics[0]
        metrics_l = [primary]
        pooled = True if pooled is None else pooled
    elif method in ("mean-of-metric-ranks", "rank-then-aggregate"):
        metrics_l = list(metrics) if metrics is not None else list(arrays.metrics)
        pooled = False if pooled is None else pooled
        if method == "rank-then-aggregate" and statistic != "mean":
            raise ValueError("statistic: rank-then-aggregate averages ranks (statistic='mean')")
    else:
        raise ValueError("method: expected 'aggregate-then-rank', 'mean-of-metric-ranks' or 'rank-then-aggregate', "
                         f"got {method!r}")
    for m in metrics_l:
        arrays.metric(m)  # KeyError naming the metric
    E, C = len(arrays.entries), len(arrays.cases)
    lo_name, hi_name = f"rank_p{100 * (1 - level) / 2:g}", f"rank_p{100 * (1 + level) / 2:g}"
    cols = ["entry", "rank", "mean_rank", "median_rank", lo_name, hi_name, "p_first"]
    if E == 0 or C == 0:
        out = pd.DataFrame(columns=cols)
        out.attrs.update(n=n, seed=seed, method=method, level=level, n_cases=C, informative=informative(C),
                         kendall_tau=np.nan,
                         kendall_tau_interval=(np.nan, np.nan), rank_counts=np.zeros((E, E), dtype=int))
        return out
    w_lab = _weights_for(arrays.labels, label_weights)
    rt = case_mean_ranks(arrays, metrics_l, hib, label_weights) if method == "rank-then-aggregate" else None
    full = _ranks_for(arrays, np.ones((1, C)), np.arange(C)[None, :], method, metrics_l, hib, w_lab, statistic,
                      pooled, label_weights, rt)[0]
    if n:
        rng_idx, W = _resample(C, n, seed)
        boot = _ranks_for(arrays, W, rng_idx, method, metrics_l, hib, w_lab, statistic, pooled, label_weights, rt)
        tau = kendall_tau_b(full, boot)
        q = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0, method="inverted_cdf")
        ri = boot.astype(int) - 1
        counts = np.bincount((ri + (np.arange(E) * E)[None, :]).ravel(), minlength=E * E).reshape(E, E)
        table = pd.DataFrame({"entry": arrays.entries, "rank": full.astype(int), "mean_rank": boot.mean(axis=0),
                              "median_rank": np.median(boot, axis=0), lo_name: q[0].astype(int),
                              hi_name: q[1].astype(int), "p_first": (boot == 1).mean(axis=0)})
        finite_tau = tau[np.isfinite(tau)]
        tau_mean = float(finite_tau.mean()) if finite_tau.size else float("nan")
        tau_iv = (tuple(float(x) for x in np.quantile(finite_tau, [(1 - level) / 2, (1 + level) / 2]))
                  if finite_tau.size else (np.nan, np.nan))
    else:
        table = pd.DataFrame({"entry": arrays.entries, "rank": full.astype(int), "mean_rank": full,
                              "median_rank": full, lo_name: full.astype(int), hi_name: full.astype(int),
                              "p_first": (full == 1).astype(float)})
        counts = np.zeros((E, E), dtype=int)
        tau_mean, tau_iv = float("nan"), (float("nan"), float("nan"))
    order = np.lexsort((np.arange(E), full))
    table = table.iloc[order].reset_index(drop=True)
    table.attrs.update(n=n, seed=seed, method=method, level=level, n_cases=C, informative=informative(C),
                       kendall_tau=tau_mean, kendall_tau_interval=tau_iv, rank_counts=counts[order])
    return table


def bootstrap_by_spec(scores: Any, spec: Any, phase: str | None = None, *, n: int | None = None,
                      seed: int | None = None) -> pd.DataFrame:
    """:func:`bootstrap_ranks` with the task's rule for ``phase`` (``ranking.bootstrap`` resamples and
    ``ranking.seed`` unless ``n``/``seed`` are given); its full-data ranks equal
    :func:`arena.leaderboard.ranking.rank_by_spec`'s."""
    a = board_arguments(spec, phase)
    if a["method"] == "digestpath-2019":
        raise ValueError("ranking.method 'digestpath-2019': entry-level detection numbers have no per-case "
                         "bootstrap here")
    return bootstrap_ranks(scores, a["bootstrap"] if n is None else n, a["seed"] if seed is None else seed,
                           method=a["method"], primary=a["primary"], metrics=a["metrics"],
                           higher_is_better=a["higher_is_better"], label_weights=a["label_weights"],
                           statistic=a["statistic"])


# --------------------------------------------------------------------------------------------------
# pairwise comparison
# --------------------------------------------------------------------------------------------------


def holm_adjust(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down; monotone; capped at 1). NaN p-values are left out
    of the family and stay NaN."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def pairwise_compare(scores: pd.DataFrame, a: Any, b: Any, metric: str, *,
                     label_names: Mapping[Any, str] | None = None, higher_is_better: bool | None = None,
                     alpha: float = 0.05, level: float = 0.95,
                     zero_method: Literal["wilcox", "pratt", "zsplit"] = "wilcox") -> pd.DataFrame:
    """Entry ``a`` vs entry ``b`` on ``metric``, one row per label (organ), on paired per-case values.

    Per label the cases where both have a value (not NaN, row present) are paired and
    ``d = a - b`` tested with :func:`scipy.stats.wilcoxon` (two-sided, ``zero_method``; its default
    exact/normal choice). All differences zero: statistic NaN, p = 1 (no evidence of a difference);
    no pairs: NaN. ``p_holm``: Holm-corrected across the labels with a p-value;
    ``significant = p_holm < alpha`` and at least :data:`MIN_INFORMATIVE_CASES` pairs (on fewer the test
    is not informative: ``informative`` False, ``note`` :data:`NOT_INFORMATIVE`; p is still reported).

    Returns columns ``label, label_name, n, mean_a, mean_b, mean_diff, ci_low, ci_high`` (a Student-t
    ``level`` interval of the mean difference), ``median_diff, statistic, p, p_holm, significant,
    favours`` (``a``/``b`` whose mean is better, "" if equal), ``informative, note``. ``attrs``: ``a, b, metric,
    higher_is_better, alpha``.
    """
    _check_scores(scores)
    hib = default_higher_is_better(metric) if higher_is_better is None else bool(higher_is_better)
    s = scores[(scores["metric"] == metric) & scores["entry"].isin([a, b])]
    cols = ["label", "label_name", "n", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "median_diff",
            "statistic", "p", "p_holm", "significant", "favours", "informative", "note"]
    for who, e in (("a", a), ("b", b)):
        if not (s["entry"] == e).any():
            raise ValueError(f"{who}: entry {e!r} has no {metric} scores")
    s = s.assign(value=pd.to_numeric(s["value"], errors="coerce").astype(float))
    wide = s.pivot_table(index=["label", "case"], columns="entry", values="value", aggfunc="first", dropna=False)
    rows = []
    for lab in sorted(s["label"].unique().tolist(), key=lambda x: (str(type(x)), x)):
        g = wide.loc[lab] if lab in wide.index.get_level_values(0) else None
        va = g[a].to_numpy(dtype=float) if g is not None and a in g.columns else np.array([])
        vb = g[b].to_numpy(dtype=float) if g is not None and b in g.columns else np.array([])
        ok = np.isfinite(va) & np.isfinite(vb)
        va, vb = va[ok], vb[ok]
        d = va - vb
        k = int(d.size)
        row = {"label": lab, "label_name": _label_name(label_names, lab), "n": k}
        if k == 0:
            row.update(mean_a=np.nan, mean_b=np.nan, mean_diff=np.nan, ci_low=np.nan, ci_high=np.nan,
                       median_diff=np.nan, statistic=np.nan, p=np.nan)
        else:
            md = float(d.mean())
            if k > 1:
                se = float(d.std(ddof=1)) / np.sqrt(k)
                half = float(stats.t.ppf((1 + level) / 2, k - 1)) * se
            else:
                half = np.nan
            if np.all(d == 0):
                stat, p = np.nan, 1.0
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = stats.wilcoxon(d, zero_method=zero_method)
                stat, p = float(res.statistic), float(res.pvalue)
            row.update(mean_a=float(va.mean()), mean_b=float(vb.mean()), mean_diff=md, ci_low=md - half,
                       ci_high=md + half, median_diff=float(np.median(d)), statistic=stat, p=p)
        rows.append(row)
    out = pd.DataFrame(rows, columns=[c for c in cols if c not in ("p_holm", "significant", "favours", "informative",
                                                                   "note")])
    out["p_holm"] = holm_adjust(out["p"].to_numpy(dtype=float))
    out["informative"] = out["n"].astype(int) >= MIN_INFORMATIVE_CASES
    out["note"] = np.where(out["informative"], "", NOT_INFORMATIVE)
    out["significant"] = (out["p_holm"] < alpha) & out["informative"]
    md = out["mean_diff"].to_numpy(dtype=float)
    better_a = md > 0 if hib else md < 0
    better_b = md < 0 if hib else md > 0
    out["favours"] = np.where(better_a, "a", np.where(better_b, "b", ""))
    out.attrs.update(a=a, b=b, metric=metric, higher_is_better=hib, alpha=alpha, level=level)
    return out[cols]
