"""Segmentation metrics: every convention against the library that defines it (medpy 0.5.2,
DeepMind surface-distance 0.1), the peer suites' own cases (DeepMind, MONAI, MetricsReloaded, medpy),
the cross-definition matrix on real masks, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arena.metrics import EmptyPolicy, mean_over_labels, score_segmentation, score_segmentation_conventions
from arena.metrics.segmentation import directed_distances, surface_distances
from peer_masks import build_mask, matrix_masks

medpy_binary = pytest.importorskip("medpy.metric.binary")
np.Inf, np.NaN = np.inf, np.nan  # surface-distance 0.1 still uses the NumPy 1 aliases
surface_distance = pytest.importorskip("surface_distance")


def _medpy(pred: np.ndarray, ref: np.ndarray, spacing) -> dict[str, float]:
    p, r = pred.astype(bool), ref.astype(bool)
    return {"dice": medpy_binary.dc(p, r), "jaccard": medpy_binary.jc(p, r), "hd95": medpy_binary.hd95(p, r, spacing),
            "hd": medpy_binary.hd(p, r, spacing), "assd": medpy_binary.assd(p, r, spacing),
            "asd_pred_to_ref": medpy_binary.asd(p, r, spacing)}


def _deepmind(pred: np.ndarray, ref: np.ndarray, spacing, tol: float) -> dict[str, float]:
    d = surface_distance.compute_surface_distances(ref.astype(bool), pred.astype(bool), list(spacing))
    gt2p, p2gt = surface_distance.compute_average_surface_distance(d)
    return {"dice": surface_distance.compute_dice_coefficient(ref.astype(bool), pred.astype(bool)),
            "hd95": surface_distance.compute_robust_hausdorff(d, 95), "hd": surface_distance.compute_robust_hausdorff(d, 100),
            "asd_pred_to_ref": p2gt, "asd_ref_to_pred": gt2p, "masd": (gt2p + p2gt) / 2,
            "nsd": surface_distance.compute_surface_dice_at_tolerance(d, tol)}


@st.composite
def mask_pairs(draw, ndim: int = 3):
    shape = tuple(draw(st.lists(st.integers(3, 14), min_size=ndim, max_size=ndim)))
    spacing = tuple(draw(st.lists(st.floats(0.3, 4.0), min_size=ndim, max_size=ndim)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    masks = []
    for _ in range(2):
        m = np.zeros(shape, dtype=np.uint8)
        for _ in range(draw(st.integers(1, 3))):
            lo = [rng.integers(0, n) for n in shape]
            hi = [min(n, lo_i + rng.integers(1, max(2, n // 2 + 1))) for lo_i, n in zip(lo, shape)]
            m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
        if draw(st.booleans()):
            m &= (rng.random(shape) > 0.2).astype(np.uint8)
        if not m.any():
            m[tuple(n // 2 for n in shape)] = 1
        masks.append(m)
    return masks[0], masks[1], spacing


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mask_pairs())
def test_medpy_convention_equals_medpy(pair):
    pred, ref, spacing = pair
    ours = score_segmentation(pred, ref, spacing, [1], convention="medpy")[1]
    for k, v in _medpy(pred, ref, spacing).items():
        assert ours[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mask_pairs(3), mask_pairs(2)), st.sampled_from([0.0, 0.5, 1.0, 2.5]))
def test_deepmind_convention_equals_surface_distance(pair, tol):
    pred, ref, spacing = pair
    ours = score_segmentation(pred, ref, spacing, [1], convention="deepmind", tolerance_mm=tol)[1]
    for k, v in _deepmind(pred, ref, spacing, tol).items():
        assert ours[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


@settings(max_examples=40, deadline=None)
@given(mask_pairs())
def test_directed_conventions(pair):
    """max-directed = max, mean-directed = mean of the two directed linear percentiles."""
    pred, ref, spacing = pair
    every = score_segmentation_conventions(pred, ref, spacing, [1])
    d_pr, d_rp = directed_distances(pred.astype(bool), ref.astype(bool), spacing)
    a, b = np.percentile(d_pr, 95), np.percentile(d_rp, 95)
    assert every["max-directed"][1]["hd95"] == pytest.approx(max(a, b), rel=1e-12)
    assert every["mean-directed"][1]["hd95"] == pytest.approx((a + b) / 2, rel=1e-12)
    for conv in ("medpy", "mean-directed", "deepmind"):  # shared metrics are computed once
        assert every[conv][1]["dice"] == every["max-directed"][1]["dice"]
    assert every["medpy"][1]["assd"] == every["max-directed"][1]["assd"]


# -- the peer suites' own cases -------------------------------------------------------------------
CASES = {c["id"]: c for c in json.loads((__import__("conftest").SHARED_DATA / "peer_cases" /
                                         "segmentation_cases.json").read_text())} \
    if (__import__("conftest").SHARED_DATA / "peer_cases").is_dir() else {}

# Peer cases for measures Arena does not offer (MONAI's chessboard/taxicab distances, MetricsReloaded's
# boundary IoU) are listed here, so the count of reproduced cases below cannot shrink silently.
NOT_ARENA_MEASURES = {"monai_asd/r20_shift_diag_taxicab", "monai_asd/r20_vs_r40_chessboard",
                      "monai_asd/r20_vs_r40_taxicab", "metricsreloaded/fig2_12_boundary_iou_d1",
                      "metricsreloaded/fig2_12_boundary_iou_d2"}


def _check(got, want, case, key):
    places = case.get("tolerance_places")
    atol = case.get("atol", 10.0 ** -places if places else 1e-9)
    rtol = case.get("rtol", 0.0)
    assert want is not None
    if isinstance(want, float) and math.isnan(want):
        assert got is None or math.isnan(got), (case["id"], key, got)
    elif isinstance(want, float) and math.isinf(want):
        assert got is not None and math.isinf(got), (case["id"], key, got)
    else:
        assert got == pytest.approx(want, rel=rtol, abs=atol), (case["id"], key, got, want)


def _score_peer(case: dict):
    """Our value for every key the peer case states, with the peer's empty-mask behaviour as a policy."""
    gt, pred = build_mask(case["gt"]), build_mask(case["pred"])
    spacing = case["spacing"] or [1.0] * gt.ndim
    d = case["definition"]
    policy = {"deepmind": EmptyPolicy("exclude", math.inf), "monai": EmptyPolicy("exclude", math.inf),
              "metricsreloaded": EmptyPolicy("perfect", "nan"), "medpy": EmptyPolicy()}[d]
    args = case.get("dict_args") or {}
    tol = case.get("tolerance", args.get("nsd", 1.0))
    perc = case.get("percentile") or args.get("hd_perc") or (95 if d in ("deepmind", "metricsreloaded") else 100)
    conv = {"deepmind": "deepmind", "monai": "max-directed", "metricsreloaded": "max-directed", "medpy": "medpy"}[d]
    s = score_segmentation(pred.astype(np.uint8), gt.astype(np.uint8), spacing, [1], conv, percentile=perc,
                           tolerance_mm=tol, empty_policy=policy)[1]
    both = not gt.any() and not pred.any()
    out = {}
    for key in case["expected"]:
        if d == "deepmind":
            if both:  # the library's NaN/inf for two empty masks: Arena's policy excludes the label
                out[key] = None
                continue
            sd = surface_distance.compute_surface_distances(gt, pred, list(spacing)) if gt.any() and pred.any() else None
            ours = surface_distances(pred, gt, spacing, "deepmind") if sd is not None else None
            out[key] = {
                "asd_gt2pred": s["asd_ref_to_pred"] if gt.any() else math.nan,
                "asd_pred2gt": s["asd_pred_to_ref"] if pred.any() else math.nan,
                "hd100": s["hd"], "hd95": s["hd95"], "surface_dice_1mm": s["nsd"],
                "dice": s["dice"],
                "surface_overlap_gt_1mm": (float(np.sum(ours.ref_weights[ours.ref_to_pred <= 1]) / np.sum(ours.ref_weights))
                                           if ours else (0.0 if gt.any() else math.nan)),
                "surface_overlap_pred_1mm": (float(np.sum(ours.pred_weights[ours.pred_to_ref <= 1]) / np.sum(ours.pred_weights))
                                             if ours else (0.0 if pred.any() else math.nan)),
            }[key]
        elif d == "monai":
            if key.endswith("_directed") or key == "asd_pred_to_gt":
                if not (gt.any() and pred.any()):
                    out[key] = math.inf
                    continue
                d_pg, _ = directed_distances(pred, gt, spacing)
                out[key] = float(np.percentile(d_pg, perc)) if key.endswith("_directed") else float(d_pg.mean())
            else:
                out[key] = {"euclidean": s["hd95"], "asd_symmetric": s["assd"], "nsd_class1": s["nsd"]}.get(key)
                if key == "nsd_background":
                    out[key] = score_segmentation((~pred).astype(np.uint8), (~gt).astype(np.uint8), spacing, [1],
                                                  conv, tolerance_mm=tol)[1]["nsd"]
        elif d == "metricsreloaded":
            out[key] = {"dsc": s["dice"], "iou": s["jaccard"], "assd": s["assd"], "masd": s["masd"], "nsd": s["nsd"],
                        "hd100": s["hd"], "hd95": s["hd95"]}.get(key)
            if key == "hd100":
                out[key] = score_segmentation(pred.astype(np.uint8), gt.astype(np.uint8), spacing, [1], conv,
                                              percentile=100, empty_policy=policy)[1]["hd"]
        else:  # medpy
            out[key] = {"asd": s["asd_pred_to_ref"], "assd": s["assd"], "hd": s["hd"], "hd95": s["hd95"]}[key]
    return out


