"""FocusNetv2 (Gao et al., Medical Image Analysis 67:101831, 2021): the networks and the losses.

"FocusNetv2: Imbalanced large and small organ segmentation with adversarial shape constraint for
head and neck CT images". Four networks, three of which run at inference:

* **S-Net** segments every organ on the whole volume. As the paper's Table 10: a 3x3x3 stem and an
  SE-ResBlock at 32 channels, max-pool (1, 2, 2), SE-ResBlock at 48, max-pool (2, 2, 2), two
  SE-ResBlocks at 64 with dilation 2, DenseASPP with dilations 3/6/12/18 in x-y only (kernels
  1x3x3), then a decoder back to full resolution with skip connections. Reduced for CPU training
  (README): S-Net sees the canonical grid average-pooled by ``input_pool`` (2 -> 4 x 4 x 6 mm) and its
  logits are trilinearly up-sampled back to the canonical grid.
* **SOL-Net** (small-organ localization) regresses one Gaussian heat map per small organ from S-Net's
  last decoder features and the CT; the peak is the organ's centre.
* **SOS-Net** (small-organ segmentation) segments a fixed ROI around each centre. Its input is the
  ROI-pooled S-Net decoder features (trilinear sampling at the ROI voxels, :func:`roi_pool`)
  concatenated with the raw CT resampled onto the ROI.
* **ShapeAE** (training only): the adversarial shape constraint, an autoencoder of small-organ masks
  that reconstructs both ground truth and predictions while maximising the latent distance between
  them (the paper's equations 4, 5 and 8; :func:`shape_ae_loss`, :func:`shape_loss`).

Units: tensors are (N, C, z, y, x); ROI geometry in :data:`ROI_SIZE_XYZ` voxels at
:data:`ROI_SPACING_XYZ` mm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the six small organs the paper names (StructSeg 2019 label ids of han-oar-22): lenses, optic nerves,
#: optic chiasm, pituitary. Every other organ is a large organ segmented by S-Net alone.
SMALL_ORGANS: tuple[int, ...] = (4, 5, 6, 7, 8, 11)
SMALL_ORGAN_NAMES: tuple[str, ...] = ("Lens_L", "Lens_R", "OpticNerve_L", "OpticNerve_R", "OpticChiasm", "Pituitary")
ROI_SIZE_XYZ = (48, 48, 8)
ROI_SPACING_XYZ = (1.0, 1.0, 2.5)
SNET_WIDTHS = (32, 48, 64)
ASPP_DILATIONS = (3, 6, 12, 18)
FEATURE_CHANNELS = SNET_WIDTHS[0]  # S-Net's last decoder features, ROI-pooled into SOS-Net
LAMBDA_SHAPE = 5.0  # λ1: weight of the shape loss in SOS-Net's loss (eq. 8)
LAMBDA_LATENT = 0.001  # λ2: weight of the latent distance the autoencoder maximises (eq. 4)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3, 4))))))
        return x * w[:, :, None, None, None]


class SEResBlock(nn.Module):
    """conv3-BN-ReLU-conv3-BN, squeeze-and-excitation, + (1x1 projected) identity, ReLU; ``dilation``
    applies to both 3x3x3 convolutions."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__()
        self.dilation = dilation
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.se = SqueezeExcite(cout)
        self.proj = None if cin == cout else nn.Sequential(nn.Conv3d(cin, cout, 1, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + (x if self.proj is None else self.proj(x)))


class DenseASPP(nn.Module):
    """DenseASPP (Yang et al., CVPR 2018), dilated in x-y only: each layer (1x1x1 reduction to ``mid``,
    then a 1x3x3 convolution dilated (1, d, d) giving ``growth`` channels) sees the input and every
    earlier layer's output; the output is the concatenation of all (``channels + len(dilations) * growth``)."""

    def __init__(self, channels: int, mid: int, growth: int, dilations=ASPP_DILATIONS):
        super().__init__()
        self.dilations = tuple(dilations)
        self.layers = nn.ModuleList()
        c = channels
        for d in self.dilations:
            self.layers.append(nn.Sequential(
                nn.BatchNorm3d(c), nn.ReLU(), nn.Conv3d(c, mid, 1, bias=False),
                nn.BatchNorm3d(mid), nn.ReLU(),
                nn.Conv3d(mid, growth, (1, 3, 3), padding=(0, d, d), dilation=(1, d, d), bias=False)))
            c += growth
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class SNet(nn.Module):
    """S-Net (+ SOL-Net, which reads its features). Input (N, 1, z, y, x) on the canonical grid with z
    divisible by ``2 * input_pool`` and y, x by ``4 * input_pool``. :meth:`forward` returns (class
    probabilities on the input grid, small-organ heat maps on the S-Net grid, decoder features on the
    S-Net grid)."""

    def __init__(self, n_classes: int = 23, n_small: int = len(SMALL_ORGANS), widths=SNET_WIDTHS,
                 input_pool: int = 2, aspp_mid: int = 32, aspp_growth: int = 16):
        super().__init__()
        w1, w2, w3 = widths
        self.n_classes, self.input_pool = n_classes, input_pool
        self.stem = nn.Sequential(nn.Conv3d(1, w1, 3, padding=1, bias=False), nn.BatchNorm3d(w1), nn.ReLU())
        self.enc1 = SEResBlock(w1, w1)
        self.pool1 = nn.MaxPool3d((1, 2, 2))
        self.enc2 = SEResBlock(w1, w2)
        self.pool2 = nn.MaxPool3d((2, 2, 2))
        self.enc3 = nn.Sequential(SEResBlock(w2, w3, dilation=2), SEResBlock(w3, w3, dilation=2))
        self.aspp = DenseASPP(w3, aspp_mid, aspp_growth, ASPP_DILATIONS)
        self.dec2 = SEResBlock(self.aspp.out_channels + w2, w2)
        self.dec1 = SEResBlock(w2 + w1, w1)
        self.head = nn.Conv3d(w1, n_classes, 1)
        self.sol = SOLNet(w1 + 1, n_small)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S-Net-grid CT, last decoder features (N, widths[0], ...)) for a canonical-grid input."""
        if self.input_pool > 1:
            x = F.avg_pool3d(x, self.input_pool)
        e1 = self.enc1(self.stem(x))
        e2 = self.enc2(self.pool1(e1))
        b = self.aspp(self.enc3(self.pool2(e2)))
        d2 = self.dec2(torch.cat([F.interpolate(b, scale_factor=(2, 2, 2), mode="trilinear"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=(1, 2, 2), mode="trilinear"), e1], 1))
        return x, d1

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class logits on the input grid, heat-map logits and features on the S-Net grid)."""
        xs, feat = self.features(x)
        seg = self.head(feat)
        if self.input_pool > 1:
            seg = F.interpolate(seg, scale_factor=float(self.input_pool), mode="trilinear")
        return seg, self.sol(torch.cat([feat, xs], 1)), feat

    def forward(self, x: torch.Tensor):
        seg, heat, feat = self.logits(x)
        return torch.softmax(seg, dim=1), torch.sigmoid(heat), feat

    def labels(self, x: torch.Tensor):
        """What the image runs (snet.onnx): (arg-max labels (N, z, y, x) int64 on the input grid, heat maps
        (sigmoid), features). Arg-max of the logits equals that of the probabilities and spares a
        23-class softmax over the whole canonical grid (slow in ONNX Runtime on one core)."""
        seg, heat, feat = self.logits(x)
        return seg.argmax(1), torch.sigmoid(heat), feat

    def snet_parameters(self) -> int:
        """Parameters of S-Net alone (without the SOL-Net head)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("sol."))


class SNetExport(nn.Module):
    """S-Net + SOL-Net as exported to snet.onnx: :meth:`SNet.labels`."""

    def __init__(self, snet: SNet):
        super().__init__()
        self.snet = snet

    def forward(self, x: torch.Tensor):
        return self.snet.labels(x)


class SOLNet(nn.Module):
    """Small-organ localization: two SE-ResBlocks on (S-Net features, CT), one heat-map logit per small organ."""

    def __init__(self, cin: int, n_small: int, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(SEResBlock(cin, width), SEResBlock(width, width, dilation=2))
        self.out = nn.Conv3d(width, n_small, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class SOSNet(nn.Module):
    """Small-organ segmentation on (K, FEATURE_CHANNELS + 1, 8, 48, 48) ROIs (pooled S-Net features, CT):
    a small SE-ResUNet shared by the small organs with one output channel per organ; ROI k is scored
    on channel ``organ[k]``. :meth:`forward` returns (K, 1, 8, 48, 48) foreground probabilities for ROIs
    in :data:`SMALL_ORGANS` order (one ROI per organ)."""

    def __init__(self, n_small: int = len(SMALL_ORGANS), cin: int = FEATURE_CHANNELS + 1, width: int = 12):
        super().__init__()
        w1, w2 = width, 2 * width
        self.n_small = n_small
        self.enc1 = SEResBlock(cin, w1)
        self.enc2 = SEResBlock(w1, w2)
        self.mid = nn.Sequential(SEResBlock(w2, w2, dilation=2), SEResBlock(w2, w2, dilation=2))
        self.dec2 = SEResBlock(2 * w2, w2)
        self.dec1 = SEResBlock(w2 + w1, w1)
        self.head = nn.Conv3d(w1, n_small, 1)

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool3d(e1, (1, 2, 2)))
        m = self.mid(F.max_pool3d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(m, scale_factor=(2, 2, 2), mode="trilinear"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=(1, 2, 2), mode="trilinear"), e1], 1))
        return self.head(d1)

    def logits(self, x: torch.Tensor, organ: torch.Tensor) -> torch.Tensor:
        """(N, 1, ...) logits of ROI i on channel ``organ[i]`` (index into SMALL_ORGANS)."""
        out = self.all_logits(x)
        return torch.gather(out, 1, organ.view(-1, 1, 1, 1, 1).expand(-1, 1, *out.shape[2:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        organ = torch.arange(x.shape[0], device=x.device) % self.n_small
        return torch.sigmoid(self.logits(x, organ))


class ShapeAE(nn.Module):
    """The adversarial shape autoencoder (training only): encodes a small-organ ROI mask (N, 1, 8, 48, 48)
    to a latent code (N, 16, 2, 6, 6) in (-1, 1) and decodes it back (logits)."""

    def __init__(self, latent: int = 16):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv3d(1, 8, 3, stride=(1, 2, 2), padding=1), nn.LeakyReLU(0.2),
            nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv3d(16, latent, 3, stride=2, padding=1))
        self.dec = nn.Sequential(
            nn.ConvTranspose3d(latent, 16, 2, stride=2), nn.LeakyReLU(0.2),
            nn.ConvTranspose3d(16, 8, 2, stride=2), nn.LeakyReLU(0.2),
            nn.ConvTranspose3d(8, 1, (1, 2, 2), stride=(1, 2, 2)))

    def encode(self, mask: torch.Tensor) -> torch.Tensor:
        """Latent code in (-1, 1) (tanh): bounded, so that maximising distances between codes (eq. 4)
        cannot diverge by inflating the code's scale."""
        return torch.tanh(self.enc(mask))

    def forward(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(mask)
        return z, self.dec(z)


def latent_distance(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance between latent codes, averaged over code elements and the batch (0..4)."""
    return ((z_a - z_b) ** 2).mean()


def shape_ae_loss(ae: ShapeAE, gt: torch.Tensor, pred: torch.Tensor, lam_latent: float = LAMBDA_LATENT):
    """The autoencoder's loss (eq. 4): reconstruct the ground truth AND the (detached) prediction, and
    maximise the latent distance between them: rec(gt) + rec(pred) - λ2 * ||E(gt) - E(pred)||².
    Returns (loss, latent distance)."""
    pred = pred.detach()
    z_gt, r_gt = ae(gt)
    z_p, r_p = ae(pred)
    rec = F.mse_loss(torch.sigmoid(r_gt), gt) + F.mse_loss(torch.sigmoid(r_p), pred)
    dist = latent_distance(z_gt, z_p)
    return rec - lam_latent * dist, dist


def shape_loss(ae: ShapeAE, gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """The segmentation network's shape loss (eq. 5): ||E(gt) - E(pred)||², gradients to ``pred`` only
    (the autoencoder's weights are not stepped by it)."""
    with torch.no_grad():
        z_gt = ae.encode(gt)
    return latent_distance(z_gt, ae.encode(pred))


def focal_gdl_loss(logits: torch.Tensor, target: torch.Tensor, alpha: torch.Tensor | None = None,
                   gamma: float = 2.0) -> torch.Tensor:
    """Weighted focal loss + generalized Dice loss for multi-class logits (N, C, ...) and integer
    ``target`` (N, ...) or class fractions (N, C, ...) (soft targets). Focal: -Σ_c α_c (1 - p_c)^γ y_c log p_c averaged over voxels (α = 1 when None).
    Generalized Dice (Sudre et al. 2017): 1 - 2 Σ_c w_c Σ p_c y_c / Σ_c w_c Σ (p_c + y_c) with
    w_c = 1 / (Σ y_c)²; classes absent from a sample's target get w_c = 0 (no infinite weights)."""
    c = logits.shape[1]
    logp = F.log_softmax(logits, 1)
    p = logp.exp()
    onehot = target.to(p.dtype) if target.ndim == logits.ndim else F.one_hot(target.long(), c).movedim(-1, 1).to(p.dtype)
    pt = (p * onehot).sum(1)
    logpt = (logp * onehot).sum(1)
    a = (alpha.view(1, -1, *[1] * (logits.ndim - 2)) * onehot).sum(1) if alpha is not None else 1.0
    focal = (-a * (1 - pt) ** gamma * logpt).mean()
    dims = tuple(range(2, logits.ndim))
    vol = onehot.sum(dims)
    w = torch.where(vol > 0, 1.0 / vol.clamp_min(1.0) ** 2, torch.zeros_like(vol))
    inter = (w * (p * onehot).sum(dims)).sum(1)
    denom = (w * (p + onehot).sum(dims)).sum(1)
    gdl = (1 - 2 * inter / denom.clamp_min(1e-12)).mean()
    return focal + gdl


def binary_focal_gdl_loss(logit: torch.Tensor, target: torch.Tensor, alpha: float = 0.75,
                          gamma: float = 2.0) -> torch.Tensor:
    """:func:`focal_gdl_loss` for binary logits (N, 1, ...) and a 0/1 ``target`` of the same shape
    (foreground weighted ``alpha``, background ``1 - alpha``)."""
    two = torch.cat([torch.zeros_like(logit), logit], 1)
    return focal_gdl_loss(two, target[:, 0], torch.tensor([1 - alpha, alpha], device=logit.device), gamma)


def heatmap_targets(centres: torch.Tensor, shape, sigma: float = 1.5) -> torch.Tensor:
    """(N, K, 3) centres in voxels (z, y, x) of a grid of ``shape`` (NaN = absent) -> (N, K, *shape)
    Gaussians of ``sigma`` voxels (zero for an absent organ)."""
    d, h, w = shape
    dev = centres.device
    zz = torch.arange(d, device=dev, dtype=torch.float32)[:, None, None]
    yy = torch.arange(h, device=dev, dtype=torch.float32)[None, :, None]
    xx = torch.arange(w, device=dev, dtype=torch.float32)[None, None, :]
    c = torch.nan_to_num(centres, nan=-1e4)
    r2 = ((zz - c[..., 0, None, None, None]) ** 2 + (yy - c[..., 1, None, None, None]) ** 2
          + (xx - c[..., 2, None, None, None]) ** 2)
    return torch.exp(-r2 / (2 * sigma * sigma))


def roi_pool(feat: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear ROI pooling: sample ``feat`` (C, d, h, w) at continuous voxel coordinates ``points``
    (..., 3) as (z, y, x) of that grid; zero outside. Returns (C, *points.shape[:-1]). The same
    arithmetic as infer.roi_pool (numpy, in the image)."""
    size = torch.tensor(feat.shape[1:], dtype=points.dtype, device=points.device)
    g = 2 * points / (size - 1) - 1  # align_corners=True: -1 / +1 are the first / last voxel centres
    g = g.flip(-1).reshape(1, 1, 1, -1, 3)  # grid_sample wants (x, y, z)
    out = F.grid_sample(feat[None], g, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(feat.shape[0], *points.shape[:-1])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
