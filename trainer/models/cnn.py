"""Plain convolutional networks, from a two-layer toy to a distillation teacher.

* ``simple_cnn``    - two conv layers and two FC layers; the classic tutorial net.
* ``optimized_cnn`` - three VGG-style double-conv blocks with BatchNorm and
  dropout, global average pooling; a strong small CIFAR-10 baseline.
* ``light_cnn``     - ~0.24M parameters; the student for knowledge distillation.
* ``deep_cnn``      - ~7.6M parameters; the teacher for knowledge distillation.

All of them take any input size (>= 8, and >= 32 for the deeper ones to keep
a spatial map for Grad-CAM) because they end in adaptive pooling.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from trainer.models.registry import ZooModel, register_model

__all__ = ["SimpleCNN", "OptimizedCNN", "LightCNN", "DeepCNN", "conv_bn_relu", "conv_stage"]


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """``(N, in_ch, H, W) -> (N, out_ch, H, W)``: 3x3 conv (same padding), BN, ReLU."""
    return nn.Sequential(OrderedDict(
        # BatchNorm has its own shift, so the conv bias would be dead weight.
        conv=nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        bn=nn.BatchNorm2d(out_ch),
        act=nn.ReLU(inplace=False),
    ))


def conv_stage(in_ch: int, out_ch: int, n_convs: int, pool: bool, dropout: float = 0.0) -> nn.Sequential:
    """``n_convs`` conv-BN-ReLU units, then optional maxpool2 and dropout.

    ``(N, in_ch, H, W) -> (N, out_ch, H/2, W/2)`` with ``pool``, else
    ``(N, out_ch, H, W)``. Units are named ``conv1``, ``conv2``... so a user
    can also hook the last pre-pool activation, e.g. ``features.block3.conv2``.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(n_convs):
        layers[f"conv{i + 1}"] = conv_bn_relu(in_ch if i == 0 else out_ch, out_ch)
    if pool:
        layers["pool"] = nn.MaxPool2d(2)
    if dropout > 0:
        layers["drop"] = nn.Dropout2d(dropout)
    return nn.Sequential(layers)


def _init_weights(model: nn.Module) -> None:
    # He initialisation suits ReLU nets trained from scratch better than
    # PyTorch's default uniform init; BN starts as the identity.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model("simple_cnn", description="Two conv layers (32/64) + two FC layers; the tutorial baseline")
class SimpleCNN(ZooModel):
    """conv32 -> pool -> conv64 -> pool -> FC 512 -> head.

    Shapes for a ``(N, C, 32, 32)`` input::

        features.block1  (N, 32, 16, 16)
        features.block2  (N, 64, 8, 8)
        pool             (N, 64, 8, 8)   identity at 32x32
        classifier.fc1   (N, 512)        = embed(x)
        head             (N, num_classes)
    """

    gradcam_layer = "features.block2"
    inspect_layers = ("features.block1", "features.block2", "classifier.fc1")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            block1=nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
                act=nn.ReLU(inplace=False),
                pool=nn.MaxPool2d(2),
            )),
            block2=nn.Sequential(OrderedDict(
                conv=nn.Conv2d(32, 64, kernel_size=3, padding=1),
                act=nn.ReLU(inplace=False),
                pool=nn.MaxPool2d(2),
            )),
        ))
        # Keeps the FC layer at 64*8*8 inputs whatever the image size.
        self.pool = nn.AdaptiveAvgPool2d((8, 8))
        self.classifier = nn.Sequential(OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Sequential(OrderedDict(
                fc=nn.Linear(64 * 8 * 8, 512),
                act=nn.ReLU(inplace=False),
                drop=nn.Dropout(dropout),
            )),
        ))
        self.head = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, 512)``."""
        return self.classifier(self.pool(self.features(x)))


class _GlobalPoolCNN(ZooModel):
    """Shared tail: ``features`` -> global average pool -> dropout -> ``head``.

    Subclasses build ``self.features`` (a Sequential of named blocks) and
    call :meth:`_finish` with its output width.
    """

    def _finish(self, width: int, num_classes: int, dropout: float) -> None:
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)
        _init_weights(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, width)``: pooled last-block features."""
        return self.drop(self.flatten(self.pool(self.features(x))))


@register_model("optimized_cnn", description="3 VGG-style blocks (64/128/256) with BatchNorm, dropout and global pooling")
class OptimizedCNN(_GlobalPoolCNN):
    """Three [conv-BN-ReLU x2, maxpool, dropout] blocks, global pool, head.

    Shapes for a ``(N, C, 32, 32)`` input::

        features.block1  (N, 64, 16, 16)
        features.block2  (N, 128, 8, 8)
        features.block3  (N, 256, 4, 4)
        embed            (N, 256)
        head             (N, num_classes)
    """

    gradcam_layer = "features.block3"
    inspect_layers = ("features.block1", "features.block2", "features.block3")

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        block_dropout: float = 0.25,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            block1=conv_stage(in_channels, 64, 2, pool=True, dropout=block_dropout),
            block2=conv_stage(64, 128, 2, pool=True, dropout=block_dropout),
            block3=conv_stage(128, 256, 2, pool=True, dropout=block_dropout),
        ))
        self._finish(256, num_classes, dropout)


@register_model("light_cnn", description="Small 32/64/128 CNN (~0.24M params); knowledge-distillation student")
class LightCNN(_GlobalPoolCNN):
    """Three narrow stages; the last keeps its resolution for Grad-CAM.

    Shapes for a ``(N, C, 32, 32)`` input::

        features.stage1  (N, 32, 16, 16)
        features.stage2  (N, 64, 8, 8)
        features.stage3  (N, 128, 8, 8)   two convs, no pool
        embed            (N, 128)
        head             (N, num_classes)
    """

    gradcam_layer = "features.stage3"
    inspect_layers = ("features.stage1", "features.stage2", "features.stage3")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            stage1=conv_stage(in_channels, 32, 1, pool=True),
            stage2=conv_stage(32, 64, 1, pool=True),
            # The second conv here is where most of the capacity goes: it works
            # at 8x8, so it costs little compute for its parameters.
            stage3=conv_stage(64, 128, 2, pool=False),
        ))
        self._finish(128, num_classes, dropout)


@register_model("deep_cnn", description="Deep 64/128/256/512 VGG-like CNN (~7.6M params); knowledge-distillation teacher")
class DeepCNN(_GlobalPoolCNN):
    """Four stages of 2/2/3/3 convs; the last stage is not pooled.

    Leaving the last stage at 4x4 (for 32x32 inputs) rather than 2x2 gives
    Grad-CAM a usable map; global average pooling follows anyway.

    Shapes for a ``(N, C, 32, 32)`` input::

        features.stage1  (N, 64, 16, 16)
        features.stage2  (N, 128, 8, 8)
        features.stage3  (N, 256, 4, 4)
        features.stage4  (N, 512, 4, 4)
        embed            (N, 512)
        head             (N, num_classes)
    """

    gradcam_layer = "features.stage4"
    inspect_layers = ("features.stage1", "features.stage2", "features.stage3", "features.stage4")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.3) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            stage1=conv_stage(in_channels, 64, 2, pool=True),
            stage2=conv_stage(64, 128, 2, pool=True),
            stage3=conv_stage(128, 256, 3, pool=True),
            stage4=conv_stage(256, 512, 3, pool=False),
        ))
        self._finish(512, num_classes, dropout)