@pytest.mark.parametrize("case_id", sorted(CASES) or ["(no shared data)"])
def test_peer_case(case_id, shared_data):
    if case_id in NOT_ARENA_MEASURES:
        pytest.skip("a measure Arena does not offer")
    case = CASES[case_id]
    got = _score_peer(case)
    if case["definition"] == "deepmind" and not build_mask(case["gt"]).any() and not build_mask(case["pred"]).any():
        # surface-distance gives NaN/inf for two empty masks; Arena's policy excludes the label (None)
        assert all(got[k] is None for k in case["expected"])
        return
    for key, want in case["expected"].items():
        if "chessboard" in key or "taxicab" in key or key == "boundary_iou":
            continue  # MONAI's non-Euclidean distances, MetricsReloaded's boundary IoU: not Arena measures
        _check(got[key], want, case, key)
        ref = (case.get("reference_computed") or {}).get(key)
        if ref is not None and not (isinstance(ref, float) and (math.isnan(ref) or math.isinf(ref))):
            assert got[key] == pytest.approx(ref, rel=1e-6, abs=1e-6), (case_id, key, "reference_computed")


def test_peer_suite_coverage(shared_data):
    assert len(CASES) == 45
    assert len(set(CASES) - NOT_ARENA_MEASURES) == 40


