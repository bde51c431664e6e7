"""Detection metrics: the peer suites' own cases (MONAI FROC, LUNA16 evaluation script, picai_eval AP),
AP@0.5 against pycocotools on random boxes (hypothesis), hand examples (greedy one-to-one, DigestPath
normal-region FROC, AP methods), empty and bad input, the loaders, and CPM on the real LUNA16
annotations against an independent port of the LUNA16 script."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arena.metrics import detection as det
from arena.metrics.detection import (
    DIGESTPATH_FP_RATES,
    LUNA16_FP_RATES,
    average_precision,
    best_f1,
    cpm,
    froc_curve,
    froc_curve_from_scores,
    match_detections,
    monai_fp_tp_probs,
    monai_froc_curve,
    monai_froc_score,
    operating_point,
    pr_curve,
    pr_curve_from_scores,
    read_detections,
    recall_at_precision,
    score_detection,
    sensitivity_at,
)

LUNA16_CASES = ["L1_basic", "L2_missed_and_boundary", "L3_no_false_positives", "L4_empty_scan_and_ties"]


# ---------------------------------------------------------------------------------------------
# peer cases
# ---------------------------------------------------------------------------------------------


def _monai_cases(shared_data):
    return json.loads((shared_data / "peer_cases" / "detection_cases.json").read_text())["cases"]


@pytest.mark.parametrize("k", range(5))
def test_monai_froc_peer_cases(shared_data, k):
    cases = _monai_cases(shared_data)
    assert len(cases) == 5
    case = cases[k]
    inp, exp = case["input"], case["expected"]
    if case["function"] == "compute_fp_tp_probs":
        fp, tp, n = monai_fp_tp_probs(inp["probs"], inp["y_coord"], inp["x_coord"], np.array(inp["evaluation_mask"]),
                                      inp.get("labels_to_exclude"), inp["resolution_level"])
        np.testing.assert_allclose(fp, exp["fp_probs"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(tp, exp["tp_probs"], rtol=0, atol=1e-12)
        assert n == exp["num_targets"]
    else:
        fps, sens = monai_froc_curve(inp["fp_probs"], inp["tp_probs"], inp["num_targets"], inp["num_images"])
        score = monai_froc_score(fps, sens, inp["eval_thresholds"])
        assert score == pytest.approx(exp["score"], abs=1e-8)  # MONAI's assertAlmostEqual(places=8)
        assert score == pytest.approx(case["restated_value"], abs=1e-12)


def _luna16_inputs(shared_data, case):
    d = shared_data / "peer_cases" / "luna16" / case
    gt = pd.concat([read_detections(d / "annotations.csv").assign(ignore=False),
                    read_detections(d / "annotations_excluded.csv", default_diameter_mm=10).assign(ignore=True)],
                   ignore_index=True)
    pred = read_detections(d / "predictions.csv")
    images = [s.strip() for s in (d / "seriesuids.csv").read_text().splitlines() if s.strip()]
    return pred, gt, images


@pytest.mark.parametrize("case", LUNA16_CASES)
def test_luna16_peer_cases(shared_data, case):
    exp_all = json.loads((shared_data / "peer_cases" / "luna16" / "expected.json").read_text())
    assert list(exp_all["fixed_fps"]) == list(LUNA16_FP_RATES)
    exp = exp_all["cases"][case]
    pred, gt, images = _luna16_inputs(shared_data, case)
    m = match_detections(pred, gt, criterion="inside-radius", matching="luna16", images=images)
    curve = froc_curve(m)
    np.testing.assert_allclose(curve.fps_per_image, exp["froc_fps"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.sensitivity, exp["froc_sens"], rtol=0, atol=1e-12)
    assert curve.thresholds.tolist() == exp["thresholds"]  # json reads Infinity as inf
    np.testing.assert_allclose(sensitivity_at(curve, readout="nearest"), exp["sens_at_fixed_fps_nearest"], atol=1e-12)
    np.testing.assert_allclose(sensitivity_at(curve, readout="interpolated"), exp["sens_at_fixed_fps_interp"],
                               atol=1e-12)
    assert cpm(curve, readout="nearest") == pytest.approx(exp["cpm_nearest"], abs=1e-12)
    assert cpm(curve, readout="interpolated") == pytest.approx(exp["cpm_interp"], abs=1e-12)
    res = score_detection(pred, gt, criterion="inside-radius", matching="luna16", images=images)
    c, ec = res["counts"], exp["counts"]
    assert (c["images"], c["targets"], c["detected_targets"], c["fp"]) == (
        ec["n_scans"], ec["n_lesions"], ec["n_detected"], ec["n_fp"])
    assert res["froc"]["cpm_nearest"] == pytest.approx(exp["cpm_nearest"], abs=1e-12)
    assert res["froc"]["cpm_interpolated"] == pytest.approx(exp["cpm_interp"], abs=1e-12)
    assert res["froc"]["curve"]["thresholds"] == exp["thresholds"]


def test_luna16_semantics_on_peer_case_l1(shared_data):
    """L1: a double detection on nodule A is ignored, a candidate on an excluded finding is ignored."""
    pred, gt, images = _luna16_inputs(shared_data, "L1_basic")
    m = match_detections(pred, gt, criterion="inside-radius", matching="luna16", images=images)
    by_prob = dict(zip(pred.probability, m.pred_status.tolist()))
    assert by_prob[0.9] == 1 and by_prob[0.5] == -1  # A: max-probability candidate TP, the other ignored
    assert by_prob[0.95] == -1 and by_prob[0.85] == -1  # on excluded findings (A 10 mm default, C 4 mm)
    assert by_prob[0.6] == 0  # B at 4.5 mm from a 8 mm nodule: outside the radius
    # greedy one-to-one on the same data: the double detection becomes a FP
    g = match_detections(pred, gt, criterion="inside-radius", matching="greedy", images=images)
    assert dict(zip(pred.probability, g.pred_status.tolist()))[0.5] == 0


def _picai_lesions(shared_data, name):
    d = json.loads((shared_data / "peer_cases" / "picai_eval" / "output-expected" / name).read_text())
    items = [(int(float(a)), float(b)) for case in sorted(d["lesion_results"]) for a, b, _ in d["lesion_results"][case]]
    return d, items


def test_picai_eval_ap(shared_data):
    """picai_eval's AP is sklearn's step integral over lesion candidates; missed lesions (confidence 0)
    only enter the recall denominator. Reproduced from picai's own lesion_results."""
    d, items = _picai_lesions(shared_data, "metrics-full-expected.json")
    n_gt = sum(lab for lab, _ in items)
    cands = [(lab, c) for lab, c in items if c > 0]
    curve = pr_curve_from_scores([c for _, c in cands], [lab == 1 for lab, _ in cands], n_gt)
    assert average_precision(curve, "step") == pytest.approx(d["AP"], abs=1e-12)
    # picai's precision/recall arrays: [threshold-0 row, ..., sentinel (P=1, R=0)], ascending threshold
    np.testing.assert_allclose(curve.precision, d["precision"][1:-1][::-1], atol=1e-12)
    np.testing.assert_allclose(curve.recall, d["recall"][1:-1][::-1], atol=1e-12)
    for name in ("metrics-expected.json", "metrics-minimal-expected.json"):
        d2, items2 = _picai_lesions(shared_data, name)
        assert items2 == items
        if "AP" in d2:
            assert average_precision(curve, "step") == pytest.approx(d2["AP"], abs=1e-12)


