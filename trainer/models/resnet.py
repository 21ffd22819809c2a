"""ResNet-18 adapted to 32x32 images (He et al., 2016, CIFAR variant).

The ImageNet stem (7x7 stride-2 conv and a stride-2 max-pool) would shrink a
32x32 image to 8x8 before the first residual stage. The CIFAR variant uses a
single 3x3 stride-1 conv and no max-pool, so the four stages run at 32, 16,
8 and 4 pixels; the last stage's 4x4 map is what Grad-CAM sees.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from trainer.models.registry import ZooModel, register_model

__all__ = ["BasicBlock", "ResNet", "resnet18"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut.

    ``(N, in_ch, H, W) -> (N, out_ch, H/stride, W/stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        # Two separate ReLU modules rather than one reused: hook-based
        # attribution (Captum's DeepLift, guided backprop) cannot tell apart
        # the calls of a module that runs twice per forward.
        self.act1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = nn.ReLU(inplace=False)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                bn=nn.BatchNorm2d(out_ch),
            ))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Out-of-place add: an in-place `+=` would overwrite bn2's output,
        # which a forward hook may still hold.
        return self.act2(out + self.shortcut(x))


class ResNet(ZooModel):
    """CIFAR-style ResNet built from :class:`BasicBlock` stages.

    Shapes for ResNet-18 and a ``(N, C, 32, 32)`` input::

        stem     (N, 64, 32, 32)
        layer1   (N, 64, 32, 32)
        layer2   (N, 128, 16, 16)
        layer3   (N, 256, 8, 8)
        layer4   (N, 512, 4, 4)
        embed    (N, 512)
        head     (N, num_classes)
    """

    gradcam_layer = "layer4"
    inspect_layers = ("stem", "layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != 4 or len(widths) != 4:
            raise ValueError("ResNet here has exactly four stages (layer1..layer4)")
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False),
            bn=nn.BatchNorm2d(widths[0]),
            act=nn.ReLU(inplace=False),
        ))
        ch = widths[0]
        for i, (n, width) in enumerate(zip(blocks_per_stage, widths), start=1):
            # Stage 1 keeps the stem's resolution; each later stage halves it.
            stride = 1 if i == 1 else 2
            stage = nn.Sequential(OrderedDict(
                (f"block{j + 1}", BasicBlock(ch if j == 0 else width, width, stride if j == 0 else 1))
                for j in range(n)
            ))
            setattr(self, f"layer{i}", stage)
            ch = width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(ch, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch starts as zero so every block begins as the
            # identity; this speeds up early training (Goyal et al., 2017).
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, 512)``."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.flatten(self.pool(x))


@register_model("resnet18", description="ResNet-18, CIFAR variant (3x3 stem, no max-pool), ~11.2M params")
def resnet18(num_classes: int = 10, in_channels: int = 3, zero_init_residual: bool = True) -> ResNet:
    """ResNet-18 with [2, 2, 2, 2] BasicBlocks; see :class:`ResNet` for shapes."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels,
                  zero_init_residual=zero_init_residual)
