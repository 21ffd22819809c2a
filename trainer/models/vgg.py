"""VGG-11 with BatchNorm, adapted to 32x32 images (Simonyan & Zisserman, 2015).

The ImageNet VGG ends in a 7x7 adaptive pool and three FC layers of 4096
(~120M parameters in the classifier alone). At 32x32 the five max-pools
already shrink the map to 1x1, so the classifier is replaced by global
average pooling and a single ``Linear(512, num_classes)``; this keeps the
network at ~9.2M parameters and makes it accept any input of at least 32x32.

Because the last block's output is 1x1 for 32x32 inputs, Grad-CAM uses the
last convolution *before* the final pool (``features.block5.conv2``, 2x2 at
32x32, 14x14 at 224x224) instead of the block output.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from trainer.models.cnn import conv_bn_relu
from trainer.models.registry import ZooModel, register_model

__all__ = ["VGG", "VGG11_CONFIG", "vgg11"]

# Each inner list is one block: its conv widths, followed by a 2x2 max-pool.
# Flattened this is the paper's configuration "A":
# 64 M 128 M 256 256 M 512 512 M 512 512 M.
VGG11_CONFIG: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512), (512, 512))

ConfigT = Sequence[Sequence[int]]


class VGG(ZooModel):
    """VGG with BatchNorm: blocks of 3x3 convs, each block ending in a max-pool.

    Shapes for VGG-11 and a ``(N, C, 32, 32)`` input::

        features.block1        (N, 64, 16, 16)
        features.block2        (N, 128, 8, 8)
        features.block3        (N, 256, 4, 4)
        features.block4        (N, 512, 2, 2)
        features.block5.conv2  (N, 512, 2, 2)   last spatial map (Grad-CAM)
        features.block5        (N, 512, 1, 1)
        embed                  (N, 512)
        head                   (N, num_classes)
    """

    def __init__(self, config: ConfigT, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        if not config or any(len(widths) == 0 for widths in config):
            raise ValueError(f"VGG config needs non-empty blocks, got {config!r}")
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        ch = in_channels
        for b, widths in enumerate(config, start=1):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for i, width in enumerate(widths, start=1):
                layers[f"conv{i}"] = conv_bn_relu(ch, width)
                ch = width
            layers["pool"] = nn.MaxPool2d(2)
            blocks[f"block{b}"] = nn.Sequential(layers)
        self.features = nn.Sequential(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(ch, num_classes)

        last = f"block{len(config)}"
        self.gradcam_layer = f"features.{last}.conv{len(config[-1])}"
        self.inspect_layers = tuple(f"features.block{b}" for b in range(1, len(config))) + (
            self.gradcam_layer, f"features.{last}",
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # He init as in torchvision's VGG; BN starts as the identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, 512)`` with ``H, W >= 32``."""
        if min(x.shape[-2:]) < 2 ** len(self.features):
            # Otherwise the last max-pool fails with an opaque "output size is too small".
            raise ValueError(
                f"VGG needs images of at least {2 ** len(self.features)}x{2 ** len(self.features)}, "
                f"got {tuple(x.shape[-2:])}"
            )
        return self.drop(self.flatten(self.pool(self.features(x))))


@register_model("vgg11", description="VGG-11 with BatchNorm, global-pool head for 32x32 images (~9.2M params)")
def vgg11(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> VGG:
    """VGG-11 (configuration A) with BatchNorm; see :class:`VGG` for shapes."""
    return VGG(VGG11_CONFIG, num_classes=num_classes, in_channels=in_channels, dropout=dropout)
