"""``fast``: the default network, built for fast training on 32x32 images.

Written here from the published fast-CIFAR-10 techniques (Page's ResNet
speed runs, tysam-code's hlb-cifar10, Keller Jordan's airbench94):

* a fixed 2x2 whitening convolution (eigenvectors of the 2x2 patch covariance,
  scaled by 1/sqrt(eigenvalue), plus their negatives); only its bias trains;
* three blocks ``conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU``
  of widths 64/256/256, convolutions initialised close to identity (Dirac);
* BatchNorm with a frozen scale of 1, a learnable bias and a high momentum;
* global max-pool and a bias-free linear head whose logits are scaled by 1/9.

Shapes for a 32x32 input: whiten ``(N, 24, 31, 31)`` -> block1 ``(N, 64, 15, 15)``
-> block2 ``(N, 256, 7, 7)`` -> block3 ``(N, 256, 3, 3)`` -> embed ``(N, 256)``.
About 1.97 M parameters and 0.24 GFLOP per 32x32 forward pass.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from trainer.models.registry import ZooModel, register_model


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1: only the bias (shift) is learned."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.4g}"


class ConvBlock(nn.Sequential):
    """``(N, c_in, H, W)`` -> ``(N, c_out, H // 2, W // 2)``."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float):
        super().__init__(OrderedDict(
            conv1=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            pool=nn.MaxPool2d(2),
            norm1=FrozenScaleBatchNorm(c_out, bn_momentum),
            act1=nn.GELU(),
            conv2=nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            norm2=FrozenScaleBatchNorm(c_out, bn_momentum),
            act2=nn.GELU(),
        ))
        for conv in (self.conv1, self.conv2):
            # Identity on the first c_in channels: the deep net starts as a shallow one.
            w = conv.weight.data
            nn.init.dirac_(w[: w.size(1)])


@register_model("fast", description="fast-training whitened 3-block CNN (airbench-style), ~2M params")
class FastNet(ZooModel):
    gradcam_layer = "blocks.block3.conv1"  # 7x7 map: deep features at a usable resolution
    inspect_layers = (
        "whiten", "blocks.block1", "blocks.block2", "blocks.block3.conv1", "blocks.block3",
    )

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 widths: tuple[int, int, int] = (64, 256, 256), bn_momentum: float = 0.4,
                 logit_scale: float = 1 / 9):
        super().__init__()
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * 4, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.whiten_act = nn.GELU()
        c = [2 * in_channels * 4, *widths]
        self.blocks = nn.Sequential(OrderedDict(
            (f"block{i + 1}", ConvBlock(c[i], c[i + 1], bn_momentum)) for i in range(3)
        ))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Sequential(OrderedDict(
            linear=nn.Linear(widths[-1], num_classes, bias=False), scale=Scale(logit_scale),
        ))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.whiten_act(self.whiten(x)))
        return self.pool(x).flatten(1)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Fix the whitening filters from normalised images ``(N, C, H, W)`` (a few thousand suffice).

        Afterwards the 2x2 patches of ``images`` map to outputs whose covariance
        is the identity (for the first half of the filters; the second half are
        their negatives, so GELU keeps both signs of each direction).
        """
        c, k = images.shape[1], self.whiten.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigvals, eigvecs = torch.linalg.eigh(cov.double())
        filters = (eigvecs.T / (eigvals + eps).sqrt()[:, None]).float().view(-1, c, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
