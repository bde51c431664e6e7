"""Bootstrap rank intervals, pairwise Wilcoxon/Holm comparisons, published results, plots, ranking spec."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from arena.leaderboard.ranking import (
    aggregate_then_rank,
    rank_by_spec,
    place_literature,
    rank_then_aggregate,
    structseg_rank,
    with_literature,
)
from arena.leaderboard.statistics import (
    bootstrap_by_spec,
    bootstrap_ranks,
    holm_adjust,
    kendall_tau_b,
    pairwise_compare,
    resample_counts,
)
from arena.tasks.literature import load_literature
from arena.tasks.spec import RankingSpec, TaskSpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
HAN9 = REPO / "tasks" / "han-oar-9"


def _random_scores(n_entries: int = 6, n_cases: int = 12, n_labels: int = 3, seed: int = 0,
                   best: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    e, c, lab = np.meshgrid(np.arange(n_entries), np.arange(n_cases), np.arange(1, n_labels + 1), indexing="ij")
    skill = rng.normal(0, 0.02, n_entries)
    if best:
        skill[0] = 0.3
    dice = np.clip(0.6 + skill[e] + rng.normal(0, 0.05, e.shape), 0, 1)
    hd = np.clip(6 - 20 * skill[e] + rng.normal(0, 1, e.shape), 0, None)
    dice[1, 0, 0] = np.nan  # one value excluded by the empty-mask policy
    parts = [pd.DataFrame({"entry": e.ravel(), "case": [f"c{i:02d}" for i in c.ravel()], "label": lab.ravel(),
                           "metric": m, "value": v.ravel()}) for m, v in (("dice", dice), ("hd95", hd))]
    return pd.concat(parts, ignore_index=True)


# -- bootstrap ---------------------------------------------------------------------------------------------

def test_bootstrap_is_seeded_and_consistent_with_the_boards():
    df = _random_scores()
    w = {1: 100, 2: 50, 3: 80}
    a = bootstrap_ranks(df, n=200, seed=3, primary="dice", label_weights=w)
    b = bootstrap_ranks(df, n=200, seed=3, primary="dice", label_weights=w)
    c = bootstrap_ranks(df, n=200, seed=4, primary="dice", label_weights=w)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert list(a.columns) == ["entry", "rank", "mean_rank", "median_rank", "rank_p2.5", "rank_p97.5", "p_first"]
    # the full-data ranks are the boards' ranks, for every rule
    board = aggregate_then_rank(df, "dice", {"dice": True, "hd95": False}, w).set_index("entry")["rank"]
    assert a.set_index("entry")["rank"].to_dict() == board.to_dict()
    ss = bootstrap_ranks(df, n=50, method="mean-of-metric-ranks", label_weights=w)
    assert ss.set_index("entry")["rank"].to_dict() == structseg_rank(df, w).set_index("entry")["rank"].to_dict()
    rt = bootstrap_ranks(df, n=50, method="rank-then-aggregate")
    assert rt.set_index("entry")["rank"].to_dict() == rank_then_aggregate(df).set_index("entry")["rank"].to_dict()
    med = bootstrap_ranks(df, n=20, primary="dice", statistic="median", label_weights=w)
    board_med = aggregate_then_rank(df, "dice", {"dice": True}, w, statistic="median").set_index("entry")["rank"]
    assert med.set_index("entry")["rank"].to_dict() == board_med.to_dict()
    # interval sanity
    assert (a["rank_p2.5"] <= a["rank_p97.5"]).all() and (a["rank_p2.5"] >= 1).all()
    assert (a["rank_p97.5"] <= len(a)).all() and a["p_first"].between(0, 1).all()
    counts = a.attrs["rank_counts"]
    assert counts.shape == (6, 6) and (counts.sum(axis=1) == 200).all()
    assert np.allclose(counts[:, 0] / 200, a["p_first"])
    assert -1 <= a.attrs["kendall_tau"] <= 1


def test_bootstrap_clearly_best_entry():
    df = _random_scores(best=True)
    t = bootstrap_ranks(df, n=300, seed=0, primary="dice").set_index("entry")
    assert t.loc[0, "rank"] == 1 and t.loc[0, "p_first"] == 1.0
    assert t.loc[0, "rank_p2.5"] == 1 and t.loc[0, "rank_p97.5"] == 1
    assert t.drop(index=0)["p_first"].max() == 0.0


def test_bootstrap_resamples_and_wide_input():
    w = resample_counts(5, n=4, seed=1)
    assert w.shape == (4, 5) and (w.sum(axis=1) == 5).all()
    rng = np.random.default_rng(1)
    assert (w == np.stack([np.bincount(r, minlength=5) for r in rng.integers(0, 5, size=(4, 5))])).all()
    # a per-case score as a wide table: lower is better here (e.g. per-case mean ranks)
    wide = pd.DataFrame([[1.0, 1.0, 2.0], [2.0, 3.0, 3.0], [3.0, 2.0, 1.0]], index=["a", "b", "c"],
                        columns=["x", "y", "z"])
    t = bootstrap_ranks(wide, n=100, higher_is_better=False)
    assert t["entry"].tolist() == ["a", "c", "b"] and t["rank"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="higher_is_better"):
        bootstrap_ranks(wide, n=10)
    with pytest.raises(ValueError, match="primary"):
        bootstrap_ranks(_random_scores(), n=10)


def test_kendall_tau_matches_scipy():
    rng = np.random.default_rng(0)
    ref = rng.integers(1, 8, 15).astype(float)  # with ties
    samples = rng.integers(1, 8, (20, 15)).astype(float)
    samples[3] = 4.0  # constant: undefined
    ours = kendall_tau_b(ref, samples)
    for s, t in zip(samples, ours):
        expected = stats.kendalltau(ref, s).statistic
        assert (np.isnan(t) and np.isnan(expected)) or t == pytest.approx(expected, abs=1e-6)


# -- pairwise comparison -------------------------------------------------------------------------------------

def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 (m = 3): 3*0.01 = 0.03; max(0.03, 2*0.03) = 0.06; max(0.06, 1*0.04) = 0.06
    assert np.allclose(holm_adjust([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan], equal_nan=True)
    assert holm_adjust([0.5, 0.9])[1] == 1.0  # capped at 1 (2*0.5 = 1.0; max(1.0, 0.9))


def test_pairwise_wilcoxon_holm_against_scipy():
    rng = np.random.default_rng(5)
    rows = []
    a_vals = {1: rng.normal(0.85, 0.03, 10), 2: rng.normal(0.70, 0.05, 10), 3: rng.normal(0.6, 0.05, 10)}
    b_vals = {1: a_vals[1] - rng.normal(0.05, 0.01, 10), 2: a_vals[2] + rng.normal(0.0, 0.04, 10),
              3: a_vals[3].copy()}
    b_vals[2][0] = np.nan  # excluded: case 0 unpaired for label 2
    for lab in (1, 2, 3):
        for i in range(10):
            rows += [("A", f"c{i}", lab, "dice", a_vals[lab][i]), ("B", f"c{i}", lab, "dice", b_vals[lab][i])]
    df = pd.DataFrame(rows, columns=["entry", "case", "label", "metric", "value"])
    t = pairwise_compare(df, "A", "B", "dice", label_names={1: "BrainStem", 2: "Chiasm", 3: "Mandible"})
    assert t["label_name"].tolist() == ["BrainStem", "Chiasm", "Mandible"]
    assert t["n"].tolist() == [10, 9, 10]
    p1 = stats.wilcoxon(a_vals[1] - b_vals[1]).pvalue
    p2 = stats.wilcoxon(a_vals[2][1:] - b_vals[2][1:]).pvalue
    assert t.loc[0, "p"] == pytest.approx(p1) and t.loc[1, "p"] == pytest.approx(p2)
    assert t.loc[0, "statistic"] == pytest.approx(stats.wilcoxon(a_vals[1] - b_vals[1]).statistic)
    # identical on label 3: no evidence of a difference
    assert t.loc[2, "p"] == 1.0 and np.isnan(t.loc[2, "statistic"]) and t.loc[2, "mean_diff"] == 0
    # Holm over the three labels by hand
    ps = np.array([p1, p2, 1.0])
    order = np.argsort(ps)
    adj = np.maximum.accumulate(np.minimum(1, (3 - np.arange(3)) * ps[order]))
    expected = np.empty(3)
    expected[order] = adj
    assert np.allclose(t["p_holm"], expected)
    assert t.loc[0, "significant"] and t.loc[0, "favours"] == "a" and not t.loc[2, "significant"]
    assert t.loc[0, "mean_diff"] == pytest.approx(np.mean(a_vals[1] - b_vals[1]))
    assert t.loc[0, "ci_low"] < t.loc[0, "mean_diff"] < t.loc[0, "ci_high"]
    # distances: lower is better, so a positive A - B favours B
    hd = df.assign(metric="hd95")
    assert pairwise_compare(hd, "A", "B", "hd95").loc[0, "favours"] == "b"
    with pytest.raises(ValueError, match="no dice scores"):
        pairwise_compare(df, "A", "Z", "dice")


# -- published results ---------------------------------------------------------------------------------------

HEADER = "source,citation,table,dataset,model,label,metric,value,sd,unit,convention,flag,note\n"


def _lit(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    p = tmp_path / "literature.csv"
    p.write_text(header + body)
    return p


def test_han_oar_9_literature_ships_and_loads():
    spec = load_spec(HAN9)
    assert spec.literature == "literature.csv"
    assert {lab: s.name for lab, s in spec.labels.items()} == {
        1: "BrainStem", 2: "Chiasm", 3: "Mandible", 4: "OpticNerve_L", 5: "OpticNerve_R", 6: "Parotid_L",
        7: "Parotid_R", 8: "Submandibular_L", 9: "Submandibular_R"}
    lit = load_literature(HAN9 / "literature.csv", spec)
    assert set(lit["model"]) == {"AnatomyNet", "FocusNetv2", "Best team per organ"}
    assert (lit["badge"] == "published").all() and not lit["evaluated_here"].any()
    anat = lit[(lit["model"] == "AnatomyNet") & (lit["metric"] == "dice")].set_index("label_name")["value"]
    assert anat["BrainStem"] == pytest.approx(0.8665) and anat["Submandibular_R"] == pytest.approx(0.8130)
    foc = lit[lit["model"] == "FocusNetv2"]
    assert foc[foc["metric"] == "hd95"].set_index("label_name")["value"]["Mandible"] == pytest.approx(1.08)
    assert foc[(foc["metric"] == "dice") & (foc["label_name"] == "mean")]["value"].item() == pytest.approx(0.8451)
    assert len(foc[foc["metric"] == "dice"]) == 5  # four organs + the mean: only what was reported
    # tables as cited: FocusNetv2's mean from its Table 6 (ablation), MICCAI 2015's pairs flagged as merged
    assert foc[foc["label_name"] == "mean"]["table"].item().startswith("Table 6")
    best = lit[lit["model"] == "Best team per organ"].set_index("label_name")["flag"]
    assert best["Parotid_L"].startswith("merged left+right") and best["BrainStem"] == ""
    placed = place_literature(pd.DataFrame({"entry": [1], "rank": [1], "dice": [0.8]}), lit, ["dice"],
                              label_names={lab: s.name for lab, s in spec.labels.items()}).set_index("model")
    assert ("dice OpticNerve_L, OpticNerve_R, Parotid_L, Parotid_R, Submandibular_L, Submandibular_R: merged left+right"
            in placed.loc["Best team per organ", "caveats"])


@pytest.mark.parametrize("body, header, match", [
    ("s,c,T1,D,m,Brainstem,dice,80,,%,n/a,,\n", HEADER, r"row 1 \(line 2\), column 'label': unknown label 'Brainstem'"),
    ("s,c,T1,D,m,BrainStem,nsd,80,,%,n/a,,\n", HEADER, r"column 'metric': 'nsd' is not a metric of task han-oar-9"),
    ("s,c,T1,D,m,BrainStem,dice,80,,mm,n/a,,\n", HEADER,
     r"column 'unit': expected one of \['%', 'fraction'\] for dice"),
    ("s,c,T1,D,m,BrainStem,hd95,3,,%,medpy,,\n", HEADER, r"column 'unit': expected one of \['mm'\] for hd95"),
    ("s,c,T1,D,m,BrainStem,dice,eighty,,%,n/a,,\n", HEADER, r"column 'value': expected a number, got 'eighty'"),
    ("s,c,T1,D,m,BrainStem,dice,180,,%,n/a,,\n", HEADER, r"column 'value': dice must be at most 100 %"),
    ("s,c,T1,D,m,BrainStem,dice,0.8,,fraction,n/a,,\n# comment\ns,c,T1,D,m,BrainStem,dice,0.9,,fraction,n/a,,\n",
     HEADER, r"row 2 \(line 4\): duplicate of row 1"),
    (",c,T1,D,m,BrainStem,dice,80,,%,n/a,,\n", HEADER, r"column 'source': must not be empty"),
    ("s,c,,D,m,BrainStem,dice,80,,%,n/a,,\n", HEADER, r"column 'table': must not be empty"),
    ("s,c,T1,,m,BrainStem,dice,80,,%,n/a,,\n", HEADER, r"column 'dataset': must not be empty"),
    ("s,c,T1,D,m,BrainStem,hd95,3,,mm,,,\n", HEADER, r"column 'convention': must not be empty"),
    ("s,c,T1,D,m,BrainStem,hd95,3,,mm,pooled,,\n", HEADER, r"column 'convention': expected one of \['medpy'"),
    ("s,c,T1,D,m,BrainStem,dice,80,,%,medpy,,\n", HEADER, r"column 'convention': expected 'n/a' for dice"),
    ("s,c,T1,D,m,BrainStem,dice,80,x,%,n/a,,\n", HEADER, r"column 'sd': expected a number or nothing, got 'x'"),
    ("s,c,T1,D,m,BrainStem,dice,80,,%,n/a,\n", HEADER, r"expected 13 fields, got 12"),
    ("s,c,T1,D,m,BrainStem,dice,80,,%,n/a,,\ns,other,T1,D,m,Chiasm,dice,50,,%,n/a,,\n", HEADER,
     r"row 2 .*column 'citation': differs"),
    ("", HEADER.replace("label", "organ"), r"header: .*missing \['label'\], unknown \['organ'\]"),
])
def test_literature_loader_errors_name_row_and_column(tmp_path, body, header, match):
    path = _lit(tmp_path, body, header)
    with pytest.raises(ValueError, match=match) as e:
        load_literature(path, load_spec(HAN9))
    assert str(path) in str(e.value)


def test_literature_accepts_ids_fractions_and_comments(tmp_path):
    path = _lit(tmp_path, '# a comment\nX 2020,"Doe J. A paper, 2020",T2,"their test set, 10 cases",Net,1,dice,0.81,'
                          '0.05,fraction,n/a,,""\n')
    lit = load_literature(path, load_spec(HAN9))
    assert lit.loc[0, "label_name"] == "BrainStem" and lit.loc[0, "value"] == 0.81
    assert lit.loc[0, "citation"] == "Doe J. A paper, 2020" and lit.loc[0, "entry"] == "published:X 2020/Net"
    assert lit.loc[0, "dataset"] == "their test set, 10 cases" and lit.loc[0, "sd"] == 0.05


def test_task_validation_checks_the_literature_file(tmp_path):
    d = tmp_path / "han-oar-9"
    d.mkdir()
    (d / "task.yaml").write_text((HAN9 / "task.yaml").read_text())
    (d / "literature.csv").write_text(HEADER + "s,c,T1,D,m,Brainstem,dice,80,,%,n/a,,\n")
    with pytest.raises(TaskSpecError, match=r"literature: .*unknown label 'Brainstem'"):
        load_spec(d)


def test_place_literature_on_boards():
    spec = load_spec(HAN9)
    lit = load_literature(HAN9 / "literature.csv", spec)
    names = {lab: s.name for lab, s in spec.labels.items()}
    board = pd.DataFrame({"entry": [10, 11, 12], "rank": [1, 2, 3], "dice": [0.85, 0.80, 0.70],
                          "hd95": [2.0, 5.0, 9.0]})
    placed = place_literature(board, lit, ["dice"], {"dice": True}, label_names=names).set_index("model")
    # AnatomyNet's mean over the 9 organs = 0.79269 -> after 0.85 and 0.80: position 3
    anat = np.mean([86.65, 53.22, 92.51, 72.10, 70.64, 88.07, 87.35, 81.37, 81.30]) / 100
    assert placed.loc["AnatomyNet", "dice"] == pytest.approx(anat) and placed.loc["AnatomyNet", "position"] == 3
    # FocusNetv2 reports Dice for 4 organs and a mean: the paper's mean (equal weights) -> 0.8451, position 2
    assert placed.loc["FocusNetv2", "dice"] == pytest.approx(0.8451) and placed.loc["FocusNetv2", "position"] == 2
    assert "the paper's mean" in placed.loc["FocusNetv2", "note"]
    assert "not evaluated on this test set" in placed.loc["AnatomyNet", "note"]
    assert placed.loc["AnatomyNet", "dice:Chiasm"] == pytest.approx(0.5322)
    # unequal weights: a mean over organs is not comparable
    weighted = place_literature(board, lit, ["dice"], label_names=names,
                                label_weights={i: (100 if i == 1 else 50) for i in range(1, 10)}).set_index("model")
    assert not weighted.loc["FocusNetv2", "comparable"] and np.isnan(weighted.loc["FocusNetv2", "position"])
    assert weighted.loc["AnatomyNet", "comparable"]
    # mean of metric ranks (StructSeg-style board): FocusNetv2's Dice mean 0.8451 would rank 2 (after 0.85), its
    # HD95 over the 9 organs (19.56 / 9 = 2.17 mm) would rank 2 (after 2.0) -> mean rank 2 -> position
    # 1 + (board entries with a mean rank below 2) = 2
    two = place_literature(board.assign(mean_rank=[1.0, 2.0, 3.0]), lit, ["dice", "hd95"], label_names=names)
    two = two.set_index("model")
    assert two.loc["FocusNetv2", "hd95"] == pytest.approx(19.56 / 9) and two.loc["FocusNetv2", "position"] == 2
    # MICCAI 2015 best-per-organ reports no HD95: not comparable on this board
    assert not two.loc["Best team per organ", "comparable"] and "hd95: reported for 0 of 9 organs" in \
        two.loc["Best team per organ", "note"]
    # the board with published rows interleaved, unranked
    merged = with_literature(board, placed.reset_index())
    assert merged["entry"].tolist()[:2] == [10, "published:FocusNetv2 (Gao 2021)/FocusNetv2"]
    assert merged.loc[merged["badge"] == "published", "rank"].isna().all()
    assert len(merged) == 6


# -- ranking spec ----------------------------------------------------------------------------------------

def test_ranking_spec_phase_overrides_survive_a_round_trip():
    r = RankingSpec.model_validate({"method": "mean-of-metric-ranks", "metrics": ["dice", "hd95"], "team_entry": "best",
                                    "phases": {"test": {"team_entry": "latest", "bootstrap": 0}}})
    t = r.for_phase("test")
    assert t.team_entry == "latest" and t.bootstrap == 0 and t.method == "mean-of-metric-ranks" and not t.phases
    assert r.for_phase("validation").team_entry == "best"
    again = RankingSpec.model_validate(r.model_dump(mode="json"))
    assert again.for_phase("test") == t and again.for_phase("validation") == r.for_phase("validation")
    with pytest.raises(ValueError, match="nested"):
        RankingSpec.model_validate({"phases": {"a": {"phases": {"b": {}}}}})
    data = yaml.safe_load((HAN9 / "task.yaml").read_text())
    assert load_spec(HAN9).ranking.team_entry == data["ranking"]["team_entry"] == "best"


# -- plots -------------------------------------------------------------------------------------------------

def test_plots_render_valid_deterministic_svg():
    from arena.leaderboard.plots import boxplot_svg, forest_plot_svg, froc_svg, rank_distribution_svg

    df = _random_scores(n_entries=4, n_cases=8)
    boot = bootstrap_ranks(df, n=50, primary="dice")
    cmp = pairwise_compare(df, 0, 1, "dice", label_names={1: "BrainStem", 2: "Chiasm", 3: "Mandible"})
    svgs = [rank_distribution_svg(boot, names={0: "team zero"}), forest_plot_svg(cmp),
            boxplot_svg(df, [0, 1], "dice", label_names={1: "BrainStem"}),
            froc_svg({"A": ([0.5, 1, 2, 4], [0.2, 0.4, 0.5, 0.7]),
                      "B": {"fps_per_image": [0.0, 1, 8], "sensitivity": [0.0, 0.3, 0.6]}})]
    for svg in svgs:
        root = ET.fromstring(svg.encode())
        assert root.tag.endswith("svg")
    assert "team zero" in svgs[0] and "BrainStem" in svgs[1] and "BrainStem" in svgs[2]
    assert rank_distribution_svg(boot, names={0: "team zero"}) == svgs[0]
    with pytest.raises(ValueError, match="bootstrap_ranks"):
        rank_distribution_svg(bootstrap_ranks(df, n=0, primary="dice"))


def test_rank_and_bootstrap_by_spec_follow_phase_overrides():
    base = load_spec(HAN9)
    ranking = RankingSpec.model_validate({**base.ranking.model_dump(exclude_unset=True), "bootstrap": 40, "phases": {
        "test": {"method": "mean-of-metric-ranks"}, "validation": {"method": "rank-then-aggregate", "seed": 7}}})
    spec = base.model_copy(update={"ranking": ranking})
    df = _random_scores(n_entries=5, n_cases=10, n_labels=9)
    hib = {"dice": True, "hd95": False}
    expected = {
        None: aggregate_then_rank(df, "dice", hib, {i: 1.0 for i in range(1, 10)}),
        "test": structseg_rank(df, {i: 1.0 for i in range(1, 10)}),
        "validation": rank_then_aggregate(df, ["dice", "hd95"], hib),
    }
    for phase, board in expected.items():
        got = rank_by_spec(df, spec, phase)
        pd.testing.assert_frame_equal(got[["entry", "rank"]], board[["entry", "rank"]])
        boot = bootstrap_by_spec(df, spec, phase)
        assert boot.attrs["n"] == 40 and boot.attrs["seed"] == (7 if phase == "validation" else 0)
        assert boot.set_index("entry")["rank"].to_dict() == board.set_index("entry")["rank"].to_dict()
    assert "BrainStem" in " ".join(rank_by_spec(df, spec, "test").columns)
