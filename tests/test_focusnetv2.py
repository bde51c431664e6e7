"""FocusNetv2 reference model (reference_models/focusnetv2): what makes it the paper's network (the six
small organs, S-Net's widths, pools and dilations, the adversarial shape autoencoder's loss and its
sign), train/inference agreement (ROI pooling and ROI geometry) and the shipped ONNX weights."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FN = REPO / "reference_models" / "focusnetv2"
torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")


def _load(name: str, path: Path, extra: tuple[Path, ...] = ()):
    """Import one file of a reference model folder (each folder has its own model.py)."""
    for m in ("model", "refio", "phantom_data", "infer"):
        sys.modules.pop(m, None)
    paths = [str(path.parent), *map(str, extra)]
    sys.path[:0] = paths
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for p in paths:
            sys.path.remove(p)
    return mod


@pytest.fixture(scope="module")
def fn():
    return _load("fn_model", FN / "model.py")


@pytest.fixture(scope="module")
def inf():
    return _load("fn_infer", FN / "infer.py", (REPO / "reference_models" / "_shared",))


@pytest.fixture(scope="module")
def tr():
    return _load("fn_train", FN / "train.py")


def test_small_organs_are_the_six_the_paper_names(fn, inf):
    labels = yaml.safe_load((REPO / "tasks" / "han-oar-22" / "task.yaml").read_text())["labels"]
    names = {int(k): v["name"] for k, v in labels.items()}
    assert [names[k] for k in fn.SMALL_ORGANS] == ["Lens_L", "Lens_R", "OpticNerve_L", "OpticNerve_R",
                                                   "OpticChiasm", "Pituitary"]
    assert list(fn.SMALL_ORGAN_NAMES) == [names[k] for k in fn.SMALL_ORGANS]
    assert tuple(inf.SMALL_ORGANS) == tuple(fn.SMALL_ORGANS)  # the image has no torch: its own copy


def test_snet_follows_table_10(fn):
    """Widths 32/48/64, max-pool (1,2,2) then (2,2,2), two SE-ResBlocks at dilation 2, DenseASPP with
    dilations 3/6/12/18 in x-y only."""
    net = fn.SNet(23)
    assert net.stem[0].out_channels == 32 and net.enc1.conv2.out_channels == 32
    assert net.enc2.conv2.out_channels == 48
    assert tuple(net.pool1.kernel_size) == (1, 2, 2) and tuple(net.pool2.kernel_size) == (2, 2, 2)
    assert [b.dilation for b in net.enc3] == [2, 2] and [b.conv2.out_channels for b in net.enc3] == [64, 64]
    assert [b.conv1.dilation for b in net.enc3] == [(2, 2, 2), (2, 2, 2)]
    assert net.aspp.dilations == (3, 6, 12, 18)
    convs = [layer[-1] for layer in net.aspp.layers]
    assert [c.dilation for c in convs] == [(1, d, d) for d in (3, 6, 12, 18)]
    assert all(c.kernel_size == (1, 3, 3) for c in convs)


def test_forward_shapes(fn):
    net = fn.SNet(23).eval()
    with torch.no_grad():
        p, heat, feat = net(torch.randn(1, 1, 16, 32, 32))
        lab, _, _ = net.labels(torch.randn(1, 1, 16, 32, 32))
    assert p.shape == (1, 23, 16, 32, 32) and heat.shape == (1, 6, 8, 16, 16) and feat.shape == (1, 32, 8, 16, 16)
    torch.testing.assert_close(p.sum(1), torch.ones(1, 16, 32, 32))
    assert lab.shape == (1, 16, 32, 32) and int(lab.min()) >= 0 and int(lab.max()) <= 22
    sos = fn.SOSNet().eval()
    with torch.no_grad():
        fg = sos(torch.randn(6, fn.FEATURE_CHANNELS + 1, *fn.ROI_SIZE_XYZ[::-1]))
    assert fg.shape == (6, 1, *fn.ROI_SIZE_XYZ[::-1]) and 0 <= float(fg.min()) and float(fg.max()) <= 1


def test_shape_autoencoder_maximises_the_latent_distance(fn):
    """Eq. 4: the autoencoder's loss is rec(gt) + rec(pred) - λ2·||E(gt) - E(pred)||² (λ2 = 0.001), so it
    pushes the codes apart; eq. 5: the segmentation network's shape loss pulls them together and reaches
    the prediction, not the autoencoder's input detachment."""
    assert (fn.LAMBDA_SHAPE, fn.LAMBDA_LATENT) == (5.0, 0.001)
    torch.manual_seed(0)
    ae = fn.ShapeAE()
    gt = (torch.rand(2, 1, *fn.ROI_SIZE_XYZ[::-1]) > 0.7).float()
    pred = torch.rand(2, 1, *fn.ROI_SIZE_XYZ[::-1], requires_grad=True)
    with_dist, dist = fn.shape_ae_loss(ae, gt, pred)
    without, _ = fn.shape_ae_loss(ae, gt, pred, lam_latent=0.0)
    assert float(dist.detach()) > 0
    assert float(with_dist) == pytest.approx(float(without) - 0.001 * float(dist), rel=1e-5)
    # the autoencoder's loss does not train the segmentation network (its prediction is detached)
    with_dist.backward()
    assert pred.grad is None
    # a few autoencoder steps on the distance term alone move the codes apart
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    d0 = float(fn.latent_distance(ae.encode(gt), ae.encode(pred.detach())))
    for _ in range(3):
        loss, _ = fn.shape_ae_loss(ae, gt, pred, lam_latent=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(fn.latent_distance(ae.encode(gt), ae.encode(pred.detach()))) > d0
    # eq. 5: the shape loss is the latent distance and its gradient reaches the prediction
    s = fn.shape_loss(ae, gt, pred)
    s.backward()
    assert float(s) > 0 and pred.grad is not None and float(pred.grad.abs().sum()) > 0
    assert float(fn.shape_loss(ae, gt, gt)) == 0.0


def test_focal_gdl_loss(fn):
    y = torch.randint(0, 4, (1, 6, 8, 8))
    y[0, 0, 0, :4] = 3
    perfect = 40.0 * torch.nn.functional.one_hot(y, 5).movedim(-1, 1).float()  # class 4 absent
    loss = fn.focal_gdl_loss(perfect, y, torch.ones(5))
    assert torch.isfinite(loss) and float(loss) < 1e-3
    wrong = fn.focal_gdl_loss(perfect.roll(1, dims=1), y, torch.ones(5))
    assert float(wrong) > 1.0
    soft = torch.nn.functional.avg_pool3d(torch.nn.functional.one_hot(y, 5).movedim(-1, 1).float(), 2)
    assert torch.isfinite(fn.focal_gdl_loss(torch.randn(1, 5, 3, 4, 4), soft))


def test_roi_pool_is_the_same_in_training_and_in_the_image(fn, inf):
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(5, 6, 7, 8)).astype(np.float32)
    pts = rng.uniform(-1.5, 8.5, size=(4, 3, 2, 3)).astype(np.float32)  # some outside the grid
    pts[0, 0, 0] = (2, 3, 4)  # a voxel centre: its value exactly
    want = fn.roi_pool(torch.from_numpy(feat), torch.from_numpy(pts)).numpy()
    got = inf.roi_pool(feat, pts)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got[:, 0, 0, 0], feat[:, 2, 3, 4], atol=1e-6)