def test_cross_definition_matrix(shared_data):
    """24 inputs (synthetic, 15 real TotalSegmentator organ pairs, shifted PDDCA organs) under every convention."""
    matrix = json.loads((shared_data / "peer_cases" / "cross_definition_matrix.json").read_text())
    assert len(matrix) == 24
    for entry in matrix:
        gt, pred = matrix_masks(entry, CASES, shared_data)
        assert (int(gt.sum()), int(pred.sum())) == (entry["n_gt"], entry["n_pred"]), entry["id"]
        sp = entry["spacing"]
        if not pred.any():  # an organ one model missed: every library's "undefined", Arena's policy
            s = score_segmentation(pred.astype(np.uint8), gt.astype(np.uint8), sp, [1])[1]
            assert s["dice"] == 0.0 and s["hd95"] == EmptyPolicy().worst_distance(gt.shape, sp)
            continue
        every = score_segmentation_conventions(pred.astype(np.uint8), gt.astype(np.uint8), sp, [1])
        mp, mx, dm = every["medpy"][1], every["max-directed"][1], every["deepmind"][1]
        mx100 = score_segmentation(pred.astype(np.uint8), gt.astype(np.uint8), sp, [1], "max-directed", 100)[1]
        want = {
            ("medpy", "hd100"): mp["hd"], ("medpy", "hd95"): mp["hd95"], ("medpy", "assd"): mp["assd"],
            ("medpy", "dc"): mp["dice"],
            ("monai", "hd100"): mx100["hd95"], ("monai", "hd95"): mx["hd95"], ("monai", "asd_symmetric"): mx["assd"],
            ("metricsreloaded", "hd100"): mx["hd"], ("metricsreloaded", "hd95"): mx["hd95"],
            ("metricsreloaded", "assd"): mx["assd"], ("metricsreloaded", "masd"): mx["masd"],
            ("metricsreloaded", "nsd"): mx["nsd"], ("metricsreloaded", "dsc"): mx["dice"],
            ("deepmind", "hd100"): dm["hd"], ("deepmind", "hd95"): dm["hd95"],
            ("deepmind", "asd_gt2pred"): dm["asd_ref_to_pred"], ("deepmind", "asd_pred2gt"): dm["asd_pred_to_ref"],
            ("deepmind", "nsd"): dm["nsd"], ("deepmind", "dice"): dm["dice"],
        }
        for (lib, key), ours in want.items():
            assert ours == pytest.approx(entry[lib][key], rel=1e-6, abs=1e-6), (entry["id"], lib, key)