def test_picai_eval_ap_main_variant(shared_data):
    """metrics-main-expected.json's AP 0.6349 = the same step integral when missed lesions are counted
    as detections at confidence 0 (i.e. without picai's `precision[thresholds == 0] = 0`)."""
    d, items = _picai_lesions(shared_data, "metrics-main-expected.json")
    n_gt = sum(lab for lab, _ in items)
    curve = pr_curve_from_scores([c for _, c in items], [lab == 1 for lab, _ in items], n_gt)
    assert average_precision(curve, "step") == pytest.approx(d["AP"], abs=1e-12)


# ---------------------------------------------------------------------------------------------
# pycocotools
# ---------------------------------------------------------------------------------------------


def _coco_ap50(gt_xywh, gt_img, dt_xywh, dt_img, scores, images):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns = [{"id": k + 1, "image_id": int(im), "category_id": 1, "bbox": [float(v) for v in b],
             "area": float(b[2] * b[3]), "iscrowd": 0} for k, (b, im) in enumerate(zip(gt_xywh, gt_img))]
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = {"images": [{"id": int(i)} for i in images], "annotations": anns, "categories": [{"id": 1}]}
        cg.createIndex()
        cd = cg.loadRes([{"image_id": int(im), "category_id": 1, "bbox": [float(v) for v in b], "score": float(s)}
                         for b, im, s in zip(dt_xywh, dt_img, scores)])
        ev = COCOeval(cg, cd, "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.params.maxDets = [10_000]  # default 100 per image would drop detections
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.imgIds = [int(i) for i in images]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][0, :, 0, 0, -1]
    return float(np.mean(prec[prec > -1])) if (prec > -1).any() else -1.0