def test_roi_geometry_is_the_same_in_training_and_in_the_image(tr, inf):
    """Training samples an ROI's S-Net features at train.roi_points_canonical (phantoms centred on 0 mm);
    the image at infer.roi_points on the canonical reference of the input: the same S-Net voxels."""
    import SimpleITK as sitk

    img = sitk.Image([96, 96, 40], sitk.sitkInt16)
    img.SetSpacing([2.8, 2.8, 6.0])
    img.SetOrigin([-0.5 * 95 * 2.8, -0.5 * 95 * 2.8, -0.5 * 39 * 6.0])  # centred on (0, 0, 0) as the phantoms
    ref = inf.refio.canonical_reference(img)
    centre = (3.2, -11.0, 7.5)
    g = inf.refio.canonical_reference(img, inf.ROI_SIZE_XYZ, inf.ROI_SPACING_XYZ, centre=centre)
    np.testing.assert_allclose(inf.roi_points(g, ref), (tr.roi_points_canonical(np.array(centre)) - 0.5) / tr.POOL,
                               atol=1e-4)
    # a heat-map peak on S-Net voxel j decodes to canonical index 2j + 0.5 (the voxels it pooled)
    heat = np.zeros((1, 6, 8, 8), np.float32)
    heat[0, 3, 4, 5] = 1.0
    np.testing.assert_allclose(inf.decode_heatmaps(heat)[0], [6.5, 8.5, 10.5])


def test_shipped_onnx_matches_torch_weights(tr, fn):
    ort = pytest.importorskip("onnxruntime")
    w = FN / "weights"
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (1, 1, 16, 32, 32)).astype(np.float32))
    snet = tr.load_snet(str(w / "snet.pt"))
    sess = ort.InferenceSession(str(w / "snet.onnx"), providers=["CPUExecutionProvider"])
    lab, heat, feat = sess.run(None, {"ct": x.numpy()})
    with torch.no_grad():
        seg, want_heat, want_feat = snet.logits(x)
    np.testing.assert_allclose(heat, torch.sigmoid(want_heat).numpy(), atol=1e-4)
    np.testing.assert_allclose(feat, want_feat.numpy(), atol=1e-4)
    top2 = seg.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1] > 1e-3).numpy()  # ties may break either way
    np.testing.assert_array_equal(lab[clear], seg.argmax(1).numpy()[clear])
    sos = tr.load_sos(str(w / "sos.pt"))
    rois = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (6, fn.FEATURE_CHANNELS + 1, *fn.ROI_SIZE_XYZ[::-1]))
                            .astype(np.float32))
    got = ort.InferenceSession(str(w / "sos.onnx"), providers=["CPUExecutionProvider"]).run(None, {"rois": rois.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got[0], sos(rois).numpy(), atol=1e-4)