# -- real data, policies, bad input ---------------------------------------------------------------
def test_real_pddca_masks_against_medpy(shared_data):
    """A real PDDCA label map vs. a copy shifted by one voxel with a stray blob: every organ as medpy."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(shared_data / "pddca" / "0522c0002" / "labelmap_9oar.nii.gz"))
    ref = sitk.GetArrayFromImage(img).astype(np.uint8)
    spacing = img.GetSpacing()[::-1]
    pred = np.roll(ref, 1, axis=2)
    pred[5:8, 100:104, 100:104] = 3  # a stray fragment of the mandible label
    labels = sorted(int(v) for v in np.unique(ref) if v)
    ours = score_segmentation(pred, ref, spacing, labels)
    for lab in labels:
        p, r = pred == lab, ref == lab
        z, y, x = np.nonzero(p | r)  # medpy on the bounding box only, for speed; identical by construction
        box = (slice(max(z.min() - 1, 0), z.max() + 2), slice(max(y.min() - 1, 0), y.max() + 2),
               slice(max(x.min() - 1, 0), x.max() + 2))
        theirs = _medpy(p[box], r[box], spacing)
        for k in ("dice", "hd95", "hd", "assd"):
            assert ours[lab][k] == pytest.approx(theirs[k], rel=1e-12), (lab, k)
    assert ours[3]["hd"] > 50  # the fragment is far away


def test_totalsegmentator_two_models(shared_data):
    """Two real models' segmentations of one CT, deepmind convention vs surface-distance itself."""
    import SimpleITK as sitk

    a = sitk.ReadImage(str(shared_data / "totalseg" / "example_seg.nii.gz"))
    b = sitk.ReadImage(str(shared_data / "totalseg" / "example_seg_fast.nii.gz"))
    A, B = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
    labels = sorted(set(np.unique(A).tolist()) & set(np.unique(B).tolist()) - {0})
    spacing = a.GetSpacing()[::-1]
    scores = score_segmentation(B, A, spacing, labels, "deepmind", tolerance_mm=2.0)
    dice = [s["dice"] for s in scores.values()]
    assert min(dice) > 0.5 and np.median(dice) > 0.8
    for lab in labels[:8]:
        theirs = _deepmind(B == lab, A == lab, spacing, 2.0)
        assert scores[lab]["hd95"] == pytest.approx(theirs["hd95"], rel=1e-12)
        assert scores[lab]["nsd"] == pytest.approx(theirs["nsd"], rel=1e-12)