@st.composite
def box_sets(draw):
    """Random boxes, continuous coordinates and scores drawn from a seeded generator (hypothesis picks
    the structure: images, counts, jitter, duplicates). Continuous values avoid exact score ties and
    IoU == 0.5 boundaries, where pycocotools' per-detection tie order differs from Arena's grouping."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_img = draw(st.integers(1, 5))
    per = draw(st.lists(st.integers(0, 12), min_size=n_img, max_size=n_img))
    gimg = np.repeat(np.arange(n_img), per)
    n = gimg.size
    g = np.column_stack([rng.uniform(0, 100, n), rng.uniform(0, 100, n), rng.uniform(2, 30, n), rng.uniform(2, 30, n)])
    jitter = draw(st.floats(0.02, 0.4))
    copies = draw(st.integers(1, 3))
    dt, dimg = [], []
    for _ in range(copies):
        keep = rng.random(n) < draw(st.floats(0.0, 1.0))
        j = rng.normal(0, jitter, (int(keep.sum()), 4)) * g[keep][:, [2, 3, 2, 3]]
        b = g[keep] + j
        b[:, 2:] = np.maximum(b[:, 2:], 0.5)
        dt.append(b)
        dimg.append(gimg[keep])
    k = draw(st.integers(0, 15))
    dt.append(np.column_stack([rng.uniform(0, 100, k), rng.uniform(0, 100, k), rng.uniform(2, 30, k),
                               rng.uniform(2, 30, k)]))
    dimg.append(rng.integers(0, n_img, k))
    dt_b, dt_i = np.concatenate(dt), np.concatenate(dimg)
    return g, gimg, dt_b, dt_i, rng.random(len(dt_b)), list(range(n_img))


def _xyxy(b):
    return {"x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 0] + b[:, 2], "y1": b[:, 1] + b[:, 3]}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(box_sets())
def test_ap50_equals_pycocotools(data):
    pytest.importorskip("pycocotools")
    g, gimg, d, dimg, scores, images = data
    gt = pd.DataFrame({"image": gimg, **_xyxy(g)})
    pred = pd.DataFrame({"image": dimg, **_xyxy(d), "probability": scores})
    res = score_detection(pred, gt, criterion="iou", threshold=0.5, images=images)
    ours = res["average_precision"]["coco101"]
    if len(g) == 0:
        assert math.isnan(ours)
        return
    if len(d) == 0:
        assert ours == 0.0
        return
    assert ours == pytest.approx(_coco_ap50(g, gimg, d, dimg, scores, images), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# hand examples
# ---------------------------------------------------------------------------------------------


def test_greedy_two_predictions_on_one_target():
    gt = pd.DataFrame({"image": ["a"], "x": [0.0], "y": [0.0]})
    pred = pd.DataFrame({"image": ["a", "a"], "x": [0.5, 0.0], "y": [0.0, 0.2], "probability": [0.9, 0.8]})
    m = match_detections(pred, gt, criterion="distance", threshold=1.0)
    assert m.pred_status.tolist() == [1, 0]  # the more confident one wins although it is farther
    assert m.pred_gt.tolist() == [0, -1]
    assert m.gt_score.tolist() == [0.9] and m.gt_pred.tolist() == [0]
    assert m.pred_value[0] == pytest.approx(0.5)
    # LUNA16 semantics: the second one is ignored instead of a FP
    gt_r = gt.assign(radius=1.0)
    m16 = match_detections(pred, gt_r, criterion="inside-radius", matching="luna16")
    assert m16.pred_status.tolist() == [1, -1]
    # boxes: same with IoU
    gtb = pd.DataFrame({"image": [1], "x0": [0.0], "y0": [0.0], "x1": [10.0], "y1": [10.0]})
    pb = pd.DataFrame({"image": [1, 1], "x0": [1.0, 0.0], "y0": [0.0, 0.0], "x1": [11.0, 10.0], "y1": [10.0, 10.0],
                       "probability": [0.3, 0.2]})
    mb = match_detections(pb, gtb, criterion="iou", threshold=0.5)
    assert mb.pred_status.tolist() == [1, 0]
    assert mb.pred_value[0] == pytest.approx(90 / 110)
    pr = pr_curve(mb)
    assert pr.thresholds.tolist() == [0.3, 0.2] and pr.precision.tolist() == [1.0, 0.5] and pr.recall.tolist() == [1.0, 1.0]


def test_greedy_order_and_best_target():
    """A prediction takes the nearest free target; greedy is not an optimal assignment: the confident
    prediction between two targets takes the nearer one, the second prediction (only near that same
    target) is then a FP, and the other target stays missed."""
    gt = pd.DataFrame({"image": [0, 0], "x": [0.0, 3.0], "y": [0.0, 0.0]})
    pred = pd.DataFrame({"image": [0, 0], "x": [1.0, -0.5], "y": [0.0, 0.0], "probability": [0.9, 0.8]})
    m = match_detections(pred, gt, criterion="distance", threshold=2.0)
    assert m.pred_status.tolist() == [1, 0]
    assert m.pred_gt.tolist() == [0, -1]
    assert np.isnan(m.gt_score[1]) and m.gt_max_probability[1] == 0.9  # within reach of the 0.9 one
    # equal probabilities: input order decides
    m2 = match_detections(pred.assign(probability=0.5), gt, criterion="distance", threshold=2.0)
    assert m2.pred_status.tolist() == [1, 0]


def test_ignore_regions_greedy():
    gt = pd.DataFrame({"image": [0, 0], "x": [0.0, 50.0], "y": [0.0, 0.0], "ignore": [False, True]})
    pred = pd.DataFrame({"image": [0, 0, 0, 0], "x": [0.0, 0.5, 50.0, 51.0], "y": [0.0] * 4,
                         "probability": [0.9, 0.8, 0.7, 0.6]})
    m = match_detections(pred, gt, criterion="distance", threshold=2.0)
    assert m.pred_status.tolist() == [1, 0, -1, -1]
    assert m.n_gt == 1
    res = score_detection(pred, gt, criterion="distance", threshold=2.0)
    assert res["counts"]["ignored"] == 2 and res["counts"]["fp"] == 1 and res["counts"]["targets"] == 1


def test_centre_in_box_and_box_z_planes():
    gt = pd.DataFrame({"image": [0, 0], "x0": [0.0, 5.0], "y0": [0.0, 0.0], "x1": [10.0, 15.0], "y1": [10.0, 10.0]})
    pts = pd.DataFrame({"image": [0, 0, 0], "x": [8.0, 7.0, 10.0], "y": [5.0, 5.0, 10.0], "probability": [0.9, 0.8, 0.7]})
    m = match_detections(pts, gt, criterion="centre-in-box")
    # (8, 5) is in both boxes, nearer to box 1's centre (10, 5) than box 0's (5, 5); (7, 5) then gets
    # box 0; (10, 10) is on both boxes' borders (inclusive) but both are taken
    assert m.pred_gt.tolist() == [1, 0, -1] and m.pred_status.tolist() == [1, 1, 0]
    gz = gt.assign(z=[1.0, 2.0])
    pz = pd.DataFrame({"image": [0, 0], "x0": [0.0, 5.0], "y0": [0.0, 0.0], "x1": [10.0, 15.0], "y1": [10.0, 10.0],
                       "z": [2.0, 1.0], "probability": [0.9, 0.8]})
    assert match_detections(pz, gz, criterion="iou", threshold=0.5).pred_status.tolist() == [0, 0]
    assert match_detections(pz.assign(z=[1.0, 2.0]), gz, criterion="iou", threshold=0.5).pred_status.tolist() == [1, 1]


def test_digestpath_normal_region_froc_hand_example():
    """One positive image (2 targets) and two normal images. The FP on the positive image (0.95) is not
    a normal-region FP. Hit scores 0.9, 0.6; normal-region FPs 0.8, 0.5 (image n1) and 0.7 (n2).
    Thresholds 0.9 / 0.8 / 0.7 / 0.6 / 0.5 give (FP per normal image, sensitivity):
    (0, .5), (.5, .5), (1, .5), (1, 1), (1.5, 1), after (0, 0)."""
    gt = pd.DataFrame({"image": ["p", "p"], "x0": [0.0, 100.0], "y0": [0.0, 0.0], "x1": [10.0, 110.0],
                       "y1": [10.0, 10.0]})
    pred = pd.DataFrame({"image": ["p", "p", "p", "n1", "n1", "n2"],
                         "x0": [0.0, 100.0, 50.0, 0.0, 20.0, 0.0], "y0": [0.0] * 6,
                         "x1": [10.0, 110.0, 60.0, 10.0, 30.0, 10.0], "y1": [10.0] * 6,
                         "probability": [0.9, 0.6, 0.95, 0.8, 0.5, 0.7]})
    images = ["p", "n1", "n2"]
    m = match_detections(pred, gt, criterion="iou", threshold=0.5, images=images)
    c = froc_curve(m, fp_on="negative", drop_intermediate=False)
    np.testing.assert_allclose(c.fps_per_image, [0, 0, 0.5, 1, 1, 1.5])
    np.testing.assert_allclose(c.sensitivity, [0, 0.5, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(sensitivity_at(c, [0.25, 0.5, 1.0]), [0.5, 0.5, 1.0])
    cc = froc_curve(m, fp_on="negative", fp_axis="count")
    # absolute normal-region FP counts 1, 2, 4, ..., 32: 0.5 at 1 FP, then 1
    assert cpm(cc, DIGESTPATH_FP_RATES) == pytest.approx((0.5 + 5 * 1.0) / 6)
    res = score_detection(pred, gt, criterion="iou", threshold=0.5, images=images, normal_fp_rates=(0.25, 0.5, 1.0))
    assert res["counts"]["fp"] == 4 and res["counts"]["fp_on_negative_images"] == 3
    assert res["counts"]["negative_images"] == 2
    assert res["normal_region_froc"]["score"] == pytest.approx(2 / 3)
    # over all images instead, the positive-image FP at 0.95 comes first
    assert froc_curve(m).fps_per_image[1] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="negative image"):
        froc_curve(match_detections(pred[pred.image == "p"], gt, criterion="iou", threshold=0.5), fp_on="negative")


def test_ap_methods_hand_example():
    """Ranked TP, FP, TP, FP, TP with 4 targets: P = 1, 1/2, 2/3, 1/2, 3/5 at R = 1/4, 1/4, 1/2, 1/2, 3/4."""
    curve = pr_curve_from_scores([0.9, 0.8, 0.7, 0.6, 0.5], [True, False, True, False, True], 4)
    assert average_precision(curve, "step") == pytest.approx(0.25 * 1 + 0.25 * 2 / 3 + 0.25 * 3 / 5)
    assert average_precision(curve, "all-point") == pytest.approx(0.25 * 1 + 0.25 * 2 / 3 + 0.25 * 3 / 5)
    # the envelope matters when precision rises again
    c2 = pr_curve_from_scores([0.9, 0.8, 0.7, 0.6], [False, True, True, True], 4)
    assert average_precision(c2, "step") == pytest.approx(0.25 * 1 / 2 + 0.25 * 2 / 3 + 0.25 * 3 / 4)
    assert average_precision(c2, "all-point") == pytest.approx(0.75 * 3 / 4)
    # 101 points: recall 0..0.75 reached (76 points) at envelope 3/4, the rest 0
    assert average_precision(c2, "coco101") == pytest.approx(76 * 0.75 / 101)
    assert average_precision(c2, "voc2007") == pytest.approx(8 * 0.75 / 11)
    op = operating_point(curve, 0.7)
    assert (op["tp"], op["fp"], op["fn"]) == (2, 1, 2)
    assert op["precision"] == pytest.approx(2 / 3) and op["recall"] == pytest.approx(0.5)
    assert op["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    bf = best_f1(curve)
    assert bf["score_threshold"] == 0.5 and bf["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert recall_at_precision(curve, 0.6) == pytest.approx(0.75)
    assert recall_at_precision(curve, 0.99) == pytest.approx(0.25)
    # ties form one operating point: order of tied predictions does not matter
    a = pr_curve_from_scores([0.5, 0.5, 0.1], [True, False, True], 2)
    b = pr_curve_from_scores([0.5, 0.5, 0.1], [False, True, True], 2)
    for meth in det.AP_METHODS:
        assert average_precision(a, meth) == average_precision(b, meth)


def test_froc_curve_drop_intermediate_and_readouts():
    # 3 targets, 2 images; hits at 0.9, 0.5, missed one; FPs at 0.8, 0.7, 0.6
    full = froc_curve_from_scores([0.9, 0.5, np.nan], [0.8, 0.7, 0.6], 2, drop_intermediate=False)
    np.testing.assert_allclose(full.fps_per_image, [0, 0, 0.5, 1.0, 1.5, 1.5])
    np.testing.assert_allclose(full.sensitivity, [0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
    dropped = froc_curve_from_scores([0.9, 0.5, np.nan], [0.8, 0.7, 0.6], 2)
    np.testing.assert_allclose(dropped.fps_per_image, [0, 0, 1.5, 1.5])  # collinear points gone (sklearn)
    rates = [0.25, 0.5, 1, 2]
    # interpolation does not care; the nearest read-out does
    np.testing.assert_allclose(sensitivity_at(full, rates), sensitivity_at(dropped, rates))
    # nearest point, the first one on equal distance: 0.25 -> (0, 0); 0.5 -> (.5, 1/3); 1 -> (1, 1/3);
    # 2 -> (1.5, 1/3) (the first of the two 1.5 points)
    np.testing.assert_allclose(sensitivity_at(full, rates, readout="nearest"), [0, 1 / 3, 1 / 3, 1 / 3])
    # without the collinear points: 0.5 -> (0, 0) (distance .5 ties with nothing nearer)
    np.testing.assert_allclose(sensitivity_at(dropped, rates, readout="nearest"), [0, 0, 1 / 3, 1 / 3])
    assert full.n_false_positives == 3 and full.n_targets == 3


def test_monai_score_via_score_detection():
    gt = pd.DataFrame({"image": [0, 0, 1], "x": [0.0, 10.0, 0.0], "y": [0.0, 0.0, 0.0]})
    pred = pd.DataFrame({"image": [0, 0, 1, 1], "x": [0.0, 30.0, 0.0, 20.0], "y": [0.0] * 4,
                         "probability": [0.9, 0.8, 0.4, 0.3]})
    res = score_detection(pred, gt, criterion="distance", threshold=1.0, fp_rates=det.MONAI_FP_RATES)
    fps, sens = monai_froc_curve([0.8, 0.3], [0.9, 0.0, 0.4], 3, 2)
    assert res["froc"]["monai_score"] == pytest.approx(monai_froc_score(fps, sens))


def test_array_and_mapping_inputs_equal_dataframes():
    rng = np.random.default_rng(3)
    g = np.column_stack([rng.integers(0, 4, 30), rng.uniform(0, 50, (30, 3)), rng.uniform(1, 4, 30)])
    p = np.column_stack([rng.integers(0, 4, 80), rng.uniform(0, 50, (80, 3)), rng.random(80)])
    gdf = pd.DataFrame(g, columns=["image", "x", "y", "z", "radius"]).astype({"image": int})
    pdf = pd.DataFrame(p, columns=["image", "x", "y", "z", "probability"]).astype({"image": int})
    a = score_detection(p, g, criterion="inside-radius", images=range(4))
    b = score_detection(pdf, gdf, criterion="inside-radius", images=range(4))
    c = score_detection({k: pdf[k].to_numpy() for k in pdf}, {k: gdf[k].to_numpy() for k in gdf},
                        criterion="inside-radius", images=range(4))
    assert a["froc"] == b["froc"] == c["froc"] and a["ap"] == b["ap"] == c["ap"]


def test_grid_join_matches_kdtree_and_fallback():
    rng = np.random.default_rng(7)
    for d in (2, 3):
        a, b = rng.uniform(-40, 40, (500, d)), rng.uniform(-40, 40, (400, d))
        ga, gb = rng.integers(0, 6, 500), rng.integers(0, 6, 400)
        i, j = det._grid_pairs(a, b, ga, gb, 5.0)
        cheb = np.abs(a[i] - b[j]).max(axis=1)
        within = set(zip(i[(cheb <= 5.0) & (ga[i] == gb[j])].tolist(), j[(cheb <= 5.0) & (ga[i] == gb[j])].tolist()))
        brute = {(x, y) for x in range(500) for y in range(400)
                 if ga[x] == gb[y] and np.abs(a[x] - b[y]).max() <= 5.0}
        assert within == brute
    # a tiny radius over a huge extent cannot be gridded: the KD-tree path gives the same matches
    gt = pd.DataFrame({"image": [0, 0], "x": [0.0, 1e17], "y": [0.0, 0.0]})
    pred = pd.DataFrame({"image": [0, 0, 0], "x": [1e-4, 1e17, 5.0], "y": [0.0] * 3, "probability": [0.5, 0.4, 0.3]})
    assert det._grid_pairs(pred[["x", "y"]].to_numpy(), gt[["x", "y"]].to_numpy(), np.zeros(3, int),
                           np.zeros(2, int), 1e-3) is None
    m = match_detections(pred, gt, criterion="distance", threshold=1e-3)
    assert m.pred_status.tolist() == [1, 1, 0]


def test_distance_boundaries_are_exact():
    """A 3-4-5 triangle far from the origin: distance <= r is inclusive, LUNA16's inside-radius strict."""
    for off in (0.0, 1e6, -3.5e7):
        gt = pd.DataFrame({"image": [0], "x": [off], "y": [off], "radius": [5.0]})
        pred = pd.DataFrame({"image": [0], "x": [off + 3], "y": [off + 4], "probability": [0.5]})
        assert match_detections(pred, gt, criterion="distance", threshold=5.0).pred_status.tolist() == [1]
        assert match_detections(pred, gt, criterion="distance", threshold=4.999999).pred_status.tolist() == [0]
        assert match_detections(pred, gt, criterion="inside-radius").pred_status.tolist() == [0]
        assert match_detections(pred, gt.assign(radius=5.000001), criterion="inside-radius").pred_status.tolist() == [1]


