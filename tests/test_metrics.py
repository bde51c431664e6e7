"""Metrics against medpy 0.5.2 (the `medpy` convention), peer cases, real PDDCA masks, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arena.metrics import EmptyPolicy, mean_over_labels, score_segmentation

medpy_binary = pytest.importorskip("medpy.metric.binary")


def _medpy(pred: np.ndarray, ref: np.ndarray, spacing) -> dict[str, float]:
    p, r = pred.astype(bool), ref.astype(bool)
    return {"dice": medpy_binary.dc(p, r), "hd95": medpy_binary.hd95(p, r, spacing),
            "hd": medpy_binary.hd(p, r, spacing), "assd": medpy_binary.assd(p, r, spacing)}


@st.composite
def mask_pairs(draw):
    shape = tuple(draw(st.lists(st.integers(3, 14), min_size=3, max_size=3)))
    spacing = tuple(draw(st.lists(st.floats(0.3, 4.0), min_size=3, max_size=3)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
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
    theirs = _medpy(pred, ref, spacing)
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k


@settings(max_examples=40, deadline=None)
@given(mask_pairs())
def test_directed_conventions_bracket_pooled(pair):
    """max-directed ≥ mean-directed ≥ min-directed; and max-directed equals the max of medpy's directed hd95s."""
    pred, ref, spacing = pair
    mx = score_segmentation(pred, ref, spacing, [1], convention="max-directed")[1]["hd95"]
    mean = score_segmentation(pred, ref, spacing, [1], convention="mean-directed")[1]["hd95"]
    from arena.metrics.segmentation import directed_distances

    d_pr, d_rp = directed_distances(pred.astype(bool), ref.astype(bool), spacing)
    a, b = np.percentile(d_pr, 95), np.percentile(d_rp, 95)
    assert mx == pytest.approx(max(a, b)) and mean == pytest.approx((a + b) / 2)
    assert mx >= mean - 1e-12


def _build(spec: dict) -> np.ndarray:
    arr = np.zeros(spec["shape"], dtype=np.uint8)
    for f in spec.get("fill", []):
        assert f["type"] == "array"
        arr[...] = np.asarray(f["data"], dtype=np.uint8)
    return arr


def test_medpy_peer_cases(shared_data):
    cases = [c for c in json.loads((shared_data / "peer_cases" / "segmentation_cases.json").read_text())
             if c["definition"] == "medpy"]
    assert len(cases) >= 4
    for c in cases:
        pred, gt = _build(c["pred"]), _build(c["gt"])
        spacing = c["spacing"] or [1.0] * pred.ndim
        got = score_segmentation(pred, gt, spacing, [1], convention="medpy")[1]
        for key in ("hd95", "hd", "assd"):
            assert got[key] == pytest.approx(c["reference_computed"][key], abs=1e-6), (c["id"], key)


def test_real_pddca_masks_against_medpy(shared_data):
    """A real PDDCA label map vs. a copy shifted by one voxel and with a stray blob: every organ as medpy."""
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
            assert ours[lab][k] == pytest.approx(theirs[k], rel=1e-9), (lab, k)
    assert ours[3]["hd"] > 50  # the fragment is far away


def test_totalsegmentator_two_models(shared_data):
    """Two real models' segmentations of one CT: Dice between 0.8 and 1 for shared organs, as documented."""
    import SimpleITK as sitk

    a = sitk.ReadImage(str(shared_data / "totalseg" / "example_seg.nii.gz"))
    b = sitk.ReadImage(str(shared_data / "totalseg" / "example_seg_fast.nii.gz"))
    A, B = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
    labels = sorted(set(np.unique(A).tolist()) & set(np.unique(B).tolist()) - {0})
    scores = score_segmentation(B, A, a.GetSpacing()[::-1], labels)
    dice = [s["dice"] for s in scores.values()]
    assert min(dice) > 0.5 and np.median(dice) > 0.8
    assert all(s["hd95"] >= 0 and s["hd"] >= s["hd95"] for s in scores.values())


def test_empty_policy():
    ref = np.zeros((4, 5, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    pred = np.zeros_like(ref)
    spacing = (3.0, 1.0, 2.0)
    diag = math.sqrt((4 * 3) ** 2 + 5**2 + (6 * 2) ** 2)
    s = score_segmentation(pred, ref, spacing, [1, 2])
    assert s[1] == {"dice": 0.0, "hd95": diag, "hd": diag, "assd": diag, "nsd": 0.0}
    assert all(v is None for v in s[2].values())  # absent from both: excluded
    s = score_segmentation(pred, ref, spacing, [1, 2], empty_policy=EmptyPolicy("perfect", 373.0))
    assert s[1]["hd95"] == 373.0 and s[2]["dice"] == 1.0 and s[2]["hd95"] == 0.0
    s = score_segmentation(pred, ref, spacing, [1], empty_policy=EmptyPolicy(one_empty_distance="nan"))
    assert math.isnan(s[1]["hd95"]) and s[1]["dice"] == 0.0
    assert mean_over_labels({1: {"dice": 0.5}, 2: {"dice": None}, 3: {"dice": 1.0}}, "dice", {1: 1, 3: 3}) == 0.875


@pytest.mark.parametrize("kwargs, message", [
    (dict(prediction=np.zeros((3, 3), np.uint8), reference=np.zeros((3, 4), np.uint8)), "prediction: shape"),
    (dict(prediction=np.zeros((3, 3), np.float32), reference=np.zeros((3, 3), np.uint8)), "prediction: expected an integer"),
    (dict(spacing=(1.0,)), "spacing: expected 2 values"),
    (dict(spacing=(1.0, 0.0)), "spacing: expected positive"),
    (dict(spacing=(1.0, float("nan"))), "spacing: expected positive"),
    (dict(convention="plastimatch"), "convention: expected one of"),
    (dict(labels=[0, 1]), "labels: expected positive"),
    (dict(percentile=0), "percentile"),
])
def test_bad_input_names_the_argument(kwargs, message):
    args = dict(prediction=np.zeros((3, 3), np.uint8), reference=np.zeros((3, 3), np.uint8), spacing=(1.0, 1.0),
                labels=[1])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        score_segmentation(**args)
