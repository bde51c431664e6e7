"""AnatomyNet (Zhu et al., Medical Physics 46(2), 2019): a 3D SE-ResUNet for whole-volume OAR segmentation.

Architecture as described in the paper (Fig. 2) and its public implementation:

* stem: 3x3x3 convolution, stride 2 (the only down-sampling), 28 channels, BN, LeakyReLU;
* encoder at 1/2 resolution: three stages of two residual SE blocks with 30, 32 and 34 channels
  (squeeze-and-excitation reduction 15);
* decoder at 1/2 resolution: three up-blocks that *concatenate* the skip feature (34+32 -> 32,
  32+30 -> 30, 30+28 -> 28; SE reduction 16), each followed by one more residual SE block;
* a 2x2x2 transposed convolution back to full resolution (28 -> 14), concatenated with the raw input
  (14 + 1), a residual block (-> 14), and a 3x3x3 convolution to background + organs, softmax.

With 9 organs (10 classes, the paper's PDDCA setting) it has 734,431 parameters (the paper's
"0.73M"); with the 22 StructSeg organs 734,799.

Loss: the paper's hybrid of a (Tversky alpha = beta = 0.5, i.e.) Dice term and a focal term, both
*masked* per sample and organ for missing annotations and *weighted* per organ.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


def conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool -> FC (C/r) -> LeakyReLU -> FC (C) -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3, 4))
        w = torch.sigmoid(self.fc2(F.leaky_relu(self.fc1(w), 0.01)))
        return x * w[:, :, None, None, None]


class ResBlock(nn.Module):
    """conv-BN-LReLU-conv-BN (-SE) + projected residual, LReLU (post-activation, as in the paper)."""

    def __init__(self, cin: int, cout: int, se_reduction: int | None = 15, proj_kernel: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv3(cin, cout), nn.BatchNorm3d(cout)
        self.conv2, self.bn2 = conv3(cout, cout), nn.BatchNorm3d(cout)
        self.se = SqueezeExcite(cout, se_reduction) if se_reduction else None
        self.proj = None
        if cin != cout:
            self.proj = nn.Sequential(nn.Conv3d(cin, cout, proj_kernel, padding=proj_kernel // 2, bias=False),
                                      nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.01)
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        res = x if self.proj is None else self.proj(x)
        return F.leaky_relu(out + res, 0.01)


class AnatomyNet(nn.Module):
    def __init__(self, n_classes: int = 23, in_channels: int = 1, blocks: int = 2):
        super().__init__()
        self.n_classes = n_classes
        self.stem = conv3(in_channels, 28, stride=2)
        self.stem_bn = nn.BatchNorm3d(28)

        def stage(cin, cout, n, r=15):
            return nn.Sequential(*[ResBlock(cin if i == 0 else cout, cout, r) for i in range(n)])

        self.enc1 = stage(28, 30, blocks)
        self.enc2 = stage(30, 32, blocks)
        self.enc3 = stage(32, 34, blocks)
        self.up1 = ResBlock(34 + 32, 32, 16)
        self.dec1 = stage(32, 32, blocks - 1, 15)
        self.up2 = ResBlock(32 + 30, 30, 16)
        self.dec2 = stage(30, 30, blocks - 1, 15)
        self.up3 = ResBlock(30 + 28, 28, 16)
        self.dec3 = stage(28, 28, blocks - 1, 15)
        self.deconv = nn.ConvTranspose3d(28, 14, kernel_size=2, stride=2)
        self.full = ResBlock(14 + in_channels, 14, None, proj_kernel=3)
        self.head = nn.Conv3d(14, n_classes, kernel_size=3, padding=1, bias=True)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=0.01)

    def logits(self, x0: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.stem_bn(self.stem(x0)), 0.01)
        x2 = self.enc1(x1)
        x3 = self.enc2(x2)
        x4 = self.enc3(x3)
        y = self.dec1(self.up1(torch.cat([x4, x3], 1)))
        y = self.dec2(self.up2(torch.cat([y, x2], 1)))
        y = self.dec3(self.up3(torch.cat([y, x1], 1)))
        y = self.full(torch.cat([self.deconv(y), x0], 1))
        return self.head(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities over background + organs (N, C, D, H, W); D, H, W even."""
        return torch.softmax(self.logits(x), dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load(path: str) -> AnatomyNet:
    """An AnatomyNet from a training script's checkpoint (fp16 state dict + n_classes), in eval mode."""
    ck = torch.load(path, map_location="cpu")
    model = AnatomyNet(ck["n_classes"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()})
    return model.eval()


def export(pt_path: str, onnx_path: str, example_zyx: tuple[int, int, int]) -> None:
    """Checkpoint -> ONNX ("ct" in, "probabilities" out, dynamic batch and z, y, x); ``example_zyx`` is
    only the tracing input's size."""
    model = load(pt_path)
    x = torch.zeros(1, 1, *example_zyx)
    torch.onnx.export(model, (x,), onnx_path, input_names=["ct"], output_names=["probabilities"],
                      dynamic_axes={"ct": {0: "n", 2: "z", 3: "y", 4: "x"},
                                    "probabilities": {0: "n", 2: "z", 3: "y", 4: "x"}},
                      opset_version=17, dynamo=False)
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.1f} MB)")


def hybrid_loss(logits: torch.Tensor, target: torch.Tensor, present: torch.Tensor | None = None,
                weights: torch.Tensor | None = None, focal_weight: float = 0.5, gamma: float = 2.0,
                eps: float = 1e-5) -> torch.Tensor:
    """AnatomyNet's hybrid loss: masked, weighted Dice (Tversky 0.5/0.5) + focal.

    ``logits`` (N, C, ...); ``target`` (N, ...) integer labels; ``present`` (N, C) 1 where the class
    is annotated in that sample (0 masks the class out of both terms; background is masked whenever
    any organ is missing, since its extent is then unknown); ``weights`` (C,) per-class weights.
    """
    n, c = logits.shape[:2]
    p = torch.softmax(logits.float(), dim=1)
    g = F.one_hot(target.long(), c).movedim(-1, 1).float()
    if present is None:
        present = torch.ones(n, c, device=logits.device)
    present = present.float().clone()
    present[:, 0] = present[:, 0] * (present[:, 1:].min(dim=1).values)
    if weights is None:
        weights = torch.ones(c, device=logits.device)
    dims = tuple(range(2, p.dim()))
    tp = (p * g).sum(dims)
    fp = (p * (1 - g)).sum(dims)
    fn = ((1 - p) * g).sum(dims)
    dice = tp / (tp + 0.5 * fp + 0.5 * fn + eps)  # (N, C)
    m = present * weights[None, :]
    dice_loss = (m * (1 - dice)).sum() / m.sum().clamp_min(eps)
    logp = torch.log(p.clamp_min(1e-6))
    focal = -(g * (1 - p) ** gamma * logp)  # (N, C, ...)
    focal = (focal.mean(dims) * m).sum() / n
    return dice_loss + focal_weight * focal