# ---------------------------------------------------------------------------------------------
# empty cases
# ---------------------------------------------------------------------------------------------

_PRED_COLS = ["image", "x", "y", "probability"]


def test_no_predictions():
    gt = pd.DataFrame({"image": [0, 1], "x": [0.0, 0.0], "y": [0.0, 0.0]})
    pred = pd.DataFrame({c: pd.Series(dtype=float) for c in _PRED_COLS})
    res = score_detection(pred, gt, criterion="distance", threshold=1.0)
    assert res["froc"]["sensitivity_interpolated"] == [0.0] * 7 and res["froc"]["cpm_nearest"] == 0.0
    assert res["froc"]["curve"] == {"fps_per_image": [0.0], "sensitivity": [0.0], "thresholds": [math.inf]}
    assert res["ap"] == 0.0 and res["best_f1"]["f1"] == 0.0
    at = res["at_threshold"]
    assert math.isnan(at["precision"]) and at["recall"] == 0.0 and at["f1"] == 0.0 and at["fn"] == 2


def test_no_ground_truth():
    gt = pd.DataFrame({"image": pd.Series(dtype=int), "x": pd.Series(dtype=float), "y": pd.Series(dtype=float)})
    pred = pd.DataFrame({"image": [0, 1, 1], "x": [0.0, 1.0, 2.0], "y": [0.0] * 3, "probability": [0.9, 0.4, 0.6]})
    res = score_detection(pred, gt, criterion="distance", threshold=1.0, images=[0, 1, 2])
    assert all(math.isnan(v) for v in res["froc"]["sensitivity_interpolated"])
    assert math.isnan(res["froc"]["cpm_interpolated"]) and math.isnan(res["ap"])
    assert res["froc"]["curve"]["fps_per_image"][-1] == pytest.approx(1.0)  # 3 FPs over 3 images
    assert res["at_threshold"]["precision"] == 0.0 and math.isnan(res["at_threshold"]["recall"])
    assert res["counts"]["negative_images"] == 3 and res["counts"]["fp_on_negative_images"] == 3


