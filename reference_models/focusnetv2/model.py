"""FocusNetv2 (Gao et al., Medical Image Analysis 67, 2021) at inference time.

"FocusNetv2: Imbalanced large and small organ segmentation with adversarial shape constraint for
head and neck CT images". Three networks run at inference:

* **S-Net** segments every organ on the whole (canonical) volume: a pre-activation SE-ResUNet
  (BN-ReLU-conv residual blocks with squeeze-and-excitation) with two down-samplings and a
  DenseASPP module (densely connected dilated convolutions) at the bottom; about 1.96M parameters
  with 9 organs (10 classes);
* **SOL-Net** (small-organ localization) regresses one Gaussian heat map per small organ from
  S-Net's half-resolution decoder features; the peak is the organ's centre;
* **SOS-Net** (small-organ segmentation), one branch per small organ, segments a fixed ROI of
  8 x 64 x 64 voxels (z, y, x) at 1 x 1 x 2.5 mm around the centre SOL-Net found; its output
  replaces S-Net's for that organ.

The adversarial shape autoencoder of the paper is a training-time constraint only; it lives in
train.py (:class:`train.ShapeAutoencoder`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: small organs of the 22-organ StructSeg label map (ids), segmented by SOS-Net branches
SMALL_ORGANS = (4, 5, 6, 7, 8, 11, 14, 15, 16, 17)  # lenses, optic nerves, chiasm, pituitary, inner/middle ears
ROI_SIZE_XYZ = (64, 64, 8)
ROI_SPACING_XYZ = (1.0, 1.0, 2.5)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3, 4))))))
        return x * w[:, :, None, None, None]


class PreActSEBlock(nn.Module):
    """BN-ReLU-conv3-BN-ReLU-conv3, SE, + (1x1 projected) identity. ``stride`` down-samples."""

    def __init__(self, cin: int, cout: int, stride=1, reduction: int = 8):
        super().__init__()
        self.bn1 = nn.BatchNorm3d(cin)
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.se = SqueezeExcite(cout, reduction)
        self.proj = None
        if cin != cout or stride != 1:
            self.proj = nn.Conv3d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv1(a)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.se(out)
        return out + (x if self.proj is None else self.proj(a))


class DenseASPP(nn.Module):
    """DenseASPP (Yang et al., CVPR 2018) in 3D: each dilated layer sees the input and every earlier
    layer's output; the concatenation is fused back to ``channels`` by a 1x1x1 convolution."""

    def __init__(self, channels: int, mid: int, growth: int, dilations=(1, 2, 3, 5)):
        super().__init__()
        self.layers = nn.ModuleList()
        c = channels
        for d in dilations:
            self.layers.append(nn.Sequential(
                nn.BatchNorm3d(c), nn.ReLU(), nn.Conv3d(c, mid, 1, bias=False),
                nn.BatchNorm3d(mid), nn.ReLU(), nn.Conv3d(mid, growth, 3, padding=d, dilation=d, bias=False)))
            c += growth
        self.fuse = nn.Sequential(nn.BatchNorm3d(c), nn.ReLU(), nn.Conv3d(c, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return x + self.fuse(torch.cat(feats, 1))


class SNet(nn.Module):
    """S-Net + SOL-Net head. ``forward`` returns (class probabilities at full resolution,
    small-organ heat maps at half resolution). Input D, H, W divisible by 4."""

    def __init__(self, n_classes: int = 23, n_small: int = len(SMALL_ORGANS), width: int = 19):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.n_classes = n_classes
        self.stem = nn.Conv3d(1, w1, 3, padding=1, bias=False)
        self.enc0 = PreActSEBlock(w1, w1)
        self.down1 = PreActSEBlock(w1, w2, stride=2)
        self.enc1 = PreActSEBlock(w2, w2)
        self.down2 = PreActSEBlock(w2, w3, stride=2)
        self.enc2 = nn.Sequential(PreActSEBlock(w3, w3), PreActSEBlock(w3, w3))
        self.aspp = DenseASPP(w3, mid=w3, growth=w3 // 2, dilations=(1, 2, 3, 5))
        self.bottom = PreActSEBlock(w3, w3)
        self.up1 = nn.ConvTranspose3d(w3, w2, 2, stride=2)
        self.dec1 = nn.Sequential(PreActSEBlock(2 * w2, w2), PreActSEBlock(w2, w2))
        self.up2 = nn.ConvTranspose3d(w2, w1, 2, stride=2)
        self.dec2 = PreActSEBlock(2 * w1, w1)
        self.head = nn.Sequential(nn.BatchNorm3d(w1), nn.ReLU(), nn.Conv3d(w1, n_classes, 1))
        # SOL-Net: small-organ centre heat maps from the half-resolution decoder features
        self.sol = nn.Sequential(PreActSEBlock(w2, w2), nn.BatchNorm3d(w2), nn.ReLU(), nn.Conv3d(w2, n_small, 1))

    def features(self, x: torch.Tensor):
        x0 = self.enc0(self.stem(x))
        x1 = self.enc1(self.down1(x0))
        x2 = self.bottom(self.aspp(self.enc2(self.down2(x1))))
        y1 = self.dec1(torch.cat([self.up1(x2), x1], 1))
        y0 = self.dec2(torch.cat([self.up2(y1), x0], 1))
        return y0, y1

    def logits(self, x: torch.Tensor):
        y0, y1 = self.features(x)
        return self.head(y0), self.sol(y1)

    def forward(self, x: torch.Tensor):
        seg, heat = self.logits(x)
        return torch.softmax(seg, dim=1), torch.sigmoid(heat)

    def snet_parameters(self) -> int:
        """Parameters of S-Net alone (without the SOL-Net head)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("sol."))


class SOSBranch(nn.Module):
    """One small-organ segmentation branch: a small SE-ResUNet on an 8 x 64 x 64 ROI (binary logits).
    Down-samples in-plane first (the ROI is thin in z)."""

    def __init__(self, width: int = 12):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.stem = nn.Conv3d(1, w1, 3, padding=1, bias=False)
        self.enc0 = PreActSEBlock(w1, w1, reduction=4)
        self.down1 = PreActSEBlock(w1, w2, stride=(1, 2, 2), reduction=4)
        self.down2 = PreActSEBlock(w2, w3, stride=2, reduction=4)
        self.mid = PreActSEBlock(w3, w3, reduction=4)
        self.up1 = nn.ConvTranspose3d(w3, w2, 2, stride=2)
        self.dec1 = PreActSEBlock(2 * w2, w2, reduction=4)
        self.up2 = nn.ConvTranspose3d(w2, w1, (1, 2, 2), stride=(1, 2, 2))
        self.dec2 = PreActSEBlock(2 * w1, w1, reduction=4)
        self.head = nn.Sequential(nn.BatchNorm3d(w1), nn.ReLU(), nn.Conv3d(w1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.enc0(self.stem(x))
        x1 = self.down1(x0)
        x2 = self.mid(self.down2(x1))
        y1 = self.dec1(torch.cat([self.up1(x2), x1], 1))
        y0 = self.dec2(torch.cat([self.up2(y1), x0], 1))
        return self.head(y0)


class SOSNet(nn.Module):
    """One branch per small organ; input (K, 1, 8, 64, 64) holds organ k's ROI at index k;
    output (K, 1, 8, 64, 64) foreground probabilities."""

    def __init__(self, n_small: int = len(SMALL_ORGANS), width: int = 10):
        super().__init__()
        self.branches = nn.ModuleList(SOSBranch(width) for _ in range(n_small))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x[k:k + 1]) for k, b in enumerate(self.branches)], 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
