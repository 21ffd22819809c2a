"""Transfer-learning models: torchvision ImageNet backbones with a new head.

* ``mobilenet_v3_small`` - ~1.5M parameters, embed D = 1024
* ``efficientnet_b0``    - ~4.0M parameters, embed D = 1280
* ``resnet50``           - ~23.5M parameters, embed D = 2048

Each wrapper keeps torchvision's layers (so ImageNet weights load unchanged)
and replaces only the final ImageNet ``Linear(D, 1000)`` by ``head =
Linear(D, num_classes)``. ``pretrained=True`` downloads the ImageNet weights
into torch's hub cache; on a machine without internet this raises a
``RuntimeError`` explaining how to proceed instead of a long traceback.

The backbones downsample by 32, so any input >= 32x32 works; at 32x32 the last
map is 1x1, which makes Grad-CAM degenerate. Upsample small images (e.g. the
dataset's ``input_size`` of 96-224) to get meaningful heat maps.

All activations are switched to ``inplace=False``: torchvision builds them
in-place, which breaks Captum's hooks and backward passes when the output of a
hooked layer is overwritten by the next in-place op.
"""
from __future__ import annotations

from collections import OrderedDict

from typing import TYPE_CHECKING

import torch
from torch import nn

from trainer.models.registry import ZooModel, register_model

if TYPE_CHECKING:
    import torchvision.models as tvm