def test_no_detection_and_nothing_at_all():
    gt = pd.DataFrame({"image": [0], "x": [0.0], "y": [0.0]})
    pred = pd.DataFrame({"image": [0], "x": [9.0], "y": [0.0], "probability": [0.9]})
    res = score_detection(pred, gt, criterion="distance", threshold=1.0)
    assert res["froc"]["cpm_interpolated"] == 0.0 and res["froc"]["cpm_nearest"] == 0.0 and res["ap"] == 0.0
    empty_gt = pd.DataFrame({"image": [], "x": [], "y": []})
    empty_pred = pd.DataFrame({c: [] for c in _PRED_COLS})
    res = score_detection(empty_pred, empty_gt, criterion="distance", threshold=1.0, images=["a"])
    assert res["counts"]["images"] == 1 and math.isnan(res["ap"])
    with pytest.raises(ValueError, match="images"):
        score_detection(empty_pred, empty_gt, criterion="distance", threshold=1.0)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

_GT = pd.DataFrame({"image": [0], "x": [0.0], "y": [0.0], "radius": [2.0]})
_PRED = pd.DataFrame({"image": [0], "x": [0.0], "y": [0.0], "probability": [0.5]})
_BOX = pd.DataFrame({"image": [0], "x0": [0.0], "y0": [0.0], "x1": [1.0], "y1": [1.0], "probability": [0.5]})