def test_volumes_and_overlap():
    ref = np.zeros((4, 5, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1  # 8 voxels
    pred = np.zeros_like(ref)
    pred[1:3, 1:3, 1:4] = 1  # 12 voxels, 8 shared
    s = score_segmentation(pred, ref, (3.0, 1.0, 2.0), [1])[1]
    assert s["volume_ref"] == 48.0 and s["volume_pred"] == 72.0 and s["volume_diff"] == 24.0
    assert s["dice"] == pytest.approx(16 / 20) and s["jaccard"] == pytest.approx(8 / 12)


def test_empty_policy():
    ref = np.zeros((4, 5, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    pred = np.zeros_like(ref)
    spacing = (3.0, 1.0, 2.0)
    diag = math.sqrt((4 * 3) ** 2 + 5**2 + (6 * 2) ** 2)
    for conv in ("medpy", "deepmind"):
        s = score_segmentation(pred, ref, spacing, [1, 2], conv)
        assert s[1]["dice"] == 0.0 and s[1]["nsd"] == 0.0 and s[1]["volume_ref"] == 48.0
        assert s[1]["hd95"] == s[1]["hd"] == s[1]["assd"] == diag
        assert all(v is None for v in s[2].values())  # absent from both: excluded
    s = score_segmentation(pred, ref, spacing, [1, 2], empty_policy=EmptyPolicy("perfect", 373.0))
    assert s[1]["hd95"] == 373.0 and s[2]["dice"] == 1.0 and s[2]["hd95"] == 0.0 and s[2]["nsd"] == 1.0
    s = score_segmentation(pred, ref, spacing, [1], empty_policy=EmptyPolicy(one_empty_distance="nan"))
    assert math.isnan(s[1]["hd95"]) and s[1]["dice"] == 0.0
    assert mean_over_labels({1: {"dice": 0.5}, 2: {"dice": None}, 3: {"dice": 1.0}}, "dice", {1: 1, 3: 3}) == 0.875


def test_reference_empty_exclude():
    """PDDCA's rule: a label the reference lacks is not scored, even where the prediction has it; a label the
    reference has but the prediction misses still scores as missed."""
    ref = np.zeros((4, 5, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    pred = np.zeros_like(ref)
    pred[0:2, 3:5, 3:5] = 2  # label 2 predicted, absent from the reference
    for conv in ("medpy", "deepmind"):
        scored = score_segmentation(pred, ref, (1.0, 1.0, 1.0), [1, 2, 3], conv)
        assert scored[2]["dice"] == 0.0 and scored[2]["hd95"] > 0  # default: a hallucination
        s = score_segmentation(pred, ref, (1.0, 1.0, 1.0), [1, 2, 3], conv,
                               empty_policy=EmptyPolicy(reference_empty="exclude"))
        assert all(v is None for v in s[2].values()) and all(v is None for v in s[3].values())
        assert s[1]["dice"] == 0.0 and s[1]["hd95"] == scored[1]["hd95"]  # missed: still scored
    # it overrides both_empty: perfect (absent from both is absent from the reference)
    s = score_segmentation(pred, ref, (1.0, 1.0, 1.0), [3], empty_policy=EmptyPolicy("perfect", reference_empty="exclude"))
    assert s[3]["dice"] is None


def test_label_at_image_edge_and_other_labels_ignored():
    """Boundaries at the image edge count (outside is background); other labels never leak in."""
    ref = np.zeros((6, 6, 6), np.uint8)
    ref[0:3, 0:6, 0:6] = 1
    ref[4:6, 0:2, 0:2] = 2
    pred = ref.copy()
    pred[3, :, :] = 1
    s = score_segmentation(pred, ref, (1.0, 1.0, 1.0), [1, 2])
    m = _medpy(pred == 1, ref == 1, (1.0, 1.0, 1.0))
    assert s[1]["hd95"] == pytest.approx(m["hd95"]) and s[1]["assd"] == pytest.approx(m["assd"])
    assert s[2]["dice"] == 1.0 and s[2]["hd"] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(prediction=np.zeros((3, 3), np.uint8), reference=np.zeros((3, 4), np.uint8)), "prediction: shape"),
    (dict(prediction=np.zeros((3, 3), np.float32), reference=np.zeros((3, 3), np.uint8)), "prediction: expected an integer"),
    (dict(reference=np.zeros((3, 3), np.float64)), "reference: expected an integer"),
    (dict(spacing=(1.0,)), "spacing: expected 2 values"),
    (dict(spacing=(1.0, 0.0)), "spacing: expected positive"),
    (dict(spacing=(1.0, -2.0)), "spacing: expected positive"),
    (dict(spacing=(1.0, float("nan"))), "spacing: expected positive"),
    (dict(spacing="ab"), "spacing: expected"),
    (dict(convention="plastimatch"), "convention: expected one of"),
    (dict(labels=[0, 1]), "labels: expected positive"),
    (dict(percentile=0), "percentile"),
    (dict(percentile=float("nan")), "percentile"),
    (dict(tolerance_mm=-1), "tolerance_mm"),
])
def test_bad_input_names_the_argument(kwargs, message):
    args = dict(prediction=np.zeros((3, 3), np.uint8), reference=np.zeros((3, 3), np.uint8), spacing=(1.0, 1.0),
                labels=[1])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        score_segmentation(**args)


def test_deepmind_needs_2d_or_3d():
    with pytest.raises(ValueError, match="deepmind convention needs 2-D or 3-D"):
        score_segmentation(np.ones((2, 2, 2, 2), np.uint8), np.ones((2, 2, 2, 2), np.uint8), (1,) * 4, [1], "deepmind")