__all__ = ["MobileNetV3Small", "EfficientNetB0", "ResNet50", "PretrainedWeightsError"]


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights could not be downloaded (usually: no internet)."""


def _download_state_dict(weights: tvm.WeightsEnum) -> dict[str, torch.Tensor]:
    """Fetch ``weights`` through torch's hub cache, or raise a one-line error.

    Goes through ``torch.hub.load_state_dict_from_url`` at call time (not a
    name bound at import), so a cached file is reused and tests can simulate
    an offline machine by patching ``torch.hub``.
    """
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True)
    except Exception as exc:  # URLError, OSError, hash mismatch, HTTP errors...
        filename = weights.url.rsplit("/", 1)[-1]
        cache = f"{torch.hub.get_dir()}/checkpoints"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # keep the message on one line
        raise PretrainedWeightsError(
            f"could not download the pretrained weights {filename} ({reason}); the machine may be "
            f"offline: either drop --pretrained (random init) or place {filename} (from {weights.url}) "
            f"in torch's hub cache {cache}"
        ) from exc


def _build_backbone(builder: str, weights: str, pretrained: bool) -> nn.Module:
    """``torchvision.models.<builder>``, optionally with ``<weights>.DEFAULT`` (ImageNet) loaded."""
    # Imported here, not at module level: torchvision.models takes ~1.8 s to import, and
    # registering the zoo (e.g. to load a run of any other model) must not pay for it.
    import torchvision.models as tvm

    net = getattr(tvm, builder)(weights=None)
    if pretrained:
        # Built without weights and loaded here so the download goes through
        # our error handling rather than torchvision's internal loader.
        net.load_state_dict(_download_state_dict(getattr(tvm, weights).DEFAULT))
    for m in net.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return net


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """Return ``conv`` rebuilt for ``in_channels`` input channels.

    With pretrained weights every new input channel gets the mean of the RGB
    filters scaled by ``3 / in_channels``: a grey image then produces the same
    activations as the equivalent RGB image did (for ``in_channels=1`` this is
    the sum of the RGB filters), so the pretrained BN statistics stay valid.
    """
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )
    if pretrained:
        with torch.no_grad():
            mean = conv.weight.mean(dim=1, keepdim=True) * (3.0 / in_channels)
            new.weight.copy_(mean.expand(-1, in_channels, -1, -1))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


class _TransferModel(ZooModel):
    """``features`` -> global average pool -> ``pre_logits`` -> ``head``.

    ``embed(x)``: ``(N, C, H, W) -> (N, D)`` with ``H, W >= 32``.
    """

    features: nn.Module
    pre_logits: nn.Module

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_logits(torch.flatten(self.pool(self.features(x)), 1))


@register_model(
    "mobilenet_v3_small",
    description="MobileNetV3-Small (torchvision), new head; --pretrained for ImageNet weights",
)
class MobileNetV3Small(_TransferModel):
    """MobileNetV3-Small; 13 feature blocks, embed D = 1024.

    The ImageNet classifier is ``Linear(576, 1024) -> Hardswish -> Dropout ->
    Linear(1024, 1000)``; its pretrained first part is kept as ``pre_logits``
    and only the last Linear is replaced.

    Shapes for a ``(N, C, 224, 224)`` input (divide by 7 for 32x32)::

        features.0    (N, 16, 112, 112)   stem
        features.3    (N, 24, 28, 28)
        features.8    (N, 48, 14, 14)
        features.11   (N, 96, 7, 7)
        features.12   (N, 576, 7, 7)      last conv (Grad-CAM)
        embed         (N, 1024)
    """

    gradcam_layer = "features.12"
    inspect_layers = ("features.0", "features.3", "features.8", "features.11", "features.12")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__()
        net = _build_backbone("mobilenet_v3_small", "MobileNet_V3_Small_Weights", pretrained)
        net.features[0][0] = _adapt_first_conv(net.features[0][0], in_channels, pretrained)
        self.features = net.features
        self.pool = net.avgpool
        self.pre_logits = net.classifier[:-1]
        self.head = nn.Linear(net.classifier[-1].in_features, num_classes)


@register_model(
    "efficientnet_b0",
    description="EfficientNet-B0 (torchvision), new head; --pretrained for ImageNet weights",
)
class EfficientNetB0(_TransferModel):
    """EfficientNet-B0; 9 feature stages, embed D = 1280.

    ``pre_logits`` is torchvision's classifier dropout, kept so fine-tuning
    regularises as the original recipe does (identity in eval mode).

    Shapes for a ``(N, C, 224, 224)`` input::

        features.1    (N, 16, 112, 112)
        features.3    (N, 40, 28, 28)
        features.5    (N, 112, 14, 14)
        features.7    (N, 320, 7, 7)
        features.8    (N, 1280, 7, 7)     last conv (Grad-CAM)
        embed         (N, 1280)
    """

    gradcam_layer = "features.8"
    inspect_layers = ("features.1", "features.3", "features.5", "features.7", "features.8")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__()
        net = _build_backbone("efficientnet_b0", "EfficientNet_B0_Weights", pretrained)
        net.features[0][0] = _adapt_first_conv(net.features[0][0], in_channels, pretrained)
        self.features = net.features
        self.pool = net.avgpool
        self.pre_logits = net.classifier[:-1]
        self.head = nn.Linear(net.classifier[-1].in_features, num_classes)


@register_model(
    "resnet50",
    description="ResNet-50 (torchvision, ImageNet stem), new head; --pretrained for ImageNet weights",
)
class ResNet50(_TransferModel):
    """ResNet-50 with Bottleneck blocks, embed D = 2048.

    torchvision's flat ``conv1/bn1/relu/maxpool`` are regrouped as ``stem``
    so a dashboard layer list reads stem, layer1..layer4.

    Shapes for a ``(N, C, 224, 224)`` input::

        stem      (N, 64, 56, 56)
        layer1    (N, 256, 56, 56)
        layer2    (N, 512, 28, 28)
        layer3    (N, 1024, 14, 14)
        layer4    (N, 2048, 7, 7)     Grad-CAM
        embed     (N, 2048)
    """

    gradcam_layer = "layer4"
    inspect_layers = ("stem", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__()
        net = _build_backbone("resnet50", "ResNet50_Weights", pretrained)
        self.stem = nn.Sequential(OrderedDict(
            conv=_adapt_first_conv(net.conv1, in_channels, pretrained),
            bn=net.bn1,
            act=net.relu,
            pool=net.maxpool,
        ))
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.pool = net.avgpool
        self.pre_logits = nn.Identity()
        self.head = nn.Linear(net.fc.in_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, 2048)``."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return torch.flatten(self.pool(x), 1)