@pytest.mark.parametrize("pred, gt, kw, match", [
    (_PRED.assign(probability=np.nan), _GT, {}, "predictions: column 'probability' has 1 non-finite"),
    (_PRED, _GT.assign(radius=-1.0), {}, "ground_truth: column 'radius' must be >= 0"),
    (_PRED.assign(x=np.inf), _GT, {}, "predictions: column 'x'"),
    (_PRED.drop(columns="probability"), _GT, {}, r"predictions: missing column\(s\) \['probability'\]"),
    (_PRED, _GT.drop(columns="radius"), {}, r"ground_truth: missing column\(s\) \['radius'\]"),
    (_PRED.drop(columns="image"), _GT, {}, r"predictions: missing column\(s\) \['image'\]"),
    (_PRED, _GT.assign(z=1.0), {}, "column 'z'"),
    (_PRED.assign(image=5), _GT, {"images": [0]}, "predictions: image id"),
    (_PRED, _GT, {"images": [0, 0]}, "images: duplicate"),
    (_PRED, _GT, {"criterion": "overlap"}, "criterion: unknown 'overlap'"),
    (_PRED, _GT, {"threshold": 3.0}, "threshold: must be None"),
    (_PRED, _GT, {"matching": "hungarian"}, "matching: unknown"),
    (_PRED, _GT, {"criterion": "distance"}, "threshold: required"),
    (_PRED, _GT, {"criterion": "distance", "threshold": -1}, "threshold: a distance"),
    (_BOX, _BOX.drop(columns="probability"), {"criterion": "iou", "threshold": 0.0}, "threshold: an IoU"),
    (_BOX.assign(x1=-1.0), _BOX.drop(columns="probability"), {"criterion": "iou", "threshold": 0.5},
     "predictions: column 'x1' < 'x0'"),
    (_BOX, _BOX.drop(columns="probability").assign(y1=-1.0), {"criterion": "iou", "threshold": 0.5},
     "ground_truth: column 'y1' < 'y0'"),
    (_BOX, _GT.drop(columns="radius"), {"criterion": "iou", "threshold": 0.5}, r"ground_truth: missing column\(s\) \['x0'"),
    (np.zeros((2, 3)), _GT, {}, "predictions: a 2-D array needs"),
    ("preds.csv", _GT, {}, "predictions: expected a pandas DataFrame"),
    (_PRED, _GT.assign(ignore="yes"), {}, "column 'ignore' must be boolean"),
    (_PRED, _GT, {"ap_method": "11pt"}, "ap_method: unknown"),
    (_PRED, _GT, {"fp_rates": [-1]}, "fp_rates"),
])
def test_bad_input(pred, gt, kw, match):
    kw = {"criterion": "inside-radius", **kw}
    with pytest.raises(ValueError, match=match):
        score_detection(pred, gt, **kw)


def test_bad_input_lower_level():
    c = pr_curve_from_scores([0.5], [True], 1)
    with pytest.raises(ValueError, match="method: unknown"):
        average_precision(c, "eleven")
    with pytest.raises(ValueError, match="readout: unknown"):
        sensitivity_at(froc_curve_from_scores([0.5], [], 1), readout="closest")
    with pytest.raises(ValueError, match="scores: must be finite"):
        pr_curve_from_scores([np.nan], [True], 1)
    with pytest.raises(ValueError, match="n_images"):
        froc_curve_from_scores([0.5], [0.1], 0)
    with pytest.raises(ValueError, match="labels_to_exclude"):
        monai_fp_tp_probs([0.5], [0], [0], np.array([[1]]), labels_to_exclude=[2])
    with pytest.raises(ValueError, match="outside evaluation_mask"):
        monai_fp_tp_probs([0.5], [3], [0], np.array([[1]]))


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------


def test_read_grand_challenge_json(tmp_path):
    pts = {"type": "Multiple points", "version": {"major": 1, "minor": 0},
           "points": [{"name": "n1", "point": [1.0, 2.0, 3.0], "probability": 0.7},
                      {"name": "n2", "point": [4.0, 5.0, 6.0], "probability": 0.2}]}
    (tmp_path / "case1.json").write_text(json.dumps(pts))
    df = read_detections(tmp_path / "case1.json")
    assert df[["image", "x", "y", "z", "probability"]].values.tolist() == [["case1", 1.0, 2.0, 3.0, 0.7],
                                                                           ["case1", 4.0, 5.0, 6.0, 0.2]]
    boxes = {"type": "Multiple 2D bounding boxes",
             "boxes": [{"corners": [[10, 20, 0], [30, 20, 0], [30, 40, 0], [10, 40, 0]], "probability": 0.9}]}
    (tmp_path / "b.json").write_text(json.dumps(boxes))
    b = read_detections(tmp_path / "b.json", image=7)
    assert b[["image", "x0", "y0", "x1", "y1", "z", "probability"]].values.tolist() == [[7, 10, 20, 30, 40, 0, 0.9]]
    assert score_detection(b, b.drop(columns="probability"), criterion="iou", threshold=0.5)["ap"] == 1.0
    empty = read_detections(_write(tmp_path, "e.json", {"type": "Multiple points", "points": []}))
    assert len(empty) == 0 and {"image", "x", "y"} <= set(empty.columns)


def _write(tmp_path, name, doc):
    p = tmp_path / name
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


@pytest.mark.parametrize("name, doc, match", [
    ("a.json", {"type": "Multiple polygons", "polygons": []}, "unsupported grand-challenge type 'Multiple polygons'"),
    ("a.json", {"type": "Multiple points", "points": [{"point": [1]}]}, r"points\[0\]: 'point' must be"),
    ("a.json", {"type": "Multiple points", "points": [{"point": [1, 2], "probability": "high"}]}, "expected a number"),
    ("a.json", {"type": "Multiple points", "points": [{"point": [1, 2], "probability": 0.5}, {"point": [1, 2]}]},
     "item 1 has no 'probability'"),
    ("a.json", {"type": "Multiple 2D bounding boxes", "boxes": [{"corners": [[0, 0, 0]]}]}, r"boxes\[0\]: 'corners'"),
    ("a.json", "{not json", "not valid JSON"),
    ("a.txt", "x", "unsupported file type"),
    ("a.csv", "seriesuid,coordX,coordY,coordZ,diameter_mm\nA,0,0,0,-1\n", "pass default_diameter_mm"),
    ("a.csv", "id,coordX,coordY\nA,0,0\n", "missing column 'image'"),
    ("a.csv", "seriesuid,foo\nA,0\n", "missing coordinate columns"),
])
def test_read_detections_errors(tmp_path, name, doc, match):
    with pytest.raises(ValueError, match=match):
        read_detections(_write(tmp_path, name, doc))


def test_read_luna16_csv(tmp_path):
    p = _write(tmp_path, "ann.csv", "seriesuid,coordX,coordY,coordZ,diameter_mm\n1.3.6.1,-1.5,2.25,0.1,-1\n007,1,2,3,6\n")
    df = read_detections(p, default_diameter_mm=10)
    assert df.image.tolist() == ["1.3.6.1", "007"]  # ids stay strings
    assert df.radius.tolist() == [5.0, 3.0] and df.x.tolist() == [-1.5, 1.0]


# ---------------------------------------------------------------------------------------------
# real LUNA16 annotations, simulated candidates, against an independent port of the LUNA16 script
# ---------------------------------------------------------------------------------------------


def _luna16_reference(pred: pd.DataFrame, gt: pd.DataFrame, images: list[str]) -> tuple[float, float]:
    """Plain-Python restatement of noduleCADEvaluationLUNA16.py + the grand-challenge getCPM:
    per series, per nodule, loop over candidates (dist² < r²); the max probability of the hits; every
    hitting candidate leaves the FP list; then an ROC point per distinct threshold with sklearn's
    drop_intermediate rule written out, FP per scan, and both read-outs."""
    cands = {s: list(zip(d.x, d.y, d.z, d.probability)) for s, d in pred.groupby("image")}
    nods = {s: list(zip(d.x, d.y, d.z, d.radius)) for s, d in gt.groupby("image")}
    pos, neg, n_les = [], [], 0
    for s in images:
        c = cands.get(s, [])
        fp = set(range(len(c)))
        for x, y, z, r in nods.get(s, []):
            n_les += 1
            best = None
            for k, (x2, y2, z2, p) in enumerate(c):
                if (x - x2) ** 2 + (y - y2) ** 2 + (z - z2) ** 2 < r * r:
                    best = p if best is None else max(best, p)
                    fp.discard(k)
            if best is not None:
                pos.append(best)
        neg += [c[k][3] for k in sorted(fp)]
    pts = [(0, 0)]
    for t in sorted(set(pos) | set(neg), reverse=True):
        pts.append((sum(p >= t for p in neg), sum(p >= t for p in pos)))
    keep = [pts[0]] + [pts[k] for k in range(1, len(pts) - 1)
                       if pts[k + 1][0] - 2 * pts[k][0] + pts[k - 1][0] or pts[k + 1][1] - 2 * pts[k][1] + pts[k - 1][1]]
    keep += [pts[-1]] if len(pts) > 1 else []
    fx = [f / len(images) for f, _ in keep]
    sy = [t / n_les for _, t in keep]
    near = []
    for rate in LUNA16_FP_RATES:
        val, prior = 0.0, max(fx)
        for a, b in zip(fx, sy):
            if abs(a - rate) < prior:
                val, prior = b, abs(a - rate)
        near.append(val)
    return float(np.mean(np.interp(LUNA16_FP_RATES, fx, sy))), float(np.mean(near))


def test_luna16_real_annotations_simulated_candidates(shared_data):
    gt = read_detections(shared_data / "luna16" / "annotations.csv")
    assert len(gt) == 1117 and gt.image.nunique() == 568
    rng = np.random.default_rng(2024)
    images = list(pd.unique(gt.image)) + ["no-nodule-scan-1", "no-nodule-scan-2"]
    hit = rng.random(len(gt)) < 0.8
    g = gt[hit]
    u = rng.normal(size=(len(g), 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    rad = (g.radius.to_numpy() * rng.uniform(0, 0.95, len(g)))[:, None]
    tp = pd.DataFrame(g[["x", "y", "z"]].to_numpy() + u * rad, columns=["x", "y", "z"])
    tp.insert(0, "image", g.image.to_numpy())
    tp["probability"] = np.round(rng.beta(5, 2, len(g)), 3)  # rounded: ties across scans on purpose
    n_fp = 12 * len(images)
    fimg = rng.choice(np.asarray(images, dtype=object), n_fp)
    centres = gt.groupby("image")[["x", "y", "z"]].mean()
    base = centres.reindex(fimg).fillna(0.0).to_numpy()
    fp = pd.DataFrame(base + rng.uniform(-120, 120, (n_fp, 3)), columns=["x", "y", "z"])
    fp.insert(0, "image", fimg)
    fp["probability"] = np.round(rng.beta(2, 5, n_fp), 3)
    pred = pd.concat([tp, fp], ignore_index=True)
    res = score_detection(pred, gt, criterion="inside-radius", matching="luna16", images=images)
    interp, near = _luna16_reference(pred, gt, images)
    assert 0 < res["froc"]["cpm_interpolated"] < 1 and 0 < res["froc"]["cpm_nearest"] < 1
    assert res["froc"]["cpm_interpolated"] == pytest.approx(interp, abs=1e-12)
    assert res["froc"]["cpm_nearest"] == pytest.approx(near, abs=1e-12)
    assert res["counts"]["detected_targets"] == int(hit.sum())  # jitter stays inside the radius
